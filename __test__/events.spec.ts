// Link events: tun.events() reports up, down, MTU and address changes, whoever makes them (here mostly `ip`, from
// outside the library), ends when the device closes, and ends with an AbortError when its signal aborts.
// Runs inside the private network namespace the test runner made; nothing leaves it.
// Address plan of this file: 10.50.0.0/16 .. 10.54.0.0/16 and fd50:: .. fd54::, devices tkev<n>.
import anyTest, { type TestFn } from 'ava'
import { Tun, TunError, type LinkEvent } from '../index.ts'
import { deviceTest, devName } from './helpers/device.ts'
import { INDEX, childEnv, nodeScript, spawnLines } from './helpers/child.ts'
import { ipOk } from './helpers/link.ts'

const test = anyTest as TestFn
const tag = 'ev'

/** `"mtu 1400"`, `"up"`, `"address-added 10.50.0.1/24"`: short labels to compare sequences. */
function label(e: LinkEvent): string {
  switch (e.type) {
    case 'mtu':
      return `mtu ${e.mtu}`
    case 'address-added':
    case 'address-removed':
      return `${e.type} ${e.address.cidr}`
    default:
      return e.type
  }
}

/** The kernel adds and removes an IPv6 link-local address by itself as the link goes up and down. */
const isLinkLocal = (e: LinkEvent) =>
  (e.type === 'address-added' || e.type === 'address-removed') && e.address.address.startsWith('fe80:')

/** Pulls events from `it` until `want` has been seen (bounded); returns every event pulled. */
async function pullUntil(it: AsyncIterator<LinkEvent>, want: string, ms = 3000): Promise<string[]> {
  const got: string[] = []
  const deadline = Date.now() + ms
  while (!got.includes(want)) {
    const left = deadline - Date.now()
    if (left <= 0) throw new Error(`no '${want}' event within ${ms} ms; got ${JSON.stringify(got)}`)
    let timer: NodeJS.Timeout | undefined
    const r = await Promise.race([
      it.next(),
      new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), left))),
    ])
    clearTimeout(timer)
    if (r === 'timeout') continue
    if (r.done) throw new Error(`events ended before '${want}'; got ${JSON.stringify(got)}`)
    if (!isLinkLocal(r.value)) got.push(label(r.value))
  }
  return got
}

deviceTest('events() sees MTU, up, down, address added and removed, made from outside with ip', async (t) => {
  await using tun = await Tun.create({ name: devName(tag) })
  const it = tun.events()[Symbol.asyncIterator]()
  const name = tun.name
  const steps: [string[], string][] = [
    [['link', 'set', name, 'mtu', '1400'], 'mtu 1400'],
    [['link', 'set', name, 'up'], 'up'],
    [['addr', 'add', '10.50.0.1/24', 'dev', name], 'address-added 10.50.0.1/24'],
    [['addr', 'add', 'fd50::1/64', 'dev', name], 'address-added fd50::1/64'],
    [['addr', 'add', '10.50.1.1/32', 'peer', '10.50.1.2', 'dev', name], 'address-added 10.50.1.1/32'],
    [['addr', 'del', '10.50.0.1/24', 'dev', name], 'address-removed 10.50.0.1/24'],
    // Not a reported kind of change: must not produce an event (checked by the next step's sequence).
    [['link', 'set', name, 'txqueuelen', '99'], ''],
    [['link', 'set', name, 'down'], 'down'],
    [['link', 'set', name, 'mtu', '1280', 'up'], 'up'],
  ]
  const seen: string[] = []
  for (const [args, want] of steps) {
    await ipOk(args)
    if (want) seen.push(...(await pullUntil(it, want)))
  }
  // Down takes the IPv6 address with it (the kernel's doing), reported as removed.
  t.deepEqual(seen, [
    'mtu 1400',
    'up',
    'address-added 10.50.0.1/24',
    'address-added fd50::1/64',
    'address-added 10.50.1.1/32',
    'address-removed 10.50.0.1/24',
    'down',
    'address-removed fd50::1/64',
    'mtu 1280',
    'up',
  ])
  // Changes made through tunkit itself are events too.
  await tun.setMtu(1300)
  t.deepEqual(await pullUntil(it, 'mtu 1300'), ['mtu 1300'])
  await tun.addAddress('10.50.2.1/24')
  t.deepEqual(await pullUntil(it, 'address-added 10.50.2.1/24'), ['address-added 10.50.2.1/24'])
  // The address event carries the whole address.
  await ipOk(['addr', 'add', '10.50.3.1/32', 'peer', '10.50.3.2', 'dev', name])
  let peerEvent: LinkEvent | undefined
  for (let i = 0; i < 10 && !peerEvent; i++) {
    const r = await it.next()
    if (!r.done && r.value.type === 'address-added' && r.value.address.address === '10.50.3.1') peerEvent = r.value
  }
  t.deepEqual(peerEvent, {
    type: 'address-added',
    address: { cidr: '10.50.3.1/32', address: '10.50.3.1', prefix: 32, family: 4, peer: '10.50.3.2' },
  })
  await it.return!()
})

deviceTest('events() ends when the device closes: a waiting loop finishes at once', async (t) => {
  const tun = await Tun.create({ name: devName(tag) })
  const got: LinkEvent[] = []
  const loop = (async () => {
    for await (const e of tun.events()) got.push(e)
    return 'ended'
  })()
  await new Promise((r) => setTimeout(r, 50))
  const t0 = performance.now()
  await tun.close()
  t.is(await loop, 'ended')
  t.true(performance.now() - t0 < 100, `took ${performance.now() - t0} ms`)
  // Nothing changed before close(), and close() ends the iteration before the link goes away: no events at all.
  t.deepEqual(got, [])
  t.throws(() => tun.events(), { code: 'ERR_TUN_CLOSED' })
})

deviceTest('an aborted signal ends events() with an AbortError; the device and new iterators carry on', async (t) => {
  await using tun = await Tun.create({ name: devName(tag) })
  const ac = new AbortController()
  const seen: string[] = []
  const loop = (async () => {
    for await (const e of tun.events({ signal: ac.signal })) seen.push(label(e))
  })()
  await ipOk(['link', 'set', tun.name, 'mtu', '1400'])
  await new Promise((r) => setTimeout(r, 100))
  ac.abort()
  await t.throwsAsync(loop, { name: 'AbortError' })
  t.deepEqual(seen, ['mtu 1400'])
  // A new iterator still works.
  const it = tun.events()[Symbol.asyncIterator]()
  await ipOk(['link', 'set', tun.name, 'mtu', '1450'])
  t.deepEqual(await pullUntil(it, 'mtu 1450'), ['mtu 1450'])
  await it.return!()
  t.false(tun.closed)
  // An already aborted signal: the first next() rejects at once, as packets() does (bounded here: a bug would hang).
  const early = tun.events({ signal: AbortSignal.abort() })[Symbol.asyncIterator]()
  const outcome = await Promise.race([
    early.next().then(
      (r) => (r.done ? 'ended' : `event ${label(r.value)}`),
      (e: Error) => e.name,
    ),
    new Promise<string>((r) => setTimeout(() => r('still waiting after 1 s'), 1000)),
  ])
  await early.return!()
  t.is(outcome, 'AbortError')
})

deviceTest('two iterators each see every event; break ends one; another device events are not ours', async (t) => {
  await using tun = await Tun.create({ name: devName(tag) })
  await using other = await Tun.create({ name: devName(tag) })
  const a = tun.events()[Symbol.asyncIterator]()
  const b = tun.events()[Symbol.asyncIterator]()
  await ipOk(['link', 'set', other.name, 'mtu', '1111'])
  await ipOk(['link', 'set', other.name, 'up'])
  await ipOk(['link', 'set', tun.name, 'mtu', '1234'])
  // The first event either sees is ours: nothing of `other` leaked in.
  t.deepEqual(await pullUntil(a, 'mtu 1234'), ['mtu 1234'])
  t.deepEqual(await pullUntil(b, 'mtu 1234'), ['mtu 1234'])
  // Ending `a` (what `break` does) leaves `b` running.
  await a.return!()
  t.deepEqual(await a.next(), { value: undefined, done: true })
  await ipOk(['link', 'set', tun.name, 'mtu', '1235'])
  t.deepEqual(await pullUntil(b, 'mtu 1235'), ['mtu 1235'])
  // `for await` with break.
  const loop = (async () => {
    for await (const e of tun.events()) if (e.type === 'mtu' && e.mtu === 1236) break
    return 'broke out'
  })()
  await new Promise((r) => setTimeout(r, 50))
  await ipOk(['link', 'set', tun.name, 'mtu', '1236'])
  t.is(await loop, 'broke out')
  await b.return!()
})

test('events() of an in-memory device is ERR_TUN_UNSUPPORTED (it has no link)', async (t) => {
  const [x, y] = Tun.createMemoryPair()
  t.throws(() => x.events(), { instanceOf: TunError, code: 'ERR_TUN_UNSUPPORTED' })
  await x.close()
  await y.close()
})

deviceTest(
  'a signal that is not an AbortSignal is a typed error and leaves nothing behind (the process can exit)',
  async (t) => {
    // In a child process: a subscription left behind by the refused call would keep it alive after close().
    const name = devName(tag)
    const child = spawnLines(
      nodeScript(`import { Tun } from ${JSON.stringify(INDEX)}
import { execFileSync } from 'node:child_process'
const tun = await Tun.create({ name: ${JSON.stringify(name)} })
try { tun.events({ signal: 'soon' }); console.log('accepted') } catch (e) { console.log(e.code ?? e.name) }
execFileSync('ip', ['link', 'set', ${JSON.stringify(name)}, 'mtu', '1400'])
await new Promise((r) => setTimeout(r, 200))
await tun.close()
console.log('closed')`),
      { env: childEnv },
    )
    try {
      t.is(await child.line(20_000, 'the outcome of events()'), 'ERR_TUN_INVALID_ARGUMENT')
      t.is(await child.line(5000, 'close'), 'closed')
      const timer = setTimeout(() => void child.kill(), 5000)
      const { code, signal } = await child.exited
      clearTimeout(timer)
      t.is(signal, null, 'the process did not exit by itself within 5 s of close()')
      t.is(code, 0)
      t.notRegex(child.stderr(), /Uncaught N-API callback exception/)
    } finally {
      await child.kill()
    }
  },
)

/** What `p` settled with within `ms`: `{ value }`, `{ error }`, or `'pending'`. */
async function within<T>(p: Promise<T>, ms: number): Promise<{ value: T } | { error: unknown } | 'pending'> {
  let timer: NodeJS.Timeout | undefined
  const r = await Promise.race([
    p.then(
      (value) => ({ value }),
      (error: unknown) => ({ error }),
    ),
    new Promise<'pending'>((resolve) => (timer = setTimeout(() => resolve('pending'), ms))),
  ])
  clearTimeout(timer)
  return r
}

deviceTest(
  'nobody iterating: the newest 1024 events wait, older ones are dropped and reported as overflow',
  async (t) => {
    await using tun = await Tun.create({ name: devName(tag) })
    const it = tun.events()[Symbol.asyncIterator]()
    // 3000 MTU changes (each a different value from the one before: one event each), with nobody calling next().
    const n = 3000
    const mtuOf = (i: number) => 1300 + (i % 500)
    for (let i = 0; i < n; i++) await tun.setMtu(mtuOf(i))
    // Let the event thread read every notification (it has no way to say it is done).
    await new Promise((r) => setTimeout(r, 500))
    const first = await it.next()
    t.deepEqual(first, { value: { type: 'overflow', lost: n - 1024 }, done: false })
    // Then exactly the newest 1024, in order, and nothing more: that is all that was kept.
    const got: string[] = []
    let pending: Promise<IteratorResult<LinkEvent>>
    for (;;) {
      pending = it.next()
      const r = await within(pending, 200)
      if (r === 'pending') break
      if (!('value' in r) || r.value.done) return t.fail(`unexpected ${JSON.stringify(r)}`)
      got.push(label(r.value.value))
      if (got.length > 2000) break
    }
    const want = Array.from({ length: 1024 }, (_, k) => `mtu ${mtuOf(n - 1024 + k)}`)
    t.is(got.length, 1024)
    t.deepEqual(got, want)
    // Caught up: the next change comes alone (to the next() still waiting), with no overflow before it.
    await tun.setMtu(1280)
    t.deepEqual(await within(pending, 3000), { value: { value: { type: 'mtu', mtu: 1280 }, done: false } })
    await it.return!()
  },
)

deviceTest('concurrent next() calls are served in order, each its own event; all settle when it ends', async (t) => {
  await using tun = await Tun.create({ name: devName(tag) })
  const mtuOf = (r: unknown) => {
    const v = r as { value?: IteratorResult<LinkEvent> }
    return v.value && !v.value.done && v.value.value.type === 'mtu' ? v.value.value.mtu : JSON.stringify(r)
  }
  // Three waiting at once; two events: the first two get one each, in order; the third keeps waiting.
  const it = tun.events()[Symbol.asyncIterator]()
  const [p1, p2, p3] = [it.next(), it.next(), it.next()]
  await tun.setMtu(1400)
  await tun.setMtu(1401)
  t.is(mtuOf(await within(p1, 2000)), 1400)
  t.is(mtuOf(await within(p2, 2000)), 1401)
  t.is(await within(p3, 200), 'pending')
  // return() settles every waiting call with done.
  const p4 = it.next()
  await it.return!()
  t.deepEqual(await within(p3, 1000), { value: { value: undefined, done: true } })
  t.deepEqual(await within(p4, 1000), { value: { value: undefined, done: true } })

  // An abort: the first waiting call gets the AbortError, the others end.
  const ac = new AbortController()
  const ab = tun.events({ signal: ac.signal })[Symbol.asyncIterator]()
  const [a1, a2] = [ab.next(), ab.next()]
  ac.abort()
  const r1 = await within(a1, 1000)
  t.is(typeof r1 === 'object' && 'error' in r1 ? (r1.error as Error).name : JSON.stringify(r1), 'AbortError')
  t.deepEqual(await within(a2, 1000), { value: { value: undefined, done: true } })

  // close(): every waiting call of every iterator ends.
  const c = tun.events()[Symbol.asyncIterator]()
  const d = tun.events()[Symbol.asyncIterator]()
  const waiting = [c.next(), c.next(), d.next(), d.next()]
  await tun.close()
  for (const w of waiting) t.deepEqual(await within(w, 1000), { value: { value: undefined, done: true } })
})

deviceTest('an events iterator keeps the process alive only while a next() waits', async (t) => {
  const script = (name: string, body: string) =>
    nodeScript(`import { Tun } from ${JSON.stringify(INDEX)}
const tun = await Tun.create({ name: ${JSON.stringify(name)} })
${body}`)
  // Never iterated, never closed: the process exits by itself.
  const idle = spawnLines(script(devName(tag), `tun.events()\nconsole.log('subscribed')`), { env: childEnv })
  try {
    t.is(await idle.line(20_000, 'subscribed'), 'subscribed')
    const timer = setTimeout(() => void idle.kill(), 5000)
    const { code, signal } = await idle.exited
    clearTimeout(timer)
    t.is(signal, null, 'an idle events() iterator kept the process alive for 5 s')
    t.is(code, 0)
  } finally {
    await idle.kill()
  }
  // Waiting in next(): the process stays until the event comes, then exits by itself (nothing waits any more).
  const name = devName(tag)
  const waiting = spawnLines(
    script(
      name,
      `tun.events()[Symbol.asyncIterator]().next().then((r) => console.log(JSON.stringify(r.value)))
console.log('waiting')`,
    ),
    { env: childEnv },
  )
  try {
    t.is(await waiting.line(20_000, 'waiting'), 'waiting')
    const early = await Promise.race([waiting.exited, new Promise((r) => setTimeout(() => r('running'), 1500))])
    t.is(early, 'running', 'a process waiting in next() exited')
    await ipOk(['link', 'set', name, 'mtu', '1400'])
    t.deepEqual(JSON.parse(await waiting.line(5000, 'the event')), { type: 'mtu', mtu: 1400 })
    const timer = setTimeout(() => void waiting.kill(), 5000)
    const { code, signal } = await waiting.exited
    clearTimeout(timer)
    t.is(signal, null, 'the process did not exit within 5 s once nothing waited')
    t.is(code, 0)
  } finally {
    await waiting.kill()
  }
})

deviceTest('a dropped iterator is collected and its native subscription (thread) released', async (t) => {
  const name = devName(tag)
  const [node, ...rest] = nodeScript(`import { Tun } from ${JSON.stringify(INDEX)}
import { readdirSync, readFileSync } from 'node:fs'
const threads = () => readdirSync('/proc/self/task').filter((id) => {
  try { return readFileSync('/proc/self/task/' + id + '/comm', 'utf8').trim() === 'tunkit-events' } catch { return false }
}).length
const tun = await Tun.create({ name: ${JSON.stringify(name)} })
const before = threads()
await (async () => {
  // 20 never iterated; 20 that took an event and were then dropped.
  const its = Array.from({ length: 40 }, () => tun.events()[Symbol.asyncIterator]())
  await tun.setMtu(1400)
  for (const it of its.slice(20)) await it.next()
})()
const during = threads()
let after = during
for (const deadline = Date.now() + 5000; after > before && Date.now() < deadline; after = threads()) {
  globalThis.gc()
  await new Promise((r) => setTimeout(r, 20))
}
// The device and a new iterator still work.
const it = tun.events()[Symbol.asyncIterator]()
await tun.setMtu(1401)
const r = await it.next()
console.log(JSON.stringify({ before, during, after, next: r.value }))
await tun.close()`)
  const child = spawnLines([node!, '--expose-gc', ...rest], { env: childEnv })
  try {
    const out = JSON.parse(await child.line(30_000, 'the thread counts')) as Record<string, unknown>
    t.deepEqual(out, { before: 0, during: 40, after: 0, next: { type: 'mtu', mtu: 1401 } })
    t.is((await child.exited).code, 0)
  } finally {
    await child.kill()
  }
})
