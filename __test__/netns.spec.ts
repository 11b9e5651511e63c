// Devices in other network namespaces (the `netns` option of Tun.create and Tun.open): one process runs devices in
// several namespaces and forwards between them, as container and VPN tools do.
// The namespaces are made by the test inside the runner's private one and held by `unshare --net sleep` children
// (see helpers/ns.ts for why not `ip netns add`); they are removed when the test ends, pass or fail.
// Address plan of this file: 10.60.0.0/16 .. 10.69.0.0/16 and fd60:: .. fd69::, devices tkns<n>.
import { closeSync, openSync } from 'node:fs'
import { Tun, TunError, type LinkEvent } from '../index.ts'
import { deviceTest, devName } from './helpers/device.ts'
import { ipAddrs, ipLink, ipOk, linkExists, waitGone } from './helpers/link.ts'
import { holdNetns, type HeldNetns } from './helpers/ns.ts'

const tag = 'ns'

/** Runs `f` with `n` fresh namespaces, and always removes them. */
async function withNamespaces<T>(n: number, f: (ns: HeldNetns[]) => Promise<T>): Promise<T> {
  const held: HeldNetns[] = []
  try {
    for (let i = 0; i < n; i++) held.push(await holdNetns())
    return await f(held)
  } finally {
    await Promise.all(held.map((h) => h.close()))
  }
}

/** Copies every packet read from `from` into `to` until `from` closes; returns how many. */
async function forward(from: Tun, to: Tun): Promise<number> {
  let n = 0
  for await (const batch of from.batches()) {
    await to.write(batch)
    n += batch.length
  }
  return n
}

deviceTest(
  'netns: a device made in another namespace is there and not here; control and events work across',
  async (t) => {
    await withNamespaces(1, async ([a]) => {
      const name = devName(tag)
      await using tun = await Tun.create({ name, netns: a!.path, addresses: ['10.60.0.1/24', 'fd60::1/64'] })
      t.false(await linkExists(name), 'the device must not appear in the caller namespace')
      const k = (await ipLink(name, a!.path))!
      t.truthy(k, 'the device is in namespace A')
      t.is(k.ifindex, tun.index)
      t.true(k.flags.includes('UP'))
      const addrs = (await ipAddrs(name, a!.path)).map((x) => `${x.local}/${x.prefixlen}`)
      t.true(addrs.includes('10.60.0.1/24') && addrs.includes('fd60::1/64'), addrs.join(' '))

      // Live configuration goes to namespace A.
      await tun.setMtu(1400)
      await tun.addAddress('10.60.1.1/24')
      await tun.addRoute({ to: '10.61.0.0/16', metric: 9 })
      t.is((await ipLink(name, a!.path))!.mtu, 1400)
      t.true((await ipAddrs(name, a!.path)).some((x) => x.local === '10.60.1.1'))
      t.regex(await ipOk(['route', 'show', 'dev', name], a!.path), /10\.61\.0\.0\/16 .*metric 9/)
      t.is(tun.link().mtu, 1400)

      // Events of namespace A: changes made there from outside.
      const evs: LinkEvent[] = []
      const ac = new AbortController()
      const watching = (async () => {
        try {
          for await (const e of tun.events({ signal: ac.signal })) {
            evs.push(e)
            if (e.type === 'mtu' && e.mtu === 1300) return
          }
        } catch (e) {
          if ((e as Error).name !== 'AbortError') throw e
        }
      })()
      await new Promise((r) => setTimeout(r, 50))
      await ipOk(['link', 'set', name, 'mtu', '1300'], a!.path)
      const timer = setTimeout(() => ac.abort(), 5000)
      await watching
      clearTimeout(timer)
      t.deepEqual(evs.at(-1), { type: 'mtu', mtu: 1300 })
      await tun.close()
      await t.notThrowsAsync(() => waitGone(name, 2000, a!.path))
    })
  },
)

deviceTest('one process forwards ping between TUN devices in two namespaces (IPv4 and IPv6)', async (t) => {
  await withNamespaces(2, async ([a, b]) => {
    await using ta = await Tun.create({
      name: devName(tag),
      netns: a!.path,
      addresses: ['10.62.0.1/24', 'fd62::1/64'],
      routes: [{ to: '10.63.0.0/24' }, { to: 'fd63::/64' }],
    })
    await using tb = await Tun.create({
      name: devName(tag),
      netns: b!.path,
      addresses: ['10.63.0.1/24', 'fd63::1/64'],
      routes: [{ to: '10.62.0.0/24' }, { to: 'fd62::/64' }],
    })
    const ab = forward(ta, tb)
    const ba = forward(tb, ta)
    // From namespace A to a real address of namespace B, through JS in this process, and the replies back.
    const p4 = await a!.exec('ping', ['-c', '3', '-i', '0.1', '-W', '2', '-n', '10.63.0.1'])
    t.is(p4.code, 0, p4.stdout + p4.stderr)
    t.regex(p4.stdout, /3 packets transmitted, 3 received, 0% packet loss/)
    const p6 = await a!.exec('ping', ['-6', '-c', '3', '-i', '0.1', '-W', '2', '-n', 'fd63::1'])
    t.is(p6.code, 0, p6.stdout + p6.stderr)
    // And the other way round.
    const back = await b!.exec('ping', ['-c', '2', '-i', '0.1', '-W', '2', '-n', '10.62.0.1'])
    t.is(back.code, 0, back.stdout + back.stderr)
    // Neither namespace has a route to the other except through the TUNs, and ours has neither device.
    t.false(await linkExists(ta.name))
    t.false(await linkExists(tb.name))
    await ta.close()
    await tb.close()
    const [nab, nba] = await Promise.all([ab, ba])
    t.true(nab >= 8 && nba >= 8, `forwarded ${nab} A→B, ${nba} B→A`)
  })
})

deviceTest('Tun.open with netns attaches to a persistent device in that namespace', async (t) => {
  await withNamespaces(1, async ([a]) => {
    const name = devName(tag)
    const made = await Tun.create({ name, netns: a!.path, persist: true, addresses: ['10.64.0.1/24'] })
    await made.close()
    t.true(await linkExists(name, a!.path), 'persistent in A')
    // Not in our namespace.
    t.is(((await t.throwsAsync(() => Tun.open(name))) as TunError).code, 'ERR_TUN_NOT_FOUND')
    const tun = await Tun.open(name, { netns: a!.path })
    t.is(tun.index, (await ipLink(name, a!.path))!.ifindex)
    t.true((await tun.addresses()).some((x) => x.cidr === '10.64.0.1/24'))
    await tun.setPersist(false)
    await tun.close()
    await t.notThrowsAsync(() => waitGone(name, 2000, a!.path))
  })
})

deviceTest('netns: typed errors for a path that is missing or not a network namespace', async (t) => {
  const missing = (await t.throwsAsync(() =>
    Tun.create({ name: devName(tag), netns: '/proc/999999999/ns/net' }),
  )) as TunError
  t.is(missing.code, 'ERR_TUN_NOT_FOUND')
  t.is(missing.errno, 2)
  const notNs = (await t.throwsAsync(() => Tun.create({ name: devName(tag), netns: '/proc/self/ns/uts' }))) as TunError
  t.is(notNs.code, 'ERR_TUN_INVALID_ARGUMENT', notNs.message)
  t.is(notNs.errno, 22)
  const dir = (await t.throwsAsync(() => Tun.create({ name: devName(tag), netns: '/proc' }))) as TunError
  t.is(dir.code, 'ERR_TUN_INVALID_ARGUMENT', dir.message)
  t.is(
    ((await t.throwsAsync(() => Tun.open('tkns0', { netns: '/nonexistent' }))) as TunError).code,
    'ERR_TUN_NOT_FOUND',
  )
})

deviceTest('netns as an open descriptor: /proc/self/fd/N of a namespace whose holder has gone', async (t) => {
  const a = await holdNetns()
  const fd = openSync(a.path, 'r')
  try {
    // Only our descriptor keeps the namespace alive now.
    await a.close()
    const path = `/proc/self/fd/${fd}`
    const name = devName(tag)
    await using tun = await Tun.create({ name, netns: path, addresses: ['10.65.0.1/24'] })
    // nsenter resolves the path in its own process, so it gets ours by pid.
    const ours = `/proc/${process.pid}/fd/${fd}`
    t.is((await ipLink(name, ours))?.ifindex, tun.index)
    t.false(await linkExists(name))
  } finally {
    closeSync(fd)
  }
})
