// Persistence, ownership and attaching: persistent devices owned by an unprivileged user and used by a process that
// runs as that user; Tun.open; Tun.fromFd on a descriptor a privileged parent opened; a device's fate on SIGKILL.
// Runs inside the private network namespace the test runner made; nothing leaves it.
// Address plan of this file: 10.45.0.0/16 .. 10.49.0.0/16, devices tkper<n>.
import { Tun, TunError } from '../index.ts'
import {
  INDEX,
  NOBODY,
  asUser,
  buildTunFd,
  childEnv,
  nodeScript,
  spawnLines,
  worldOpenTun,
  type LineChild,
} from './helpers/child.ts'
import { deviceTest, devName } from './helpers/device.ts'
import { ip, ipLink, ipOk, linkExists, waitGone } from './helpers/link.ts'
import { send, udpSocket } from './helpers/net.ts'

const tag = 'per'

/**
 * The child side of a packet exchange, as an ES module for `node -e`: `open` is an expression giving a Tun; the
 * child prints `{"ready":…}` once it holds the device, then answers the first UDP datagram to port 9450 with
 * `pong:<payload>` from the datagram's destination, prints `{"answered":…}`, closes the device and exits.
 * Errors are printed as `{"error":{code,errno,message}}`.
 */
function exchangeScript(open: string, before = ''): string {
  return `import { Tun, packet } from ${JSON.stringify(INDEX)}
const out = (o) => console.log(JSON.stringify(o))
try {
  ${before}
  const tun = await (${open})
  out({ ready: { name: tun.name, mode: tun.mode, uid: process.getuid(), up: tun.link().up } })
  for await (const p of tun.packets()) {
    const i = packet.parse(p)
    if (i?.protocol !== packet.PROTO_UDP || i.dstPort !== 9450) continue
    const payload = Buffer.concat([Buffer.from('pong:'), p.subarray(i.payloadOffset, i.payloadOffset + i.payloadLength)])
    await tun.write(packet.udp({ src: i.dst, dst: i.src, srcPort: i.dstPort, dstPort: i.srcPort, payload }))
    out({ answered: i.src + ':' + i.srcPort })
    break
  }
  await tun.close()
} catch (e) {
  out({ error: { code: e.code, errno: e.errno, message: e.message } })
}`
}

/** Sends `ping` to `dst:9450` and resolves with the first datagram that comes back to the socket. */
async function pingPong(dst: string): Promise<{ msg: string; from: string }> {
  const s = await udpSocket('udp4')
  try {
    const reply = new Promise<{ msg: string; from: string }>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no reply within 10 s')), 10_000)
      s.once('message', (m, r) => {
        clearTimeout(timer)
        resolve({ msg: m.toString(), from: `${r.address}:${r.port}` })
      })
    })
    await send(s, Buffer.from('ping'), 9450, dst)
    return await reply
  } finally {
    s.close()
  }
}

async function readyOf(child: LineChild): Promise<{ name: string; mode: string; uid: number; up: boolean }> {
  const o = JSON.parse(await child.line(20_000, 'the child to open the device'))
  if (o.error) throw new Error(`child failed: ${JSON.stringify(o.error)}`)
  return o.ready
}

/** Makes a persistent device go: attach as root, clear persistence, close; `ip link del` if that fails. */
async function removePersistent(name: string): Promise<void> {
  try {
    const t = await Tun.open(name)
    await t.setPersist(false)
    await t.close()
  } catch {
    await ip(['link', 'del', name])
  }
}

deviceTest(
  'a persistent device owned by an unprivileged uid is opened and used by a process running as that uid',
  async (t) => {
    const name = devName(tag)
    const made = await Tun.create({ name, persist: true, owner: NOBODY, addresses: ['10.45.0.1/24'] })
    try {
      await made.close()
      const k = (await ipLink(name))!
      t.truthy(k, 'a persistent device outlives close()')
      t.is(k.linkinfo?.info_data?.persist, true)
      t.regex(String(k.linkinfo?.info_data?.user), /^(nobody|65534)$/)

      // uid 65534 without any capability: Tun.open, read a datagram the parent sends, answer it.
      const child = spawnLines([
        ...worldOpenTun(),
        ...asUser(NOBODY),
        ...nodeScript(exchangeScript(`Tun.open(${JSON.stringify(name)})`)),
      ])
      try {
        const ready = await readyOf(child)
        t.deepEqual(ready, { name, mode: 'tun', uid: NOBODY, up: true })
        const r = await pingPong('10.45.0.2')
        t.deepEqual(r, { msg: 'pong:ping', from: '10.45.0.2:9450' })
        t.regex(await child.line(5000, 'the answered line'), /"answered":"10\.45\.0\.1:\d+"/)
        t.is((await child.exited).code, 0, child.stderr())
      } finally {
        await child.kill()
      }
      // The child closed its handle: the device is still there (persistent), and still configured.
      t.true(await linkExists(name))

      // Another unprivileged uid may not attach.
      const other = spawnLines([
        ...worldOpenTun(),
        ...asUser(NOBODY - 1),
        ...nodeScript(exchangeScript(`Tun.open(${JSON.stringify(name)})`)),
      ])
      const o = JSON.parse(await other.line(20_000, 'the refusal'))
      await other.kill()
      t.is(o.error?.code, 'ERR_TUN_PERMISSION', JSON.stringify(o))
      t.is(o.error?.errno, 1)
    } finally {
      await removePersistent(name)
    }
    await t.notThrowsAsync(() => waitGone(name, 2000), 'setPersist(false) + close removed the device')
  },
)

deviceTest('group: a member of the owning group opens the device, a non-member does not', async (t) => {
  const name = devName(tag)
  const made = await Tun.create({ name, persist: true, group: NOBODY, addresses: ['10.46.0.1/24'] })
  await made.close()
  try {
    t.regex(String((await ipLink(name))!.linkinfo?.info_data?.group), /^(nogroup|65534)$/)
    const member = spawnLines([
      ...worldOpenTun(),
      ...asUser(12345, NOBODY),
      ...nodeScript(exchangeScript(`Tun.open(${JSON.stringify(name)})`)),
    ])
    try {
      t.like(await readyOf(member), { name, uid: 12345 })
      t.deepEqual(await pingPong('10.46.0.2'), { msg: 'pong:ping', from: '10.46.0.2:9450' })
      t.is((await member.exited).code, 0, member.stderr())
    } finally {
      await member.kill()
    }
    const stranger = spawnLines([
      ...worldOpenTun(),
      ...asUser(12345),
      ...nodeScript(exchangeScript(`Tun.open(${JSON.stringify(name)})`)),
    ])
    const o = JSON.parse(await stranger.line(20_000, 'the refusal'))
    await stranger.kill()
    t.is(o.error?.code, 'ERR_TUN_PERMISSION', JSON.stringify(o))
  } finally {
    await removePersistent(name)
  }
})

deviceTest(
  'Tun.open: attaches to a persistent device, keeps its configuration; typed errors when it cannot',
  async (t) => {
    const name = devName(tag)
    const made = await Tun.create({ name, persist: true, addresses: ['10.47.0.1/24'], mtu: 1400 })
    try {
      // Single-queue and held: busy.
      t.is(((await t.throwsAsync(() => Tun.open(name))) as TunError).code, 'ERR_TUN_BUSY')
      await made.close()
      // Another kind than the device's: busy, with errno.
      const e = (await t.throwsAsync(() => Tun.open(name, { mode: 'tap' }))) as TunError
      t.is(e.code, 'ERR_TUN_BUSY', e.message)
      t.is(((await t.throwsAsync(() => Tun.open(name, { queues: 2 }))) as TunError).code, 'ERR_TUN_BUSY')
      // Attached: same index, configuration kept, and it works.
      await using tun = await Tun.open(name)
      t.is(tun.name, name)
      t.is(tun.index, (await ipLink(name))!.ifindex)
      t.is(tun.mtu, 1400)
      t.true((await tun.addresses()).some((a) => a.cidr === '10.47.0.1/24'))
      const s = await udpSocket('udp4')
      const reading = (async () => {
        for await (const p of tun.packets())
          if (p.length > 28 && p.readUInt16BE(22) === 9451) return p.subarray(28).toString()
      })()
      await send(s, Buffer.from('hello'), 9451, '10.47.0.2')
      t.is(await reading, 'hello')
      s.close()
      await tun.setPersist(false)
      await tun.close()
      await t.notThrowsAsync(() => waitGone(name, 2000))
    } finally {
      if (await linkExists(name)) await removePersistent(name)
    }
    t.is(
      ((await t.throwsAsync(() => Tun.open(name))) as TunError).code,
      'ERR_TUN_NOT_FOUND',
      'gone, so nothing to attach to',
    )
  },
)

deviceTest(
  'Tun.fromFd adopts a descriptor that a privileged parent opened and passed to an unprivileged process',
  async (t) => {
    // The parent is tunfd (helpers/tunfd.c), run as root: it opens /dev/net/tun, attaches it to the device and execs
    // setpriv, which drops to uid 65534 with no capabilities and execs node; the descriptor is inherited as fd 3
    // through both execs. (A Node parent cannot hand over a TUN descriptor itself: tunkit does not expose its fds,
    // and opening /proc/<pid>/fd/N of a /dev/net/tun descriptor opens a fresh, unattached one.)
    const name = devName(tag)
    const tunfd = buildTunFd()
    const script = exchangeScript(
      'Tun.fromFd(3)',
      // A wrong mode is refused and the descriptor stays with the caller, so the next call can still adopt it.
      `try { Tun.fromFd(3, { mode: 'tap' }); out({ unexpected: 'tap accepted' }) } catch (e) { out({ refused: e.code }) }`,
    )
    const child = spawnLines([tunfd, name, 'tun', '3', ...asUser(NOBODY), ...nodeScript(script)], { env: childEnv })
    try {
      t.deepEqual(JSON.parse(await child.line(20_000, 'the refused tap adoption')), {
        refused: 'ERR_TUN_INVALID_ARGUMENT',
      })
      const ready = await readyOf(child)
      t.deepEqual(ready, { name, mode: 'tun', uid: NOBODY, up: false })
      // The unprivileged child cannot configure the device; the privileged side does it from outside.
      await ipOk(['addr', 'add', '10.48.0.1/24', 'dev', name])
      await ipOk(['link', 'set', name, 'up'])
      t.deepEqual(await pingPong('10.48.0.2'), { msg: 'pong:ping', from: '10.48.0.2:9450' })
      t.is((await child.exited).code, 0, child.stderr())
    } finally {
      await child.kill()
    }
    // The adopted descriptor was the device's only one: closing it removed the non-persistent device.
    await t.notThrowsAsync(() => waitGone(name, 2000))
  },
)

deviceTest(
  'Tun.fromFd leaves the descriptor open and unchanged whenever it refuses it, and adopts it afterwards',
  async (t) => {
    // tunfd (run as root here) passes a blocking descriptor attached to the device as fd 3. Each refused call must
    // leave it open with the same flags (the `flags:` line of /proc/self/fdinfo/3: status flags and O_CLOEXEC);
    // descriptors that are not attached TUN descriptors must stay open and unchanged too.
    const name = devName(tag)
    const script = `import { Tun } from ${JSON.stringify(INDEX)}
import { closeSync, openSync, readFileSync } from 'node:fs'
const out = (o) => console.log(JSON.stringify(o))
const flags = (fd) => {
  try {
    return /^flags:\\s*(\\d+)$/m.exec(readFileSync('/proc/self/fdinfo/' + fd, 'utf8'))[1]
  } catch {
    return null
  }
}
const refusal = (what, fd, f) => {
  const before = flags(fd)
  try {
    f()
    return { what, unexpected: 'accepted' }
  } catch (e) {
    return { what, code: e.code, message: e.message, before, after: flags(fd) }
  }
}
const attempts = [
  ['mode tap', () => Tun.fromFd(3, { mode: 'tap' })],
  ['batchPackets 0', () => Tun.fromFd(3, { ring: { batchPackets: 0 } })],
  ['memoryBudget 1', () => Tun.fromFd(3, { ring: { memoryBudget: 1 } })],
  ['slabBytes 1', () => Tun.fromFd(3, { ring: { slabBytes: 1 } })],
  ['txRingBytes 1', () => Tun.fromFd(3, { ring: { txRingBytes: 1 } })],
  ['unknown ring option', () => Tun.fromFd(3, { ring: { batchSize: 1 } })],
]
const refusals = attempts.map(([what, f]) => refusal(what, 3, f))
const file = openSync('/proc/self/status', 'r')
refusals.push(refusal('a regular file', file, () => Tun.fromFd(file)))
closeSync(file)
const unattached = openSync('/dev/net/tun', 'r+')
refusals.push(refusal('an unattached /dev/net/tun descriptor', unattached, () => Tun.fromFd(unattached)))
closeSync(unattached)
const before = flags(3)
let adopted
try {
  const tun = Tun.fromFd(3, { ring: { batchPackets: 32 } })
  adopted = { name: tun.name, mode: tun.mode, flags: flags(3) }
  await tun.close()
} catch (e) {
  adopted = { error: e.code + ' ' + e.message }
}
out({ before, refusals, adopted, afterClose: flags(3) })`
    const child = spawnLines([buildTunFd(), name, 'tun', '3', ...nodeScript(script)], { env: childEnv })
    try {
      const r = JSON.parse(await child.line(20_000, 'the results')) as {
        before: string
        refusals: { what: string; code?: string; message?: string; before?: string; after?: string | null }[]
        adopted: { name: string; mode: string; flags: string }
        afterClose: string | null
      }
      const O_NONBLOCK = 0o4000
      t.is(parseInt(r.before, 8) & O_NONBLOCK, 0, `tunfd passes a blocking descriptor (flags ${r.before})`)
      t.is(r.refusals.length, 8)
      for (const x of r.refusals) {
        t.is(x.code, 'ERR_TUN_INVALID_ARGUMENT', `${x.what}: ${x.message ?? JSON.stringify(x)}`)
        t.not(x.after, null, `${x.what}: the descriptor was closed`)
        t.is(x.after, x.before, `${x.what}: the descriptor's flags changed`)
      }
      t.is(r.refusals[0]!.before, r.before, 'fd 3 before the refusals')
      t.deepEqual(
        { ...r.adopted, flags: parseInt(r.adopted.flags, 8) },
        {
          name,
          mode: 'tun',
          flags: parseInt(r.before, 8) | O_NONBLOCK,
        },
        'adopted after all, and made non-blocking (nothing else changed)',
      )
      t.is(r.afterClose, null, 'close() closes the adopted descriptor')
      t.is((await child.exited).code, 0, child.stderr())
    } finally {
      await child.kill()
    }
    await t.notThrowsAsync(() => waitGone(name, 2000))
  },
)

deviceTest(
  'a non-persistent device disappears when its process is killed with SIGKILL; a persistent one stays',
  async (t) => {
    const spawnHolder = (name: string, persist: boolean) =>
      spawnLines(
        nodeScript(`import { Tun } from ${JSON.stringify(INDEX)}
const tun = await Tun.create({ name: ${JSON.stringify(name)}, persist: ${persist}, addresses: ['10.49.0.1/24'] })
console.log(tun.name)
setInterval(() => {}, 1000)`),
        { env: childEnv },
      )
    const name = devName(tag)
    const child = spawnHolder(name, false)
    t.is(await child.line(20_000, 'the device name'), name)
    t.true(await linkExists(name))
    child.proc.kill('SIGKILL')
    const { signal } = await child.exited
    t.is(signal, 'SIGKILL')
    const ms = await waitGone(name, 5000)
    t.log(`gone ${ms} ms after the process died`)

    const kept = devName(tag)
    const holder = spawnHolder(kept, true)
    try {
      t.is(await holder.line(20_000, 'the device name'), kept)
      await holder.kill()
      await new Promise((r) => setTimeout(r, 200))
      t.true(await linkExists(kept), 'a persistent device survives its process')
    } finally {
      await removePersistent(kept)
    }
    await t.notThrowsAsync(() => waitGone(kept, 2000))
  },
)
