/**
 * Proxy benchmark: iperf3 through `tunkit proxy` (TUN, stack, SOCKS5 to dante) against the same iperf3 through the
 * same dante with `proxychains4` (LD_PRELOAD, no TUN at all: the ceiling any tun2socks is measured against), side by
 * side in one run, and UDP echo through SOCKS5 UDP ASSOCIATE against the same UDP straight over the veths.
 *
 *   BENCH_ONLY=proxy npm run bench          (or: node scripts/netns.mjs node --import tsx benchmark/proxy.ts)
 *
 * Three namespaces inside the private one this runs in: client C (10.80.0.1; the command and its TUN, or
 * proxychains4, and the iperf3 client), proxy P (10.80.0.2 | 10.81.0.1; dante on 10.80.0.2:1080, forwarding
 * between C and R) and remote R (10.81.0.2; the iperf3 server and a UDP echo server). The tunkit process runs from
 * the sources (`node --import tsx src/cli/main.ts proxy --socks5 10.80.0.2:1080 --route default`).
 * BENCH_PROXY_SECONDS (default 5) per iperf3 run, BENCH_PROXY_REPS (default 3) runs, variants interleaved.
 * Writes benchmark/RESULTS-proxy.md. Every child is ended by PID; the namespaces go with their holders.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs'
import { cpus, loadavg, release, tmpdir, totalmem } from 'node:os'
import { dirname, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { danteConfig, startDanted } from '../__test__/helpers/dante.ts'

const HERE = dirname(fileURLToPath(import.meta.url))
const ROOT = join(HERE, '..')
const SELF = fileURLToPath(import.meta.url)

class Child {
  readonly proc: ChildProcess
  out = ''
  err = ''
  exited = false
  readonly done: Promise<void>
  constructor(argv: string[]) {
    this.proc = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] })
    this.proc.stdout!.setEncoding('utf8').on('data', (d: string) => (this.out += d))
    this.proc.stderr!.setEncoding('utf8').on('data', (d: string) => {
      if (this.err.length < 65536) this.err += d
    })
    // 'close' (all output read), or 2 s after 'exit': a child's own children may keep its pipes open after it is gone.
    this.done = new Promise((r) => {
      const end = () => {
        this.exited = true
        r()
      }
      this.proc.once('close', end)
      this.proc.once('exit', () => setTimeout(end, 2000).unref())
    })
  }
  async line(re: RegExp, ms: number): Promise<RegExpMatchArray> {
    const end = Date.now() + ms
    for (;;) {
      const m = this.out
        .split('\n')
        .map((l) => re.exec(l))
        .find((x) => x)
      if (m) return m
      if (this.exited) throw new Error(`${this.proc.spawnfile} exited before ${re}: ${this.err.slice(-2000)}`)
      if (Date.now() > end) throw new Error(`no ${re} within ${ms} ms: ${this.err.slice(-2000)}`)
      await sleep(25)
    }
  }
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (this.exited) return
    this.proc.kill(signal)
    await Promise.race([this.done, sleep(10_000)])
    if (!this.exited) {
      this.proc.kill('SIGKILL')
      await this.done
    }
  }
}

async function holdNetns(): Promise<{ path: string; pid: number; child: Child }> {
  const child = new Child(['unshare', '--net', 'sleep', '7200'])
  const pid = child.proc.pid!
  const path = `/proc/${pid}/ns/net`
  const own = readlinkSync('/proc/self/ns/net')
  const end = Date.now() + 5000
  for (;;) {
    let id: string | null = null
    try {
      id = readlinkSync(path)
    } catch {
      /* not yet */
    }
    if (id !== null && id !== own) break
    if (child.exited || Date.now() > end) throw new Error('unshare --net did not make a namespace')
    await sleep(5)
  }
  return { path, pid, child }
}

const inNs = (ns: string, cmd: string) =>
  execFileSync('nsenter', [`--net=${ns}`, 'sh', '-c', cmd], { stdio: ['ignore', 'ignore', 'inherit'] })

function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    // utime, stime, and the children's (the command's threads are in the process's own times).
    return (Number(f[11]) + Number(f[12])) / 100
  } catch {
    return NaN
  }
}

function median(xs: number[]): number {
  const s = xs.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b)
  if (s.length === 0) return NaN
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2
}
const fmt = (x: number, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : '–')

async function runIn(ns: string, argv: string[], ms: number) {
  const c = new Child(['nsenter', `--net=${ns}`, ...argv])
  const t = setTimeout(() => c.proc.kill('SIGKILL'), ms)
  await c.done
  clearTimeout(t)
  return { code: c.proc.exitCode, out: c.out, err: c.err }
}

const UDP_CLIENT = `
import dgram from 'node:dgram'
const [host, port, n, size] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4]), Number(process.argv[5])]
const s = dgram.createSocket('udp4')
let sent = 0, got = 0, inflight = 0
const payload = Buffer.alloc(size, 7)
const t0 = performance.now()
let last = t0
const pump = () => { while (inflight < 64 && sent < n) { s.send(payload, port, host); sent++; inflight++ } }
s.on('message', () => { got++; inflight--; last = performance.now(); pump() })
s.bind(0, () => {
  pump()
  const timer = setInterval(() => {
    const now = performance.now()
    if (now - last > 20 && inflight > 0) { inflight = 0; pump() }
    if (sent >= n && (inflight === 0 || now - last > 200) || now - t0 > 15000) {
      clearInterval(timer)
      console.log(JSON.stringify({ sent, got, seconds: (last - t0) / 1000 }))
      s.close()
    }
  }, 5)
})
`

const UDP_ECHO = `
import dgram from 'node:dgram'
const s = dgram.createSocket('udp4')
s.on('message', (m, r) => s.send(m, r.port, r.address))
s.bind(9000, '10.81.0.2', () => console.log('READY'))
setInterval(() => {}, 1000)
`

async function main(): Promise<void> {
  for (const tool of ['iperf3', 'proxychains4']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) throw new Error(`${tool} is missing`)
  }
  const seconds = Number(process.env.BENCH_PROXY_SECONDS ?? 5)
  const reps = Number(process.env.BENCH_PROXY_REPS ?? 3)
  const started = new Date()
  const load = loadavg()
  const dir = mkdtempSync(join(tmpdir(), 'tunkit-bench-proxy-'))
  const C = await holdNetns()
  const P = await holdNetns()
  const R = await holdNetns()
  const children: Child[] = [C.child, P.child, R.child]
  const stops: (() => Promise<void>)[] = []
  try {
    execFileSync('ip', [
      'link',
      'add',
      'bpc0',
      'netns',
      String(C.pid),
      'type',
      'veth',
      'peer',
      'name',
      'bpp0',
      'netns',
      String(P.pid),
    ])
    execFileSync('ip', [
      'link',
      'add',
      'bpp1',
      'netns',
      String(P.pid),
      'type',
      'veth',
      'peer',
      'name',
      'bpr0',
      'netns',
      String(R.pid),
    ])
    inNs(
      C.path,
      'ip link set lo up && ip addr add 10.80.0.1/24 dev bpc0 && ip link set bpc0 up && ip route add default via 10.80.0.2',
    )
    inNs(
      P.path,
      'ip link set lo up && ip addr add 10.80.0.2/24 dev bpp0 && ip addr add 10.81.0.1/24 dev bpp1 && ' +
        'ip link set bpp0 up && ip link set bpp1 up && echo 1 > /proc/sys/net/ipv4/ip_forward',
    )
    inNs(
      R.path,
      'ip link set lo up && ip addr add 10.81.0.2/24 dev bpr0 && ip link set bpr0 up && ip route add 10.80.0.0/24 via 10.81.0.1',
    )
    // sockd forks; the helper stops its children too (they would keep the benchmark's pipes open).
    const dante = await startDanted({
      dir,
      name: 'dante',
      host: '10.80.0.2',
      port: 1080,
      netns: P.path,
      probe: async () =>
        spawnSync('nsenter', [`--net=${P.path}`, 'bash', '-c', 'exec 3<>/dev/tcp/10.80.0.2/1080']).status === 0,
      config: danteConfig({ internal: ['10.80.0.2'], port: 1080, external: 'bpp1' }),
    })
    stops.push(() => dante.stop())
    const pcConf = join(dir, 'proxychains.conf')
    writeFileSync(
      pcConf,
      'strict_chain\nquiet_mode\ntcp_read_time_out 15000\ntcp_connect_time_out 8000\n[ProxyList]\nsocks5 10.80.0.2 1080\n',
    )
    const udpEchoJs = join(dir, 'echo.mjs')
    writeFileSync(udpEchoJs, UDP_ECHO)
    const echo = new Child(['nsenter', `--net=${R.path}`, process.execPath, udpEchoJs])
    children.push(echo)
    await echo.line(/^READY$/, 10_000)
    const udpClientJs = join(dir, 'udp.mjs')
    writeFileSync(udpClientJs, UDP_CLIENT)

    const cases = [
      { streams: 1, reverse: false },
      { streams: 4, reverse: false },
      { streams: 1, reverse: true },
      { streams: 4, reverse: true },
    ]
    const label = (c: (typeof cases)[number]) =>
      `${c.streams} stream${c.streams > 1 ? 's' : ''} ${c.reverse ? 'download (-R)' : 'upload'}`
    const results = new Map<string, { gbps: number; cpu: number }[]>()
    const udp = new Map<string, { pps: number; loss: number }[]>()
    const push = <T>(m: Map<string, T[]>, k: string, v: T) => m.set(k, [...(m.get(k) ?? []), v])
    /** One iperf3 run of case `c` from C, wrapped in `wrap`; with `pid`, that process's CPU (% of a core). */
    const iperf = async (wrap: string[], c: (typeof cases)[number], pid?: number) => {
      const server = new Child(['nsenter', `--net=${R.path}`, 'iperf3', '-s', '-1', '--forceflush', '-B', '10.81.0.2'])
      await server.line(/Server listening/, 10_000)
      const args = ['iperf3', '-c', '10.81.0.2', '-t', String(seconds), '-P', String(c.streams), '-J']
      if (c.reverse) args.push('-R')
      const cpu0 = pid ? cpuSeconds(pid) : NaN
      const t0 = performance.now()
      const r = await runIn(C.path, [...wrap, ...args], (seconds + 30) * 1000)
      const wall = (performance.now() - t0) / 1000
      const cpu = pid ? (100 * (cpuSeconds(pid) - cpu0)) / wall : NaN
      await server.stop('SIGKILL')
      let gbps = NaN
      try {
        const j = JSON.parse(r.out) as { end: { sum_received: { bits_per_second: number } } }
        gbps = j.end.sum_received.bits_per_second / 1e9
      } catch {
        console.log(`iperf3 failed: ${r.out.slice(-300)} ${r.err.slice(-300)}`)
      }
      return { gbps, cpu }
    }
    const udpRun = async () => {
      const r = await runIn(C.path, [process.execPath, udpClientJs, '10.81.0.2', '9000', '50000', '64'], 30_000)
      const j = JSON.parse(r.out.trim() || '{}') as { sent?: number; got?: number; seconds?: number }
      return { pps: (j.got ?? NaN) / (j.seconds ?? NaN), loss: 1 - (j.got ?? 0) / (j.sent ?? 1) }
    }
    for (let rep = 0; rep < reps; rep++) {
      const order = rep % 2 === 0 ? (['proxychains4', 'tunkit'] as const) : (['tunkit', 'proxychains4'] as const)
      for (const v of order) {
        if (v === 'proxychains4') {
          for (const c of cases) {
            const r = await iperf(['proxychains4', '-q', '-f', pcConf], c)
            push(results, `proxychains4|${label(c)}`, r)
            console.log(`[${rep + 1}/${reps}] proxychains4, ${label(c)}: ${fmt(r.gbps)} Gbit/s`)
          }
          const u = await udpRun()
          push(udp, 'veth, no proxy', u)
          console.log(
            `[${rep + 1}/${reps}] UDP over the veths: ${fmt(u.pps, 0)} datagrams/s, loss ${fmt(u.loss * 100, 2)}%`,
          )
          continue
        }
        const cmd = new Child([
          'nsenter',
          `--net=${C.path}`,
          process.execPath,
          '--import',
          'tsx',
          join(ROOT, 'src', 'cli', 'main.ts'),
          'proxy',
          '--socks5',
          '10.80.0.2:1080',
          '--route',
          'default',
          '--name',
          'tkbp0',
        ])
        children.push(cmd)
        try {
          await cmd.line(/"ready":true/, 30_000)
          for (const c of cases) {
            const r = await iperf([], c, cmd.proc.pid)
            push(results, `tunkit proxy|${label(c)}`, r)
            console.log(
              `[${rep + 1}/${reps}] tunkit proxy, ${label(c)}: ${fmt(r.gbps)} Gbit/s, tunkit ${fmt(r.cpu, 0)}% CPU`,
            )
          }
          const u = await udpRun()
          push(udp, 'tunkit proxy, UDP ASSOCIATE', u)
          console.log(
            `[${rep + 1}/${reps}] UDP through tunkit and dante: ${fmt(u.pps, 0)} datagrams/s, loss ${fmt(u.loss * 100, 2)}%`,
          )
        } finally {
          await cmd.stop('SIGTERM')
        }
      }
    }
    const med = (k: string, f: 'gbps' | 'cpu') => median((results.get(k) ?? []).map((r) => r[f]))
    const lines = [
      '## Proxy: tunkit proxy against proxychains4, both through dante',
      '',
      `Produced by \`benchmark/proxy.ts\` (\`BENCH_ONLY=proxy npm run bench\`) on ${started.toISOString()}: ` +
        `${cpus().length} CPUs (${cpus()[0]?.model.trim() ?? '?'}), ${Math.round(totalmem() / 2 ** 30)} GiB, Linux ` +
        `${release()}, Node ${process.version}; load average at the start ${load.map((x) => x.toFixed(2)).join(' ')}. ` +
        `${reps} run(s), the two variants alternating; medians.`,
      '',
      'Client namespace C (10.80.0.1) → veth → proxy namespace P (dante on 10.80.0.2:1080) → veth → remote namespace R ' +
        '(10.81.0.2: iperf3 -s, a UDP echo). *proxychains4*: the iperf3 client runs under `proxychains4` (LD_PRELOAD ' +
        'of connect(): no TUN at all, the ceiling of any tun2socks); *tunkit proxy*: `tunkit proxy --socks5 ' +
        '10.80.0.2:1080 --route default` in C (from the sources; TUN at MTU 1500 with offload, the system stack, the ' +
        'native relay), and a plain iperf3 client. *tunkit CPU*: the tunkit process, % of one core. iperf3, dante and ' +
        'the kernel share the same 2 CPUs.',
      '',
      `### TCP (iperf3 -t ${seconds})`,
      '',
      '| test | proxychains4 Gbit/s | tunkit proxy Gbit/s | × proxychains4 | tunkit CPU % |',
      '| --- | --- | --- | --- | --- |',
    ]
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
      '',
      '### UDP echo (50 000 datagrams of 64 bytes, at most 64 in flight)',
      '',
      'proxychains4 cannot carry UDP; the reference is the same client and echo server straight over the veths (C → P ' +
        '→ R, routed by P), with no proxy.',
      '',
      '| path | datagrams/s echoed | loss % |',
      '| --- | --- | --- |',
    )
    for (const [k, v] of udp) {
      lines.push(`| ${k} | ${fmt(median(v.map((x) => x.pps)), 0)} | ${fmt(median(v.map((x) => x.loss)) * 100, 2)} |`)
    }
    lines.push('')
    const text = lines.join('\n')
    console.log('\n' + text)
    writeFileSync(join(HERE, 'RESULTS-proxy.md'), text)
  } finally {
    for (const stop of stops) await stop()
    for (const c of children.reverse()) await c.stop('SIGKILL')
  }
}

if (process.env.TUNKIT_NETNS !== '1') {
  const tools = spawnSync(
    process.execPath,
    [join(ROOT, 'scripts', 'ensure-tools.mjs'), 'iperf3', 'danted', 'proxychains4'],
    {
      stdio: 'inherit',
    },
  )
  if (tools.status !== 0) process.exit(1)
  const r = spawnSync(
    process.execPath,
    [join(ROOT, 'scripts', 'netns.mjs'), process.execPath, '--import', 'tsx', SELF],
    {
      stdio: 'inherit',
    },
  )
  process.exit(r.status ?? 1)
} else {
  await main()
}
