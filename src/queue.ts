/**
 * One queue's I/O on the JavaScript side: pulling batches from the native ring, waking on its events, the write
 * queue that applies backpressure, and the iterators. Internal; `Tun` exposes it.
 */
import { setImmediate as immediate } from 'node:timers/promises'
import { binding, EVENT_NOTICE, EVENT_WRITABLE, type QueueHandle } from './native.js'
import { abortError, native, TunError } from './errors.js'

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
}

/** Counters of one queue's rings. */
export interface QueueStats {
  /** Packets, bytes and batches handed from the device to JavaScript. */
  rxPackets: number
  rxBytes: number
  rxBatches: number
  /** Times the reader stopped reading because JavaScript was behind (ring full or memory budget spent). */
  rxStalls: number
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
}

/** Bit 31 of `lens[0]` after a pull: the ring asks for copies (see `RawBatch.copy`). */
const PULL_COPY = 0x80000000

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

  /**
   * `open` starts the native ring with the event callback it is given (`openQueue` or `attachQueue`). The callback
   * holds this queue only weakly: the native side keeps it alive for as long as the ring runs, and a strong
   * reference would make every queue (and its device) reachable forever, even when the program has dropped it.
   */
  constructor(open: (onEvent: (code: number) => void) => QueueHandle, opts: RingOptions, label: string) {
    this.#label = label
    this.#lens = new Uint32Array((opts.batchPackets ?? 256) + 1)
    const self = new WeakRef(this)
    this.#h = open((code) => {
      const q = self.deref()
      if (q) q.#onEvent(code)
    })
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

  /** The next batch, or `null` once the queue is closed. */
  async readBatch(signal?: AbortSignal): Promise<RawBatch | null> {
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
          return b
        }
        const ab = native(() => binding.pull(this.#h, this.#lens))
        if (ab) {
          const head = this.#lens[0]!
          const count = (head & ~PULL_COPY) >>> 0
          const batch = { ab, offset: 0, lens: this.#lens.slice(1, count + 1), copy: (head & PULL_COPY) !== 0 }
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
  write(packets: Uint8Array | readonly Uint8Array[]): Promise<void> {
    if (this.#closed)
      return Promise.reject(new TunError('ERR_TUN_CLOSED', `write on ${this.#label}: the device is closed`))
    let r: number
    try {
      r = binding.send(this.#h, packets)
    } catch (e) {
      return Promise.reject(TunError.from(e))
    }
    if (r === 0) return RESOLVED
    return new Promise<void>((resolve, reject) => {
      if (this.#writeWaiters.push({ resolve, reject }) === 1) this.#ref(1)
    })
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
export class PacketIterator implements AsyncIterableIterator<Buffer> {
  #batch: RawBatch | null = null
  #i = 0
  #off = 0
  #done = false
  #inflight: Promise<IteratorResult<Buffer>> | null = null
  readonly #queue: PacketQueue
  readonly #opts: IterateOptions
  readonly #onReturn: () => Promise<void>

  constructor(queue: PacketQueue, opts: IterateOptions, onReturn: () => Promise<void>) {
    this.#queue = queue
    this.#opts = opts
    this.#onReturn = onReturn
  }

  next(): Promise<IteratorResult<Buffer>> {
    if (this.#inflight) return this.#inflight.then(() => this.next())
    const b = this.#batch
    if (b !== null && this.#i < b.lens.length) {
      const len = b.lens[this.#i++]!
      const value = packetOf(b, this.#off, len)
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

  async #refill(): Promise<IteratorResult<Buffer>> {
    let b: RawBatch | null
    try {
      b = await this.#queue.readBatch(this.#opts.signal)
    } catch (e) {
      this.#done = true
      this.#batch = null
      throw e
    }
    if (b === null) {
      this.#done = true
      this.#batch = null
      return { value: undefined, done: true }
    }
    this.#batch = b
    this.#i = 1
    this.#off = b.offset + b.lens[0]!
    const value = packetOf(b, b.offset, b.lens[0]!)
    if (b.lens.length === 1) release(b)
    return { value, done: false }
  }

  async return(): Promise<IteratorResult<Buffer>> {
    const early = !this.#done
    this.#done = true
    const b = this.#batch
    this.#batch = null
    // Packets of the current batch not yet yielded stay readable by the next loop.
    if (b !== null && this.#i < b.lens.length)
      this.#queue.unread({ ab: b.ab, offset: this.#off, lens: b.lens.subarray(this.#i), copy: b.copy })
    if (early && this.#opts.closeOnReturn) await this.#onReturn()
    return { value: undefined, done: true }
  }

  [Symbol.asyncIterator](): this {
    return this
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
