/** Link events (up, down, MTU, addresses) as an async iterator. Internal; `Tun.events()` exposes it. */
import { binding, type DeviceHandle, type EventsHandle, type NativeLinkEvent } from './native.js'
import { abortError, native } from './errors.js'

/** A change on the link, from the kernel's notifications. */
export type LinkEvent = NativeLinkEvent

/** Iterates over link events until the device closes, the signal aborts, or the loop ends. */
export class LinkEventIterator implements AsyncIterableIterator<LinkEvent> {
  readonly #sub: EventsHandle
  readonly #signal?: AbortSignal
  readonly #onEnd: (it: LinkEventIterator) => void
  #queue: LinkEvent[] = []
  #waiter: (() => void) | null = null
  #done = false
  #error: unknown = undefined

  constructor(dev: DeviceHandle, signal: AbortSignal | undefined, onEnd: (it: LinkEventIterator) => void) {
    this.#signal = signal
    this.#onEnd = onEnd
    this.#sub = native(() => binding.subscribeEvents(dev, () => this.#drain()))
    binding.setEventsRef(this.#sub, true)
    if (signal?.aborted) this.#onAbort()
    else signal?.addEventListener('abort', this.#onAbort, { once: true })
  }

  #onAbort = () => {
    this.#error = abortError(this.#signal!)
    this.#finish()
  }

  #drain(): void {
    if (this.#done) return
    try {
      const evs = native(() => binding.takeEvents(this.#sub))
      if (evs === undefined) this.#finish()
      else this.#queue.push(...evs)
    } catch (e) {
      this.#error = e
      this.#finish()
    }
    const w = this.#waiter
    this.#waiter = null
    w?.()
  }

  #finish(): void {
    if (this.#done) return
    this.#done = true
    this.#signal?.removeEventListener('abort', this.#onAbort)
    binding.closeEvents(this.#sub)
    this.#onEnd(this)
    const w = this.#waiter
    this.#waiter = null
    w?.()
  }

  /** Ends the iteration (used by `Tun.close()`). */
  end(): void {
    this.#finish()
  }

  async next(): Promise<IteratorResult<LinkEvent>> {
    for (;;) {
      const ev = this.#queue.shift()
      if (ev) return { value: ev, done: false }
      if (this.#done) {
        if (this.#error !== undefined) {
          const e = this.#error
          this.#error = undefined
          throw e
        }
        return { value: undefined, done: true }
      }
      await new Promise<void>((r) => (this.#waiter = r))
    }
  }

  async return(): Promise<IteratorResult<LinkEvent>> {
    this.#queue = []
    this.#finish()
    return { value: undefined, done: true }
  }

  [Symbol.asyncIterator](): this {
    return this
  }
}
