/**
 * The forwarding stack: the TCP connections and UDP sessions that clients open through a TUN device, handed to
 * JavaScript as sockets and sessions with the destination each client dialled. The packet work runs natively on the
 * device's reader threads (crates/tunkit-stack); JavaScript sees connections and datagrams, never packets.
 */
import net from 'node:net'
import { Channel } from './channel.js'
import { binding, type Endpoint, type NativeStackFamily, type StackHandle, type QueueHandle } from './native.js'
import { native, TunError } from './errors.js'
import { formatAddress, parseAddress } from './ip.js'
import { Relayer, type RelayOptions, type RelayResult } from './relay.js'
import { NATIVE_HANDLE } from './queue.js'
import type { AddressInfo, Tun } from './tun.js'

export type { Endpoint } from './native.js'
export type { RelayOptions, RelayResult } from './relay.js'

/** Options of {@link Stack.create}. */
export interface StackOptions {
  /**
   * How TCP is terminated. `'system'` (the default): the kernel's own TCP, by NAT through a listener on the device's
   * address (see the README); `false`: TCP is passed to `tun.packets()`.
   */
  tcp?: 'system' | false
  /** Take UDP: sessions per client endpoint, see {@link Stack.datagrams}. Default true. */
  udp?: boolean
  /** ICMP/ICMPv6 echo requests: answered natively (`'reply'`, the default), dropped, or passed to `tun.packets()`. */
  icmp?: 'reply' | 'drop' | 'pass'
  /**
   * The NAT addresses: addresses of the device's prefix (not its own) that the rewritten connections appear to come
   * from. Default: the address after the device's own, per family. Each gives about 64 000 concurrent connections.
   */
  nat?: string[]
  /** Most TCP connections at once; past it new ones are refused with a RST and a warning. Default 65 536. */
  maxTcpFlows?: number
  /** Most UDP sessions at once; past it the least recently used ends. Default 16 384. */
  maxUdpSessions?: number
  /** A UDP session with no traffic for this long ends (ms; default 60 000). */
  udpIdleMs?: number
  /** A closed connection's NAT port is not reused for this long (ms; default 60 000, the kernel's TIME_WAIT). */
  quarantineMs?: number
  /**
   * Connect before accept: called for every new TCP connection before the client's SYN reaches the kernel, so the
   * application can dial the destination first. Return (or resolve to) `true` to let the connection through, an
   * object to let it through with that object as `conn.context` (the upstream socket you dialled, say), `false` or
   * `'reset'` to refuse it (the client's connect fails with ECONNREFUSED), `'unreachable'` to answer with an ICMP
   * host unreachable. A throw or a timeout (`acceptTimeoutMs`) refuses with a reset. Without it every connection is
   * let through at once.
   */
  accept?: (request: ConnectRequest) => AcceptDecision | Promise<AcceptDecision>
  /** How long `accept` may take (ms; default 10 000). The client retransmits its SYN meanwhile. */
  acceptTimeoutMs?: number
  /**
   * On a device with `offload`, what a UDP GSO super-packet (several datagrams of one size sent in one go, as QUIC
   * stacks do) becomes: one {@link UdpMessage} per datagram (`'split'`, the default), or one message holding them
   * all back to back, with `segmentSize` set (`'pass'`), for an application that forwards them with GSO itself.
   */
  udpGso?: 'split' | 'pass'
}

/** What {@link StackOptions.accept} is given: the connection to decide about. */
export interface ConnectRequest {
  /** The client's end. */
  source: Endpoint
  /** What the client dialled. */
  destination: Endpoint
  /** Aborted when the decision is no longer wanted (timeout, the stack closed). */
  signal: AbortSignal
}

/** See {@link StackOptions.accept}. */
export type AcceptDecision = boolean | 'reset' | 'unreachable' | object

/** A TCP connection a client opened through the device: a `net.Socket` plus where it came from and where it goes. */
export type StackConnection = net.Socket & {
  /** The client's end, as the client sees it. */
  readonly source: Endpoint
  /** The address and port the client dialled. */
  readonly destination: Endpoint
  /** What {@link StackOptions.accept} returned for it, when that was an object. */
  readonly context?: object
}

/** Counters of a {@link Stack} (gauges are "now", the rest count since the start). */
export interface StackStats {
  /** Live TCP flows (pending ones included); the gauge `maxTcpFlows` caps. */
  tcpFlows: number
  /** Connections held for the `accept` hook now. */
  tcpPending: number
  /** Connections held for the `accept` hook, and how each ended: accepted, refused (RST / ICMP), expired. */
  tcpHeld: number
  tcpAccepted: number
  tcpRefusedReset: number
  tcpRefusedUnreachable: number
  tcpHoldExpired: number
  /** Ended flows whose NAT port is still in quarantine (their packets are still translated). */
  tcpQuarantined: number
  /** TCP flows created; ended by a RST; released (the accepted socket closed); never completed their handshake. */
  tcpCreated: number
  tcpReset: number
  tcpReleased: number
  tcpSynExpired: number
  /** RSTs the stack sent (refusals, segments of unknown flows). */
  tcpResetsSent: number
  /** SYNs refused at the flow cap, and of those, for want of a NAT port. */
  refusedFull: number
  refusedPorts: number
  /** NAT ports in use (live and quarantined flows), and how many there are. */
  natPortsInUse: number
  natPortsCapacity: number
  /** Open UDP sessions; created; evicted at the cap; expired idle; closed by the application. */
  udpSessions: number
  udpCreated: number
  udpEvicted: number
  udpExpired: number
  udpClosed: number
  /** UDP replies built for `session.send`. */
  udpReplies: number
  /** ICMP port unreachables sent by `session.refuse`. */
  udpRefused: number
  /** Packets per verdict: rewritten and written back (TCP), answered (ICMP, RSTs), UDP datagrams taken, dropped, passed on. */
  writeBack: number
  replies: number
  datagrams: number
  dropped: number
  passed: number
  /** UDP datagrams dropped before JavaScript took them (it fell more than 8 MiB behind), and waiting now. */
  datagramsDropped: number
  udpQueued: number
}

/** One datagram of a UDP session. */
export interface UdpMessage {
  data: Buffer
  /** Where the client sent it. */
  destination: Endpoint
  /**
   * Only with `udpGso: 'pass'`, for a UDP GSO super-packet: `data` holds datagrams of this many bytes back to back
   * (the last may be shorter).
   */
  segmentSize?: number
}

const KNOWN = new Set([
  'tcp',
  'udp',
  'icmp',
  'nat',
  'maxTcpFlows',
  'maxUdpSessions',
  'udpIdleMs',
  'quarantineMs',
  'accept',
  'acceptTimeoutMs',
  'udpGso',
])

const flowKey = (source: Endpoint, destination: Endpoint) =>
  `${source.address}|${source.port}|${destination.address}|${destination.port}`

/**
 * One UDP session: every datagram one client endpoint sends, to any destination (endpoint-independent mapping, as
 * games and WebRTC need). Iterate it for the client's datagrams; {@link UdpSession.send} answers from any remote.
 */
export class UdpSession implements AsyncIterable<UdpMessage> {
  readonly #stack: Stack
  readonly #id: number
  readonly #messages: Channel<UdpMessage>
  /** The client's endpoint. */
  readonly client: Endpoint
  /** The destination of the session's first datagram. */
  readonly destination: Endpoint

  /** @internal */
  constructor(stack: Stack, id: number, client: Endpoint, destination: Endpoint, onWaiting: (w: boolean) => void) {
    this.#stack = stack
    this.#id = id
    this.client = client
    this.destination = destination
    this.#messages = new Channel<UdpMessage>(1024, onWaiting)
  }

  /** @internal */
  deliver(m: UdpMessage): void {
    // A session nobody reads keeps its newest 1024 datagrams; older ones are dropped, as a full socket buffer would
    // (counted in `dropped`).
    this.#messages.push(m, true)
  }

  /** Datagrams of this session dropped because nobody read them (it keeps the newest 1024). */
  get dropped(): number {
    return this.#messages.dropped
  }

  /** Whether the session has ended (closed, idle, evicted, or the stack closed). */
  get closed(): boolean {
    return this.#messages.done
  }

  /** The client's datagrams, until the session ends. */
  messages(options: { signal?: AbortSignal } = {}): AsyncIterableIterator<UdpMessage> {
    return this.#messages.iterator(options.signal)
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<UdpMessage> {
    return this.messages()
  }

  /**
   * Sends `data` to the client as a datagram from `from` (the remote it talks to; by default the session's first
   * destination). Returns false when the device's transmit ring is over its budget (the datagram is still sent).
   *
   * @throws {TunError} `ERR_TUN_CLOSED` once the session ended; `ERR_TUN_INVALID_ARGUMENT` for a `from` of the other
   *   family or a datagram too large for the device.
   */
  send(data: Uint8Array, from: { address: string; port: number } = this.destination): boolean {
    if (this.closed) throw new TunError('ERR_TUN_CLOSED', `UDP session ${this.#id} is closed`)
    return this.#stack.sendUdp(this.#id, from, data)
  }

  /**
   * Refuses one of the client's datagrams: sends it an ICMP port unreachable from the datagram's destination
   * (ICMPv6 port unreachable for IPv6) quoting it, so the client's connected UDP socket fails with `ECONNREFUSED`,
   * as a host with no server on that port would answer. The session stays open (other destinations are not
   * refused). Returns false when the device's transmit ring is over its budget (the error is still sent).
   *
   * @throws {TunError} `ERR_TUN_CLOSED` once the session ended; `ERR_TUN_INVALID_ARGUMENT` for a destination of the
   *   other family.
   */
  refuse(message: Pick<UdpMessage, 'data' | 'destination'>): boolean {
    if (this.closed) throw new TunError('ERR_TUN_CLOSED', `UDP session ${this.#id} is closed`)
    return this.#stack.refuseUdp(this.#id, message.destination, message.data)
  }

  /** Ends the session (the next datagram from the client starts a new one). */
  close(): void {
    if (this.closed) return
    this.#messages.end()
    this.#stack.forget(this.#id)
  }

  /** @internal Ended by the stack. */
  end(): void {
    this.#messages.end()
  }
}

/** The address after `a` (`nat` default). */
function nextAddress(a: AddressInfo): string {
  const p = parseAddress(a.address)!
  const bits = p.family === 4 ? 32n : 128n
  return formatAddress(p.family, (p.value + 1n) & ((1n << bits) - 1n))
}

/**
 * The forwarding stack of a device. Create one with {@link Stack.create}; iterate {@link Stack.connections} and
 * {@link Stack.datagrams}; close it with {@link Stack.close} or `await using`.
 *
 * @example
 * ```ts
 * await using tun = await Tun.create({ addresses: ['198.18.0.1/15'] })
 * await using stack = await Stack.create(tun)
 * for await (const conn of stack.connections()) {
 *   // allowHalfOpen: a client's half-close must reach the upstream as a half-close, not end both sides.
 *   const up = net.connect({ host: conn.destination.address, port: conn.destination.port, allowHalfOpen: true })
 *   pipeline(conn, up, conn, () => {})
 * }
 * ```
 */
export class Stack implements AsyncDisposable {
  readonly #h: StackHandle
  readonly #tun: Tun
  readonly #queue: QueueHandle
  readonly #servers: net.Server[]
  readonly #connections = new Channel<StackConnection>(4096)
  readonly #sessions = new Map<number, UdpSession>()
  readonly #newSessions: Channel<UdpSession>
  readonly #ticker: NodeJS.Timeout
  readonly #acceptHook: StackOptions['accept']
  readonly #acceptTimeout: number
  /** Held connection requests: flow id -> its abort controller. */
  readonly #pending = new Map<number, AbortController>()
  /** What `accept` returned for connections not accepted by the kernel yet, by flow key. */
  readonly #contexts = new Map<string, object>()
  /** Connections handed out and still open: reset when the stack closes (their packets stop being translated). */
  readonly #live = new Set<net.Socket>()
  /** The native relay of this stack's connections (see {@link Stack.relay}). */
  readonly #relayer = new Relayer(() => this.#closed)
  #waiting = 0
  #closed = false

  private constructor(tun: Tun, h: StackHandle, queue: QueueHandle, servers: net.Server[], options: StackOptions) {
    this.#acceptHook = options.accept
    this.#acceptTimeout = options.acceptTimeoutMs ?? 10_000
    this.#tun = tun
    this.#h = h
    this.#queue = queue
    this.#servers = servers
    this.#newSessions = new Channel<UdpSession>(4096, (w) => this.#setWaiting(w))
    for (const s of servers) s.on('connection', (sock) => this.#accept(sock))
    this.#ticker = setInterval(() => this.#tick(), 1000)
    this.#ticker.unref()
  }

  /**
   * Starts a stack on `tun` (every queue of it started in this thread). For TCP it listens on the device's own
   * addresses (one IPv4 and one IPv6 address, each in a prefix with room for the NAT address), so those must be
   * configured first.
   *
   * @throws {TunError} `ERR_TUN_INVALID_ARGUMENT` for bad options; `ERR_TUN_INVALID_ADDRESS` when the device has no
   *   usable address or a NAT address is outside its prefix.
   */
  static async create(tun: Tun, options: StackOptions = {}): Promise<Stack> {
    if (options === null || typeof options !== 'object' || Array.isArray(options))
      throw new TunError('ERR_TUN_INVALID_ARGUMENT', 'stack options must be an object')
    for (const k of Object.keys(options))
      if (!KNOWN.has(k)) throw new TunError('ERR_TUN_INVALID_ARGUMENT', `unknown stack option '${k}'`)
    const tcp = options.tcp ?? 'system'
    if (tcp !== 'system' && tcp !== false)
      throw new TunError('ERR_TUN_INVALID_ARGUMENT', `tcp must be 'system' or false`)
    if (options.nat !== undefined && !Array.isArray(options.nat))
      throw new TunError('ERR_TUN_INVALID_ARGUMENT', 'nat must be an array of addresses')
    if (options.accept !== undefined && typeof options.accept !== 'function')
      throw new TunError('ERR_TUN_INVALID_ARGUMENT', 'accept must be a function')
    const acceptTimeout = options.acceptTimeoutMs ?? 10_000
    if (!Number.isInteger(acceptTimeout) || acceptTimeout < 1 || acceptTimeout > 600_000)
      throw new TunError('ERR_TUN_INVALID_ARGUMENT', 'acceptTimeoutMs must be an integer in 1..600000')
    if (options.udpGso !== undefined && options.udpGso !== 'split' && options.udpGso !== 'pass')
      throw new TunError('ERR_TUN_INVALID_ARGUMENT', `udpGso must be 'split' or 'pass'`)
    const addrs = await tun.addresses()
    const pick = (family: 4 | 6): NativeStackFamily | undefined => {
      const a = addrs.find(
        (x) => x.family === family && x.prefix <= (family === 4 ? 30 : 126) && !/^fe[89ab]/i.test(x.address),
      )
      if (!a) return undefined
      const nat = (options.nat ?? []).filter((n) => (n.includes(':') ? 6 : 4) === family)
      return { gateway: a.address, nat: nat.length > 0 ? nat : [nextAddress(a)], prefix: a.prefix }
    }
    const fam4 = pick(4)
    const fam6 = pick(6)
    if (!fam4 && !fam6)
      throw new TunError(
        'ERR_TUN_INVALID_ADDRESS',
        `${tun.name} has no IPv4 address with a prefix of /30 or shorter and no IPv6 address of /126 or shorter: the stack needs one`,
      )
    const queues = Array.from({ length: tun.queueCount }, (_, i) => tun.queue(i)[NATIVE_HANDLE]())
    const servers: net.Server[] = []
    let port = 0
    if (tcp === 'system') {
      for (let attempt = 0; ; attempt++) {
        try {
          port = 0
          for (const f of [fam4, fam6]) {
            if (!f) continue
            const s = net.createServer({ allowHalfOpen: true })
            await new Promise<void>((resolve, reject) => {
              s.once('error', reject)
              s.listen({ host: f.gateway, port, ipv6Only: f === fam6, backlog: 4096 }, () => {
                s.off('error', reject)
                resolve()
              })
            })
            port = (s.address() as net.AddressInfo).port
            servers.push(s)
          }
          break
        } catch (e) {
          for (const s of servers.splice(0)) s.close()
          if ((e as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt >= 8) {
            throw new TunError(
              'ERR_TUN_OS',
              `stack on ${tun.name}: listening on the device's address failed: ${(e as Error).message}`,
              { cause: e },
            )
          }
        }
      }
    }
    let stack: Stack | undefined
    let h: StackHandle
    try {
      h = native(() =>
        binding.stackCreate(
          queues,
          {
            v4: fam4,
            v6: fam6,
            listenPort: port || 1,
            tcp: tcp === 'system',
            udp: options.udp ?? true,
            icmp: options.icmp ?? 'reply',
            maxTcpFlows: options.maxTcpFlows,
            maxUdpSessions: options.maxUdpSessions,
            udpIdleMs: options.udpIdleMs,
            quarantineMs: options.quarantineMs,
            holdSyn: options.accept !== undefined,
            // The native hold outlives the JavaScript deadline, so a late decision still finds it.
            holdTimeoutMs: acceptTimeout + 2000,
            udpGso: options.udpGso,
          },
          (code) => {
            if (code === 1 && stack) stack.#drain()
          },
        ),
      )
    } catch (e) {
      for (const s of servers) s.close()
      throw e
    }
    stack = new Stack(tun, h, queues[0]!, servers, options)
    return stack
  }

  /** The device this stack runs on. */
  get tun(): Tun {
    return this.#tun
  }

  /** Whether {@link Stack.close} was called. */
  get closed(): boolean {
    return this.#closed
  }

  #setWaiting(w: boolean): void {
    const before = this.#waiting
    this.#waiting += w ? 1 : -1
    if (this.#closed) return
    if (before === 0 && this.#waiting > 0) binding.stackSetRef(this.#h, true)
    else if (before > 0 && this.#waiting === 0) binding.stackSetRef(this.#h, false)
  }

  #accept(sock: net.Socket): void {
    const { remoteAddress, remotePort } = sock
    // A client that reset while its connection waited in the accept queue leaves a socket with no peer: its flow
    // ended with the RST already.
    const flow =
      this.#closed || remoteAddress === undefined || remotePort === undefined
        ? null
        : binding.stackLookup(this.#h, remoteAddress, remotePort)
    if (!flow) {
      // Not a connection the stack rewrote (someone dialled the listener directly).
      sock.destroy()
      return
    }
    const key = flowKey(flow.source, flow.destination)
    const context = this.#contexts.get(key)
    this.#contexts.delete(key)
    Object.defineProperties(sock, {
      source: { value: flow.source, enumerable: true },
      destination: { value: flow.destination, enumerable: true },
      context: { value: context, enumerable: true },
    })
    this.#live.add(sock)
    sock.once('close', () => {
      this.#live.delete(sock)
      if (!this.#closed) binding.stackRelease(this.#h, remoteAddress!, remotePort!)
    })
    if (!this.#connections.push(sock as StackConnection)) sock.resetAndDestroy()
  }

  /** Datagrams or held connection requests are waiting natively. */
  #drain(): void {
    if (this.#closed) return
    const reqs = binding.stackTakeRequests(this.#h)
    if (reqs) {
      for (let i = 0; i < reqs.length; i += 5) {
        const flow = reqs[i] as number
        const source = endpoint(reqs[i + 1] as string, reqs[i + 2] as number)
        const destination = endpoint(reqs[i + 3] as string, reqs[i + 4] as number)
        void this.#decide(flow, source, destination)
      }
    }
    const got = binding.stackTakeDatagrams(this.#h)
    if (!got) return
    const [payloads, meta] = got
    let off = 0
    for (let i = 0; i < meta.length; i += 7) {
      const id = meta[i] as number
      const len = meta[i + 1] as number
      const destination = endpoint(meta[i + 2] as string, meta[i + 3] as number)
      const data = payloads.subarray(off, off + len)
      off += len
      let s = this.#sessions.get(id)
      if (!s) {
        const clientAddr = meta[i + 4] as string | null
        if (clientAddr === null) continue // a session JavaScript closed: the rest of its datagrams go
        s = new UdpSession(this, id, endpoint(clientAddr, meta[i + 5] as number), destination, (w) =>
          this.#setWaiting(w),
        )
        this.#sessions.set(id, s)
        if (!this.#newSessions.push(s)) {
          this.forget(id)
          continue
        }
      }
      const segmentSize = meta[i + 6] as number
      s.deliver(segmentSize > 0 ? { data, destination, segmentSize } : { data, destination })
    }
  }

  /** Runs the `accept` hook for one held SYN and tells the stack. */
  async #decide(flow: number, source: Endpoint, destination: Endpoint): Promise<void> {
    const ac = new AbortController()
    this.#pending.set(flow, ac)
    const timer = setTimeout(
      () => ac.abort(new DOMException(`accept took longer than ${this.#acceptTimeout} ms`, 'TimeoutError')),
      this.#acceptTimeout,
    )
    let verdict: 'accept' | 'reset' | 'unreachable' = 'reset'
    let context: object | undefined
    try {
      const r = await Promise.race([
        Promise.resolve(this.#acceptHook!({ source, destination, signal: ac.signal })),
        new Promise<never>((_, reject) => ac.signal.addEventListener('abort', () => reject(ac.signal.reason))),
      ])
      if (r === 'unreachable') verdict = 'unreachable'
      else if (r === true) verdict = 'accept'
      else if (r !== null && typeof r === 'object') {
        verdict = 'accept'
        context = r
      }
    } catch {
      // A throw, a rejection or the timeout refuses the connection (with a RST).
    } finally {
      clearTimeout(timer)
      this.#pending.delete(flow)
    }
    // Closed, or the native hold expired (the tick aborts with ERR_TUN_CLOSED): nothing left to decide. A timeout
    // of the hook itself (a TimeoutError) still refuses the connection.
    if (this.#closed || (ac.signal.aborted && (ac.signal.reason as { code?: string })?.code === 'ERR_TUN_CLOSED'))
      return
    if (context) this.#contexts.set(flowKey(source, destination), context)
    if (!binding.stackDecide(this.#h, this.#queue, flow, verdict) && context) {
      this.#contexts.delete(flowKey(source, destination))
    }
  }

  #tick(): void {
    if (this.#closed) return
    const [ended, notice, expired] = binding.stackTick(this.#h)
    for (const flow of expired) this.#pending.get(flow)?.abort(new TunError('ERR_TUN_CLOSED', 'the request expired'))
    for (const id of ended) {
      this.#sessions.get(id)?.end()
      this.#sessions.delete(id)
    }
    if (notice) process.emitWarning(`${this.#tun.name}: ${notice}`, { code: 'TUNKIT_NOTICE' })
  }

  /** @internal */
  sendUdp(id: number, from: { address: string; port: number }, data: Uint8Array): boolean {
    if (this.#closed) throw new TunError('ERR_TUN_CLOSED', 'the stack is closed')
    return native(() => binding.stackSendUdp(this.#h, this.#queue, id, from.address, from.port, data))
  }

  /** @internal */
  refuseUdp(id: number, to: { address: string; port: number }, data: Uint8Array): boolean {
    if (this.#closed) throw new TunError('ERR_TUN_CLOSED', 'the stack is closed')
    return native(() => binding.stackRefuseUdp(this.#h, this.#queue, id, to.address, to.port, data))
  }

  /** @internal A session JavaScript closed. */
  forget(id: number): void {
    this.#sessions.delete(id)
    if (!this.#closed) binding.stackCloseUdp(this.#h, id)
  }

  /**
   * Every TCP connection a client opens through the device, as a `net.Socket` (half-close allowed) with `source` and
   * `destination`. Connections accepted while nobody iterates wait (up to 4096; beyond, they are reset).
   */
  connections(options: { signal?: AbortSignal } = {}): AsyncIterableIterator<StackConnection> {
    return this.#connections.iterator(options.signal)
  }

  /** Every new UDP session (one per client endpoint). */
  datagrams(options: { signal?: AbortSignal } = {}): AsyncIterableIterator<UdpSession> {
    return this.#newSessions.iterator(options.signal)
  }

  /**
   * Joins a connection to its upstream socket (connected, or connecting) and moves their bytes both ways until
   * both directions end, the way `pipeline(conn, up, conn)` does, but natively where it can: on Linux, for plain
   * TCP sockets, the bytes go socket -> pipe -> socket with `splice(2)` on the stack's relay thread and never
   * reach JavaScript. An end of stream is passed on as a half-close; a reset of either side resets the other.
   * Whatever JavaScript had already read is passed on first, and the handover waits until both sockets have
   * written what they hold, so no byte is lost or reordered. From the call on, the sockets belong to the relay:
   * do not read or write them (destroying one ends the relay). When it ends both sockets are destroyed and the
   * promise resolves with the byte counts and the reason.
   *
   * @throws {TunError} `ERR_TUN_CLOSED` when the stack is closed; `ERR_TUN_QUEUE_FULL` when 65 536 connections are
   *   relayed natively already (the sockets are left as they were, paused); `ERR_TUN_INVALID_ARGUMENT`.
   */
  relay(conn: StackConnection, up: net.Socket, options: RelayOptions = {}): Promise<RelayResult> {
    return this.#relayer.relay(conn, up, options)
  }

  /** The stack's counters: flows, sessions, packets per verdict, refusals. */
  stats(): StackStats {
    if (this.#closed) throw new TunError('ERR_TUN_CLOSED', 'the stack is closed')
    return native(() => binding.stackStats(this.#h)) as unknown as StackStats
  }

  /**
   * Stops the stack: iterators end, every connection it handed out is reset (its packets would no longer be
   * translated), UDP sessions end, and the device's packets go to `tun.packets()` again.
   */
  async close(): Promise<void> {
    if (this.#closed) return
    if (this.#waiting > 0) binding.stackSetRef(this.#h, false)
    this.#closed = true
    clearInterval(this.#ticker)
    for (const ac of this.#pending.values()) ac.abort(new TunError('ERR_TUN_CLOSED', 'the stack is closed'))
    this.#pending.clear()
    this.#contexts.clear()
    // Reset every connection while the stack still translates, so that the clients get the RSTs; once it is off
    // the device their packets would go nowhere.
    for (const c of this.#connections.end()) c.resetAndDestroy()
    for (const c of this.#live) c.resetAndDestroy()
    if (this.#live.size > 0) await new Promise((r) => setTimeout(r, 20))
    binding.stackClose(this.#h)
    // The relayed connections were reset above (which ended their relays); anything left ends now.
    this.#relayer.close()
    this.#newSessions.end()
    for (const s of this.#sessions.values()) s.end()
    this.#sessions.clear()
    // Stop listening; connections already handed out stay the application's to end.
    for (const s of this.#servers) s.close()
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close()
  }
}

function endpoint(address: string, port: number): Endpoint {
  return { address, port, family: address.includes(':') ? 6 : 4 }
}
