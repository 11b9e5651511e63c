// Real TUN devices, inside the private network namespace the test runner made. No traffic leaves it.
import type { TestFn } from 'ava'
import anyTest from 'ava'
import { fileURLToPath } from 'node:url'
import { Tun, TunError, packet } from '../index.ts'
import { deviceTest, devName } from './helpers/device.ts'
import { run, send, udpSocket, until } from './helpers/net.ts'

const test = anyTest as TestFn
void test
const root = fileURLToPath(new URL('..', import.meta.url))

/** Answers every echo request on `tun` until it is closed; returns the number answered. */
async function echoResponder(tun: Tun, log?: string[]): Promise<number> {
  let n = 0
  for await (const pkt of tun.packets()) {
    log?.push(packet.summary(pkt))
    const reply = packet.echoReply(pkt)
    if (reply) {
      await tun.write(reply)
      n++
    }
  }
  return n
}

deviceTest('Tun.create: name, index, mode, mtu and addresses come back from the kernel', async (t) => {
  const name = devName('a')
  await using tun = await Tun.create({ name, addresses: ['10.7.0.1/24', 'fd07::1/64'], mtu: 1400 })
  t.is(tun.name, name)
  t.true(tun.index > 0)
  t.is(tun.mode, 'tun')
  t.is(tun.mtu, 1400)
  const link = tun.link()
  t.true(link.up)
  t.is(link.txQueueLength, 4096)
  const cidrs = (await tun.addresses()).map((a) => a.cidr)
  t.true(cidrs.includes('10.7.0.1/24'))
  t.true(cidrs.includes('fd07::1/64'))
})

deviceTest('a kernel-assigned name, and two devices at once', async (t) => {
  const a = await Tun.create({ addresses: ['10.21.0.1/24'] })
  const b = await Tun.create({ name: 'tkpair%d', addresses: ['10.22.0.1/24'] })
  t.regex(a.name, /^tun\d+$/)
  t.regex(b.name, /^tkpair\d+$/)
  t.not(a.index, b.index)
  const s = await udpSocket('udp4')
  const got = await Promise.all([
    (async () => {
      for await (const p of a.packets()) if (packet.parse(p)?.dstPort === 9001) return packet.parse(p)!.dst
    })(),
    (async () => {
      for await (const p of b.packets()) if (packet.parse(p)?.dstPort === 9002) return packet.parse(p)!.dst
    })(),
    send(s, Buffer.from('a'), 9001, '10.21.0.2').then(() => send(s, Buffer.from('b'), 9002, '10.22.0.2')),
  ])
  t.deepEqual(got.slice(0, 2), ['10.21.0.2', '10.22.0.2'])
  s.close()
  await a.close()
  await b.close()
  const links = await run('ip', ['-o', 'link', 'show'])
  t.false(links.stdout.includes(a.name + ':'), 'device a still exists after close')
})

deviceTest('the kernel ping gets replies from a JS echo responder: 20 pings, 0% loss', async (t) => {
  await using tun = await Tun.create({ name: devName('p'), addresses: ['10.7.0.1/24'] })
  const log: string[] = []
  const responder = echoResponder(tun, log)
  const r = await run('ping', ['-c', '20', '-i', '0.05', '-W', '2', '-n', '10.7.0.2'])
  t.is(r.code, 0, r.stdout + r.stderr)
  t.regex(r.stdout, /20 packets transmitted, 20 received, 0% packet loss/)
  await tun.close()
  t.is(await responder, 20)
  t.true(log.some((l) => l.startsWith('IPv4 ICMP 10.7.0.1 > 10.7.0.2 echo-request')))
})

deviceTest('IPv6: ping -6 through the echo responder', async (t) => {
  await using tun = await Tun.create({ name: devName('v'), addresses: ['fd07::1/64'] })
  const responder = echoResponder(tun)
  const r = await run('ping', ['-6', '-c', '5', '-i', '0.05', '-W', '2', '-n', 'fd07::2'])
  t.is(r.code, 0, r.stdout + r.stderr)
  t.regex(r.stdout, /5 packets transmitted, 5 received, 0% packet loss/)
  await tun.close()
  t.is(await responder, 5)
})

deviceTest('UDP datagrams routed into the TUN are read byte-exact (IPv4 and IPv6)', async (t) => {
  await using tun = await Tun.create({ name: devName('u'), addresses: ['10.7.0.1/24', 'fd07::1/64'] })
  const payloads = Array.from({ length: 50 }, (_, i) => Buffer.alloc(1 + i * 29, i))
  const s4 = await udpSocket('udp4')
  const s6 = await udpSocket('udp6')
  const reading = (async () => {
    const got: { v: number; payload: Buffer; dst: string }[] = []
    for await (const p of tun.packets()) {
      const info = packet.parse(p)
      if (info?.protocol !== packet.PROTO_UDP || info.dstPort !== 7777) continue
      got.push({
        v: info.version,
        dst: info.dst,
        payload: Buffer.from(p.subarray(info.payloadOffset, info.payloadOffset + info.payloadLength)),
      })
      if (got.length === payloads.length * 2) return got
    }
    return got
  })()
  for (const p of payloads) await send(s4, p, 7777, '10.7.0.9')
  for (const p of payloads) await send(s6, p, 7777, 'fd07::9')
  const got = await reading
  t.deepEqual(
    got.filter((g) => g.v === 4).map((g) => g.payload),
    payloads,
  )
  t.deepEqual(
    got.filter((g) => g.v === 6).map((g) => g.payload),
    payloads,
  )
  t.true(got.every((g) => g.dst === (g.v === 4 ? '10.7.0.9' : 'fd07::9')))
  s4.close()
  s6.close()
})

deviceTest('packets written to the TUN reach a UDP socket byte-exact, single and batched', async (t) => {
  await using tun = await Tun.create({ name: devName('w'), addresses: ['10.7.0.1/24', 'fd07::1/64'] })
  const sock = await udpSocket('udp4', '10.7.0.1', 0)
  const sock6 = await udpSocket('udp6', 'fd07::1', 0)
  const received: Buffer[] = []
  const received6: Buffer[] = []
  sock.on('message', (m) => received.push(m))
  sock6.on('message', (m) => received6.push(m))
  const mk = (i: number, v6 = false) =>
    packet.udp({
      src: v6 ? 'fd07::2' : '10.7.0.2',
      dst: v6 ? 'fd07::1' : '10.7.0.1',
      srcPort: 5000,
      dstPort: (v6 ? sock6 : sock).address().port,
      payload: Buffer.alloc(10 + i, i & 0xff),
    })
  await tun.write(mk(0))
  await until(() => received.length === 1, 2000, 'the single packet')
  const batch = Array.from({ length: 100 }, (_, i) => mk(i + 1))
  await tun.write(batch)
  await tun.write(Array.from({ length: 20 }, (_, i) => mk(i, true)))
  await until(() => received.length === 101 && received6.length === 20, 3000, 'the batch')
  t.deepEqual(
    received,
    [mk(0), ...batch].map((p) => p.subarray(28)),
  )
  t.deepEqual(
    received6,
    Array.from({ length: 20 }, (_, i) => mk(i, true).subarray(48)),
  )
  const st = tun.stats()
  t.is(st.txPackets, 121)
  t.is(st.txErrors, 0)
  t.true(st.kernel.rxPackets >= 121)
  sock.close()
  sock6.close()
})

deviceTest('200 packets kept from early batches are byte-identical after 100 000 more have passed', async (t) => {
  await using tun = await Tun.create({ name: devName('k'), addresses: ['10.7.0.1/24'] })
  const kept: Buffer[] = []
  const copies: Buffer[] = []
  let passed = 0
  const flood = run(
    process.execPath,
    [`${root}/__test__/helpers/flood.mjs`, '10.7.0.2', '9100', '120', '400000', '20'],
    { timeoutMs: 60_000 },
  )
  for await (const p of tun.packets()) {
    if (packet.parse(p)?.dstPort !== 9100) continue
    if (kept.length < 200) {
      kept.push(p)
      copies.push(Buffer.from(p))
    } else if (++passed >= 100_000) break
  }
  const f = await flood
  t.is(f.code, 0, f.stderr)
  t.is(kept.length, 200)
  t.true(passed >= 100_000)
  t.true(
    kept.every((p, i) => p.equals(copies[i]!)),
    'a kept packet changed',
  )
  t.log(`flood: ${f.stdout.trim()}; stats ${JSON.stringify(tun.stats())}`)
})

deviceTest('a timer keeps firing and memory stays bounded during a long saturating flood', async (t) => {
  await using tun = await Tun.create({ name: devName('f'), addresses: ['10.7.0.1/24'] })
  let ticks = 0
  const timer = setInterval(() => ticks++, 10)
  const flood = run(
    process.execPath,
    [`${root}/__test__/helpers/flood.mjs`, '10.7.0.2', '9200', '1400', '2000000', '6'],
    { timeoutMs: 60_000 },
  )
  const rss: number[] = []
  let n = 0
  const start = Date.now()
  const sampler = setInterval(() => rss.push(process.memoryUsage.rss()), 250)
  const done = flood.then(() => tun.close())
  for await (const p of tun.packets()) n += p.length > 0 ? 1 : 0
  await done
  clearInterval(timer)
  clearInterval(sampler)
  const secs = (Date.now() - start) / 1000
  t.true(n > 10_000, `only ${n} packets arrived`)
  // Liveness, not speed: a 10 ms interval must have run at least a few times per second of flood.
  t.true(ticks >= secs * 5, `timer ran ${ticks} times in ${secs.toFixed(1)} s`)
  const settled = rss.slice(Math.floor(rss.length / 3))
  const growth = Math.max(...settled) - Math.min(...settled)
  t.true(growth < 256 * 1024 * 1024, `RSS grew by ${(growth / 2 ** 20).toFixed(0)} MiB during the flood`)
  t.log(
    `${n} packets in ${secs.toFixed(1)} s, ${ticks} ticks, RSS ${(Math.min(...settled) / 2 ** 20).toFixed(0)}..${(Math.max(...settled) / 2 ** 20).toFixed(0)} MiB`,
  )
})

deviceTest('close() while a for-await waits ends it (well under a second); an AbortSignal ends it too', async (t) => {
  const tun = await Tun.create({ name: devName('c'), addresses: ['10.7.0.1/24'] })
  const loop = (async () => {
    for await (const _ of tun.packets()) {
      /* idle link: nothing comes */
    }
  })()
  await new Promise((r) => setTimeout(r, 50))
  const t0 = performance.now()
  await tun.close()
  await loop
  // Generous on purpose (a loaded machine): what this catches is a loop left waiting, not a slow close.
  const took = performance.now() - t0
  t.true(took < 1000, `close took ${took.toFixed(0)} ms to end the loop`)

  await using tun2 = await Tun.create({ name: devName('c'), addresses: ['10.7.0.1/24'] })
  const ac = new AbortController()
  setTimeout(() => ac.abort(), 30)
  await t.throwsAsync(
    async () => {
      for await (const _ of tun2.batches({ signal: ac.signal })) {
        /* nothing */
      }
    },
    { name: 'AbortError' },
  )
  t.false(tun2.closed)
})

deviceTest('device errors are typed: name in use, duplicate address, MTU, packets, use after close', async (t) => {
  const name = devName('e')
  await using tun = await Tun.create({ name, addresses: ['10.7.0.1/24'] })
  const busy = await t.throwsAsync(() => Tun.create({ name }))
  t.is((busy as TunError).code, 'ERR_TUN_BUSY')
  t.regex(busy!.message, new RegExp(name))
  t.is(((await t.throwsAsync(() => Tun.create({ name: 'lo' }))) as TunError).code, 'ERR_TUN_BUSY')
  const dup = await t.throwsAsync(() => tun.addAddress('10.7.0.1/24'))
  t.is((dup as TunError).code, 'ERR_TUN_EXISTS')
  t.is((dup as TunError).errno, 17)
  t.regex(dup!.message, new RegExp(`addAddress 10.7.0.1/24 on ${name}`))
  t.is(((await t.throwsAsync(() => tun.setMtu(70_000))) as TunError).code, 'ERR_TUN_INVALID_MTU')
  t.is(((await t.throwsAsync(() => tun.write(Buffer.alloc(1501, 0x45)))) as TunError).code, 'ERR_TUN_PACKET_TOO_LARGE')
  t.is(((await t.throwsAsync(() => tun.write(Buffer.from([0x20, 0, 0])))) as TunError).code, 'ERR_TUN_INVALID_PACKET')
  // The device keeps working after every error.
  await tun.setMtu(1300)
  t.is(tun.mtu, 1300)
  t.is(((await t.throwsAsync(() => tun.write(Buffer.alloc(1301, 0x45)))) as TunError).code, 'ERR_TUN_PACKET_TOO_LARGE')
  await tun.close()
  t.is(
    (
      (await t.throwsAsync(() =>
        tun.write(packet.udp({ src: '10.7.0.2', dst: '10.7.0.1', srcPort: 1, dstPort: 2, payload: Buffer.alloc(1) })),
      )) as TunError
    ).code,
    'ERR_TUN_CLOSED',
  )
  t.throws(() => tun.packets(), { code: 'ERR_TUN_CLOSED' })
  await t.throwsAsync(() => tun.addAddress('10.8.0.1/24'), { code: 'ERR_TUN_CLOSED' })
})

deviceTest('the MTU raised from outside: a 9000-byte packet is read whole', async (t) => {
  await using tun = await Tun.create({ name: devName('m'), addresses: ['10.7.0.1/24'] })
  const r = await run('ip', ['link', 'set', tun.name, 'mtu', '9000'])
  t.is(r.code, 0, r.stderr)
  t.is(tun.mtu, 9000)
  const s = await udpSocket('udp4')
  const payload = Buffer.alloc(9000 - 28, 0xab)
  const reading = (async () => {
    for await (const p of tun.packets()) if (packet.parse(p)?.dstPort === 9300) return p
  })()
  await send(s, payload, 9300, '10.7.0.2')
  const p = await reading
  t.is(p!.length, 9000)
  t.true(p!.subarray(28).equals(payload))
  s.close()
})

deviceTest('no /dev/net/tun gives ERR_TUN_NO_DRIVER; no privilege gives ERR_TUN_PERMISSION', async (t) => {
  const script = `import { Tun } from '${root}/index.ts'
try { await Tun.create({ name: 'tknodrv0' }); console.log('created') } catch (e) { console.log(JSON.stringify({ code: e.code, errno: e.errno, message: e.message })) }`
  const node = [process.execPath, '--import', 'tsx', '--input-type=module', '-e', script]
  const noDriver = await run(
    'unshare',
    ['--mount', 'sh', '-c', `mount -t tmpfs none /dev/net && exec "$@"`, 'sh', ...node],
    { timeoutMs: 30_000 },
  )
  const r1 = JSON.parse(noDriver.stdout.trim().split('\n').pop()!)
  t.is(r1.code, 'ERR_TUN_NO_DRIVER', noDriver.stdout + noDriver.stderr)
  t.is(r1.errno, 2)
  t.regex(r1.message, /\/dev\/net\/tun/)
  const unpriv = await run(
    'setpriv',
    ['--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', ...node],
    {
      timeoutMs: 30_000,
      env: { ...process.env, HOME: '/tmp', TSX_TSCONFIG_PATH: '' },
    },
  )
  const r2 = JSON.parse(unpriv.stdout.trim().split('\n').pop()!)
  t.is(r2.code, 'ERR_TUN_PERMISSION', unpriv.stdout + unpriv.stderr)
  t.true(r2.errno === 1 || r2.errno === 13)
})
