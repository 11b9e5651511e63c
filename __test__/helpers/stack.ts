/**
 * Helpers for the forwarding-stack tests (stack.spec.ts): per-test address plans, a connection handler loop,
 * servers on loopback, TCP clients that never block the event loop, and descriptor counts.
 */
import { readdirSync } from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import { pipeline } from 'node:stream'
import type { ExecutionContext } from 'ava'
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { packet, type Stack, type StackConnection, type Tun } from '../../index.ts'
import { deviceTest as baseDeviceTest } from './device.ts'

/**
 * The addresses of test `k` (1..250): the device's own prefixes (198.18.k.1/24, fd18:k::1/64) and, routed into
 * the device, destinations 198.19.k.0/24 and 2001:db8:1k::/64 that exist nowhere: only the stack answers them.
 */
export function plan(k: number) {
  const hex = (0x100 + k).toString(16)
  return {
    gw4: `198.18.${k}.1`,
    gw6: `fd18:${hex}::1`,
    addresses: [`198.18.${k}.1/24`, `fd18:${hex}::1/64`],
    routes: [{ to: `198.19.${k}.0/24` }, { to: `2001:db8:${hex}::/64` }],
    dst4: (host: number) => `198.19.${k}.${host}`,
    dst6: (host: number) => `2001:db8:${hex}::${host.toString(16)}`,
  }
}

const STAT_KEYS = [
  'tcpFlows',
  'tcpQuarantined',
  'tcpCreated',
  'tcpReset',
  'tcpReleased',
  'tcpSynExpired',
  'tcpResetsSent',
  'refusedFull',
  'refusedPorts',
  'natPortsInUse',
  'natPortsCapacity',
  'udpSessions',
  'udpCreated',
  'udpEvicted',
  'udpExpired',
  'udpClosed',
  'udpReplies',
  'udpRefused',
  'writeBack',
  'replies',
  'datagrams',
  'dropped',
  'passed',
  'datagramsDropped',
  'udpQueued',
] as const
export type StackStats = Record<(typeof STAT_KEYS)[number], number>

/** `stack.stats()` with its keys typed; a key the stack does not report throws (so a renamed counter fails loudly). */
export function stats(stack: Stack): StackStats {
  const s = stack.stats()
  for (const k of STAT_KEYS) if (typeof s[k] !== 'number') throw new Error(`stack.stats() has no '${k}'`)
  return s as StackStats
}

/** Open descriptors of this process. */
export function fdCount(): number {
  return readdirSync('/proc/self/fd').length
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/** Polls `cond` every 20 ms for up to `ms`; resolves with whether it became true. */
export async function eventually(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) return false
    await sleep(20)
  }
  return true
}

/**
 * Runs `handle` for every connection of `stack` until the iterator ends. A handler that throws (or rejects) gets
 * its connection reset, the loop goes on. Returns the connections seen (in order; none kept with `keep: false`, for
 * tests that must not hold on to them) and a promise for the loop's end.
 */
export function serve(
  stack: Stack,
  handle: (conn: StackConnection, i: number) => void | Promise<void>,
  opts: { keep?: boolean } = {},
) {
  const seen: StackConnection[] = []
  const errors: unknown[] = []
  const done = (async () => {
    let i = 0
    for await (const conn of stack.connections()) {
      if (opts.keep !== false) seen.push(conn)
      conn.on('error', () => {})
      const n = i++
      Promise.resolve()
        .then(() => handle(conn, n))
        .catch((e) => {
          errors.push(e)
          conn.resetAndDestroy()
        })
    }
  })()
  return { seen, errors, done }
}

/** The handler of most tests: every connection piped to `port` on loopback (the family of its destination). */
export function forwardTo(port: number, host = '127.0.0.1') {
  return (conn: StackConnection) => {
    const up = net.connect({ port, host, allowHalfOpen: true })
    up.on('error', () => {})
    pipeline(conn, up, conn, () => {})
  }
}

/** A TCP server on 127.0.0.1 (or `host`); closing it also destroys its connections. */
export async function tcpServer(
  onConn: (s: net.Socket) => void,
  opts: { host?: string; allowHalfOpen?: boolean } = {},
) {
  const sockets = new Set<net.Socket>()
  const server = net.createServer({ allowHalfOpen: opts.allowHalfOpen ?? false }, (s) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
    s.on('error', () => {})
    onConn(s)
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen({ port: 0, host: opts.host ?? '127.0.0.1', backlog: 4096 }, () => resolve())
  })
  return {
    server,
    sockets,
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy()
        server.close(() => r())
      }),
  }
}

/** An echo server: every byte back, and an end for an end. */
export function echoServer() {
  return tcpServer((s) => s.pipe(s))
}

/** An HTTP server on 127.0.0.1 answering every request with `body`. */
export async function httpServer(body: Buffer) {
  const server = http.createServer((_req, res) => {
    res.setHeader('content-type', 'application/octet-stream')
    res.end(body)
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return {
    server,
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections()
        server.close(() => r())
      }),
  }
}

/** Connects to `host:port` (through the device when the route says so), rejecting after `ms`. */
export function connect(host: string, port: number, opts: { allowHalfOpen?: boolean; ms?: number } = {}) {
  return new Promise<net.Socket>((resolve, reject) => {
    const s = net.connect({ host, port, allowHalfOpen: opts.allowHalfOpen ?? false })
    const timer = setTimeout(() => {
      s.destroy()
      reject(new Error(`connect to ${host}:${port} timed out after ${opts.ms ?? 10_000} ms`))
    }, opts.ms ?? 10_000)
    s.once('connect', () => {
      clearTimeout(timer)
      s.off('error', reject)
      resolve(s)
    })
    s.once('error', (e) => {
      clearTimeout(timer)
      reject(e)
    })
  })
}

/** Reads from `s` until `n` bytes came (resolves with them), the stream ended, or `ms` passed (rejects). */
export function readBytes(s: net.Socket, n: number, ms = 10_000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let got = 0
    const done = (e?: Error) => {
      clearTimeout(timer)
      s.off('data', onData)
      s.off('end', onEnd)
      s.off('error', onError)
      if (e) reject(e)
      else resolve(Buffer.concat(chunks))
    }
    const onData = (d: Buffer) => {
      chunks.push(d)
      got += d.length
      if (got >= n) done()
    }
    const onEnd = () => done(new Error(`stream ended after ${got} of ${n} bytes`))
    const onError = (e: Error) => done(e)
    const timer = setTimeout(() => done(new Error(`timed out after ${ms} ms with ${got} of ${n} bytes`)), ms)
    s.on('data', onData)
    s.once('end', onEnd)
    s.once('error', onError)
  })
}

/** Everything `s` sends until its end (rejects on error or after `ms`). */
export function readToEnd(s: net.Socket, ms = 10_000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    const timer = setTimeout(() => reject(new Error(`no end within ${ms} ms (${chunks.length} chunks)`)), ms)
    s.on('data', (d: Buffer) => chunks.push(d))
    s.once('end', () => {
      clearTimeout(timer)
      resolve(Buffer.concat(chunks))
    })
    s.once('error', (e) => {
      clearTimeout(timer)
      reject(e)
    })
  })
}

/** Resolves when `s` has closed (at once if it already has). */
export function closed(s: net.Socket): Promise<void> {
  if (s.closed) return Promise.resolve()
  return new Promise((r) => s.once('close', () => r()))
}

/** `deviceTest`, logging how long each test took. */
export const deviceTest = (title: string, impl: (t: ExecutionContext) => Promise<void>) =>
  baseDeviceTest(title, async (t) => {
    const t0 = performance.now()
    try {
      await impl(t)
    } finally {
      t.log(`took ${((performance.now() - t0) / 1000).toFixed(1)} s`)
    }
  })

export const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex')

/** Runs curl on `url`, hashing the body as it streams; returns the hash, size and curl's own view of the socket. */
export function curl(url: string, timeoutMs = 60_000) {
  return new Promise<{
    code: number | null
    sha: string
    size: number
    localIp: string
    localPort: number
    stderr: string
  }>((resolve, reject) => {
    const child = spawn(
      'curl',
      ['-sS', '--max-time', '50', '-o', '-', '-w', '%{stderr}\nCURLINFO %{local_ip} %{local_port}\n', url],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    )
    const h = createHash('sha256')
    let size = 0
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => {
      h.update(d)
      size += d.length
    })
    child.stderr.on('data', (d) => (stderr += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.on('error', (e) => {
      clearTimeout(timer)
      reject(e)
    })
    child.on('close', (code) => {
      clearTimeout(timer)
      const m = /CURLINFO (\S+) (\d+)/.exec(stderr)
      resolve({ code, sha: h.digest('hex'), size, localIp: m?.[1] ?? '', localPort: Number(m?.[2] ?? -1), stderr })
    })
  })
}

/** Collects `packet.summary` of everything `tun.packets()` yields until the device closes. */
export function collect(tun: Tun) {
  const seen: { summary: string; info: ReturnType<typeof packet.parse>; pkt: Buffer }[] = []
  const done = (async () => {
    for await (const p of tun.packets()) seen.push({ summary: packet.summary(p), info: packet.parse(p), pkt: p })
  })()
  return { seen, done }
}
