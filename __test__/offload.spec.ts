// Offload (IFF_VNET_HDR) through real devices: two network namespaces A and B, each with a TUN device that this
// process (or a child forwarder) owns through the `netns` option, and a forwarder between them. TCP and UDP cross
// from A to B and are checked byte for byte at both ends. Everything stays inside the runner's private namespace.
import type { ExecutionContext } from 'ava'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { Tun, packet, type TunOptions } from '../index.ts'
import { deviceTest, deviceTestIf, devName } from './helpers/device.ts'
import { uso, usoDatagrams } from './helpers/uso.ts'
import { faultEnv } from './helpers/native.ts'
import { holdNetns, type HeldNetns } from './helpers/ns.ts'

const INDEX = fileURLToPath(new URL('../index.ts', import.meta.url))
/** The forwarded networks: A's device is 10.50.0.1/24, B's 10.60.0.1/24; each routes the other's net to itself. */
const A_ADDR = '10.50.0.1'
const B_ADDR = '10.60.0.1'
const MB = 1024 * 1024

// ---------------------------------------------------------------------------------------------------------------
// Children: a line protocol on stdout, bounded in time
// ---------------------------------------------------------------------------------------------------------------

interface LineChild {
  /** Resolves with the first stdout line matching `re` (its match), or rejects after `ms` or when the child exits. */
  waitFor(re: RegExp, ms: number): Promise<RegExpMatchArray>
  /** Resolves when the child exits, with its code and output. */
  done: Promise<{ code: number | null; stdout: string; stderr: string }>
  /** Writes a line to the child's stdin. */
  send(line: string): void
  kill(): void
}

function lineChild(argv: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs: number }): LineChild {
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], env: opts.env ?? process.env })
  let stdout = ''
  let stderr = ''
  let exited = false
  const waiters = new Set<() => void>()
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    stdout += d
    for (const w of waiters) w()
  })
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs)
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
    child.once('close', (code) => {
      exited = true
      clearTimeout(timer)
      for (const w of waiters) w()
      resolve({ code, stdout, stderr })
    }),
  )
  return {
    done,
    waitFor(re, ms) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const m = stdout
            .split('\n')
            .map((l) => l.match(re))
            .find((x) => x !== null)
          if (m) return finish(() => resolve(m))
          if (exited)
            finish(() => reject(new Error(`${argv.join(' ').slice(0, 80)} exited before ${re}: ${stderr.trim()}`)))
        }
        const t = setTimeout(
          () => finish(() => reject(new Error(`timed out after ${ms} ms waiting for ${re}; stderr: ${stderr.trim()}`))),
          ms,
        )
        const finish = (f: () => void) => {
          clearTimeout(t)
          waiters.delete(check)
          f()
        }
        waiters.add(check)
        check()
      })
    },
    send(line) {
      child.stdin.write(line + '\n')
    },
    kill() {
      if (!exited) child.kill('SIGKILL')
    },
  }
}

/** `node` running an ES module given as text, inside the namespace `ns`. */
function nodeIn(ns: HeldNetns, script: string, args: (string | number)[]): string[] {
  return ['nsenter', `--net=${ns.path}`, process.execPath, '--input-type=module', '-e', script, ...args.map(String)]
}

/** TCP receiver: listens on argv[1], prints `PORT n`, then `{bytes, sha}` of everything one connection sent. */
const TCP_RECEIVER = `
import net from 'node:net'
import { createHash } from 'node:crypto'
const srv = net.createServer((c) => {
  const h = createHash('sha256')
  let n = 0
  c.on('data', (d) => { h.update(d); n += d.length })
  c.on('end', () => { console.log(JSON.stringify({ bytes: n, sha: h.digest('hex') })); srv.close() })
  c.on('error', (e) => { console.error('receiver: ' + e.message); process.exit(2) })
})
srv.listen(0, process.argv[1], () => console.log('PORT ' + srv.address().port))
`

/** TCP sender: sends argv[3] random bytes to argv[1]:argv[2], then prints `{bytes, sha}` of what it sent. */
const TCP_SENDER = `
import net from 'node:net'
import { once } from 'node:events'
import { createHash, randomBytes } from 'node:crypto'
const [host, port, total] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])]
const h = createHash('sha256')
let sent = 0
const s = net.connect(port, host, async () => {
  while (sent < total) {
    const b = randomBytes(Math.min(1 << 20, total - sent))
    h.update(b)
    sent += b.length
    if (!s.write(b)) await once(s, 'drain')
  }
  s.end()
})
s.on('error', (e) => { console.error('sender: ' + e.message); process.exit(2) })
s.on('close', () => console.log(JSON.stringify({ bytes: sent, sha: h.digest('hex') })))
`

interface Digest {
  bytes: number
  sha: string
}

/** Sends `total` bytes over TCP from A to B through whatever forwards between them; both ends' digests. */
async function tcpTransfer(nsA: HeldNetns, nsB: HeldNetns, total: number): Promise<{ sent: Digest; got: Digest }> {
  const rx = lineChild(nodeIn(nsB, TCP_RECEIVER, [B_ADDR]), { timeoutMs: 90_000 })
  try {
    const port = (await rx.waitFor(/^PORT (\d+)$/, 10_000))[1]!
    const tx = lineChild(nodeIn(nsA, TCP_SENDER, [B_ADDR, port, total]), { timeoutMs: 90_000 })
    const [s, r] = await Promise.all([tx.done, rx.done])
    if (s.code !== 0 || r.code !== 0)
      throw new Error(`sender exit ${s.code}: ${s.stderr}; receiver exit ${r.code}: ${r.stderr}`)
    const last = (out: string) => JSON.parse(out.trim().split('\n').pop()!) as Digest
    return { sent: last(s.stdout), got: last(r.stdout) }
  } finally {
    rx.kill()
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The two namespaces and their devices
// ---------------------------------------------------------------------------------------------------------------

function deviceOptions(side: 'a' | 'b', ns: HeldNetns, offload: TunOptions['offload']): TunOptions {
  const [addr, other] = side === 'a' ? [A_ADDR, '10.60.0.0/24'] : [B_ADDR, '10.50.0.0/24']
  return { name: devName('o'), netns: ns.path, addresses: [`${addr}/24`], routes: [{ to: other }], offload }
}

/** Runs `body` with two fresh namespaces, removed afterwards whatever happens. */
async function withNamespaces(body: (a: HeldNetns, b: HeldNetns) => Promise<void>): Promise<void> {
  const nsA = await holdNetns(150)
  let nsB: HeldNetns | undefined
  try {
    nsB = await holdNetns(150)
    await body(nsA, nsB)
  } finally {
    await nsB?.close()
    await nsA.close()
  }
}

/** Forwards every batch from `from` to `to` until `from` is closed. */
async function forward(from: Tun, to: Tun): Promise<void> {
  for await (const batch of from.batches()) await to.write(batch)
}

/** Collects the TUNKIT_NOTICE warnings this process emits while `body` runs. */
async function noticesDuring(body: () => Promise<void>): Promise<string[]> {
  const seen: string[] = []
  const onWarning = (w: Error & { code?: string }) => {
    if (w.code === 'TUNKIT_NOTICE') seen.push(w.message)
  }
  process.on('warning', onWarning)
  try {
    await body()
    // Warnings are emitted on a later tick.
    await new Promise((r) => setTimeout(r, 50))
  } finally {
    process.off('warning', onWarning)
  }
  return seen
}

// ---------------------------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------------------------

deviceTest('offload: 50 MB of TCP across a splitting and coalescing forwarder arrive byte-exact', async (t) => {
  await withNamespaces(async (nsA, nsB) => {
    const a = await Tun.create(deviceOptions('a', nsA, true))
    const b = await Tun.create(deviceOptions('b', nsB, true))
    let result: { sent: Digest; got: Digest } | undefined
    let sa: Record<string, number> = {}
    let sb: Record<string, number> = {}
    const notices = await noticesDuring(async () => {
      const loops = [forward(a, b), forward(b, a)]
      try {
        result = await tcpTransfer(nsA, nsB, 50 * MB)
        sa = a.stats().backend
        sb = b.stats().backend
      } finally {
        await a.close()
        await b.close()
        await Promise.all(loops)
      }
    })
    t.is(result!.sent.bytes, 50 * MB)
    t.deepEqual(result!.got, result!.sent, 'the receiver got other bytes than were sent')
    t.log(`a: ${JSON.stringify(sa)}`)
    t.log(`b: ${JSON.stringify(sb)}`)
    t.is(sa.offloadTcp, 1)
    t.true(sa.offloadSuperPacketsRead! > 0, 'the kernel handed over no super-packet: offload did not happen')
    t.true(sa.offloadSegmentsRead! > sa.offloadSuperPacketsRead!)
    t.true(sb.offloadSuperPacketsWritten! > 0, 'nothing was coalesced on the way into B')
    t.true(sb.offloadSegmentsCoalesced! > sb.offloadSuperPacketsWritten!)
    t.is(sa.offloadFallbacks, 0)
    t.is(sb.offloadFallbacks, 0)
    t.is(sa.offloadReadErrors, 0)
    t.deepEqual(notices, [])
  })
})

/** UDP receiver: prints `PORT n`, then the datagrams it got (base64, in order) once argv[2] arrived or 20 s passed. */
const UDP_RECEIVER = `
import dgram from 'node:dgram'
const want = Number(process.argv[2])
const s = dgram.createSocket({ type: 'udp4', recvBufferSize: 8 << 20 })
const got = []
s.on('message', (m) => {
  got.push(m.toString('base64'))
  if (got.length === want) { console.log(JSON.stringify(got)); s.close() }
})
s.bind(0, process.argv[1], () => console.log('PORT ' + s.address().port))
setTimeout(() => { console.log(JSON.stringify(got)); process.exit(0) }, 20000).unref()
`

deviceTestIf(
  uso.reason,
  'offload: UDP segmentation (USO) super-packets are split and coalesced, datagrams byte-exact',
  async (t) => {
    const sender = uso.sender!
    await withNamespaces(async (nsA, nsB) => {
      const a = await Tun.create(deviceOptions('a', nsA, { udp: true }))
      const b = await Tun.create(deviceOptions('b', nsB, { udp: true }))
      // The probe saw USO accepted on this kernel; a device that now refuses it is a failure, not a skip.
      t.is(a.stats().backend.offloadUdp, 1, 'the TUN refused USO although the probe had it')
      const SENDS = 100
      const LEN = 12_500
      const SEG = 1200
      const perSend = Math.ceil(LEN / SEG)
      const loops = [forward(a, b), forward(b, a)]
      let sa: Record<string, number> = {}
      let sb: Record<string, number> = {}
      try {
        const rx = lineChild(nodeIn(nsB, UDP_RECEIVER, [B_ADDR, SENDS * perSend]), { timeoutMs: 60_000 })
        const port = (await rx.waitFor(/^PORT (\d+)$/, 10_000))[1]!
        const tx = lineChild(
          ['nsenter', `--net=${nsA.path}`, sender, B_ADDR, port, String(SENDS), String(LEN), String(SEG)],
          { timeoutMs: 60_000 },
        )
        const s = await tx.done
        t.is(s.code, 0, s.stderr)
        const r = await rx.done
        const got = (JSON.parse(r.stdout.trim().split('\n').pop()!) as string[]).map((x) => Buffer.from(x, 'base64'))
        const want = usoDatagrams(SENDS, LEN, SEG)
        t.is(got.length, want.length, 'datagrams were lost')
        t.true(
          got.every((g, i) => g.equals(want[i]!)),
          'a datagram arrived changed or out of order',
        )
        sa = a.stats().backend
        sb = b.stats().backend
      } finally {
        await a.close()
        await b.close()
        await Promise.all(loops)
      }
      t.log(`a: ${JSON.stringify(sa)}`)
      t.log(`b: ${JSON.stringify(sb)}`)
      t.true(sa.offloadSuperPacketsRead! >= SENDS, 'the sends did not reach the forwarder as super-packets')
      t.true(sa.offloadSegmentsRead! >= SENDS * perSend)
      t.true(sb.offloadSuperPacketsWritten! > 0, 'no UDP super-packet was written into B')
    })
  },
)

/**
 * The forwarder of the fallback test, in a child process so that the test addon and its armed fault injection
 * points (TUNKIT_NATIVE_PATH, TUNKIT_TEST_FAULTS; the `offload-write` point is checked when a queue is created)
 * apply to it alone. Prints READY, forwards until a line arrives on stdin, then prints the backend counters of both
 * devices and the TUNKIT_NOTICE warnings it saw.
 */
const FORWARDER = `
import { Tun } from ${JSON.stringify(INDEX)}
const [a, b] = [await Tun.create(JSON.parse(process.argv[1])), await Tun.create(JSON.parse(process.argv[2]))]
const notices = []
process.on('warning', (w) => { if (w.code === 'TUNKIT_NOTICE') notices.push(w.message) })
const forward = async (from, to) => { for await (const batch of from.batches()) await to.write(batch) }
const loops = [forward(a, b), forward(b, a)]
console.log('READY')
process.stdin.once('data', async () => {
  const stats = { a: a.stats().backend, b: b.stats().backend }
  await a.close()
  await b.close()
  await Promise.all(loops)
  await new Promise((r) => setTimeout(r, 50))
  console.log(JSON.stringify({ ...stats, notices }))
  process.exit(0)
})
`

/** Runs FORWARDER in a child with `env` between offload devices in A and B, sends `bytes` of TCP through it. */
async function forwardInChild(
  t: ExecutionContext,
  nsA: HeldNetns,
  nsB: HeldNetns,
  env: NodeJS.ProcessEnv,
  bytes: number,
): Promise<{ a: Record<string, number>; b: Record<string, number>; notices: string[] }> {
  const fwd = lineChild(
    [
      process.execPath,
      '--import',
      'tsx',
      '--input-type=module',
      '-e',
      FORWARDER,
      JSON.stringify(deviceOptions('a', nsA, true)),
      JSON.stringify(deviceOptions('b', nsB, true)),
    ],
    { env, timeoutMs: 100_000 },
  )
  try {
    await fwd.waitFor(/^READY$/, 20_000)
    const { sent, got } = await tcpTransfer(nsA, nsB, bytes)
    t.is(sent.bytes, bytes)
    t.deepEqual(got, sent, 'the receiver got other bytes than were sent')
    fwd.send('stop')
    const out = await fwd.done
    t.is(out.code, 0, out.stderr)
    const res = JSON.parse(out.stdout.trim().split('\n').pop()!) as {
      a: Record<string, number>
      b: Record<string, number>
      notices: string[]
    }
    t.log(`a: ${JSON.stringify(res.a)}`)
    t.log(`b: ${JSON.stringify(res.b)}`)
    return res
  } finally {
    fwd.kill()
  }
}

deviceTest(
  'offload: when the kernel refuses a coalesced write, the forwarder falls back, loses nothing, warns once',
  async (t: ExecutionContext) => {
    // The test addon, with the offload-write fault armed: each offload queue's first super-packet write fails.
    const env = faultEnv(['offload-write'])
    await withNamespaces(async (nsA, nsB) => {
      const { a, b, notices } = await forwardInChild(t, nsA, nsB, env, 20 * MB)
      t.true(a.offloadSuperPacketsRead! > 0, 'no super-packet was read: the fallback path was not reached')
      t.is(b.offloadFallbacks, 1)
      t.is(a.offloadFallbacks, 0)
      t.is(b.offloadSuperPacketsWritten, 0, 'coalesced writes went on after the fallback')
      t.is(notices.length, 1, JSON.stringify(notices))
      t.regex(notices[0]!, /refused a super-packet write/)
    })
  },
)

deviceTest(
  'offload: the release addon has no fault injection: TUNKIT_TEST_FAULTS=offload-write changes nothing',
  async (t: ExecutionContext) => {
    // The fallback test's counterpart: the same forwarder and faults, but the addon `npm run build` makes.
    const { TUNKIT_NATIVE_PATH: _, ...base } = process.env
    const env = { ...base, TUNKIT_TEST_FAULTS: 'offload-write' }
    await withNamespaces(async (nsA, nsB) => {
      const { a, b, notices } = await forwardInChild(t, nsA, nsB, env, 8 * MB)
      t.true(a.offloadSuperPacketsRead! > 0, 'no super-packet was read: nothing was coalesced to refuse')
      t.is(b.offloadFallbacks, 0, 'the release addon reacted to TUNKIT_TEST_FAULTS')
      t.is(a.offloadFallbacks, 0)
      t.true(b.offloadSuperPacketsWritten! > 0, 'coalesced writes stopped: a fault was injected')
      t.deepEqual(notices, [])
    })
  },
)

deviceTest(
  'offload raw: super-packets pass through a forwarder with their headers, byte-exact; bad frames are refused',
  async (t) => {
    await withNamespaces(async (nsA, nsB) => {
      const a = await Tun.create(deviceOptions('a', nsA, { raw: true }))
      const b = await Tun.create(deviceOptions('b', nsB, { raw: true }))
      let largest = 0
      let plainHeaders = 0
      let sa: Record<string, number> = {}
      let sb: Record<string, number> = {}
      const loops = [
        (async () => {
          for await (const batch of a.batches()) {
            for (const f of batch) {
              largest = Math.max(largest, f.length)
              // byte 1 is gso_type: 0 for a plain packet, whose IP header then starts at byte 10.
              if (f[1] === 0 && f[10]! >> 4 === 4) plainHeaders++
            }
            await b.write(batch)
          }
        })(),
        forward(b, a),
      ]
      try {
        // A valid frame: an all-zero header (a plain packet), then an IPv4/UDP packet (to a closed port in B).
        const udp = packet.udp({ src: A_ADDR, dst: B_ADDR, srcPort: 9, dstPort: 9, payload: Buffer.from('raw') })
        try {
          await b.write(Buffer.concat([Buffer.alloc(10), udp]))
        } catch (e) {
          t.fail(
            `a valid raw frame was refused (${(e as Error).message}): the binding must check raw writes with packet::virtio::validate_raw`,
          )
          return
        }
        // A frame is the 10-byte header and a packet: anything else fails its own write, typed, before it is queued.
        const bad = await t.throwsAsync(() => b.write(Buffer.from([0, 0, 0, 0, 0])))
        t.is((bad as Error & { code?: string }).code, 'ERR_TUN_INVALID_PACKET')
        const ufo = Buffer.alloc(60)
        ufo[1] = 3 // GSO_UDP (UFO), which tunkit does not pass on
        ufo[10] = 0x45
        t.is(((await t.throwsAsync(() => b.write(ufo))) as Error & { code?: string }).code, 'ERR_TUN_INVALID_PACKET')
        const { sent, got } = await tcpTransfer(nsA, nsB, 20 * MB)
        t.is(sent.bytes, 20 * MB)
        t.deepEqual(got, sent, 'the receiver got other bytes than were sent')
        sa = a.stats().backend
        sb = b.stats().backend
      } finally {
        await a.close()
        await b.close()
        await Promise.all(loops)
      }
      t.log(`a: ${JSON.stringify(sa)}; largest frame ${largest} bytes`)
      t.log(`b: ${JSON.stringify(sb)}`)
      t.true(sa.offloadSuperPacketsRead! > 0)
      t.true(largest > 1500 + 10, 'no frame was larger than the MTU: super-packets were not passed on')
      t.true(plainHeaders > 0, 'plain packets (the handshake) did not come with an all-zero segmentation header')
      t.true(sb.offloadSuperPacketsWritten! > 0)
      t.is(sb.offloadSegmentsCoalesced, 0, 'raw mode does not coalesce')
      t.is(sa.offloadSegmentsRead, 0, 'raw mode does not split')
    })
  },
)

deviceTest('offload: option validation and switches', async (t) => {
  await withNamespaces(async (nsA) => {
    const off = await Tun.create({ ...deviceOptions('a', nsA, { tcp: false, udp: false }) })
    const s = off.stats().backend
    t.is(s.offloadTcp, 0)
    t.is(s.offloadUdp, 0)
    t.is(s.offloadFallbacks, 0)
    await off.close()
    const plain = await Tun.create({ ...deviceOptions('a', nsA, false) })
    t.deepEqual(plain.stats().backend, {}, 'offload: false opens the device without virtio-net headers')
    await plain.close()
    await t.throwsAsync(() => Tun.create({ mode: 'tap', offload: true, netns: nsA.path }), {
      code: 'ERR_TUN_UNSUPPORTED',
    })
    await t.throwsAsync(() => Tun.create({ offload: { tcp: 'yes' } as never, netns: nsA.path }))
  })
})
