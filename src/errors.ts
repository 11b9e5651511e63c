/**
 * Every stable error code tunkit throws, as `err.code`.
 *
 * | code | meaning |
 * |---|---|
 * | `ERR_TUN_INVALID_NAME` | interface name empty, over 15 bytes, or with `/`, `:`, whitespace or a misused `%` |
 * | `ERR_TUN_INVALID_ADDRESS` | an address, prefix, peer, gateway or MAC that does not parse or fit |
 * | `ERR_TUN_EXISTS` | the address or route is already there (also a name given twice) |
 * | `ERR_TUN_NOT_FOUND` | the address, route or device to act on is not there |
 * | `ERR_TUN_INVALID_MTU` | MTU out of range (68..65535, at least 1280 with IPv6) or refused by the kernel |
 * | `ERR_TUN_INVALID_ARGUMENT` | an option of the wrong type or out of range |
 * | `ERR_TUN_INVALID_PACKET` | an empty packet, a non-IP packet on a TUN device, a frame shorter than Ethernet's header on TAP |
 * | `ERR_TUN_PACKET_TOO_LARGE` | a packet larger than the device's MTU (plus 18 bytes of Ethernet/VLAN header on TAP) |
 * | `ERR_TUN_NO_DRIVER` | no `/dev/net/tun` (or wintun / utun on other systems) |
 * | `ERR_TUN_PERMISSION` | missing privilege (`CAP_NET_ADMIN` on Linux) |
 * | `ERR_TUN_BUSY` | the name belongs to another device, or a queue is already in use |
 * | `ERR_TUN_CLOSED` | the device was closed |
 * | `ERR_TUN_GONE` | the device went away under an open queue (`ip link del`, its namespace removed): reads and writes end with it |
 * | `ERR_TUN_QUEUE_FULL` | a write found more than twice `txRingBytes` already waiting (writes not awaited); nothing of it was taken |
 * | `ERR_TUN_CONCURRENT_READ` | a second reader on the same queue while one is waiting |
 * | `ERR_TUN_UNREACHABLE` | a route's gateway is unreachable |
 * | `ERR_TUN_UNSUPPORTED` | not available on this platform or kernel |
 * | `ERR_TUN_OS` | any other OS error (see `errno`/`syscall`) |
 * | `ERR_TUN_NO_BINDING` | no native binary for this platform |
 * | `ERR_TUN_INTERNAL` | a bug in tunkit (a panic in one of its threads); the queue it hit is ended, the process goes on |
 * | `ERR_TUN_UPSTREAM` | a proxy upstream (SOCKS5, HTTP CONNECT) refused or failed a request; the message says which and why |
 * | `ERR_TUN_TIMEOUT` | an operation with a deadline (an upstream connect, a DNS query) did not finish in time |
 */
export type TunErrorCode =
  | 'ERR_TUN_INVALID_NAME'
  | 'ERR_TUN_INVALID_ADDRESS'
  | 'ERR_TUN_EXISTS'
  | 'ERR_TUN_NOT_FOUND'
  | 'ERR_TUN_INVALID_MTU'
  | 'ERR_TUN_INVALID_ARGUMENT'
  | 'ERR_TUN_INVALID_PACKET'
  | 'ERR_TUN_PACKET_TOO_LARGE'
  | 'ERR_TUN_NO_DRIVER'
  | 'ERR_TUN_PERMISSION'
  | 'ERR_TUN_BUSY'
  | 'ERR_TUN_CLOSED'
  | 'ERR_TUN_GONE'
  | 'ERR_TUN_QUEUE_FULL'
  | 'ERR_TUN_CONCURRENT_READ'
  | 'ERR_TUN_UNREACHABLE'
  | 'ERR_TUN_UNSUPPORTED'
  | 'ERR_TUN_OS'
  | 'ERR_TUN_NO_BINDING'
  | 'ERR_TUN_INTERNAL'
  | 'ERR_TUN_UPSTREAM'
  | 'ERR_TUN_TIMEOUT'

/**
 * The error class of tunkit. `code` is stable and meant for programs; `message` names the operation and the device;
 * `errno` (a positive OS error number) and `syscall` are set when the OS refused.
 *
 * @example
 * ```ts
 * try { await Tun.create({ name: 'bad/name' }) }
 * catch (e) { if (e instanceof TunError && e.code === 'ERR_TUN_INVALID_NAME') console.error(e.message) }
 * ```
 */
export class TunError extends Error {
  /** Stable machine-readable code. */
  readonly code: TunErrorCode
  /** OS error number, when the OS refused the operation. */
  readonly errno?: number
  /** The syscall that failed, when there is one. */
  readonly syscall?: string

  constructor(code: TunErrorCode, message: string, opts: { errno?: number; syscall?: string; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause })
    this.name = 'TunError'
    this.code = code
    if (opts.errno !== undefined) this.errno = opts.errno
    if (opts.syscall !== undefined) this.syscall = opts.syscall
  }

  /** Turns an error thrown by the native binding (a plain `Error` with `code`) into a `TunError`; others pass. */
  static from(e: unknown): unknown {
    if (e instanceof TunError) return e
    if (e instanceof Error && typeof (e as { code?: unknown }).code === 'string') {
      const x = e as Error & { code: string; errno?: number; syscall?: string }
      if (x.code.startsWith('ERR_TUN_')) {
        const t = new TunError(x.code as TunErrorCode, x.message, { errno: x.errno, syscall: x.syscall })
        if (x.stack) t.stack = `TunError [${x.code}]: ${x.message}\n${x.stack.split('\n').slice(1).join('\n')}`
        return t
      }
    }
    return e
  }
}

/** Calls a native function and rethrows its errors as `TunError`. */
export function native<T>(f: () => T): T {
  try {
    return f()
  } catch (e) {
    throw TunError.from(e)
  }
}

/** The error an aborted iteration throws, shaped like Node's own (`name` 'AbortError', `code` 'ABORT_ERR'). */
export function abortError(signal: AbortSignal): Error {
  const e = new Error('The operation was aborted', { cause: signal.reason }) as Error & { code: string }
  e.name = 'AbortError'
  e.code = 'ABORT_ERR'
  return e
}
