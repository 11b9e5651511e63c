/**
 * Multi-queue receive benchmark: received packets per second with 1 queue and with 2 queues, side by side.
 *
 *   node scripts/netns.mjs node --import tsx benchmark/multiqueue.ts
 *
 * Offered load: several copies of the C sender `c/flood` (sendmmsg, 64 datagrams per call) at once, each on its own
 * connected UDP socket to its own destination port, so each is one flow (its own source port too); the kernel
 * hashes flows onto the device's queues. All of them send to 10.90.0.2 through the device 10.90.0.1/24.
 *
 * Readers (tunkit `packets()`, counting packets), in this process:
 *   - 1 queue: the main thread reads the only queue;
 *   - 2 queues, one thread: the main thread reads both queues (two reader threads in Rust, one JS thread);
 *   - 2 queues, two threads: the main thread reads queue 0, a worker_threads worker reads queue 1.
 * First with the senders unpaced (their maximum), then at a fixed total rate of 0.9 × what the 1-queue reader
 * received at the maximum, where every reader sees the same offered load.
 *
 * Every measurement repeats MQ_REPS times (default 3) in rotating order; rows show medians. MQ_SECONDS (default 3) is
 * the length of one measurement, MQ_FLOWS (default 8) the number of senders, MQ_PAYLOADS (default "64") the payload
 * sizes. The table goes to stdout and, with the machine and the command, to benchmark/RESULTS-multiqueue.md.
 *
 * Safety: it refuses to run unless the network namespace holds nothing but `lo` (scripts/netns.mjs makes one).
 */
import { execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { cpus, loadavg, tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads'
import { Tun, TunQueue } from '../index.ts'

const HERE = dirname(fileURLToPath(import.meta.url))
const DEV = 'mqbench0'
const DST = '10.90.0.2'
const BASE_PORT = 9000
/** Time given to the readers to drain the queues after the senders stop. */
const SETTLE_MS = 250
const FIXED_FRACTION = 0.9
/** Pin the senders to CPU 0 with taskset (MQ_PIN=0 turns it off). */
const PIN_SENDERS = process.env.MQ_PIN !== '0' && hasTaskset()

function hasTaskset(): boolean {
  try {
    execFileSync('taskset', ['-c', '0', 'true'], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

function envNumber(name: string, dflt: number, max: number): number {
  const v = Number(process.env[name] ?? dflt)
  if (!Number.isFinite(v) || v <= 0 || v > max) throw new Error(`${name} must be a number in (0, ${max}]`)
  return v
}

// ---------------------------------------------------------------------------------------------------------------
// Main thread
// ---------------------------------------------------------------------------------------------------------------

type Layout = '1q' | '2q-1t' | '2q-2t'
const LAYOUTS: Layout[] = ['1q', '2q-1t', '2q-2t']
const LAYOUT_LABEL: Record<Layout, string> = {
  '1q': '1 queue, 1 JS thread',
  '2q-1t': '2 queues, 1 JS thread',
  '2q-2t': '2 queues, 2 JS threads (worker)',
}

interface Measurement {
  offeredPps: number
  receivedPps: number
  dropPct: number
  /** Share of the received packets that queue 0 got, in %. */
  queue0Pct: number
  cpuNsPerPkt: number
  readerCorePct: number
  senderCorePct: number
  /** CPU busy on the machine outside the reader and the senders (other work, interrupts), in % of one core. */
  otherCorePct: number
  kernelDrops: number
}

interface FloodResult {
  sent: number
  errors: number
  seconds: number
  userUs: number
  sysUs: number
}

async function main(): Promise<void> {
  const SECONDS = envNumber('MQ_SECONDS', 3, 60)
  const REPS = Math.round(envNumber('MQ_REPS', 3, 20))
  const FLOWS = Math.round(envNumber('MQ_FLOWS', 8, 64))
  const PAYLOADS = (process.env.MQ_PAYLOADS ?? '64').split(',').map(Number)
  if (PAYLOADS.some((p) => !Number.isInteger(p) || p < 0 || p > 1472)) throw new Error('MQ_PAYLOADS: sizes in 0..1472')

  checkNamespace()
  const flood = floodBinary()
  const started = new Date()
  const load0 = loadavg()
  console.log(
    `multi-queue receive: ${FLOWS} flows, ${SECONDS} s per run, ${REPS} repetitions, payloads ${PAYLOADS.join(', ')} B`,
  )

  const sections: { title: string; rows: [number, Layout, Measurement][] }[] = []
  for (const payload of PAYLOADS) {
    const max = await block(`${payload} B, senders unpaced`, payload, 0)
    const base = max.find(([l]) => l === '1q')![1]
    const rate = Math.round(base.receivedPps * FIXED_FRACTION)
    const fixed = await block(`${payload} B, fixed ${(rate / 1000).toFixed(1)} kpps`, payload, rate)
    sections.push({
      title: `${payload} B payload, senders at their maximum rate`,
      rows: max.map(([l, m]) => [payload, l, m]),
    })
    sections.push({
      title: `${payload} B payload, fixed offered load (${FIXED_FRACTION} × the 1-queue maximum: ${(rate / 1000).toFixed(1)} kpps)`,
      rows: fixed.map(([l, m]) => [payload, l, m]),
    })
  }

  const seconds = ((Date.now() - started.getTime()) / 1000).toFixed(0)
  const md = [
    '# tunkit multi-queue receive benchmark',
    '',
    `Produced by \`node scripts/netns.mjs node --import tsx benchmark/multiqueue.ts\` on ${started.toISOString()}, in ${seconds} s.`,
    '',
    `- Machine: ${cpus().length} CPUs (${cpus()[0]?.model.trim()}), Linux ${osRelease()}, Node ${process.version}`,
    `- Load average when it started: ${load0.map((x) => x.toFixed(2)).join(' ')} (the CPUs are shared with other work)`,
    `- ${SECONDS} s per measurement, ${REPS} repetitions in rotating order, medians shown; one private network namespace`,
    `- Senders: ${FLOWS} × \`benchmark/c/flood\` at once, each one UDP flow (its own source and destination port) to ${DST} through the device`,
    `- Device: 10.90.0.1/24, MTU 1500, txqueuelen 4096 (tunkit's default), \`queues: 1\` or \`queues: 2\` (IFF_MULTI_QUEUE)`,
    '- Readers: tunkit `packets()` counting packets, in this process: the main thread, plus a `worker_threads` worker that attached queue 1 (`detachQueue(1)` / `TunQueue.attach`) in the "2 JS threads" rows',
    '',
    'Columns: *offered* = datagrams the senders got into the stack per second; *received* = packets the readers counted per second;',
    '*drop %* = 1 − received/sent; *× 1 queue* = received over the 1-queue row of the same block; *queue 0 share* = the part of the',
    'received packets that came through queue 0 (the kernel hashes flows, so with few flows the split is uneven);',
    '*CPU ns/pkt* and *reader % core* = CPU time of the reading process (all its threads) per packet and over the run;',
    '*sender % core* = CPU time of all senders (pinned together to CPU 0 with taskset, so at most one core); *other % core* = the',
    "rest of the machine's busy time during the run (other jobs, interrupts); *kernel drops* = the device's tx_dropped (its queues",
    'to the readers were full).',
    '',
  ]
  for (const s of sections) {
    md.push(`## ${s.title}`, '', table(s.rows), '')
    console.log(`\n${s.title}\n${table(s.rows)}`)
  }
  md.push(
    '## Reading the numbers',
    '',
    'A second queue adds a second Rust reader thread and, with a worker, a second JavaScript thread; it pays off only when',
    "CPU is free for them. On a machine with 2 CPUs the senders (whose send path also runs the kernel's transmit into the",
    'device) and the readers compete for the same two cores, so the rows show what the extra threads cost there rather than',
    'what they gain on a larger machine.',
    '',
  )
  const out = join(HERE, 'RESULTS-multiqueue.md')
  writeFileSync(out, md.join('\n'))
  console.log(`\nwritten to ${out}`)

  /** One block: every layout REPS times in rotating order; medians per layout. */
  async function block(title: string, payload: number, ratePps: number): Promise<[Layout, Measurement][]> {
    const runs = new Map<Layout, Measurement[]>(LAYOUTS.map((l) => [l, []]))
    for (let rep = 0; rep < REPS; rep++) {
      for (let i = 0; i < LAYOUTS.length; i++) {
        const layout = LAYOUTS[(i + rep) % LAYOUTS.length]!
        const m = await measure(layout, payload, ratePps)
        runs.get(layout)!.push(m)
        console.log(
          `  ${title} | ${LAYOUT_LABEL[layout].padEnd(31)} | rep ${rep + 1}: offered ${(m.offeredPps / 1000).toFixed(1)} kpps, ` +
            `received ${(m.receivedPps / 1000).toFixed(1)} kpps, queue 0 ${m.queue0Pct.toFixed(0)} %`,
        )
      }
    }
    return LAYOUTS.map((l) => [l, medianOf(runs.get(l)!)])
  }

  /** One run: a fresh device, the readers of `layout`, FLOWS senders for SECONDS. */
  async function measure(layout: Layout, payload: number, ratePps: number): Promise<Measurement> {
    const queues = layout === '1q' ? 1 : 2
    const tun = await Tun.create({ name: DEV, queues, addresses: ['10.90.0.1/24'] })
    const stop = new AbortController()
    const counts = [0, 0]
    const count = async (q: TunQueue, i: number) => {
      try {
        for await (const _ of q.packets({ signal: stop.signal })) counts[i]!++
      } catch (e) {
        if (!stop.signal.aborted) throw e
      }
    }
    const loops = [count(tun.queue(0), 0)]
    let worker: Worker | undefined
    let workerCount: Promise<number> | undefined
    if (layout === '2q-1t') loops.push(count(tun.queue(1), 1))
    if (layout === '2q-2t') {
      worker = startWorker({ token: tun.detachQueue(1) })
      const w = worker
      workerCount = new Promise<number>((resolve, reject) => {
        w.on('message', (m) => m.packets !== undefined && resolve(m.packets))
        w.once('error', reject)
      })
      await new Promise<void>((resolve, reject) => {
        w.on('message', (m) => m.ready && resolve())
        w.once('error', reject)
        setTimeout(() => reject(new Error('the worker did not attach within 20 s')), 20_000).unref()
      })
    }

    await waitQuiet()
    const cpu0 = process.cpuUsage()
    const machine0 = cpuJiffies()
    const t0 = performance.now()
    const perFlow = ratePps > 0 ? ratePps / FLOWS : 0
    const senders = Array.from({ length: FLOWS }, (_, i) => runFlood(flood, payload, BASE_PORT + i, SECONDS, perFlow))
    const results = await Promise.all(senders)
    await sleep(SETTLE_MS)
    const kernel = tun.stats().kernel
    stop.abort()
    await Promise.all(loops)
    if (worker) {
      worker.postMessage('stop')
      counts[1] = await workerCount!
      await worker.terminate()
    }
    const cpu = process.cpuUsage(cpu0)
    const machine1 = cpuJiffies()
    const wall = (performance.now() - t0) / 1000
    await tun.close()

    const sent = results.reduce((a, r) => a + r.sent, 0)
    const received = counts[0]! + counts[1]!
    const senderUs = results.reduce((a, r) => a + r.userUs + r.sysUs, 0)
    return {
      offeredPps: sent / SECONDS,
      receivedPps: received / SECONDS,
      dropPct: sent > 0 ? Math.max(0, 100 * (1 - received / sent)) : 0,
      queue0Pct: received > 0 ? (100 * counts[0]!) / received : 0,
      cpuNsPerPkt: received > 0 ? ((cpu.user + cpu.system) * 1000) / received : 0,
      readerCorePct: (100 * (cpu.user + cpu.system)) / 1e6 / wall,
      senderCorePct: (100 * senderUs) / 1e6 / SECONDS,
      otherCorePct: Math.max(
        0,
        (100 * (machine1.busy - machine0.busy) * JIFFY_US) / 1e6 / wall -
          (100 * (cpu.user + cpu.system)) / 1e6 / wall -
          (100 * senderUs) / 1e6 / wall,
      ),
      kernelDrops: kernel.txDropped,
    }
  }

  function table(rows: [number, Layout, Measurement][]): string {
    const base = rows.find(([, l]) => l === '1q')![2]
    const head =
      '| payload | readers | offered kpps | received kpps | drop % | × 1 queue | queue 0 share % | CPU ns/pkt | reader % core | sender % core | other % core | kernel drops |'
    const sep = '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |'
    const lines = rows.map(([payload, layout, m]) =>
      [
        `${payload} B`,
        LAYOUT_LABEL[layout],
        (m.offeredPps / 1000).toFixed(1),
        (m.receivedPps / 1000).toFixed(1),
        m.dropPct.toFixed(2),
        (m.receivedPps / base.receivedPps).toFixed(2),
        layout === '1q' ? '100' : m.queue0Pct.toFixed(0),
        m.cpuNsPerPkt.toFixed(0),
        m.readerCorePct.toFixed(0),
        m.senderCorePct.toFixed(0),
        m.otherCorePct.toFixed(0),
        String(Math.round(m.kernelDrops)),
      ].join(' | '),
    )
    return [head, sep, ...lines.map((l) => `| ${l} |`)].join('\n')
  }
}

/** Busy and total jiffies of all CPUs, from /proc/stat. */
function cpuJiffies(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number)
  // user nice system idle iowait irq softirq steal (guest time is already counted in user)
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0)
  return { busy: total - f[3]! - f[4]!, total }
}
const JIFFY_US = 10_000 // USER_HZ is 100 on Linux

let quietSpentMs = 0
/**
 * The CPUs are shared: before each run wait (at most 1 s, and at most 30 s in all) for a 100 ms window in which the
 * machine is nearly idle (under 20 % of one core busy).
 */
async function waitQuiet(): Promise<void> {
  const t0 = performance.now()
  const deadline = t0 + Math.min(1000, Math.max(0, 30_000 - quietSpentMs))
  const ncpu = cpus().length
  for (;;) {
    const a = cpuJiffies()
    await sleep(100)
    const b = cpuJiffies()
    const busyPct = (100 * (b.busy - a.busy)) / ((b.total - a.total) / ncpu || 1)
    if (busyPct < 20 || performance.now() >= deadline) break
  }
  quietSpentMs += performance.now() - t0
}

/** Field-wise median of several runs. */
function medianOf(ms: Measurement[]): Measurement {
  const med = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b)
    const mid = s.length >> 1
    return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
  }
  const keys = Object.keys(ms[0]!) as (keyof Measurement)[]
  return Object.fromEntries(keys.map((k) => [k, med(ms.map((m) => m[k]))])) as unknown as Measurement
}

/** Runs one sender: `flood -d DST -p port -s payload -t seconds [-r rate]`; resolves with its JSON line. */
function runFlood(bin: string, payload: number, port: number, seconds: number, rate: number): Promise<FloodResult> {
  const args = ['-d', DST, '-p', String(port), '-s', String(payload), '-t', String(seconds)]
  if (rate > 0) args.push('-r', String(Math.round(rate)))
  return new Promise((resolve, reject) => {
    // All senders share CPU 0 (when there are several CPUs): together they get at most one core, like the single
    // sender of bench.ts, and the readers are not crowded out by a sender per flow.
    const pinned = cpus().length > 1 && PIN_SENDERS
    const p = pinned
      ? spawn('taskset', ['-c', '0', bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
      : spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    p.stdout.on('data', (d) => (out += d))
    p.stderr.on('data', (d) => (err += d))
    const timer = setTimeout(() => p.kill('SIGKILL'), (seconds + 10) * 1000)
    p.on('error', reject)
    p.on('close', (code) => {
      clearTimeout(timer)
      if (code !== 0) return reject(new Error(`flood exited ${code}: ${err.trim()}`))
      try {
        resolve(JSON.parse(out.trim().split('\n').pop()!) as FloodResult)
      } catch {
        reject(new Error(`flood printed no result: ${out} ${err}`))
      }
    })
  })
}

/**
 * The sender binary: benchmark/bin/flood when it is at least as new as its source (`npm run bench` builds it),
 * otherwise a fresh build in a temporary directory (this script does not write into benchmark/bin).
 */
function floodBinary(): string {
  const src = join(HERE, 'c', 'flood.c')
  const built = join(HERE, 'bin', 'flood')
  if (existsSync(built) && statSync(built).mtimeMs >= statSync(src).mtimeMs) return built
  const out = join(mkdtempSync(join(tmpdir(), 'tunkit-mq-')), 'flood')
  console.log(`cc -O2 -o ${out} benchmark/c/flood.c`)
  execFileSync('cc', ['-O2', '-Wall', '-Wextra', '-o', out, src], { stdio: 'inherit' })
  return out
}

/** Refuses to run in a namespace with interfaces besides lo (the host's, for instance). */
function checkNamespace(): void {
  const names = readFileSync('/proc/net/dev', 'utf8')
    .split('\n')
    .slice(2)
    .map((l) => l.split(':')[0]!.trim())
    .filter((n) => n !== '')
  const others = names.filter((n) => n !== 'lo')
  if (process.env.TUNKIT_NETNS !== '1' || others.length > 0) {
    throw new Error(
      `refusing to run outside a private network namespace (interfaces here: ${names.join(', ')}). ` +
        'Run: node scripts/netns.mjs node --import tsx benchmark/multiqueue.ts',
    )
  }
}

function osRelease(): string {
  try {
    return readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim()
  } catch {
    return 'unknown'
  }
}

/**
 * Starts this file as a worker. Compiled JavaScript needs only `new Worker(url, { workerData })`; from TypeScript
 * under Node 20 the worker registers tsx itself before loading a .ts module.
 */
function startWorker(data: unknown): Worker {
  const self = new URL(import.meta.url)
  if (!self.pathname.endsWith('.ts')) return new Worker(self, { workerData: data })
  const api = import.meta.resolve('tsx/esm/api')
  const boot = `import(${JSON.stringify(api)}).then(({ register }) => { register(); return import(${JSON.stringify(self.href)}) })`
  return new Worker(boot, { eval: true, workerData: data })
}

// ---------------------------------------------------------------------------------------------------------------
// Worker: attach the queue, count packets until told to stop
// ---------------------------------------------------------------------------------------------------------------

async function workerMain(): Promise<void> {
  const q = TunQueue.attach((workerData as { token: number }).token)
  const stop = new AbortController()
  parentPort!.on('message', (m) => m === 'stop' && stop.abort())
  parentPort!.postMessage({ ready: true })
  let packets = 0
  try {
    for await (const _ of q.packets({ signal: stop.signal })) packets++
  } catch (e) {
    if (!stop.signal.aborted) throw e
  }
  parentPort!.postMessage({ packets })
  await q.close()
  parentPort!.close()
}

// The same file is the main program and the worker.
if (isMainThread) await main()
else await workerMain()
