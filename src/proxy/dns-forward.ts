/**
 * Forwarding DNS queries to a resolver, through the upstream the rules pick for it (directly, or over a SOCKS5 UDP
 * association shared by every query), with query IDs of its own so that clients' IDs never collide, and a deadline
 * per query.
 */
import dgram from 'node:dgram'
import net from 'node:net'
import { TunError } from '../errors.js'
import type { DnsQuery } from './dns.js'
import { socks5UdpAssociate, type Socks5Server, type Socks5Udp, type Target } from './socks5.js'

/** How the resolver is reached now. */
export type DnsResolverRoute = { type: 'direct' } | { type: 'socks5'; server: Socks5Server } | { type: 'none' }

interface Pending {
  id: number
  resolve: (b: Buffer) => void
  reject: (e: Error) => void
  timer: NodeJS.Timeout
}

/** Most queries in flight; past it a query fails at once (SERVFAIL for the client) rather than queue. */
const MAX_PENDING = 4096

/** Sends queries to one resolver and hands back its answers (IDs restored). */
export class DnsForwarder {
  readonly #resolver: Target
  readonly #route: (r: Target) => DnsResolverRoute
  readonly #timeoutMs: number
  readonly #bind?: { v4?: string; v6?: string }
  readonly #pending = new Map<number, Pending>()
  #nextId = Math.floor(Math.random() * 65536)
  #direct?: dgram.Socket
  #assoc?: { server: Socks5Server; udp: Promise<Socks5Udp> }
  #closed = false

  constructor(
    resolver: Target,
    route: (r: Target) => DnsResolverRoute,
    opts: { timeoutMs: number; bind?: { v4?: string; v6?: string } },
  ) {
    this.#resolver = resolver
    this.#route = route
    this.#timeoutMs = opts.timeoutMs
    this.#bind = opts.bind
  }

  /** The resolver's reply to `q` (its ID set back to the client's). Rejects on timeout or when unreachable. */
  query(q: DnsQuery): Promise<Buffer> {
    if (this.#closed) return Promise.reject(new TunError('ERR_TUN_CLOSED', 'the DNS forwarder is closed'))
    if (this.#pending.size >= MAX_PENDING) {
      return Promise.reject(new TunError('ERR_TUN_QUEUE_FULL', `${MAX_PENDING} DNS queries already in flight`))
    }
    const route = this.#route(this.#resolver)
    if (route.type === 'none') {
      return Promise.reject(new TunError('ERR_TUN_UPSTREAM', 'the rules send the resolver nowhere (reject or drop)'))
    }
    let id = this.#nextId
    while (this.#pending.has(id)) id = (id + 1) & 0xffff
    this.#nextId = (id + 1) & 0xffff
    const msg = Buffer.from(q.raw)
    msg.writeUInt16BE(id, 0)
    return new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id)
        reject(
          new TunError(
            'ERR_TUN_TIMEOUT',
            `no answer from ${this.#resolver.host}:${this.#resolver.port} in ${this.#timeoutMs} ms`,
          ),
        )
      }, this.#timeoutMs)
      this.#pending.set(id, {
        id,
        timer,
        resolve: (b) => {
          const out = Buffer.from(b)
          out.writeUInt16BE(q.id, 0)
          resolve(out)
        },
        reject,
      })
      if (route.type === 'direct') this.#sendDirect(msg)
      else this.#sendSocks(route.server, msg)
    })
  }

  #onReply(b: Buffer): void {
    if (b.length < 12) return
    const p = this.#pending.get(b.readUInt16BE(0))
    if (!p) return
    this.#pending.delete(p.id)
    clearTimeout(p.timer)
    p.resolve(b)
  }

  #sendDirect(msg: Buffer): void {
    if (!this.#direct) {
      const v6 = net.isIP(this.#resolver.host) === 6
      const s = dgram.createSocket(v6 ? 'udp6' : 'udp4')
      s.on('error', () => {})
      s.on('message', (b, rinfo) => {
        if (rinfo.port === this.#resolver.port) this.#onReply(b)
      })
      const local = v6 ? this.#bind?.v6 : this.#bind?.v4
      s.bind({ port: 0, ...(local ? { address: local } : {}) })
      this.#direct = s
    }
    this.#direct.send(msg, this.#resolver.port, this.#resolver.host)
  }

  #sendSocks(server: Socks5Server, msg: Buffer): void {
    if (this.#assoc && this.#assoc.server !== server) {
      void this.#assoc.udp.then(
        (a) => a.close(),
        () => {},
      )
      this.#assoc = undefined
    }
    if (!this.#assoc) {
      const udp = socks5UdpAssociate(server, { timeoutMs: this.#timeoutMs })
      const entry = { server, udp }
      this.#assoc = entry
      udp.then(
        (a) => {
          a.on('message', (b) => this.#onReply(b))
          a.on('close', () => {
            if (this.#assoc === entry) this.#assoc = undefined
          })
        },
        () => {
          if (this.#assoc === entry) this.#assoc = undefined
        },
      )
    }
    void this.#assoc.udp.then(
      (a) => a.send(msg, this.#resolver),
      () => {},
    )
  }

  /** Fails every query in flight and closes the sockets. */
  close(): void {
    this.#closed = true
    for (const p of this.#pending.values()) {
      clearTimeout(p.timer)
      p.reject(new TunError('ERR_TUN_CLOSED', 'the DNS forwarder closed'))
    }
    this.#pending.clear()
    this.#direct?.close()
    void this.#assoc?.udp.then(
      (a) => a.close(),
      () => {},
    )
  }
}
