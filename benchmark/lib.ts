/**
 * Helpers shared by the benchmarks (bench.ts, forward.ts, stack.ts, proxy.ts): child processes with bounded waits
 * that are stopped by their PID, network namespaces held by a child, CPU accounting from /proc, statistics, and the
 * environment knobs. Linux only, like the benchmarks.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import dgram from 'node:dgram'
import { readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import { cpus } from 'node:os'
import { dirname, join, relative } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'

/** The repository's root (the children's working directory, so that `--import tsx` resolves). */
export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')

// ---------------------------------------------------------------------------------------------------------------
// Environment knobs and results
// ---------------------------------------------------------------------------------------------------------------

/** `process.env[env]` as a number in (0, max], `dflt` when unset; throws on anything else. */
export function positive(env: string, dflt: number, max: number): number {
  const v = Number(process.env[env] ?? dflt)
  if (!Number.isFinite(v) || v <= 0 || v > max) throw new Error(`${env} must be a number of 0..${max}`)
  return v
}

/**
 * Writes a results file (benchmark/RESULTS-*.md), unless BENCH_WRITE=0: a smoke run with tiny counts then only
 * prints, and leaves the measured numbers in place. Returns whether it wrote.
 */
export function writeResults(file: string, text: string): boolean {
  if (process.env.BENCH_WRITE === '0') {
    console.log(`\n(BENCH_WRITE=0: ${relative(ROOT, file)} not written)`)
    return false
  }
  writeFileSync(file, text)
  return true
}

/**
 * The entry of a benchmark started outside a private network namespace: installs `tools` when missing (from
 * outside: the namespace has no route to the package mirror), then runs `self` again under scripts/netns.mjs and
 * exits with its status. Returns (doing nothing) when already inside one (TUNKIT_NETNS=1).
 */
export function enterNetns(self: string, tools: string[]): void {
  if (process.env.TUNKIT_NETNS === '1') return
  const ensured = spawnSync(process.execPath, [join(ROOT, 'scripts', 'ensure-tools.mjs'), ...tools], {
    stdio: 'inherit',
  })
  if (ensured.status !== 0) process.exit(1)
  const r = spawnSync(
    process.execPath,
    [join(ROOT, 'scripts', 'netns.mjs'), process.execPath, '--import', 'tsx', self],
    {
      stdio: 'inherit',
    },
  )
  process.exit(r.status ?? 1)
}

// ---------------------------------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------------------------------

/** The median of the numbers that are not NaN; NaN when there are none. */
export function median(xs: number[]): number {
  const s = xs.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b)
  if (s.length === 0) return NaN
  const mid = s.length >> 1
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}

/** The `p`-th percentile (nearest rank, 0..100) of numbers sorted ascending; NaN for none. */
export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!
}

// ---------------------------------------------------------------------------------------------------------------
// CPU accounting (USER_HZ is 100 on Linux: a jiffy is 10 ms)
// ---------------------------------------------------------------------------------------------------------------

/** Microseconds in a jiffy of /proc/stat and /proc/<pid>/stat. */
export const JIFFY_US = 10_000

/** Busy and total jiffies of all CPUs together, from the first line of /proc/stat. */
export function machineJiffies(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number)
  // user nice system idle iowait irq softirq steal (guest and guest_nice are already counted in user and nice)
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0)
  return { busy: total - f[3]! - f[4]!, total }
}

/**
 * Waits up to `maxMs` for a window of `windowMs` (default 200) in which the machine is less than `pct` % busy (its
 * CPUs are shared with other work); at least one window is measured. Returns how busy the last window was: in % of
 * the whole machine, or with `perCore` in % of one core (200 = both of two CPUs busy).
 */
export async function waitQuiet(
  maxMs: number,
  pct = 15,
  opts: { windowMs?: number; perCore?: boolean } = {},
): Promise<number> {
  const deadline = Date.now() + maxMs
  const scale = opts.perCore ? cpus().length : 1
  for (;;) {
    const a = machineJiffies()
    await sleep(opts.windowMs ?? 200)
    const b = machineJiffies()
    const busy = (100 * scale * (b.busy - a.busy)) / (b.total - a.total || 1)
    if (busy < pct || Date.now() >= deadline) return busy
  }
}

/** The comm, utime and stime (fields 2, 14 and 15; in seconds) of a /proc/<pid>[/task/<tid>]/stat text. */
function statTimes(stat: string): { comm: string; user: number; system: number } {
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return {
    comm: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')),
    user: (Number(f[11]) * JIFFY_US) / 1e6,
    system: (Number(f[12]) * JIFFY_US) / 1e6,
  }
}

/** utime + stime of a process (all its threads), in seconds; NaN once it is gone. */
export function cpuSeconds(pid: number): number {
  try {
    const t = statTimes(readFileSync(`/proc/${pid}/stat`, 'utf8'))
    return t.user + t.system
  } catch {
    return NaN
  }
}

/**
 * utime + stime in seconds of each thread of `pid`, grouped: the main (JavaScript) thread (and of it the user
 * time), tunkit's threads (named tunkit*), the rest. All zero once the process is gone.
 */
export function threadCpu(pid: number): { main: number; mainUser: number; tunkit: number; other: number } {
  const r = { main: 0, mainUser: 0, tunkit: 0, other: 0 }
  let tids: string[] = []
  try {
    tids = readdirSync(`/proc/${pid}/task`)
  } catch {
    return r
  }
  for (const tid of tids) {
    try {
      const t = statTimes(readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8'))
      if (Number(tid) === pid) {
        r.main += t.user + t.system
        r.mainUser += t.user
      } else if (/tunkit/i.test(t.comm)) r.tunkit += t.user + t.system
      else r.other += t.user + t.system
    } catch {
      /* the thread ended */
    }
  }
  return r
}

// ---------------------------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------------------------

/** Options of {@link Child}. */
export interface ChildOptions {
  /** 'pipe' to write to the child ({@link Child.send}, {@link Child.ask}); default 'ignore'. */
  stdin?: 'ignore' | 'pipe'
  env?: NodeJS.ProcessEnv
  /** Default: the repository's root. */
  cwd?: string
  /** The name in error messages; default the command. */
  label?: string
}

/** How much of a child's stderr is kept (the start of it), for error messages. */
const STDERR_KEEP = 65_536

/**
 * A spawned process whose stdout is kept: {@link line} waits (bounded) for any line matching a pattern,
 * {@link next} takes the lines one by one (a line protocol: READY, then JSON). It is ended only by its own PID
 * ({@link stop}, {@link reap}), and {@link done} is bounded: it resolves on 'close' (all output read), or 2 s after
 * 'exit' when the child's own children keep its pipes open.
 */
export class Child {
  readonly proc: ChildProcess
  readonly label: string
  /** All of stdout so far. */
  stdout = ''
  /** The first 64 KiB of stderr. */
  stderr = ''
  /** Set when {@link done} resolves. */
  exited = false
  readonly done: Promise<void>
  #partial = ''
  readonly #lines: string[] = []
  readonly #waiters = new Set<() => void>()
  #seq = 0

  constructor(cmd: string, args: string[], opts: ChildOptions = {}) {
    this.label = opts.label ?? cmd
    this.proc = spawn(cmd, args, {
      cwd: opts.cwd ?? ROOT,
      env: opts.env ?? process.env,
      stdio: [opts.stdin ?? 'ignore', 'pipe', 'pipe'],
    })
    this.proc.stdin?.on('error', () => {}) // EPIPE when the child is gone; its exit status tells the story
    this.proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
      this.stdout += d
      const parts = (this.#partial + d).split('\n')
      this.#partial = parts.pop()!
      this.#lines.push(...parts)
      this.#notify()
    })
    this.proc.stdout!.once('end', () => {
      if (this.#partial) this.#lines.push(this.#partial)
      this.#partial = ''
    })
    this.proc.stderr!.setEncoding('utf8').on('data', (d: string) => {
      if (this.stderr.length < STDERR_KEEP) this.stderr += d
    })
    this.done = new Promise((resolve) => {
      const end = () => {
        if (this.exited) return
        this.exited = true
        this.#notify()
        resolve()
      }
      this.proc.once('close', end)
      this.proc.once('exit', () => setTimeout(end, 2000).unref())
      this.proc.on('error', (e) => {
        this.stderr += String(e)
        if (this.proc.pid === undefined) end() // not spawned at all
      })
    })
  }

  get pid(): number {
    return this.proc.pid!
  }

  #notify(): void {
    for (const w of this.#waiters) w()
    this.#waiters.clear()
  }

  /** Until new output or the end, at most `ms`. */
  async #wait(ms: number): Promise<void> {
    let wake!: () => void
    const woken = new Promise<void>((r) => (wake = r))
    this.#waiters.add(wake)
    const t = setTimeout(wake, ms)
    await woken
    clearTimeout(t)
    this.#waiters.delete(wake)
  }

  #fail(what: string): Error {
    const p = this.proc
    const how = this.exited ? `it exited (code ${p.exitCode}, signal ${p.signalCode})` : `timed out`
    return new Error(`${this.label}: waiting for ${what}, ${how}\n${this.stderr.trim().slice(-2000)}`)
  }

  /** The first line of stdout (seen so far or to come) that matches `re`, within `ms`. */
  async line(re: RegExp, ms: number): Promise<RegExpMatchArray> {
    const deadline = Date.now() + ms
    for (;;) {
      const m = this.stdout
        .split('\n')
        .map((l) => re.exec(l))
        .find((x) => x !== null)
      if (m) return m
      const left = deadline - Date.now()
      if (this.exited || left <= 0) throw this.#fail(String(re))
      await this.#wait(left)
    }
  }

  /** The next line of stdout not taken yet by {@link next}, within `ms`. */
  async next(what: string, ms: number): Promise<string> {
    const deadline = Date.now() + ms
    for (;;) {
      if (this.#lines.length > 0) return this.#lines.shift()!
      const left = deadline - Date.now()
      if (this.exited || left <= 0) throw this.#fail(what)
      await this.#wait(left)
    }
  }

  /** {@link next}, which must be `READY`. */
  async ready(ms: number): Promise<void> {
    const l = await this.next('READY', ms)
    if (l !== 'READY') throw new Error(`${this.label}: expected READY, got ${l}\n${this.stderr}`)
  }

  /** {@link next}, parsed as JSON. */
  async json<T>(what: string, ms: number): Promise<T> {
    const l = await this.next(what, ms)
    try {
      return JSON.parse(l) as T
    } catch {
      throw new Error(`${this.label}: ${what} is not JSON: ${l}`)
    }
  }

  /** Writes a line to the child's stdin (stdin: 'pipe'). */
  send(line: string): void {
    this.proc.stdin!.write(line + '\n')
  }

  endInput(): void {
    this.proc.stdin!.end()
  }

  /** Sends `<id> <cmd>` and returns the JSON of the answer line `R <id> <json>`, within `ms`. */
  async ask<T>(cmd: string, ms: number): Promise<T> {
    const id = ++this.#seq
    this.send(`${id} ${cmd}`)
    const m = await this.line(new RegExp(`^R ${id} (.*)$`), ms)
    return JSON.parse(m[1]!) as T
  }

  /** Sends `sig` to the child (by its PID) unless it has exited. */
  signal(sig: NodeJS.Signals): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill(sig)
  }

  /** Sends `signal`, waits up to `ms` for the end, then SIGKILLs and waits up to `ms` more. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', ms = 5000): Promise<void> {
    if (this.exited) return
    this.signal(signal)
    await Promise.race([this.done, sleep(ms)])
    if (!this.exited) {
      this.signal('SIGKILL')
      await Promise.race([this.done, sleep(ms)])
    }
  }

  /** Waits up to `ms` for the child to end by itself, and throws unless it exited with 0 (SIGKILLed if late). */
  async reap(ms: number): Promise<void> {
    await Promise.race([this.done, sleep(ms)])
    if (!this.exited) {
      await this.stop('SIGKILL', 2000)
      throw new Error(`${this.label} did not exit within ${ms} ms and was killed\n${this.stderr}`)
    }
    if (this.proc.exitCode !== 0) throw this.#fail('a clean exit')
  }
}

/**
 * Runs a command to completion asynchronously (the event loop stays free); SIGKILLed (by its PID) after `ms`.
 * `code` is its exit code, 1 when it was killed or could not start.
 */
export async function run(
  cmd: string,
  args: string[],
  ms: number,
): Promise<{ stdout: string; stderr: string; code: number }> {
  const c = new Child(cmd, args)
  const t = setTimeout(() => c.signal('SIGKILL'), ms)
  await c.done
  clearTimeout(t)
  const code = c.proc.exitCode
  return { stdout: c.stdout, stderr: c.stderr, code: code === null || code < 0 ? 1 : code }
}

// ---------------------------------------------------------------------------------------------------------------
// Network namespaces
// ---------------------------------------------------------------------------------------------------------------

/**
 * A new network namespace held by an `unshare --net sleep <holdSeconds>` child (the bound on its life should this
 * process die), reachable as `path` (/proc/<pid>/ns/net) while the child lives; `lo` is up in it. It goes when the
 * child is stopped.
 */
export async function holdNetns(holdSeconds = 3600): Promise<{ path: string; pid: number; child: Child }> {
  const child = new Child('unshare', ['--net', 'sleep', String(holdSeconds)])
  const pid = child.pid
  const path = `/proc/${pid}/ns/net`
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
    if (child.exited || Date.now() > deadline) {
      await child.stop('SIGKILL')
      throw new Error('unshare --net did not make a namespace')
    }
    await sleep(5)
  }
  ip(path, ['link', 'set', 'lo', 'up'])
  return { path, pid, child }
}

/** `ip <args>` in the namespace at `ns` (a /proc/<pid>/ns/net path), or in this process's with null. */
export function ip(ns: string | null, args: string[]): void {
  if (ns === null) execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'inherit'] })
  else execFileSync('nsenter', [`--net=${ns}`, 'ip', ...args], { stdio: ['ignore', 'ignore', 'inherit'] })
}

// ---------------------------------------------------------------------------------------------------------------
// Traffic
// ---------------------------------------------------------------------------------------------------------------

/** What an iperf3 -J run gave: received Gbit/s, the sender's retransmits, and why not, when it failed. */
export function parseIperf(r: { stdout: string; stderr: string; code: number | null }): {
  gbps: number
  retransmits: number
  note?: string
} {
  try {
    const j = JSON.parse(r.stdout) as {
      error?: string
      end?: { sum_received?: { bits_per_second: number }; sum_sent?: { retransmits?: number } }
    }
    return {
      gbps: (j.end?.sum_received?.bits_per_second ?? NaN) / 1e9,
      retransmits: j.end?.sum_sent?.retransmits ?? NaN,
      note: j.error ? `iperf3: ${j.error}` : undefined,
    }
  } catch {
    return {
      gbps: NaN,
      retransmits: NaN,
      note: `iperf3 gave no result (exit ${r.code}): ${r.stderr.trim().slice(0, 200)}`,
    }
  }
}

/**
 * The servers of the connection and datagram tests, until SIGTERM: TCP request/response on `host:tcpPort` (the
 * first data gets 'pong' and the end: the server closes first; idle sockets stay) and a UDP echo on
 * `host:udpPort`. Prints READY once both listen.
 */
export async function echoServers(host: string, tcpPort: number, udpPort: number): Promise<void> {
  const tcp = net.createServer((c) => {
    c.on('error', () => {})
    c.once('data', () => c.end('pong'))
  })
  await new Promise<void>((r) => tcp.listen(tcpPort, host, 4096, r))
  const udp = dgram.createSocket('udp4')
  udp.on('message', (m, rinfo) => udp.send(m, rinfo.port, rinfo.address))
  await new Promise<void>((r) => udp.bind(udpPort, host, r))
  console.log('READY')
  const alive = setInterval(() => {}, 1000)
  await new Promise<void>((resolve) => process.once('SIGTERM', () => resolve()))
  clearInterval(alive)
  process.exit(0)
}

/** What {@link udpEcho} measured. */
export interface UdpEchoResult {
  sent: number
  received: number
  lost: number
  /** Echoes per second, from the first send to the last echo. */
  pps: number
  /** That span, in seconds. */
  seconds: number
  /** Median round trip of every 64th datagram, in ms. */
  p50: number
}

/**
 * A datagram path for {@link udpEcho}: `send` one payload, `onMessage` for each payload that comes back. Plain by
 * default; {@link socks5Udp} wraps the payloads for a SOCKS5 relay.
 */
export interface UdpPath {
  send(payload: Buffer): void
  onMessage(cb: (payload: Buffer) => void): void
  close(): void
}

/** A UDP socket of its own that sends to `target:port`. */
export async function plainUdp(target: string, port: number): Promise<UdpPath> {
  const sock = dgram.createSocket('udp4')
  await new Promise<void>((r) => sock.bind(0, r))
  return {
    send: (p) => sock.send(p, port, target),
    onMessage: (cb) => sock.on('message', (m) => cb(m)),
    close: () => sock.close(),
  }
}

/**
 * `count` datagrams of `size` bytes (at least 4: a sequence number) to an echo server, at most `window` in flight (a
 * window refilled on each echo; 20 ms without an echo counts what is in flight as lost), ended by the last echo, by
 * 20 ms of silence once all are sent, or by `limitMs`.
 */
export async function udpEcho(
  path: UdpPath,
  count: number,
  size: number,
  window: number,
  limitMs: number,
): Promise<UdpEchoResult> {
  const payload = Buffer.alloc(Math.max(4, size))
  let sent = 0
  let received = 0
  let inflight = 0
  let progress = 0
  const sentAt = new Map<number, number>()
  const rtt: number[] = []
  const fill = () => {
    while (inflight < window && sent < count) {
      payload.writeUInt32BE(sent, 0)
      if (sent % 64 === 0) sentAt.set(sent, performance.now())
      path.send(payload)
      sent++
      inflight++
    }
  }
  const t0 = performance.now()
  let tLast = t0
  await new Promise<void>((resolve) => {
    const finish = () => {
      clearInterval(tick)
      clearTimeout(limit)
      resolve()
    }
    path.onMessage((m) => {
      if (m.length < 4) return
      received++
      progress++
      inflight = Math.max(0, inflight - 1)
      tLast = performance.now()
      const seq = m.readUInt32BE(0)
      const s = sentAt.get(seq)
      if (s !== undefined) {
        rtt.push(tLast - s)
        sentAt.delete(seq)
      }
      if (received >= count) finish()
      else fill()
    })
    // Lost datagrams: with no echo for 20 ms, what is in flight counts as lost and the window refills.
    const tick = setInterval(() => {
      if (progress === 0) {
        if (sent >= count) finish()
        inflight = 0
        fill()
      }
      progress = 0
    }, 20)
    const limit = setTimeout(finish, limitMs)
    fill()
  })
  path.close()
  rtt.sort((a, b) => a - b)
  const seconds = (tLast - t0) / 1000
  return { sent, received, lost: sent - received, pps: received / seconds, seconds, p50: percentile(rtt, 50) }
}

/**
 * A SOCKS5 UDP association (RFC 1928, no authentication) with the server at `proxy:proxyPort`, sending to
 * `target:port` (IPv4) through its relay: the reference client of the proxy benchmark, without TUN. The TCP
 * control connection stays open until `close()`. Bounded by `timeoutMs` for the handshake.
 */
export async function socks5Udp(
  proxy: string,
  proxyPort: number,
  target: string,
  port: number,
  timeoutMs = 10_000,
): Promise<UdpPath> {
  const ctl = net.connect({ host: proxy, port: proxyPort })
  let buf = Buffer.alloc(0)
  let connected = false
  let failure: Error | null = null
  let wake: (() => void) | null = null
  const poke = () => wake?.()
  ctl.once('connect', () => {
    connected = true
    poke()
  })
  ctl.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d])
    poke()
  })
  const fail = (e: Error) => {
    failure ??= e
    poke()
  }
  ctl.on('error', fail)
  ctl.on('close', () => fail(new Error('SOCKS5 server closed the control connection')))
  const timer = setTimeout(() => fail(new Error(`SOCKS5 handshake: not done within ${timeoutMs} ms`)), timeoutMs)
  /** Until `ready()`, or the first failure (an error, the close, the deadline). */
  const until = async (ready: () => boolean) => {
    while (!ready()) {
      if (failure) throw failure
      await new Promise<void>((r) => (wake = r))
      wake = null
    }
  }
  const read = async (n: number): Promise<Buffer> => {
    await until(() => buf.length >= n)
    const out = buf.subarray(0, n)
    buf = buf.subarray(n)
    return out
  }
  const ipv4 = (a: string) => Buffer.from(a.split('.').map(Number))
  const sock = dgram.createSocket('udp4')
  try {
    await until(() => connected)
    ctl.write(Buffer.from([5, 1, 0]))
    const method = await read(2)
    if (method[0] !== 5 || method[1] !== 0)
      throw new Error(`SOCKS5 server refused method 'none': ${method.toString('hex')}`)
    // As a client should: the UDP socket on the control connection's local address, and that address in the request.
    await new Promise<void>((r) => sock.bind(0, ctl.localAddress, r))
    const req = Buffer.alloc(10)
    req.set([5, 3, 0, 1])
    req.set(ipv4(ctl.localAddress!), 4)
    req.writeUInt16BE(sock.address().port, 8)
    ctl.write(req)
    const head = await read(4)
    if (head[1] !== 0) throw new Error(`SOCKS5 UDP ASSOCIATE failed with reply ${head[1]}`)
    if (head[3] !== 1) throw new Error(`SOCKS5 UDP ASSOCIATE: relay address type ${head[3]} (only IPv4 here)`)
    const bnd = await read(6)
    let relay = [...bnd.subarray(0, 4)].join('.')
    if (relay === '0.0.0.0') relay = proxy
    const relayPort = bnd.readUInt16BE(4)
    clearTimeout(timer)
    // Each datagram: RSV RSV FRAG ATYP=1, the destination's address and port, the payload.
    const header = Buffer.alloc(10)
    header.set([0, 0, 0, 1])
    header.set(ipv4(target), 4)
    header.writeUInt16BE(port, 8)
    return {
      send: (p) => sock.send([header, p], relayPort, relay),
      onMessage: (cb) =>
        sock.on('message', (m) => {
          if (m.length >= 10 && m[2] === 0 && m[3] === 1) cb(m.subarray(10))
        }),
      close: () => {
        sock.close()
        ctl.destroy()
      },
    }
  } catch (e) {
    clearTimeout(timer)
    sock.close()
    ctl.destroy()
    throw e
  }
}
