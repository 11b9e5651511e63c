import { binding, type DeviceHandle, type NativeDeviceOptions, type NativeLink, type QueueHandle } from './native.js'
import { LinkEventIterator, type LinkEvent } from './events.js'
import { native, TunError } from './errors.js'
import {
  batchBuffers,
  NATIVE_HANDLE,
  PacketIterator,
  PacketQueue,
  type IterateOptions,
  type QueueStats,
  type RingOptions,
} from './queue.js'

/** A route through the device. */
export interface RouteSpec {
  /** Destination prefix, e.g. `'10.9.0.0/16'` or `'fd09::/48'` (host bits must be zero). */
  to: string
  /** Gateway; omit for a direct route onto the device. */
  via?: string
  /** Priority; lower wins. */
  metric?: number
  /** Routing table id; the main table when omitted. */
  table?: number
}

/** An address on the device as the kernel reports it. */
export interface AddressInfo {
  /** `'10.7.0.1/24'` */
  cidr: string
  address: string
  prefix: number
  family: 4 | 6
  /** Peer of a point-to-point address. */
  peer?: string
}

/** Kernel offload switches (Linux); see {@link TunOptions.offload}. */
export interface OffloadOptions {
  /** TCP segmentation and checksum offload (TSO4/TSO6). Default true. */
  tcp?: boolean
  /** UDP segmentation offload (USO, Linux 6.2+). Default true where the kernel has it. */
  udp?: boolean
  /** Pass super-packets through with their 10-byte virtio-net header instead of splitting/coalescing. Default false. */
  raw?: boolean
}

/** Options of {@link Tun.create}. Everything is optional. */
export interface TunOptions {
  /** Interface name (at most 15 bytes). A `%d` in it, or no name at all, lets the kernel number it (`tun0`, `tun1`…). */
  name?: string
  /** `'tun'` (IP packets, the default) or `'tap'` (Ethernet frames). */
  mode?: 'tun' | 'tap'
  /** Addresses in CIDR form, IPv4 and IPv6: `['10.7.0.1/24', 'fd07::1/64']`. */
  addresses?: string[]
  /** Routes to add once the link is up. */
  routes?: RouteSpec[]
  /** MTU, 68..65535 (at least 1280 with IPv6 addresses). The kernel default is 1500. */
  mtu?: number
  /** Bring the link up. Default: `true` when addresses or routes are given. */
  up?: boolean
  /**
   * The kernel's queue of packets waiting for the reader (`txqueuelen`). The kernel default of 500 overflows on
   * wake-up latency alone at high packet rates; tunkit's default is 4096 (see benchmark/RESULTS.md).
   */
  txQueueLength?: number
  /** Number of queues (`IFF_MULTI_QUEUE` when more than 1); the kernel spreads flows over them. Default 1. */
  queues?: number
  /** Keep the device after this process closes it. */
  persist?: boolean
  /** uid allowed to open the (persistent) device without privileges. */
  owner?: number
  /** gid allowed to open the (persistent) device without privileges. */
  group?: number
  /** MAC address of a TAP device, `'02:00:5e:00:00:01'`. */
  mac?: string
  /** Network namespace to create the device in: a path like `/run/netns/blue` or `/proc/<pid>/ns/net`. */
  netns?: string
  /**
   * Kernel offload (Linux, `IFF_VNET_HDR`): the kernel hands over TCP/UDP super-packets of up to 64 KiB, which the
   * reader thread splits into ordinary packets, and the writer thread coalesces consecutive segments of a flow into
   * super-packets, so one syscall carries many packets. `true` turns on TCP and UDP; `{ tcp, udp }` picks; `raw: true`
   * passes super-packets through with their 10-byte virtio-net header. If the kernel refuses, tunkit turns the failing
   * part off, keeps every packet, and emits one process warning (code `TUNKIT_NOTICE`).
   */
  offload?: boolean | OffloadOptions
  /** Ring sizes and budgets of every queue. */
  ring?: RingOptions
}

/** Options of {@link Tun.events}. */
export interface EventOptions {
  /** Ends the iteration with an `AbortError` when aborted. */
  signal?: AbortSignal
}

/** Counters of the device: the rings' and the kernel's. */
export interface TunStats extends QueueStats {
  /** Counters the kernel keeps for the interface; `rxDropped`/`txDropped` include packets dropped while JS was behind. */
  kernel: NativeLink['stats']
  /** The last error the device gave for an outgoing packet since the previous `stats()` call. */
  lastWriteError?: TunError
}

/** State of the link, read from the kernel. */
export interface LinkState {
  name: string
  index: number
  mtu: number
  up: boolean
  txQueueLength: number
  mac?: string
}

const KNOWN_OPTIONS = new Set([
  'name',
  'mode',
  'addresses',
  'routes',
  'mtu',
  'up',
  'txQueueLength',
  'queues',
  'persist',
  'owner',
  'group',
  'mac',
  'netns',
  'ring',
  'offload',
])
const BACKEND_FLAGS = new Set(['offloadTcp', 'offloadUdp'])
const ITERATE_OPTIONS = new Set(['signal', 'closeOnReturn'])
const KNOWN_ROUTE_KEYS = new Set(['to', 'via', 'metric', 'table'])
const KNOWN_ADDRESS_OPTIONS = new Set(['peer'])
const KNOWN_RING_OPTIONS = new Set([
  'ringBatches',
  'batchPackets',
  'slabBytes',
  'copyBelow',
  'memoryBudget',
  'txRingBytes',
  'closeFlushMs',
])

function checkSignal(signal: unknown): void {
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new TunError('ERR_TUN_INVALID_ARGUMENT', 'signal must be an AbortSignal')
  }
}

/** Default kernel queue length tunkit sets on devices it creates. */
export const DEFAULT_TX_QUEUE_LENGTH = 4096

function checkKeys(obj: unknown, known: Set<string>, what: string): void {
  if (obj === undefined) return
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
    throw new TunError('ERR_TUN_INVALID_ARGUMENT', `${what} must be an object`)
  }
  for (const k of Object.keys(obj)) {
    if (!known.has(k)) throw new TunError('ERR_TUN_INVALID_ARGUMENT', `unknown ${what} key '${k}'`)
  }
}

/**
 * One queue of a device: its own reader and writer threads and rings. A device has one queue unless created with
 * `queues: N`; each queue can be driven from its own thread with {@link Tun.detachQueue} and {@link TunQueue.attach}.
 * The kernel keeps the packets of one flow on one queue.
 */
export class TunQueue implements AsyncDisposable {
  readonly #q: PacketQueue
  readonly #name: string
  /** What `closeOnReturn` closes: the whole device for a device's own queues, the queue itself in a worker. */
  readonly #closeOnReturn: () => Promise<void>

  /** @internal */
  constructor(q: PacketQueue, name: string, closeOnReturn?: () => Promise<void>) {
    this.#q = q
    this.#name = name
    this.#closeOnReturn = closeOnReturn ?? (() => this.close())
  }

  /**
   * Starts, in the calling thread (for example a `worker_threads` worker), a queue that {@link Tun.detachQueue}
   * took out of its device. The token is a plain number: post it to the worker.
   *
   * @throws {TunError} `ERR_TUN_NOT_FOUND` for an unknown or already attached token.
   */
  static attach(token: number, options: { ring?: RingOptions } = {}): TunQueue {
    checkKeys(options, new Set(['ring']), 'option')
    checkKeys(options.ring, KNOWN_RING_OPTIONS, 'ring option')
    let dev: DeviceHandle | undefined
    const q = new PacketQueue(
      (onEvent) => {
        const [d, h] = native(() => binding.attachQueue(token, { ...options.ring }, onEvent))
        dev = d
        return h
      },
      options.ring ?? {},
      `queue ${token}`,
    )
    const { name } = binding.deviceInfo(dev!)
    q.rename(name)
    return new TunQueue(q, name)
  }

  /** Name of the device the queue belongs to. */
  get name(): string {
    return this.#name
  }

  /** @internal The native queue handle (for the stack). */
  [NATIVE_HANDLE](): QueueHandle {
    return this.#q[NATIVE_HANDLE]()
  }

  /** Whether the queue (or its device) was closed. */
  get closed(): boolean {
    return this.#q.closed
  }

  /** Iterates over this queue's packets; see {@link Tun.packets}. */
  packets(options: IterateOptions = {}): AsyncIterableIterator<Buffer> {
    this.#check()
    checkKeys(options, ITERATE_OPTIONS, 'option')
    checkSignal(options.signal)
    return new PacketIterator(this.#q, options, this.#closeOnReturn)
  }

  /** Iterates over this queue's batches; see {@link Tun.batches}. */
  async *batches(options: IterateOptions = {}): AsyncGenerator<Buffer[], void, undefined> {
    this.#check()
    checkKeys(options, ITERATE_OPTIONS, 'option')
    checkSignal(options.signal)
    let finished = false
    try {
      for (;;) {
        const b = await this.#q.readBatch(options.signal)
        if (b === null) {
          finished = true
          return
        }
        yield batchBuffers(b)
      }
    } catch (e) {
      finished = true
      throw e
    } finally {
      if (!finished && options.closeOnReturn) await this.#closeOnReturn()
    }
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<Buffer> {
    return this.packets()
  }

  /** Sends packets through this queue; see {@link Tun.write}. */
  write(packets: Uint8Array | readonly Uint8Array[]): Promise<void> {
    return this.#q.write(packets)
  }

  /** This queue's ring counters. */
  stats(): QueueStats & { lastWriteError?: TunError } {
    this.#check()
    return this.#q.stats()
  }

  /** Closes this queue only (the device's other queues keep running). Idempotent. */
  async close(): Promise<void> {
    this.#q.close()
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close()
  }

  #check(): void {
    if (this.#q.closed) throw new TunError('ERR_TUN_CLOSED', `${this.#name} is closed`)
  }
}

/**
 * A TUN or TAP device. Create one with {@link Tun.create}; read with {@link Tun.packets} or {@link Tun.batches};
 * write with {@link Tun.write}; close with {@link Tun.close} or `await using`.
 *
 * Packets come from a reader thread in batches, each batch one native buffer; the `Buffer`s you receive are views
 * into it, made without copying. A view stays valid for as long as you keep it.
 *
 * @example
 * ```ts
 * await using tun = await Tun.create({ addresses: ['10.7.0.1/24'] })
 * for await (const pkt of tun.packets()) console.log(pkt.length)
 * ```
 */
export class Tun implements AsyncDisposable {
  readonly #dev: DeviceHandle
  readonly #ring: RingOptions
  /** Opened queues; `null` = not opened yet; `false` = detached to another thread. */
  readonly #queues: (TunQueue | null | false)[]
  /** Weakly: an iterator the user drops is collected, and its subscription released. */
  readonly #events = new Set<WeakRef<LinkEventIterator>>()
  readonly #name: string
  readonly #index: number
  readonly #mode: 'tun' | 'tap'
  #closed = false

  private constructor(dev: DeviceHandle, ring: RingOptions) {
    this.#dev = dev
    this.#ring = ring
    const info = native(() => binding.deviceInfo(dev))
    this.#name = info.name
    this.#index = info.index
    this.#mode = info.mode
    this.#queues = Array.from({ length: info.queues }, () => null)
    // A single queue starts at once, so packets that arrive before the first read wait in its ring. With several
    // queues each starts on first use (the kernel queues its packets meanwhile), so any of them can still be
    // detached to a worker.
    if (info.queues === 1) {
      try {
        this.queue(0)
      } catch (e) {
        binding.closeDevice(dev)
        throw e
      }
    }
  }

  /**
   * Creates a device, configures it (addresses, MTU, routes, link up) and starts its packet threads. Packets that
   * arrive before you iterate wait in the ring.
   *
   * @throws {TunError} `ERR_TUN_INVALID_NAME`, `ERR_TUN_INVALID_ADDRESS`, `ERR_TUN_EXISTS`, `ERR_TUN_INVALID_MTU`,
   *   `ERR_TUN_INVALID_ARGUMENT`, `ERR_TUN_NO_DRIVER`, `ERR_TUN_PERMISSION`, `ERR_TUN_BUSY`.
   */
  static async create(options: TunOptions = {}): Promise<Tun> {
    checkKeys(options, KNOWN_OPTIONS, 'option')
    const { ring, ...rest } = options
    checkKeys(ring, KNOWN_RING_OPTIONS, 'ring option')
    if (Array.isArray(options.routes)) for (const r of options.routes) checkKeys(r, KNOWN_ROUTE_KEYS, 'route')
    const opts: NativeDeviceOptions = { txQueueLength: DEFAULT_TX_QUEUE_LENGTH, ...rest }
    return new Tun(
      native(() => binding.createDevice(opts)),
      ring ?? {},
    )
  }

  /**
   * Attaches to an existing persistent device (one created with `persist: true`), for example from a process that
   * has no privileges when the device's `owner`/`group` allow it.
   *
   * @throws {TunError} `ERR_TUN_NOT_FOUND` when there is no such device; `ERR_TUN_BUSY` when it is of another kind or
   *   (single-queue) already open elsewhere.
   */
  static async open(
    name: string,
    options: Pick<TunOptions, 'mode' | 'queues' | 'netns' | 'offload' | 'ring'> = {},
  ): Promise<Tun> {
    checkKeys(options, new Set(['mode', 'queues', 'netns', 'offload', 'ring']), 'option')
    if (typeof name !== 'string') throw new TunError('ERR_TUN_INVALID_ARGUMENT', 'name must be a string')
    const { ring, ...rest } = options
    checkKeys(ring, KNOWN_RING_OPTIONS, 'ring option')
    return new Tun(
      native(() => binding.createDevice({ ...rest, name, openExisting: true })),
      ring ?? {},
    )
  }

  /**
   * Adopts a file descriptor already attached to a TUN/TAP device, such as one an Android `VpnService` or a
   * privileged parent process opened. tunkit owns it afterwards and closes it on `close()`; on error (a wrong
   * `mode`, a descriptor that is not an attached TUN/TAP one, ring options out of range…) the caller keeps it, open
   * and unchanged (same `O_NONBLOCK` and other flags).
   */
  static fromFd(fd: number, options: { mode?: 'tun' | 'tap'; ring?: RingOptions } = {}): Tun {
    checkKeys(options, new Set(['mode', 'ring']), 'option')
    checkKeys(options.ring, KNOWN_RING_OPTIONS, 'ring option')
    return new Tun(
      // The ring options go along so that the native side checks them before it takes the descriptor.
      native(() => binding.fromFd(fd, options.mode, { ...options.ring })),
      options.ring ?? {},
    )
  }

  /**
   * Two connected in-memory devices: what one writes, the other reads. Lossless (a full peer makes the writer
   * wait), no privileges needed: for tests and benchmarks of code built on tunkit.
   */
  static createMemoryPair(options: { mtu?: number; capacity?: number; ring?: RingOptions } = {}): [Tun, Tun] {
    checkKeys(options, new Set(['mtu', 'capacity', 'ring']), 'option')
    checkKeys(options.ring, KNOWN_RING_OPTIONS, 'ring option')
    const [a, b] = native(() => binding.createMemoryPair(options.mtu ?? 1500, options.capacity ?? 1024))
    return [new Tun(a, options.ring ?? {}), new Tun(b, options.ring ?? {})]
  }

  /** Interface name, as the kernel assigned it. */
  get name(): string {
    return this.#name
  }

  /** Interface index. */
  get index(): number {
    return this.#index
  }

  /** `'tun'` or `'tap'`. */
  get mode(): 'tun' | 'tap' {
    return this.#mode
  }

  /** Whether `close()` was called. */
  get closed(): boolean {
    return this.#closed
  }

  /** Number of queues (1 unless created with `queues`). */
  get queueCount(): number {
    return this.#queues.length
  }

  /** The MTU, read from the kernel now. */
  get mtu(): number {
    return this.link().mtu
  }

  /** Link state (name, index, MTU, up, txqueuelen, MAC), read from the kernel now. */
  link(): LinkState {
    this.#check()
    const { stats: _stats, ...l } = native(() => binding.link(this.#dev))
    return l
  }

  /**
   * Queue `i` (0-based), started on first use in this thread. `packets()`, `batches()` and `write()` of the device
   * itself use queue 0.
   *
   * @throws {TunError} `ERR_TUN_BUSY` if the queue was detached to another thread; `ERR_TUN_INVALID_ARGUMENT` if
   *   there is no such queue.
   */
  queue(i: number): TunQueue {
    this.#check()
    const slot = this.#queues[i]
    if (slot === undefined)
      throw new TunError('ERR_TUN_INVALID_ARGUMENT', `${this.#name} has no queue ${i} (it has ${this.#queues.length})`)
    if (slot === false) throw new TunError('ERR_TUN_BUSY', `queue ${i} of ${this.#name} was detached to another thread`)
    if (slot) return slot
    const q = new PacketQueue(
      (onEvent) => native(() => binding.openQueue(this.#dev, i, { ...this.#ring }, onEvent)),
      this.#ring,
      this.#name,
    )
    const tq = new TunQueue(q, this.#name, () => this.close())
    this.#queues[i] = tq
    return tq
  }

  /**
   * Takes queue `i` out of this device so another thread can drive it: post the returned token to a
   * `worker_threads` worker, which calls `TunQueue.attach(token)`. Only a queue not yet started here can be detached
   * (the queue of a single-queue device starts at once; with `queues > 1` none starts before it is used). The
   * device's configuration stays with this `Tun`; closing it drops detached queues that were never attached.
   */
  detachQueue(i: number): number {
    this.#check()
    const slot = this.#queues[i]
    if (slot === undefined)
      throw new TunError('ERR_TUN_INVALID_ARGUMENT', `${this.#name} has no queue ${i} (it has ${this.#queues.length})`)
    if (slot !== null) throw new TunError('ERR_TUN_BUSY', `queue ${i} of ${this.#name} is already in use`)
    const token = native(() => binding.detachQueue(this.#dev, i))
    this.#queues[i] = false
    return token
  }

  /**
   * Iterates over incoming packets, one zero-copy `Buffer` each. Ends when the device is closed; throws an
   * `AbortError` when `signal` aborts. Leaving the loop early does not close the device unless `closeOnReturn`, and
   * the packets of the current batch it did not reach are returned by the next loop. One reader at a time per queue
   * (a second concurrent one gets `ERR_TUN_CONCURRENT_READ`).
   */
  packets(options: IterateOptions = {}): AsyncIterableIterator<Buffer> {
    return this.queue(0).packets(options)
  }

  /** Iterates over incoming batches: one `Buffer[]` per batch, for forwarders that handle packets in bulk. */
  batches(options: IterateOptions = {}): AsyncGenerator<Buffer[], void, undefined> {
    return this.queue(0).batches(options)
  }

  /** Same as `packets()`. */
  [Symbol.asyncIterator](): AsyncIterableIterator<Buffer> {
    return this.packets()
  }

  /**
   * Sends one packet or an array of packets (IP packets for TUN, Ethernet frames for TAP). The packets are written or
   * copied before this returns, so their buffers may be reused at once. The promise resolves at once while the
   * transmit ring holds at most `ring.txRingBytes`; past that, once the ring has drained to half: awaiting it is the
   * backpressure.
   *
   * Every packet is checked first; if one is empty, not IPv4/IPv6 (TUN), shorter than an Ethernet header (TAP), or
   * larger than the MTU allows, the promise rejects (`ERR_TUN_INVALID_PACKET`, `ERR_TUN_PACKET_TOO_LARGE`) and none of
   * the packets is sent. Arguments of the wrong shape (not a `Buffer`/`Uint8Array` or an array of at most 65 536 of
   * them; views of resizable or detached buffers) reject with `ERR_TUN_INVALID_ARGUMENT`.
   *
   * @throws {TunError} (as a rejection) also `ERR_TUN_QUEUE_FULL` when more than twice `txRingBytes` already wait
   *   (writes issued without awaiting; nothing of this one is taken), `ERR_TUN_GONE` once the device was removed,
   *   `ERR_TUN_CLOSED`, `ERR_TUN_INTERNAL`.
   */
  write(packets: Uint8Array | readonly Uint8Array[]): Promise<void> {
    if (this.#closed)
      return Promise.reject(new TunError('ERR_TUN_CLOSED', `write on ${this.#name}: the device is closed`))
    return this.queue(0).write(packets)
  }

  /**
   * Iterates over changes of the link (`up`, `down`, `mtu`, `address-added`, `address-removed`), whoever makes them.
   * Ends when the device closes or the loop ends; an aborted `signal` ends it with an `AbortError`. At most 1024
   * events wait for `next()`; older ones are dropped and reported as one `{ type: 'overflow', lost }` event. Only a
   * waiting `next()` keeps the process alive.
   *
   * @example
   * ```ts
   * for await (const ev of tun.events()) if (ev.type === 'mtu') console.log('new MTU', ev.mtu)
   * ```
   */
  events(options: EventOptions = {}): AsyncIterableIterator<LinkEvent> {
    this.#check()
    checkKeys(options, new Set(['signal']), 'option')
    checkSignal(options.signal)
    return new LinkEventIterator(this.#dev, options.signal, this.#events)
  }

  /** Counters of the rings (summed over the queues started here) and of the kernel. */
  stats(): TunStats {
    this.#check()
    const open = this.#queues.filter((q): q is TunQueue => !!q && !q.closed)
    const total: QueueStats & { lastWriteError?: TunError } = open[0]?.stats() ?? {
      rxPackets: 0,
      rxBytes: 0,
      rxBatches: 0,
      rxStalls: 0,
      rxQueuedBatches: 0,
      rxLiveBytes: 0,
      txPackets: 0,
      txBytes: 0,
      txBatches: 0,
      txErrors: 0,
      txBackpressure: 0,
      txQueuedBytes: 0,
      intercepted: 0,
      interceptWrites: 0,
      passDropped: 0,
      backend: {},
    }
    for (const other of open.slice(1)) {
      const s = other.stats()
      for (const k of Object.keys(s) as (keyof QueueStats)[]) {
        const v = s[k]
        if (typeof v === 'number') (total[k] as number) += v
      }
      for (const [k, v] of Object.entries(s.backend)) {
        // Most backend counters add up over queues; the on/off flags (offloadTcp, offloadUdp) do not.
        total.backend[k] = BACKEND_FLAGS.has(k) ? Math.max(total.backend[k] ?? 0, v) : (total.backend[k] ?? 0) + v
      }
      total.lastWriteError ??= s.lastWriteError
    }
    return { ...total, kernel: native(() => binding.link(this.#dev)).stats }
  }

  /** Sets the MTU (68..65535, at least 1280 with IPv6 addresses). */
  async setMtu(mtu: number): Promise<void> {
    this.#check()
    native(() => binding.setMtu(this.#dev, mtu))
  }

  /** Brings the link up. */
  async up(): Promise<void> {
    this.#check()
    native(() => binding.setUp(this.#dev, true))
  }

  /** Takes the link down. */
  async down(): Promise<void> {
    this.#check()
    native(() => binding.setUp(this.#dev, false))
  }

  /** Sets the kernel's queue length for the device. */
  async setTxQueueLength(length: number): Promise<void> {
    this.#check()
    native(() => binding.setTxQueueLength(this.#dev, length))
  }

  /** Sets the MAC address of a TAP device. */
  async setMac(mac: string): Promise<void> {
    this.#check()
    native(() => binding.setMac(this.#dev, mac))
  }

  /** Adds an address in CIDR form; `peer` makes it point-to-point. */
  async addAddress(cidr: string, options: { peer?: string } = {}): Promise<void> {
    this.#check()
    checkKeys(options, KNOWN_ADDRESS_OPTIONS, 'address option')
    native(() => binding.addAddress(this.#dev, cidr, options))
  }

  /** Removes an address (`ERR_TUN_NOT_FOUND` when absent). */
  async removeAddress(cidr: string): Promise<void> {
    this.#check()
    native(() => binding.removeAddress(this.#dev, cidr))
  }

  /** The addresses on the device, read from the kernel (including the IPv6 link-local one the kernel adds). */
  async addresses(): Promise<AddressInfo[]> {
    this.#check()
    return native(() => binding.addresses(this.#dev))
  }

  /** Adds a route through the device. */
  async addRoute(route: RouteSpec): Promise<void> {
    this.#check()
    checkKeys(route, KNOWN_ROUTE_KEYS, 'route')
    native(() => binding.addRoute(this.#dev, route))
  }

  /** Removes a route (`ERR_TUN_NOT_FOUND` when absent). */
  async removeRoute(route: RouteSpec): Promise<void> {
    this.#check()
    checkKeys(route, KNOWN_ROUTE_KEYS, 'route')
    native(() => binding.removeRoute(this.#dev, route))
  }

  /** The routes through the device, read from the kernel (all tables; includes the kernel's own prefix routes). */
  async routes(): Promise<RouteSpec[]> {
    this.#check()
    return native(() => binding.routes(this.#dev))
  }

  /** Makes the device persistent, or not: a non-persistent device disappears when its last user closes it. */
  async setPersist(persist: boolean): Promise<void> {
    this.#check()
    native(() => binding.setPersist(this.#dev, persist))
  }

  #check(): void {
    if (this.#closed) throw new TunError('ERR_TUN_CLOSED', `${this.#name} is closed`)
  }

  /**
   * Closes the device: outgoing packets already queued are written (for up to `ring.closeFlushMs`), waiting reads,
   * iterators and event loops end, writes still waiting for room reject with `ERR_TUN_CLOSED`, and a non-persistent
   * device is removed once no queue detached to another thread holds it. Idempotent.
   */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    for (const ev of [...this.#events]) ev.deref()?.end()
    for (const q of this.#queues) if (q) await q.close()
    binding.closeDevice(this.#dev)
  }

  /** `await using tun = await Tun.create(...)` closes it at the end of the scope. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close()
  }
}
