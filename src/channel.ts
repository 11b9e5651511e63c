/** A small async queue with waiters, for the stack's iterators. Internal. */
import { abortError } from './errors.js'

/** Waiters and items of an async queue; `end()` settles everything. */
export class Channel<T> {
  #items: T[] = []
  #waiters: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void }[] = []
  #done = false
  constructor(
    readonly limit: number,
    readonly onWaiting: (waiting: boolean) => void = () => {},
  ) {}
  get done(): boolean {
    return this.#done
  }
  /**
   * Adds an item; false (and nothing added) when ended, or when full and `dropOldest` is not set. With `dropOldest`
   * a full channel drops its oldest item to make room (counted in `dropped`).
   */
  push(item: T, dropOldest = false): boolean {
    if (this.#done) return false
    const w = this.#waiters.shift()
    if (w) {
      if (this.#waiters.length === 0) this.onWaiting(false)
      w.resolve({ value: item, done: false })
      return true
    }
    if (this.#items.length >= this.limit) {
      if (!dropOldest) return false
      this.#items.shift()
      this.dropped++
    }
    this.#items.push(item)
    return true
  }
  /** Items dropped by `push(item, true)` on a full channel. */
  dropped = 0
  next(signal?: AbortSignal): Promise<IteratorResult<T>> {
    const item = this.#items.shift()
    if (item !== undefined) return Promise.resolve({ value: item, done: false })
    if (this.#done) return Promise.resolve({ value: undefined, done: true })
    if (signal?.aborted) return Promise.reject(abortError(signal))
    return new Promise((resolve, reject) => {
      const w = { resolve, reject }
      if (this.#waiters.push(w) === 1) this.onWaiting(true)
      signal?.addEventListener(
        'abort',
        () => {
          const i = this.#waiters.indexOf(w)
          if (i < 0) return
          this.#waiters.splice(i, 1)
          if (this.#waiters.length === 0) this.onWaiting(false)
          reject(abortError(signal))
        },
        { once: true },
      )
    })
  }
  /** Ends the channel: waiters get `done`, queued items are returned (for the caller to dispose of). */
  end(): T[] {
    if (this.#done) return []
    this.#done = true
    const rest = this.#items
    this.#items = []
    const waiters = this.#waiters
    this.#waiters = []
    if (waiters.length > 0) this.onWaiting(false)
    for (const w of waiters) w.resolve({ value: undefined, done: true })
    return rest
  }
  iterator(signal?: AbortSignal, onReturn?: () => void): AsyncIterableIterator<T> {
    const it: AsyncIterableIterator<T> = {
      next: () => this.next(signal),
      return: async () => {
        onReturn?.()
        return { value: undefined, done: true }
      },
      [Symbol.asyncIterator]: () => it,
    }
    return it
  }
}
