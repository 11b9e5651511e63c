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
