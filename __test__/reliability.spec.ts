// Nothing a user's code does may abort the process or corrupt a packet: environment teardown with live threads
// (workers that throw, are terminated or exit; process.exit; the loop running dry), devices nobody closed, buffers
// reused after write(), hostile write arguments, forged handles, panics in tunkit's threads, a device deleted under
// a reader and a writer. Teardown and panic cases run in child processes (helpers/teardown.ts), so an abort shows
// as a failed test instead of killing the test runner.
import test from 'ava'
import { execFile, execFileSync } from 'node:child_process'
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Tun, TunError } from '../index.ts'
import { binding } from '../src/native.ts'
import { deviceTest, devName } from './helpers/device.ts'
import { faultEnv } from './helpers/native.ts'
import { ipv4 } from './helpers/packets.ts'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const SCENARIOS = fileURLToPath(new URL('./helpers/teardown.ts', import.meta.url))

interface Outcome {
  code: number | null
  signal: string | null
  out: unknown
  stderr: string
}

/** Runs a scenario of helpers/teardown.ts in a child node (the same version as this one). */
function scenario(args: string[], opts: { env?: NodeJS.ProcessEnv; node?: string[] } = {}): Promise<Outcome> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [...(opts.node ?? []), '--import', 'tsx', SCENARIOS, ...args],
      { cwd: ROOT, env: opts.env ?? process.env, timeout: 90_000, maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        const e = err as (Error & { code?: number | string; signal?: string }) | null
        const line = stdout.trim().split('\n').pop() ?? ''
        let out: unknown
        try {
          out = JSON.parse(line)
        } catch {
          out = line
        }
        resolve({
          code: e ? (typeof e.code === 'number' ? e.code : null) : 0,
          signal: e?.signal ?? null,
          out,
          stderr,
        })
      },
    )
  })
}

type Counts = { fds: number; threads: number }
function checkTeardown(t: import('ava').ExecutionContext, r: Outcome): void {
  t.is(r.signal, null, `child died of ${r.signal}: ${r.stderr.slice(-2000)}`)
  t.is(r.code, 0, r.stderr.slice(-2000))
  const o = r.out as { before: Counts; after: Counts; links: string[]; rounds: number }
  t.is(typeof o, 'object', String(r.out))
  t.is(o.after.threads, 0, 'tunkit threads left behind')
  t.is(o.after.fds, o.before.fds, `descriptors leaked over ${o.rounds} workers`)
  t.deepEqual(o.links, [], 'devices left behind')
}

for (const how of ['throw', 'terminate', 'exit'] as const) {
  test(`a worker that ${how}s with a memory pair, a read waiting and writes in flight leaves the parent whole`, async (t) => {
    checkTeardown(t, await scenario(['workers', 'memory', how, '8']))
  })
  deviceTest(
    `a worker that ${how}s with a device, a read, writes and link events live leaves the parent whole`,
    async (t) => {
      checkTeardown(t, await scenario(['workers', 'device', how, '6']))
    },
  )
}

deviceTest('process.exit() with devices, reads, writes and events live exits with its code, no abort', async (t) => {
  const r = await scenario(['exit'])
  t.is(r.signal, null, r.stderr)
  t.is(r.code, 7, r.stderr)
  t.deepEqual(r.out, { open: true })
})

deviceTest('the main thread ends by itself with devices open and nothing waiting', async (t) => {
  const r = await scenario(['natural-end'])
  t.is(r.signal, null, r.stderr)
  t.is(r.code, 0, r.stderr)
})

deviceTest('devices and memory pairs dropped without close() are collected: threads and devices go', async (t) => {
  const r = await scenario(['gc'], { node: ['--expose-gc'] })
  t.is(r.code, 0, r.stderr)
  const o = r.out as {
    base: number
    opened: { threads: number; links: number }
    after: { threads: number; links: number }
  }
  t.true(o.opened.threads >= 48 && o.opened.links === 4, JSON.stringify(o))
  t.is(o.after.threads, o.base, JSON.stringify(o))
  t.is(o.after.links, 0, JSON.stringify(o))
})

test('a read someone awaits keeps its device alive through garbage collection', async (t) => {
  const r = await scenario(['gc-waiting'], { node: ['--expose-gc'] })
  t.is(r.code, 0, r.stderr)
  t.deepEqual(r.out, { got: 42 })
})

for (const point of ['panic-reader', 'panic-writer', 'panic-inline'] as const) {
  const run =
    point === 'panic-inline'
      ? deviceTest
      : (title: string, f: (t: import('ava').ExecutionContext) => Promise<void>) => test(title, f)
  run(`a panic in tunkit (${point}) ends the queue with ERR_TUN_INTERNAL; the process goes on`, async (t) => {
    const r = await scenario(['panic', point], { env: faultEnv([point]) })
    t.is(r.signal, null, r.stderr.slice(-2000))
    t.is(r.code, 0, r.stderr.slice(-2000))
    const o = r.out as Record<string, string>
    t.is(o.read, 'ERR_TUN_INTERNAL', JSON.stringify(o))
    t.is(o.laterWrite, 'ERR_TUN_INTERNAL', JSON.stringify(o))
    if (point === 'panic-inline') t.is(o.firstWrite, 'ERR_TUN_INTERNAL', JSON.stringify(o))
    t.regex(r.stderr, new RegExp(`test hook ${point}`))
  })
}

test('the release addon has no panic points: TUNKIT_TEST_FAULTS is ignored', async (t) => {
  const r = await scenario(['panic', 'panic-writer'], {
    env: { ...process.env, TUNKIT_TEST_FAULTS: 'panic-writer,panic-reader' },
  })
  t.is(r.code, 0, r.stderr)
  const o = r.out as Record<string, string>
  t.is(o.firstWrite, 'ok')
  t.is(o.laterWrite, 'never failed')
})

test('a buffer reused after write() returns is delivered as it was, under backpressure', async (t) => {
  const [a, b] = Tun.createMemoryPair({ capacity: 8, ring: { txRingBytes: 65536, ringBatches: 2, batchPackets: 8 } })
  const N = 3000
  const seen: number[] = []
  const reader = (async () => {
    for await (const p of b.packets()) {
      // Every byte of the payload carries the packet's number: a reused buffer sent late would mix two.
      const n = p.readUInt32BE(28)
      for (let i = 32; i < p.length; i += 4) if (p.readUInt32BE(i) !== n) throw new Error(`packet ${n} corrupted`)
      seen.push(n)
      if (seen.length === N) return
    }
  })()
  const scratch = ipv4(1400, 0)
  const pending: Promise<void>[] = []
  // Keep a window of writes in flight so that many of them have to wait for room. What they can queue is the
  // budget plus the window, each write accepted and copied (65 536 + 40 × 1400 = 121 536 bytes), under twice the
  // budget, where a write is refused.
  const WINDOW = 40
  let waited = 0
  let queuedMost = 0
  for (let n = 0; n < N; n++) {
    for (let i = 28; i < scratch.length; i += 4) scratch.writeUInt32BE(n, i)
    const w = a.write(scratch)
    pending.push(w)
    queuedMost = Math.max(queuedMost, a.stats().txQueuedBytes)
    if (pending.length >= WINDOW) {
      await pending.shift()
      waited++
    }
  }
  await Promise.all(pending)
  await reader
  t.true(a.stats().txBackpressure > 0, 'backpressure never happened: the test proves nothing')
  t.true(queuedMost <= 65536 + WINDOW * 1400, `${queuedMost} bytes queued with ${WINDOW} writes in flight`)
  t.deepEqual(
    seen,
    Array.from({ length: N }, (_, i) => i),
  )
  t.true(waited > 0)
  await a.close()
  await b.close()
})

test('hostile write arguments get typed errors and take nothing', async (t) => {
  const [a, b] = Tun.createMemoryPair()
  const pkt = ipv4(100, 1)
  const bad = async (arg: unknown, re: RegExp) => {
    const e = await t.throwsAsync(() => a.write(arg as Uint8Array))
    t.true(e instanceof TunError, String(e))
    t.is((e as TunError).code, 'ERR_TUN_INVALID_ARGUMENT', (e as Error).message)
    t.regex((e as Error).message, re)
  }
  await bad(new Array(2 ** 32 - 1), /at most 65536 packets/)
  await bad(new Array(65537).fill(pkt), /at most 65536 packets/)
  // eslint-disable-next-line no-sparse-arrays
  await bad([pkt, , pkt], /packet 1 must be a Buffer or Uint8Array/)
  await bad({ length: 2, 0: pkt, 1: pkt }, /packet must be a Buffer or Uint8Array/)
  await bad(new Uint16Array(50), /must be a Buffer or Uint8Array/)
  await bad(new Float64Array(50), /must be a Buffer or Uint8Array/)
  await bad(new DataView(new ArrayBuffer(40)), /must be a Buffer or Uint8Array/)
  await bad([pkt, 'x'], /packet 1/)
  await bad(null, /packet/)
  // A getter that throws: the exception comes through as it is.
  const throwing = [pkt]
  Object.defineProperty(throwing, 1, {
    get: () => {
      throw new RangeError('getter says no')
    },
    enumerable: true,
  })
  await t.throwsAsync(() => a.write(throwing), { instanceOf: RangeError, message: 'getter says no' })
  // Resizable and detached buffers.
  const resizable = new (ArrayBuffer as unknown as new (n: number, o: object) => ArrayBuffer)(200, {
    maxByteLength: 400,
  })
  if ((resizable as { resizable?: boolean }).resizable) {
    new Uint8Array(resizable).set(pkt)
    await bad(new Uint8Array(resizable, 0, 100), /resizable ArrayBuffer/)
  }
  const gone = new Uint8Array(pkt)
  structuredClone(gone.buffer, { transfer: [gone.buffer] })
  await bad(gone, /detached ArrayBuffer/)
  t.is(a.stats().txPackets, 0, 'a refused write took packets')
  // The queue still works.
  await a.write([pkt, pkt])
  const it = b.packets()
  t.deepEqual((await it.next()).value, pkt)
  await a.close()
  await b.close()
})

test('an element getter that detaches an earlier element is caught before any pointer is used', async (t) => {
  const [a, b] = Tun.createMemoryPair()
  const first = new Uint8Array(ipv4(100, 1))
  const arr: Uint8Array[] = [first]
  Object.defineProperty(arr, 1, {
    enumerable: true,
    get() {
      structuredClone(first.buffer, { transfer: [first.buffer] })
      return ipv4(100, 2)
    },
  })
  const e = await t.throwsAsync(() => a.write(arr))
  t.is((e as TunError).code, 'ERR_TUN_INVALID_ARGUMENT')
  t.regex((e as Error).message, /packet 0 is a view of a detached ArrayBuffer/)
  t.is(a.stats().txPackets, 0)
  await a.close()
  await b.close()
})

test('forged and foreign handles get typed errors, not undefined behaviour', async (t) => {
  const lens = new Uint32Array(300)
  for (const forged of [{}, null, 42, 'queue', Symbol('q'), () => {}]) {
    t.throws(() => binding.pull(forged as never, lens), { code: 'ERR_TUN_INVALID_ARGUMENT' })
  }
  // A device handle where a queue is expected: tunkit's own external, the wrong kind.
  const [a, b] = Tun.createMemoryPair()
  const dev = binding.createMemoryPair(1500, 4)[0]
  t.throws(() => binding.pull(dev as never, lens), { code: 'ERR_TUN_INVALID_ARGUMENT', message: /wrong kind/ })
  // An external made by another addon: a tiny C addon built here, with Node-API declared by hand like ours.
  const foreign = foreignExternal()
  if (foreign === null) return t.pass('no C compiler: the foreign-external case was not run') // not reached in CI
  t.throws(() => binding.pull(foreign as never, lens), {
    code: 'ERR_TUN_INVALID_ARGUMENT',
    message: /not a tunkit handle/,
  })
  t.throws(() => binding.send(foreign as never, ipv4(40, 1)), { code: 'ERR_TUN_INVALID_ARGUMENT' })
  t.throws(() => binding.queueStats(foreign as never), { code: 'ERR_TUN_INVALID_ARGUMENT' })
  t.throws(() => binding.deviceInfo(foreign as never), { code: 'ERR_TUN_INVALID_ARGUMENT' })
  await a.close()
  await b.close()
})

/** An external value from a second, minimal addon (compiled with cc), or null without a compiler. */
function foreignExternal(): unknown {
  const dir = mkdtempSync(join(tmpdir(), 'tunkit-foreign-'))
  const src = join(dir, 'foreign.c')
  writeFileSync(
    src,
    `#include <stddef.h>
typedef void *napi_env, *napi_value, *napi_callback_info;
typedef int napi_status;
extern napi_status napi_create_external(napi_env, void *, void *, void *, napi_value *);
extern napi_status napi_create_function(napi_env, const char *, size_t, napi_value (*)(napi_env, napi_callback_info), void *, napi_value *);
extern napi_status napi_set_named_property(napi_env, napi_value, const char *, napi_value);
static int payload[4] = {1, 2, 3, 4};
static napi_value make(napi_env env, napi_callback_info info) {
  napi_value v = NULL;
  (void)info;
  napi_create_external(env, payload, NULL, NULL, &v);
  return v;
}
napi_value napi_register_module_v1(napi_env env, napi_value exports) {
  napi_value f;
  napi_create_function(env, "make", 4, make, NULL, &f);
  napi_set_named_property(env, exports, "make", f);
  return exports;
}
`,
  )
  const out = join(dir, 'foreign.node')
  try {
    execFileSync('cc', ['-shared', '-fPIC', '-O1', '-o', out, src], { stdio: 'pipe' })
  } catch (e) {
    if (process.env.CI) throw e
    return null
  }
  if (!existsSync(out)) return null
  const require = createRequire(import.meta.url)
  return (require(out) as { make(): unknown }).make()
}

deviceTest('a device deleted under a reader and a writer ends both with ERR_TUN_GONE', async (t) => {
  const name = devName('gone')
  const tun = await Tun.create({ name, addresses: ['10.82.0.1/24'] })
  const reading = (async () => {
    for await (const _ of tun.packets()) {
      // nothing arrives
    }
  })()
  const pkt = Buffer.from(ipv4(100, 1))
  pkt.set([10, 82, 0, 1], 12)
  pkt.set([10, 82, 0, 9], 16)
  await tun.write(pkt)
  execFileSync('ip', ['link', 'del', name])
  const e = await t.throwsAsync(reading)
  t.is((e as TunError).code, 'ERR_TUN_GONE', (e as Error).message)
  t.regex((e as Error).message, new RegExp(`${name}: the device was removed`))
  let w: unknown
  const deadline = Date.now() + 5000
  while (w === undefined && Date.now() < deadline) {
    try {
      await tun.write(pkt)
      await new Promise((r) => setTimeout(r, 10))
    } catch (err) {
      w = err
    }
  }
  t.is((w as TunError)?.code, 'ERR_TUN_GONE', String(w))
  await tun.close()
})

for (const mode of ['packets', 'batches'] as const) {
  test(`a ${mode}() reader that keeps packets does not stall the ring: under memory pressure it gets copies`, async (t) => {
    const budget = 1 << 20
    const [a, b] = Tun.createMemoryPair({ ring: { slabBytes: 16384, memoryBudget: budget, copyBelow: 0 } })
    const N = 20_000
    const kept: Buffer[] = []
    let got = 0
    const keep = (p: Buffer) => {
      if (got % 50 === 0) kept.push(p) // 400 packets kept: views would pin far more slabs than the budget holds
      return ++got === N
    }
    const reader = (async () => {
      if (mode === 'packets') {
        for await (const p of b.packets()) if (keep(p)) return
      } else {
        for await (const batch of b.batches()) for (const p of batch) if (keep(p)) return
      }
    })()
    const batch = Array.from({ length: 32 }, (_, i) => ipv4(1000, i))
    for (let sent = 0; sent < N; sent += 32) await a.write(batch)
    const done = await Promise.race([reader.then(() => true), new Promise((r) => setTimeout(() => r(false), 20_000))])
    t.true(done, `the reader stalled after ${got} of ${N} packets (rxLiveBytes ${b.stats().rxLiveBytes})`)
    t.is(kept.length, N / 50)
    for (const [i, p] of kept.entries()) t.is(p.readUInt32BE(28), (i * 50) % 32, `kept packet ${i} changed`)
    t.true(b.stats().rxLiveBytes <= budget)
    await a.close()
    await b.close()
  })
}
