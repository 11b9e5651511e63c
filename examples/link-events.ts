// Live configuration and link events: a TUN is configured while it runs (addresses, routes, MTU, up/down), partly
// through tunkit and partly from outside with `ip`, and tun.events() prints every change the kernel reports.
//
//   node --import tsx examples/link-events.ts      (makes a private network namespace; nothing leaves it)
import { execFileSync } from 'node:child_process'
import { Tun, type LinkEvent } from '../index.ts'
import { ensureNetns } from './netns.ts'

ensureNetns(import.meta.url)

function show(e: LinkEvent): string {
  if (e.type === 'mtu') return `mtu ${e.mtu}`
  if (e.type === 'address-added' || e.type === 'address-removed') {
    return `${e.type} ${e.address.cidr}${e.address.peer ? ` peer ${e.address.peer}` : ''}`
  }
  return e.type
}

await using tun = await Tun.create({ name: 'tun0' })
const ac = new AbortController()
const watcher = (async () => {
  try {
    for await (const e of tun.events({ signal: ac.signal })) console.log(`  event: ${show(e)}`)
  } catch (e) {
    if ((e as Error).name !== 'AbortError') throw e
  }
})()
const step = async (what: string, f: () => unknown) => {
  console.log(what)
  await f()
  await new Promise((r) => setTimeout(r, 50)) // let the event arrive before the next step prints
}
const ip = (...args: string[]) => execFileSync('ip', args)

await step('tun.addAddress("10.84.0.1/24") and ("fd84::1/64")', async () => {
  await tun.addAddress('10.84.0.1/24')
  await tun.addAddress('fd84::1/64')
})
await step('tun.up()', () => tun.up())
await step('tun.addRoute({ to: "10.85.0.0/16", metric: 10 })', () => tun.addRoute({ to: '10.85.0.0/16', metric: 10 }))
await step('$ ip link set tun0 mtu 1400   (from outside)', () => ip('link', 'set', 'tun0', 'mtu', '1400'))
await step('$ ip addr add 10.86.0.1/32 peer 10.86.0.2 dev tun0', () =>
  ip('addr', 'add', '10.86.0.1/32', 'peer', '10.86.0.2', 'dev', 'tun0'),
)
await step('tun.removeAddress("10.84.0.1/24")', () => tun.removeAddress('10.84.0.1/24'))

const link = tun.link()
console.log(`\nlink: mtu ${link.mtu}, up ${link.up}, txqueuelen ${link.txQueueLength}`)
console.log(`addresses: ${(await tun.addresses()).map((a) => a.cidr).join(', ')}`)
console.log(
  `routes: ${(await tun.routes()).map((r) => `${r.to}${r.metric !== undefined ? ` metric ${r.metric}` : ''}`).join(', ')}`,
)

await step('\ntun.down()', () => tun.down())
ac.abort()
await watcher
