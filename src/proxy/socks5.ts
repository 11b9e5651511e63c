/**
 * SOCKS5 upstream client (RFC 1928, with RFC 1929 username/password authentication): `CONNECT` for TCP and
 * `UDP ASSOCIATE` for UDP, plus the pure encoders and decoders of the UDP relay header. Node built-ins only.
 *
 * `socks5Connect` resolves with a plain `net.Socket` positioned right after the proxy's reply (bytes the proxy sent
 * after it are put back with `unshift`), so the socket can be handed to the splice(2) relay as it is.
 */
import dgram from 'node:dgram'
import { lookup } from 'node:dns/promises'
import { EventEmitter } from 'node:events'
import net from 'node:net'
import { TunError } from '../errors.js'

/** A SOCKS5 proxy server. Credentials, when given, are offered with RFC 1929 username/password authentication. */
export interface Socks5Server {
  /** The proxy's address or host name (resolved locally, by `net.connect`). */
  host: string
  /** The proxy's TCP port, 1..65535. */
  port: number
  /** RFC 1929 user name, 1..255 bytes (UTF-8). With it, the greeting offers method 0x02 as well as 0x00. */
  username?: string
  /** RFC 1929 password, 0..255 bytes (UTF-8); `''` when a username is given without one. */
  password?: string
}

/**
 * Where to connect through a proxy. `host` is an IPv4 literal, an IPv6 literal (brackets allowed, a `%zone` is
 * dropped) or a domain name; a name is sent to the proxy as a name (SOCKS5 ATYP 3) and never resolved locally.
 * Names are ASCII letters, digits, `-`, `_` and `.`, 1..255 bytes (convert an IDN with `url.domainToASCII` first).
 */
export type Target = { host: string; port: number }

/** Options of {@link socks5Connect}, {@link socks5UdpAssociate} and `httpConnect`. */
export interface UpstreamOptions {
  /** Aborting rejects with `signal.reason` and destroys the socket. Only the handshake is covered. */
  signal?: AbortSignal
  /** Deadline of the whole exchange (TCP connect, authentication, request, reply) in ms. Default 10 000. */
  timeoutMs?: number
  /**
   * An already connecting (or connected) socket to the proxy to use instead of dialling `server.host` yourself
   * (for example one made with a `localAddress`, or a `setKeepAlive`); on failure it is destroyed.
   */
  socket?: net.Socket
}

/**
 * Where an upstream exchange stood when it failed:
 * - `'connect'`: the proxy itself could not be reached (TCP connect to it failed or timed out) — "proxy unreachable";
 * - `'greeting'`, `'auth'`: method negotiation or authentication with the proxy failed;
 * - `'request'`: the proxy answered the request with a failure (then `reply` is set) — "refused or unreachable by
 *   the proxy" — or broke the protocol while answering it.
 */
export type UpstreamPhase = 'connect' | 'greeting' | 'auth' | 'request'

/**
 * The error of an upstream exchange, a {@link TunError} with `code` `ERR_TUN_UPSTREAM` (failed) or `ERR_TUN_TIMEOUT`
 * (deadline passed). The message names the proxy and the target and says why, e.g.
 * `SOCKS5 proxy 127.0.0.1:1080 could not reach 10.0.0.1:80: connection refused (5)`.
 *
 * To tell the two common cases apart: `phase === 'connect'` means the proxy was unreachable (`cause` holds the connect
 * error); `reply !== undefined` means the proxy was reached and refused or could not reach the target (`reply` is the
 * SOCKS5 REP code, or the HTTP status for HTTP CONNECT).
 */
export class UpstreamError extends TunError {
  /** Which protocol: `'socks5'` or `'http'`. */
  readonly protocol: 'socks5' | 'http'
  /** The proxy, as `host:port`. */
  readonly proxy: string
  /** The target, as `host:port` (IPv6 bracketed); `'UDP ASSOCIATE'` for an association. */
  readonly target: string
  /** Where the exchange stood, see {@link UpstreamPhase}. */
  readonly phase: UpstreamPhase
  /** The SOCKS5 reply code (REP, 1..255) or HTTP status the proxy answered with, when it answered with a failure. */
  readonly reply?: number

  constructor(
    code: 'ERR_TUN_UPSTREAM' | 'ERR_TUN_TIMEOUT',
    message: string,
    info: { protocol: 'socks5' | 'http'; proxy: string; target: string; phase: UpstreamPhase; reply?: number },
    cause?: unknown,
  ) {
    super(code, message, { cause })
    this.protocol = info.protocol
    this.proxy = info.proxy
    this.target = info.target
    this.phase = info.phase
    if (info.reply !== undefined) this.reply = info.reply
  }
}

/** SOCKS5 reply codes (RFC 1928 section 6) in words. */
const REPLY_TEXT: Record<number, string> = {
  1: 'general SOCKS server failure',
  2: 'connection not allowed by ruleset',
  3: 'network unreachable',
  4: 'host unreachable',
  5: 'connection refused',
  6: 'TTL expired',
  7: 'command not supported',
  8: 'address type not supported',
}

/** A SOCKS5 reply code in words, with the number: `'connection refused (5)'`. */
export function socks5ReplyText(rep: number): string {
  return `${REPLY_TEXT[rep] ?? 'unassigned reply code'} (${rep})`
}

const DEFAULT_TIMEOUT_MS = 10_000
/** Most bytes a handshake keeps unparsed (one socket read is at most 64 KiB; a handshake message a few hundred). */
const MAX_HANDSHAKE_BYTES = 64 * 1024 + 1024
const EMPTY = Buffer.alloc(0)

const invalid = (message: string) => new TunError('ERR_TUN_INVALID_ARGUMENT', message)

// ---------------------------------------------------------------------------------------------------------------
// Addresses

/** The 4 bytes of a dotted-quad IPv4 literal, or undefined. */
function ipv4Bytes(s: string): Buffer | undefined {
  if (!net.isIPv4(s)) return undefined
  return Buffer.from(s.split('.').map((x) => Number(x)))
}

/** The 16 bytes of an IPv6 literal (a `%zone` is ignored), or undefined. */
function ipv6Bytes(input: string): Buffer | undefined {
  if (!net.isIPv6(input)) return undefined
  let s = input
  const zone = s.indexOf('%')
  if (zone >= 0) s = s.slice(0, zone)
  if (s.includes('.')) {
    const cut = s.lastIndexOf(':')
    const v4 = ipv4Bytes(s.slice(cut + 1))
    if (!v4) return undefined
    s = `${s.slice(0, cut + 1)}${((v4[0]! << 8) | v4[1]!).toString(16)}:${((v4[2]! << 8) | v4[3]!).toString(16)}`
  }
  const halves = s.split('::')
  if (halves.length > 2) return undefined
  const head = halves[0] ? halves[0].split(':') : []
  const tail = halves.length === 2 && halves[1] ? halves[1].split(':') : []
  if (halves.length === 1 ? head.length !== 8 : head.length + tail.length > 7) return undefined
  const groups = [...head, ...Array<string>(8 - head.length - tail.length).fill('0'), ...tail]
  const out = Buffer.alloc(16)
  for (let i = 0; i < 8; i++) {
    const g = groups[i]!
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined
    out.writeUInt16BE(parseInt(g, 16), i * 2)
  }
  return out
}

/** An IPv6 address in RFC 5952 form (lower case, longest zero run as `::`, `::ffff:a.b.c.d` for mapped IPv4). */
function formatIPv6(b: Buffer): string {
  if (b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff) {
    return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`
  }
  const g: number[] = []
  for (let i = 0; i < 8; i++) g.push(b.readUInt16BE(i * 2))
  let best = -1
  let bestLen = 0
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) {
      i++
      continue
    }
    let j = i
    while (j < 8 && g[j] === 0) j++
    if (j - i > bestLen) {
      best = i
      bestLen = j - i
    }
    i = j
  }
  const hex = (xs: number[]) => xs.map((x) => x.toString(16)).join(':')
  if (bestLen < 2) return hex(g)
  return `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`
}

/** The bytes of an IP literal (4 or 16), or undefined for anything else. */
function ipBytes(s: string): Buffer | undefined {
  return ipv4Bytes(s) ?? ipv6Bytes(s.startsWith('[') && s.endsWith(']') ? s.slice(1, -1) : s)
}

/** A checked target: its SOCKS5 ATYP, the ADDR bytes as sent (a name with its length byte) and a printable form. */
interface CheckedTarget {
  atyp: 1 | 3 | 4
  addr: Buffer
  host: string
  port: number
  /** `host:port`, IPv6 bracketed. */
  label: string
}

const NAME = /^[A-Za-z0-9_.-]+$/

/** `host:port`, with an IPv6 literal bracketed. */
export function hostPort(host: string, port: number): string {
  return net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`
}

function checkPort(port: unknown, what: string, allowZero = false): number {
  if (typeof port !== 'number' || !Number.isInteger(port) || port < (allowZero ? 0 : 1) || port > 65535) {
    throw invalid(`${what}: port must be an integer ${allowZero ? 0 : 1}..65535, got ${String(port)}`)
  }
  return port
}

/**
 * Validates a target (`what` names it in errors) and encodes its address. Throws `ERR_TUN_INVALID_ARGUMENT`.
 * @internal shared with the HTTP CONNECT client.
 */
export function checkTarget(t: Target, what = 'target'): CheckedTarget {
  if (typeof t !== 'object' || t === null) throw invalid(`${what} must be an object { host, port }`)
  const port = checkPort(t.port, what)
  if (typeof t.host !== 'string' || t.host.length === 0) throw invalid(`${what}: host must be a non-empty string`)
  let host = t.host
  if (host.startsWith('[') && host.endsWith(']') && net.isIPv6(host.slice(1, -1))) host = host.slice(1, -1)
  const v4 = ipv4Bytes(host)
  if (v4) return { atyp: 1, addr: v4, host, port, label: `${host}:${port}` }
  const v6 = ipv6Bytes(host)
  if (v6) {
    const h = host.split('%')[0]!
    return { atyp: 4, addr: v6, host: h, port, label: `[${h}]:${port}` }
  }
  if (host.length > 255) throw invalid(`${what}: host name longer than 255 bytes (${host.length})`)
  if (!NAME.test(host)) {
    throw invalid(
      `${what}: host ${JSON.stringify(host.slice(0, 64))} is neither an IP literal nor a name of ASCII letters, ` +
        `digits, '-', '_' and '.' (convert an IDN with url.domainToASCII)`,
    )
  }
  const addr = Buffer.alloc(1 + host.length)
  addr[0] = host.length
  addr.write(host, 1, 'latin1')
  return { atyp: 3, addr, host, port, label: `${host}:${port}` }
}

/** Validates a proxy server's host and port (credentials are checked by each protocol). */
function checkServer(server: { host: string; port: number }, what: string): string {
  if (typeof server !== 'object' || server === null) throw invalid(`${what} must be an object { host, port }`)
  if (typeof server.host !== 'string' || server.host.length === 0) {
    throw invalid(`${what}: host must be a non-empty string`)
  }
  checkPort(server.port, what)
  return hostPort(server.host, server.port)
}

function checkTimeout(ms: unknown): number {
  if (ms === undefined) return DEFAULT_TIMEOUT_MS
  if (typeof ms !== 'number' || !(ms > 0) || ms > 2_147_483_647) {
    throw invalid(`timeoutMs must be a positive number of milliseconds up to 2^31-1, got ${String(ms)}`)
  }
  return ms
}

// ---------------------------------------------------------------------------------------------------------------
// UDP header (RFC 1928 section 7)

/** The largest address part of a SOCKS5 header: ATYP, a 255-byte name with its length, the port. */
const MAX_UDP_HEADER = 4 + 1 + 255 + 2

/**
 * The SOCKS5 UDP request header for a datagram to `to`: RSV(2) = 0, FRAG = 0, ATYP, DST.ADDR, DST.PORT. Send it
 * followed by the payload. Throws `ERR_TUN_INVALID_ARGUMENT` for an invalid target.
 *
 * @example
 * ```ts
 * const header = encodeUdpHeader({ host: '10.0.0.1', port: 53 }) // 00 00 00 01 0a 00 00 01 00 35
 * ```
 */
export function encodeUdpHeader(to: Target): Buffer {
  const t = checkTarget(to, 'UDP destination')
  return udpHeader(t)
}

function udpHeader(t: CheckedTarget): Buffer {
  const h = Buffer.alloc(4 + t.addr.length + 2)
  h[3] = t.atyp
  t.addr.copy(h, 4)
  h.writeUInt16BE(t.port, 4 + t.addr.length)
  return h
}

/** A datagram from a SOCKS5 UDP relay, decoded by {@link decodeUdpDatagram}. */
export interface Socks5Datagram {
  /** Where the datagram came from (an IP literal, or a name when the relay sent ATYP 3). */
  from: Target
  /** The payload: a view into the input buffer, not a copy. */
  data: Buffer
  /** The FRAG field; anything but 0 is a fragment, which this client does not reassemble. */
  frag: number
}

/**
 * Decodes a datagram from a SOCKS5 UDP relay: header (RSV ignored, FRAG, ATYP, ADDR, PORT) and payload. Throws
 * `TunError` `ERR_TUN_INVALID_PACKET` when the header is truncated, the ATYP is unknown or a name is empty; never
 * throws anything else.
 */
export function decodeUdpDatagram(buf: Uint8Array): Socks5Datagram {
  const b = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength)
  const bad = (why: string) => new TunError('ERR_TUN_INVALID_PACKET', `SOCKS5 UDP datagram: ${why}`)
  if (b.length < 4) throw bad(`${b.length} bytes, shorter than the 4-byte header start`)
  const frag = b[2]!
  const atyp = b[3]!
  let host: string
  let off: number
  if (atyp === 1) {
    if (b.length < 10) throw bad(`${b.length} bytes, too short for an IPv4 header (10)`)
    host = `${b[4]}.${b[5]}.${b[6]}.${b[7]}`
    off = 8
  } else if (atyp === 4) {
    if (b.length < 22) throw bad(`${b.length} bytes, too short for an IPv6 header (22)`)
    host = formatIPv6(b.subarray(4, 20))
    off = 20
  } else if (atyp === 3) {
    const len = b.length > 4 ? b[4]! : -1
    if (len < 0) throw bad('truncated before the name length')
    if (len === 0) throw bad('empty name')
    if (b.length < 5 + len + 2) throw bad(`${b.length} bytes, too short for a ${len}-byte name header`)
    host = b.toString('latin1', 5, 5 + len)
    off = 5 + len
  } else {
    throw bad(`unknown address type ${atyp}`)
  }
  const port = b.readUInt16BE(off)
  return { from: { host, port }, data: b.subarray(off + 2), frag }
}

// ---------------------------------------------------------------------------------------------------------------
// The handshake driver, shared by SOCKS5 and HTTP CONNECT

/**
 * One protocol's handshake as a synchronous state machine: `start` writes the first message once connected;
 * `feed` gets every byte not yet consumed and returns how many it consumed (0: needs more), writing the next message
 * itself; it throws an {@link UpstreamError} to fail. `done` turns true after the last message; the bytes after it
 * are given back to the socket. Being synchronous, the last message and what follows it are split within the same
 * `'data'` event, so nothing can be lost or reordered.
 * @internal
 */
export interface Handshake {
  readonly phase: UpstreamPhase
  readonly done: boolean
  start(socket: net.Socket): void
  feed(buf: Buffer, socket: net.Socket): number
  /** The error for an end of stream with `rest` unparsed (a proxy that closes after a failure reply, say). */
  eof?(rest: Buffer): Error | undefined
  /** Releases what the handshake holds when it fails (a bound dgram socket). */
  dispose?(): void
}

/** What {@link dialUpstream} needs to name the exchange in errors. @internal */
export interface DialInfo {
  protocol: 'socks5' | 'http'
  /** `host:port` of the proxy. */
  proxy: string
  /** What is requested, for messages: the target's `host:port`. */
  target: string
}

/**
 * Connects to a proxy (or takes `opts.socket`), runs `makeHandshake`'s state machine over it under one deadline and
 * the abort signal, and resolves with the socket paused, listeners removed and unconsumed bytes unshifted.
 * @internal shared with the HTTP CONNECT client.
 */
export function dialUpstream<H extends Handshake>(
  server: { host: string; port: number },
  info: DialInfo,
  opts: UpstreamOptions,
  makeHandshake: (socket: net.Socket) => H | Promise<H>,
): Promise<{ socket: net.Socket; handshake: H }> {
  const timeoutMs = checkTimeout(opts.timeoutMs)
  const signal = opts.signal
  if (opts.socket !== undefined && !(opts.socket instanceof net.Socket))
    throw invalid('opts.socket must be a net.Socket')
  if (signal?.aborted) {
    opts.socket?.destroy()
    return Promise.reject(signal.reason)
  }
  if (opts.socket && !opts.socket.destroyed && !opts.socket.connecting && opts.socket.pending) {
    throw invalid('opts.socket must be connecting or connected (call socket.connect first)')
  }
  const name = info.protocol === 'socks5' ? 'SOCKS5' : 'HTTP'
  const errInfo = (phase: UpstreamPhase, reply?: number) => ({ ...info, phase, reply })

  return new Promise((resolve, reject) => {
    let settled = false
    let connected = false
    let hs: H | undefined
    let pending: Buffer = EMPTY
    const socket = opts.socket ?? net.connect({ host: server.host, port: server.port })
    const phase = (): UpstreamPhase => (hs ? hs.phase : connected ? 'greeting' : 'connect')

    const timer = setTimeout(() => {
      const p = phase()
      const what = p === 'connect' ? 'could not be connected to' : `did not answer (${p})`
      fail(
        new UpstreamError(
          'ERR_TUN_TIMEOUT',
          `${name} proxy ${info.proxy} ${what} within ${timeoutMs} ms, for ${info.target}`,
          errInfo(p),
        ),
      )
    }, timeoutMs)
    const onAbort = () => fail(signal?.reason)
    signal?.addEventListener('abort', onAbort, { once: true })

    const cleanup = () => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
      socket.off('connect', onConnect)
      socket.off('data', onData)
      socket.off('error', onError)
      socket.off('end', onEnd)
      socket.off('close', onClose)
    }
    function fail(err: unknown) {
      if (settled) return
      settled = true
      cleanup()
      socket.destroy()
      hs?.dispose?.()
      reject(err)
    }
    function lost(why: string, cause?: unknown) {
      const p = phase()
      if (p === 'connect') {
        fail(
          new UpstreamError(
            'ERR_TUN_UPSTREAM',
            `${name} proxy ${info.proxy} unreachable (${why}), for ${info.target}`,
            errInfo(p),
            cause,
          ),
        )
      } else {
        fail(
          new UpstreamError(
            'ERR_TUN_UPSTREAM',
            `${name} proxy ${info.proxy} ${why} during the ${p} phase, for ${info.target}`,
            errInfo(p),
            cause,
          ),
        )
      }
    }
    function onError(err: Error) {
      lost(phase() === 'connect' ? err.message : `connection failed: ${err.message}`, err)
    }
    function onEnd() {
      const e = hs?.eof?.(pending)
      if (e) fail(e)
      else lost('closed the connection')
    }
    function onClose() {
      lost('connection closed')
    }
    function onData(chunk: Buffer) {
      if (settled || !hs) return
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk])
      try {
        while (!hs.done && pending.length > 0) {
          const n = hs.feed(pending, socket)
          if (n === 0) break
          pending = pending.subarray(n)
        }
      } catch (e) {
        fail(e)
        return
      }
      if (hs.done) {
        settled = true
        cleanup()
        socket.pause()
        if (pending.length > 0) socket.unshift(pending)
        pending = EMPTY
        resolve({ socket, handshake: hs })
      } else if (pending.length > MAX_HANDSHAKE_BYTES) {
        fail(
          new UpstreamError(
            'ERR_TUN_UPSTREAM',
            `${name} proxy ${info.proxy} sent more than ${MAX_HANDSHAKE_BYTES} bytes without completing the ` +
              `${hs.phase} phase, for ${info.target}`,
            errInfo(hs.phase),
          ),
        )
      }
    }
    function onConnect() {
      if (settled) return
      connected = true
      Promise.resolve()
        .then(() => makeHandshake(socket))
        .then(
          (h) => {
            if (settled) {
              h.dispose?.()
              return
            }
            hs = h
            socket.on('data', onData)
            h.start(socket)
          },
          (e: unknown) => fail(e),
        )
    }

    socket.on('error', onError)
    socket.on('end', onEnd)
    socket.on('close', onClose)
    if (socket.destroyed) lost('the given socket is destroyed')
    else if (socket.connecting) socket.once('connect', onConnect)
    else onConnect()
  })
}

// ---------------------------------------------------------------------------------------------------------------
// SOCKS5

const CMD_CONNECT = 1
const CMD_UDP_ASSOCIATE = 3

/** The credentials of a server, checked, as bytes; undefined without a username. */
function socksCredentials(server: Socks5Server): { user: Buffer; pass: Buffer } | undefined {
  if (server.username === undefined) {
    if (server.password !== undefined) throw invalid('SOCKS5 server: password given without a username')
    return undefined
  }
  if (typeof server.username !== 'string') throw invalid('SOCKS5 server: username must be a string')
  if (server.password !== undefined && typeof server.password !== 'string') {
    throw invalid('SOCKS5 server: password must be a string')
  }
  const user = Buffer.from(server.username, 'utf8')
  const pass = Buffer.from(server.password ?? '', 'utf8')
  if (user.length < 1 || user.length > 255)
    throw invalid(`SOCKS5 server: username must be 1..255 bytes (${user.length})`)
  if (pass.length > 255) throw invalid(`SOCKS5 server: password must be at most 255 bytes (${pass.length})`)
  return { user, pass }
}

/** The address a SOCKS5 reply carries (BND.ADDR, BND.PORT). */
interface BoundAddress {
  atyp: 1 | 3 | 4
  host: string
  port: number
}

/**
 * Parses the address part of a SOCKS5 reply starting at `off` (ATYP at `off`); returns it and its end, or undefined
 * when more bytes are needed. Throws (via `bad`) on an unknown ATYP.
 */
function parseAddress(
  b: Buffer,
  off: number,
  bad: (why: string) => Error,
): { addr: BoundAddress; end: number } | undefined {
  if (b.length <= off) return undefined
  const atyp = b[off]!
  if (atyp === 1) {
    if (b.length < off + 7) return undefined
    const host = `${b[off + 1]}.${b[off + 2]}.${b[off + 3]}.${b[off + 4]}`
    return { addr: { atyp, host, port: b.readUInt16BE(off + 5) }, end: off + 7 }
  }
  if (atyp === 4) {
    if (b.length < off + 19) return undefined
    const host = formatIPv6(b.subarray(off + 1, off + 17))
    return { addr: { atyp, host, port: b.readUInt16BE(off + 17) }, end: off + 19 }
  }
  if (atyp === 3) {
    if (b.length < off + 2) return undefined
    const len = b[off + 1]!
    if (b.length < off + 2 + len + 2) return undefined
    const host = b.toString('latin1', off + 2, off + 2 + len)
    return { addr: { atyp, host, port: b.readUInt16BE(off + 2 + len) }, end: off + 2 + len + 2 }
  }
  throw bad(`unknown address type ${atyp} in the reply`)
}

/** The SOCKS5 state machine: greeting, optional RFC 1929 authentication, one request and its reply. */
class Socks5Handshake implements Handshake {
  phase: UpstreamPhase = 'greeting'
  done = false
  /** The reply's BND address, once done. */
  bound: BoundAddress | undefined

  constructor(
    private readonly info: DialInfo,
    private readonly creds: { user: Buffer; pass: Buffer } | undefined,
    private readonly request: Buffer,
    private readonly what: string,
    private readonly disposer?: () => void,
  ) {}

  /** An error naming the proxy and the target (`why` names the target itself when it says `this.what`). */
  private fail(why: string, reply?: number): UpstreamError {
    const tail = reply === undefined ? `, for ${this.info.target}` : ''
    return new UpstreamError('ERR_TUN_UPSTREAM', `SOCKS5 proxy ${this.info.proxy} ${why}${tail}`, {
      ...this.info,
      phase: this.phase,
      reply,
    })
  }

  start(socket: net.Socket): void {
    socket.write(this.creds ? Buffer.from([5, 2, 0x00, 0x02]) : Buffer.from([5, 1, 0x00]))
  }

  feed(b: Buffer, socket: net.Socket): number {
    if (this.phase === 'greeting') {
      if (b.length < 2) return 0
      if (b[0] !== 5) throw this.fail(`is not a SOCKS5 server (version byte ${b[0]} in the method selection)`)
      const method = b[1]!
      if (method === 0xff) {
        throw this.fail(
          this.creds
            ? 'accepts none of the offered authentication methods (none, username/password)'
            : 'requires authentication (no acceptable methods; give username and password)',
        )
      }
      if (method === 0x02 && this.creds) {
        this.phase = 'auth'
        const { user, pass } = this.creds
        socket.write(Buffer.concat([Buffer.from([1, user.length]), user, Buffer.from([pass.length]), pass]))
      } else if (method === 0x00) {
        this.phase = 'request'
        socket.write(this.request)
      } else {
        throw this.fail(`selected authentication method ${method}, which was not offered`)
      }
      return 2
    }
    if (this.phase === 'auth') {
      if (b.length < 2) return 0
      // RFC 1929 says VER 1; some servers answer 5. Any non-zero STATUS is a failure.
      if (b[0] !== 1 && b[0] !== 5) throw this.fail(`sent an invalid authentication reply (version ${b[0]})`)
      if (b[1] !== 0) throw this.fail(`rejected the username/password (status ${b[1]})`)
      this.phase = 'request'
      socket.write(this.request)
      return 2
    }
    // request: VER REP RSV ATYP BND.ADDR BND.PORT
    if (b.length < 2) return 0
    if (b[0] !== 5) throw this.fail(`sent an invalid reply (version byte ${b[0]})`)
    const rep = b[1]!
    if (rep !== 0) throw this.fail(`could not ${this.what}: ${socks5ReplyText(rep)}`, rep)
    const parsed = parseAddress(b, 3, (why) => this.fail(why))
    if (!parsed) return 0
    this.bound = parsed.addr
    this.done = true
    return parsed.end
  }

  eof(rest: Buffer): Error | undefined {
    if (this.phase === 'request' && rest.length >= 2 && rest[0] === 5 && rest[1] !== 0) {
      return this.fail(`could not ${this.what}: ${socks5ReplyText(rest[1]!)}`, rest[1])
    }
    return undefined
  }

  dispose(): void {
    this.disposer?.()
  }
}

function socksRequest(cmd: number, t: { atyp: number; addr: Buffer; port: number }): Buffer {
  const b = Buffer.alloc(4 + t.addr.length + 2)
  b[0] = 5
  b[1] = cmd
  b[3] = t.atyp
  t.addr.copy(b, 4)
  b.writeUInt16BE(t.port, 4 + t.addr.length)
  return b
}

/**
 * Opens a TCP connection to `target` through a SOCKS5 proxy: connects to `server` (or uses `opts.socket`), offers
 * method 0x00 (and 0x02 with credentials), authenticates, sends `CONNECT` and reads the whole reply. Resolves with
 * the plain `net.Socket`, paused, positioned right after the reply: bytes the proxy sent after the reply are
 * `unshift`ed back, so none is lost. A domain name target is sent as a name (ATYP 3), never resolved locally.
 *
 * Rejects with `ERR_TUN_INVALID_ARGUMENT` for bad input, an {@link UpstreamError} (`ERR_TUN_UPSTREAM`) when the proxy
 * is unreachable (`phase 'connect'`) or refuses (`reply` = REP code), `ERR_TUN_TIMEOUT` after `timeoutMs` (default
 * 10 s), and `signal.reason` on abort; the socket is destroyed in every failure. The resolved socket has no
 * `'error'` listener left: attach one (or hand it to the relay) right away.
 *
 * @example
 * ```ts
 * const sock = await socks5Connect({ host: '127.0.0.1', port: 1080 }, { host: 'example.com', port: 443 })
 * ```
 */
export async function socks5Connect(
  server: Socks5Server,
  target: Target,
  opts: UpstreamOptions = {},
): Promise<net.Socket> {
  const proxy = checkServer(server, 'SOCKS5 server')
  const creds = socksCredentials(server)
  const t = checkTarget(target)
  const info: DialInfo = { protocol: 'socks5', proxy, target: t.label }
  const request = socksRequest(CMD_CONNECT, t)
  const { socket } = await dialUpstream(
    server,
    info,
    opts,
    () => new Socks5Handshake(info, creds, request, `reach ${t.label}`),
  )
  return socket
}

// ---------------------------------------------------------------------------------------------------------------
// UDP ASSOCIATE

/** Counters of a {@link Socks5Udp}. */
export interface Socks5UdpStats {
  /** Datagrams handed to the kernel. */
  sent: number
  /** Datagrams delivered as `'message'`. */
  received: number
  /** Datagrams from the relay with FRAG ≠ 0, dropped (fragmentation is not supported). */
  droppedFragments: number
  /** Datagrams from the relay whose header did not parse, dropped. */
  droppedMalformed: number
  /** Datagrams from anyone but the relay, dropped. */
  droppedForeign: number
  /** `send` calls dropped because `maxSendQueue` datagrams were already waiting in the socket. */
  droppedSendQueue: number
  /** `send`s the kernel refused (the error is not reported otherwise, as UDP goes). */
  sendErrors: number
}

/** Options of {@link socks5UdpAssociate}. */
export interface Socks5UdpOptions extends UpstreamOptions {
  /** Most datagrams waiting in the dgram socket's send queue; past it `send` drops (counted). Default 1024. */
  maxSendQueue?: number
  /**
   * The local address to bind the UDP socket to. Default: the local address of the control connection (so the
   * proxy sees UDP from the same address as the TCP connection), port 0.
   */
  localAddress?: string
}

/** Events of a {@link Socks5Udp}. It never emits `'error'`: a failure closes the association (`'close'`). */
export interface Socks5UdpEvents {
  /** A datagram from `from` (as the relay reported it); `data` is a view of the received datagram. */
  message: [data: Buffer, from: Target]
  /** The association ended: `close()` was called (no error) or the control connection / UDP socket failed. */
  close: [error?: Error]
}

/**
 * A SOCKS5 UDP association, from {@link socks5UdpAssociate}: an `EventEmitter` of `'message'` and `'close'` (see
 * {@link Socks5UdpEvents}). It lives as long as its TCP control connection: when the proxy closes that, the
 * association ends (`'close'` with an error, the dgram socket closed). Nothing is buffered in JavaScript: received
 * datagrams are emitted as they come, sends go to the kernel or are dropped past `maxSendQueue`.
 */
export class Socks5Udp extends EventEmitter<Socks5UdpEvents> {
  /** The proxy's UDP relay datagrams are sent to (BND of the reply; the proxy's address when it was unspecified). */
  readonly relay: { address: string; port: number }
  /** The local UDP socket's address. */
  readonly local: { address: string; port: number }
  /** Resolves once both the control connection and the UDP socket are closed; never rejects. */
  readonly closed: Promise<void>
  /** Counters, live. */
  readonly stats: Socks5UdpStats = {
    sent: 0,
    received: 0,
    droppedFragments: 0,
    droppedMalformed: 0,
    droppedForeign: 0,
    droppedSendQueue: 0,
    sendErrors: 0,
  }
  /** What ended the association, once it ended with an error. */
  error: Error | undefined
  #ended = false
  readonly #control: net.Socket
  readonly #udp: dgram.Socket
  readonly #relayBytes: Buffer
  readonly #maxPayload: number
  readonly #maxSendQueue: number
  readonly #proxy: string

  /** @internal made by {@link socks5UdpAssociate}. */
  constructor(
    control: net.Socket,
    udp: dgram.Socket,
    relay: { address: string; port: number },
    proxy: string,
    maxSendQueue: number,
  ) {
    super()
    this.#control = control
    this.#udp = udp
    this.#proxy = proxy
    this.relay = relay
    this.#relayBytes = ipBytes(relay.address)!
    const a = udp.address()
    this.local = { address: a.address, port: a.port }
    // IPv4: 65535 - 20 (IP) - 8 (UDP); IPv6: 65535 - 8 (the payload length excludes the fixed header).
    this.#maxPayload = this.#relayBytes.length === 4 ? 65_507 : 65_527
    this.#maxSendQueue = maxSendQueue
    const controlClosed = new Promise<void>((r) => (control.destroyed ? r() : control.once('close', () => r())))
    const udpClosed = new Promise<void>((r) => udp.once('close', () => r()))
    this.closed = Promise.all([controlClosed, udpClosed]).then(() => undefined)

    control.on('data', () => {}) // the proxy has nothing to say here; read to notice the end, discard
    control.on('end', () =>
      this.#end(
        new TunError('ERR_TUN_UPSTREAM', `SOCKS5 proxy ${proxy} closed the UDP association's control connection`),
      ),
    )
    control.on('error', (e) =>
      this.#end(
        new TunError(
          'ERR_TUN_UPSTREAM',
          `SOCKS5 proxy ${proxy}: the UDP association's control connection failed: ${e.message}`,
          {
            cause: e,
          },
        ),
      ),
    )
    control.on('close', () =>
      this.#end(
        new TunError('ERR_TUN_UPSTREAM', `SOCKS5 proxy ${proxy}: the UDP association's control connection closed`),
      ),
    )
    control.resume()
    udp.on('error', (e) =>
      this.#end(
        new TunError('ERR_TUN_UPSTREAM', `SOCKS5 UDP association via ${proxy}: socket error: ${e.message}`, {
          cause: e,
        }),
      ),
    )
    udp.on('close', () =>
      this.#end(new TunError('ERR_TUN_CLOSED', `SOCKS5 UDP association via ${proxy}: socket closed`)),
    )
    udp.on('message', (msg, rinfo) => this.#onMessage(msg, rinfo))
    if (control.destroyed) {
      // It went away between the reply and now (while a relay name resolved): end once listeners can see it.
      process.nextTick(() =>
        this.#end(
          new TunError('ERR_TUN_UPSTREAM', `SOCKS5 proxy ${proxy}: the UDP association's control connection closed`),
        ),
      )
    }
  }

  #onMessage(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (this.#ended) return
    if (rinfo.port !== this.relay.port || !sameIp(ipBytes(rinfo.address), this.#relayBytes)) {
      this.stats.droppedForeign++
      return
    }
    let d: Socks5Datagram
    try {
      d = decodeUdpDatagram(msg)
    } catch {
      this.stats.droppedMalformed++
      return
    }
    if (d.frag !== 0) {
      this.stats.droppedFragments++
      return
    }
    this.stats.received++
    this.emit('message', d.data, d.from)
  }

  /**
   * Sends `data` to `to` through the relay. Throws `ERR_TUN_CLOSED` once the association ended,
   * `ERR_TUN_INVALID_ARGUMENT` for a bad target and `ERR_TUN_PACKET_TOO_LARGE` when header and data exceed one UDP
   * datagram; otherwise never fails: past `maxSendQueue` waiting datagrams it drops, and kernel errors are counted
   * (`stats`).
   */
  send(data: Uint8Array, to: Target): void {
    if (this.#ended) throw new TunError('ERR_TUN_CLOSED', `SOCKS5 UDP association via ${this.#proxy} is closed`)
    if (!(data instanceof Uint8Array)) throw invalid('SOCKS5 UDP send: data must be a Uint8Array')
    const header = udpHeader(checkTarget(to, 'UDP destination'))
    if (header.length + data.length > this.#maxPayload) {
      throw new TunError(
        'ERR_TUN_PACKET_TOO_LARGE',
        `SOCKS5 UDP send: ${data.length} bytes plus a ${header.length}-byte header exceed ${this.#maxPayload}`,
      )
    }
    if (this.#udp.getSendQueueCount() >= this.#maxSendQueue) {
      this.stats.droppedSendQueue++
      return
    }
    this.#udp.send([header, data], this.relay.port, this.relay.address, (err) => {
      if (err) this.stats.sendErrors++
      else this.stats.sent++
    })
  }

  /** Ends the association: closes the control connection and the UDP socket. Idempotent; `closed` tells when done. */
  close(): void {
    this.#end(undefined)
  }

  #end(error: Error | undefined): void {
    if (this.#ended) return
    this.#ended = true
    this.error = error
    this.#control.destroy()
    try {
      this.#udp.close()
    } catch {
      // already closed
    }
    this.emit('close', error)
  }
}

function sameIp(a: Buffer | undefined, b: Buffer): boolean {
  if (!a) return false
  if (a.length === b.length) return a.equals(b)
  // an IPv4 address seen as IPv4-mapped IPv6, or the reverse
  const mapped = (x: Buffer) =>
    x.length === 16 && x.subarray(0, 10).every((v) => v === 0) && x[10] === 0xff && x[11] === 0xff
  if (a.length === 16 && mapped(a)) return a.subarray(12).equals(b)
  if (b.length === 16 && mapped(b)) return b.subarray(12).equals(a)
  return false
}

function bindUdp(type: 'udp4' | 'udp6', address: string): Promise<dgram.Socket> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket({ type, ipv6Only: type === 'udp6' })
    const onError = (e: Error) => {
      s.close()
      reject(e)
    }
    s.once('error', onError)
    s.bind(0, address, () => {
      s.off('error', onError)
      resolve(s)
    })
  })
}

const unspecified = (host: string) => host === '0.0.0.0' || host === '::'

/**
 * Opens a SOCKS5 UDP association: connects the TCP control connection (authenticating like {@link socks5Connect}),
 * binds a local UDP socket (by default on the control connection's local address), sends `UDP ASSOCIATE` with that
 * socket's address as DST, and reads the relay's address from the reply (BND; when it is `0.0.0.0` or `::`, the
 * address the control connection reached). If the relay's address family differs from the bound socket's, a socket of
 * the relay's family is bound instead. A relay given as a name is resolved with `dns.lookup` within the deadline.
 *
 * Rejects like {@link socks5Connect} (the target in messages is `'UDP ASSOCIATE'`); `opts.signal` covers the setup
 * only — end an open association with `close()`.
 *
 * @example
 * ```ts
 * const udp = await socks5UdpAssociate({ host: '127.0.0.1', port: 1080 })
 * udp.on('message', (data, from) => console.log(from, data))
 * udp.send(Buffer.from('hi'), { host: '10.0.0.1', port: 53 })
 * udp.close()
 * await udp.closed
 * ```
 */
export async function socks5UdpAssociate(server: Socks5Server, opts: Socks5UdpOptions = {}): Promise<Socks5Udp> {
  const proxy = checkServer(server, 'SOCKS5 server')
  const creds = socksCredentials(server)
  const maxSendQueue = opts.maxSendQueue ?? 1024
  if (!Number.isInteger(maxSendQueue) || maxSendQueue < 1) throw invalid('maxSendQueue must be a positive integer')
  if (opts.localAddress !== undefined && !net.isIP(opts.localAddress)) {
    throw invalid('localAddress must be an IP literal')
  }
  const started = Date.now()
  const timeoutMs = checkTimeout(opts.timeoutMs)
  const info: DialInfo = { protocol: 'socks5', proxy, target: 'UDP ASSOCIATE' }
  let udp: dgram.Socket | undefined
  const dispose = () => {
    try {
      udp?.close()
    } catch {
      // already closed
    }
  }
  const { socket, handshake } = await dialUpstream(server, info, opts, async (sock) => {
    const local = opts.localAddress ?? sock.localAddress ?? (sock.remoteFamily === 'IPv6' ? '::' : '0.0.0.0')
    udp = await bindUdp(net.isIPv6(local) ? 'udp6' : 'udp4', local)
    const a = udp.address()
    const dst = checkTarget({ host: a.address, port: a.port })
    return new Socks5Handshake(info, creds, socksRequest(CMD_UDP_ASSOCIATE, dst), 'open a UDP association', dispose)
  })
  try {
    const bound = handshake.bound!
    let address = bound.host
    if (bound.atyp === 3) {
      const left = timeoutMs - (Date.now() - started)
      let timer: NodeJS.Timeout | undefined
      const deadline = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new UpstreamError(
                'ERR_TUN_TIMEOUT',
                `SOCKS5 proxy ${proxy}: the UDP relay name ${bound.host} did not resolve within ${timeoutMs} ms`,
                { ...info, phase: 'request' },
              ),
            ),
          Math.max(1, left),
        )
      })
      try {
        address = (await Promise.race([lookup(bound.host), deadline])).address
      } catch (e) {
        if (e instanceof UpstreamError) throw e
        throw new UpstreamError(
          'ERR_TUN_UPSTREAM',
          `SOCKS5 proxy ${proxy}: the UDP relay name ${bound.host} does not resolve`,
          { ...info, phase: 'request' },
          e,
        )
      } finally {
        clearTimeout(timer)
      }
    } else if (unspecified(address)) {
      address = socket.remoteAddress ?? server.host
    }
    if (opts.signal?.aborted) throw opts.signal.reason
    if (/^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(address)) address = address.slice(7)
    const relayV6 = net.isIPv6(address) && !address.startsWith('::ffff:')
    const udpV6 = udp!.address().family === 'IPv6'
    if (relayV6 !== udpV6) {
      udp!.close()
      udp = await bindUdp(relayV6 ? 'udp6' : 'udp4', relayV6 ? '::' : '0.0.0.0')
    }
    if (bound.port === 0) {
      throw new UpstreamError('ERR_TUN_UPSTREAM', `SOCKS5 proxy ${proxy} answered UDP ASSOCIATE with relay port 0`, {
        ...info,
        phase: 'request',
      })
    }
    return new Socks5Udp(socket, udp!, { address, port: bound.port }, proxy, maxSendQueue)
  } catch (e) {
    socket.destroy()
    dispose()
    throw e
  }
}
