/**
 * Forwarding benchmark: TCP through a forwarder between two network namespaces, with and without kernel offload.
 *
 *   node scripts/ensure-tools.mjs iperf3 cc ping && node scripts/netns.mjs node --import tsx benchmark/forward.ts
 *
 * (started outside a private namespace it does both steps itself). Two namespaces A and B, made inside the private
 * one and held by `unshare --net sleep` children, each get a TUN device: 10.50.0.1/24 in A with a route to
 * 10.60.0.0/24, 10.60.0.1/24 in B with a route back. One forwarder process owns both devices and moves every packet
 * from one to the other. `iperf3` sends TCP from A to B for BENCH_FWD_SECONDS (default 5), and before that
 * `ping -c 50 -i 0.01` measures the round trip through the forwarder, idle. Rows, in one run:
 *
 * - C read/write: `c/fwd.c`, one thread polling both descriptors, one read() and one write() per packet;
 * - C pass-through: the same with IFF_VNET_HDR and TUNSETOFFLOAD (TSO/USO), frames passed on with their header;
 * - tunkit: `for await (const batch of a.batches()) await b.write(batch)` and back, without offload;
 * - tunkit offload: the same loop with `offload: true` (super-packets split on read, coalesced on write);
 * - tunkit raw: the same loop with `offload: { raw: true }` (frames passed on with their header, like C).
 *
 * Columns: Gbit/s received by iperf3, the forwarder's CPU (all threads, % of one core, over the iperf3 run),
 * iperf3 retransmits, ping p50/p99 in ms, and the ratios to the two C rows. BENCH_FWD_REPS (default 1) repeats
 * every row in rotating order and shows medians. The section goes to stdout and to benchmark/RESULTS-forward.md;
 * BENCH_FWD_ROWS='tunkit offload,C read/write' runs only those rows and only prints (for profiling one of them).
 * BENCH_FWD_RING='{"slabBytes":1048576}' passes ring options to the tunkit forwarders (for experiments).
 *
 * The forwarders, namespaces and tools are children of this process, killed by pid at the end of each row.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from 'node:fs'
import { cpus, loadavg, release } from 'node:os'
import { dirname, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { Tun, type TunOptions } from '../index.js'

const HERE = dirname(fileURLToPath(import.meta.url))
const ROOT = join(HERE, '..')
const BIN = join(HERE, 'bin')
const SELF = fileURLToPath(import.meta.url)

const A_NET = { addr: '10.50.0.1/24', route: '10.60.0.0/24' }
const B_NET = { addr: '10.60.0.1/24', route: '10.50.0.0/24' }
const B_IP = '10.60.0.1'
/** The kernel queue length tunkit gives its devices; the C devices get the same. */
const TXQLEN = 4096
const CHILD_TIMEOUT_MS = 20_000
/** Before each iperf3 run, wait up to this long for the shared machine to be nearly idle. */
const QUIET_WAIT_MS = 5000

type Offload = TunOptions['offload']

interface Row {
  label: string
  kind: 'c' | 'tunkit'
  offload: Offload
}

const ROWS: Row[] = [
  { label: 'C read/write', kind: 'c', offload: false },
  { label: 'C pass-through (offload)', kind: 'c', offload: true },
  { label: 'tunkit', kind: 'tunkit', offload: false },
  { label: 'tunkit offload', kind: 'tunkit', offload: true },
  { label: 'tunkit raw', kind: 'tunkit', offload: { raw: true } },
]

function positive(env: string, dflt: number, max: number): number {
  const v = Number(process.env[env] ?? dflt)
  if (!Number.isFinite(v) || v <= 0 || v > max) throw new Error(`${env} must be a number of 0..${max}`)
  return v
}

// ---------------------------------------------------------------------------------------------------------------
// The tunkit forwarder (this file run with --forwarder)
// ---------------------------------------------------------------------------------------------------------------

/**
 * `forward.ts --forwarder <netns A> <netns B> <offload JSON>`: creates both devices, forwards until SIGTERM, then
 * prints the devices' counters. The loop is what a user would write.
 */
async function forwarder(nsA: string, nsB: string, offload: Offload): Promise<void> {
  const ring = process.env.BENCH_FWD_RING ? (JSON.parse(process.env.BENCH_FWD_RING) as TunOptions['ring']) : undefined
  const a = await Tun.create({
    name: 'tkfwda',
    netns: nsA,
    addresses: [A_NET.addr],
    routes: [{ to: A_NET.route }],
    offload,
    ring,
  })
  const b = await Tun.create({
    name: 'tkfwdb',
    netns: nsB,
    addresses: [B_NET.addr],
    routes: [{ to: B_NET.route }],
    offload,
    ring,
  })
  const errors: string[] = []
  const forward = async (from: Tun, to: Tun) => {
    try {
      for await (const batch of from.batches()) await to.write(batch)
    } catch (e) {
      errors.push(`${(e as Error & { code?: string }).code ?? ''} ${(e as Error).message}`)
    }
  }
  const loops = [forward(a, b), forward(b, a)]
  console.log('READY')
  // The devices' threads do not keep Node alive by themselves; this timer does, until SIGTERM.
  const alive = setInterval(() => {}, 1000)
  await new Promise<void>((resolve) => process.once('SIGTERM', () => resolve()))
  clearInterval(alive)
  const stats = { a: a.stats(), b: b.stats() }
  await a.close()
  await b.close()
  await Promise.all(loops)
  console.log(
    JSON.stringify({ a: stats.a.backend, b: stats.b.backend, txErrors: stats.a.txErrors + stats.b.txErrors, errors }),
  )
  process.exit(0)
}

// ---------------------------------------------------------------------------------------------------------------
// Children and namespaces
// ---------------------------------------------------------------------------------------------------------------

/** A child whose stdout is kept; `line` waits (bounded) for a line matching a pattern. */
class Child {
  readonly proc: ChildProcess
  stdout = ''
  stderr = ''
  exited = false
  readonly done: Promise<void>
  #wake: (() => void) | null = null

  constructor(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env) {
    this.proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env })
    this.proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
      this.stdout += d
      this.#wake?.()
    })
    this.proc.stderr!.setEncoding('utf8').on('data', (d: string) => (this.stderr += d))
    this.done = new Promise((resolve) =>
      this.proc.once('close', () => {
        this.exited = true
        this.#wake?.()
        resolve()
      }),
    )
  }

  get pid(): number {
    return this.proc.pid!
  }

  async line(re: RegExp, ms: number): Promise<RegExpMatchArray> {
    const deadline = Date.now() + ms
    for (;;) {
      const m = this.stdout
        .split('\n')
        .map((l) => re.exec(l))
        .find((x) => x !== null)
      if (m) return m
      if (this.exited) throw new Error(`${this.proc.spawnfile} exited before ${re}: ${this.stderr.trim()}`)
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`timed out waiting for ${re} from ${this.proc.spawnfile}: ${this.stderr.trim()}`)
      await new Promise<void>((r) => {
        const t = setTimeout(r, left)
        this.#wake = () => {
          clearTimeout(t)
          r()
        }
      })
    }
  }

  /** Sends `signal`, waits up to `ms` for the exit, then SIGKILLs. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', ms = 5000): Promise<void> {
    if (this.exited) return
    this.proc.kill(signal)
    await Promise.race([this.done, sleep(ms)])
    if (!this.exited) {
      this.proc.kill('SIGKILL')
      await this.done
    }
  }
}

/** A network namespace held by `unshare --net sleep`; reachable as /proc/<pid>/ns/net while the child lives. */
async function holdNetns(): Promise<{ path: string; child: Child }> {
  const child = new Child('unshare', ['--net', 'sleep', '900'])
  const path = `/proc/${child.pid}/ns/net`
  const own = readlinkSync('/proc/self/ns/net')
  const deadline = Date.now() + 5000
  for (;;) {
    let id: string | null = null
    try {
      id = readlinkSync(path)
    } catch {
      /* not there yet */
    }
    if (id !== null && id !== own) break
    if (child.exited || Date.now() > deadline) throw new Error('unshare --net did not make a namespace')
    await sleep(5)
  }
  ip(path, ['link', 'set', 'lo', 'up'])
  return { path, child }
}

function ip(ns: string, args: string[]): void {
  execFileSync('nsenter', [`--net=${ns}`, 'ip', ...args], { stdio: ['ignore', 'ignore', 'inherit'] })
}

/** Busy and total jiffies of all CPUs together, from /proc/stat. */
function machineJiffies(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number)
  // user nice system idle iowait irq softirq steal (guest time is already in user)
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0)
  return { busy: total - f[3]! - f[4]!, total }
}

/**
 * Waits up to `maxMs` for a 200 ms window in which the machine is less than `pct` % busy (its CPUs are shared with
 * other work); returns how busy the last window was.
 */
async function waitQuiet(maxMs: number, pct = 15): Promise<number> {
  const deadline = Date.now() + maxMs
  for (;;) {
    const a = machineJiffies()
    await sleep(200)
    const b = machineJiffies()
    const busy = (100 * (b.busy - a.busy)) / (b.total - a.total || 1)
    if (busy < pct || Date.now() >= deadline) return busy
  }
}

/** utime + stime of a process, in seconds. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(f[11]) + Number(f[12])) / 100 // fields 14 and 15; USER_HZ is 100
}

// ---------------------------------------------------------------------------------------------------------------
// One row
// ---------------------------------------------------------------------------------------------------------------

interface Result {
  gbps: number
  cpuPct: number
  /** How busy the machine was just before the iperf3 run (other work sharing the CPUs), in % of the machine. */
  busyBefore: number
  retransmits: number
  p50: number
  p99: number
  pingLoss: number
  superPackets: number
  note?: string
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!
}

async function runRow(row: Row, seconds: number): Promise<Result> {
  const nsA = await holdNetns()
  const nsB = await holdNetns()
  let fwd: Child | undefined
  let server: Child | undefined
  try {
    if (row.kind === 'c') {
      fwd = new Child(join(BIN, 'fwd'), [
        nsA.path,
        'tkfwda',
        nsB.path,
        'tkfwdb',
        row.offload ? '1' : '0',
        String(seconds + 60),
      ])
      await fwd.line(/^READY$/, CHILD_TIMEOUT_MS)
      for (const [ns, dev, net] of [
        [nsA.path, 'tkfwda', A_NET],
        [nsB.path, 'tkfwdb', B_NET],
      ] as const) {
        ip(ns, ['addr', 'add', net.addr, 'dev', dev])
        ip(ns, ['link', 'set', dev, 'up', 'txqueuelen', String(TXQLEN)])
        ip(ns, ['route', 'add', net.route, 'dev', dev])
      }
    } else {
      fwd = new Child(process.execPath, [
        '--import',
        'tsx',
        SELF,
        '--forwarder',
        nsA.path,
        nsB.path,
        JSON.stringify(row.offload),
      ])
      await fwd.line(/^READY$/, CHILD_TIMEOUT_MS)
    }

    // Round trip through the idle forwarder.
    const ping = spawnSync('nsenter', [`--net=${nsA.path}`, 'ping', '-c', '50', '-i', '0.01', '-W', '1', '-n', B_IP], {
      encoding: 'utf8',
      timeout: CHILD_TIMEOUT_MS,
    })
    const rtts = [...ping.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1])).sort((x, y) => x - y)

    server = new Child('nsenter', [`--net=${nsB.path}`, 'iperf3', '-s', '-1', '--forceflush', '-B', B_IP, '-p', '5201'])
    await server.line(/Server listening/, CHILD_TIMEOUT_MS)
    const busyBefore = await waitQuiet(QUIET_WAIT_MS)
    const cpu0 = cpuSeconds(fwd.pid)
    const t0 = performance.now()
    const client = spawnSync(
      'nsenter',
      [
        `--net=${nsA.path}`,
        'iperf3',
        '-c',
        B_IP,
        '-p',
        '5201',
        '-t',
        String(seconds),
        '-J',
        '--connect-timeout',
        '3000',
      ],
      { encoding: 'utf8', timeout: (seconds + 20) * 1000 },
    )
    const wall = (performance.now() - t0) / 1000
    const cpuPct = (100 * (cpuSeconds(fwd.pid) - cpu0)) / wall
    let gbps = NaN
    let retransmits = NaN
    let note: string | undefined
    try {
      const j = JSON.parse(client.stdout) as {
        error?: string
        end?: { sum_received?: { bits_per_second: number }; sum_sent?: { retransmits?: number } }
      }
      if (j.error) note = `iperf3: ${j.error}`
      gbps = (j.end?.sum_received?.bits_per_second ?? NaN) / 1e9
      retransmits = j.end?.sum_sent?.retransmits ?? NaN
    } catch {
      note = `iperf3 gave no result (exit ${client.status}): ${client.stderr.trim().slice(0, 200)}`
    }

    await fwd.stop('SIGTERM')
    let superPackets = NaN
    const last = fwd.stdout.trim().split('\n').pop() ?? ''
    try {
      const r = JSON.parse(last) as { superPackets?: number; a?: Record<string, number>; errors?: string[] }
      superPackets = r.superPackets ?? r.a?.offloadSuperPacketsRead ?? 0
      if (r.errors && r.errors.length > 0) note = `forwarder: ${r.errors[0]}`
    } catch {
      note ??= `the forwarder printed no result: ${fwd.stderr.trim().slice(0, 200)}`
    }
    return {
      gbps,
      cpuPct,
      busyBefore,
      retransmits,
      p50: percentile(rtts, 50),
      p99: percentile(rtts, 99),
      pingLoss: 50 - rtts.length,
      superPackets,
      note,
    }
  } finally {
    await server?.stop('SIGKILL')
    await fwd?.stop('SIGKILL')
    await nsB.child.stop('SIGKILL')
    await nsA.child.stop('SIGKILL')
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------------------------------------------

function buildC(): void {
  mkdirSync(BIN, { recursive: true })
  const src = join(HERE, 'c', 'fwd.c')
  const out = join(BIN, 'fwd')
  if (existsSync(out) && statSync(out).mtimeMs >= statSync(src).mtimeMs) return
  console.log('cc -O2 -o benchmark/bin/fwd benchmark/c/fwd.c')
  execFileSync('cc', ['-O2', '-Wall', '-Wextra', '-o', out, src], { stdio: 'inherit' })
}

function median(xs: number[]): number {
  const s = xs.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b)
  if (s.length === 0) return NaN
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2
}

const fmt = (x: number, d = 2) => (Number.isNaN(x) ? '–' : x.toFixed(d))

async function main(): Promise<void> {
  const seconds = positive('BENCH_FWD_SECONDS', 5, 60)
  const reps = Math.round(positive('BENCH_FWD_REPS', 1, 10))
  buildC()
  const started = new Date()
  const load = loadavg()
  // BENCH_FWD_ROWS=label,label runs only those rows (for profiling one of them); the table then has gaps.
  const only = process.env.BENCH_FWD_ROWS?.split(',').map((s) => s.trim())
  const rows = only ? ROWS.filter((r) => only.includes(r.label)) : ROWS
  const results = new Map<string, Result[]>(ROWS.map((r) => [r.label, []]))
  for (let rep = 0; rep < reps; rep++) {
    for (let i = 0; i < rows.length; i++) {
      const row = rows[(i + rep) % rows.length]!
      const r = await runRow(row, seconds)
      results.get(row.label)!.push(r)
      console.log(
        `${row.label}: ${fmt(r.gbps)} Gbit/s, forwarder ${fmt(r.cpuPct, 0)}% CPU, machine ${fmt(r.busyBefore, 0)}% busy before, ` +
          `ping p50 ${fmt(r.p50, 3)} ms${r.note ? ` (${r.note})` : ''}`,
      )
    }
  }
  const med = (label: string, k: keyof Result) => median(results.get(label)!.map((r) => r[k] as number))
  const cPlain = med('C read/write', 'gbps')
  const cPass = med('C pass-through (offload)', 'gbps')
  const lines = [
    '## Forwarding: TCP through a forwarder between two namespaces',
    '',
    `Produced by \`benchmark/forward.ts\` on ${started.toISOString()}: ${cpus().length} CPUs (${cpus()[0]?.model.trim() ?? '?'}), ` +
      `Linux ${release()}, Node ${process.version}; load average at the start ${load.map((x) => x.toFixed(2)).join(' ')}.`,
    '',
    `iperf3 TCP from namespace A to namespace B for ${seconds} s per run, ${reps} run(s) per row in rotating order (medians), ` +
      'through one forwarder process that owns a TUN device in each namespace (MTU 1500, txqueuelen 4096). ' +
      '*forwarder CPU* is the forwarder process (all threads) in % of one core over the iperf3 run; iperf3 itself and ' +
      'the kernel work of the two TCP endpoints share the same CPUs, which the transfer saturates. *busy before* is ' +
      'how busy the machine was (all CPUs, in %) in the 200 ms before the run, after waiting up to ' +
      `${QUIET_WAIT_MS / 1000} s for it to be nearly idle: other work sharing the CPUs, which lowers the numbers. ` +
      '*ping* is 50 echo requests 10 ms apart through the idle ' +
      'forwarder. *super-packets* = frames read with a segmentation header (offload rows).',
    '',
    '| forwarder | Gbit/s | × C read/write | × C pass-through | forwarder CPU % | busy before % | retransmits | ping p50 ms | ping p99 ms | super-packets read | note |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ]
  for (const row of ROWS) {
    const g = med(row.label, 'gbps')
    const notes = [
      ...new Set(
        results
          .get(row.label)!
          .map((r) => r.note)
          .filter(Boolean),
      ),
    ].join('; ')
    lines.push(
      `| ${row.label} | ${fmt(g)} | ${fmt(g / cPlain)} | ${fmt(g / cPass)} | ${fmt(med(row.label, 'cpuPct'), 0)} | ` +
        `${fmt(med(row.label, 'busyBefore'), 0)} | ` +
        `${fmt(med(row.label, 'retransmits'), 0)} | ${fmt(med(row.label, 'p50'), 3)} | ${fmt(med(row.label, 'p99'), 3)} | ` +
        `${fmt(med(row.label, 'superPackets'), 0)} | ${notes} |`,
    )
  }
  const plain = med('tunkit', 'gbps') / cPlain
  const off = med('tunkit offload', 'gbps')
  lines.push(
    '',
    'Targets (issue 4):',
    '',
    `- tunkit without offload ≥ 0.9× the C read/write forwarder: ${fmt(plain)}× — ${plain >= 0.9 ? 'met' : 'not met'}`,
    `- tunkit with offload ≥ 3× the C read/write forwarder: ${fmt(off / cPlain)}× — ${off / cPlain >= 3 ? 'met' : 'not met'}`,
    `- tunkit with offload ≥ 0.8× the C pass-through: ${fmt(off / cPass)}× — ${off / cPass >= 0.8 ? 'met' : 'not met'}`,
    '',
  )
  const text = lines.join('\n')
  console.log('\n' + text)
  // A partial run (BENCH_FWD_ROWS) only prints: the file always holds a complete table.
  if (rows.length === ROWS.length) writeFileSync(join(HERE, 'RESULTS-forward.md'), text)
}

if (process.argv[2] === '--forwarder') {
  const [nsA, nsB, offload] = process.argv.slice(3)
  await forwarder(nsA!, nsB!, JSON.parse(offload!) as Offload)
} else if (process.env.TUNKIT_NETNS !== '1') {
  // Tools are installed from outside the namespace (it has no route to the package mirror), then the run re-enters.
  const tools = spawnSync(process.execPath, [join(ROOT, 'scripts', 'ensure-tools.mjs'), 'iperf3', 'cc', 'ping'], {
    stdio: 'inherit',
  })
  if (tools.status !== 0) process.exit(1)
  const r = spawnSync(
    process.execPath,
    [join(ROOT, 'scripts', 'netns.mjs'), process.execPath, '--import', 'tsx', SELF],
    { stdio: 'inherit' },
  )
  process.exit(r.status ?? 1)
} else {
  await main()
}
