/**
 * HTTP CONNECT upstream client (RFC 9110 section 9.3.6): a TCP tunnel through an HTTP proxy, with Basic
 * `Proxy-Authorization` (RFC 7617) when credentials are given. Node built-ins only.
 */
import type net from 'node:net'
import { TunError } from '../errors.js'
import {
  checkTarget,
  dialUpstream,
  hostPort,
  UpstreamError,
  type DialInfo,
  type Handshake,
  type Target,
  type UpstreamOptions,
  type UpstreamPhase,
} from './socks5.js'

export { UpstreamError, type Target, type UpstreamOptions } from './socks5.js'

/** An HTTP proxy. With `username`, requests carry `Proxy-Authorization: Basic base64(username:password)`. */
export interface HttpProxyServer {
  /** The proxy's address or host name (resolved locally, by `net.connect`). */
  host: string
  /** The proxy's TCP port, 1..65535. */
  port: number
  /** User name for Basic authentication: no `:` and no control characters. */
  username?: string
  /** Password for Basic authentication (`''` when omitted with a username); no control characters. */
  password?: string
}

/** The most bytes of a response head (status line and header fields, with the blank line) read; more fails. */
export const MAX_RESPONSE_HEAD = 16 * 1024

const invalid = (message: string) => new TunError('ERR_TUN_INVALID_ARGUMENT', message)
const CONTROL = /[\u0000-\u001f\u007f]/

/** Printable form of a status line for messages: non-printable bytes as `?`, at most 200 characters. */
function printable(line: string): string {
  const s = line.replace(/[^\x20-\x7e]/g, '?')
  return s.length > 200 ? `${s.slice(0, 200)}…` : s
}

/** The HTTP CONNECT state machine: one request, then response heads until a final (non-1xx) one. */
class HttpConnectHandshake implements Handshake {
  phase: UpstreamPhase = 'request'
  done = false
  /** Where the search for the head's end resumes (so a head split in many chunks is scanned once). */
  private scanned = 0
  /** The final status, once done. */
  status = 0

  constructor(
    private readonly info: DialInfo,
    private readonly request: Buffer,
    private readonly withCredentials: boolean,
  ) {}

  private fail(why: string, status?: number): UpstreamError {
    return new UpstreamError('ERR_TUN_UPSTREAM', `HTTP proxy ${this.info.proxy} ${why}, for ${this.info.target}`, {
      ...this.info,
      phase: this.phase,
      reply: status,
    })
  }

  start(socket: net.Socket): void {
    socket.write(this.request)
  }

  /** The end of the head (index just past the blank line) in `b`, or -1; tolerant of bare LF line ends. */
  private headEnd(b: Buffer): number {
    // A blank line is LF LF or LF CR LF; resume a little before where the last scan stopped.
    for (let i = Math.max(0, this.scanned - 2); i < b.length; i++) {
      if (b[i] !== 0x0a) continue
      if (b[i + 1] === 0x0a) return i + 2
      if (b[i + 1] === 0x0d && b[i + 2] === 0x0a) return i + 3
    }
    this.scanned = b.length
    return -1
  }

  eof(rest: Buffer): Error | undefined {
    const line = rest.toString('latin1', 0, Math.min(rest.length, 512)).split(/\r?\n/, 1)[0] ?? ''
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(line)
    if (!m) return undefined
    const status = Number(m[1])
    const failed = status < 200 || status >= 300 ? status : undefined
    return this.fail(`closed the connection after a partial response: ${printable(line)}`, failed)
  }

  feed(b: Buffer): number {
    const end = this.headEnd(b)
    if (end < 0) {
      if (b.length > MAX_RESPONSE_HEAD) throw this.fail(`sent a response head larger than ${MAX_RESPONSE_HEAD} bytes`)
      return 0
    }
    this.scanned = 0
    if (end > MAX_RESPONSE_HEAD) throw this.fail(`sent a response head larger than ${MAX_RESPONSE_HEAD} bytes`)
    const head = b.toString('latin1', 0, end)
    const statusLine = head.split(/\r?\n/, 1)[0] ?? ''
    const m = /^HTTP\/1\.[01] (\d{3})(?: .*)?$/.exec(statusLine)
    if (!m) throw this.fail(`sent an invalid status line ${JSON.stringify(printable(statusLine))}`)
    const status = Number(m[1])
    if (status >= 100 && status < 200) return end // an interim response: the final one follows
    if (status >= 200 && status < 300) {
      this.status = status
      this.done = true
      return end
    }
    if (status === 407) {
      throw this.fail(
        `requires authentication: ${printable(statusLine)} (${
          this.withCredentials ? 'the credentials were rejected' : 'no credentials were given'
        })`,
        status,
      )
    }
    throw this.fail(`refused the tunnel: ${printable(statusLine)}`, status)
  }
}

/**
 * Opens a TCP tunnel to `target` through an HTTP proxy: sends `CONNECT host:port HTTP/1.1` (an IPv6 literal
 * bracketed) with `Host:` and, given credentials, `Proxy-Authorization: Basic …`; reads the response head (at most
 * {@link MAX_RESPONSE_HEAD} bytes, in any number of chunks; 1xx interim responses skipped). On 2xx resolves with the
 * plain `net.Socket`, paused, bytes after the head `unshift`ed back.
 *
 * Rejects with `ERR_TUN_INVALID_ARGUMENT` for bad input, an {@link UpstreamError} (`ERR_TUN_UPSTREAM`) when the proxy
 * is unreachable (`phase 'connect'`) or answers anything but 2xx (`reply` = the status; the message quotes the status
 * line, and for 407 says whether credentials were missing or rejected), `ERR_TUN_TIMEOUT` after `timeoutMs` (default
 * 10 s) and `signal.reason` on abort; the socket is destroyed in every failure. The resolved socket has no `'error'`
 * listener left: attach one (or hand it to the relay) right away.
 *
 * @example
 * ```ts
 * const sock = await httpConnect({ host: '127.0.0.1', port: 3128 }, { host: 'example.com', port: 443 })
 * ```
 */
export async function httpConnect(
  server: HttpProxyServer,
  target: Target,
  opts: UpstreamOptions = {},
): Promise<net.Socket> {
  if (typeof server !== 'object' || server === null) throw invalid('HTTP proxy must be an object { host, port }')
  if (typeof server.host !== 'string' || server.host.length === 0) {
    throw invalid('HTTP proxy: host must be a non-empty string')
  }
  if (!Number.isInteger(server.port) || server.port < 1 || server.port > 65535) {
    throw invalid(`HTTP proxy: port must be an integer 1..65535, got ${String(server.port)}`)
  }
  const t = checkTarget(target)
  let auth = ''
  if (server.username !== undefined) {
    const user = server.username
    const pass = server.password ?? ''
    if (typeof user !== 'string' || typeof pass !== 'string') throw invalid('HTTP proxy: credentials must be strings')
    if (user.includes(':') || CONTROL.test(user))
      throw invalid('HTTP proxy: username must have no ":" nor control characters')
    if (CONTROL.test(pass)) throw invalid('HTTP proxy: password must have no control characters')
    auth = `Proxy-Authorization: Basic ${Buffer.from(`${user}:${pass}`, 'utf8').toString('base64')}\r\n`
  } else if (server.password !== undefined) {
    throw invalid('HTTP proxy: password given without a username')
  }
  const authority = t.label // host:port, IPv6 bracketed
  const request = Buffer.from(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n${auth}\r\n`, 'latin1')
  const info: DialInfo = { protocol: 'http', proxy: hostPort(server.host, server.port), target: authority }
  const { socket } = await dialUpstream(server, info, opts, () => new HttpConnectHandshake(info, request, auth !== ''))
  return socket
}
