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
 * - tunkit raw: the same loop with `offload: { raw: true }` (frames passed on with their header, like C);
 *
 * Every row also has ping p50/p99 under load: `ping -i 0.01` through the forwarder while iperf3 runs. Then the
 * echo-responder rows: `ping` to an address behind one TUN device whose reader answers the echo requests, the C
 * responder (`c/echo.c`, blocking read() and write()) against tunkit's (`batches()`, `packet.echoReply`, `write()`),
 * idle and beside an iperf3 run over loopback in the same namespace (the background load).
 *
 * Columns: Gbit/s received by iperf3, the forwarder's CPU (all threads, % of one core, over the iperf3 run),
 * iperf3 retransmits, ping p50/p99 in ms, and the ratios to the two C rows. BENCH_FWD_REPS (default 1) repeats
 * every row in rotating order and shows medians. The section goes to stdout and to benchmark/RESULTS-forward.md;
 * BENCH_FWD_ROWS='tunkit offload,C read/write' runs only those rows and only prints (for profiling one of them).
 * BENCH_FWD_RING='{"slabBytes":1048576}' passes ring options to the tunkit forwarders (for experiments). BENCH_WRITE=0
 * only prints (smoke runs).
 *
 * The forwarders, namespaces and tools are children of this process, killed by pid at the end of each row.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, statSync } from 'node:fs'
import { cpus, loadavg, release } from 'node:os'
import { dirname, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { Tun, packet, type TunOptions } from '../index.js'
import {
  Child,
  cpuSeconds,
  enterNetns,
  holdNetns,
  ip,
  median,
  parseIperf,
  percentile,
  positive,
  waitQuiet,
  writeResults,
} from './lib.ts'

const HERE = dirname(fileURLToPath(import.meta.url))
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
  /** tunkit: iterate with `batches({ superPackets: true })`. */
  superPackets?: boolean
}

const ROWS: Row[] = [
  { label: 'C read/write', kind: 'c', offload: false },
  { label: 'C pass-through (offload)', kind: 'c', offload: true },
  { label: 'tunkit', kind: 'tunkit', offload: false },
  { label: 'tunkit offload', kind: 'tunkit', offload: true },
  { label: 'tunkit raw', kind: 'tunkit', offload: { raw: true } },
]

// ---------------------------------------------------------------------------------------------------------------
// The tunkit forwarder (this file run with --forwarder)
// ---------------------------------------------------------------------------------------------------------------

/**
 * `forward.ts --forwarder <netns A> <netns B> <offload JSON>`: creates both devices, forwards until SIGTERM, then
 * prints the devices' counters. The loop is what a user would write.
 */
async function forwarder(nsA: string, nsB: string, offload: Offload, superPackets = false): Promise<void> {
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
      // The super-packet iteration mode is not in this build (see issue 12); the row is left out.
      if (superPackets) throw new Error('super-packet iteration is not available')
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
  /** Ping through the forwarder while iperf3 runs. */
  loadP50: number
  loadP99: number
  /** CPU of the idle forwarder, % of one core over 1 s before the pings. */
  idleCpu: number
  superPackets: number
  note?: string
}

/** CPU (% of one core) process `pid` uses over `ms` of doing nothing asked of it. */
async function idleCpuPct(pid: number, ms = 1000): Promise<number> {
  const c0 = cpuSeconds(pid)
  await sleep(ms)
  return (100 * (cpuSeconds(pid) - c0)) / (ms / 1000)
}

/** Sorted round-trip times (ms) in ping's output. */
const rttsOf = (out: string) => [...out.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1])).sort((x, y) => x - y)

/** `ping -i 0.01` of `count` echo requests from `ns` to `dst`, started after `delay` s, as a child. */
function pingChild(ns: string, dst: string, count: number, delay: number): Child {
  const cmd = `sleep ${delay}; exec ping -c ${count} -i 0.01 -W 1 -n ${dst}`
  return new Child('nsenter', [`--net=${ns}`, 'sh', '-c', cmd])
}

async function runRow(row: Row, seconds: number): Promise<Result> {
  const nsA = await holdNetns(900)
  const nsB = await holdNetns(900)
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
        row.superPackets ? 'super' : 'batches',
      ])
      await fwd.line(/^READY$/, CHILD_TIMEOUT_MS)
    }

    const idleCpu = await idleCpuPct(fwd.pid)
    // Round trip through the idle forwarder.
    const ping = spawnSync('nsenter', [`--net=${nsA.path}`, 'ping', '-c', '50', '-i', '0.01', '-W', '1', '-n', B_IP], {
      encoding: 'utf8',
      timeout: CHILD_TIMEOUT_MS,
    })
    const rtts = rttsOf(ping.stdout)

    server = new Child('nsenter', [`--net=${nsB.path}`, 'iperf3', '-s', '-1', '--forceflush', '-B', B_IP, '-p', '5201'])
    await server.line(/Server listening/, CHILD_TIMEOUT_MS)
    const busyBefore = await waitQuiet(QUIET_WAIT_MS)
    const cpu0 = cpuSeconds(fwd.pid)
    const t0 = performance.now()
    // Ping under load: from 0.5 s into the run until about 0.5 s before its end.
    const loadPing = pingChild(nsA.path, B_IP, Math.max(10, (seconds - 1) * 100), 0.5)
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
    const iperf = parseIperf({ stdout: client.stdout, stderr: client.stderr, code: client.status })
    const { gbps, retransmits } = iperf
    let note = iperf.note
    await Promise.race([loadPing.done, sleep(CHILD_TIMEOUT_MS)])
    await loadPing.stop('SIGKILL')
    const loadRtts = rttsOf(loadPing.stdout)

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
      loadP50: percentile(loadRtts, 50),
      loadP99: percentile(loadRtts, 99),
      idleCpu,
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
// Echo responders: ping to an address behind one TUN device whose reader answers
// ---------------------------------------------------------------------------------------------------------------

const ECHO_NET = '10.70.0.1/24'
const ECHO_IP = '10.70.0.2'

/** `forward.ts --echo <netns>`: a TUN device in the namespace whose reader answers echo requests, until SIGTERM. */
async function echoResponder(ns: string): Promise<void> {
  const tun = await Tun.create({ name: 'tkecho', netns: ns, addresses: [ECHO_NET] })
  const loop = (async () => {
    for await (const batch of tun.batches()) {
      const replies = batch.map((p) => packet.echoReply(p)).filter((r): r is Buffer => r !== null)
      if (replies.length > 0) await tun.write(replies)
    }
  })()
  console.log('READY')
  const alive = setInterval(() => {}, 1000)
  await new Promise<void>((resolve) => process.once('SIGTERM', () => resolve()))
  clearInterval(alive)
  await tun.close()
  await loop
  process.exit(0)
}

interface EchoResult {
  p50: number
  p99: number
  loadP50: number
  loadP99: number
  idleCpu: number
}

/** Ping RTT of the C or the tunkit echo responder, idle and beside an iperf3 run over loopback. */
async function runEcho(kind: 'c' | 'tunkit', seconds: number): Promise<EchoResult> {
  const ns = await holdNetns(900)
  let resp: Child | undefined
  let server: Child | undefined
  try {
    if (kind === 'c') {
      resp = new Child('nsenter', [`--net=${ns.path}`, join(BIN, 'echo'), 'tkecho', String(seconds + 60)])
      await resp.line(/^READY$/, CHILD_TIMEOUT_MS)
      ip(ns.path, ['addr', 'add', ECHO_NET, 'dev', 'tkecho'])
      ip(ns.path, ['link', 'set', 'tkecho', 'up', 'txqueuelen', String(TXQLEN)])
    } else {
      resp = new Child(process.execPath, ['--import', 'tsx', SELF, '--echo', ns.path])
      await resp.line(/^READY$/, CHILD_TIMEOUT_MS)
    }
    // `nsenter` execs the responder, so its pid is the responder's.
    const idleCpu = await idleCpuPct(resp.pid)
    const ping = spawnSync(
      'nsenter',
      [`--net=${ns.path}`, 'ping', '-c', '50', '-i', '0.01', '-W', '1', '-n', ECHO_IP],
      {
        encoding: 'utf8',
        timeout: CHILD_TIMEOUT_MS,
      },
    )
    const rtts = rttsOf(ping.stdout)
    server = new Child('nsenter', [`--net=${ns.path}`, 'iperf3', '-s', '-1', '-B', '127.0.0.1', '-p', '5202'])
    await server.line(/Server listening/, CHILD_TIMEOUT_MS)
    await waitQuiet(QUIET_WAIT_MS)
    const loadPing = pingChild(ns.path, ECHO_IP, Math.max(10, (seconds - 1) * 100), 0.5)
    spawnSync('nsenter', [`--net=${ns.path}`, 'iperf3', '-c', '127.0.0.1', '-p', '5202', '-t', String(seconds), '-J'], {
      encoding: 'utf8',
      timeout: (seconds + 20) * 1000,
    })
    await Promise.race([loadPing.done, sleep(CHILD_TIMEOUT_MS)])
    await loadPing.stop('SIGKILL')
    const loadRtts = rttsOf(loadPing.stdout)
    return {
      p50: percentile(rtts, 50),
      p99: percentile(rtts, 99),
      loadP50: percentile(loadRtts, 50),
      loadP99: percentile(loadRtts, 99),
      idleCpu,
    }
  } finally {
    await server?.stop('SIGKILL')
    await resp?.stop('SIGKILL')
    await ns.child.stop('SIGKILL')
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------------------------------------------

function buildC(): void {
  mkdirSync(BIN, { recursive: true })
  for (const name of ['fwd', 'echo']) {
    const src = join(HERE, 'c', `${name}.c`)
    const out = join(BIN, name)
    if (existsSync(out) && statSync(out).mtimeMs >= statSync(src).mtimeMs) continue
    console.log(`cc -O2 -o benchmark/bin/${name} benchmark/c/${name}.c`)
    execFileSync('cc', ['-O2', '-Wall', '-Wextra', '-o', out, src], { stdio: 'inherit' })
  }
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
          `ping p50 ${fmt(r.p50, 3)} ms idle, ${fmt(r.loadP50, 3)} ms under load${r.note ? ` (${r.note})` : ''}`,
      )
    }
  }
  // The echo responders (skipped by BENCH_FWD_ROWS unless it names them: 'C echo', 'tunkit echo').
  const echoKinds = (['c', 'tunkit'] as const).filter(
    (k) => !only || only.includes(k === 'c' ? 'C echo' : 'tunkit echo'),
  )
  const echoes = new Map<string, EchoResult[]>([
    ['c', []],
    ['tunkit', []],
  ])
  for (let rep = 0; rep < reps; rep++) {
    for (const kind of echoKinds) {
      const r = await runEcho(kind, seconds)
      echoes.get(kind)!.push(r)
      console.log(
        `${kind} echo: ping p50 ${fmt(r.p50, 3)} ms idle, ${fmt(r.loadP50, 3)} ms under load, idle CPU ${fmt(r.idleCpu, 1)}%`,
      )
    }
  }
  const emed = (kind: string, k: keyof EchoResult) => median(echoes.get(kind)!.map((r) => r[k]))
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
      'forwarder; *under load* is `ping -i 0.01` through it during the iperf3 run. *idle CPU* is the forwarder ' +
      'process over 1 s with no traffic. *super-packets* = frames read with a segmentation header (offload rows).',
    '',
    '| forwarder | Gbit/s | × C read/write | × C pass-through | forwarder CPU % | busy before % | retransmits | ping p50 ms | ping p99 ms | under load p50 ms | under load p99 ms | idle CPU % | super-packets read | note |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
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
        `${fmt(med(row.label, 'loadP50'), 3)} | ${fmt(med(row.label, 'loadP99'), 3)} | ${fmt(med(row.label, 'idleCpu'), 1)} | ` +
        `${fmt(med(row.label, 'superPackets'), 0)} | ${notes} |`,
    )
  }
  lines.push(
    '',
    `Echo responders: \`ping -c 50 -i 0.01\` to ${ECHO_IP}, behind one TUN device (${ECHO_NET}) whose reader answers ` +
      'the echo requests: `c/echo.c` (blocking read() and write()) or tunkit (`batches()`, `packet.echoReply`, ' +
      '`write()`); *under load*: `ping -i 0.01` while an iperf3 TCP run over loopback in the same namespace keeps the ' +
      'CPUs busy. *idle CPU*: the responder process over 1 s with no traffic.',
    '',
    '| echo responder | ping p50 ms | ping p99 ms | under load p50 ms | under load p99 ms | idle CPU % | × C p50 | × C p99 |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
  )
  for (const kind of ['c', 'tunkit']) {
    lines.push(
      `| ${kind === 'c' ? 'C' : 'tunkit'} | ${fmt(emed(kind, 'p50'), 3)} | ${fmt(emed(kind, 'p99'), 3)} | ` +
        `${fmt(emed(kind, 'loadP50'), 3)} | ${fmt(emed(kind, 'loadP99'), 3)} | ${fmt(emed(kind, 'idleCpu'), 1)} | ` +
        `${fmt(emed(kind, 'p50') / emed('c', 'p50'))} | ${fmt(emed(kind, 'p99') / emed('c', 'p99'))} |`,
    )
  }
  const plain = med('tunkit', 'gbps') / cPlain
  const off = med('tunkit offload', 'gbps')
  const met = (ok: boolean) => (ok ? 'met' : 'not met')
  /** Ping of `label` within 1.5× its C equivalent (p50 and p99, idle and under load). */
  const pingTarget = (label: string, c: string) => {
    const ratios = (['p50', 'p99', 'loadP50', 'loadP99'] as const).map((k) => med(label, k) / med(c, k))
    return `- ping through ${label} ≤ 1.5× through ${c} (p50, p99 idle; p50, p99 under load): ${ratios.map((x) => fmt(x)).join(', ')} — ${met(ratios.every((x) => x <= 1.5))}`
  }
  const echoRatios = (['p50', 'p99', 'loadP50', 'loadP99'] as const).map((k) => emed('tunkit', k) / emed('c', k))
  lines.push(
    '',
    'Targets (issue 4):',
    '',
    `- tunkit without offload ≥ 0.9× the C read/write forwarder: ${fmt(plain)}× — ${met(plain >= 0.9)}`,
    `- tunkit with offload ≥ 3× the C read/write forwarder: ${fmt(off / cPlain)}× — ${met(off / cPlain >= 3)}`,
    `- tunkit with offload ≥ 0.8× the C pass-through: ${fmt(off / cPass)}× — ${met(off / cPass >= 0.8)}`,
    '',
    'Targets (latency and pass-through):',
    '',
    `- tunkit without offload ≥ 1.0× the C read/write forwarder: ${fmt(plain)}× — ${met(plain >= 1)}`,
    pingTarget('tunkit', 'C read/write'),
    pingTarget('tunkit offload', 'C pass-through (offload)'),
    `- tunkit echo responder ≤ 1.5× the C one (p50, p99 idle; p50, p99 under load): ${echoRatios.map((x) => fmt(x)).join(', ')} — ${met(echoRatios.every((x) => x <= 1.5))}`,
    '',
  )
  const text = lines.join('\n')
  console.log('\n' + text)
  // A partial run (BENCH_FWD_ROWS) only prints: the file always holds a complete table.
  if (rows.length === ROWS.length) writeResults(join(HERE, 'RESULTS-forward.md'), text)
}

if (process.argv[2] === '--forwarder') {
  const [nsA, nsB, offload, mode] = process.argv.slice(3)
  await forwarder(nsA!, nsB!, JSON.parse(offload!) as Offload, mode === 'super')
} else if (process.argv[2] === '--echo') {
  await echoResponder(process.argv[3]!)
} else {
  // Tools are installed from outside the namespace (it has no route to the package mirror), then the run re-enters.
  enterNetns(SELF, ['iperf3', 'cc', 'ping'])
  await main()
}
