/** Link events (up, down, MTU, addresses) as an async iterator. Internal; `Tun.events()` exposes it. */
import { binding, type DeviceHandle, type EventsHandle, type NativeLinkEvent } from './native.js'
import { abortError, native } from './errors.js'

/** A change on the link, from the kernel's notifications. */
export type LinkEvent = NativeLinkEvent

/** The code the native side sends when the subscription ended (see crates/tunkit-napi/src/events.rs). */
const EVENTS_ENDED = 3

/**
 * What the native callback holds on to: the iterator weakly, so one the user drops is collected (and its native
 * subscription, thread and threadsafe function with it); strongly only while a `next()` waits, as a pending read
 * would.
 */
interface Link {
  readonly ref: WeakRef<LinkEventIterator>
  pinned: LinkEventIterator | null
}

interface Waiter {
  resolve(r: IteratorResult<LinkEvent>): void
  reject(e: unknown): void
}

type Registry = Set<WeakRef<LinkEventIterator>>

/** Removes a collected iterator from its device's set (the native side is released by the handle's finalizer). */
const collected = new FinalizationRegistry<{ set: Registry; ref: WeakRef<LinkEventIterator> }>(({ set, ref }) =>
  set.delete(ref),
)

/**
 * Iterates over link events until the device closes, the signal aborts, or the loop ends.
 *
 * Events wait in the native subscription until `next()` takes them, at most 1024 (`EVENTS_CAP` in events.rs):
 * beyond that the oldest are dropped and the next batch starts with `{ type: 'overflow', lost }`. Here at most one
 * native batch waits at a time, so neither side grows without bound when nobody iterates. Concurrent `next()` calls
 * are served in order; the subscription keeps the process alive only while one of them waits.
 */
export class LinkEventIterator implements AsyncIterableIterator<LinkEvent> {
  readonly #sub: EventsHandle
  readonly #signal?: AbortSignal
  readonly #registry: Registry
  readonly #link: Link
  readonly #onAbort: () => void
  #queue: LinkEvent[] = []
  #waiters: Waiter[] = []
  #referenced = false
  #done = false
  #error: unknown = undefined

  /** Subscribes; adds a weak reference to itself to `registry` (the device's, for `close()`) until it ends. */
  constructor(dev: DeviceHandle, signal: AbortSignal | undefined, registry: Registry) {
    this.#signal = signal
    this.#registry = registry
    this.#link = { ref: new WeakRef(this), pinned: null }
    this.#onAbort = LinkEventIterator.#abortListener(this.#link)
    this.#sub = native(() => binding.subscribeEvents(dev, LinkEventIterator.#callback(this.#link)))
    registry.add(this.#link.ref)
    collected.register(this, { set: registry, ref: this.#link.ref }, this.#link)
    if (signal?.aborted) this.#abort()
    else signal?.addEventListener('abort', this.#onAbort, { once: true })
  }

  // Made in static methods so that the closures capture the small `Link`, never the iterator.
  static #callback(link: Link): (code: number) => void {
    return (code) => {
      const it = link.ref.deref()
      if (it) it.#onEvent(code)
    }
  }

  static #abortListener(link: Link): () => void {
    return () => {
      const it = link.ref.deref()
      if (it) it.#abort()
    }
  }

  #abort(): void {
    this.#error = abortError(this.#signal!)
    this.#finish(true)
  }

  #onEvent(code: number): void {
    if (this.#done) return
    if (code === EVENTS_ENDED) return this.#finish(true)
    if (this.#waiters.length > 0) this.#fill()
    this.#settle()
  }

  /** Takes what the native queue holds, when nothing is left here (so at most one native batch waits here). */
  #fill(): void {
    if (this.#queue.length > 0 || this.#done) return
    try {
      const evs = native(() => binding.takeEvents(this.#sub))
      if (evs === undefined) this.#finish(false)
      else this.#queue = evs
    } catch (e) {
      this.#error = e
      this.#finish(false)
    }
  }

  /** Ends the subscription; `take`: keep what the native side still holds, for `next()` to yield first. */
  #finish(take: boolean): void {
    if (this.#done) return
    this.#done = true
    this.#signal?.removeEventListener('abort', this.#onAbort)
    binding.closeEvents(this.#sub)
    if (take) {
      try {
        this.#queue.push(...(native(() => binding.takeEvents(this.#sub)) ?? []))
      } catch (e) {
        this.#error ??= e
      }
    }
    this.#registry.delete(this.#link.ref)
    collected.unregister(this.#link)
    this.#settle()
  }

  /** Hands queued events to waiting `next()` calls in order; once ended, settles the rest (an error goes to the first). */
  #settle(): void {
    while (this.#waiters.length > 0) {
      const ev = this.#queue.shift()
      if (ev) this.#waiters.shift()!.resolve({ value: ev, done: false })
      else if (!this.#done) break
      else if (this.#error !== undefined) {
        const e = this.#error
        this.#error = undefined
        this.#waiters.shift()!.reject(e)
      } else this.#waiters.shift()!.resolve({ value: undefined, done: true })
    }
    this.#updateRef()
  }

  /** The subscription keeps the process alive exactly while a `next()` waits. */
  #updateRef(): void {
    const want = this.#waiters.length > 0 && !this.#done
    if (want === this.#referenced) return
    this.#referenced = want
    this.#link.pinned = want ? this : null
    if (!this.#done) binding.setEventsRef(this.#sub, want)
  }

  /** Ends the iteration (used by `Tun.close()`). */
  end(): void {
    this.#finish(true)
  }

  next(): Promise<IteratorResult<LinkEvent>> {
    if (this.#waiters.length === 0) {
      this.#fill()
      const ev = this.#queue.shift()
      if (ev) return Promise.resolve({ value: ev, done: false })
      if (this.#done) {
        if (this.#error === undefined) return Promise.resolve({ value: undefined, done: true })
        const e = this.#error
        this.#error = undefined
        return Promise.reject(e)
      }
    }
    return new Promise((resolve, reject) => {
      this.#waiters.push({ resolve, reject })
      this.#updateRef()
    })
  }

  async return(): Promise<IteratorResult<LinkEvent>> {
    this.#queue = []
    this.#finish(false)
    return { value: undefined, done: true }
  }

  [Symbol.asyncIterator](): this {
    return this
  }
}
