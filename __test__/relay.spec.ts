// stack.relay through a real TUN device: the splice fast path and its JavaScript fallback (`native: false`), with
// real clients (curl, node sockets) and servers on loopback, inside the private network namespace the test runner
// made (conventions as in stack.spec.ts).
import { randomBytes } from 'node:crypto'
import net from 'node:net'
import { Stack, Tun, type RelayOptions, type RelayResult } from '../index.ts'
import { devName } from './helpers/device.ts'
import {
  closed,
  connect,
  curl,
  deviceTest,
  echoServer,
  eventually,
  fdCount,
  plan,
  readBytes,
  readToEnd,
  serve,
  sha256,
  sleep,
  stats,
  tcpServer,
} from './helpers/stack.ts'

// 1 ─────────────────────────────────────────────────────────────────────────────────────────────────────────────
// ── stack.relay: the splice fast path (and its JavaScript fallback, `native: false`) ────────────────────────────

/** An HTTP server on loopback answering every request with `body`, counting the bytes each connection read/wrote. */
async function countingHttp(body: Buffer) {
  const conns: { read: number; written: number; ended: boolean }[] = []
  const srv = await tcpServer(
    (s) => {
      const rec = { read: 0, written: 0, ended: false }
      conns.push(rec)
      let req = ''
      s.on('data', (d: Buffer) => {
        rec.read += d.length
        if (rec.written > 0) return
        req += d.toString('latin1')
        if (!req.includes('\r\n\r\n')) return
        const head = `HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n`
        rec.written = head.length + body.length
        s.write(head)
        s.end(body)
      })
      s.on('end', () => (rec.ended = true))
    },
    { allowHalfOpen: true },
  )
  return { ...srv, conns }
}

/** A handler relaying every connection to `port` on loopback with `stack.relay`; the results in order. */
function relayTo(
  stack: Stack,
  port: number | ((conn: import('../index.ts').StackConnection) => number),
  opts: RelayOptions,
) {
  const results: RelayResult[] = []
  const upstreams: net.Socket[] = []
  const h = serve(stack, async (conn) => {
    const up = net.connect({
      port: typeof port === 'number' ? port : port(conn),
      host: '127.0.0.1',
      allowHalfOpen: true,
    })
    up.on('error', () => {})
    upstreams.push(up)
    results.push(await stack.relay(conn, up, opts))
  })
  return { ...h, results, upstreams }
}

for (const nat of [true, false]) {
  const how = nat ? 'native' : 'fallback'
  const opts: RelayOptions = nat ? {} : { native: false }

  deviceTest(
    `relay (${how}): curl 200 MB through stack.relay, SHA-256 equal, IPv4 and IPv6, byte counts exact`,
    async (t) => {
      const p = plan(nat ? 40 : 50)
      const body = randomBytes(200_000_000)
      const want = sha256(body)
      const web = await countingHttp(body)
      t.teardown(web.close)
      await using tun = await Tun.create({ name: devName('rl'), addresses: p.addresses, routes: p.routes })
      await using stack = await Stack.create(tun)
      const h = relayTo(stack, web.port, opts)
      for (const [i, url] of [`http://${p.dst4(7)}:8080/`, `http://[${p.dst6(7)}]:8443/`].entries()) {
        const r = await curl(url)
        t.is(r.code, 0, `curl ${url}: ${r.stderr}`)
        t.is(r.size, body.length, `curl ${url} got ${r.size} bytes`)
        t.is(r.sha, want, `curl ${url}: SHA-256 differs`)
        t.true(await eventually(() => h.results.length > i, 10_000), `relay ${i} never ended`)
        const res = h.results[i]!
        const srv = web.conns[i]!
        t.true(await eventually(() => srv.ended, 5000), 'the upstream never got the end')
        t.is(res.reason, 'closed')
        t.is(res.native, nat)
        t.is(res.received, srv.written, `${url}: received ${res.received}, the server wrote ${srv.written}`)
        t.is(res.sent, srv.read, `${url}: sent ${res.sent}, the server read ${srv.read}`)
        // Natively, the body never passed through JavaScript: the upstream socket read (almost) nothing into it.
        const jsRead = h.upstreams[i]!.bytesRead
        if (nat) t.true(jsRead < 1 << 20, `JavaScript read ${jsRead} bytes of the upstream`)
        else t.is(jsRead, srv.written)
      }
      t.deepEqual(h.errors, [])
      t.true(await eventually(() => stats(stack).tcpFlows === 0, 5000), JSON.stringify(stats(stack)))
    },
  )

  deviceTest(`relay (${how}): half-close both ways through the relay`, async (t) => {
    const p = plan(nat ? 41 : 51)
    const late = randomBytes(300_000)
    const early = randomBytes(100_000)
    const sent = randomBytes(250_000)
    const received: Buffer[] = []
    // A: reads until the client's end, then sends `late` and ends. B: sends `early` and ends, then reads.
    const a = await tcpServer(
      (s) => {
        const chunks: Buffer[] = []
        s.on('data', (d) => chunks.push(d))
        s.on('end', () => {
          received.push(Buffer.concat(chunks))
          s.end(late)
        })
      },
      { allowHalfOpen: true },
    )
    const gotAfterEnd: Buffer[] = []
    const b = await tcpServer(
      (s) => {
        const chunks: Buffer[] = []
        s.end(early)
        s.on('data', (d) => chunks.push(d))
        s.on('end', () => gotAfterEnd.push(Buffer.concat(chunks)))
      },
      { allowHalfOpen: true },
    )
    t.teardown(a.close)
    t.teardown(b.close)
    await using tun = await Tun.create({ name: devName('rl'), addresses: p.addresses, routes: p.routes })
    await using stack = await Stack.create(tun)
    const h = relayTo(stack, (conn) => (conn.destination.port === 11 ? a.port : b.port), opts)
    for (const fam of [4, 6] as const) {
      const dst = fam === 4 ? p.dst4(5) : p.dst6(5)
      const n = h.results.length
      const c1 = await connect(dst, 11, { allowHalfOpen: true })
      const body1 = readToEnd(c1, 15_000)
      c1.end(sent)
      const got1 = await body1.catch((e: Error) => Buffer.from(`error: ${e.message}`))
      t.true(got1.equals(late), `IPv${fam}: client got ${got1.length} of ${late.length} bytes after its end`)
      t.true(received.at(-1)?.equals(sent) ?? false, `IPv${fam}: server got ${received.at(-1)?.length} bytes`)
      const c2 = await connect(dst, 12, { allowHalfOpen: true })
      const got2 = await readToEnd(c2, 15_000).catch((e: Error) => Buffer.from(`error: ${e.message}`))
      t.true(got2.equals(early), `IPv${fam}: client got ${got2.length} of ${early.length} bytes`)
      t.false(c2.destroyed, 'the client socket went away when the server ended')
      const m = gotAfterEnd.length
      c2.end(sent)
      t.true(await eventually(() => gotAfterEnd.length > m, 15_000), `IPv${fam}: the server never got the end`)
      t.true(
        gotAfterEnd[m]?.equals(sent) ?? false,
        `IPv${fam}: server got ${gotAfterEnd[m]?.length} bytes after its end`,
      )
      t.true(await eventually(() => h.results.length >= n + 2, 10_000), 'the relays never ended')
      const [r1, r2] = [h.results[n]!, h.results[n + 1]!]
      t.like(r1, { reason: 'closed', native: nat, sent: sent.length, received: late.length })
      t.like(r2, { reason: 'closed', native: nat, sent: sent.length, received: early.length })
      await Promise.race([Promise.all([closed(c1), closed(c2)]), sleep(5000)])
      t.true(c1.closed && c2.closed, `IPv${fam}: client sockets not closed`)
    }
    t.deepEqual(h.errors, [])
    t.true(await eventually(() => stats(stack).tcpFlows === 0, 5000), JSON.stringify(stats(stack)))
  })

  deviceTest(`relay (${how}): a client reset ends the relay with 'reset' and the upstream sees it`, async (t) => {
    const p = plan(nat ? 42 : 52)
    const upstreamErrors: string[] = []
    const echo = await tcpServer((s) => {
      s.on('error', (e: NodeJS.ErrnoException) => upstreamErrors.push(e.code ?? e.message))
      s.pipe(s)
    })
    t.teardown(echo.close)
    await using tun = await Tun.create({ name: devName('rl'), addresses: p.addresses, routes: p.routes })
    await using stack = await Stack.create(tun)
    const h = relayTo(stack, echo.port, opts)
    for (const [i, dst] of [p.dst4(3), p.dst6(3)].entries()) {
      const c = await connect(dst, 4000)
      c.write('hello through the relay')
      t.is((await readBytes(c, 23)).toString(), 'hello through the relay')
      c.on('error', () => {})
      c.resetAndDestroy()
      t.true(await eventually(() => h.results.length > i, 5000), 'the relay never ended')
      t.like(h.results[i], { reason: 'reset', native: nat, sent: 23, received: 23 })
      t.true(await eventually(() => upstreamErrors.length > i, 5000), 'the upstream saw no reset')
      t.is(upstreamErrors[i], 'ECONNRESET')
    }
    t.true(await eventually(() => stats(stack).tcpFlows === 0, 5000), JSON.stringify(stats(stack)))
  })

  deviceTest(`relay (${how}): idleMs ends an idle pair with 'idle'`, async (t) => {
    const p = plan(nat ? 43 : 53)
    const echo = await echoServer()
    t.teardown(echo.close)
    await using tun = await Tun.create({ name: devName('rl'), addresses: p.addresses, routes: p.routes })
    await using stack = await Stack.create(tun)
    const h = relayTo(stack, echo.port, { ...opts, idleMs: 400 })
    const c = await connect(p.dst4(4), 5000)
    c.on('error', () => {})
    // Traffic keeps it alive past idleMs.
    for (let i = 0; i < 4; i++) {
      c.write('ping')
      t.is((await readBytes(c, 4)).toString(), 'ping')
      await sleep(200)
    }
    t.is(h.results.length, 0, 'the relay ended while traffic flowed')
    const t0 = Date.now()
    t.true(await eventually(() => h.results.length > 0, 5000), 'the idle relay never ended')
    const took = Date.now() - t0
    t.like(h.results[0], { reason: 'idle', native: nat, sent: 16, received: 16 })
    t.true(took >= 150 && took < 2000, `ended ${took} ms after the last byte`)
    await Promise.race([closed(c), sleep(5000)])
    t.true(c.closed, 'the client was not closed')
  })

  deviceTest(`relay (${how}): 500 concurrent relayed connections all complete`, async (t) => {
    const p = plan(nat ? 44 : 54)
    const echo = await echoServer()
    t.teardown(echo.close)
    await using tun = await Tun.create({ name: devName('rl'), addresses: p.addresses, routes: p.routes })
    await using stack = await Stack.create(tun)
    const h = relayTo(stack, echo.port, opts)
    const N = 500
    const fd0 = fdCount()
    const clients = await Promise.all(
      Array.from({ length: N }, (_, i) =>
        connect(i % 2 ? p.dst6(1 + (i % 40)) : p.dst4(1 + (i % 40)), 6000 + i, { ms: 20_000 }),
      ),
    )
    const size = 64 * 1024
    const failures: string[] = []
    await Promise.all(
      clients.map(async (c, i) => {
        const data = randomBytes(size)
        const back = readToEnd(c, 30_000)
        c.end(data)
        const got = await back.catch((e: Error) => Buffer.from(e.message))
        if (!got.equals(data)) failures.push(`${i}: got ${got.length} bytes`)
      }),
    )
    t.deepEqual(failures.slice(0, 10), [], `${failures.length} of ${N} failed`)
    t.true(await eventually(() => h.results.length === N, 15_000), `${h.results.length} of ${N} relays ended`)
    const bad = h.results.filter(
      (r) => r.reason !== 'closed' || r.sent !== size || r.received !== size || r.native !== nat,
    )
    t.deepEqual(bad.slice(0, 5), [])
    t.deepEqual(h.errors, [])
    t.true(await eventually(() => stats(stack).tcpFlows === 0, 10_000), JSON.stringify(stats(stack)))
    t.true(await eventually(() => fdCount() <= fd0 + 8, 5000), `fds: ${fd0} before, ${fdCount()} after`)
  })
}

deviceTest('relay: stack.close() ends native relays in flight with a reset; options are checked', async (t) => {
  const p = plan(45)
  const echo = await echoServer()
  t.teardown(echo.close)
  await using tun = await Tun.create({ name: devName('rl'), addresses: p.addresses, routes: p.routes })
  const stack = await Stack.create(tun)
  const h = relayTo(stack, echo.port, {})
  const c = await connect(p.dst4(2), 7000)
  c.write('abc')
  t.is((await readBytes(c, 3)).toString(), 'abc')
  const err = new Promise<string>((r) => c.once('error', (e: NodeJS.ErrnoException) => r(e.code ?? e.message)))
  await stack.close()
  t.true(await eventually(() => h.results.length === 1, 5000))
  t.like(h.results[0], { reason: 'reset', native: true, sent: 3, received: 3 })
  t.is(await Promise.race([err, sleep(5000).then(() => 'no error')]), 'ECONNRESET')
  const s = net.connect({ port: echo.port, host: '127.0.0.1' })
  s.on('error', () => {})
  await t.throwsAsync(stack.relay(s as never, s, {}), { code: 'ERR_TUN_CLOSED' })
  await t.throwsAsync(stack.relay(s as never, s, { idleMs: 0 }), { code: 'ERR_TUN_INVALID_ARGUMENT' })
  await t.throwsAsync(stack.relay(s as never, s, { bogus: 1 } as never), { code: 'ERR_TUN_INVALID_ARGUMENT' })
  s.destroy()
})
