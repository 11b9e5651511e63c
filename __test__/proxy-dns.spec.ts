// The transparent proxy's DNS wire format and fake-IP pool: pure functions, no devices, no network.
import test from 'ava'
import { SocketAddress } from 'node:net'
import { TunError } from '../src/errors.ts'
import {
  DNS_RCODE,
  DNS_TYPE,
  TcpDnsReader,
  answer,
  buildQuery,
  errorReply,
  frameTcp,
  parseQuery,
  parseResponse,
} from '../src/proxy/dns.ts'
import { FakeIpPool } from '../src/proxy/fakeip.ts'

/** ava `throws` expectation for a TunError with `code`. */
const tunError = (code: string) => ({ instanceOf: TunError, code })

/** A deterministic xorshift32 PRNG: returns 0 <= x < 2^32. */
function xorshift(seed: number): () => number {
  let s = seed >>> 0 || 1
  return () => {
    s ^= s << 13
    s >>>= 0
    s ^= s >>> 17
    s ^= s << 5
    s >>>= 0
    return s
  }
}

/** A header for hand-built messages. */
function header(id: number, flags: number, qd: number, an = 0, ns = 0, ar = 0): Buffer {
  const h = Buffer.alloc(12)
  h.writeUInt16BE(id, 0)
  h.writeUInt16BE(flags, 2)
  h.writeUInt16BE(qd, 4)
  h.writeUInt16BE(an, 6)
  h.writeUInt16BE(ns, 8)
  h.writeUInt16BE(ar, 10)
  return h
}

/** Uncompressed wire name. */
function wireName(...labels: string[]): Buffer {
  return Buffer.concat([
    ...labels.map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)])),
    Buffer.from([0]),
  ])
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2)
  b.writeUInt16BE(n)
  return b
}

/** A query shaped like one from a real resolver (dig / systemd-resolved): AD set, an EDNS OPT RR with a cookie. */
function ednsQuery(name: string[], type: number, id: number): Buffer {
  const opt = Buffer.concat([
    Buffer.from([0]), // root owner
    u16(DNS_TYPE.OPT),
    u16(1232), // UDP payload size
    Buffer.from([0, 0, 0x80, 0]), // extended RCODE 0, version 0, DO set
    u16(12), // RDLENGTH
    u16(10), // option COOKIE
    u16(8),
    Buffer.from('0123456789abcdef', 'hex'),
  ])
  return Buffer.concat([header(id, 0x0120, 1, 0, 0, 1), wireName(...name), u16(type), u16(1), opt])
}

test('A and AAAA round trips: buildQuery -> parseQuery -> answer -> parseResponse', (t) => {
  const names = ['example.com', 'www.example.com', 'a.b.c.d.e.f.g', 'xn--bcher-kva.example', 'localhost', 'x']
  let id = 1
  for (const name of names) {
    for (const [type, address, expect] of [
      [DNS_TYPE.A, '198.18.0.2', '198.18.0.2'],
      [DNS_TYPE.AAAA, 'fc00:0:0:0:0:0:0:2', 'fc00::2'],
      [DNS_TYPE.AAAA, '::ffff:198.18.0.2', '::ffff:198.18.0.2'],
    ] as const) {
      const query = buildQuery(name, type, id)
      const q = parseQuery(query)
      t.is(q.id, id)
      t.true(q.rd)
      t.is(q.flags, 0x0100)
      t.deepEqual(q.question, { name, type, class: 1 })
      t.deepEqual(q.raw, query)
      const reply = answer(q, [
        { type, address, ttl: 60 },
        { type, address, ttl: 0 },
      ])
      const r = parseResponse(reply)
      t.is(r.id, id)
      t.is(r.rcode, 0)
      t.false(r.truncated)
      t.is(r.flags, 0x8180) // QR, RD, RA
      t.deepEqual(r.question, q.question)
      t.is(r.answers.length, 2)
      t.like(r.answers[0], { name, type, class: 1, ttl: 60, address: expect })
      t.is(r.answers[0]!.data.length, type === DNS_TYPE.A ? 4 : 16)
      t.is(r.answers[1]!.ttl, 0)
      // Every answer's owner is a compression pointer to the question name at offset 12.
      t.is(reply.readUInt16BE(query.length), 0xc00c)
      t.is(reply.readUInt16BE(query.length + 12 + r.answers[0]!.data.length), 0xc00c)
      id = (id * 7919) & 0xffff
    }
  }
  // Names come back lower-cased; the reply echoes the question with the case the client sent (DNS 0x20).
  const mixed = buildQuery('WwW.ExAmPle.CoM.', DNS_TYPE.A, 0xbeef)
  const q = parseQuery(mixed)
  t.is(q.question.name, 'www.example.com')
  const reply = answer(q, [{ type: 1, address: '10.0.0.1', ttl: 5 }])
  t.deepEqual(reply.subarray(12, mixed.length), mixed.subarray(12))
  t.is(parseResponse(reply).answers[0]!.address, '10.0.0.1')
  // RD is copied: a query without it gets a reply without it.
  const noRd = Buffer.from(mixed)
  noRd.writeUInt16BE(0, 2)
  const q2 = parseQuery(noRd)
  t.false(q2.rd)
  t.is(parseResponse(answer(q2, [])).flags, 0x8080)
  // raw is a copy: reusing the input buffer does not change it.
  const input = buildQuery('copy.test', 1, 9)
  const q3 = parseQuery(input)
  input.fill(0)
  t.is(q3.raw.readUInt16BE(0), 9)
  t.is(parseResponse(answer(q3, [])).question?.name, 'copy.test')
})

test('answer validates its records', (t) => {
  const q = parseQuery(buildQuery('example.com', DNS_TYPE.A, 1))
  t.throws(() => answer(q, [{ type: 1, address: 'fc00::1', ttl: 1 }]), tunError('ERR_TUN_INVALID_ARGUMENT'))
  t.throws(() => answer(q, [{ type: 28, address: '1.2.3.4', ttl: 1 }]), tunError('ERR_TUN_INVALID_ARGUMENT'))
  t.throws(() => answer(q, [{ type: 1, address: '1.2.3', ttl: 1 }]), tunError('ERR_TUN_INVALID_ARGUMENT'))
  t.throws(() => answer(q, [{ type: 1, address: '1.2.3.4', ttl: -1 }]), tunError('ERR_TUN_INVALID_ARGUMENT'))
  t.throws(() => answer(q, [{ type: 1, address: '1.2.3.4', ttl: 1.5 }]), tunError('ERR_TUN_INVALID_ARGUMENT'))
  t.throws(() => answer(q, [{ type: 1, address: '1.2.3.4', ttl: 2 ** 31 }]), tunError('ERR_TUN_INVALID_ARGUMENT'))
  t.throws(() => answer(q, [{ type: 5 as 1, address: '1.2.3.4', ttl: 1 }]), tunError('ERR_TUN_INVALID_ARGUMENT'))
  t.throws(() => errorReply(q, 16), tunError('ERR_TUN_INVALID_ARGUMENT'))
  t.throws(() => errorReply(q, -1), tunError('ERR_TUN_INVALID_ARGUMENT'))
})

test('NODATA, NXDOMAIN and other error replies', (t) => {
  const query = buildQuery('nothing.example', DNS_TYPE.HTTPS, 0x1234)
  const q = parseQuery(query)
  t.is(q.question.type, 65)

  const nodata = answer(q, [])
  t.is(nodata.length, query.length)
  const r = parseResponse(nodata)
  t.like(r, { id: 0x1234, rcode: 0, flags: 0x8180, answers: [] })
  t.deepEqual(r.question, { name: 'nothing.example', type: 65, class: 1 })
  t.is(nodata.readUInt16BE(6), 0) // ANCOUNT

  for (const rcode of [DNS_RCODE.SERVFAIL, DNS_RCODE.NXDOMAIN, DNS_RCODE.REFUSED, DNS_RCODE.NOTIMP]) {
    const reply = errorReply(q, rcode)
    t.deepEqual(reply.subarray(12), query.subarray(12)) // the question echoed
    const e = parseResponse(reply)
    t.like(e, { id: 0x1234, rcode, flags: 0x8180 | rcode, answers: [] })
    t.is(e.question?.name, 'nothing.example')
    t.is(reply.readUInt16BE(4), 1)
    t.is(reply.readUInt16BE(6) + reply.readUInt16BE(8) + reply.readUInt16BE(10), 0)
  }
})

test('an EDNS query from a real resolver is accepted and its OPT record ignored', (t) => {
  const query = ednsQuery(['Cloudflare', 'com'], DNS_TYPE.AAAA, 0xa1b2)
  const q = parseQuery(query)
  t.is(q.id, 0xa1b2)
  t.true(q.rd)
  t.is(q.flags, 0x0120)
  t.deepEqual(q.question, { name: 'cloudflare.com', type: 28, class: 1 })
  t.is(q.raw.length, query.length)

  const reply = answer(q, [{ type: 28, address: '2606:4700::6810:84e5', ttl: 300 }])
  t.is(reply.readUInt16BE(10), 0) // no additional records
  const r = parseResponse(reply)
  t.is(r.answers[0]?.address, '2606:4700::6810:84e5')
  t.is(r.question?.name, 'cloudflare.com')
  t.deepEqual(reply.subarray(12, 12 + 16), query.subarray(12, 12 + 16)) // echoed with the client's case
})

test('malformed queries throw ERR_TUN_INVALID_PACKET', (t) => {
  const good = buildQuery('example.com', 1, 7)
  const bad = (b: Uint8Array, why: string) => {
    const e = t.throws(() => parseQuery(b), tunError('ERR_TUN_INVALID_PACKET'), why)
    t.regex(e?.message ?? '', /^DNS: /, why)
  }
  bad(new Uint8Array(0), 'empty')
  bad(good.subarray(0, 11), 'truncated header')
  bad(good.subarray(0, 12), 'header only')
  bad(good.subarray(0, 20), 'truncated name')
  bad(good.subarray(0, good.length - 1), 'truncated class')

  const qd2 = Buffer.from(good)
  qd2.writeUInt16BE(2, 4)
  bad(qd2, 'QDCOUNT 2')
  const qd0 = Buffer.from(good)
  qd0.writeUInt16BE(0, 4)
  bad(qd0, 'QDCOUNT 0')

  const response = Buffer.from(good)
  response[2]! |= 0x80
  bad(response, 'QR set')
  for (const opcode of [1, 2, 4, 5, 15]) {
    const b = Buffer.from(good)
    b[2] = (b[2]! & 0x87) | (opcode << 3)
    bad(b, `opcode ${opcode}`)
  }

  const q = (name: Buffer) => Buffer.concat([header(1, 0x0100, 1), name, u16(1), u16(1)])
  bad(q(Buffer.from([0xc0, 12])), 'pointer to itself')
  bad(q(Buffer.concat([Buffer.from([1, 0x61]), Buffer.from([0xc0, 12])])), 'pointer loop back to the name start')
  bad(q(Buffer.concat([Buffer.from([1, 0x61]), Buffer.from([0xc0, 14])])), 'pointer to itself after a label')
  bad(q(Buffer.from([0xc0, 4])), 'pointer into the header')
  bad(q(Buffer.concat([Buffer.from([0xc0, 40]), Buffer.alloc(40)])), 'pointer forward / out of range')
  bad(q(Buffer.from([0xff, 0xff])), 'pointer far out of range')
  bad(Buffer.concat([header(1, 0x0100, 1), Buffer.from([0xc0])]), 'pointer truncated')
  bad(q(Buffer.concat([Buffer.from([64]), Buffer.alloc(64, 0x61), Buffer.from([0])])), 'label 64')
  bad(q(Buffer.concat([Buffer.from([0x80, 0x61, 0])])), 'reserved label type 10')
  const long = Buffer.concat([
    ...Array.from({ length: 4 }, () => Buffer.concat([Buffer.from([63]), Buffer.alloc(63, 0x62)])),
    Buffer.from([3, 0x61, 0x62, 0x63, 0]),
  ])
  t.is(long.length, 261)
  bad(q(long), 'name over 255 octets')
  // The longest legal name (255 octets on the wire) is fine.
  const longest = Buffer.concat([
    ...Array.from({ length: 3 }, () => Buffer.concat([Buffer.from([63]), Buffer.alloc(63, 0x62)])),
    Buffer.from([61]),
    Buffer.alloc(61, 0x63),
    Buffer.from([0]),
  ])
  t.is(longest.length, 255)
  t.is(parseQuery(q(longest)).question.name.length, 253)
  // The question follows the header, so a pointer in it can only be forward (or into the header): always refused.
  const ptr = Buffer.concat([header(1, 0x0100, 1), Buffer.from([1, 0x41, 0xc0, 17]), Buffer.from([0]), u16(1), u16(1)])
  t.throws(() => parseQuery(ptr), tunError('ERR_TUN_INVALID_PACKET'))
})

test('names: escapes, root and trailing dots round trip; bad names are rejected by buildQuery', (t) => {
  for (const name of ['a\\.b.example', 'back\\\\slash', 'sp\\032ace.x', 'nul\\000.x', '_sip._tcp.example', '']) {
    const q = parseQuery(buildQuery(name, DNS_TYPE.SRV, 1))
    t.is(q.question.name, name)
  }
  t.is(parseQuery(buildQuery('.', 1, 1)).question.name, '')
  t.is(parseQuery(buildQuery('Example.ORG.', 1, 1)).question.name, 'example.org')
  t.is(parseQuery(buildQuery('\\065\\.', 1, 1)).question.name, 'a\\.')
  const arg = tunError('ERR_TUN_INVALID_ARGUMENT')
  t.throws(() => buildQuery('a..b', 1, 1), arg)
  t.throws(() => buildQuery('.a', 1, 1), arg)
  t.throws(() => buildQuery('a'.repeat(64), 1, 1), arg)
  t.throws(() => buildQuery(Array(5).fill('a'.repeat(63)).join('.'), 1, 1), arg)
  t.throws(() => buildQuery('bücher.example', 1, 1), arg)
  t.throws(() => buildQuery('a b', 1, 1), arg)
  t.throws(() => buildQuery('a\\256', 1, 1), arg)
  t.throws(() => buildQuery('a\\', 1, 1), arg)
  t.throws(() => buildQuery('ok', 65536, 1), arg)
  t.throws(() => buildQuery('ok', 1, -1), arg)
  t.throws(() => buildQuery('ok', 1, 65536), arg)
})

test('parseResponse follows compression, reads CNAME chains and extended RCODE, rejects malformed records', (t) => {
  // www.example.com CNAME edge.example.net; edge.example.net A 93.184.216.34 (names compressed against each other)
  const qname = wireName('www', 'example', 'com') // at 12
  const edgeAt = 12 + qname.length + 4 + 12 // the CNAME's RDATA
  const cnameData = Buffer.concat([
    Buffer.from([4]),
    Buffer.from('edge'),
    Buffer.from([7]),
    Buffer.from('example'),
    Buffer.from([3]),
    Buffer.from('net'),
    Buffer.from([0]),
  ])
  const msg = Buffer.concat([
    header(0x4242, 0x8180, 1, 2),
    qname,
    u16(1),
    u16(1),
    u16(0xc00c),
    u16(5),
    u16(1),
    Buffer.from([0, 0, 0x0e, 0x10]),
    u16(cnameData.length),
    cnameData,
    u16(0xc000 | edgeAt),
    u16(1),
    u16(1),
    Buffer.from([0xff, 0xff, 0xff, 0xff]), // TTL with the top bit set counts as 0
    u16(4),
    Buffer.from([93, 184, 216, 34]),
  ])
  const r = parseResponse(msg)
  t.is(r.id, 0x4242)
  t.is(r.answers.length, 2)
  t.like(r.answers[0], { name: 'www.example.com', type: 5, ttl: 3600, target: 'edge.example.net' })
  t.like(r.answers[1], { name: 'edge.example.net', type: 1, ttl: 0, address: '93.184.216.34' })

  // An OPT record in the additional section contributes the upper RCODE bits (BADVERS = 16).
  const opt = Buffer.concat([Buffer.from([0]), u16(41), u16(1232), Buffer.from([1, 0, 0, 0]), u16(0)])
  const withOpt = Buffer.concat([header(1, 0x8180, 1, 0, 0, 1), qname, u16(1), u16(1), opt])
  t.is(parseResponse(withOpt).rcode, 16)

  const bad = (b: Uint8Array, why: string) => t.throws(() => parseResponse(b), tunError('ERR_TUN_INVALID_PACKET'), why)
  bad(buildQuery('example.com', 1, 1), 'a query')
  bad(msg.subarray(0, 10), 'truncated header')
  bad(msg.subarray(0, msg.length - 1), 'truncated RDATA')
  bad(msg.subarray(0, edgeAt - 3), 'truncated record header')
  const loop = Buffer.from(msg)
  loop.writeUInt16BE(0xc000 | (12 + qname.length + 4), 12 + qname.length + 4) // answer owner points to itself
  bad(loop, 'pointer loop in an answer')
  const shortA = Buffer.concat([
    header(1, 0x8180, 1, 1),
    qname,
    u16(1),
    u16(1),
    u16(0xc00c),
    u16(1),
    u16(1),
    Buffer.alloc(4),
    u16(3),
    Buffer.alloc(3),
  ])
  bad(shortA, 'A record of 3 bytes')
  const moreCounted = Buffer.from(msg)
  moreCounted.writeUInt16BE(3, 6)
  bad(moreCounted, 'ANCOUNT past the end')
  const tc = Buffer.concat([header(1, 0x8380, 1), qname, u16(1), u16(1)])
  t.true(parseResponse(tc).truncated)
})

test('TCP framing: messages survive a split at every byte boundary', (t) => {
  const msgs = [
    buildQuery('example.com', 1, 1),
    answer(parseQuery(buildQuery('example.com', 28, 2)), [{ type: 28, address: 'fc00::2', ttl: 1 }]),
    Buffer.from([0x42]),
    Buffer.alloc(300, 7), // a length prefix with a non-zero high byte
  ]
  const stream = Buffer.concat(msgs.map((m) => frameTcp(m)))
  t.is(frameTcp(msgs[0]!).readUInt16BE(0), msgs[0]!.length)
  for (let cut = 0; cut <= stream.length; cut++) {
    const reader = new TcpDnsReader()
    const got = [...reader.push(stream.subarray(0, cut)), ...reader.push(stream.subarray(cut))]
    t.deepEqual(got, msgs, `cut at ${cut}`)
    t.is(reader.buffered, 0)
  }
  for (let cut = 1; cut < stream.length; cut += 7) {
    for (let cut2 = cut; cut2 < stream.length; cut2 += 13) {
      const reader = new TcpDnsReader()
      const got = [
        ...reader.push(stream.subarray(0, cut)),
        ...reader.push(stream.subarray(cut, cut2)),
        ...reader.push(stream.subarray(cut2)),
      ]
      t.deepEqual(got, msgs, `cuts at ${cut} and ${cut2}`)
    }
  }
  const byteByByte = new TcpDnsReader()
  const got: Buffer[] = []
  for (let i = 0; i < stream.length; i++) {
    got.push(...byteByByte.push(stream.subarray(i, i + 1)))
    if (i === 0) t.is(byteByByte.buffered, 1)
  }
  t.deepEqual(got, msgs)
  // Messages returned are copies: the caller may reuse its chunk.
  const chunk = Buffer.from(stream)
  const copies = new TcpDnsReader().push(chunk)
  chunk.fill(0)
  t.deepEqual(copies, msgs)

  // A length of 0 is refused, and the reader stays failed.
  const zero = new TcpDnsReader()
  t.deepEqual(zero.push(frameTcp(msgs[2]!)), [msgs[2]])
  t.deepEqual(zero.push(Buffer.from([0])), []) // half a length prefix
  t.is(zero.buffered, 1)
  t.throws(() => zero.push(Buffer.from([0])), tunError('ERR_TUN_INVALID_PACKET'))
  t.throws(() => zero.push(frameTcp(msgs[0]!)), tunError('ERR_TUN_INVALID_PACKET'))
  // A bound on the message length.
  const small = new TcpDnsReader({ maxLength: 100 })
  t.is(small.push(frameTcp(Buffer.alloc(100))).length, 1)
  t.throws(() => small.push(frameTcp(Buffer.alloc(101))), tunError('ERR_TUN_INVALID_PACKET'))
  // The largest message there is.
  const big = Buffer.alloc(65535, 1)
  const bigReader = new TcpDnsReader()
  const framed = frameTcp(big)
  t.deepEqual([...bigReader.push(framed.subarray(0, 40000)), ...bigReader.push(framed.subarray(40000))], [big])
  t.throws(() => frameTcp(Buffer.alloc(0)), tunError('ERR_TUN_INVALID_ARGUMENT'))
  t.throws(() => frameTcp(Buffer.alloc(65536)), tunError('ERR_TUN_INVALID_ARGUMENT'))
  t.throws(() => new TcpDnsReader({ maxLength: 0 }), tunError('ERR_TUN_INVALID_ARGUMENT'))
  t.throws(() => new TcpDnsReader({ maxLength: 65536 }), tunError('ERR_TUN_INVALID_ARGUMENT'))
})

test('fuzz: mutated queries either parse or throw a TunError', (t) => {
  const rand = xorshift(0x5eed1234)
  const below = (n: number) => rand() % n
  const seeds = [
    buildQuery('example.com', 1, 1),
    buildQuery('a.very.long.name.with.many.labels.example.org', 28, 2),
    buildQuery('', 2, 3),
    ednsQuery(['www', 'example', 'com'], 65, 4),
    Buffer.concat([header(5, 0x0100, 1), Buffer.from([1, 0x61, 0]), u16(1), u16(1), Buffer.from([1, 0x62, 0xc0, 12])]),
  ]
  const total = 20_000
  const deadline = performance.now() + 2000
  let ran = 0
  let parsed = 0
  let thrown = 0
  while (ran < total && performance.now() < deadline) {
    const seed = seeds[below(seeds.length)]!
    let b = Buffer.from(seed)
    const edits = 1 + below(4)
    for (let e = 0; e < edits; e++) {
      const op = below(10)
      if (op < 5 && b.length > 0) {
        // Overwrite a byte, mostly past the header so that the name parser gets exercised.
        const at = below(3) === 0 ? below(b.length) : 12 + below(Math.max(1, b.length - 12))
        if (at < b.length) b[at] = below(8) === 0 ? 0xc0 | below(64) : below(256)
      } else if (op < 7) {
        b = b.subarray(0, below(b.length + 1))
      } else if (op < 9) {
        const at = below(b.length + 1)
        const extra = Buffer.from(Array.from({ length: 1 + below(8) }, () => below(256)))
        b = Buffer.concat([b.subarray(0, at), extra, b.subarray(at)])
      } else if (b.length >= 4) {
        b[2] = below(256)
        b[3] = below(256)
      }
    }
    try {
      const q = parseQuery(b)
      t.true(typeof q.question.name === 'string' && q.question.name.length <= 1020)
      // A parsed query can always be answered, and the answer parses back.
      const r = parseResponse(answer(q, [{ type: 1, address: '198.18.0.2', ttl: 1 }]))
      if (r.question?.name !== q.question.name) t.fail(`echo mismatch for ${b.toString('hex')}`)
      parsed++
    } catch (e) {
      if (!(e instanceof TunError) || e.code !== 'ERR_TUN_INVALID_PACKET') {
        t.fail(`unexpected ${String(e)} for ${b.toString('hex')}`)
        return
      }
      thrown++
    }
    ran++
  }
  t.log(`fuzz: ${ran} mutated queries, ${parsed} parsed, ${thrown} rejected with ERR_TUN_INVALID_PACKET`)
  t.true(ran > 1000)
  t.is(parsed + thrown, ran)
  t.true(parsed > 0 && thrown > 0)
})

test('FakeIpPool: stable mapping for v4 and v6, reverse, mapped v4, contains', (t) => {
  const pool = new FakeIpPool({ v4: '198.18.0.0/15', v6: 'fc00::/18' })
  t.is(pool.v4, '198.18.0.0/15')
  t.is(pool.v6, 'fc00::/18')
  const a4 = pool.lookup('example.com', 4)
  const a6 = pool.lookup('example.com', 6)
  t.is(a4, '198.18.0.2') // never .0 (network) nor .1 (the device)
  t.is(a6, 'fc00::2')
  t.is(pool.lookup('EXAMPLE.com.', 4), a4)
  t.is(pool.lookup('example.com', 6), a6)
  t.is(pool.size, 1)
  const b4 = pool.lookup('other.test', 4)
  t.is(b4, '198.18.0.3')
  t.is(pool.size, 2)
  t.is(pool.reverse(a4), 'example.com')
  t.is(pool.reverse(a6), 'example.com')
  t.is(pool.reverse('fc00:0000::0002'), 'example.com')
  t.is(pool.reverse('::ffff:198.18.0.3'), 'other.test')
  t.is(pool.reverse('::ffff:c612:3'), 'other.test')
  t.is(pool.reverse('198.18.0.9'), undefined)
  t.is(pool.reverse('not an address'), undefined)
  t.is(pool.reverse('fe80::1%eth0'), undefined)
  t.true(pool.contains('198.18.0.0'))
  t.true(pool.contains('198.19.255.255'))
  t.true(pool.contains('::ffff:198.19.0.1'))
  t.false(pool.contains('198.20.0.0'))
  t.false(pool.contains('198.17.255.255'))
  t.true(pool.contains('fc00:3fff:ffff:ffff:ffff:ffff:ffff:ffff'))
  t.false(pool.contains('fc00:4000::'))
  t.false(pool.contains('10.0.0.1'))
  t.false(pool.contains('bogus'))
  t.is(pool.evicted, 0)

  // Addresses are printed the way Node prints them, across octet and group boundaries.
  const big = new FakeIpPool({ v4: '10.0.0.0/8', v6: 'fd00:1:2:3::/64', max: 70_000 })
  let mismatches = 0
  let first = ''
  for (let i = 0; i < 66_000; i++) {
    const name = `n${i}.example`
    const n = i + 2 // offsets 0 and 1 are never handed out
    const want4 = `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`
    const want6 =
      n < 0x10000
        ? `fd00:1:2:3::${n.toString(16)}`
        : `fd00:1:2:3::${(n >> 16).toString(16)}:${(n & 0xffff).toString(16)}`
    const got4 = big.lookup(name, 4)
    const got6 = big.lookup(name, 6)
    if (
      got4 !== want4 ||
      got6 !== want6 ||
      (i % 1000 === 0 && got6 !== new SocketAddress({ address: got6, family: 'ipv6' }).address)
    ) {
      mismatches++
      first ||= `${name}: ${got4} ${got6}, want ${want4} ${want6}`
    }
  }
  t.is(mismatches, 0, first)
  t.is(big.lookup('n65534.example', 6), 'fd00:1:2:3::1:0')
  t.is(big.reverse('fd00:1:2:3:0:0:1:0'), 'n65534.example')
  t.is(big.lookup('n65534.example', 4), '10.1.0.0')
  t.is(big.size, 66_000)
})

test('FakeIpPool: LRU eviction, refresh, never the .1 address, a tiny range, bad options', (t) => {
  const pool = new FakeIpPool({ max: 4 })
  const names = ['a.test', 'b.test', 'c.test', 'd.test']
  const addrs = names.map((n) => pool.lookup(n, 4))
  t.deepEqual(addrs, ['198.18.0.2', '198.18.0.3', '198.18.0.4', '198.18.0.5'])
  pool.lookup('a.test', 4) // refresh a: b is now the least recently used
  t.is(pool.reverse('198.18.0.4'), 'c.test') // refresh c
  t.is(pool.lookup('e.test', 4), '198.18.0.3') // evicts b and reuses its address
  t.is(pool.size, 4)
  t.is(pool.evicted, 1)
  t.is(pool.reverse('198.18.0.3'), 'e.test')
  t.is(pool.lookup('a.test', 4), '198.18.0.2') // survived
  t.is(pool.lookup('c.test', 4), '198.18.0.4') // survived
  // d is the least recently used now; a new name evicts it (both families) and takes its v4 address.
  pool.lookup('d.test', 6)
  pool.lookup('a.test', 4)
  pool.lookup('c.test', 4)
  pool.lookup('e.test', 4)
  t.is(pool.lookup('f.test', 4), '198.18.0.5')
  t.is(pool.reverse('fc00::2'), undefined) // d's v6 address went with it
  t.is(pool.lookup('g.test', 6), 'fc00::2') // and is reused
  t.is(pool.evicted, 3)
  t.is(pool.size, 4)

  // A /28: 16 addresses, 13 usable (not .0, .1 or the broadcast .15). More names than that still work, by eviction.
  const tiny = new FakeIpPool({ v4: '10.9.8.16/28', v6: 'fd00::/124' })
  const seen4 = new Set<string>()
  const seen6 = new Set<string>()
  for (let i = 0; i < 100; i++) {
    const a = tiny.lookup(`host${i}`, 4)
    const b = tiny.lookup(`host${i}`, 6)
    seen4.add(a)
    seen6.add(b)
    t.true(tiny.contains(a) && tiny.contains(b))
    t.is(tiny.reverse(a), `host${i}`)
    t.is(tiny.reverse(b), `host${i}`)
  }
  t.is(seen4.size, 13)
  t.is(seen6.size, 13) // the v4 range bounds the names here; freed v6 addresses are reused before new ones
  t.false(seen4.has('10.9.8.16') || seen4.has('10.9.8.17') || seen4.has('10.9.8.31'))
  t.false(seen6.has('fd00::') || seen6.has('fd00::1'))
  t.is(tiny.size, 13)
  t.is(tiny.evicted, 87)
  // Only one family used: its range alone bounds the names.
  const only4 = new FakeIpPool({ v4: '10.0.0.0/28' })
  for (let i = 0; i < 40; i++) t.not(only4.lookup(`x${i}`, 4), '10.0.0.1')
  t.is(only4.size, 13)
  const only6 = new FakeIpPool({ v6: 'fd00::/124' })
  const seenOnly6 = new Set<string>()
  for (let i = 0; i < 40; i++) seenOnly6.add(only6.lookup(`x${i}`, 6))
  t.is(only6.size, 14) // IPv6 has no broadcast address: ::2..::f
  t.deepEqual([...seenOnly6].sort(), Array.from({ length: 14 }, (_, i) => `fd00::${(i + 2).toString(16)}`).sort())

  const arg = tunError('ERR_TUN_INVALID_ARGUMENT')
  t.throws(() => new FakeIpPool({ v4: '198.18.0.0' }), arg)
  t.throws(() => new FakeIpPool({ v4: '198.18.0.0/33' }), arg)
  t.throws(() => new FakeIpPool({ v4: '198.18.0.0/29' }), arg) // 8 addresses
  t.throws(() => new FakeIpPool({ v4: '198.18.0.1/15' }), arg) // host bits
  t.throws(() => new FakeIpPool({ v4: 'fc00::/18' }), arg) // wrong family
  t.throws(() => new FakeIpPool({ v4: '300.1.1.0/24' }), arg)
  t.throws(() => new FakeIpPool({ v4: '198.18.0.0/-1' }), arg)
  t.throws(() => new FakeIpPool({ v6: 'fc00::/125' }), arg)
  t.throws(() => new FakeIpPool({ v6: 'fc00::1/64' }), arg)
  t.throws(() => new FakeIpPool({ v6: '198.18.0.0/15' }), arg)
  t.throws(() => new FakeIpPool({ v6: 'fe80::%eth0/64' }), arg)
  t.throws(() => new FakeIpPool({ max: 0 }), arg)
  t.throws(() => new FakeIpPool({ max: 1.5 }), arg)
  t.throws(() => new FakeIpPool({ max: Number.POSITIVE_INFINITY }), arg)
  t.notThrows(() => new FakeIpPool({ v4: '10.0.0.0/28', v6: 'fd00::/124', max: 1 }))
  t.throws(() => pool.lookup(7 as unknown as string, 4), arg)
  // The root (a query for '.') gets an address like any name rather than throwing inside a resolver.
  t.is(pool.reverse(pool.lookup('.', 4)), '')
  t.throws(() => pool.lookup('x', 5 as 4), arg)
})
