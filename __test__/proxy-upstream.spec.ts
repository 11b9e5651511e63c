// The upstream proxy clients of src/proxy: SOCKS5 CONNECT and UDP ASSOCIATE against a real SOCKS5 server (Debian's
// dante-server, `sockd`, started here on loopback: one instance without authentication, one with username/password
// checked against a throwaway system user), HTTP CONNECT against a small proxy made with node's http server, the
// protocol corners (replies split byte by byte, every BND address type, bytes right after a reply or a response head,
// fragments, foreign datagrams) against scripted servers, and the pure UDP header codec with a seeded fuzz.
// Everything listens on 127.0.0.1 / ::1 only.
import test, { type ExecutionContext } from 'ava'
import { spawnSync, type ChildProcess } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import dgram from 'node:dgram'
import { once } from 'node:events'
import { mkdtempSync, rmSync } from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { TunError } from '../src/errors.ts'
import { danteConfig, ensureDanted, startDanted } from './helpers/dante.ts'
import { httpConnect, MAX_RESPONSE_HEAD } from '../src/proxy/http-connect.ts'
import {
  decodeUdpDatagram,
  encodeUdpHeader,
  socks5Connect,
  socks5UdpAssociate,
  UpstreamError,
  type Socks5Udp,
  type Target,
} from '../src/proxy/socks5.ts'

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex')

/** Rejects after `ms` with `what` timed out, so no wait in this file is unbounded. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms)
    }),
  ]).finally(() => clearTimeout(timer))
}

/** What a promise rejects with (fails when it resolves), bounded. */
async function rejection(p: Promise<unknown>, ms = 15_000): Promise<unknown> {
  try {
    const v = await within(p, ms, 'rejection')
    if (v instanceof net.Socket) v.destroy()
    throw new Error(`expected a rejection, got ${String(v)}`)
  } catch (e) {
    if (e instanceof Error && e.message.startsWith('expected a rejection')) throw e
    return e
  }
}

/** Asserts an UpstreamError with `code` (and returns it typed). */
function upstream(t: ExecutionContext, e: unknown, code: TunError['code'] = 'ERR_TUN_UPSTREAM'): UpstreamError {
  t.true(e instanceof UpstreamError, `not an UpstreamError: ${String(e)}`)
  t.true(e instanceof TunError)
  const u = e as UpstreamError
  t.is(u.code, code, u.message)
  return u
}

/** Reads exactly `n` bytes from a socket (resuming it), bounded. */
function readN(s: net.Socket, n: number, ms = 15_000): Promise<Buffer> {
  return within(
    new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = []
      let got = 0
      const onData = (d: Buffer) => {
        chunks.push(d)
        got += d.length
        if (got >= n) {
          done()
          const all = Buffer.concat(chunks)
          if (all.length > n) s.unshift(all.subarray(n))
          resolve(all.subarray(0, n))
        }
      }
      const onEnd = () => {
        done()
        reject(new Error(`stream ended after ${got} of ${n} bytes`))
      }
      const onError = (e: Error) => {
        done()
        reject(e)
      }
      const done = () => {
        s.off('data', onData)
        s.off('end', onEnd)
        s.off('error', onError)
        s.pause()
      }
      s.on('data', onData)
      s.once('end', onEnd)
      s.once('error', onError)
      s.resume()
    }),
    ms,
    `reading ${n} bytes`,
  )
}

/** A scripted peer's reads: `read(n)` resolves with the next `n` bytes the socket received. */
function reader(s: net.Socket) {
  let buf = Buffer.alloc(0)
  let wake: (() => void) | undefined
  s.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d])
    wake?.()
  })
  s.on('error', () => {})
  return async (n: number): Promise<Buffer> => {
    const deadline = Date.now() + 10_000
    while (buf.length < n) {
      if (Date.now() > deadline) throw new Error(`scripted peer: waited for ${n} bytes`)
      await new Promise<void>((r) => {
        wake = r
        setTimeout(r, 50)
      })
    }
    const out = buf.subarray(0, n)
    buf = buf.subarray(n)
    return out
  }
}

/** Writes `b` one byte per event-loop turn (so the peer sees it in many chunks). */
async function trickle(s: net.Socket, b: Buffer): Promise<void> {
  for (const x of b) {
    s.write(Buffer.from([x]))
    await new Promise<void>((r) => setTimeout(r, 1))
  }
}

interface Listening {
  port: number
  close(): Promise<void>
}

/** A TCP server on `host` port `port` (0: any); closing it destroys its connections too. */
async function tcpServer(
  host: string,
  onConn: (s: net.Socket) => void,
  port = 0,
): Promise<Listening & { server: net.Server }> {
  const conns = new Set<net.Socket>()
  const server = net.createServer((s) => {
    conns.add(s)
    s.on('close', () => conns.delete(s))
    s.on('error', () => {})
    onConn(s)
  })
  server.listen(port, host)
  await within(once(server, 'listening'), 5000, `listen on ${host}`)
  return {
    server,
    port: (server.address() as net.AddressInfo).port,
    close: async () => {
      for (const c of conns) c.destroy()
      await within(new Promise<void>((r) => server.close(() => r())), 5000, 'server close')
    },
  }
}

/** Whether ::1 can be listened on here. */
let ipv6Checked: Promise<boolean> | undefined
const hasIPv6 = () =>
  (ipv6Checked ??= new Promise<boolean>((resolve) => {
    const s = net.createServer()
    s.once('error', () => resolve(false))
    s.listen(0, '::1', () => s.close(() => resolve(true)))
  }))

/** One handler on the same port on 127.0.0.1 and (when there is IPv6) ::1. */
async function dualServer(onConn: (s: net.Socket) => void): Promise<Listening> {
  const v6 = await hasIPv6()
  for (let attempt = 0; ; attempt++) {
    const a = await tcpServer('127.0.0.1', onConn)
    if (!v6) return a
    try {
      const b = await tcpServer('::1', onConn, a.port)
      return { port: a.port, close: async () => void (await Promise.all([a.close(), b.close()])) }
    } catch (e) {
      await a.close()
      if (attempt > 20) throw e
    }
  }
}

/** A TCP echo server on 127.0.0.1 and ::1. */
const echoServer = () => dualServer((s) => s.pipe(s))

/** A port nothing listens on (on 127.0.0.1 and ::1): listened on, then closed. */
async function closedPort(): Promise<number> {
  const s = await dualServer(() => {})
  await s.close()
  return s.port
}

/** A UDP echo server on `host`. */
async function udpEcho(host: string): Promise<{ port: number; close(): Promise<void> }> {
  const s = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4')
  s.on('message', (m, r) => s.send(m, r.port, r.address))
  s.bind(0, host)
  await within(once(s, 'listening'), 5000, 'udp bind')
  return { port: s.address().port, close: () => new Promise<void>((r) => s.close(() => r())) }
}

/** Sends `data` and reads as many bytes back, then destroys the socket; resolves with what came back. */
async function echoThrough(s: net.Socket, data: Buffer): Promise<Buffer> {
  s.on('error', () => {})
  const back = readN(s, data.length, 60_000)
  s.write(data)
  try {
    return await back
  } finally {
    s.destroy()
  }
}

/** A forwarder on 127.0.0.1 to `port`: records what clients sent, and can cut every client connection. */
async function forwarder(port: number) {
  const sent: Buffer[] = []
  const clients = new Set<net.Socket>()
  const srv = await tcpServer('127.0.0.1', (c) => {
    clients.add(c)
    c.on('close', () => clients.delete(c))
    const up = net.connect(port, '127.0.0.1')
    up.on('error', () => c.destroy())
    c.on('data', (d: Buffer) => sent.push(d))
    c.pipe(up)
    up.pipe(c)
    c.on('close', () => up.destroy())
    up.on('close', () => c.destroy())
  })
  return {
    ...srv,
    sent: () => Buffer.concat(sent),
    cut: () => {
      for (const c of clients) c.resetAndDestroy()
    },
  }
}

// ── dante ────────────────────────────────────────────────────────────────────────────────────────────────────────

interface SockdInstance {
  port: number
  child: ChildProcess
  log: string
  stop(): Promise<void>
}
interface Dante {
  open: SockdInstance
  auth: SockdInstance
  ipv6: boolean
  user: string
  password: string
  stop(): Promise<void>
}

let danteStarted: Promise<Dante> | undefined
/** The two sockd instances, started once for the file (installed first when missing). */
const dante = () => (danteStarted ??= startDante())

test.after.always('stop sockd, remove the test user', async () => {
  const d = await danteStarted?.catch(() => undefined)
  await d?.stop()
})

function sh(cmd: string, args: string[], input?: string) {
  return spawnSync(cmd, args, { encoding: 'utf8', input, timeout: 30_000 })
}

/** A free port on 127.0.0.1 (and ::1 when `v6`). */
async function freePort(v6: boolean): Promise<number> {
  const s = v6 ? await dualServer(() => {}) : await tcpServer('127.0.0.1', () => {})
  await s.close()
  return s.port
}

async function startSockd(dir: string, name: string, method: 'none' | 'username', v6: boolean): Promise<SockdInstance> {
  const port = await freePort(v6)
  const d = await startDanted({
    dir,
    name,
    host: '127.0.0.1',
    port,
    config: danteConfig({ internal: v6 ? ['127.0.0.1', '::1'] : ['127.0.0.1'], port, external: 'lo', method }),
  })
  return { port, child: d.child, log: d.log, stop: d.stop }
}

async function startDante(): Promise<Dante> {
  ensureDanted()
  if (process.getuid?.() !== 0) throw new Error('the dante tests need root (to create the test user and run sockd)')
  const v6 = await hasIPv6()
  const dir = mkdtempSync(join(tmpdir(), 'tunkit-sockd-'))
  const user = `tkso${randomBytes(4).toString('hex')}`
  const password = randomBytes(9).toString('base64url')
  const instances: SockdInstance[] = []
  let userMade = false
  const stop = async () => {
    await Promise.all(instances.map((i) => i.stop()))
    if (userMade) sh('userdel', [user])
    rmSync(dir, { recursive: true, force: true })
  }
  try {
    const add = sh('useradd', ['--no-create-home', '--shell', '/usr/sbin/nologin', user])
    if (add.status !== 0) throw new Error(`useradd ${user} failed: ${add.stderr}`)
    userMade = true
    const pw = sh('chpasswd', [], `${user}:${password}\n`)
    if (pw.status !== 0) throw new Error(`chpasswd failed: ${pw.stderr}`)
    instances.push(await startSockd(dir, 'open', 'none', v6))
    instances.push(await startSockd(dir, 'auth', 'username', v6))
    return { open: instances[0]!, auth: instances[1]!, ipv6: v6, user, password, stop }
  } catch (e) {
    await stop()
    throw e
  }
}

// ── SOCKS5 CONNECT through dante ────────────────────────────────────────────────────────────────────────────────

test('socks5Connect through dante: 1 MB of random bytes echoed byte-exact (SHA-256)', async (t) => {
  const d = await dante()
  const echo = await echoServer()
  t.teardown(echo.close)
  const sock = await socks5Connect({ host: '127.0.0.1', port: d.open.port }, { host: '127.0.0.1', port: echo.port })
  t.true(sock instanceof net.Socket)
  t.true(sock.isPaused(), 'handed over paused')
  const data = randomBytes(1 << 20)
  const back = await echoThrough(sock, data)
  t.is(sha256(back), sha256(data))
})

test('socks5Connect through dante over IPv6: proxy ::1, target ::1', async (t) => {
  const d = await dante()
  if (!d.ipv6) return t.pass('no IPv6 on loopback here')
  const echo = await echoServer()
  t.teardown(echo.close)
  const sock = await socks5Connect({ host: '::1', port: d.open.port }, { host: '::1', port: echo.port })
  const data = randomBytes(100_000)
  t.is(sha256(await echoThrough(sock, data)), sha256(data))
})

test('socks5Connect through dante with username/password: right ones pass, wrong or none are refused', async (t) => {
  const d = await dante()
  const echo = await echoServer()
  t.teardown(echo.close)
  const server = { host: '127.0.0.1', port: d.auth.port }
  const target = { host: '127.0.0.1', port: echo.port }
  const sock = await socks5Connect({ ...server, username: d.user, password: d.password }, target)
  const data = randomBytes(200_000)
  t.is(sha256(await echoThrough(sock, data)), sha256(data))

  const wrong = upstream(t, await rejection(socks5Connect({ ...server, username: d.user, password: 'nope' }, target)))
  t.is(wrong.phase, 'auth')
  t.regex(wrong.message, /rejected the username\/password/)
  t.regex(wrong.message, new RegExp(`127\\.0\\.0\\.1:${d.auth.port}`))

  const none = upstream(t, await rejection(socks5Connect(server, target)))
  t.is(none.phase, 'greeting')
  t.regex(none.message, /requires authentication/)
})

test('socks5Connect sends a domain name target as a name (ATYP 3) and dante resolves it', async (t) => {
  const d = await dante()
  const echo = await echoServer()
  t.teardown(echo.close)
  const fwd = await forwarder(d.open.port)
  t.teardown(fwd.close)
  const sock = await socks5Connect({ host: '127.0.0.1', port: fwd.port }, { host: 'localhost', port: echo.port })
  const data = randomBytes(50_000)
  t.is(sha256(await echoThrough(sock, data)), sha256(data))
  const name = Buffer.from('localhost')
  const port = Buffer.alloc(2)
  port.writeUInt16BE(echo.port)
  const expected = Buffer.concat([Buffer.from([5, 1, 0]), Buffer.from([5, 1, 0, 3, name.length]), name, port])
  t.deepEqual(fwd.sent().subarray(0, expected.length), expected, 'greeting, then CONNECT with ATYP 3 "localhost"')
})

test('socks5Connect to a closed port through dante: ERR_TUN_UPSTREAM with the reply code in words', async (t) => {
  const d = await dante()
  const port = await closedPort()
  const e = upstream(
    t,
    await rejection(socks5Connect({ host: '127.0.0.1', port: d.open.port }, { host: '127.0.0.1', port })),
  )
  t.is(e.phase, 'request')
  t.is(e.reply, 5)
  t.regex(e.message, /connection refused \(5\)/)
  t.regex(e.message, new RegExp(`127\\.0\\.0\\.1:${d.open.port}.*127\\.0\\.0\\.1:${port}`))
  t.log(e.message)
})

test('socks5Connect and httpConnect to a proxy that does not listen: ERR_TUN_UPSTREAM, phase connect', async (t) => {
  const port = await closedPort()
  const target = { host: '127.0.0.1', port: 9 }
  for (const p of [
    socks5Connect({ host: '127.0.0.1', port }, target),
    httpConnect({ host: '127.0.0.1', port }, target),
  ]) {
    const e = upstream(t, await rejection(p))
    t.is(e.phase, 'connect')
    t.is(e.reply, undefined)
    t.is((e.cause as { code?: string } | undefined)?.code, 'ECONNREFUSED')
    t.regex(e.message, /unreachable/)
  }
})

// ── timeouts, abort ──────────────────────────────────────────────────────────────────────────────────────────────

test('a proxy that accepts and never answers: ERR_TUN_TIMEOUT after timeoutMs (SOCKS5, UDP ASSOCIATE, HTTP)', async (t) => {
  const silent = await tcpServer('127.0.0.1', () => {})
  t.teardown(silent.close)
  const server = { host: '127.0.0.1', port: silent.port }
  const target = { host: 'example.org', port: 443 }
  const cases: [string, () => Promise<unknown>][] = [
    ['socks5', () => socks5Connect(server, target, { timeoutMs: 300 })],
    ['udp', () => socks5UdpAssociate(server, { timeoutMs: 300 })],
    ['http', () => httpConnect(server, target, { timeoutMs: 300 })],
  ]
  for (const [name, f] of cases) {
    const started = Date.now()
    const e = upstream(t, await rejection(f()), 'ERR_TUN_TIMEOUT')
    const took = Date.now() - started
    t.true(took >= 280 && took < 3000, `${name} took ${took} ms`)
    t.not(e.phase, 'connect')
    t.regex(e.message, /within 300 ms/)
  }
})

test('abort: rejects with the signal reason and destroys the socket (before and during the handshake)', async (t) => {
  const silent = await tcpServer('127.0.0.1', () => {})
  t.teardown(silent.close)
  const server = { host: '127.0.0.1', port: silent.port }
  const target = { host: '127.0.0.1', port: 80 }
  for (const f of [socks5Connect, httpConnect]) {
    const ac = new AbortController()
    const reason = new Error('stop it')
    const socket = net.connect(silent.port, '127.0.0.1')
    setTimeout(() => ac.abort(reason), 100)
    t.is(await rejection(f(server, target, { signal: ac.signal, socket })), reason)
    t.true(socket.destroyed)

    const pre = net.connect(silent.port, '127.0.0.1')
    pre.on('error', () => {})
    t.is(await rejection(f(server, target, { signal: AbortSignal.abort(reason), socket: pre })), reason)
    t.true(pre.destroyed)
  }
  const ac = new AbortController()
  setTimeout(() => ac.abort('udp reason'), 100)
  t.is(await rejection(socks5UdpAssociate(server, { signal: ac.signal })), 'udp reason')
})

// ── SOCKS5 protocol corners against a scripted server ────────────────────────────────────────────────────────────

/** A scripted SOCKS5 server: no auth; reads a CONNECT and answers with `reply` (trickled), then `after`. */
async function scriptedSocks(reply: Buffer, after: Buffer, later?: Buffer) {
  return tcpServer('127.0.0.1', (s) => {
    const read = reader(s)
    void (async () => {
      const greet = await read(3)
      if (greet[0] !== 5) return s.destroy()
      s.write(Buffer.from([5, 0]))
      const head = await read(5)
      const atyp = head[3]
      const rest = atyp === 1 ? 3 + 2 : atyp === 4 ? 15 + 2 : head[4]! + 2
      await read(rest)
      await trickle(s, reply.subarray(0, -1))
      s.write(Buffer.concat([reply.subarray(-1), after]))
      if (later) {
        await sleep(20)
        s.write(later)
      }
    })().catch(() => s.destroy())
  })
}

test('socks5 reply split byte by byte, every BND address type, bytes right after it kept in order', async (t) => {
  const name = Buffer.from('relay.example')
  const replies = [
    Buffer.from([5, 0, 0, 1, 10, 1, 2, 3, 0x12, 0x34]),
    Buffer.concat([Buffer.from([5, 0, 0, 4]), Buffer.alloc(15), Buffer.from([1, 0x12, 0x34])]),
    Buffer.concat([Buffer.from([5, 0, 0, 3, name.length]), name, Buffer.from([0x12, 0x34])]),
  ]
  for (const reply of replies) {
    const after = Buffer.from('hello ')
    const later = Buffer.from('world')
    const srv = await scriptedSocks(reply, after, later)
    const sock = await socks5Connect({ host: '127.0.0.1', port: srv.port }, { host: 'example.org', port: 80 })
    t.is((await readN(sock, 11)).toString(), 'hello world', `after an ATYP ${reply[3]} reply`)
    sock.destroy()
    await srv.close()
  }
})

test('socks5: a failure reply followed by a close, a non-SOCKS server and an unknown ATYP fail with ERR_TUN_UPSTREAM', async (t) => {
  // REP 2 and the connection closed right after the first two bytes: the code is still reported.
  const early = await tcpServer('127.0.0.1', (s) => {
    const read = reader(s)
    void (async () => {
      await read(3)
      s.write(Buffer.from([5, 0]))
      await read(10)
      s.end(Buffer.from([5, 2]))
    })().catch(() => s.destroy())
  })
  t.teardown(early.close)
  const e1 = upstream(
    t,
    await rejection(socks5Connect({ host: '127.0.0.1', port: early.port }, { host: '1.2.3.4', port: 80 })),
  )
  t.is(e1.reply, 2)
  t.regex(e1.message, /connection not allowed by ruleset \(2\)/)

  const httpish = await tcpServer('127.0.0.1', (s) => s.end('HTTP/1.1 400 Bad Request\r\n\r\n'))
  t.teardown(httpish.close)
  const e2 = upstream(
    t,
    await rejection(socks5Connect({ host: '127.0.0.1', port: httpish.port }, { host: '1.2.3.4', port: 80 })),
  )
  t.regex(e2.message, /not a SOCKS5 server/)

  const badAtyp = await scriptedSocks(Buffer.from([5, 0, 0, 9, 0, 0]), Buffer.alloc(0))
  t.teardown(badAtyp.close)
  const e3 = upstream(
    t,
    await rejection(socks5Connect({ host: '127.0.0.1', port: badAtyp.port }, { host: '1.2.3.4', port: 80 })),
  )
  t.regex(e3.message, /unknown address type 9/)
})

// ── UDP ASSOCIATE ────────────────────────────────────────────────────────────────────────────────────────────────

/** Sends 100 datagrams of varied sizes one at a time and checks each echo byte-exact and its source. */
async function udpRoundTrips(t: ExecutionContext, udp: Socks5Udp, echo: Target) {
  const sizes: number[] = []
  for (let i = 0; i < 100; i++) sizes.push(4 + ((i * 7919) % 32_000))
  sizes[1] = 4
  sizes[2] = 1472
  sizes[3] = 32_000
  let ok = 0
  for (const [i, size] of sizes.entries()) {
    const data = randomBytes(size)
    data.writeUInt32BE(i)
    const got = within(
      new Promise<[Buffer, Target]>((resolve) => {
        const on = (m: Buffer, from: Target) => {
          if (m.length >= 4 && m.readUInt32BE(0) === i) {
            udp.off('message', on)
            resolve([m, from])
          }
        }
        udp.on('message', on)
      }),
      5000,
      `datagram ${i} (${size} bytes)`,
    )
    udp.send(data, echo)
    const [m, from] = await got
    if (m.equals(data) && from.host === echo.host && from.port === echo.port) ok++
  }
  t.is(ok, 100, 'all 100 datagrams came back byte-exact from the echo server')
  t.is(udp.stats.received, 100)
  t.is(udp.stats.sent, 100)
}

test('socks5UdpAssociate through dante (IPv4): 100 datagrams of varied sizes byte-exact; close() ends it', async (t) => {
  const d = await dante()
  const echo = await udpEcho('127.0.0.1')
  t.teardown(echo.close)
  const udp = await socks5UdpAssociate({ host: '127.0.0.1', port: d.open.port })
  t.is(udp.relay.address, '127.0.0.1')
  t.is(udp.local.address, '127.0.0.1')
  await udpRoundTrips(t, udp, { host: '127.0.0.1', port: echo.port })
  const closeEvent = once(udp, 'close')
  udp.close()
  t.deepEqual(await within(closeEvent, 5000, 'close event'), [undefined])
  await within(udp.closed, 5000, 'closed')
  t.throws(() => udp.send(Buffer.from('x'), { host: '127.0.0.1', port: echo.port }), { code: 'ERR_TUN_CLOSED' })
  // The local UDP port is free again: the dgram socket is closed.
  const probe = dgram.createSocket('udp4')
  await within(new Promise<void>((r) => probe.bind(udp.local.port, '127.0.0.1', () => r())), 5000, 'rebind')
  probe.close()
})

test('socks5UdpAssociate through dante with username/password', async (t) => {
  const d = await dante()
  const echo = await udpEcho('127.0.0.1')
  t.teardown(echo.close)
  const udp = await socks5UdpAssociate({ host: '127.0.0.1', port: d.auth.port, username: d.user, password: d.password })
  t.teardown(() => udp.close())
  const got = once(udp, 'message')
  udp.send(Buffer.from('authenticated datagram'), { host: '127.0.0.1', port: echo.port })
  const [m] = (await within(got, 5000, 'echo')) as [Buffer]
  t.is(m.toString(), 'authenticated datagram')
})

test('socks5UdpAssociate through dante (IPv6): proxy ::1, relay and echo server on ::1', async (t) => {
  const d = await dante()
  if (!d.ipv6) return t.pass('no IPv6 on loopback here')
  const echo = await udpEcho('::1')
  t.teardown(echo.close)
  const udp = await socks5UdpAssociate({ host: '::1', port: d.open.port })
  t.teardown(() => udp.close())
  t.is(udp.relay.address, '::1')
  await udpRoundTrips(t, udp, { host: '::1', port: echo.port })
})

test('socks5UdpAssociate: the association ends when the proxy side drops the control connection', async (t) => {
  const d = await dante()
  const echo = await udpEcho('127.0.0.1')
  t.teardown(echo.close)
  const fwd = await forwarder(d.open.port)
  t.teardown(fwd.close)
  const udp = await socks5UdpAssociate({ host: '127.0.0.1', port: fwd.port })
  const got = once(udp, 'message')
  udp.send(Buffer.from('before'), { host: '127.0.0.1', port: echo.port })
  await within(got, 5000, 'echo before the cut')
  const closeEvent = once(udp, 'close')
  fwd.cut()
  const [err] = (await within(closeEvent, 5000, 'close event')) as [Error | undefined]
  t.true(err instanceof TunError, String(err))
  t.is((err as TunError).code, 'ERR_TUN_UPSTREAM')
  t.log(err?.message)
  await within(udp.closed, 5000, 'closed')
  t.is(udp.error, err)
  t.throws(() => udp.send(Buffer.from('x'), { host: '127.0.0.1', port: echo.port }), { code: 'ERR_TUN_CLOSED' })
  const probe = dgram.createSocket('udp4')
  await within(new Promise<void>((r) => probe.bind(udp.local.port, '127.0.0.1', () => r())), 5000, 'rebind')
  probe.close()
})

test('socks5UdpAssociate against a scripted relay: unspecified BND, fragments, malformed and foreign datagrams dropped and counted', async (t) => {
  const relay = dgram.createSocket('udp4')
  relay.bind(0, '127.0.0.1')
  await within(once(relay, 'listening'), 5000, 'relay bind')
  t.teardown(() => relay.close())
  let control: net.Socket | undefined
  let dst: Target | undefined
  const srv = await tcpServer('127.0.0.1', (s) => {
    control = s
    const read = reader(s)
    void (async () => {
      await read(3)
      s.write(Buffer.from([5, 0]))
      const req = await read(10) // VER CMD RSV ATYP=1 ADDR(4) PORT(2)
      dst = { host: `${req[4]}.${req[5]}.${req[6]}.${req[7]}`, port: req.readUInt16BE(8) }
      const reply = Buffer.from([5, 0, 0, 1, 0, 0, 0, 0, 0, 0]) // BND 0.0.0.0: use the proxy's address
      reply.writeUInt16BE(relay.address().port, 8)
      s.write(reply)
    })().catch(() => s.destroy())
  })
  t.teardown(srv.close)
  const udp = await socks5UdpAssociate({ host: '127.0.0.1', port: srv.port })
  t.teardown(() => udp.close())
  t.deepEqual(udp.relay, { address: '127.0.0.1', port: relay.address().port })
  t.deepEqual(dst, { host: udp.local.address, port: udp.local.port }, 'DST is the local UDP socket')

  const atRelay = once(relay, 'message')
  udp.send(Buffer.from('query'), { host: 'example.org', port: 53 })
  const [req, rinfo] = (await within(atRelay, 5000, 'datagram at the relay')) as [Buffer, dgram.RemoteInfo]
  const decoded = decodeUdpDatagram(req)
  t.deepEqual(decoded.from, { host: 'example.org', port: 53 })
  t.is(decoded.data.toString(), 'query')
  t.is(decoded.frag, 0)

  const messages: [string, Target][] = []
  udp.on('message', (m, from) => messages.push([m.toString(), from]))
  const header = encodeUdpHeader({ host: '192.0.2.7', port: 7 })
  const frag = Buffer.from(header)
  frag[2] = 1
  relay.send(Buffer.concat([frag, Buffer.from('fragment')]), rinfo.port, rinfo.address)
  relay.send(Buffer.from([0, 0, 0, 7, 1]), rinfo.port, rinfo.address)
  const foreign = dgram.createSocket('udp4')
  foreign.send(Buffer.concat([header, Buffer.from('foreign')]), rinfo.port, rinfo.address, () => foreign.close())
  await sleep(50)
  relay.send(Buffer.concat([header, Buffer.from('answer')]), rinfo.port, rinfo.address)
  const deadline = Date.now() + 5000
  while (messages.length === 0 && Date.now() < deadline) await sleep(10)
  await sleep(50)
  t.deepEqual(messages, [['answer', { host: '192.0.2.7', port: 7 }]])
  t.is(udp.stats.droppedFragments, 1)
  t.is(udp.stats.droppedMalformed, 1)
  t.is(udp.stats.droppedForeign, 1)

  // The proxy closes the control connection: the association ends.
  const closeEvent = once(udp, 'close')
  control?.end()
  await within(closeEvent, 5000, 'close after the control connection ended')
  await within(udp.closed, 5000, 'closed')
})

// ── HTTP CONNECT ─────────────────────────────────────────────────────────────────────────────────────────────────

/** A CONNECT proxy made with node's http server, requiring Basic `user:pass`; records each request's url and Host. */
async function httpProxy(user: string, pass: string) {
  const seen: { url: string; host: string | undefined }[] = []
  const expected = `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`
  const server = http.createServer((_req, res) => res.writeHead(405).end())
  const sockets = new Set<net.Socket>()
  server.on('connection', (s: net.Socket) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
  })
  server.on('connect', (req: http.IncomingMessage, client: net.Socket, head: Buffer) => {
    client.on('error', () => {})
    seen.push({ url: req.url ?? '', host: req.headers.host })
    if (req.headers['proxy-authorization'] !== expected) {
      client.end('HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="t"\r\n\r\n')
      return
    }
    const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(req.url ?? '')
    if (!m) return void client.end('HTTP/1.1 400 Bad Request\r\n\r\n')
    const up = net.connect(Number(m[2]), m[1])
    up.once('error', () => client.end('HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n'))
    up.once('connect', () => {
      client.write('HTTP/1.1 200 Connection Established\r\nVia: test\r\n\r\n')
      if (head.length > 0) up.write(head)
      up.pipe(client)
      client.pipe(up)
      client.on('close', () => up.destroy())
    })
  })
  server.listen(0, '127.0.0.1')
  await within(once(server, 'listening'), 5000, 'http proxy listen')
  return {
    port: (server.address() as net.AddressInfo).port,
    seen,
    close: async () => {
      for (const s of sockets) s.destroy()
      await within(new Promise<void>((r) => server.close(() => r())), 5000, 'http proxy close')
    },
  }
}

test('httpConnect with Basic auth: 1 MB echoed byte-exact; IPv6 target bracketed', async (t) => {
  const proxy = await httpProxy('alice', 'pä:ss')
  t.teardown(proxy.close)
  const echo = await echoServer()
  t.teardown(echo.close)
  const server = { host: '127.0.0.1', port: proxy.port, username: 'alice', password: 'pä:ss' }
  const sock = await httpConnect(server, { host: '127.0.0.1', port: echo.port })
  t.true(sock.isPaused())
  const data = randomBytes(1 << 20)
  t.is(sha256(await echoThrough(sock, data)), sha256(data))
  t.deepEqual(proxy.seen[0], { url: `127.0.0.1:${echo.port}`, host: `127.0.0.1:${echo.port}` })
  if (await hasIPv6()) {
    const s6 = await httpConnect(server, { host: '::1', port: echo.port })
    t.is((await echoThrough(s6, Buffer.from('six'))).toString(), 'six')
    t.deepEqual(proxy.seen[1], { url: `[::1]:${echo.port}`, host: `[::1]:${echo.port}` })
  }
})

test('httpConnect: 407 without or with wrong credentials, 502 for a closed target', async (t) => {
  const proxy = await httpProxy('alice', 'secret')
  t.teardown(proxy.close)
  const target = { host: '127.0.0.1', port: await closedPort() }
  const none = upstream(t, await rejection(httpConnect({ host: '127.0.0.1', port: proxy.port }, target)))
  t.is(none.reply, 407)
  t.is(none.phase, 'request')
  t.regex(none.message, /407 Proxy Authentication Required.*no credentials were given/)
  const wrong = upstream(
    t,
    await rejection(httpConnect({ host: '127.0.0.1', port: proxy.port, username: 'alice', password: 'x' }, target)),
  )
  t.is(wrong.reply, 407)
  t.regex(wrong.message, /credentials were rejected/)
  const bad = upstream(
    t,
    await rejection(
      httpConnect({ host: '127.0.0.1', port: proxy.port, username: 'alice', password: 'secret' }, target),
    ),
  )
  t.is(bad.reply, 502)
  t.regex(bad.message, /HTTP\/1\.1 502 Bad Gateway/)
  t.regex(bad.message, new RegExp(`127\\.0\\.0\\.1:${proxy.port}.*127\\.0\\.0\\.1:${target.port}`))
})

test('httpConnect: a response head written one byte at a time, data right after it in the same chunk, nothing lost', async (t) => {
  const head = Buffer.from('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-Long: ' + 'y'.repeat(600) + '\r\n\r\n')
  let request = ''
  const srv = await tcpServer('127.0.0.1', (s) => {
    s.on('data', (d: Buffer) => {
      const first = request === ''
      request += d.toString('latin1')
      if (!first) return
      void (async () => {
        await trickle(s, head.subarray(0, -1))
        s.write(Buffer.concat([head.subarray(-1), Buffer.from('tunnel ')]))
        await sleep(20)
        s.write('data')
      })()
    })
  })
  t.teardown(srv.close)
  const sock = await httpConnect({ host: '127.0.0.1', port: srv.port }, { host: 'example.org', port: 443 })
  t.is((await readN(sock, 11)).toString(), 'tunnel data')
  sock.destroy()
  t.is(request, 'CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n')
})

test('httpConnect: a response head over 16 KiB and a non-HTTP answer fail with ERR_TUN_UPSTREAM', async (t) => {
  const big = await tcpServer('127.0.0.1', (s) =>
    s.once('data', () => s.write(`HTTP/1.1 200 OK\r\nX: ${'z'.repeat(MAX_RESPONSE_HEAD)}\r\n\r\n`)),
  )
  t.teardown(big.close)
  const e1 = upstream(t, await rejection(httpConnect({ host: '127.0.0.1', port: big.port }, { host: 'a.b', port: 1 })))
  t.regex(e1.message, /larger than 16384/)
  const junk = await tcpServer('127.0.0.1', (s) => s.once('data', () => s.write('SSH-2.0-OpenSSH\r\n\r\n')))
  t.teardown(junk.close)
  const e2 = upstream(t, await rejection(httpConnect({ host: '127.0.0.1', port: junk.port }, { host: 'a.b', port: 1 })))
  t.regex(e2.message, /invalid status line "SSH-2.0-OpenSSH"/)
})

// ── validation ───────────────────────────────────────────────────────────────────────────────────────────────────

test('invalid arguments reject with ERR_TUN_INVALID_ARGUMENT before any connection', async (t) => {
  const ok = { host: '127.0.0.1', port: 1080 }
  const bad: [string, () => Promise<unknown>][] = [
    ['target port 0', () => socks5Connect(ok, { host: '1.2.3.4', port: 0 })],
    ['target port 65536', () => socks5Connect(ok, { host: '1.2.3.4', port: 65536 })],
    ['target port 1.5', () => socks5Connect(ok, { host: '1.2.3.4', port: 1.5 })],
    ['name of 256 bytes', () => socks5Connect(ok, { host: 'a'.repeat(256), port: 1 })],
    ['name with a space', () => socks5Connect(ok, { host: 'a b', port: 1 })],
    ['name with CRLF', () => httpConnect(ok, { host: 'a\r\nX: y', port: 1 })],
    ['empty host', () => socks5Connect(ok, { host: '', port: 1 })],
    ['server port 0', () => socks5Connect({ host: '127.0.0.1', port: 0 }, { host: 'a', port: 1 })],
    ['username of 256 bytes', () => socks5Connect({ ...ok, username: 'u'.repeat(256) }, { host: 'a', port: 1 })],
    ['password without user', () => socks5Connect({ ...ok, password: 'p' }, { host: 'a', port: 1 })],
    ['http user with a colon', () => httpConnect({ ...ok, username: 'a:b' }, { host: 'a', port: 1 })],
    ['timeoutMs 0', () => socks5Connect(ok, { host: 'a', port: 1 }, { timeoutMs: 0 })],
    ['maxSendQueue 0', () => socks5UdpAssociate(ok, { maxSendQueue: 0 })],
  ]
  for (const [what, f] of bad) {
    const e = await rejection(f())
    t.true(e instanceof TunError && e.code === 'ERR_TUN_INVALID_ARGUMENT', `${what}: ${String(e)}`)
  }
  t.notThrows(() => encodeUdpHeader({ host: 'a'.repeat(255), port: 1 }))
  t.throws(() => encodeUdpHeader({ host: 'a'.repeat(256), port: 1 }), { code: 'ERR_TUN_INVALID_ARGUMENT' })
})

// ── the pure UDP header codec ────────────────────────────────────────────────────────────────────────────────────

test('encodeUdpHeader / decodeUdpDatagram round trips (IPv4, IPv6 in canonical form, names)', (t) => {
  const cases: [Target, string, number[]][] = [
    [{ host: '10.0.0.1', port: 53 }, '10.0.0.1', [0, 0, 0, 1, 10, 0, 0, 1, 0, 53]],
    [{ host: '255.255.255.255', port: 65535 }, '255.255.255.255', []],
    [{ host: '::1', port: 1 }, '::1', []],
    [{ host: '[2001:DB8:0:0:0:0:0:1]', port: 443 }, '2001:db8::1', []],
    [{ host: '2001:db8:0:0:1:0:0:1', port: 443 }, '2001:db8::1:0:0:1', []],
    [{ host: '1:0:0:2:0:0:0:3', port: 443 }, '1:0:0:2::3', []],
    [{ host: '::', port: 9 }, '::', []],
    [{ host: 'fe80::1%eth0', port: 9 }, 'fe80::1', []],
    [{ host: '::ffff:1.2.3.4', port: 9 }, '::ffff:1.2.3.4', []],
    [{ host: '64:ff9b::192.0.2.1', port: 9 }, '64:ff9b::c000:201', []],
    [{ host: 'localhost', port: 80 }, 'localhost', [0, 0, 0, 3, 9, ...Buffer.from('localhost'), 0, 80]],
    [{ host: 'x'.repeat(255), port: 80 }, 'x'.repeat(255), []],
  ]
  for (const [to, host, bytes] of cases) {
    const h = encodeUdpHeader(to)
    if (bytes.length > 0) t.deepEqual([...h], bytes, `${to.host} encodes as given`)
    for (const payload of [Buffer.alloc(0), randomBytes(100)]) {
      const d = decodeUdpDatagram(Buffer.concat([h, payload]))
      t.deepEqual(d.from, { host, port: to.port })
      t.true(d.data.equals(payload))
      t.is(d.frag, 0)
    }
  }
  // IPv6 text from random addresses with zero runs: it parses back to the same bytes and is what URL prints.
  let x = 12345
  for (let i = 0; i < 2000; i++) {
    const b = Buffer.alloc(22)
    b[3] = 4
    for (let g = 0; g < 8; g++) {
      x = (x * 1103515245 + 12345) >>> 0
      if (x % 3 !== 0) b.writeUInt16BE((x >>> 8) & 0xffff, 4 + g * 2)
    }
    const host = decodeUdpDatagram(b).from.host
    t.true(net.isIPv6(host), host)
    if (!host.startsWith('::ffff:')) {
      if (new URL(`http://[${host}]/`).hostname !== `[${host}]`) t.fail(`${host} is not in RFC 5952 form`)
    }
    if (!encodeUdpHeader({ host, port: 1 }).subarray(4, 20).equals(b.subarray(4, 20))) t.fail(`${host} round trip`)
  }
})

test('decodeUdpDatagram fuzz: 20 000 seeded inputs only ever return or throw ERR_TUN_INVALID_PACKET', (t) => {
  let s = 0x9e3779b9
  const next = () => {
    s ^= s << 13
    s >>>= 0
    s ^= s >>> 17
    s ^= s << 5
    s >>>= 0
    return s
  }
  const started = Date.now()
  let ok = 0
  let thrown = 0
  for (let i = 0; i < 20_000; i++) {
    const len = next() % 48
    const b = Buffer.alloc(len)
    for (let j = 0; j < len; j++) b[j] = next() & 0xff
    if (len > 3 && next() % 4 !== 0) b[3] = [1, 3, 4][next() % 3]!
    if (len > 4 && b[3] === 3 && next() % 2 === 0) b[4] = next() % Math.max(1, len - 4)
    try {
      const d = decodeUdpDatagram(b)
      if (d.data.length > len || typeof d.from.host !== 'string' || d.from.port < 0 || d.from.port > 65535) {
        t.fail(`bad decode of ${b.toString('hex')}`)
      }
      ok++
    } catch (e) {
      if (!(e instanceof TunError) || e.code !== 'ERR_TUN_INVALID_PACKET') {
        t.fail(`threw ${String(e)} for ${b.toString('hex')}`)
        return
      }
      thrown++
    }
  }
  const took = Date.now() - started
  t.log(`fuzz: ${ok} decoded, ${thrown} rejected with ERR_TUN_INVALID_PACKET, ${took} ms`)
  t.is(ok + thrown, 20_000)
  t.true(ok > 1000 && thrown > 1000, 'both paths exercised')
  t.true(took < 2000, `took ${took} ms`)
})
