/**
 * One queue's I/O on the JavaScript side: pulling batches from the native ring, waking on its events, the write
 * queue that applies backpressure, and the iterators. Internal; `Tun` exposes it.
 */
import { setImmediate as immediate } from 'node:timers/promises'
import { binding, EVENT_NOTICE, EVENT_PARKED, EVENT_WRITABLE, type QueueHandle } from './native.js'
import { abortError, native, TunError } from './errors.js'
import { FRAME, SuperPacket, VNET_HDR_LEN } from './superpacket.js'

/** Sizes and budgets of a queue's packet rings. Every field is optional; the defaults suit most uses. */
export interface RingOptions {
  /** Batches that may wait for JavaScript before the reader thread stops reading (default 64). */
  ringBatches?: number
  /** Most packets per batch (default 256). */
  batchPackets?: number
  /** Bytes of packets per batch buffer, beyond room for one 64 KiB frame (default 192 KiB). */
  slabBytes?: number
  /**
   * Batches smaller than this many bytes are copied into a buffer of their exact size (one memcpy) so that a trickle
   * of small batches does not pin a whole batch buffer each; larger ones are handed over without copying (default
   * 16 KiB; 0 never copies).
   */
  copyBelow?: number
  /** Bytes of batch buffers alive at once, including those whose packets JavaScript still holds (default 256 MiB). */
  memoryBudget?: number
  /**
   * Bytes of outgoing packets queued before `write()` waits (default 4 MiB). Twice this is a hard cap: a write that
   * would queue more is refused with `ERR_TUN_QUEUE_FULL`.
   */
  txRingBytes?: number
  /** How long `close()` waits for queued outgoing packets to be written, in ms (default 1000). */
  closeFlushMs?: number
}

/** Options of `packets()` and `batches()`. */
export interface IterateOptions {
  /** Ends the iteration with an `AbortError` when aborted. */
  signal?: AbortSignal
  /** Close the device when the loop exits early (`break`, `return`, a throw). Default `false`. */
  closeOnReturn?: boolean
  /**
   * Yield {@link SuperPacket}s instead of `Buffer`s: on a device with offload, packets as the kernel handed them
   * over, super-packets of up to 64 KiB unsplit, each with its segmentation metadata (`gso`), for `write()` to pass
   * on as they are (no cutting on read, no coalescing on write). On a device without offload every one is an
   * ordinary packet (`gso` is `null`). Default `false`.
   */
  superPackets?: boolean
}

/** Counters of one queue's rings. */
export interface QueueStats {
  /** Packets, bytes and batches handed from the device to JavaScript. */
  rxPackets: number
  rxBytes: number
  rxBatches: number
  /** Times the reader stopped reading because JavaScript was behind (ring full or memory budget spent). */
  rxStalls: number
  /**
   * Batches read on the JavaScript thread itself while the device was idle (Linux): the reader thread then parks and
   * the event loop waits on the device, so an idle packet costs one thread wake-up, not two.
   */
  rxInlineBatches: number
  /** Batches waiting for JavaScript now. */
  rxQueuedBatches: number
  /** Bytes of batch buffers alive now (queued, or held by JavaScript). */
  rxLiveBytes: number
  /** Packets, bytes and batches written to the device. */
  txPackets: number
  txBytes: number
  txBatches: number
  /** Outgoing packets the device refused. */
  txErrors: number
  /** Times `write()` had to wait because the transmit ring was full. */
  txBackpressure: number
  /** Bytes queued for the device now. */
  txQueuedBytes: number
  /** Packets a {@link Stack} took on the reader thread (they never reached `packets()`), and packets it wrote back. */
  intercepted: number
  interceptWrites: number
  /** With a stack: packets it passed on to `packets()` that were dropped because nobody read them (the ring was full). */
  passDropped: number
  /** Counters of the platform backend, when it has any (offload on Linux: super-packets split and coalesced, fallbacks). */
  backend: Record<string, number>
}

/** One batch as the ring hands it over: one buffer with packets back to back from `offset`, and their lengths. */
interface RawBatch {
  ab: ArrayBuffer
  offset: number
  lens: Uint32Array
  /**
   * The ring is short of memory because batch buffers stay alive (the program keeps packets, and each view pins its
   * whole batch): hand out copies, so that what is kept is only the packets themselves.
   */
  copy: boolean
  /** Every entry is a frame: a virtio-net header, then the packet (maybe a super-packet). */
  frames: boolean
}

/** Bit 31 of `lens[0]` after a pull: the ring asks for copies (see `RawBatch.copy`). */
const PULL_COPY = 0x80000000
/** Bit 30 of `lens[0]` after a pull: the batch holds frames (see `RawBatch.frames`). */
const PULL_FRAMES = 0x40000000
const PULL_COUNT = 0x3fffffff

/**
 * A batch all of whose packets were copied out: its memory goes back to the ring now rather than at the next garbage
 * collection (which, with nothing else allocating, might not come before the reader runs out of budget).
 */
function release(b: RawBatch): void {
  if (b.copy) binding.releaseBatch(b.ab)
}

/** The packet at `off`/`len` of `b`: a view of the batch, or under memory pressure an exact-size copy of its own. */
function packetOf(b: RawBatch, off: number, len: number): Buffer {
  if (!b.copy) return Buffer.from(b.ab, off, len)
  // Not from Buffer's shared pool: a kept copy must not pin a pool chunk either.
  const out = Buffer.allocUnsafeSlow(len)
  out.set(new Uint8Array(b.ab, off, len))
  return out
}

/** The entry at `off`/`len` of `b` as a {@link SuperPacket} (a view, or under memory pressure a copy). */
function superOf(b: RawBatch, off: number, len: number): SuperPacket {
  const bytes = packetOf(b, off, len)
  return b.frames ? new SuperPacket(bytes, null) : new SuperPacket(null, bytes)
}

/** A plain header: no segmentation, checksums complete (for a header-less packet written to a raw device). */
const PLAIN_HDR = Buffer.alloc(VNET_HDR_LEN)

const RESOLVED = Promise.resolve()
/** Yield to the event loop at least this often while batches keep coming (timers, I/O and finalizers run). */
const YIELD_EVERY_BATCHES = 32
const YIELD_EVERY_MS = 8

interface WriteWaiter {
  resolve: () => void
  reject: (e: unknown) => void
}

const NO_PACKETS: readonly Uint8Array[] = Object.freeze([])

/** Gets the native handle of a queue, for the stack (a symbol the package does not export). */
export const NATIVE_HANDLE: unique symbol = Symbol('tunkit.nativeHandle')

/** Queues with a read or write waiting: held strongly until it settles (see `PacketQueue.#ref`). */
const WAITING = new Set<PacketQueue>()

export class PacketQueue {
  readonly #h: QueueHandle
  readonly #lens: Uint32Array
  #label: string
  #readWaiter: (() => void) | null = null
  /** Packets an iterator left unread when its loop ended early; the next read returns them first. */
  #leftover: RawBatch | null = null
  #reading = false
  #closed = false
  /** Writes whose packets the ring took while over its budget: they resolve once it has room again. */
  #writeWaiters: WriteWaiter[] = []
  #refs = 0
  #batchesSinceYield = 0
  #lastYield = performance.now()
  /** The event callback the ring calls; the idle poll calls it too. */
  readonly #onEventFn: (code: number) => void
  /** Iterations of super-packets under way: while there is one, the reader hands over whole frames. */
  #frameReaders = 0
  /** The device was opened with `offload: { raw: true }`: its plain packets are frames too. */
  raw = false

  /**
   * `open` starts the native ring with the event callback it is given (`openQueue` or `attachQueue`). The callback
   * holds this queue only weakly: the native side keeps it alive for as long as the ring runs, and a strong
   * reference would make every queue (and its device) reachable forever, even when the program has dropped it.
   */
  constructor(open: (onEvent: (code: number) => void) => QueueHandle, opts: RingOptions, label: string) {
    this.#label = label
    this.#lens = new Uint32Array((opts.batchPackets ?? 256) + 1)
    const self = new WeakRef(this)
    const onEvent = (code: number) => {
      const q = self.deref()
      if (q) q.#onEvent(code)
    }
    this.#onEventFn = onEvent
    this.#h = open(onEvent)
  }

  /** The native queue handle (for the stack). */
  [NATIVE_HANDLE](): QueueHandle {
    return this.#h
  }

  /** Sets the device name used in error messages. */
  rename(label: string): void {
    this.#label = label
  }

  get closed(): boolean {
    return this.#closed
  }

  #onEvent(code: number): void {
    if (code === EVENT_WRITABLE) {
      this.#wakeWriters()
    } else if (code === EVENT_PARKED) {
      // The device is idle and its reader parked: this thread's event loop waits on it now (one wake-up per packet
      // instead of two); the reader takes over again under load.
      if (!this.#closed) binding.pollStart(this.#h, this.#onEventFn)
    } else if (code === EVENT_NOTICE) {
      if (this.#closed) return
      for (const msg of binding.takeNotices(this.#h))
        process.emitWarning(`${this.#label}: ${msg}`, { code: 'TUNKIT_NOTICE' })
    } else {
      const w = this.#readWaiter
      this.#readWaiter = null
      w?.()
    }
  }

  /**
   * Keeps the event loop alive while something waits on the ring, and keeps this queue alive meanwhile: the native
   * side holds it only weakly, and a read or write someone awaits must not be collected with it (like a socket with
   * I/O pending).
   */
  #ref(delta: 1 | -1): void {
    const before = this.#refs
    this.#refs += delta
    if (before === 0 && this.#refs > 0) WAITING.add(this)
    else if (before > 0 && this.#refs === 0) WAITING.delete(this)
    if (this.#closed) return
    if (before === 0 && this.#refs > 0) binding.setRef(this.#h, true)
    else if (before > 0 && this.#refs === 0) binding.setRef(this.#h, false)
  }

  /** A super-packet iteration starts (`on`) or ends: the reader hands over whole frames while one runs. */
  readFrames(on: boolean): void {
    const before = this.#frameReaders
    this.#frameReaders += on ? 1 : -1
    if (this.#closed || before > 0 === this.#frameReaders > 0) return
    binding.setReadFrames(this.#h, this.#frameReaders > 0)
  }

  /**
   * The next batch, or `null` once the queue is closed. With `frames` a batch may hold frames (`RawBatch.frames`);
   * without, frames of a split offload queue are cut into packets first (a raw device always gives frames).
   */
  async readBatch(signal?: AbortSignal, frames = false): Promise<RawBatch | null> {
    if (this.#reading) {
      throw new TunError('ERR_TUN_CONCURRENT_READ', `read on ${this.#label}: another read of this queue is in progress`)
    }
    this.#reading = true
    try {
      for (;;) {
        if (signal?.aborted) throw abortError(signal)
        if (this.#closed) return null
        if (this.#leftover) {
          const b = this.#leftover
          this.#leftover = null
          return b.frames && !frames && !this.raw ? cutBatch(b) : b
        }
        const ab = native(() => binding.pull(this.#h, this.#lens, frames))
        if (ab) {
          const head = this.#lens[0]!
          const count = head & PULL_COUNT
          const batch = {
            ab,
            offset: 0,
            lens: this.#lens.slice(1, count + 1),
            copy: (head & PULL_COPY) !== 0,
            frames: (head & PULL_FRAMES) !== 0,
          }
          // A flood can keep this loop busy on microtasks alone; let timers, I/O and the finalizers that return
          // batch buffers run now and then.
          const now = performance.now()
          if (++this.#batchesSinceYield >= YIELD_EVERY_BATCHES || now - this.#lastYield >= YIELD_EVERY_MS) {
            this.#batchesSinceYield = 0
            await immediate()
            this.#lastYield = performance.now()
          }
          return batch
        }
        if (ab === undefined) return null
        await this.#waitReadable(signal)
        // Waiting went through the event loop: that counts as a yield.
        this.#batchesSinceYield = 0
        this.#lastYield = performance.now()
      }
    } finally {
      this.#reading = false
    }
  }

  /** Gives back the unread rest of a batch (an iterator's loop ended early); the next read returns it first. */
  unread(b: RawBatch): void {
    if (b.lens.length > 0 && !this.#closed) this.#leftover = b
  }

  #waitReadable(signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const cleanup = () => {
        this.#readWaiter = null
        signal?.removeEventListener('abort', onAbort)
        this.#ref(-1)
      }
      const onAbort = () => {
        cleanup()
        reject(abortError(signal!))
      }
      this.#readWaiter = () => {
        cleanup()
        resolve()
      }
      this.#ref(1)
      signal?.addEventListener('abort', onAbort, { once: true })
    })
  }

  /**
   * Hands packets to the device; see `Tun.write`. The native side writes them at once or copies them before this
   * returns, so the caller may reuse its buffers as soon as `write()` returns. Past the ring's budget the promise
   * waits until the ring has drained to half; past twice the budget the write is refused (`ERR_TUN_QUEUE_FULL`).
   */
  write(packets: Uint8Array | SuperPacket | readonly (Uint8Array | SuperPacket)[]): Promise<void> {
    if (this.#closed)
      return Promise.reject(new TunError('ERR_TUN_CLOSED', `write on ${this.#label}: the device is closed`))
    let r: number
    try {
      if (packets instanceof SuperPacket) r = this.#sendSuper([packets])
      else if (Array.isArray(packets) && packets.length > 0 && packets.some((p) => p instanceof SuperPacket))
        r = this.#sendSuper(packets)
      else r = binding.send(this.#h, packets as Uint8Array | readonly Uint8Array[])
    } catch (e) {
      return Promise.reject(TunError.from(e))
    }
    if (r === 0) return RESOLVED
    return new Promise<void>((resolve, reject) => {
      if (this.#writeWaiters.push({ resolve, reject }) === 1) this.#ref(1)
    })
  }

  /**
   * Sends super-packets (and packets among them) in order: each run of frames with `sendFrames`, each run of
   * header-less packets with `send` (on a raw device they get a plain header, by copy). Returns 1 if any run left
   * the ring over budget.
   */
  #sendSuper(items: readonly (Uint8Array | SuperPacket)[]): number {
    let r = 0
    let run: Uint8Array[] = []
    let runFrames = false
    const flush = () => {
      if (run.length === 0) return
      r |= runFrames ? binding.sendFrames(this.#h, run) : binding.send(this.#h, run)
      run = []
    }
    for (const p of items) {
      let bytes: Uint8Array
      let frame = false
      if (p instanceof SuperPacket) {
        const f = p[FRAME]
        if (f !== null) {
          bytes = f
          frame = true
        } else if (this.raw) {
          bytes = Buffer.concat([PLAIN_HDR, p.data])
          frame = true
        } else bytes = p.data
      } else bytes = p
      if (frame !== runFrames) {
        flush()
        runFrames = frame
      }
      run.push(bytes)
    }
    flush()
    return r
  }

  /** The ring has drained to half, or has ended: settle the writes waiting for it. */
  #wakeWriters(): void {
    if (this.#writeWaiters.length === 0) return
    // An empty write asks whether the waiting writes may go on. The event was raised on the writer thread when the
    // ring had drained to half; writes made since, while it was on its way, may have filled it past the budget
    // again: then they all wait for the next event (1), or the ring would take more than the writes in flight.
    // If the queue ended on an error (the device went away, an internal error), the waiting writes learn it; their
    // packets were counted in txErrors.
    let failure: unknown
    if (!this.#closed) {
      try {
        if (binding.send(this.#h, NO_PACKETS) === 1) return
      } catch (e) {
        failure = TunError.from(e)
      }
    }
    const waiters = this.#writeWaiters
    this.#writeWaiters = []
    this.#ref(-1)
    for (const w of waiters) {
      if (failure === undefined) w.resolve()
      else w.reject(failure)
    }
  }

  stats(): QueueStats & { lastWriteError?: TunError } {
    const s: QueueStats & { lastWriteError?: TunError } = native(() => binding.queueStats(this.#h))
    const e = binding.takeWriteError(this.#h)
    if (e) s.lastWriteError = new TunError(e.code as never, e.message, { errno: e.errno, syscall: e.syscall })
    return s
  }

  /** Flushes what the native ring holds (bounded), stops the threads, closes the queue. Idempotent. */
  close(): void {
    if (this.#closed) return
    if (this.#refs > 0) binding.setRef(this.#h, false)
    this.#closed = true
    // Writes waiting for room had their packets taken already: closing flushes them (bounded by closeFlushMs).
    const waiting = this.#writeWaiters
    this.#writeWaiters = []
    binding.closeQueue(this.#h)
    if (waiting.length > 0) this.#ref(-1)
    for (const w of waiting) w.resolve()
    const r = this.#readWaiter
    this.#readWaiter = null
    r?.()
  }
}

/**
 * The iterator of `packets()`: yields one zero-copy `Buffer` per packet, cut from its batch only when it is yielded.
 * Written by hand rather than as an async generator: it resolves at once while a batch has packets left.
 */
export class PacketIterator<T = Buffer> implements AsyncIterableIterator<T> {
  #batch: RawBatch | null = null
  #i = 0
  #off = 0
  #done = false
  #started = false
  #inflight: Promise<IteratorResult<T>> | null = null
  readonly #queue: PacketQueue
  readonly #opts: IterateOptions
  readonly #onReturn: () => Promise<void>
  readonly #make: (b: RawBatch, off: number, len: number) => T

  constructor(queue: PacketQueue, opts: IterateOptions, onReturn: () => Promise<void>) {
    this.#queue = queue
    this.#opts = opts
    this.#onReturn = onReturn
    this.#make = (opts.superPackets ? superOf : packetOf) as (b: RawBatch, off: number, len: number) => T
  }

  /** The iteration is over: a super-packet one no longer asks the reader for frames. */
  #finish(): void {
    this.#done = true
    if (this.#started && this.#opts.superPackets) this.#queue.readFrames(false)
    this.#started = false
  }

  next(): Promise<IteratorResult<T>> {
    if (this.#inflight) return this.#inflight.then(() => this.next())
    const b = this.#batch
    if (b !== null && this.#i < b.lens.length) {
      const len = b.lens[this.#i++]!
      const value = this.#make(b, this.#off, len)
      this.#off += len
      if (this.#i === b.lens.length) release(b)
      return Promise.resolve({ value, done: false })
    }
    if (this.#done) return Promise.resolve({ value: undefined, done: true })
    this.#inflight = this.#refill().finally(() => {
      this.#inflight = null
    })
    return this.#inflight
  }

  async #refill(): Promise<IteratorResult<T>> {
    let b: RawBatch | null
    if (!this.#started) {
      this.#started = true
      if (this.#opts.superPackets) this.#queue.readFrames(true)
    }
    try {
      b = await this.#queue.readBatch(this.#opts.signal, this.#opts.superPackets === true)
    } catch (e) {
      this.#finish()
      this.#batch = null
      throw e
    }
    if (b === null) {
      this.#finish()
      this.#batch = null
      return { value: undefined, done: true }
    }
    this.#batch = b
    this.#i = 1
    this.#off = b.offset + b.lens[0]!
    const value = this.#make(b, b.offset, b.lens[0]!)
    if (b.lens.length === 1) release(b)
    return { value, done: false }
  }

  async return(): Promise<IteratorResult<T>> {
    const early = !this.#done
    this.#finish()
    const b = this.#batch
    this.#batch = null
    // Packets of the current batch not yet yielded stay readable by the next loop.
    if (b !== null && this.#i < b.lens.length)
      this.#queue.unread({
        ab: b.ab,
        offset: this.#off,
        lens: b.lens.subarray(this.#i),
        copy: b.copy,
        frames: b.frames,
      })
    if (early && this.#opts.closeOnReturn) await this.#onReturn()
    return { value: undefined, done: true }
  }

  [Symbol.asyncIterator](): this {
    return this
  }
}

/** Cuts one batch into zero-copy {@link SuperPacket}s. */
export function batchSuperPackets(b: RawBatch): SuperPacket[] {
  const out = new Array<SuperPacket>(b.lens.length)
  let off = b.offset
  for (let i = 0; i < b.lens.length; i++) {
    const len = b.lens[i]!
    out[i] = superOf(b, off, len)
    off += len
  }
  release(b)
  return out
}

/** A batch of frames cut into plain packets (the rest of a batch a super-packet loop left for a plain one). */
function cutBatch(b: RawBatch): RawBatch {
  const frames: Uint8Array[] = []
  let off = b.offset
  for (const len of b.lens) {
    frames.push(new Uint8Array(b.ab, off, len))
    off += len
  }
  const [data, lens] = native(() => binding.cutFrames(frames))
  return {
    ab: data.buffer as ArrayBuffer,
    offset: data.byteOffset,
    lens: Uint32Array.from(lens),
    copy: false,
    frames: false,
  }
}

/** Cuts one batch into zero-copy `Buffer`s. */
export function batchBuffers(b: RawBatch): Buffer[] {
  const out = new Array<Buffer>(b.lens.length)
  let off = b.offset
  for (let i = 0; i < b.lens.length; i++) {
    const len = b.lens[i]!
    out[i] = packetOf(b, off, len)
    off += len
  }
  release(b)
  return out
}
