/**
 * Packet helpers: parse IPv4/IPv6 with TCP/UDP/ICMP headers, build UDP packets, answer echo requests, and the
 * Internet checksum. Parsing reads offsets from the packet you pass; nothing is copied.
 *
 * Also its own entry, `tunkit/packet`, which does not load the native binding: for code that only parses or builds
 * packets (a worker, a log tool, a test) on any platform.
 *
 * Errors are {@link TunError}s: `ERR_TUN_INVALID_ARGUMENT` for an argument that is not a byte array (or an option out
 * of range), `ERR_TUN_INVALID_ADDRESS` for an address that does not parse or a pair of addresses of two families,
 * `ERR_TUN_INVALID_PACKET` for a packet a function cannot work on. {@link parse} of bytes that are not an IP packet
 * returns `null`.
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
import { TunError } from './errors.js'
import { addressBytes, bytesToValue, formatAddress, parseAddress } from './ip.js'

/** IP protocol number of ICMP (IPv4). */
export const PROTO_ICMP = 1
/** IP protocol number of TCP. */
export const PROTO_TCP = 6
/** IP protocol number of UDP. */
export const PROTO_UDP = 17
/** IP protocol number of ICMPv6. */
export const PROTO_ICMPV6 = 58

/** What {@link parse} finds in an IP packet. Offsets are into the packet. */
export interface PacketInfo {
  version: 4 | 6
  /** Transport protocol number (after IPv6 extension headers, fragment header included). */
  protocol: number
  src: string
  dst: string
  ttl: number
  /** Offset of the transport header. */
  transportOffset: number
  /** Source/destination ports (TCP, UDP). */
  srcPort?: number
  dstPort?: number
  /** ICMP type (IPv4, protocol 1) or ICMPv6 type (IPv6, protocol 58), and its code. */
  icmpType?: number
  icmpCode?: number
  /** Offset and length of the transport payload (after the TCP/UDP/ICMP header). */
  payloadOffset: number
  payloadLength: number
}

function ipv4String(b: Uint8Array, o: number): string {
  return `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`
}

/** As Node prints IPv6 addresses (RFC 5952; `::ffff:a.b.c.d` for an IPv4-mapped one). */
function ipv6String(b: Uint8Array, o: number): string {
  return formatAddress(6, bytesToValue(b, o, 16))
}

function checkBytes(pkt: unknown, fn: string): asserts pkt is Uint8Array {
  if (!(pkt instanceof Uint8Array)) {
    const what = pkt === null ? 'null' : Array.isArray(pkt) ? 'an array' : typeof pkt
    throw new TunError(
      'ERR_TUN_INVALID_ARGUMENT',
      `packet.${fn}: the packet must be a Uint8Array (a Buffer), not ${what}`,
    )
  }
}

/**
 * Parses an IP packet's headers; `null` when the bytes are not a well-formed IPv4/IPv6 packet.
 *
 * @throws {TunError} `ERR_TUN_INVALID_ARGUMENT` when `pkt` is not a `Uint8Array`.
 */
export function parse(pkt: Uint8Array): PacketInfo | null {
  checkBytes(pkt, 'parse')
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
    info = { version: 6, src: ipv6String(pkt, 8), dst: ipv6String(pkt, 24), ttl: pkt[7]! }
    // Skip hop-by-hop (0), routing (43), fragment (44) and destination options (60) headers.
    let laterFragment = false
    while ((protocol === 0 || protocol === 43 || protocol === 44 || protocol === 60) && off + 8 <= end) {
      const next = pkt[off]!
      if (protocol === 44) {
        // A fragment other than the first holds no transport header.
        laterFragment = (((pkt[off + 2]! << 8) | pkt[off + 3]!) & 0xfff8) !== 0
        off += 8
      } else {
        off += (pkt[off + 1]! + 1) * 8
      }
      protocol = next
      if (laterFragment) break
    }
    if (off > end || protocol === 0 || protocol === 43 || protocol === 44 || protocol === 60) return null
    if (laterFragment) return { ...info, protocol, transportOffset: off, payloadOffset: off, payloadLength: end - off }
  } else {
    return null
  }
  const out: PacketInfo = { ...info, protocol, transportOffset: off, payloadOffset: off, payloadLength: end - off }
  if ((protocol === PROTO_UDP && end - off >= 8) || (protocol === PROTO_TCP && end - off >= 20)) {
    out.srcPort = (pkt[off]! << 8) | pkt[off + 1]!
    out.dstPort = (pkt[off + 2]! << 8) | pkt[off + 3]!
    const hl = protocol === PROTO_UDP ? 8 : (pkt[off + 12]! >> 4) * 4
    out.payloadOffset = Math.min(off + hl, end)
  } else if (
    ((version === 4 && protocol === PROTO_ICMP) || (version === 6 && protocol === PROTO_ICMPV6)) &&
    end - off >= 4
  ) {
    out.icmpType = pkt[off]!
    out.icmpCode = pkt[off + 1]!
    out.payloadOffset = Math.min(off + 8, end)
  }
  out.payloadLength = end - out.payloadOffset
  return out
}

/** One's-complement sum of `buf[start..end)` added to `initial` (not folded, not inverted). */
export function sum16(buf: Uint8Array, start = 0, end = buf.length, initial = 0): number {
  checkBytes(buf, 'sum16')
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

/**
 * Recomputes the TCP, UDP or ICMP(v6) checksum of a parsed packet in place.
 *
 * @throws {TunError} `ERR_TUN_INVALID_PACKET` when `pkt` is not an IP packet; `ERR_TUN_INVALID_ARGUMENT` when it is
 *   not a `Uint8Array`.
 */
export function fixTransportChecksum(pkt: Uint8Array, info?: PacketInfo): void {
  const parsed = info ?? parse(pkt)
  if (!parsed) throw new TunError('ERR_TUN_INVALID_PACKET', 'packet.fixTransportChecksum: not an IPv4/IPv6 packet')
  info = parsed
  const off = info.transportOffset
  const end = info.payloadOffset + info.payloadLength
  const len = end - off
  const at = info.protocol === PROTO_TCP ? 16 : info.protocol === PROTO_UDP ? 6 : 2
  if (off + at + 2 > end) return
  pkt[off + at] = 0
  pkt[off + at + 1] = 0
  if (info.protocol !== PROTO_TCP && info.protocol !== PROTO_UDP && info.icmpType === undefined) return
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

function addrBytes(ip: unknown, what: string): { family: 4 | 6; bytes: Buffer } {
  const p = typeof ip === 'string' ? parseAddress(ip) : undefined
  if (!p)
    throw new TunError('ERR_TUN_INVALID_ADDRESS', `packet.udp: ${what} ${JSON.stringify(ip)} is not an IP address`)
  return { family: p.family, bytes: addressBytes(p.family, p.value) }
}

function checkInt(v: unknown, what: string, max: number): number {
  if (!Number.isInteger(v) || (v as number) < 0 || (v as number) > max) {
    throw new TunError(
      'ERR_TUN_INVALID_ARGUMENT',
      `packet.udp: ${what} must be an integer in 0..${max}, not ${String(v)}`,
    )
  }
  return v as number
}

/** Options of {@link udp}. */
export interface UdpOptions {
  /** Source address, IPv4 or IPv6 (an IPv4-mapped `::ffff:a.b.c.d` is IPv6). */
  src: string
  /** Destination address, of the family of `src`. */
  dst: string
  srcPort: number
  dstPort: number
  payload: Uint8Array
  /** TTL (IPv4) or hop limit (IPv6); 64 when omitted. */
  ttl?: number
}

/**
 * Builds an IPv4 or IPv6 UDP packet with correct checksums (the family follows the addresses).
 *
 * @throws {TunError} `ERR_TUN_INVALID_ADDRESS` when an address does not parse or `src` and `dst` are of two
 *   families; `ERR_TUN_INVALID_ARGUMENT` for a port or TTL out of range, a payload that is not a `Uint8Array` or too
 *   large for one packet.
 */
export function udp(o: UdpOptions): Buffer {
  if (typeof o !== 'object' || o === null)
    throw new TunError('ERR_TUN_INVALID_ARGUMENT', 'packet.udp: options required')
  const src = addrBytes(o.src, 'src')
  const dst = addrBytes(o.dst, 'dst')
  if (src.family !== dst.family) {
    throw new TunError(
      'ERR_TUN_INVALID_ADDRESS',
      `packet.udp: src ${o.src} is IPv${src.family} but dst ${o.dst} is IPv${dst.family}; both must be of one family`,
    )
  }
  checkInt(o.srcPort, 'srcPort', 0xffff)
  checkInt(o.dstPort, 'dstPort', 0xffff)
  const ttl = o.ttl === undefined ? 64 : checkInt(o.ttl, 'ttl', 255)
  if (!(o.payload instanceof Uint8Array)) {
    throw new TunError('ERR_TUN_INVALID_ARGUMENT', 'packet.udp: payload must be a Uint8Array (a Buffer)')
  }
  const v6 = src.family === 6
  const ipLen = v6 ? 40 : 20
  const len = 8 + o.payload.length
  if (len + (v6 ? 0 : ipLen) > 0xffff) {
    throw new TunError(
      'ERR_TUN_INVALID_ARGUMENT',
      `packet.udp: a payload of ${o.payload.length} bytes does not fit one packet`,
    )
  }
  const pkt = Buffer.alloc(ipLen + len)
  if (v6) {
    pkt[0] = 0x60
    pkt.writeUInt16BE(len, 4)
    pkt[6] = PROTO_UDP
    pkt[7] = ttl
    src.bytes.copy(pkt, 8)
    dst.bytes.copy(pkt, 24)
  } else {
    pkt[0] = 0x45
    pkt.writeUInt16BE(ipLen + len, 2)
    pkt[6] = 0x40 // don't fragment
    pkt[8] = ttl
    pkt[9] = PROTO_UDP
    src.bytes.copy(pkt, 12)
    dst.bytes.copy(pkt, 16)
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
 *
 * @throws {TunError} `ERR_TUN_INVALID_ARGUMENT` when `pkt` is not a `Uint8Array`.
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
/** ICMP (IPv4) message types (RFC 792 and others). */
const ICMP_NAMES: Record<number, string> = {
  0: 'echo-reply',
  3: 'unreachable',
  4: 'source-quench',
  5: 'redirect',
  8: 'echo-request',
  9: 'router-advertisement',
  10: 'router-solicitation',
  11: 'time-exceeded',
  12: 'parameter-problem',
  13: 'timestamp',
  14: 'timestamp-reply',
}
/** ICMPv6 message types (RFC 4443, 4861, 2710, 3810). */
const ICMPV6_NAMES: Record<number, string> = {
  1: 'unreachable',
  2: 'packet-too-big',
  3: 'time-exceeded',
  4: 'parameter-problem',
  128: 'echo-request',
  129: 'echo-reply',
  130: 'mld-query',
  131: 'mld-report',
  132: 'mld-done',
  133: 'router-solicitation',
  134: 'router-advertisement',
  135: 'neighbor-solicitation',
  136: 'neighbor-advertisement',
  137: 'redirect',
  143: 'mldv2-report',
}

/**
 * A one-line description, e.g. `IPv4 ICMP 10.7.0.2 > 10.7.0.1 echo-request id=7 seq=1 (84 bytes)`; ICMPv6 types
 * by their ICMPv6 names.
 *
 * @throws {TunError} `ERR_TUN_INVALID_ARGUMENT` when `pkt` is not a `Uint8Array`.
 */
export function summary(pkt: Uint8Array): string {
  const i = parse(pkt)
  if (!i) return `non-IP packet (${pkt.length} bytes)`
  const proto = PROTO_NAMES[i.protocol] ?? `proto ${i.protocol}`
  let detail = ''
  if (i.srcPort !== undefined) detail = ` ${i.srcPort} > ${i.dstPort}`
  if (i.icmpType !== undefined) {
    const v6 = i.version === 6
    detail = ` ${(v6 ? ICMPV6_NAMES : ICMP_NAMES)[i.icmpType] ?? `type ${i.icmpType}`}`
    const echo = v6 ? i.icmpType === 128 || i.icmpType === 129 : i.icmpType === 0 || i.icmpType === 8
    if (echo && i.transportOffset + 8 <= i.payloadOffset + i.payloadLength) {
      const o = i.transportOffset
      detail += ` id=${(pkt[o + 4]! << 8) | pkt[o + 5]!} seq=${(pkt[o + 6]! << 8) | pkt[o + 7]!}`
    }
  }
  return `IPv${i.version} ${proto} ${i.src} > ${i.dst}${detail} (${pkt.length} bytes)`
}
