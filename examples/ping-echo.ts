// The demo: a TUN device whose far side is JavaScript. The kernel's `ping` sends echo requests to 10.7.0.2 (and
// fd07::2), which the kernel routes into the TUN; this program reads them, prints each packet, and writes the echo
// replies back. Run with `npm run demo` (it makes a private network namespace; nothing leaves it).
import { spawn } from 'node:child_process'
import { Tun, packet } from '../index.ts'
import { ensureNetns } from './netns.ts'

ensureNetns(import.meta.url)

await using tun = await Tun.create({ name: 'tun0', addresses: ['10.7.0.1/24', 'fd07::1/64'], mtu: 1500 })
console.log(
  `created ${tun.name} (index ${tun.index}, mtu ${tun.mtu}) with ${(await tun.addresses()).map((a) => a.cidr).join(', ')}`,
)

// Answer echo requests until the device closes.
const responder = (async () => {
  for await (const pkt of tun.packets()) {
    console.log(`  <- ${packet.summary(pkt)}`)
    const reply = packet.echoReply(pkt)
    if (reply) {
      await tun.write(reply)
      console.log(`  -> ${packet.summary(reply)}`)
    }
  }
})()

function ping(args: string[]): Promise<number> {
  return new Promise((resolve) => {
    const p = spawn('ping', args, { stdio: 'inherit' })
    p.on('error', (e) => {
      console.error(`cannot run ping: ${e.message} (install iputils-ping)`)
      resolve(1)
    })
    p.on('close', (code) => resolve(code ?? 1))
  })
}

console.log('\n$ ping -c 5 -i 0.2 10.7.0.2')
const v4 = await ping(['-c', '5', '-i', '0.2', '-n', '10.7.0.2'])
console.log('\n$ ping -6 -c 3 -i 0.2 fd07::2')
const v6 = await ping(['-6', '-c', '3', '-i', '0.2', '-n', 'fd07::2'])

const s = tun.stats()
console.log(
  `\nstats: ${s.rxPackets} packets in (${s.rxBatches} batches), ${s.txPackets} out, kernel drops ${s.kernel.txDropped}`,
)
await tun.close()
await responder
process.exitCode = v4 || v6
