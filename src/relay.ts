/**
 * The relay of a stack's connections: a connection and its upstream socket joined both ways, natively with
 * splice(2) on a relay thread where it can (Linux, plain TCP sockets), in JavaScript (`pipeline`) otherwise.
 * Internal; `Stack.relay` exposes it.
 */
import net from 'node:net'
import { pipeline } from 'node:stream'
import tls from 'node:tls'
import { binding, type RelayHandle } from './native.js'
import { native, TunError } from './errors.js'

/** Options of {@link Stack.relay}. */
export interface RelayOptions {
  /** End the relay after this long without a byte either way (ms; reason `'idle'`). Default: never. */
  idleMs?: number
  /**
   * `false` relays in JavaScript (`pipeline`) even where the native path could be used. Default true: natively
   * (splice) when both sockets are plain TCP sockets with a descriptor on Linux, in JavaScript otherwise.
   */
  native?: boolean
}

/** How a {@link Stack.relay} ended. */
export interface RelayResult {
  /** Bytes delivered from the client's connection to the upstream. */
  sent: number
  /** Bytes delivered from the upstream to the client's connection. */
  received: number
  /**
   * `'closed'`: both directions ended (each end of stream passed on) or a socket was destroyed; `'reset'`: a socket
   * was reset (the other is reset too); `'idle'`: nothing moved for `idleMs`; `'error'`: any other error (`error`).
   */
  reason: 'closed' | 'reset' | 'idle' | 'error'
  /** Whether the bytes moved natively (splice) rather than through JavaScript. */
  native: boolean
  error?: Error
}

/** Most connections relayed natively at once per stack; past it `relay()` rejects with `ERR_TUN_QUEUE_FULL`. */
const MAX_RELAYS = 65_536

/** The libuv internals of a `net.Socket` the native relay uses (its descriptor, and how to stop its reads). */
type SocketInternals = net.Socket & {
  _handle?: { fd?: number; reading?: boolean; readStop?: () => number } | null
  _read: (n: number) => void
  _destroy: (err: Error | null, cb: (err: Error | null) => void) => void
  resetAndClosing?: boolean
}

/** The descriptor of a plain TCP socket on Linux, or -1 (TLS, no handle, another platform, a pipe). */
function socketFd(s: net.Socket): number {
  if (process.platform !== 'linux' || s instanceof tls.TLSSocket || s.destroyed || s.connecting) return -1
  const fd = (s as SocketInternals)._handle?.fd
  return typeof fd === 'number' && Number.isInteger(fd) && fd >= 0 ? fd : -1
}

const resetCode = (e: unknown) =>
  ['ECONNRESET', 'EPIPE', 'ERR_STREAM_PREMATURE_CLOSE'].includes((e as { code?: string } | undefined)?.code ?? '')

/** A relayed pair in flight natively. */
interface NativeRelay {
  conn: SocketInternals
  up: SocketInternals
  /** Bytes JavaScript had buffered and passed on itself before the handover. */
  pre: [number, number]
  finish: (sent: number, received: number, reason: RelayResult['reason'], error?: Error) => void
}

/** The native relay thread of one stack (created by the first native relay) and its pairs in flight. */
export class Relayer {
  #relay: RelayHandle | undefined
  readonly #relays = new Map<number, NativeRelay>()
  readonly #isClosed: () => boolean

  constructor(isClosed: () => boolean) {
    this.#isClosed = isClosed
  }

  async relay(conn: net.Socket, up: net.Socket, options: RelayOptions = {}): Promise<RelayResult> {
    if (options === null || typeof options !== 'object')
      throw new TunError('ERR_TUN_INVALID_ARGUMENT', 'relay options must be an object')
    for (const k of Object.keys(options))
      if (k !== 'idleMs' && k !== 'native')
        throw new TunError('ERR_TUN_INVALID_ARGUMENT', `unknown relay option '${k}'`)
    const idleMs = options.idleMs
    if (idleMs !== undefined && (!Number.isInteger(idleMs) || idleMs < 1 || idleMs > 86_400_000))
      throw new TunError('ERR_TUN_INVALID_ARGUMENT', 'idleMs must be an integer in 1..86400000')
    if (!(conn instanceof net.Socket) || !(up instanceof net.Socket))
      throw new TunError('ERR_TUN_INVALID_ARGUMENT', 'relay takes two net.Socket instances')
    if (this.#isClosed()) throw new TunError('ERR_TUN_CLOSED', 'the stack is closed')
    if (up.connecting) {
      await new Promise<void>((resolve) => {
        const done = () => {
          up.off('connect', done)
          up.off('close', done)
          up.off('error', done)
          resolve()
        }
        up.once('connect', done)
        up.once('close', done)
        up.once('error', done)
      })
    }
    if (options.native === false || socketFd(conn) < 0 || socketFd(up) < 0) return relayJs(conn, up, idleMs)
    return this.#native(conn as SocketInternals, up as SocketInternals, idleMs)
  }

  async #native(conn: SocketInternals, up: SocketInternals, idleMs: number | undefined): Promise<RelayResult> {
    const sockets = [conn, up] as const
    // Stop JavaScript reading: no more reads by libuv (and none started again by a read() below), then pass on
    // what the readable sides already hold.
    const saved = sockets.map((s) => ({ own: Object.hasOwn(s, '_read'), read: s._read, destroy: s._destroy }))
    const restore = () =>
      sockets.forEach((s, i) => {
        if (saved[i]!.own) s._read = saved[i]!.read
        else delete (s as Partial<SocketInternals>)._read
        s._destroy = saved[i]!.destroy
      })
    const pre: [number, number] = [0, 0]
    for (const s of sockets) {
      s.pause()
      s._read = () => {}
      const h = s._handle
      if (h?.reading && h.readStop) {
        h.reading = false
        h.readStop()
      }
    }
    for (const [i, from, to] of [
      [0, conn, up],
      [1, up, conn],
    ] as const) {
      for (let chunk: Buffer | string | null; (chunk = from.read() as Buffer | string | null) !== null;) {
        to.write(chunk)
        pre[i] += typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length
      }
    }
    // Everything written must be in the kernel before the relay writes after it.
    for (const s of sockets) {
      while (s.writableLength > 0 && !s.destroyed) {
        await new Promise<void>((resolve) => {
          const done = () => {
            s.off('drain', done)
            s.off('close', done)
            resolve()
          }
          s.once('drain', done)
          s.once('close', done)
        })
      }
    }
    const fds = sockets.map(socketFd)
    if (this.#isClosed() || fds[0]! < 0 || fds[1]! < 0) {
      // Closed or destroyed meanwhile: what is left ends as JavaScript would.
      restore()
      return relayJs(conn, up, idleMs, pre)
    }
    let id: number
    try {
      this.#relay ??= native(() => binding.relayCreate(() => this.#drain(), MAX_RELAYS))
      id = native(() =>
        binding.relayAdd(this.#relay!, fds[0]!, fds[1]!, {
          idleMs,
          aWriteClosed: conn.writableEnded,
          bWriteClosed: up.writableEnded,
        }),
      )
    } catch (e) {
      restore()
      throw e
    }
    if (this.#relays.size === 0) binding.relaySetRef(this.#relay, true)
    return new Promise<RelayResult>((resolve) => {
      const entry: NativeRelay = {
        conn,
        up,
        pre,
        finish: (sent, received, reason, error) => {
          if (!this.#relays.delete(id)) return
          if (this.#relays.size === 0 && !this.#isClosed()) binding.relaySetRef(this.#relay!, false)
          restore()
          const result: RelayResult = { sent: pre[0] + sent, received: pre[1] + received, reason, native: true }
          if (error) result.error = error
          void destroyBoth(conn, up, reason === 'reset').then(() => resolve(result))
        },
      }
      this.#relays.set(id, entry)
      // Destroying a socket ends its relay first (synchronously), so that the destroy takes effect at once.
      const relay = this.#relay!
      const cancel = (s: SocketInternals, err: Error | null) => {
        const counts = binding.relayCancel(relay, id)
        if (counts)
          entry.finish(counts[0], counts[1], err ? 'error' : s.resetAndClosing ? 'reset' : 'closed', err ?? undefined)
      }
      for (const s of sockets) {
        const destroy = s._destroy
        s._destroy = function (this: SocketInternals, err, cb) {
          cancel(this, err)
          return destroy.call(this, err, cb)
        }
      }
    })
  }

  /** Settles the relays that ended natively. */
  #drain(): void {
    if (!this.#relay) return
    const ended = binding.relayTake(this.#relay)
    if (!ended) return
    for (let i = 0; i < ended.length; i += 5) {
      const r = this.#relays.get(ended[i] as number)
      if (!r) continue
      const reason = ended[i + 3] as string
      const errno = ended[i + 4] as number
      const error =
        reason === 'error' ? new TunError('ERR_TUN_OS', `relay ended by an error (errno ${errno})`) : undefined
      r.finish(
        ended[i + 1] as number,
        ended[i + 2] as number,
        reason === 'cancelled' ? 'closed' : (reason as RelayResult['reason']),
        error,
      )
    }
  }

  /** Stops the relay thread; pairs still in flight end now. */
  close(): void {
    if (!this.#relay) return
    binding.relayClose(this.#relay)
    this.#drain()
  }
}

/** Destroys both sockets (resetting them for a reset) and resolves when both have closed. */
function destroyBoth(a: net.Socket, b: net.Socket, reset: boolean): Promise<void> {
  const closed = (s: net.Socket) =>
    s.closed ? Promise.resolve() : new Promise<void>((r) => s.once('close', () => r()))
  for (const s of [a, b]) {
    s.on('error', () => {})
    if (reset && !s.destroyed && !s.connecting) s.resetAndDestroy()
    else s.destroy()
  }
  return Promise.all([closed(a), closed(b)]).then(() => {})
}

/**
 * The relay in JavaScript: `pipeline(conn, up, conn)`, counting what each socket wrote from the call on (plus
 * `pre`, bytes passed on before), with the same idle timeout, reset propagation and result as the native path.
 */
function relayJs(
  conn: net.Socket,
  up: net.Socket,
  idleMs: number | undefined,
  pre: [number, number] = [0, 0],
): Promise<RelayResult> {
  const base = [up.bytesWritten, conn.bytesWritten]
  return new Promise<RelayResult>((resolve) => {
    let reason: RelayResult['reason'] | undefined
    let error: Error | undefined
    let timer: NodeJS.Timeout | undefined
    let last = Date.now()
    const end = (why: RelayResult['reason'], e?: Error) => {
      if (reason) return
      reason = why
      error = e
      if (timer) clearTimeout(timer)
      void destroyBoth(conn, up, why === 'reset').then(() =>
        resolve({
          sent: pre[0] + up.bytesWritten - base[0]!,
          received: pre[1] + conn.bytesWritten - base[1]!,
          reason: why,
          native: false,
          ...(error && why === 'error' ? { error } : {}),
        }),
      )
    }
    // Before pipeline's own listeners: a reset is passed on as a reset, not as the plain close pipeline makes.
    const onError = (e: Error) => end(resetCode(e) ? 'reset' : 'error', e)
    conn.on('error', onError)
    up.on('error', onError)
    pipeline(conn, up, conn, (e) => {
      if (e) onError(e)
      else end('closed')
    })
    if (idleMs !== undefined) {
      const touch = () => (last = Date.now())
      conn.on('data', touch)
      up.on('data', touch)
      const check = () => {
        const left = last + idleMs - Date.now()
        if (left <= 0) end('idle')
        else timer = setTimeout(check, left)
      }
      timer = setTimeout(check, idleMs)
    }
  })
}
