// tunkit without root: root creates a persistent TUN owned by an unprivileged user (uid 65534, `nobody`), and a
// process running as that user, with no capabilities at all, attaches to it with Tun.open and answers a UDP
// datagram. Then root removes the device (setPersist(false) + close).
//
//   node --import tsx examples/persist-owner.ts      (as root; makes a private network namespace)
import { spawn } from 'node:child_process'
import dgram from 'node:dgram'
import { statSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { Tun, packet } from '../index.ts'
import { ensureNetns } from './netns.ts'

ensureNetns(import.meta.url)

const NAME = 'vpn0'
const UID = 65534

if (process.argv[2] === '--child') {
  // The unprivileged side: attach, answer one datagram to port 5353 with "pong", leave the device in place.
  await using tun = await Tun.open(NAME)
  console.log(`[uid ${process.getuid!()}] attached to ${tun.name} (mtu ${tun.mtu}, up ${tun.link().up})`)
  for await (const p of tun.packets()) {
    const i = packet.parse(p)
    if (i?.protocol !== packet.PROTO_UDP || i.dstPort !== 5353) continue
    console.log(`[uid ${process.getuid!()}] <- ${packet.summary(p)}`)
    await tun.write(
      packet.udp({ src: i.dst, dst: i.src, srcPort: 5353, dstPort: i.srcPort!, payload: Buffer.from('pong') }),
    )
    break
  }
} else {
  const made = await Tun.create({ name: NAME, persist: true, owner: UID, addresses: ['10.87.0.1/24'] })
  await made.close()
  console.log(`[root] created ${NAME}, persistent, owned by uid ${UID}; closed it (the device stays)`)

  // Distributions ship /dev/net/tun world-readable and -writable (0666); where it is 0600 (some containers), give
  // the child a private mount namespace with a 0666 node for the same device. The real node is not touched.
  const openTun =
    (statSync('/dev/net/tun').mode & 0o006) === 0o006
      ? []
      : [
          'unshare',
          '--mount',
          'sh',
          '-c',
          'mount -t tmpfs none /dev/net && mknod -m 666 /dev/net/tun c 10 200 && exec "$@"',
          'sh',
        ]
  const dropPrivileges = [
    'setpriv',
    `--reuid=${UID}`,
    `--regid=${UID}`,
    '--clear-groups',
    '--inh-caps=-all',
    '--bounding-set=-all',
  ]
  const argv = [
    ...openTun,
    ...dropPrivileges,
    process.execPath,
    '--import',
    'tsx',
    fileURLToPath(import.meta.url),
    '--child',
  ]
  const child = spawn(argv[0]!, argv.slice(1), { stdio: 'inherit', env: { ...process.env, HOME: '/tmp' } })
  const childDone = new Promise<number>((resolve) => child.on('close', (c) => resolve(c ?? 1)))

  const sock = dgram.createSocket('udp4')
  const reply = new Promise<string>((resolve) =>
    sock.on('message', (m, r) => resolve(`${m} from ${r.address}:${r.port}`)),
  )
  // Send until the child is attached and answers (a datagram sent before it attached is dropped by the kernel).
  const sender = setInterval(() => sock.send('ping', 5353, '10.87.0.2'), 200)
  const timeout = new Promise<string>((resolve) => setTimeout(() => resolve('no reply within 10 s'), 10_000))
  console.log(`[root] got: ${await Promise.race([reply, timeout])}`)
  clearInterval(sender)
  sock.close()
  const code = await childDone

  const again = await Tun.open(NAME)
  await again.setPersist(false)
  await again.close()
  console.log(`[root] cleared persistence and closed it: the kernel removed ${NAME}`)
  process.exitCode = code
}
