/**
 * The transparent proxy: every TCP connection and UDP session that enters a TUN goes through a SOCKS5 or HTTP
 * proxy, directly, or nowhere, chosen by rules, with DNS answered from a fake-ip pool (so the proxy gets names) or
 * forwarded. Built on {@link Stack}: TCP connects upstream before the client's handshake completes (connect before
 * accept), then the bytes move natively ({@link Stack.relay}).
 */
import dgram from 'node:dgram'
import { lookup } from 'node:dns/promises'
import net from 'node:net'
import { Channel } from '../channel.js'
import { TunError } from '../errors.js'
import { normalizeAddress } from '../ip.js'
import type { Endpoint } from '../native.js'
import { Stack, type StackConnection, type StackOptions, type UdpMessage, type UdpSession } from '../stack.js'
import type { Tun } from '../tun.js'
import { DnsForwarder, type DnsResolverRoute } from './dns-forward.js'
import { answer, DNS_TYPE, errorReply, frameTcp, parseQuery, TcpDnsReader, type DnsQuery } from './dns.js'
import { FakeIpPool, type FakeIpPoolOptions } from './fakeip.js'
import { httpConnect } from './http-connect.js'
import { RuleSet, type Rule } from './rules.js'
import { socks5Connect, socks5UdpAssociate, UpstreamError, type Socks5Udp, type Target } from './socks5.js'

/** Where a flow goes. `direct`, `reject` and `drop` exist without being declared. */
export type Upstream =
  | { type: 'socks5'; host: string; port: number; username?: string; password?: string; udp?: boolean }
  | { type: 'http'; host: string; port: number; username?: string; password?: string }
  | { type: 'direct' }
  | { type: 'reject' }
  | { type: 'drop' }

/** DNS handling of a {@link Proxy}. */
export interface ProxyDnsOptions {
  /**
   * `'fake-ip'` (the default): A and AAAA queries are answered from the fake-ip pool, so a connection to a fake
   * address is known by its name and the upstream gets the name; `'forward'`: queries go to `resolver` through the
   * upstream the rules pick for it; `'off'`: DNS is traffic like any other.
   */
  mode?: 'fake-ip' | 'forward' | 'off'
  /** Which queries are hijacked: `'any'` (the default: UDP and TCP to port 53 of any address) or these addresses. */
  hijack?: 'any' | string[]
  /** The fake-ip pool (default 198.18.0.0/15 and fc00::/18, 65 536 names). Route it into the device. */
  fakeIp?: FakeIpPoolOptions
  /** Names (and their subdomains) that get real answers in fake-ip mode (forwarded to `resolver`). */
  realNames?: string[]
  /**
   * The resolver for `forward` mode, for `realNames` and for query types other than A and AAAA, as `ip` or
   * `ip:port` (`[v6]:port`). Without one, those are answered empty (NOERROR, no records) in fake-ip mode.
   */
  resolver?: string
  /** TTL of fake answers in seconds (default 1: a client asks again soon, and the pool keeps the name). */
  ttl?: number
  /** How long a forwarded query may take (ms, default 5000); then the client gets SERVFAIL. */
  timeoutMs?: number
}

/** Options of {@link Proxy.create}. */
export interface ProxyOptions {
  /** Named upstreams the rules refer to; `direct`, `reject` and `drop` are predefined. */
  upstreams?: Record<string, Upstream>
  /** Rules, first match wins (see `parseRules` for the file formats). */
  rules?: Rule[]
  /** The upstream when no rule matches: default `'proxy'` when such an upstream is declared, else `'direct'`. */
  default?: string
  dns?: ProxyDnsOptions
  /**
   * Take UDP (default true): sessions go through SOCKS5 UDP ASSOCIATE, or direct (also when the rule's upstream is
   * an HTTP proxy, which carries no UDP, or a SOCKS5 one with `udp: false`).
   */
  udp?: boolean
  /** Upstream connect (and SOCKS/HTTP handshake) deadline, ms (default 10 000). */
  connectTimeoutMs?: number
  /** A TCP connection silent both ways for this long is closed (ms, default 600 000). */
  idleMs?: number
  /** A UDP session silent for this long ends (ms, default 60 000). */
  udpIdleMs?: number
  /** Most TCP connections at once (default 65 536; on mobile 4096 suits). */
  maxConnections?: number
  /** Most UDP sessions at once; the least recently used one is evicted past it (default 16 384; mobile 1024). */
  maxUdpSessions?: number
  /**
   * The process's resident memory (RSS, bytes) above which the proxy takes no new flows: a new TCP connection is
   * reset and a new UDP session's datagrams are dropped (both counted in `overBudget`) until it is back under, while
   * flows already open go on. Default 1 GiB; an iOS or Android VPN extension, killed at 50 MB or so, wants about
   * 40 MiB with `maxConnections: 4096` and `maxUdpSessions: 1024`. Sampled at most every 100 ms. (Buffers of the
   * native relay live in the kernel, outside the RSS.)
   */
  memoryBudget?: number
  /**
   * Routing beyond the rules: called for every new TCP connection and for the first datagram of a UDP session to
   * each destination, before the rules; return an upstream name to use it, or `undefined` to let the rules decide.
   * It may be async; past `routeTimeoutMs` (or if it throws, or names an upstream that does not exist) the rules
   * decide.
   */
  route?: (flow: RouteRequest) => string | undefined | Promise<string | undefined>
  /** How long `route` may take (ms, default 1000). */
  routeTimeoutMs?: number
  /** A closed connection's NAT port is not reused for this long (ms; default 60 000, see {@link StackOptions}). */
  quarantineMs?: number
  /** Local addresses the proxy's own outgoing sockets bind to, per family (to keep them out of the device). */
  bind?: { v4?: string; v6?: string }
  /** Move the bytes natively (`'native'`, default) or with `pipeline` (`'js'`). */
  relay?: 'native' | 'js'
}

/** What {@link ProxyOptions.route} is asked about. */
export interface RouteRequest {
  protocol: 'tcp' | 'udp'
  source: Endpoint
  destination: Endpoint
  /** The name behind a fake destination, when there is one. */
  domain?: string
}

/** A flow starting or ending, from {@link Proxy.flows}. */
export interface FlowEvent {
  type: 'start' | 'end'
  id: number
  protocol: 'tcp' | 'udp'
  source: Endpoint
  destination: Endpoint
  /** The name behind the destination (fake-ip), when known. */
  domain?: string
  /** Index of the rule that matched (-1: the default, -2: the `route` hook). */
  rule: number
  upstream: string
  /** Bytes client → upstream and back; for `start` 0. */
  sent: number
  received: number
  /** Milliseconds since the start. */
  durationMs: number
  /** Why it ended, when not normally (`'reset'`, `'idle'`, an error message). */
  reason?: string
}

/** Counters of a {@link Proxy}. */
export interface ProxyStats {
  tcpActive: number
  tcpTotal: number
  /** Connections refused: by a rule (`reject`/`drop`) or because the upstream failed. */
  tcpRejected: number
  tcpFailed: number
  udpSessions: number
  udpDatagramsUp: number
  udpDatagramsDown: number
  /** Datagrams not sent on: to a `drop` upstream, a failed association, an unknown fake address, or refused. */
  udpDropped: number
  /** Of those, datagrams to a `reject` upstream answered with an ICMP port unreachable (at most 1000/s). */
  udpRefused: number
  /** New TCP connections reset and new UDP sessions dropped because the process was over `memoryBudget`. */
  overBudget: number
  dnsQueries: number
  dnsFake: number
  dnsForwarded: number
  dnsFailed: number
  /** Bytes of ended TCP flows and UDP datagrams, client → upstream and back. */
  bytesUp: number
  bytesDown: number
}

const KNOWN = new Set([
  'upstreams',
  'rules',
  'default',
  'dns',
  'udp',
  'connectTimeoutMs',
  'idleMs',
  'udpIdleMs',
  'maxConnections',
  'maxUdpSessions',
  'bind',
  'relay',
  'memoryBudget',
  'quarantineMs',
  'route',
  'routeTimeoutMs',
])

const invalid = (msg: string) => new TunError('ERR_TUN_INVALID_ARGUMENT', msg)
const BUILTIN: Record<string, Upstream> = {
  direct: { type: 'direct' },
  reject: { type: 'reject' },
  drop: { type: 'drop' },
}

/** What the accept hook hands to the connection loop. */
interface TcpContext {
  id: number
  dns?: true
  socket?: net.Socket
  domain?: string
  rule: number
  upstream: string
  started: number
}

/** Per-UDP-session upstream state. */
interface SessionState {
  id: number
  session: UdpSession
  started: number
  assoc?: Promise<Socks5Udp | undefined>
  direct?: { v4?: dgram.Socket; v6?: dgram.Socket }
  /** The fake endpoint a reply from a real one stands for (learned from sends by name). */
  replyFrom: Map<string, Endpoint>
  /** The fake destination last sent to by name, per destination port. */
  byPort: Map<number, Endpoint>
  resolved: Map<string, string>
  /** The upstream decided per destination (so the route hook runs once per destination). */
  routes: Map<string, Routed>
  /** The datagrams being routed, in order. */
  chain: Promise<void>
  sent: number
  received: number
  ended: boolean
  first?: { destination: Endpoint; domain?: string; rule: number; upstream: string }
}

const key = (host: string, port: number) => `${host}|${port}`

/** Where a flow goes, and why. */
interface Routed {
  domain?: string
  /** The rule that matched; -1 the default, -2 the `route` hook. */
  rule: number
  upstream: string
  /** A fake address with no name (left the pool): nowhere to send it. */
  unknownFake: boolean
}

/**
 * A transparent proxy on a device: see the README's "Transparent proxy" section.
 *
 * @example
 * ```ts
 * await using tun = await Tun.create({ addresses: ['172.19.0.1/30'], routes: [{ to: '198.18.0.0/15' }] })
 * await using proxy = await Proxy.create(tun, { upstreams: { proxy: { type: 'socks5', host: '10.0.0.1', port: 1080 } } })
 * for await (const f of proxy.flows()) console.log(f.type, f.domain ?? f.destination.address, f.upstream)
 * ```
 */
export class Proxy implements AsyncDisposable {
  readonly #stack: Stack
  #rules: RuleSet
  readonly #upstreams: Record<string, Upstream>
  readonly #fake?: FakeIpPool
  /** The families the device carries. */
  readonly #families: { 4: boolean; 6: boolean }
  readonly #dns: Required<Pick<ProxyDnsOptions, 'mode' | 'ttl' | 'timeoutMs'>> & {
    hijack: 'any' | Set<string>
    real: RuleSet | undefined
  }
  readonly #forwarder?: DnsForwarder
  readonly #opts: ProxyOptions
  readonly #flows = new Channel<FlowEvent>(4096)
  readonly #sessions = new Set<SessionState>()
  readonly #stats: ProxyStats = {
    tcpActive: 0,
    tcpTotal: 0,
    tcpRejected: 0,
    tcpFailed: 0,
    udpSessions: 0,
    udpDatagramsUp: 0,
    udpDatagramsDown: 0,
    udpDropped: 0,
    udpRefused: 0,
    overBudget: 0,
    dnsQueries: 0,
    dnsFake: 0,
    dnsForwarded: 0,
    dnsFailed: 0,
    bytesUp: 0,
    bytesDown: 0,
  }
  /** ICMP errors for refused datagrams, rate-limited as a kernel does (`icmp_msgs_per_sec`, `icmp_msgs_burst`). */
  readonly #icmpBudget = new TokenBucket(1000, 50)
  readonly #memory: MemoryBudget
  #nextId = 1
  #closed = false
  readonly #loops: Promise<void>[] = []

  private constructor(
    stack: Stack,
    opts: ProxyOptions,
    rules: RuleSet,
    fake: FakeIpPool | undefined,
    families: { 4: boolean; 6: boolean },
  ) {
    this.#families = families
    this.#stack = stack
    this.#opts = opts
    this.#memory = new MemoryBudget(opts.memoryBudget ?? 1 << 30)
    this.#rules = rules
    this.#upstreams = { ...BUILTIN, ...opts.upstreams }
    this.#fake = fake
    const d = opts.dns ?? {}
    this.#dns = {
      mode: d.mode ?? 'fake-ip',
      ttl: d.ttl ?? 1,
      timeoutMs: d.timeoutMs ?? 5000,
      hijack: d.hijack === undefined || d.hijack === 'any' ? 'any' : new Set(d.hijack.map(normalizeAddress)),
      real: d.realNames?.length
        ? new RuleSet([{ domainSuffix: d.realNames, upstream: 'real' }], { default: 'fake' })
        : undefined,
    }
    if (d.resolver !== undefined) {
      this.#forwarder = new DnsForwarder(parseResolver(d.resolver), (r) => this.#resolverRoute(r), {
        timeoutMs: this.#dns.timeoutMs,
        bind: opts.bind,
      })
    }
    this.#loops.push(this.#tcpLoop())
    if (opts.udp !== false) this.#loops.push(this.#udpLoop())
  }

  /**
   * Starts a proxy on `tun` (which needs an address of each family it should carry, with room for the stack's NAT
   * address, and routes for what should go through it: the fake-ip ranges, or everything).
   *
   * @throws {TunError} `ERR_TUN_INVALID_ARGUMENT` for bad options: an unknown upstream in the rules, a fake-ip
   *   range overlapping the device's own prefix, a bad resolver.
   */
  static async create(tun: Tun, options: ProxyOptions = {}): Promise<Proxy> {
    if (typeof options !== 'object' || options === null) throw invalid('proxy options must be an object')
    for (const k of Object.keys(options)) if (!KNOWN.has(k)) throw invalid(`unknown proxy option '${k}'`)
    const upstreams = { ...BUILTIN, ...options.upstreams }
    for (const [name, u] of Object.entries(upstreams)) checkUpstream(name, u)
    const dflt = options.default ?? (upstreams['proxy'] ? 'proxy' : 'direct')
    const rules = new RuleSet(options.rules ?? [], { default: dflt })
    for (const u of rules.upstreams()) {
      if (!upstreams[u]) throw invalid(`the rules refer to an upstream '${u}' that is not declared`)
    }
    if (options.route !== undefined && typeof options.route !== 'function') throw invalid('route must be a function')
    const mb = options.memoryBudget
    if (mb !== undefined && (!Number.isSafeInteger(mb) || mb < 1 << 20)) {
      throw invalid('memoryBudget must be a whole number of bytes, at least 1 MiB')
    }
    const rt = options.routeTimeoutMs
    if (rt !== undefined && (!Number.isInteger(rt) || rt < 1 || rt > 60_000)) {
      throw invalid('routeTimeoutMs must be an integer in 1..60000')
    }
    const mode = options.dns?.mode ?? 'fake-ip'
    if (!['fake-ip', 'forward', 'off'].includes(mode)) throw invalid(`dns.mode must be 'fake-ip', 'forward' or 'off'`)
    if (mode === 'forward' && options.dns?.resolver === undefined)
      throw invalid(`dns.mode 'forward' needs dns.resolver`)
    if (options.dns?.resolver !== undefined) parseResolver(options.dns.resolver)
    const ttl = options.dns?.ttl
    if (ttl !== undefined && (!Number.isInteger(ttl) || ttl < 0 || ttl > 86_400)) {
      throw invalid('dns.ttl must be an integer number of seconds, 0..86400')
    }
    const fake = mode === 'fake-ip' ? new FakeIpPool(options.dns?.fakeIp ?? {}) : undefined
    const addresses = await tun.addresses()
    // A family the device has no (non-link-local) address of cannot carry the fake flows: its fake answers would
    // send clients to addresses they cannot reach (and make them wait for Happy Eyeballs).
    const families = {
      4: addresses.some((a) => !a.address.includes(':')),
      6: addresses.some((a) => a.address.includes(':') && !/^fe[89ab]/i.test(a.address)),
    }
    if (fake) {
      for (const a of addresses) {
        if (fake.contains(a.address)) {
          throw invalid(
            `the fake-ip pool overlaps the device's address ${a.address}/${a.prefix}: give it a range of its own`,
          )
        }
      }
    }
    let proxy: Proxy | undefined
    const stack = await Stack.create(tun, {
      tcp: 'system',
      udp: options.udp !== false,
      icmp: 'reply',
      maxTcpFlows: options.maxConnections,
      maxUdpSessions: options.maxUdpSessions,
      udpIdleMs: options.udpIdleMs,
      quarantineMs: options.quarantineMs,
      acceptTimeoutMs: options.connectTimeoutMs ?? 10_000,
      accept: (req) => proxy!.#accept(req.source, req.destination, req.signal),
    })
    proxy = new Proxy(stack, options, rules, fake, families)
    return proxy
  }

  /** The stack underneath (for its stats). */
  get stack(): Stack {
    return this.#stack
  }

  /** Replaces the rules; flows already open keep their upstream. */
  setRules(rules: Rule[], options: { default?: string } = {}): void {
    const set = new RuleSet(rules, { default: options.default ?? (this.#upstreams['proxy'] ? 'proxy' : 'direct') })
    for (const u of set.upstreams()) {
      if (!this.#upstreams[u]) throw invalid(`the rules refer to an upstream '${u}' that is not declared`)
    }
    this.#rules = set
  }

  /** Flow starts and ends as they happen (the newest 4096 are kept for a slow reader). */
  flows(options: { signal?: AbortSignal } = {}): AsyncIterableIterator<FlowEvent> {
    return this.#flows.iterator(options.signal)
  }

  /** Live counters. */
  stats(): ProxyStats {
    return { ...this.#stats, udpSessions: this.#sessions.size }
  }

  /** The name a fake address stands for, if it is one of this proxy's. */
  domainOf(address: string): string | undefined {
    return this.#fake?.reverse(address)
  }

  /** Stops: open connections are reset, sessions end, the stack closes. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    for (const s of this.#sessions) this.#endSession(s, 'closed')
    this.#forwarder?.close()
    await this.#stack.close()
    await Promise.allSettled(this.#loops)
    this.#flows.end()
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }

  #emit(e: FlowEvent): void {
    this.#flows.push(e, true)
  }

  #hijacked(dst: Endpoint): boolean {
    if (this.#dns.mode === 'off' || dst.port !== 53) return false
    return this.#dns.hijack === 'any' || this.#dns.hijack.has(normalizeAddress(dst.address))
  }

  /**
   * The upstream for a flow: the `route` hook's answer (rule index -2), else the rules', with the name behind a
   * fake destination.
   */
  async #route(protocol: 'tcp' | 'udp', src: Endpoint, dst: Endpoint): Promise<Routed> {
    const domain = this.#fake?.reverse(dst.address)
    const unknownFake = domain === undefined && this.#fake !== undefined && this.#fake.contains(dst.address)
    const hook = this.#opts.route
    if (hook && !unknownFake) {
      const req: RouteRequest = { protocol, source: src, destination: dst, ...(domain ? { domain } : {}) }
      let timer: NodeJS.Timeout | undefined
      const picked = await Promise.race([
        Promise.resolve()
          .then(() => hook(req))
          .catch(() => undefined),
        new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), this.#opts.routeTimeoutMs ?? 1000))),
      ])
      clearTimeout(timer)
      if (typeof picked === 'string' && this.#upstreams[picked])
        return { domain, rule: -2, upstream: picked, unknownFake }
    }
    const m = this.#rules.match({ protocol, address: dst.address, port: dst.port, domain })
    return { domain, rule: m.index, upstream: m.upstream, unknownFake }
  }

  #resolverRoute(r: Target): DnsResolverRoute {
    const m = this.#rules.match({ protocol: 'udp', address: r.host, port: r.port })
    const u = this.#upstreams[m.upstream]!
    if (u.type === 'socks5' && u.udp !== false) return { type: 'socks5', server: u }
    if (u.type === 'direct' || u.type === 'socks5' || u.type === 'http') return { type: 'direct' }
    return { type: 'none' }
  }

  // ------------------------------------------------------------------------------------------------------ TCP

  async #accept(
    source: Endpoint,
    destination: Endpoint,
    signal: AbortSignal,
  ): Promise<'reset' | 'unreachable' | object> {
    const id = this.#nextId++
    const started = Date.now()
    if (this.#hijacked(destination)) return { id, dns: true, rule: -1, upstream: 'dns', started } satisfies TcpContext
    if (this.#memory.over()) {
      this.#stats.overBudget++
      return 'reset'
    }
    const r = await this.#route('tcp', source, destination)
    if (r.unknownFake) {
      // A fake address whose name left the pool (or was never handed out): nowhere to send it.
      this.#stats.tcpRejected++
      return 'reset'
    }
    const up = this.#upstreams[r.upstream]!
    const target: Target = { host: r.domain ?? destination.address, port: destination.port }
    const timeoutMs = this.#opts.connectTimeoutMs ?? 10_000
    try {
      let socket: net.Socket
      switch (up.type) {
        case 'reject':
          this.#stats.tcpRejected++
          return 'reset'
        case 'drop':
          // Never answered: the client's SYN goes unanswered until the hold times out (then it is reset).
          this.#stats.tcpRejected++
          await new Promise<void>((res) => signal.addEventListener('abort', () => res(), { once: true }))
          return 'reset'
        case 'socks5':
          socket = await socks5Connect(up, target, { signal, timeoutMs, socket: this.#dial(up.host, up.port) })
          break
        case 'http':
          socket = await httpConnect(up, target, { signal, timeoutMs, socket: this.#dial(up.host, up.port) })
          break
        case 'direct':
          socket = await this.#direct(target, signal, timeoutMs)
          break
      }
      const ctx: TcpContext = { id, socket, domain: r.domain, rule: r.rule, upstream: r.upstream, started }
      return ctx
    } catch (e) {
      this.#stats.tcpFailed++
      const unreachable = e instanceof UpstreamError && (e.reply === 3 || e.reply === 4)
      const code = (e as NodeJS.ErrnoException).code
      return unreachable || code === 'EHOSTUNREACH' || code === 'ENETUNREACH' ? 'unreachable' : 'reset'
    }
  }

  /** A socket to the proxy at `host:port`, bound like every outgoing socket of the proxy. */
  #dial(host: string, port: number): net.Socket {
    const fam = net.isIP(host)
    const localAddress = fam === 6 ? this.#opts.bind?.v6 : fam === 4 ? this.#opts.bind?.v4 : undefined
    return net.connect({ host, port, allowHalfOpen: true, ...(localAddress ? { localAddress } : {}) })
  }

  async #direct(target: Target, signal: AbortSignal, timeoutMs: number): Promise<net.Socket> {
    let host = target.host
    if (net.isIP(host) === 0) host = (await lookup(host)).address
    const s = this.#dial(host, target.port)
    await new Promise<void>((resolve, reject) => {
      const done = (e?: Error) => {
        clearTimeout(timer)
        signal.removeEventListener('abort', onAbort)
        s.off('connect', onConnect)
        s.off('error', done)
        if (e) {
          s.destroy()
          reject(e)
        } else resolve()
      }
      const onConnect = () => done()
      const onAbort = () => done(signal.reason as Error)
      const timer = setTimeout(
        () => done(new TunError('ERR_TUN_TIMEOUT', `direct connect to ${target.host}:${target.port} timed out`)),
        timeoutMs,
      )
      s.once('connect', onConnect)
      s.once('error', done)
      signal.addEventListener('abort', onAbort, { once: true })
    })
    return s
  }

  async #tcpLoop(): Promise<void> {
    for await (const conn of this.#stack.connections()) {
      const ctx = conn.context as TcpContext | undefined
      if (!ctx) {
        conn.resetAndDestroy()
        continue
      }
      if (ctx.dns) {
        this.#dnsOverTcp(conn)
        continue
      }
      const socket = ctx.socket!
      socket.on('error', () => {})
      conn.on('error', () => {})
      this.#stats.tcpActive++
      this.#stats.tcpTotal++
      const base = {
        id: ctx.id,
        protocol: 'tcp' as const,
        source: conn.source,
        destination: conn.destination,
        ...(ctx.domain !== undefined ? { domain: ctx.domain } : {}),
        rule: ctx.rule,
        upstream: ctx.upstream,
      }
      this.#emit({ ...base, type: 'start', sent: 0, received: 0, durationMs: 0 })
      const idleMs = this.#opts.idleMs ?? 600_000
      this.#stack
        .relay(conn, socket, { idleMs, native: this.#opts.relay !== 'js' })
        .then(
          (r) => {
            this.#stats.bytesUp += r.sent
            this.#stats.bytesDown += r.received
            return { sent: r.sent, received: r.received, reason: r.reason === 'closed' ? undefined : r.reason }
          },
          (e: Error) => ({ sent: 0, received: 0, reason: e.message }),
        )
        .then((end) => {
          this.#stats.tcpActive--
          this.#emit({ ...base, type: 'end', ...end, durationMs: Date.now() - ctx.started })
        })
    }
  }

  /** DNS over TCP to a hijacked resolver, answered here. */
  #dnsOverTcp(conn: StackConnection): void {
    const reader = new TcpDnsReader()
    conn.on('error', () => {})
    conn.setTimeout(30_000, () => conn.destroy())
    conn.on('data', (chunk: Buffer) => {
      let msgs: Buffer[]
      try {
        msgs = reader.push(chunk)
      } catch {
        conn.destroy()
        return
      }
      for (const m of msgs) {
        void this.#dnsAnswer(m).then((reply) => {
          if (reply && !conn.destroyed) conn.write(frameTcp(reply))
        })
      }
    })
    conn.on('end', () => conn.end())
  }

  // ------------------------------------------------------------------------------------------------------ DNS

  /** The reply to one hijacked query (null: drop it, it did not parse). */
  async #dnsAnswer(raw: Buffer): Promise<Buffer | null> {
    this.#stats.dnsQueries++
    let q: DnsQuery
    try {
      q = parseQuery(raw)
    } catch {
      this.#stats.dnsFailed++
      return null
    }
    const { name, type } = q.question
    const real =
      this.#dns.real?.match({ protocol: 'udp', address: '0.0.0.0', port: 53, domain: name }).upstream === 'real'
    if (this.#fake && !real && (type === DNS_TYPE.A || type === DNS_TYPE.AAAA)) {
      this.#stats.dnsFake++
      const family = type === DNS_TYPE.A ? 4 : 6
      if (!this.#families[family]) return answer(q, []) // no such address here: NOERROR, no records
      try {
        return answer(q, [{ type, address: this.#fake.lookup(name, family), ttl: this.#dns.ttl }])
      } catch {
        this.#stats.dnsFailed++
        return errorReply(q, 2)
      }
    }
    if (!this.#forwarder) return answer(q, [])
    try {
      const reply = await this.#forwarder.query(q)
      this.#stats.dnsForwarded++
      return reply
    } catch {
      this.#stats.dnsFailed++
      return errorReply(q, 2)
    }
  }

  // ------------------------------------------------------------------------------------------------------ UDP

  async #udpLoop(): Promise<void> {
    for await (const s of this.#stack.datagrams()) {
      const st: SessionState = {
        id: this.#nextId++,
        session: s,
        started: Date.now(),
        replyFrom: new Map(),
        byPort: new Map(),
        resolved: new Map(),
        routes: new Map(),
        chain: Promise.resolve(),
        sent: 0,
        received: 0,
        ended: false,
      }
      this.#sessions.add(st)
      void this.#session(s, st)
    }
  }

  async #session(s: UdpSession, st: SessionState): Promise<void> {
    if (this.#memory.over()) {
      // Not taken: its datagrams go nowhere until it ends (a new session is tried at the client's next datagram).
      this.#stats.overBudget++
      s.close()
    }
    try {
      for await (const m of s) {
        if (this.#hijacked(m.destination)) {
          const dst = m.destination
          void this.#dnsAnswer(m.data).then((reply) => {
            if (reply && !s.closed) s.send(reply, dst)
          })
          continue
        }
        // In order per session: a datagram waits for the routing of the ones before it.
        st.chain = st.chain
          .then(() => this.#udpOut(s, st, m))
          .catch(() => {
            this.#stats.udpDropped++
          })
      }
    } finally {
      this.#endSession(st, 'ended')
    }
  }

  async #udpOut(s: UdpSession, st: SessionState, m: UdpMessage): Promise<void> {
    const k = key(m.destination.address, m.destination.port)
    let r = st.routes.get(k)
    if (!r) {
      r = await this.#route('udp', s.client, m.destination)
      // Bounded: a session that sprays destinations keeps the newest 256 decisions.
      if (st.routes.size >= 256) st.routes.delete(st.routes.keys().next().value!)
      st.routes.set(k, r)
    }
    if (st.ended) return
    const up = this.#upstreams[r.upstream]!
    if (r.unknownFake || up.type === 'reject' || up.type === 'drop') {
      this.#stats.udpDropped++
      if (up.type === 'reject' && !r.unknownFake && this.#icmpBudget.take() && !s.closed) {
        s.refuse(m)
        this.#stats.udpRefused++
      }
      return
    }
    if (!st.first) {
      st.first = {
        destination: m.destination,
        rule: r.rule,
        upstream: r.upstream,
        ...(r.domain ? { domain: r.domain } : {}),
      }
      this.#emit({ ...this.#udpBase(s, st), type: 'start', sent: 0, received: 0, durationMs: 0 })
    }
    this.#stats.udpDatagramsUp++
    st.sent += m.data.length
    this.#stats.bytesUp += m.data.length
    const data = Buffer.from(m.data)
    // An HTTP proxy carries no UDP, nor a SOCKS5 one with `udp: false`: such sessions go direct.
    if (up.type === 'socks5' && up.udp !== false) {
      if (r.domain) st.byPort.set(m.destination.port, m.destination)
      st.assoc ??= socks5UdpAssociate(up, {
        timeoutMs: this.#opts.connectTimeoutMs ?? 10_000,
        socket: this.#dial(up.host, up.port),
      }).then(
        (a) => {
          if (st.ended) {
            a.close()
            return undefined
          }
          a.on('message', (d, from) => this.#udpBack(s, st, d, from.host, from.port))
          a.on('close', () => this.#endSession(st, 'upstream closed'))
          return a
        },
        () => {
          this.#stats.udpDropped++
          this.#endSession(st, 'upstream failed')
          return undefined
        },
      )
      const target: Target = { host: r.domain ?? m.destination.address, port: m.destination.port }
      void st.assoc.then((a) => a?.send(data, target))
      return
    }
    // direct
    void this.#directSend(s, st, data, r.domain, m.destination)
  }

  async #directSend(s: UdpSession, st: SessionState, data: Buffer, domain: string | undefined, dst: Endpoint) {
    let host = dst.address
    if (domain) {
      let real = st.resolved.get(domain)
      if (real === undefined) {
        try {
          real = (await lookup(domain, { family: dst.family })).address
        } catch {
          this.#stats.udpDropped++
          return
        }
        st.resolved.set(domain, real)
      }
      host = real
      st.replyFrom.set(key(normalizeAddress(real), dst.port), dst)
    }
    if (st.ended) return
    const fam = net.isIP(host) === 6 ? 6 : 4
    st.direct ??= {}
    let sock = fam === 4 ? st.direct.v4 : st.direct.v6
    if (!sock) {
      sock = dgram.createSocket(fam === 4 ? 'udp4' : 'udp6')
      sock.on('error', () => {})
      sock.on('message', (d, rinfo) => this.#udpBack(s, st, d, rinfo.address, rinfo.port))
      const local = fam === 4 ? this.#opts.bind?.v4 : this.#opts.bind?.v6
      sock.bind({ port: 0, ...(local ? { address: local } : {}) })
      if (fam === 4) st.direct.v4 = sock
      else st.direct.v6 = sock
    }
    sock.send(data, dst.port === 0 ? 0 : dst.port, host)
  }

  /** A datagram from the remote `host:port` back to the client, from the address the client sent to. */
  #udpBack(s: UdpSession, st: SessionState, data: Buffer, host: string, port: number): void {
    if (s.closed) return
    const h = normalizeAddress(host)
    let from: { address: string; port: number } | undefined = st.replyFrom.get(key(h, port))
    if (!from) {
      const byName = st.byPort.get(port)
      if (byName && net.isIP(h) !== 0 && !this.#fake?.contains(h)) {
        // The first reply from the real address behind a name sent to by the proxy: it stands for that name.
        st.replyFrom.set(key(h, port), byName)
        from = byName
      } else if (net.isIP(h) === (s.client.family === 6 ? 6 : 4)) from = { address: h, port }
    }
    if (!from) {
      this.#stats.udpDropped++
      return
    }
    this.#stats.udpDatagramsDown++
    st.received += data.length
    this.#stats.bytesDown += data.length
    try {
      s.send(data, from)
    } catch {
      this.#stats.udpDropped++
    }
  }

  #udpBase(s: UdpSession, st: SessionState) {
    const f = st.first!
    return {
      id: st.id,
      protocol: 'udp' as const,
      source: s.client,
      destination: f.destination,
      ...(f.domain ? { domain: f.domain } : {}),
      rule: f.rule,
      upstream: f.upstream,
    }
  }

  #endSession(st: SessionState, reason: string): void {
    if (st.ended) return
    st.ended = true
    this.#sessions.delete(st)
    st.session.close()
    void st.assoc?.then((a) => a?.close())
    st.direct?.v4?.close()
    st.direct?.v6?.close()
    if (st.first) {
      this.#emit({
        ...this.#udpBase(st.session, st),
        type: 'end',
        sent: st.sent,
        received: st.received,
        durationMs: Date.now() - st.started,
        ...(reason === 'ended' ? {} : { reason }),
      })
    }
  }
}

function checkUpstream(name: string, u: Upstream): void {
  if (typeof u !== 'object' || u === null) throw invalid(`upstream '${name}' must be an object`)
  switch (u.type) {
    case 'socks5':
    case 'http':
      if (typeof u.host !== 'string' || u.host === '') throw invalid(`upstream '${name}': host must be a string`)
      if (!Number.isInteger(u.port) || u.port < 1 || u.port > 65535) {
        throw invalid(`upstream '${name}': port must be an integer 1..65535`)
      }
      return
    case 'direct':
    case 'reject':
    case 'drop':
      return
    default:
      throw invalid(`upstream '${name}': type must be 'socks5', 'http', 'direct', 'reject' or 'drop'`)
  }
}

/** `ip`, `ip:port` or `[v6]:port` → a target (port 53 by default). */
export function parseResolver(s: string): Target {
  if (typeof s !== 'string') throw invalid('dns.resolver must be a string')
  let host = s
  let port = 53
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(s)
  if (v6) {
    host = v6[1]!
    if (v6[2]) port = Number(v6[2])
  } else if (net.isIP(s) === 0) {
    const i = s.lastIndexOf(':')
    if (i > 0) {
      host = s.slice(0, i)
      port = Number(s.slice(i + 1))
    }
  }
  if (net.isIP(host) === 0)
    throw invalid(`dns.resolver ${JSON.stringify(s)}: not an IP address (with an optional port)`)
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw invalid(`dns.resolver ${JSON.stringify(s)}: bad port`)
  return { host, port }
}

/** An address as Node prints it, IPv4-mapped IPv6 as IPv4. */
/** `rate` tokens a second, at most `burst` saved up. */
class TokenBucket {
  #tokens: number
  #at = performance.now()
  constructor(
    readonly rate: number,
    readonly burst: number,
  ) {
    this.#tokens = burst
  }

  take(): boolean {
    const now = performance.now()
    this.#tokens = Math.min(this.burst, this.#tokens + ((now - this.#at) * this.rate) / 1000)
    this.#at = now
    if (this.#tokens < 1) return false
    this.#tokens--
    return true
  }
}

/** Whether the process's RSS is over a budget, read at most every 100 ms. */
class MemoryBudget {
  #at = 0
  #over = false
  constructor(readonly bytes: number) {}

  over(): boolean {
    const now = performance.now()
    if (now - this.#at >= 100) {
      this.#at = now
      this.#over = process.memoryUsage.rss() > this.bytes
    }
    return this.#over
  }
}
