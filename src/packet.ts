/**
 * Packet helpers: parse IPv4/IPv6 with TCP/UDP/ICMP headers, build UDP packets, answer echo requests, and the
 * Internet checksum. Parsing reads offsets from the packet you pass; nothing is copied.
 *
 * @example
 * ```ts
 * import { Tun, packet } from 'tunkit'
 * for await (const pkt of tun.packets()) {
 *   const reply = packet.echoReply(pkt)          // ICMP/ICMPv6 echo request -> reply, else null
 *   if (reply) await tun.write(reply)
 * }
 * ```
 */
import { isIPv4, isIPv6 } from 'node:net'

export const PROTO_ICMP = 1
export const PROTO_TCP = 6
export const PROTO_UDP = 17
export const PROTO_ICMPV6 = 58

/** What {@link parse} finds in an IP packet. Offsets are into the packet. */
export interface PacketInfo {
  version: 4 | 6
  /** Transport protocol number (after IPv6 extension headers). */
  protocol: number
  src: string
  dst: string
  ttl: number
  /** Offset of the transport header. */
  transportOffset: number
  /** Source/destination ports (TCP, UDP). */
  srcPort?: number
  dstPort?: number
  /** ICMP/ICMPv6 type and code. */
  icmpType?: number
  icmpCode?: number
  /** Offset and length of the transport payload (after the TCP/UDP/ICMP header). */
  payloadOffset: number
  payloadLength: number
}

function ipv4String(b: Uint8Array, o: number): string {
  return `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`
}

function ipv6String(b: Uint8Array, o: number): string {
  const groups: string[] = []
  for (let i = 0; i < 16; i += 2) groups.push(((b[o + i]! << 8) | b[o + i + 1]!).toString(16))
  // Compress the longest run of zero groups (RFC 5952).
  let best = -1
  let bestLen = 0
  for (let i = 0; i < 8;) {
    if (groups[i] !== '0') {
      i++
      continue
    }
    let j = i
    while (j < 8 && groups[j] === '0') j++
    if (j - i > bestLen && j - i > 1) {
      best = i
      bestLen = j - i
    }
    i = j
  }
  if (best < 0) return groups.join(':')
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`
}

/** Parses an IP packet's headers; `null` when it is not a well-formed IPv4/IPv6 packet. */
export function parse(pkt: Uint8Array): PacketInfo | null {
  if (pkt.length < 1) return null
  const version = pkt[0]! >> 4
  let protocol: number
  let off: number
  let end: number
  let info: Pick<PacketInfo, 'version' | 'src' | 'dst' | 'ttl'>
  if (version === 4) {
    if (pkt.length < 20) return null
    const ihl = (pkt[0]! & 0xf) * 4
    const total = (pkt[2]! << 8) | pkt[3]!
    if (ihl < 20 || total < ihl || total > pkt.length) return null
    protocol = pkt[9]!
    off = ihl
    end = total
    info = { version: 4, src: ipv4String(pkt, 12), dst: ipv4String(pkt, 16), ttl: pkt[8]! }
    const fragOffset = ((pkt[6]! & 0x1f) << 8) | pkt[7]!
    if (fragOffset !== 0)
      return { ...info, protocol, transportOffset: off, payloadOffset: off, payloadLength: end - off }
  } else if (version === 6) {
    if (pkt.length < 40) return null
    end = 40 + ((pkt[4]! << 8) | pkt[5]!)
    if (end > pkt.length) return null
    protocol = pkt[6]!
    off = 40
    // Skip hop-by-hop (0), routing (43) and destination options (60) headers.
    while ((protocol === 0 || protocol === 43 || protocol === 60) && off + 8 <= end) {
      const next = pkt[off]!
      off += (pkt[off + 1]! + 1) * 8
      protocol = next
    }
    if (off > end) return null
    info = { version: 6, src: ipv6String(pkt, 8), dst: ipv6String(pkt, 24), ttl: pkt[7]! }
  } else {
    return null
  }
  const out: PacketInfo = { ...info, protocol, transportOffset: off, payloadOffset: off, payloadLength: end - off }
  if ((protocol === PROTO_UDP && end - off >= 8) || (protocol === PROTO_TCP && end - off >= 20)) {
    out.srcPort = (pkt[off]! << 8) | pkt[off + 1]!
    out.dstPort = (pkt[off + 2]! << 8) | pkt[off + 3]!
    const hl = protocol === PROTO_UDP ? 8 : (pkt[off + 12]! >> 4) * 4
    out.payloadOffset = Math.min(off + hl, end)
  } else if ((protocol === PROTO_ICMP || protocol === PROTO_ICMPV6) && end - off >= 4) {
    out.icmpType = pkt[off]!
    out.icmpCode = pkt[off + 1]!
    out.payloadOffset = Math.min(off + 8, end)
  }
  out.payloadLength = end - out.payloadOffset
  return out
}

/** One's-complement sum of `buf[start..end)` added to `initial` (not folded, not inverted). */
export function sum16(buf: Uint8Array, start = 0, end = buf.length, initial = 0): number {
  let s = initial
  let i = start
  for (; i + 1 < end; i += 2) s += (buf[i]! << 8) | buf[i + 1]!
  if (i < end) s += buf[i]! << 8
  return s
}

/** Folds a sum to 16 bits and inverts it: the Internet checksum (RFC 1071). */
export function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000)
  return ~sum & 0xffff
}

/** The Internet checksum of `buf[start..end)`. */
export function checksum(buf: Uint8Array, start = 0, end = buf.length): number {
  return fold(sum16(buf, start, end))
}

function pseudoSum(pkt: Uint8Array, version: 4 | 6, protocol: number, length: number): number {
  return version === 4 ? sum16(pkt, 12, 20, protocol + length) : sum16(pkt, 8, 40, protocol + length)
}

/** Recomputes the TCP, UDP or ICMP(v6) checksum of a parsed packet in place. */
export function fixTransportChecksum(pkt: Uint8Array, info: PacketInfo = parse(pkt)!): void {
  const off = info.transportOffset
  const end = info.payloadOffset + info.payloadLength
  const len = end - off
  const at = info.protocol === PROTO_TCP ? 16 : info.protocol === PROTO_UDP ? 6 : 2
  if (off + at + 2 > end) return
  pkt[off + at] = 0
  pkt[off + at + 1] = 0
  const pseudo = info.protocol === PROTO_ICMP ? 0 : pseudoSum(pkt, info.version, info.protocol, len)
  let c = fold(sum16(pkt, off, end, pseudo))
  if (c === 0 && info.protocol === PROTO_UDP) c = 0xffff
  pkt[off + at] = c >> 8
  pkt[off + at + 1] = c & 0xff
}

/** Whether the IPv4 header checksum and the transport checksum of `pkt` are right. */
export function verifyChecksums(pkt: Uint8Array): boolean {
  const info = parse(pkt)
  if (!info) return false
  if (info.version === 4 && checksum(pkt, 0, info.transportOffset) !== 0) return false
  const end = info.payloadOffset + info.payloadLength
  const pseudo =
    info.protocol === PROTO_ICMP ? 0 : pseudoSum(pkt, info.version, info.protocol, end - info.transportOffset)
  return fold(sum16(pkt, info.transportOffset, end, pseudo)) === 0
}

function addrBytes(ip: string): Buffer {
  if (isIPv4(ip)) return Buffer.from(ip.split('.').map(Number))
  if (!isIPv6(ip)) throw new TypeError(`not an IP address: ${ip}`)
  const [head, tail] = ip.includes('::') ? ip.split('::') : [ip, undefined]
  const h = head ? head.split(':') : []
  const t = tail ? tail.split(':') : []
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t]
  const b = Buffer.alloc(16)
  groups.forEach((g, i) => b.writeUInt16BE(parseInt(g, 16), i * 2))
  return b
}

/** Options of {@link udp}. */
export interface UdpOptions {
  src: string
  dst: string
  srcPort: number
  dstPort: number
  payload: Uint8Array
  ttl?: number
}

/** Builds an IPv4 or IPv6 UDP packet with correct checksums (the family follows the addresses). */
export function udp(o: UdpOptions): Buffer {
  const v6 = isIPv6(o.src)
  const ipLen = v6 ? 40 : 20
  const len = 8 + o.payload.length
  const pkt = Buffer.alloc(ipLen + len)
  if (v6) {
    pkt[0] = 0x60
    pkt.writeUInt16BE(len, 4)
    pkt[6] = PROTO_UDP
    pkt[7] = o.ttl ?? 64
    addrBytes(o.src).copy(pkt, 8)
    addrBytes(o.dst).copy(pkt, 24)
  } else {
    pkt[0] = 0x45
    pkt.writeUInt16BE(ipLen + len, 2)
    pkt[6] = 0x40 // don't fragment
    pkt[8] = o.ttl ?? 64
    pkt[9] = PROTO_UDP
    addrBytes(o.src).copy(pkt, 12)
    addrBytes(o.dst).copy(pkt, 16)
    pkt.writeUInt16BE(checksum(pkt, 0, 20), 10)
  }
  pkt.writeUInt16BE(o.srcPort, ipLen)
  pkt.writeUInt16BE(o.dstPort, ipLen + 2)
  pkt.writeUInt16BE(len, ipLen + 4)
  pkt.set(o.payload, ipLen + 8)
  fixTransportChecksum(pkt)
  return pkt
}

/**
 * The reply to an ICMP echo request (IPv4 type 8) or ICMPv6 echo request (type 128): addresses swapped, type set to
 * reply, checksums recomputed, the payload kept. A new buffer; `null` for any other packet.
 */
export function echoReply(pkt: Uint8Array): Buffer | null {
  const info = parse(pkt)
  if (!info) return null
  const isV4Echo = info.version === 4 && info.protocol === PROTO_ICMP && info.icmpType === 8
  const isV6Echo = info.version === 6 && info.protocol === PROTO_ICMPV6 && info.icmpType === 128
  if (!isV4Echo && !isV6Echo) return null
  const end = info.payloadOffset + info.payloadLength
  const out = Buffer.from(pkt.subarray(0, end))
  if (info.version === 4) {
    out.set(pkt.subarray(16, 20), 12)
    out.set(pkt.subarray(12, 16), 16)
    out[8] = 64
    out[10] = 0
    out[11] = 0
    out.writeUInt16BE(checksum(out, 0, info.transportOffset), 10)
    out[info.transportOffset] = 0
  } else {
    out.set(pkt.subarray(24, 40), 8)
    out.set(pkt.subarray(8, 24), 24)
    out[7] = 64
    out[info.transportOffset] = 129
  }
  fixTransportChecksum(out, info)
  return out
}

const PROTO_NAMES: Record<number, string> = { 1: 'ICMP', 6: 'TCP', 17: 'UDP', 58: 'ICMPv6' }
const ICMP_NAMES: Record<number, string> = {
  0: 'echo-reply',
  8: 'echo-request',
  3: 'unreachable',
  11: 'time-exceeded',
  128: 'echo-request',
  129: 'echo-reply',
  133: 'router-solicitation',
  134: 'router-advertisement',
  135: 'neighbor-solicitation',
  136: 'neighbor-advertisement',
  143: 'mld-report',
}

/** A one-line description, e.g. `IPv4 ICMP 10.7.0.2 > 10.7.0.1 echo-request id=7 seq=1 (84 bytes)`. */
export function summary(pkt: Uint8Array): string {
  const i = parse(pkt)
  if (!i) return `non-IP packet (${pkt.length} bytes)`
  const proto = PROTO_NAMES[i.protocol] ?? `proto ${i.protocol}`
  let detail = ''
  if (i.srcPort !== undefined) detail = ` ${i.srcPort} > ${i.dstPort}`
  if (i.icmpType !== undefined) {
    detail = ` ${ICMP_NAMES[i.icmpType] ?? `type ${i.icmpType}`}`
    if (i.icmpType === 0 || i.icmpType === 8 || i.icmpType === 128 || i.icmpType === 129) {
      const o = i.transportOffset
      detail += ` id=${(pkt[o + 4]! << 8) | pkt[o + 5]!} seq=${(pkt[o + 6]! << 8) | pkt[o + 7]!}`
    }
  }
  return `IPv${i.version} ${proto} ${i.src} > ${i.dst}${detail} (${pkt.length} bytes)`
}
