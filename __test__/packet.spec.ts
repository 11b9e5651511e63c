// The packet helpers (`tunkit/packet`): addresses checked against ipaddr.js (property tests over seeded random
// addresses in every text form), IPv4-mapped IPv6, mixed families, ICMP vs ICMPv6 names, and typed errors (never a
// TypeError) for anything that is not a packet.
import test from 'ava'
import ipaddr from 'ipaddr.js'
import { TunError } from '../src/errors.ts'
import * as packet from '../src/packet.ts'

const SEED = Number(process.env.TUNKIT_PACKET_SEED ?? 0x7c0ffee)
const CASES = 3000

/** mulberry32: small, seeded, good enough to pick test inputs. */
function rng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Random address bytes, biased to the cases that matter: zero runs, IPv4-mapped, IPv4-compatible. */
function randomBytes(r: () => number, v6: boolean): number[] {
  const byte = () => Math.floor(r() * 256)
  if (!v6) return Array.from({ length: 4 }, byte)
  const kind = Math.floor(r() * 5)
  const v4 = Array.from({ length: 4 }, byte)
  if (kind === 0) return [...Array(10).fill(0), 0xff, 0xff, ...v4] // ::ffff:a.b.c.d
  if (kind === 1) return [...Array(12).fill(0), ...v4] // ::a.b.c.d (and ::1, ::)
  const groups = Array.from({ length: 8 }, () =>
    r() < 0.4 ? 0 : r() < 0.5 ? Math.floor(r() * 16) : Math.floor(r() * 65536),
  )
  if (kind === 2) {
    // A zero run at a random place and of random length.
    const at = Math.floor(r() * 8)
    const len = 1 + Math.floor(r() * (8 - at))
    for (let i = at; i < at + len; i++) groups[i] = 0
  }
  return groups.flatMap((g) => [g >> 8, g & 0xff])
}

/** The text Node (and so tunkit) prints for an address: RFC 5952, with the dotted tail inet_ntop uses. */
function expectedText(bytes: number[]): string {
  const addr = ipaddr.fromByteArray(bytes)
  if (addr.kind() === 'ipv4') return addr.toString()
  const v6 = addr as ipaddr.IPv6
  const w = v6.parts
  const dotted = () => bytes.slice(12).join('.')
  if (w.slice(0, 5).every((x) => x === 0) && w[5] === 0xffff) return `::ffff:${dotted()}`
  if (w.slice(0, 6).every((x) => x === 0) && w[6] !== 0) return `::${dotted()}`
  return v6.toRFC5952String()
}

/** Every text form of an address that Node accepts. */
function textForms(bytes: number[]): string[] {
  const addr = ipaddr.fromByteArray(bytes)
  if (addr.kind() === 'ipv4') return [addr.toString()]
  const v6 = addr as ipaddr.IPv6
  const normalized = v6.toNormalizedString()
  return [
    v6.toRFC5952String(),
    v6.toRFC5952String().toUpperCase(),
    normalized,
    normalized
      .split(':')
      .map((g) => g.padStart(4, '0'))
      .join(':'),
    `${normalized.split(':').slice(0, 6).join(':')}:${bytes.slice(12).join('.')}`,
    expectedText(bytes),
  ]
}

/**
 * ipaddr.js's bytes of an address text. One form is rewritten first: ipaddr.js reads `::a.b.c.d` (IPv4-compatible,
 * RFC 4291 2.5.5.1) as `::ffff:a.b.c.d`, where inet_pton, Node and the kernel read `::0:0:a.b.c.d`; it reads the
 * equivalent `::0:a.b.c.d` right.
 */
function oracleBytes(text: string): number[] {
  return ipaddr.parse(/^::\d+\.\d+\.\d+\.\d+$/.test(text) ? `::0:${text.slice(2)}` : text).toByteArray()
}

function addressesOf(pkt: Buffer): { src: number[]; dst: number[] } {
  const v6 = pkt[0]! >> 4 === 6
  const [s, d, n] = v6 ? [8, 24, 16] : [12, 16, 4]
  return { src: [...pkt.subarray(s, s + n)], dst: [...pkt.subarray(d, d + n)] }
}

test('udp() and parse() agree with ipaddr.js on every address, in every text form', (t) => {
  const r = rng(SEED)
  let checked = 0
  for (let i = 0; i < CASES; i++) {
    const v6 = r() < 0.7
    const srcBytes = randomBytes(r, v6)
    const dstBytes = randomBytes(r, v6)
    const forms = textForms(srcBytes)
    const src = forms[Math.floor(r() * forms.length)]!
    const dst = textForms(dstBytes)[0]!
    const payload = Buffer.from([i & 0xff, (i >> 8) & 0xff])
    const pkt = packet.udp({ src, dst, srcPort: i & 0xffff, dstPort: 53, payload })
    const got = addressesOf(pkt)
    // Parsing: the bytes on the wire are ipaddr.js's bytes of the text.
    const want = oracleBytes(src)
    if (JSON.stringify(got.src) !== JSON.stringify(want)) {
      t.fail(`udp({ src: ${src} }) wrote ${got.src} but ipaddr.js parses ${want} (seed ${SEED}, case ${i})`)
      return
    }
    t.deepEqual(got.dst, oracleBytes(dst))
    // Formatting: parse() prints what ipaddr.js (and Node) print for those bytes.
    const info = packet.parse(pkt)!
    if (info.src !== expectedText(srcBytes) || info.dst !== expectedText(dstBytes)) {
      t.fail(
        `parse() printed ${info.src} > ${info.dst}, expected ${expectedText(srcBytes)} > ${expectedText(dstBytes)}`,
      )
      return
    }
    t.deepEqual(oracleBytes(info.src), srcBytes, info.src)
    t.is(info.version, v6 ? 6 : 4)
    t.true(packet.verifyChecksums(pkt))
    checked++
  }
  t.is(checked, CASES)
})

test('text that is not an address is refused with ERR_TUN_INVALID_ADDRESS, as ipaddr.js refuses it', (t) => {
  const r = rng(SEED + 1)
  const alphabet = '0123456789abcdefABCDEFgx:.%/ '
  let refused = 0
  for (let i = 0; i < CASES; i++) {
    let s = textForms(randomBytes(r, r() < 0.7))[0]!
    // One to three edits: drop, insert or replace a character.
    for (let k = 1 + Math.floor(r() * 3); k > 0; k--) {
      const at = Math.floor(r() * (s.length + 1))
      const c = alphabet[Math.floor(r() * alphabet.length)]!
      const op = Math.floor(r() * 3)
      s = op === 0 ? s.slice(0, at) + s.slice(at + 1) : s.slice(0, at) + c + s.slice(op === 1 ? at : at + 1)
    }
    // ipaddr.js also takes IPv4 shorthand (`1.2`, octal, hex) and zones (`fe80::1%eth0`); tunkit does not.
    const tail = s.slice(s.lastIndexOf(':') + 1)
    const valid =
      ipaddr.IPv4.isValidFourPartDecimal(s) ||
      (!s.includes('%') && ipaddr.IPv6.isValid(s) && (!tail.includes('.') || ipaddr.IPv4.isValidFourPartDecimal(tail)))
    const build = () => packet.udp({ src: s, dst: s, srcPort: 1, dstPort: 2, payload: Buffer.alloc(0) })
    if (valid) {
      const pkt = build()
      t.deepEqual(addressesOf(pkt).src, oracleBytes(s), s)
    } else {
      const e = t.throws(build, { instanceOf: TunError }, JSON.stringify(s))
      t.is(e?.code, 'ERR_TUN_INVALID_ADDRESS')
      refused++
    }
  }
  t.true(refused > CASES / 4, `${refused} of ${CASES} mutated strings refused`)
})

test('IPv4-mapped IPv6 addresses make IPv6 packets and print as Node prints them', (t) => {
  const pkt = packet.udp({
    src: '::ffff:10.1.2.3',
    dst: '::FFFF:0a01:0204',
    srcPort: 7,
    dstPort: 9,
    payload: Buffer.from('x'),
  })
  t.is(pkt[0]! >> 4, 6)
  t.deepEqual([...pkt.subarray(8, 24)], [...Array(10).fill(0), 0xff, 0xff, 10, 1, 2, 3])
  const info = packet.parse(pkt)!
  t.is(info.src, '::ffff:10.1.2.3')
  t.is(info.dst, '::ffff:10.1.2.4')
  t.true(packet.verifyChecksums(pkt))
  t.is(packet.summary(pkt), 'IPv6 UDP ::ffff:10.1.2.3 > ::ffff:10.1.2.4 7 > 9 (49 bytes)')
})

test('mixed address families are refused with ERR_TUN_INVALID_ADDRESS', (t) => {
  for (const [src, dst] of [
    ['10.0.0.1', 'fd00::1'],
    ['fd00::1', '10.0.0.1'],
    ['::ffff:10.0.0.1', '10.0.0.2'],
  ]) {
    const e = t.throws(() => packet.udp({ src: src!, dst: dst!, srcPort: 1, dstPort: 2, payload: Buffer.alloc(1) }), {
      instanceOf: TunError,
    })
    t.is(e?.code, 'ERR_TUN_INVALID_ADDRESS')
    t.regex(e!.message, /one family/)
  }
})

test('udp() refuses ports, TTLs and payloads out of range with ERR_TUN_INVALID_ARGUMENT', (t) => {
  const base = { src: '10.0.0.1', dst: '10.0.0.2', srcPort: 1, dstPort: 2, payload: Buffer.alloc(1) }
  for (const bad of [
    { srcPort: 65536 },
    { dstPort: -1 },
    { srcPort: 1.5 },
    { ttl: 256 },
    { payload: 'text' as unknown as Uint8Array },
    { payload: Buffer.alloc(65535 - 28 + 1) },
  ]) {
    const e = t.throws(
      () => packet.udp({ ...base, ...bad }),
      { instanceOf: TunError },
      JSON.stringify(Object.keys(bad)),
    )
    t.is(e?.code, 'ERR_TUN_INVALID_ARGUMENT')
  }
  t.is(packet.udp({ ...base, payload: Buffer.alloc(65535 - 28) }).length, 65535)
  t.is(packet.udp({ ...base, src: 'fd00::1', dst: 'fd00::2', payload: Buffer.alloc(65535 - 8) }).length, 40 + 65535)
})

/** An ICMP or ICMPv6 message of `type`, with checksums. */
function icmp(v6: boolean, type: number): Buffer {
  const pkt = packet.udp(
    v6
      ? { src: 'fd00::1', dst: 'fd00::2', srcPort: 0, dstPort: 0, payload: Buffer.alloc(4) }
      : { src: '10.0.0.1', dst: '10.0.0.2', srcPort: 0, dstPort: 0, payload: Buffer.alloc(4) },
  )
  const off = v6 ? 40 : 20
  if (v6) pkt[6] = packet.PROTO_ICMPV6
  else {
    pkt[9] = packet.PROTO_ICMP
    pkt.writeUInt16BE(0, 10)
    pkt.writeUInt16BE(packet.checksum(pkt, 0, 20), 10)
  }
  pkt.fill(0, off)
  pkt[off] = type
  pkt.writeUInt16BE(7, off + 4)
  pkt.writeUInt16BE(1, off + 6)
  packet.fixTransportChecksum(pkt)
  return pkt
}

test('ICMPv6 types are named as ICMPv6, ICMP types as ICMP', (t) => {
  t.is(packet.summary(icmp(true, 128)), 'IPv6 ICMPv6 fd00::1 > fd00::2 echo-request id=7 seq=1 (52 bytes)')
  t.is(packet.summary(icmp(true, 1)), 'IPv6 ICMPv6 fd00::1 > fd00::2 unreachable (52 bytes)')
  t.is(packet.summary(icmp(true, 2)), 'IPv6 ICMPv6 fd00::1 > fd00::2 packet-too-big (52 bytes)')
  t.is(packet.summary(icmp(true, 3)), 'IPv6 ICMPv6 fd00::1 > fd00::2 time-exceeded (52 bytes)')
  t.is(packet.summary(icmp(true, 8)), 'IPv6 ICMPv6 fd00::1 > fd00::2 type 8 (52 bytes)', 'ICMPv6 has no type 8')
  t.is(packet.summary(icmp(true, 135)), 'IPv6 ICMPv6 fd00::1 > fd00::2 neighbor-solicitation (52 bytes)')
  t.is(packet.summary(icmp(false, 8)), 'IPv4 ICMP 10.0.0.1 > 10.0.0.2 echo-request id=7 seq=1 (32 bytes)')
  t.is(packet.summary(icmp(false, 3)), 'IPv4 ICMP 10.0.0.1 > 10.0.0.2 unreachable (32 bytes)')
  t.is(packet.summary(icmp(false, 128)), 'IPv4 ICMP 10.0.0.1 > 10.0.0.2 type 128 (32 bytes)', 'ICMP has no type 128')
  t.true(packet.verifyChecksums(icmp(true, 128)))
  t.truthy(packet.echoReply(icmp(true, 128)))
  t.is(packet.echoReply(icmp(false, 128)), null)
  // Protocol 1 inside IPv6 (or 58 inside IPv4) is not ICMP of that family: no type is read.
  const odd = icmp(true, 128)
  odd[6] = packet.PROTO_ICMP
  t.is(packet.parse(odd)!.icmpType, undefined)
})

test('anything that is not an IP packet: parse() returns null or a typed error, never a TypeError', (t) => {
  for (const notBytes of [null, undefined, 'abc', 42, [0x45, 0], {}, new ArrayBuffer(20)]) {
    for (const f of [
      packet.parse,
      packet.summary,
      packet.echoReply,
      packet.verifyChecksums,
      packet.fixTransportChecksum,
    ]) {
      const e = t.throws(() => f(notBytes as unknown as Uint8Array), { instanceOf: TunError })
      t.is(e?.code, 'ERR_TUN_INVALID_ARGUMENT')
    }
  }
  t.is(packet.parse(Buffer.alloc(0)), null)
  t.is(packet.parse(Buffer.from('GET / HTTP/1.1\r\n')), null)
  t.is(packet.summary(Buffer.from([0x70, 1, 2])), 'non-IP packet (3 bytes)')
  const e = t.throws(() => packet.fixTransportChecksum(Buffer.from([0x70, 1, 2])), { instanceOf: TunError })
  t.is(e?.code, 'ERR_TUN_INVALID_PACKET')

  // Random bytes, mostly with an IPv4 or IPv6 version nibble and plausible lengths: nothing may throw.
  const r = rng(SEED + 2)
  for (let i = 0; i < CASES; i++) {
    const len = Math.floor(r() * 120)
    const b = Buffer.from(Array.from({ length: len }, () => Math.floor(r() * 256)))
    if (len > 0 && r() < 0.8) b[0] = (r() < 0.5 ? 0x40 : 0x60) | (b[0]! & 0x0f)
    if (len >= 6 && r() < 0.5) b.writeUInt16BE(b[0]! >> 4 === 4 ? len : Math.max(0, len - 40), b[0]! >> 4 === 4 ? 2 : 4)
    try {
      const info = packet.parse(b)
      if (info) {
        t.true(info.payloadOffset + info.payloadLength <= len, `case ${i}`)
        t.true(info.transportOffset <= info.payloadOffset, `case ${i}`)
      }
      t.is(typeof packet.summary(b), 'string')
      packet.echoReply(b)
      packet.verifyChecksums(b)
      if (info) packet.fixTransportChecksum(Buffer.from(b))
    } catch (err) {
      t.fail(`case ${i} (${b.toString('hex')}) threw ${String(err)}`)
      return
    }
  }
})

test('IPv6 fragments: the first has its UDP header, later ones none', (t) => {
  const inner = packet.udp({ src: 'fd00::1', dst: 'fd00::2', srcPort: 5, dstPort: 6, payload: Buffer.alloc(16, 1) })
  const frag = (offset: number) => {
    const out = Buffer.concat([inner.subarray(0, 40), Buffer.alloc(8), inner.subarray(40)])
    out[6] = 44 // fragment header
    out.writeUInt16BE(inner.length - 40 + 8, 4)
    out[40] = packet.PROTO_UDP
    out.writeUInt16BE((offset << 3) | 1, 42)
    return out
  }
  const first = packet.parse(frag(0))!
  t.is(first.protocol, packet.PROTO_UDP)
  t.is(first.srcPort, 5)
  t.is(first.transportOffset, 48)
  const later = packet.parse(frag(3))!
  t.is(later.protocol, packet.PROTO_UDP)
  t.is(later.srcPort, undefined)
})
