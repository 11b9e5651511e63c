// Live configuration of real devices over rtnetlink: addresses, routes, MTU, link state, queue length, and the
// typed errors of each, checked against `ip` (iproute2) as an independent reader of the kernel's state.
// Runs inside the private network namespace the test runner made; nothing leaves it.
// Address plan of this file: 10.31.0.0 .. 10.39.255.255 and fd31:: .. fd39::, devices tkctl<n>.
import dgram from 'node:dgram'
import { Tun, TunError, TunQueue, packet, type RouteSpec, type TunOptions, type TunErrorCode } from '../index.ts'
import { deviceTest, devName } from './helpers/device.ts'
import { addrLabel, ipAddrs, ipLink, ipOk, ipRoutes, routeDst } from './helpers/link.ts'
import { run, send, udpSocket } from './helpers/net.ts'

const tag = 'ctl'

/** The first UDP datagram to `port` that arrives on `tun` (its parsed header and the packet), bounded by `ms`. */
async function firstUdp(tun: Tun, port: number, ms = 3000): Promise<{ dst: string; payload: Buffer }> {
  const ac = new AbortController()
  const timer = setTimeout(() => ac.abort(), ms)
  try {
    for await (const p of tun.packets({ signal: ac.signal })) {
      const i = packet.parse(p)
      if (i?.protocol === packet.PROTO_UDP && i.dstPort === port) {
        return { dst: i.dst, payload: Buffer.from(p.subarray(i.payloadOffset, i.payloadOffset + i.payloadLength)) }
      }
    }
    throw new Error('the device closed')
  } finally {
    clearTimeout(timer)
  }
}

/** Sends one datagram to `dst:port` and returns what the TUN read. */
async function routedDatagram(tun: Tun, dst: string, port: number): Promise<{ dst: string; payload: Buffer }> {
  const s = await udpSocket(dst.includes(':') ? 'udp6' : 'udp4')
  try {
    const reading = firstUdp(tun, port)
    const payload = Buffer.from(`to ${dst}`)
    await send(s, payload, port, dst)
    return await reading
  } finally {
    s.close()
  }
}

/** Answers ICMP echo requests on `tun` until `signal` aborts or the device closes. */
async function echo(tun: Tun, signal: AbortSignal): Promise<number> {
  let n = 0
  try {
    for await (const p of tun.packets({ signal })) {
      const r = packet.echoReply(p)
      if (r) {
        await tun.write(r)
        n++
      }
    }
  } catch (e) {
    if ((e as Error).name !== 'AbortError') throw e
  }
  return n
}

/** Pings `dst` three times through `tun` (which answers from JS); returns ping's exit code and output. */
async function pingThrough(tun: Tun, dst: string): Promise<{ code: number | null; out: string; answered: number }> {
  const ac = new AbortController()
  const responder = echo(tun, ac.signal)
  const r = await run('ping', [...(dst.includes(':') ? ['-6'] : []), '-c', '3', '-i', '0.05', '-W', '2', '-n', dst])
  ac.abort()
  return { code: r.code, out: r.stdout + r.stderr, answered: await responder }
}

deviceTest(
  'addAddress/removeAddress/addresses: IPv4, IPv6 and point-to-point peers, as `ip addr` sees them',
  async (t) => {
    await using tun = await Tun.create({ name: devName(tag) })
    t.deepEqual(await tun.addresses(), [], 'a new device without addresses has none (it is down: no link-local yet)')

    await tun.addAddress('10.31.0.1/24')
    await tun.addAddress('fd31::1/64')
    await tun.addAddress('10.32.0.1/32', { peer: '10.32.0.2' })
    await tun.addAddress('fd32::1/128', { peer: 'fd32::2' })

    const ours = (await tun.addresses()).filter((a) => !a.address.startsWith('fe80:'))
    const byCidr = new Map(ours.map((a) => [a.cidr, a]))
    t.deepEqual(byCidr.get('10.31.0.1/24'), { cidr: '10.31.0.1/24', address: '10.31.0.1', prefix: 24, family: 4 })
    t.deepEqual(byCidr.get('fd31::1/64'), { cidr: 'fd31::1/64', address: 'fd31::1', prefix: 64, family: 6 })
    t.deepEqual(byCidr.get('10.32.0.1/32'), {
      cidr: '10.32.0.1/32',
      address: '10.32.0.1',
      prefix: 32,
      family: 4,
      peer: '10.32.0.2',
    })
    t.deepEqual(byCidr.get('fd32::1/128'), {
      cidr: 'fd32::1/128',
      address: 'fd32::1',
      prefix: 128,
      family: 6,
      peer: 'fd32::2',
    })
    t.is(ours.length, 4, JSON.stringify(ours))

    // iproute2 reads the same from the kernel.
    const seen = (await ipAddrs(tun.name))
      .filter((a) => !a.local.startsWith('fe80:'))
      .map(addrLabel)
      .sort()
    t.deepEqual(seen, ['10.31.0.1/24', '10.32.0.1/32 peer 10.32.0.2', 'fd31::1/64', 'fd32::1/128 peer fd32::2'])

    // Addresses added from outside show up too: addresses() is read from the kernel, not remembered.
    await ipOk(['addr', 'add', '10.33.0.1/16', 'dev', tun.name])
    t.true((await tun.addresses()).some((a) => a.cidr === '10.33.0.1/16'))

    await tun.removeAddress('10.31.0.1/24')
    await tun.removeAddress('fd31::1/64')
    await tun.removeAddress('10.33.0.1/16')
    const global = async () =>
      (await tun.addresses())
        .filter((a) => !a.address.startsWith('fe80:'))
        .map((a) => a.cidr)
        .sort()
    t.deepEqual(await global(), ['10.32.0.1/32', 'fd32::1/128'])
    t.deepEqual(
      (await ipAddrs(tun.name))
        .filter((a) => !a.local.startsWith('fe80:'))
        .map(addrLabel)
        .sort(),
      ['10.32.0.1/32 peer 10.32.0.2', 'fd32::1/128 peer fd32::2'],
    )
    // Point-to-point addresses are removed by the CIDR that addresses() reports for them.
    await tun.removeAddress('fd32::1/128')
    await tun.removeAddress('10.32.0.1/32')
    t.deepEqual(await global(), [])
    t.deepEqual(
      (await ipAddrs(tun.name)).filter((a) => !a.local.startsWith('fe80:')),
      [],
    )
  },
)

deviceTest(
  'addRoute/removeRoute/routes: IPv4 and IPv6 with metric, table and gateway, as `ip route` sees them',
  async (t) => {
    await using tun = await Tun.create({ name: devName(tag), addresses: ['10.31.0.1/24', 'fd31::1/64'] })
    const routes = [
      { to: '10.34.0.0/16', metric: 50 },
      { to: 'fd34::/48', metric: 60 },
      { to: '10.35.0.0/16', table: 100 },
      { to: 'fd35::/48', table: 1000, metric: 7 },
      { to: '10.36.0.0/16', via: '10.31.0.2' },
      { to: 'fd36::/48', via: 'fd31::2', metric: 5 },
    ]
    for (const r of routes) await tun.addRoute(r)

    const got = await tun.routes()
    const key = (r: RouteSpec) => `${r.to} via=${r.via} metric=${r.metric} table=${r.table}`
    for (const r of routes)
      t.true(
        got.some((g) => key(g) === key(r)),
        `routes() has ${key(r)}: ${got.map(key).join(', ')}`,
      )
    // The kernel's own prefix routes are listed too (the doc says so).
    t.true(got.some((g) => g.to === '10.31.0.0/24'))

    const ipr = await ipRoutes(tun.name)
    const find = (dst: string) => ipr.find((r) => routeDst(r) === dst)
    t.is(find('10.34.0.0/16')?.metric, 50)
    t.is(find('fd34::/48')?.metric, 60)
    t.is(find('10.35.0.0/16')?.table, '100')
    t.is(find('fd35::/48')?.table, '1000')
    t.is(find('fd35::/48')?.metric, 7)
    t.is(find('10.36.0.0/16')?.gateway, '10.31.0.2')
    t.is(find('fd36::/48')?.gateway, 'fd31::2')

    for (const r of routes) await tun.removeRoute(r)
    const after = await tun.routes()
    for (const r of routes)
      t.false(
        after.some((g) => g.to === r.to),
        `${r.to} is still there`,
      )
    const ipAfter = (await ipRoutes(tun.name)).map(routeDst)
    for (const r of routes) t.false(ipAfter.includes(r.to), `ip route still lists ${r.to}`)
  },
)

deviceTest('routes given to Tun.create are in the kernel once it returns', async (t) => {
  await using tun = await Tun.create({
    name: devName(tag),
    addresses: ['10.31.0.1/24', 'fd31::1/64'],
    routes: [
      { to: '10.37.0.0/16', metric: 20 },
      { to: 'fd37::/48', via: 'fd31::2' },
      { to: '10.38.0.0/16', table: 200 },
    ],
  })
  t.true(tun.link().up)
  const got = await tun.routes()
  t.true(
    got.some((r) => r.to === '10.37.0.0/16' && r.metric === 20),
    JSON.stringify(got),
  )
  t.true(
    got.some((r) => r.to === 'fd37::/48' && r.via === 'fd31::2'),
    JSON.stringify(got),
  )
  t.true(
    got.some((r) => r.to === '10.38.0.0/16' && r.table === 200),
    JSON.stringify(got),
  )
  const ipr = await ipRoutes(tun.name)
  t.true(ipr.some((r) => routeDst(r) === '10.37.0.0/16' && r.metric === 20))
  t.true(ipr.some((r) => routeDst(r) === 'fd37::/48' && r.gateway === 'fd31::2'))
  t.true(ipr.some((r) => routeDst(r) === '10.38.0.0/16' && r.table === '200'))
})

deviceTest(
  'a route works: datagrams to a routed prefix outside the device own one are read from the TUN',
  async (t) => {
    await using tun = await Tun.create({ name: devName(tag), addresses: ['10.31.0.1/24', 'fd31::1/64'] })
    // Without a route, 10.34.x.x has nowhere to go in this namespace.
    const s = await udpSocket('udp4')
    const err = await t.throwsAsync(() => send(s, Buffer.from('x'), 9000, '10.34.1.2'))
    t.regex(String((err as NodeJS.ErrnoException).code), /ENETUNREACH|EHOSTUNREACH/)
    s.close()

    await tun.addRoute({ to: '10.34.0.0/16' })
    await tun.addRoute({ to: 'fd34::/48' })
    await tun.addRoute({ to: '10.35.0.0/16', via: '10.31.0.2' })
    t.deepEqual(await routedDatagram(tun, '10.34.1.2', 9101), {
      dst: '10.34.1.2',
      payload: Buffer.from('to 10.34.1.2'),
    })
    t.deepEqual(await routedDatagram(tun, 'fd34::1:2', 9102), {
      dst: 'fd34::1:2',
      payload: Buffer.from('to fd34::1:2'),
    })
    t.deepEqual(await routedDatagram(tun, '10.35.7.7', 9103), {
      dst: '10.35.7.7',
      payload: Buffer.from('to 10.35.7.7'),
    })

    // A route in another table is used once a rule points there.
    await tun.addRoute({ to: '10.39.0.0/16', table: 150 })
    await ipOk(['rule', 'add', 'to', '10.39.0.0/16', 'lookup', '150', 'pref', '1500'])
    try {
      t.deepEqual(await routedDatagram(tun, '10.39.0.9', 9104), {
        dst: '10.39.0.9',
        payload: Buffer.from('to 10.39.0.9'),
      })
    } finally {
      await ipOk(['rule', 'del', 'pref', '1500'])
    }

    // After removeRoute the prefix is unreachable again.
    await tun.removeRoute({ to: '10.34.0.0/16' })
    const s2 = await udpSocket('udp4')
    await t.throwsAsync(() => send(s2, Buffer.from('x'), 9000, '10.34.1.2'))
    s2.close()
  },
)

deviceTest('setMtu, up, down, setTxQueueLength: read back from the kernel, and `ip link` agrees', async (t) => {
  await using tun = await Tun.create({ name: devName(tag) })
  let l = tun.link()
  t.is(l.name, tun.name)
  t.is(l.index, tun.index)
  t.false(l.up, 'no addresses, no up option: the link stays down')
  t.is((await ipLink(tun.name))!.operstate, 'DOWN')

  await tun.setMtu(1400)
  await tun.setTxQueueLength(321)
  await tun.up()
  l = tun.link()
  t.is(l.mtu, 1400)
  t.is(tun.mtu, 1400)
  t.is(l.txQueueLength, 321)
  t.true(l.up)
  let k = (await ipLink(tun.name))!
  t.is(k.mtu, 1400)
  t.is(k.txqlen, 321)
  t.true(k.flags.includes('UP'))

  await tun.down()
  t.false(tun.link().up)
  k = (await ipLink(tun.name))!
  t.false(k.flags.includes('UP'))

  // Changed from outside: the getters read the kernel, not a cache.
  await ipOk(['link', 'set', tun.name, 'mtu', '1280', 'txqueuelen', '77', 'up'])
  l = tun.link()
  t.deepEqual([l.mtu, l.txQueueLength, l.up, tun.mtu], [1280, 77, true, 1280])
  await tun.setMtu(65535)
  t.is((await ipLink(tun.name))!.mtu, 65535)
  // The smallest MTU, on a link that is down (so the kernel has given it no IPv6 link-local address).
  await tun.down()
  await tun.setMtu(68)
  t.is(tun.mtu, 68)
  t.is((await ipLink(tun.name))!.mtu, 68)
})

deviceTest(
  'an up IPv4-only link takes an MTU below 1280 (the kernel link-local address is no IPv6 configuration)',
  async (t) => {
    await using tun = await Tun.create({ name: devName(tag), addresses: ['10.31.0.1/24'] })
    // Being up, the link has the IPv6 link-local address the kernel gives every TUN; the user asked for no IPv6.
    t.true((await tun.addresses()).some((a) => a.address.startsWith('fe80:')))
    // The kernel accepts this (and turns IPv6 off on the link); iproute2 does the same.
    await tun.setMtu(576)
    t.is(tun.mtu, 576)
    t.is((await ipLink(tun.name))!.mtu, 576)
    t.deepEqual(await routedDatagram(tun, '10.31.0.9', 9107), {
      dst: '10.31.0.9',
      payload: Buffer.from('to 10.31.0.9'),
    })
  },
)

deviceTest('errors are typed with code and errno, and the device keeps working after each', async (t) => {
  const name = devName(tag)
  await using tun = await Tun.create({
    name,
    addresses: ['10.31.0.1/24', 'fd31::1/64'],
    routes: [{ to: '10.34.0.0/16' }],
  })
  const fails = async (what: string, f: () => Promise<unknown>, code: TunErrorCode, errno: number | undefined) => {
    const e = (await t.throwsAsync(f, undefined, what)) as TunError
    t.true(e instanceof TunError, what)
    t.is(e.code, code, `${what}: ${e.message}`)
    t.is(e.errno, errno, `${what}: ${e.message}`)
    return e
  }
  // Duplicates: EEXIST.
  await fails('duplicate IPv4 address', () => tun.addAddress('10.31.0.1/24'), 'ERR_TUN_EXISTS', 17)
  await fails('duplicate IPv6 address', () => tun.addAddress('fd31::1/64'), 'ERR_TUN_EXISTS', 17)
  await fails('duplicate route', () => tun.addRoute({ to: '10.34.0.0/16' }), 'ERR_TUN_EXISTS', 17)
  // Routes to nowhere: a gateway outside every prefix of the link.
  const un4 = await fails(
    'unreachable IPv4 gateway',
    () => tun.addRoute({ to: '10.35.0.0/16', via: '10.99.0.1' }),
    'ERR_TUN_UNREACHABLE',
    101,
  )
  t.is(un4.syscall, 'netlink')
  await fails(
    'unreachable IPv6 gateway',
    () => tun.addRoute({ to: 'fd35::/48', via: 'fd99::1' }),
    'ERR_TUN_UNREACHABLE',
    113,
  )
  // Removing what is not there.
  await fails('absent IPv4 address', () => tun.removeAddress('10.31.0.9/24'), 'ERR_TUN_NOT_FOUND', 99)
  await fails('absent IPv6 address', () => tun.removeAddress('fd31::9/64'), 'ERR_TUN_NOT_FOUND', 99)
  await fails('absent route', () => tun.removeRoute({ to: '10.77.0.0/16' }), 'ERR_TUN_NOT_FOUND', 3)
  await fails(
    'route in the wrong table',
    () => tun.removeRoute({ to: '10.34.0.0/16', table: 100 }),
    'ERR_TUN_NOT_FOUND',
    3,
  )
  // MTU: tunkit's own checks (no errno) ...
  await fails('MTU below IPv6 minimum', () => tun.setMtu(1000), 'ERR_TUN_INVALID_MTU', undefined)
  await fails('MTU above 65535', () => tun.setMtu(70_000), 'ERR_TUN_INVALID_MTU', undefined)
  t.is(tun.mtu, 1500, 'a refused MTU left the MTU alone')
  // ... and one the kernel refuses: a TAP device's maximum is 65535 minus its 14-byte Ethernet header.
  const tapName = devName(tag)
  await using tap = await Tun.create({ name: tapName, mode: 'tap' })
  const e = (await t.throwsAsync(() => tap.setMtu(65535))) as TunError
  t.is(e.code, 'ERR_TUN_INVALID_MTU', e.message)
  t.is(e.errno, 22)
  t.regex(e.message, new RegExp(`setMtu 65535 on ${tapName}`))
  await tap.setMtu(65521)
  t.is(tap.mtu, 65521)

  // The device still works: the kernel pings an address behind it and JS answers, v4 and v6, and routes still go.
  const p4 = await pingThrough(tun, '10.31.0.2')
  t.is(p4.code, 0, p4.out)
  t.is(p4.answered, 3)
  const p6 = await pingThrough(tun, 'fd31::2')
  t.is(p6.code, 0, p6.out)
  t.deepEqual(await routedDatagram(tun, '10.34.0.5', 9105), { dst: '10.34.0.5', payload: Buffer.from('to 10.34.0.5') })
  const cidrs = (await tun.addresses()).map((a) => a.cidr)
  t.true(cidrs.includes('10.31.0.1/24') && cidrs.includes('fd31::1/64'))
})

deviceTest('bad input of every device-control option is a typed error before anything changes', async (t) => {
  const cases: [string, TunOptions, TunErrorCode][] = [
    ['queues 300', { queues: 300 }, 'ERR_TUN_INVALID_ARGUMENT'],
    ['queues 0', { queues: 0 }, 'ERR_TUN_INVALID_ARGUMENT'],
    ['queues 1.5', { queues: 1.5 }, 'ERR_TUN_INVALID_ARGUMENT'],
    ['queues "2"', { queues: '2' as never }, 'ERR_TUN_INVALID_ARGUMENT'],
    ['owner -1', { owner: -1 }, 'ERR_TUN_INVALID_ARGUMENT'],
    ['owner 1.5', { owner: 1.5 }, 'ERR_TUN_INVALID_ARGUMENT'],
    ['owner "root"', { owner: 'root' as never }, 'ERR_TUN_INVALID_ARGUMENT'],
    ['group -1', { group: -1 }, 'ERR_TUN_INVALID_ARGUMENT'],
    ['group 2^32', { group: 2 ** 32 }, 'ERR_TUN_INVALID_ARGUMENT'],
    ['persist "yes"', { persist: 'yes' as never }, 'ERR_TUN_INVALID_ARGUMENT'],
    ['netns /nonexistent', { netns: '/nonexistent' }, 'ERR_TUN_NOT_FOUND'],
    ['netns a regular file', { netns: '/proc/self/status' }, 'ERR_TUN_INVALID_ARGUMENT'],
    ['netns 5', { netns: 5 as never }, 'ERR_TUN_INVALID_ARGUMENT'],
    ['mac on a TUN', { mac: '02:00:00:00:00:01' }, 'ERR_TUN_INVALID_ARGUMENT'],
    ['multicast mac', { mode: 'tap', mac: '01:00:5e:00:00:01' }, 'ERR_TUN_INVALID_ADDRESS'],
    ['mac "nope"', { mode: 'tap', mac: 'nope' }, 'ERR_TUN_INVALID_ADDRESS'],
    ['txQueueLength -1', { txQueueLength: -1 }, 'ERR_TUN_INVALID_ARGUMENT'],
    ['route table 0', { routes: [{ to: '10.34.0.0/16', table: 0 }] }, 'ERR_TUN_INVALID_ARGUMENT'],
    ['route metric -1', { routes: [{ to: '10.34.0.0/16', metric: -1 }] }, 'ERR_TUN_INVALID_ARGUMENT'],
  ]
  for (const [what, opts, code] of cases) {
    const e = (await t.throwsAsync(() => Tun.create({ name: devName(tag), ...opts }), undefined, what)) as TunError
    t.true(e instanceof TunError, what)
    t.is(e.code, code, `${what}: ${e.message}`)
  }
  const links = await run('ip', ['-o', 'link', 'show'])
  t.notRegex(links.stdout, /tkctl/, 'a refused create left no device behind')

  // Attaching and adopting.
  t.is(((await t.throwsAsync(() => Tun.open('nope0'))) as TunError).code, 'ERR_TUN_NOT_FOUND')
  t.is(((await t.throwsAsync(() => Tun.open('tk%d'))) as TunError).code, 'ERR_TUN_INVALID_ARGUMENT')
  t.is(((await t.throwsAsync(() => Tun.open('lo'))) as TunError).code, 'ERR_TUN_BUSY')
  t.is(
    ((await t.throwsAsync(() => Tun.open('nope0', { netns: '/nonexistent' }))) as TunError).code,
    'ERR_TUN_NOT_FOUND',
  )
  t.throws(() => TunQueue.attach(99999), { code: 'ERR_TUN_NOT_FOUND' })
  t.throws(() => TunQueue.attach(0), { code: 'ERR_TUN_INVALID_ARGUMENT' })
  t.throws(() => Tun.fromFd(-1), { code: 'ERR_TUN_INVALID_ARGUMENT' })
  t.throws(() => Tun.fromFd('3' as never), { code: 'ERR_TUN_INVALID_ARGUMENT' })
  t.throws(() => Tun.fromFd(0), { code: 'ERR_TUN_INVALID_ARGUMENT', message: /not a TUN\/TAP descriptor/ })

  // Live calls on a device.
  await using tun = await Tun.create({ name: devName(tag), addresses: ['10.31.0.1/24'] })
  await t.throwsAsync(() => tun.setMac('02:00:00:00:00:05'), { code: 'ERR_TUN_UNSUPPORTED' })
  await t.throwsAsync(() => tun.setTxQueueLength(-1), { code: 'ERR_TUN_INVALID_ARGUMENT' })
  await t.throwsAsync(() => tun.setMtu(67), { code: 'ERR_TUN_INVALID_MTU' })
  await t.throwsAsync(() => tun.setMtu('1400' as never), { code: 'ERR_TUN_INVALID_ARGUMENT' })
  await t.throwsAsync(() => tun.addAddress('10.31.0.300/24'), { code: 'ERR_TUN_INVALID_ADDRESS' })
  await t.throwsAsync(() => tun.addAddress('10.32.0.1/32', { peer: 'fd00::1' }), { code: 'ERR_TUN_INVALID_ADDRESS' })
  await t.throwsAsync(() => tun.addRoute({ to: '10.34.0.1/16' }), { code: 'ERR_TUN_INVALID_ADDRESS' })
  await t.throwsAsync(() => tun.addRoute({ to: '10.34.0.0/16', via: 'fd31::2' }), { code: 'ERR_TUN_INVALID_ADDRESS' })
  await t.throwsAsync(() => tun.setPersist('yes' as never), { code: 'ERR_TUN_INVALID_ARGUMENT' })
  t.throws(() => tun.events({ sginal: undefined } as never), { code: 'ERR_TUN_INVALID_ARGUMENT' })
  t.throws(() => tun.queue(1), { code: 'ERR_TUN_INVALID_ARGUMENT' })
  t.throws(() => tun.detachQueue(1), { code: 'ERR_TUN_INVALID_ARGUMENT' })
  t.throws(() => tun.detachQueue(-1), { code: 'ERR_TUN_INVALID_ARGUMENT' })
  {
    await using mq = await Tun.create({ name: devName(tag), queues: 2 })
    t.throws(() => mq.queue(2), { code: 'ERR_TUN_INVALID_ARGUMENT' })
    const token = mq.detachQueue(1)
    t.throws(() => mq.detachQueue(1), { code: 'ERR_TUN_BUSY' }, 'detached twice')
    t.throws(() => mq.queue(1), { code: 'ERR_TUN_BUSY' }, 'a detached queue cannot be used here')
    // Attach it here, so the device does not outlive its close (see multiqueue.spec.ts), then a second attach.
    await TunQueue.attach(token).close()
    t.throws(() => TunQueue.attach(token), { code: 'ERR_TUN_NOT_FOUND' }, 'a token attaches once')
  }
  // Still working.
  t.deepEqual(await routedDatagram(tun, '10.31.0.7', 9106), { dst: '10.31.0.7', payload: Buffer.from('to 10.31.0.7') })
})

deviceTest('every error message names the operation and the device, including tunkit own MTU checks', async (t) => {
  const name = devName(tag)
  await using tun = await Tun.create({ name, addresses: ['10.31.0.1/24', 'fd31::1/64'] })
  const checks: [string, () => Promise<unknown>, RegExp][] = [
    ['duplicate address', () => tun.addAddress('10.31.0.1/24'), new RegExp(`^addAddress 10.31.0.1/24 on ${name}: `)],
    [
      'absent route',
      () => tun.removeRoute({ to: '10.77.0.0/16' }),
      new RegExp(`^removeRoute 10.77.0.0/16 on ${name}: `),
    ],
    ['MTU below the IPv6 minimum', () => tun.setMtu(1000), new RegExp(`^setMtu 1000 on ${name}: `)],
    ['MTU above 65535', () => tun.setMtu(70_000), new RegExp(`^setMtu 70000 on ${name}: `)],
  ]
  for (const [what, f, re] of checks) {
    const e = (await t.throwsAsync(f, undefined, what)) as TunError
    t.regex(e.message, re, what)
  }
})

deviceTest('option objects of live calls reject unknown keys and wrong types, as Tun.create does', async (t) => {
  await using tun = await Tun.create({ name: devName(tag), addresses: ['10.31.0.1/24'] })
  // A typo must not silently put the route into the main table or drop the peer.
  const bad = { code: 'ERR_TUN_INVALID_ARGUMENT' }
  await t.throwsAsync(
    () => tun.addRoute({ to: '10.34.0.0/16', tabel: 100 } as never),
    { ...bad, message: /tabel/ },
    'addRoute { tabel }',
  )
  await t.throwsAsync(
    () => tun.removeRoute({ to: '10.34.0.0/16', tabel: 100 } as never),
    { ...bad, message: /tabel/ },
    'removeRoute { tabel }',
  )
  const routes = [{ to: '10.34.0.0/16', metrc: 5 }] as never
  await t.throwsAsync(
    () => Tun.create({ name: devName(tag), routes }),
    { ...bad, message: /metrc/ },
    'create { routes: [{ metrc }] }',
  )
  await t.throwsAsync(
    () => tun.addAddress('10.32.0.1/32', { pear: '10.32.0.2' } as never),
    { ...bad, message: /pear/ },
    'addAddress { pear }',
  )
  t.deepEqual(
    (await tun.routes()).map((r) => r.to),
    ['10.31.0.0/24'],
  )
})

deviceTest(
  'an IPv6 address is usable as soon as Tun.create or addAddress resolves (not still tentative)',
  async (t) => {
    // A socket bound to the address right away must not get EADDRNOTAVAIL. The kernel marks a new IPv6 address
    // tentative until its duplicate address detection has run (on a NOARP link like a TUN, that is skipped, but only
    // once a work queue gets to it), so a library that returns before then hands out an address that cannot be used.
    const tryBind = async (address: string) => {
      const s = dgram.createSocket('udp6')
      const ok = await new Promise<string>((resolve) => {
        s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? String(e)))
        s.bind(0, address, () => resolve('ok'))
      })
      s.close()
      return ok
    }
    const failures: string[] = []
    for (let i = 0; i < 40; i++) {
      const tun = await Tun.create({ name: devName(tag), addresses: ['fd38::1/64'] })
      const r1 = await tryBind('fd38::1')
      if (r1 !== 'ok') failures.push(`create #${i}: ${r1}`)
      await tun.addAddress(`fd39::${i + 1}/64`)
      const r2 = await tryBind(`fd39::${i + 1}`)
      if (r2 !== 'ok') failures.push(`addAddress #${i}: ${r2}`)
      await tun.close()
    }
    t.deepEqual(failures, [], `${failures.length} of 80 binds failed`)
  },
)
