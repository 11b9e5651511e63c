// A TAP device with a neighbour played by JavaScript: the kernel's `ping 10.81.0.2` first asks "who has
// 10.81.0.2?" (ARP, broadcast), this program answers with its own MAC, then answers the ICMP echo requests that
// follow inside Ethernet frames. Every frame in and out is printed.
//
//   node --import tsx examples/tap-arp.ts      (makes a private network namespace; nothing leaves it)
import { spawn } from 'node:child_process'
import { Tun, packet } from '../index.ts'
import { ensureNetns } from './netns.ts'

ensureNetns(import.meta.url)

const NEIGHBOUR_IP = '10.81.0.2'
const NEIGHBOUR_MAC = '02:00:5e:81:00:02'
const ETH_IP = 0x0800
const ETH_ARP = 0x0806

const macBytes = (mac: string) => Buffer.from(mac.split(':').map((h) => parseInt(h, 16)))
const macText = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(':')
const ipText = (b: Uint8Array) => Array.from(b).join('.')

/** An Ethernet II frame. */
function ethernet(dst: Uint8Array, src: Uint8Array, type: number, payload: Uint8Array): Buffer {
  const f = Buffer.alloc(14 + payload.length)
  f.set(dst, 0)
  f.set(src, 6)
  f.writeUInt16BE(type, 12)
  f.set(payload, 14)
  return f
}

/** The ARP reply "NEIGHBOUR_IP is at NEIGHBOUR_MAC" to an ARP request frame for NEIGHBOUR_IP; else null. */
function arpReply(frame: Buffer): Buffer | null {
  if (frame.length < 42 || frame.readUInt16BE(12) !== ETH_ARP) return null
  const arp = frame.subarray(14)
  // Ethernet/IPv4 ARP, operation 1 (request), target protocol address = the neighbour.
  if (arp.readUInt16BE(0) !== 1 || arp.readUInt16BE(2) !== ETH_IP || arp.readUInt16BE(6) !== 1) return null
  if (ipText(arp.subarray(24, 28)) !== NEIGHBOUR_IP) return null
  const reply = Buffer.from(arp.subarray(0, 28))
  reply.writeUInt16BE(2, 6) // operation: reply
  reply.set(macBytes(NEIGHBOUR_MAC), 8) // sender: the neighbour
  reply.set(arp.subarray(24, 28), 14)
  reply.set(arp.subarray(8, 14), 18) // target: whoever asked
  reply.set(arp.subarray(14, 18), 24)
  return ethernet(arp.subarray(8, 14), macBytes(NEIGHBOUR_MAC), ETH_ARP, reply)
}

await using tap = await Tun.create({ name: 'tap0', mode: 'tap', mac: '02:00:5e:81:00:01', addresses: ['10.81.0.1/24'] })
console.log(
  `created ${tap.name} (${tap.link().mac}) with 10.81.0.1/24; the neighbour ${NEIGHBOUR_IP} is ${NEIGHBOUR_MAC}`,
)

const neighbour = (async () => {
  for await (const frame of tap.packets()) {
    const dst = macText(frame.subarray(0, 6))
    const src = macText(frame.subarray(6, 12))
    const arp = arpReply(frame)
    if (arp) {
      console.log(`  <- ARP who-has ${NEIGHBOUR_IP} tell ${ipText(frame.subarray(28, 32))} (${src} > ${dst})`)
      await tap.write(arp)
      console.log(`  -> ARP ${NEIGHBOUR_IP} is-at ${NEIGHBOUR_MAC}`)
      continue
    }
    if (frame.readUInt16BE(12) !== ETH_IP || dst !== NEIGHBOUR_MAC) continue
    const ip = frame.subarray(14)
    console.log(`  <- ${src} > ${dst} ${packet.summary(ip)}`)
    const reply = packet.echoReply(ip)
    if (reply) {
      await tap.write(ethernet(frame.subarray(6, 12), macBytes(NEIGHBOUR_MAC), ETH_IP, reply))
      console.log(`  -> ${NEIGHBOUR_MAC} > ${src} ${packet.summary(reply)}`)
    }
  }
})()

console.log(`\n$ ping -c 3 -i 0.2 ${NEIGHBOUR_IP}`)
const code = await new Promise<number>((resolve) => {
  const p = spawn('ping', ['-c', '3', '-i', '0.2', '-n', NEIGHBOUR_IP], { stdio: 'inherit' })
  p.on('error', (e) => {
    console.error(`cannot run ping: ${e.message} (install iputils-ping)`)
    resolve(1)
  })
  p.on('close', (c) => resolve(c ?? 1))
})
await tap.close()
await neighbour
process.exitCode = code
