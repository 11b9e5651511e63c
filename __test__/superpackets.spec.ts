// Super-packets without devices: the memory pair (a device without offload) yields ordinary packets as
// SuperPackets (gso null), takes super-packets by cutting them into packets with complete checksums, and refuses a
// super-packet whose header contradicts its packet with a typed error. The device tests are in offload.spec.ts.
import test from 'ava'
import { Tun, SuperPacket, packet } from '../index.ts'
import { ipv4 } from './helpers/packets.ts'

/** A TCP/IPv4 super-packet frame as the kernel hands it over: `segments` × `size` payload bytes, partial checksum. */
function tsoFrame(segments: number, size: number): { frame: Buffer; payload: Buffer } {
  const payload = Buffer.alloc(segments * size)
  for (let i = 0; i < payload.length; i++) payload[i] = (i * 7 + 3) & 0xff
  const pkt = Buffer.alloc(40 + payload.length)
  pkt[0] = 0x45
  pkt.writeUInt16BE(pkt.length, 2)
  pkt[8] = 64
  pkt[9] = 6
  Buffer.from([10, 1, 0, 1, 10, 2, 0, 1]).copy(pkt, 12)
  pkt.writeUInt16BE(packet.checksum(pkt, 0, 20), 10)
  pkt.writeUInt16BE(1000, 20)
  pkt.writeUInt16BE(2000, 22)
  pkt.writeUInt32BE(1, 24)
  pkt[32] = 0x50
  pkt[33] = 0x18
  pkt.writeUInt16BE(65535, 34)
  payload.copy(pkt, 40)
  // The partial checksum: the pseudo-header sum only, left for the segmenter to complete.
  const pseudo = packet.sum16(pkt, 12, 20) + 6 + (pkt.length - 20)
  pkt.writeUInt16BE(packet.fold(pseudo), 36)
  const hdr = Buffer.alloc(10)
  hdr[0] = 1 // NEEDS_CSUM
  hdr[1] = 1 // TCPV4
  hdr.writeUInt16LE(40, 2)
  hdr.writeUInt16LE(size, 4)
  hdr.writeUInt16LE(20, 6)
  hdr.writeUInt16LE(16, 8)
  return { frame: Buffer.concat([hdr, pkt]), payload }
}

/** A SuperPacket over a frame, as the iteration makes them (the constructor is internal). */
const superOf = (frame: Buffer) =>
  new (SuperPacket as unknown as new (f: Buffer | null, d: Buffer | null) => SuperPacket)(frame, null)

test('super-packets: a device without offload yields ordinary packets (gso null) and takes them back', async (t) => {
  const [a, b] = Tun.createMemoryPair()
  try {
    const sent = [ipv4(100, 1), ipv4(1400, 2), ipv4(60, 3)]
    await a.write(sent)
    const got: SuperPacket[] = []
    for await (const batch of b.batches({ superPackets: true })) {
      got.push(...batch)
      if (got.length >= 3) break
    }
    t.deepEqual(
      got.map((p) => p.data),
      sent,
    )
    t.true(got.every((p) => p.gso === null && !p.isSuper && p.segments === 1))
    await b.write(got)
    const back: Buffer[] = []
    for await (const p of a.packets()) {
      back.push(p)
      if (back.length === 3) break
    }
    t.deepEqual(back, sent)
  } finally {
    await a.close()
    await b.close()
  }
})

test('super-packets: gso metadata is read from the header; written to a device without offload it is cut into packets with complete checksums', async (t) => {
  const [a, b] = Tun.createMemoryPair({ mtu: 1500 })
  try {
    const { frame, payload } = tsoFrame(4, 1000)
    const sp = superOf(frame)
    t.deepEqual(sp.gso, {
      type: 'tcp4',
      ecn: false,
      size: 1000,
      hdrLen: 40,
      needsCsum: true,
      csumStart: 20,
      csumOffset: 16,
    })
    t.true(sp.isSuper)
    t.is(sp.segments, 4)
    t.is(sp.data.length, 4040)
    await a.write(sp)
    const got: Buffer[] = []
    for await (const p of b.packets()) {
      got.push(p)
      if (got.length === 4) break
    }
    t.deepEqual(
      got.map((p) => p.length),
      [1040, 1040, 1040, 1040],
    )
    t.true(
      got.every((p) => packet.verifyChecksums(p)),
      'a segment has a wrong checksum',
    )
    t.deepEqual(Buffer.concat(got.map((p) => p.subarray(40))), payload)
    // In order with plain packets around it, in one write.
    await a.write([ipv4(100, 9), sp, ipv4(100, 10)])
    const more: Buffer[] = []
    for await (const p of b.packets()) {
      more.push(p)
      if (more.length === 6) break
    }
    t.deepEqual(
      more.map((p) => p.length),
      [100, 1040, 1040, 1040, 1040, 100],
    )
  } finally {
    await a.close()
    await b.close()
  }
})

test('super-packets: a header that contradicts its packet is refused with ERR_TUN_INVALID_PACKET, nothing taken', async (t) => {
  const [a, b] = Tun.createMemoryPair()
  try {
    const { frame } = tsoFrame(2, 1000)
    frame.writeUInt16LE(5000, 2) // hdr_len past the end of the packet
    const e = await t.throwsAsync(a.write([superOf(frame)]))
    t.is((e as Error & { code?: string }).code, 'ERR_TUN_INVALID_PACKET')
    t.regex(e!.message, /super-packet 0/)
    const short = tsoFrame(2, 1000).frame.subarray(0, 8)
    t.is(((await t.throwsAsync(a.write(superOf(short)))) as Error & { code?: string }).code, 'ERR_TUN_INVALID_PACKET')
    t.is(a.stats().txPackets, 0)
    t.is(b.stats().rxPackets, 0)
    t.throws(() => b.packets({ superPackets: 1 as unknown as boolean }), { code: 'ERR_TUN_INVALID_ARGUMENT' })
  } finally {
    await a.close()
    await b.close()
  }
})
