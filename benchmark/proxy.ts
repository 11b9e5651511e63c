/**
 * Proxy benchmark: `tunkit proxy` (TUN, stack, SOCKS5 to dante) against the same traffic through the same dante
 * without any TUN, side by side in one run: iperf3 TCP throughput and short connections per second against
 * `proxychains4` (LD_PRELOAD of connect(): the ceiling any tun2socks is measured against), and UDP echo through
 * SOCKS5 UDP ASSOCIATE against a plain SOCKS5 UDP client talking to dante directly (proxychains4 cannot carry UDP),
 * with the same UDP straight over the veths as a third reference.
 *
 *   BENCH_ONLY=proxy npm run bench          (or: node --import tsx benchmark/proxy.ts, which enters a namespace)
 *
 * Three namespaces inside the private one this runs in: client C (10.80.0.1; the command and its TUN, or
 * proxychains4, and the clients), proxy P (10.80.0.2 | 10.81.0.1; dante on 10.80.0.2:1080, forwarding between C and
 * R) and remote R (10.81.0.2; the iperf3 server, and this file with --servers: TCP request/response on port 7000, a
 * UDP echo on 9000). The tunkit process runs from the sources (`node --import tsx src/cli/main.ts proxy --socks5
 * 10.80.0.2:1080 --route default`). Sections (BENCH_PROXY_SECTIONS=tcp,cps,udp picks some; a partial run only
 * prints):
 *
 * 1. tcp: iperf3 -t BENCH_PROXY_SECONDS (default 5, at most 60), 1 and 4 streams, both directions; the TUN's MTU is
 *    BENCH_PROXY_MTU (1500).
 * 2. cps: `c/cps` (built into benchmark/bin), BENCH_PROXY_CPS_COUNT (2000, at most 100 000) cycles of connect,
 *    4-byte request, 4-byte answer and close on BENCH_PROXY_CPS_PARALLEL (8, at most 64) threads, bounded by 30 s;
 *    under proxychains4, or plain through the TUN.
 * 3. udp: BENCH_PROXY_UDP_COUNT (50 000, at most 1 000 000) datagrams of 64 bytes, at most 64 in flight, echoed,
 *    bounded by 15 s: this file with --udp-client (through the TUN, or over the veths), or with --udp-client socks
 *    (its own SOCKS5 UDP ASSOCIATE with dante, no TUN).
 *
 * Each row also has the tunkit process's CPU (all threads, % of one core) over its runs. BENCH_PROXY_REPS (default
 * 3, at most 10) runs of everything, the two variants alternating; medians. Writes benchmark/RESULTS-proxy.md
 * (not with BENCH_WRITE=0, for smoke runs). Every child is ended by PID; the namespaces go with their holders.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, statSync, writeFileSync } from 'node:fs'
import { cpus, loadavg, release, tmpdir, totalmem } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { danteConfig, startDanted } from '../__test__/helpers/dante.ts'
import {
  Child,
  cpuSeconds,
  echoServers,
  enterNetns,
  holdNetns,
  median,
  parseIperf,
  plainUdp,
  positive,
  ROOT,
  run,
  socks5Udp,
  udpEcho,
  writeResults,
  type UdpEchoResult,
} from './lib.ts'

const HERE = dirname(fileURLToPath(import.meta.url))
const BIN = join(HERE, 'bin')
const SELF = fileURLToPath(import.meta.url)

const DANTE_IP = '10.80.0.2'
const DANTE_PORT = 1080
const R_IP = '10.81.0.2'
const RR_PORT = 7000
const UDP_PORT = 9000
const CHILD_TIMEOUT_MS = 30_000
/** The TUN's MTU for `tunkit proxy` (BENCH_PROXY_MTU, default 1500; 65535 is what sing-box defaults to on Linux). */
const MTU = Math.round(positive('BENCH_PROXY_MTU', 1500, 65535))
/** No connection cycle of a cps run starts later than this. */
const CPS_LIMIT_S = 30
const UDP_LIMIT_MS = 15_000
const UDP_SIZE = 64
const UDP_WINDOW = 64

const fmt = (x: number, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : '–')

/** The connections-per-second client, compiled unless newer than its source. */
function buildCps(): string {
  mkdirSync(BIN, { recursive: true })
  const src = join(HERE, 'c', 'cps.c')
  const out = join(BIN, 'cps')
  if (existsSync(out) && statSync(out).mtimeMs >= statSync(src).mtimeMs) return out
  console.log('cc -O2 -pthread -o benchmark/bin/cps benchmark/c/cps.c')
  execFileSync('cc', ['-O2', '-Wall', '-Wextra', '-pthread', '-o', out, src], { stdio: 'inherit' })
  return out
}

/** `proxy.ts --udp-client <count> [socks]`, in C: one UDP echo run to R, plain or through its own SOCKS5 relay. */
async function udpClient(count: number, socks: boolean): Promise<void> {
  const path = socks ? await socks5Udp(DANTE_IP, DANTE_PORT, R_IP, UDP_PORT) : await plainUdp(R_IP, UDP_PORT)
  const r = await udpEcho(path, count, UDP_SIZE, UDP_WINDOW, UDP_LIMIT_MS)
  console.log(JSON.stringify(r))
  process.exit(0)
}

interface TcpResult {
  gbps: number
  cpu: number
}
interface CpsResult {
  cps: number
  done: number
  failed: number
  p50: number
  p99: number
  /** The tunkit process, % of one core over the run, and µs of its CPU per connection. */
  cpu: number
  cpuPerConn: number
}
interface UdpResult extends UdpEchoResult {
  loss: number
  /** The tunkit process, % of one core over the run, and µs of its CPU per echoed datagram. */
  cpu: number
  cpuPerDatagram: number
}

async function main(): Promise<void> {
  for (const tool of ['iperf3', 'proxychains4', 'cc']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) throw new Error(`${tool} is missing`)
  }
  const seconds = positive('BENCH_PROXY_SECONDS', 5, 60)
  const reps = Math.round(positive('BENCH_PROXY_REPS', 3, 10))
  const cpsCount = Math.round(positive('BENCH_PROXY_CPS_COUNT', 2000, 100_000))
  const cpsParallel = Math.round(positive('BENCH_PROXY_CPS_PARALLEL', 8, 64))
  const udpCount = Math.round(positive('BENCH_PROXY_UDP_COUNT', 50_000, 1_000_000))
  const ALL = ['tcp', 'cps', 'udp']
  const sections = (process.env.BENCH_PROXY_SECTIONS ?? ALL.join(',')).split(',').map((s) => s.trim())
  for (const s of sections) if (!ALL.includes(s)) throw new Error(`BENCH_PROXY_SECTIONS: no section ${s}`)
  const cpsBin = sections.includes('cps') ? buildCps() : ''
  const started = new Date()
  const load = loadavg()
  const dir = mkdtempSync(join(tmpdir(), 'tunkit-bench-proxy-'))
  const children: Child[] = []
  const stops: (() => Promise<void>)[] = []
  const hold = async () => {
    const ns = await holdNetns(7200)
    children.push(ns.child)
    return ns
  }
  try {
    const C = await hold()
    const P = await hold()
    const R = await hold()
    const inNs = (ns: string, cmd: string) =>
      execFileSync('nsenter', [`--net=${ns}`, 'sh', '-c', cmd], { stdio: ['ignore', 'ignore', 'inherit'] })
    const veth = (a: string, aPid: number, b: string, bPid: number) =>
      execFileSync('ip', [
        'link',
        'add',
        a,
        'netns',
        String(aPid),
        'type',
        'veth',
        'peer',
        'name',
        b,
        'netns',
        String(bPid),
      ])
    veth('bpc0', C.pid, 'bpp0', P.pid)
    veth('bpp1', P.pid, 'bpr0', R.pid)
    // Many short connections (cps): more ephemeral ports in C (the clients, tunkit's upstreams) and P (dante's).
    const ports = 'echo 10000 65000 > /proc/sys/net/ipv4/ip_local_port_range'
    inNs(
      C.path,
      `ip addr add 10.80.0.1/24 dev bpc0 && ip link set bpc0 up && ip route add default via ${DANTE_IP} && ${ports}`,
    )
    inNs(
      P.path,
      `ip addr add ${DANTE_IP}/24 dev bpp0 && ip addr add 10.81.0.1/24 dev bpp1 && ` +
        `ip link set bpp0 up && ip link set bpp1 up && echo 1 > /proc/sys/net/ipv4/ip_forward && ${ports}`,
    )
    inNs(R.path, `ip addr add ${R_IP}/24 dev bpr0 && ip link set bpr0 up && ip route add 10.80.0.0/24 via 10.81.0.1`)
    // sockd forks; the helper stops its children too (they would keep the benchmark's pipes open).
    const dante = await startDanted({
      dir,
      name: 'dante',
      host: DANTE_IP,
      port: DANTE_PORT,
      netns: P.path,
      probe: async () =>
        spawnSync('nsenter', [`--net=${P.path}`, 'bash', '-c', `exec 3<>/dev/tcp/${DANTE_IP}/${DANTE_PORT}`]).status ===
        0,
      config: danteConfig({ internal: [DANTE_IP], port: DANTE_PORT, external: 'bpp1' }),
    })
    stops.push(() => dante.stop())
    const pcConf = join(dir, 'proxychains.conf')
    writeFileSync(
      pcConf,
      `strict_chain\nquiet_mode\ntcp_read_time_out 15000\ntcp_connect_time_out 8000\n[ProxyList]\nsocks5 ${DANTE_IP} ${DANTE_PORT}\n`,
    )
    const proxychains = ['proxychains4', '-q', '-f', pcConf]
    const servers = new Child('nsenter', [`--net=${R.path}`, process.execPath, '--import', 'tsx', SELF, '--servers'])
    children.push(servers)
    await servers.line(/^READY$/, CHILD_TIMEOUT_MS)

    const cases = [
      { streams: 1, reverse: false },
      { streams: 4, reverse: false },
      { streams: 1, reverse: true },
      { streams: 4, reverse: true },
    ]
    const label = (c: (typeof cases)[number]) =>
      `${c.streams} stream${c.streams > 1 ? 's' : ''} ${c.reverse ? 'download (-R)' : 'upload'}`
    const tcp = new Map<string, TcpResult[]>()
    const cps = new Map<string, CpsResult[]>()
    const udp = new Map<string, UdpResult[]>()
    const push = <T>(m: Map<string, T[]>, k: string, v: T) => m.set(k, [...(m.get(k) ?? []), v])
    /** CPU of `pid` (% of one core, and seconds) from `cpu0` over `wall` seconds; NaN without a pid. */
    const cpuOf = (pid: number | undefined, cpu0: number, wall: number) => {
      const used = pid ? cpuSeconds(pid) - cpu0 : NaN
      return { pct: (100 * used) / wall, used }
    }
    /** One iperf3 run of case `c` from C, wrapped in `wrap`; with `pid`, that process's CPU (% of a core). */
    const iperf = async (wrap: string[], c: (typeof cases)[number], pid?: number): Promise<TcpResult> => {
      const server = new Child('nsenter', [`--net=${R.path}`, 'iperf3', '-s', '-1', '--forceflush', '-B', R_IP])
      try {
        await server.line(/Server listening/, CHILD_TIMEOUT_MS)
        const args = ['iperf3', '-c', R_IP, '-t', String(seconds), '-P', String(c.streams), '-J']
        if (c.reverse) args.push('-R')
        const cpu0 = pid ? cpuSeconds(pid) : NaN
        const t0 = performance.now()
        const r = await run('nsenter', [`--net=${C.path}`, ...wrap, ...args], (seconds + 30) * 1000)
        const cpu = cpuOf(pid, cpu0, (performance.now() - t0) / 1000).pct
        const res = parseIperf(r)
        if (res.note) console.log(`  ${res.note} ${r.stdout.slice(-300)}`)
        return { gbps: res.gbps, cpu }
      } finally {
        await server.stop('SIGKILL')
      }
    }
    /** One cps run from C, wrapped in `wrap`; with `pid`, that process's CPU. */
    const cpsRun = async (wrap: string[], pid?: number): Promise<CpsResult> => {
      const cpu0 = pid ? cpuSeconds(pid) : NaN
      const args = [cpsBin, R_IP, String(RR_PORT), String(cpsCount), String(cpsParallel), String(CPS_LIMIT_S)]
      const r = await run('nsenter', [`--net=${C.path}`, ...wrap, ...args], (CPS_LIMIT_S + 40) * 1000)
      let j: { done?: number; failed?: number; seconds?: number; p50_ms?: number; p99_ms?: number } = {}
      try {
        j = JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as typeof j
      } catch {
        console.log(`  cps gave no result (exit ${r.code}): ${r.stdout.slice(-300)} ${r.stderr.slice(-300)}`)
      }
      const done = j.done ?? NaN
      const cpu = cpuOf(pid, cpu0, j.seconds ?? NaN)
      const ms = (x: number | undefined) => (x === undefined || x < 0 ? NaN : x)
      return {
        cps: done / (j.seconds ?? NaN),
        done,
        failed: j.failed ?? NaN,
        p50: ms(j.p50_ms),
        p99: ms(j.p99_ms),
        cpu: cpu.pct,
        cpuPerConn: (cpu.used * 1e6) / done,
      }
    }
    /** One UDP echo run from C (`socks`: through its own SOCKS5 association); with `pid`, that process's CPU. */
    const udpRun = async (socks: boolean, pid?: number): Promise<UdpResult> => {
      const cpu0 = pid ? cpuSeconds(pid) : NaN
      const args = [process.execPath, '--import', 'tsx', SELF, '--udp-client', String(udpCount)]
      if (socks) args.push('socks')
      const r = await run('nsenter', [`--net=${C.path}`, ...args], UDP_LIMIT_MS + CHILD_TIMEOUT_MS)
      let j: Partial<UdpEchoResult> = {}
      try {
        j = JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as UdpEchoResult
      } catch {
        console.log(`  UDP client gave no result (exit ${r.code}): ${r.stderr.slice(-500)}`)
      }
      const e: UdpEchoResult = {
        sent: j.sent ?? NaN,
        received: j.received ?? NaN,
        lost: j.lost ?? NaN,
        pps: j.pps ?? NaN,
        seconds: j.seconds ?? NaN,
        p50: j.p50 ?? NaN,
      }
      // The client's own span (its start-up through tsx is not in it; tunkit is idle then).
      const cpu = cpuOf(pid, cpu0, e.seconds)
      return { ...e, loss: e.lost / e.sent, cpu: cpu.pct, cpuPerDatagram: (cpu.used * 1e6) / e.received }
    }
    const showCps = (rep: number, k: string, r: CpsResult) =>
      console.log(
        `[${rep + 1}/${reps}] cps, ${k}: ${fmt(r.cps, 0)} conn/s (${r.done} ok, ${r.failed} failed), cycle p50 ` +
          `${fmt(r.p50, 3)} ms p99 ${fmt(r.p99, 3)} ms${Number.isFinite(r.cpu) ? `, tunkit ${fmt(r.cpu, 0)}% CPU` : ''}`,
      )
    const showUdp = (rep: number, k: string, r: UdpResult) =>
      console.log(
        `[${rep + 1}/${reps}] UDP, ${k}: ${r.sent} sent, ${r.received} echoed, loss ${fmt(r.loss * 100, 2)}%, ` +
          `${fmt(r.pps, 0)} datagrams/s${Number.isFinite(r.cpu) ? `, tunkit ${fmt(r.cpu, 0)}% CPU` : ''}`,
      )
    const UDP_VETH = 'veth, no proxy'
    const UDP_SOCKS = 'SOCKS5 client → dante (no TUN)'
    const UDP_TUNKIT = 'tunkit proxy → dante'
    for (let rep = 0; rep < reps; rep++) {
      const order = rep % 2 === 0 ? (['proxychains4', 'tunkit'] as const) : (['tunkit', 'proxychains4'] as const)
      for (const v of order) {
        if (v === 'proxychains4') {
          // No TUN in C now: the references, through dante without tunkit (and the plain veths for UDP).
          if (sections.includes('tcp')) {
            for (const c of cases) {
              const r = await iperf(proxychains, c)
              push(tcp, `proxychains4|${label(c)}`, r)
              console.log(`[${rep + 1}/${reps}] proxychains4, ${label(c)}: ${fmt(r.gbps)} Gbit/s`)
            }
          }
          if (sections.includes('cps')) {
            const r = await cpsRun(proxychains)
            push(cps, 'proxychains4', r)
            showCps(rep, 'proxychains4', r)
          }
          if (sections.includes('udp')) {
            for (const [k, socks] of [
              [UDP_SOCKS, true],
              [UDP_VETH, false],
            ] as const) {
              const r = await udpRun(socks)
              push(udp, k, r)
              showUdp(rep, k, r)
            }
          }
          continue
        }
        const cmd = new Child('nsenter', [
          `--net=${C.path}`,
          process.execPath,
          '--import',
          'tsx',
          join(ROOT, 'src', 'cli', 'main.ts'),
          'proxy',
          '--socks5',
          `${DANTE_IP}:${DANTE_PORT}`,
          '--route',
          'default',
          '--name',
          'tkbp0',
          '--mtu',
          String(MTU),
        ])
        children.push(cmd)
        try {
          await cmd.line(/"ready":true/, CHILD_TIMEOUT_MS)
          if (sections.includes('tcp')) {
            for (const c of cases) {
              const r = await iperf([], c, cmd.pid)
              push(tcp, `tunkit proxy|${label(c)}`, r)
              console.log(
                `[${rep + 1}/${reps}] tunkit proxy, ${label(c)}: ${fmt(r.gbps)} Gbit/s, tunkit ${fmt(r.cpu, 0)}% CPU`,
              )
            }
          }
          if (sections.includes('cps')) {
            const r = await cpsRun([], cmd.pid)
            push(cps, 'tunkit proxy', r)
            showCps(rep, 'tunkit proxy', r)
          }
          if (sections.includes('udp')) {
            const r = await udpRun(false, cmd.pid)
            push(udp, UDP_TUNKIT, r)
            showUdp(rep, UDP_TUNKIT, r)
          }
        } finally {
          await cmd.stop('SIGTERM', 10_000)
        }
      }
    }

    // ----------------------------------------------------------------------------------------------- report
    const lines = [
      '## Proxy: tunkit proxy against proxychains4 and a plain SOCKS5 client, all through dante',
      '',
      `Produced by \`benchmark/proxy.ts\` (\`BENCH_ONLY=proxy npm run bench\`) on ${started.toISOString()}: ` +
        `${cpus().length} CPUs (${cpus()[0]?.model.trim() ?? '?'}), ${Math.round(totalmem() / 2 ** 30)} GiB, Linux ` +
        `${release()}, Node ${process.version}; load average at the start ${load.map((x) => x.toFixed(2)).join(' ')}. ` +
        `${reps} run(s), the two variants alternating; medians.`,
      '',
      'Client namespace C (10.80.0.1) → veth → proxy namespace P (dante on 10.80.0.2:1080) → veth → remote namespace R ' +
        '(10.81.0.2: iperf3 -s, a TCP request/response server, a UDP echo). *proxychains4*: the client runs under ' +
        '`proxychains4` (LD_PRELOAD of connect(): no TUN at all, the ceiling of any tun2socks); *tunkit proxy*: ' +
        '`tunkit proxy --socks5 10.80.0.2:1080 --route default` in C (from the sources; TUN at MTU ' +
        `${MTU} with offload, ` +
        'the system stack, the native relay), and the same client, plain. *tunkit CPU*: the tunkit process (all ' +
        'threads), % of one core over the run. The clients, dante, the servers and the kernel share the same ' +
        `${cpus().length} CPUs.`,
    ]
    if (sections.includes('tcp')) {
      const med = (k: string, f: keyof TcpResult) => median((tcp.get(k) ?? []).map((r) => r[f]))
      lines.push(
        '',
        `### TCP (iperf3 -t ${seconds})`,
        '',
        '| test | proxychains4 Gbit/s | tunkit proxy Gbit/s | × proxychains4 | tunkit CPU % |',
        '| --- | --- | --- | --- | --- |',
      )
      for (const c of cases) {
        const pc = med(`proxychains4|${label(c)}`, 'gbps')
        const tk = med(`tunkit proxy|${label(c)}`, 'gbps')
        lines.push(
          `| ${label(c)} | ${fmt(pc)} | ${fmt(tk)} | ${fmt(tk / pc)} | ${fmt(med(`tunkit proxy|${label(c)}`, 'cpu'), 0)} |`,
        )
      }
      const one = med(`tunkit proxy|${label(cases[0]!)}`, 'gbps') / med(`proxychains4|${label(cases[0]!)}`, 'gbps')
      lines.push(
        '',
        `Target (one stream ≥ 0.8× the proxychains4 ceiling): ${fmt(one)}× — ${one >= 0.8 ? 'met' : 'not met'}.`,
      )
    }
    if (sections.includes('cps')) {
      const m = (k: string, f: keyof CpsResult) => median((cps.get(k) ?? []).map((r) => r[f]))
      lines.push(
        '',
        `### Connections per second (${cpsCount} connections, ${cpsParallel} in parallel)`,
        '',
        `\`benchmark/c/cps\`: ${cpsCount} cycles on ${cpsParallel} threads with blocking sockets, each: connect to ` +
          `${R_IP}:${RR_PORT}, send 4 bytes, the server answers 4 bytes and closes, the client closes (bounded by ` +
          `${CPS_LIMIT_S} s). *cycle*: the whole cycle, connect to close (under proxychains4 the connect includes the ` +
          "SOCKS5 handshake; through tunkit the local stack's SYN-ACK comes first, the upstream CONNECT after). " +
          '*tunkit µs/conn*: CPU of the tunkit process per connection.',
        '',
        '| path | conn/s | × proxychains4 | cycle p50 ms | cycle p99 ms | ok | failed | tunkit CPU % | tunkit µs/conn |',
        '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
      )
      for (const k of ['proxychains4', 'tunkit proxy']) {
        lines.push(
          `| ${k} | ${fmt(m(k, 'cps'), 0)} | ${fmt(m(k, 'cps') / m('proxychains4', 'cps'))} | ${fmt(m(k, 'p50'), 3)} | ` +
            `${fmt(m(k, 'p99'), 3)} | ${fmt(m(k, 'done'), 0)} | ${fmt(m(k, 'failed'), 0)} | ${fmt(m(k, 'cpu'), 0)} | ` +
            `${fmt(m(k, 'cpuPerConn'), 0)} |`,
        )
      }
    }
    if (sections.includes('udp')) {
      const m = (k: string, f: keyof UdpResult) => median((udp.get(k) ?? []).map((r) => r[f]))
      lines.push(
        '',
        `### UDP echo through UDP ASSOCIATE (${udpCount} datagrams of ${UDP_SIZE} bytes, at most ${UDP_WINDOW} in flight)`,
        '',
        'proxychains4 cannot carry UDP. The reference is a plain SOCKS5 client without TUN (this file with ' +
          '--udp-client socks: its own UDP ASSOCIATE with dante, the relay header on each datagram) against the ' +
          'same client without SOCKS through the TUN and tunkit proxy (which makes the association with dante); ' +
          '*veth, no proxy*: the same client and echo server straight over the veths (C → P → R, routed by P). A ' +
          `window refilled on each echo; 20 ms without an echo counts what is in flight as lost; bounded by ` +
          `${UDP_LIMIT_MS / 1000} s. *rate*: echoes per second; *tunkit µs/datagram*: CPU of the tunkit process ` +
          'per echoed datagram (both directions).',
        '',
        '| path | sent | received | loss % | datagrams/s | × SOCKS5 client | rtt p50 ms | tunkit CPU % | tunkit µs/datagram |',
        '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
      )
      for (const k of [UDP_SOCKS, UDP_TUNKIT, UDP_VETH]) {
        lines.push(
          `| ${k} | ${fmt(m(k, 'sent'), 0)} | ${fmt(m(k, 'received'), 0)} | ${fmt(m(k, 'loss') * 100, 2)} | ` +
            `${fmt(m(k, 'pps'), 0)} | ${fmt(m(k, 'pps') / m(UDP_SOCKS, 'pps'))} | ${fmt(m(k, 'p50'), 3)} | ` +
            `${fmt(m(k, 'cpu'), 0)} | ${fmt(m(k, 'cpuPerDatagram'), 1)} |`,
        )
      }
    }
    lines.push('')
    const text = lines.join('\n')
    console.log('\n' + text)
    if (sections.length === ALL.length && !process.env.BENCH_PROXY_SECTIONS) {
      writeResults(join(HERE, 'RESULTS-proxy.md'), text)
    }
  } finally {
    for (const stop of stops) await stop()
    for (const c of children.reverse()) await c.stop('SIGKILL')
  }
}

if (process.argv[2] === '--servers') {
  await echoServers(R_IP, RR_PORT, UDP_PORT)
} else if (process.argv[2] === '--udp-client') {
  await udpClient(Number(process.argv[3]), process.argv[4] === 'socks')
} else {
  enterNetns(SELF, ['iperf3', 'danted', 'proxychains4', 'cc'])
  await main()
}
