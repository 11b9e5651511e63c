/**
 * DNS wire format (RFC 1035, AAAA from RFC 3596) for a transparent proxy's resolver: parse a client's query, answer it
 * with A/AAAA records or an error, build queries to forward and parse the responses, and frame messages for DNS over
 * TCP (RFC 1035 §4.2.2, RFC 7766).
 *
 * Names are given and returned in presentation form without the trailing dot (`'www.example.com'`; the root is
 * `''`). A label byte that is a dot or a backslash is escaped (`\.`, `\\`), any byte outside printable ASCII as
 * `\DDD` (decimal), so that different wire names never print the same. Parsed names are lower-cased (ASCII only, as
 * DNS compares names).
 *
 * @example
 * ```ts
 * import { parseQuery, answer, errorReply, DNS_TYPE, DNS_RCODE } from './dns.js'
 * socket.on('message', (msg, rinfo) => {
 *   let q
 *   try { q = parseQuery(msg) } catch { return } // malformed: ERR_TUN_INVALID_PACKET; drop it
 *   const reply =
 *     q.question.type === DNS_TYPE.A
 *       ? answer(q, [{ type: DNS_TYPE.A, address: pool.lookup(q.question.name, 4), ttl: 1 }])
 *       : errorReply(q, DNS_RCODE.REFUSED)
 *   socket.send(reply, rinfo.port, rinfo.address)
 * })
 * ```
 *
 * @module
 */
import { TunError } from '../errors.js'
import { addressBytes, bytesToValue, formatAddress, parseAddress } from '../ip.js'

/** Resource record types (RFC 1035 §3.2.2 and later RFCs). */
export const DNS_TYPE = {
  A: 1,
  NS: 2,
  CNAME: 5,
  SOA: 6,
  PTR: 12,
  MX: 15,
  TXT: 16,
  AAAA: 28,
  SRV: 33,
  NAPTR: 35,
  DNAME: 39,
  OPT: 41,
  DS: 43,
  RRSIG: 46,
  NSEC: 47,
  DNSKEY: 48,
  SVCB: 64,
  HTTPS: 65,
  ANY: 255,
  CAA: 257,
} as const

/** Classes (RFC 1035 §3.2.4). Only `IN` is used in practice. */
export const DNS_CLASS = { IN: 1, CH: 3, HS: 4, ANY: 255 } as const

/** Response codes (RFC 1035 §4.1.1, RFC 6895). Values above 15 need EDNS (extended RCODE). */
export const DNS_RCODE = {
  NOERROR: 0,
  FORMERR: 1,
  SERVFAIL: 2,
  NXDOMAIN: 3,
  NOTIMP: 4,
  REFUSED: 5,
} as const

/** The question of a DNS message. */
export interface DnsQuestion {
  /** Lower-cased presentation form without the trailing dot; `''` for the root. */
  name: string
  /** QTYPE, e.g. {@link DNS_TYPE}`.A`. */
  type: number
  /** QCLASS, normally {@link DNS_CLASS}`.IN`. */
  class: number
}

/** A query as {@link parseQuery} returns it. */
export interface DnsQuery {
  /** Message ID, to be echoed in the reply. */
  id: number
  /** The whole 16-bit flags word of the header. */
  flags: number
  /** Recursion Desired, copied into the reply. */
  rd: boolean
  /** The one question. */
  question: DnsQuestion
  /** A copy of the whole message (safe to keep after the input buffer is reused), e.g. to forward it upstream. */
  raw: Buffer
}

/** An address record to put into {@link answer}. */
export interface DnsAddressRecord {
  /** {@link DNS_TYPE}`.A` (IPv4 `address`) or {@link DNS_TYPE}`.AAAA` (IPv6 `address`). */
  type: 1 | 28
  /** The address, in any text form `net.isIP` accepts (an IPv4-mapped IPv6 address is fine for AAAA). */
  address: string
  /** Seconds, an integer 0..2147483647. */
  ttl: number
}

/** A resource record of a response's answer section, as {@link parseResponse} returns it. */
export interface DnsAnswer {
  /** Owner name, lower-cased presentation form without the trailing dot. */
  name: string
  /** Record type, e.g. {@link DNS_TYPE}`.CNAME`. */
  type: number
  /** Class, normally {@link DNS_CLASS}`.IN`. */
  class: number
  /** Seconds; a TTL with the top bit set counts as 0 (RFC 2181 §8). */
  ttl: number
  /** A copy of the RDATA, as on the wire (names inside it may be compressed pointers into the message). */
  data: Buffer
  /** For A and AAAA: the address, printed the way Node's `net` module prints it. */
  address?: string
  /** For CNAME, DNAME, NS and PTR: the name it points to (decompressed, lower-cased). */
  target?: string
}

/** A response as {@link parseResponse} returns it. */
export interface DnsResponse {
  /** Message ID (the query's, to match them). */
  id: number
  /** The whole 16-bit flags word of the header. */
  flags: number
  /** RCODE, including the upper bits from an EDNS OPT record when there is one. */
  rcode: number
  /** TC: the response was truncated (retry over TCP). */
  truncated: boolean
  /** The first question, when the response has one. */
  question?: DnsQuestion
  /** The answer section (the authority and additional sections are checked but not returned). */
  answers: DnsAnswer[]
}

/** Options of {@link TcpDnsReader}. */
export interface TcpDnsReaderOptions {
  /** A length prefix above this is rejected; 1..65535, default 65535. */
  maxLength?: number
}

const HEADER = 12
const MAX_NAME_WIRE = 255
const MAX_LABEL = 63
const FLAG_QR = 0x8000
const FLAG_TC = 0x0200
const FLAG_RD = 0x0100
const FLAG_RA = 0x0080
const MAX_TTL = 0x7fffffff

function invalid(message: string): TunError {
  return new TunError('ERR_TUN_INVALID_PACKET', `DNS: ${message}`)
}

function badArgument(message: string): TunError {
  return new TunError('ERR_TUN_INVALID_ARGUMENT', `DNS: ${message}`)
}

function u16(b: Uint8Array, o: number): number {
  return (b[o]! << 8) | b[o + 1]!
}

function u32(b: Uint8Array, o: number): number {
  return ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0
}

/**
 * Reads a (possibly compressed) name at `start`. A pointer must point before the run of labels it ends and not into
 * the header, so pointers only ever go backwards and cannot loop; the decompressed name is at most 255 octets.
 *
 * @returns the labels (views into `b`) and the offset just past the name where it was written.
 */
function readName(b: Uint8Array, start: number): { labels: Uint8Array[]; end: number } {
  const labels: Uint8Array[] = []
  let pos = start
  let segment = start
  let end = -1
  let wire = 1
  for (;;) {
    if (pos >= b.length) throw invalid(`name at offset ${start} runs past the end of the message`)
    const len = b[pos]!
    if (len === 0) {
      if (end < 0) end = pos + 1
      return { labels, end }
    }
    const kind = len & 0xc0
    if (kind === 0xc0) {
      if (pos + 1 >= b.length) throw invalid(`compression pointer at offset ${pos} is truncated`)
      const target = ((len & 0x3f) << 8) | b[pos + 1]!
      if (target < HEADER || target >= segment) {
        throw invalid(`compression pointer at offset ${pos} to offset ${target} is out of range or loops`)
      }
      if (end < 0) end = pos + 2
      pos = segment = target
      continue
    }
    if (kind !== 0) {
      throw invalid(`label length byte 0x${len.toString(16)} at offset ${pos} (labels are at most ${MAX_LABEL} octets)`)
    }
    wire += len + 1
    if (wire > MAX_NAME_WIRE) throw invalid(`name at offset ${start} is longer than ${MAX_NAME_WIRE} octets`)
    if (pos + 1 + len > b.length) throw invalid(`label at offset ${pos} runs past the end of the message`)
    labels.push(b.subarray(pos + 1, pos + 1 + len))
    pos += 1 + len
  }
}

/** Presentation form of wire labels (optionally lower-cased), escaping `.`, `\` and bytes outside printable ASCII. */
function labelsToText(labels: Uint8Array[], lower: boolean): string {
  const parts: string[] = []
  for (const label of labels) {
    let s = ''
    for (const c of label) {
      if (c === 0x2e || c === 0x5c) s += '\\' + String.fromCharCode(c)
      else if (c >= 0x41 && c <= 0x5a) s += String.fromCharCode(lower ? c + 32 : c)
      else if (c > 0x20 && c < 0x7f) s += String.fromCharCode(c)
      else s += '\\' + String(c).padStart(3, '0')
    }
    parts.push(s)
  }
  return parts.join('.')
}

/** Uncompressed wire form of labels, with the root label. */
function labelsToWire(labels: Uint8Array[]): Buffer {
  let n = 1
  for (const l of labels) n += 1 + l.length
  const out = Buffer.alloc(n)
  let o = 0
  for (const l of labels) {
    out[o++] = l.length
    out.set(l, o)
    o += l.length
  }
  return out
}

/**
 * Wire form of a presentation-form name (`'www.example.com'`, a trailing dot optional; `\.`, `\\` and `\DDD`
 * escapes; case kept).
 */
function encodeName(name: string): Buffer {
  if (typeof name !== 'string') throw badArgument('a name must be a string')
  const labels: Uint8Array[] = []
  if (name !== '' && name !== '.') {
    let cur: number[] = []
    const close = (): void => {
      if (cur.length === 0) throw badArgument(`name '${name}' has an empty label`)
      if (cur.length > MAX_LABEL) throw badArgument(`name '${name}' has a label longer than ${MAX_LABEL} octets`)
      labels.push(Uint8Array.from(cur))
      cur = []
    }
    for (let i = 0; i < name.length; i++) {
      const c = name.charCodeAt(i)
      if (c === 0x2e) {
        close()
        continue
      }
      if (c === 0x5c) {
        const digits = name.slice(i + 1, i + 4)
        if (/^\d{3}$/.test(digits)) {
          const v = Number(digits)
          if (v > 255) throw badArgument(`name '${name}' has an escape \\${digits} above 255`)
          cur.push(v)
          i += 3
          continue
        }
        const next = name.charCodeAt(i + 1)
        if (!(next >= 0x20 && next < 0x7f)) throw badArgument(`name '${name}' has a bad escape`)
        cur.push(next)
        i++
        continue
      }
      if (!(c > 0x20 && c < 0x7f)) {
        throw badArgument(`name '${name}' has a character outside printable ASCII (escape it, or use punycode)`)
      }
      cur.push(c)
    }
    if (cur.length > 0) close()
  }
  const wire = labelsToWire(labels)
  if (wire.length > MAX_NAME_WIRE) throw badArgument(`name '${name}' is longer than ${MAX_NAME_WIRE} octets`)
  return wire
}

/** Reads a question at `o`. */
function readQuestion(b: Uint8Array, o: number): { question: DnsQuestion; end: number } {
  const { labels, end } = readName(b, o)
  if (end + 4 > b.length) throw invalid('question is truncated')
  return { question: { name: labelsToText(labels, true), type: u16(b, end), class: u16(b, end + 2) }, end: end + 4 }
}

/**
 * Parses a query from a client. Only the header and the question are read; anything after the question (an EDNS OPT
 * record in the additional section, say) is ignored.
 *
 * @param buf - the DNS message (a UDP payload, or one message from {@link TcpDnsReader}).
 * @throws {TunError} `ERR_TUN_INVALID_PACKET` when the message is shorter than a header, is a response (QR set), has
 *   an opcode other than 0 (QUERY), does not have exactly one question, or the question is malformed (truncated,
 *   a compression pointer that loops or points out of range, a label over 63 or a name over 255 octets).
 */
export function parseQuery(buf: Uint8Array): DnsQuery {
  if (!(buf instanceof Uint8Array)) throw invalid('a query must be a Buffer or Uint8Array')
  if (buf.length < HEADER) throw invalid(`message of ${buf.length} bytes is shorter than the ${HEADER}-byte header`)
  const flags = u16(buf, 2)
  if (flags & FLAG_QR) throw invalid('message is a response (QR set), not a query')
  const opcode = (flags >> 11) & 0xf
  if (opcode !== 0) throw invalid(`opcode ${opcode} is not QUERY (0)`)
  const qdcount = u16(buf, 4)
  if (qdcount !== 1) throw invalid(`query has ${qdcount} questions; exactly 1 is supported`)
  const { question } = readQuestion(buf, HEADER)
  return { id: u16(buf, 0), flags, rd: (flags & FLAG_RD) !== 0, question, raw: Buffer.from(buf) }
}

/** The question section for a reply to `q`: the client's name with its case as sent (resolvers using 0x20 check it). */
function questionWire(q: DnsQuery): Buffer {
  let nameWire: Buffer | undefined
  if (q.raw instanceof Uint8Array && q.raw.length > HEADER) {
    try {
      const { labels } = readName(q.raw, HEADER)
      if (labelsToText(labels, true) === q.question.name) nameWire = labelsToWire(labels)
    } catch (e) {
      if (!(e instanceof TunError)) throw e
    }
  }
  nameWire ??= encodeName(q.question.name)
  const out = Buffer.alloc(nameWire.length + 4)
  nameWire.copy(out)
  out.writeUInt16BE(q.question.type & 0xffff, nameWire.length)
  out.writeUInt16BE(q.question.class & 0xffff, nameWire.length + 2)
  return out
}

function replyHeader(q: DnsQuery, rcode: number, ancount: number): Buffer {
  const h = Buffer.alloc(HEADER)
  h.writeUInt16BE(q.id & 0xffff, 0)
  h.writeUInt16BE(FLAG_QR | (q.rd ? FLAG_RD : 0) | FLAG_RA | rcode, 2)
  h.writeUInt16BE(1, 4)
  h.writeUInt16BE(ancount, 6)
  return h
}

/**
 * A reply to `q` with address records: same ID, QR=1, opcode 0, AA=0, RD copied, RA=1, RCODE 0 (NOERROR), the
 * question echoed, each answer owned by the question's name (a compression pointer to it). No records makes a NODATA
 * reply (NOERROR, no answers). The reply has no OPT record, even when the query had one.
 *
 * @throws {TunError} `ERR_TUN_INVALID_ARGUMENT` for a record whose type is not A or AAAA, whose address is not of
 *   that family, or whose TTL is not an integer 0..2147483647.
 */
export function answer(q: DnsQuery, records: readonly DnsAddressRecord[]): Buffer {
  if (!Array.isArray(records)) throw badArgument('records must be an array')
  if (records.length > 0xffff) throw badArgument('too many records')
  const rrs: Buffer[] = []
  for (const r of records) {
    if (r === null || typeof r !== 'object') throw badArgument('a record must be an object')
    if (r.type !== DNS_TYPE.A && r.type !== DNS_TYPE.AAAA) {
      throw badArgument(`record type ${String(r.type)} is not A (1) or AAAA (28)`)
    }
    if (!Number.isInteger(r.ttl) || r.ttl < 0 || r.ttl > MAX_TTL) {
      throw badArgument(`record TTL ${String(r.ttl)} is not an integer 0..${MAX_TTL}`)
    }
    const parsed = parseAddress(r.address)
    const family = r.type === DNS_TYPE.A ? 4 : 6
    if (!parsed || parsed.family !== family) {
      throw badArgument(`'${String(r.address)}' is not an IPv${family} address for a type ${r.type} record`)
    }
    const data = addressBytes(family, parsed.value)
    const rr = Buffer.alloc(12 + data.length)
    rr.writeUInt16BE(0xc000 | HEADER, 0)
    rr.writeUInt16BE(r.type, 2)
    rr.writeUInt16BE(DNS_CLASS.IN, 4)
    rr.writeUInt32BE(r.ttl, 6)
    rr.writeUInt16BE(data.length, 10)
    data.copy(rr, 12)
    rrs.push(rr)
  }
  return Buffer.concat([replyHeader(q, DNS_RCODE.NOERROR, rrs.length), questionWire(q), ...rrs])
}

/**
 * An error reply to `q`: same ID, QR=1, RD copied, RA=1, the given RCODE, the question echoed, no records.
 *
 * @param rcode - 0..15, e.g. {@link DNS_RCODE}`.SERVFAIL` (2), `.NXDOMAIN` (3), `.REFUSED` (5).
 * @throws {TunError} `ERR_TUN_INVALID_ARGUMENT` when `rcode` is not an integer 0..15.
 */
export function errorReply(q: DnsQuery, rcode: number): Buffer {
  if (!Number.isInteger(rcode) || rcode < 0 || rcode > 15) {
    throw badArgument(`rcode ${String(rcode)} is not an integer 0..15`)
  }
  return Buffer.concat([replyHeader(q, rcode, 0), questionWire(q)])
}

/**
 * Parses a response (from an upstream resolver, or one of {@link answer} / {@link errorReply}). Every section is
 * checked; compression pointers are followed safely (backwards only, bounded).
 *
 * @throws {TunError} `ERR_TUN_INVALID_PACKET` when the message is shorter than a header, is not a response (QR
 *   clear), or any name or record is malformed or runs past the end (including an A/AAAA RDATA of the wrong size).
 */
export function parseResponse(buf: Uint8Array): DnsResponse {
  if (!(buf instanceof Uint8Array)) throw invalid('a response must be a Buffer or Uint8Array')
  if (buf.length < HEADER) throw invalid(`message of ${buf.length} bytes is shorter than the ${HEADER}-byte header`)
  const flags = u16(buf, 2)
  if (!(flags & FLAG_QR)) throw invalid('message is a query (QR clear), not a response')
  const qdcount = u16(buf, 4)
  const counts = [u16(buf, 6), u16(buf, 8), u16(buf, 10)] as const
  let rcode = flags & 0xf
  let o = HEADER
  let question: DnsQuestion | undefined
  for (let i = 0; i < qdcount; i++) {
    const r = readQuestion(buf, o)
    question ??= r.question
    o = r.end
  }
  const answers: DnsAnswer[] = []
  for (let section = 0; section < 3; section++) {
    for (let i = 0; i < counts[section]!; i++) {
      const { labels, end } = readName(buf, o)
      if (end + 10 > buf.length) throw invalid(`record at offset ${o} is truncated`)
      const type = u16(buf, end)
      const cls = u16(buf, end + 2)
      const rawTtl = u32(buf, end + 4)
      const rdlength = u16(buf, end + 8)
      const start = end + 10
      const stop = start + rdlength
      if (stop > buf.length) throw invalid(`record data at offset ${start} runs past the end of the message`)
      o = stop
      if (section === 2 && type === DNS_TYPE.OPT) rcode |= (rawTtl >>> 24) << 4
      if (section !== 0) continue
      const rr: DnsAnswer = {
        name: labelsToText(labels, true),
        type,
        class: cls,
        ttl: rawTtl > MAX_TTL ? 0 : rawTtl,
        data: Buffer.from(buf.subarray(start, stop)),
      }
      if (type === DNS_TYPE.A || type === DNS_TYPE.AAAA) {
        const want = type === DNS_TYPE.A ? 4 : 16
        if (rdlength !== want) throw invalid(`${type === DNS_TYPE.A ? 'A' : 'AAAA'} record with ${rdlength} bytes`)
        rr.address = formatAddress(type === DNS_TYPE.A ? 4 : 6, bytesToValue(buf, start, want))
      } else if (type === DNS_TYPE.CNAME || type === DNS_TYPE.DNAME || type === DNS_TYPE.NS || type === DNS_TYPE.PTR) {
        const target = readName(buf, start)
        if (target.end !== stop) throw invalid(`record data at offset ${start} is not one name`)
        rr.target = labelsToText(target.labels, true)
      }
      answers.push(rr)
    }
  }
  const out: DnsResponse = { id: u16(buf, 0), flags, rcode, truncated: (flags & FLAG_TC) !== 0, answers }
  if (question) out.question = question
  return out
}

/**
 * A query for `name` (presentation form, trailing dot optional, case kept) of `type`, class IN, with RD=1.
 *
 * @throws {TunError} `ERR_TUN_INVALID_ARGUMENT` for a bad name (an empty label, a label over 63 or a name over 255
 *   octets, a character outside printable ASCII that is not escaped), or a `type` or `id` that is not an integer
 *   0..65535.
 */
export function buildQuery(name: string, type: number, id: number): Buffer {
  if (!Number.isInteger(type) || type < 0 || type > 0xffff) throw badArgument(`type ${String(type)} is not 0..65535`)
  if (!Number.isInteger(id) || id < 0 || id > 0xffff) throw badArgument(`id ${String(id)} is not 0..65535`)
  const wire = encodeName(name)
  const out = Buffer.alloc(HEADER + wire.length + 4)
  out.writeUInt16BE(id, 0)
  out.writeUInt16BE(FLAG_RD, 2)
  out.writeUInt16BE(1, 4)
  wire.copy(out, HEADER)
  out.writeUInt16BE(type, HEADER + wire.length)
  out.writeUInt16BE(DNS_CLASS.IN, HEADER + wire.length + 2)
  return out
}

/**
 * A message framed for DNS over TCP: a 2-byte big-endian length, then the message.
 *
 * @throws {TunError} `ERR_TUN_INVALID_ARGUMENT` when the message is empty or longer than 65535 bytes.
 */
export function frameTcp(msg: Uint8Array): Buffer {
  if (!(msg instanceof Uint8Array)) throw badArgument('a message must be a Buffer or Uint8Array')
  if (msg.length === 0 || msg.length > 0xffff) {
    throw badArgument(`a TCP DNS message must be 1..65535 bytes (got ${msg.length})`)
  }
  const out = Buffer.allocUnsafe(2 + msg.length)
  out.writeUInt16BE(msg.length, 0)
  out.set(msg, 2)
  return out
}

/**
 * Splits a DNS-over-TCP byte stream into messages. Feed it chunks as they arrive; it holds at most one incomplete
 * message (at most `maxLength` bytes, and two of length).
 *
 * Once it has thrown, the stream is out of step: every later {@link push} throws the same error; close the connection.
 *
 * @example
 * ```ts
 * const reader = new TcpDnsReader()
 * socket.on('data', (chunk) => {
 *   for (const msg of reader.push(chunk)) handle(parseQuery(msg))
 * })
 * ```
 */
export class TcpDnsReader {
  /** The largest message accepted. */
  readonly maxLength: number
  #lengthBytes = 0
  #high = 0
  #msg: Buffer | undefined
  #filled = 0
  #failed: TunError | undefined

  /** @throws {TunError} `ERR_TUN_INVALID_ARGUMENT` when `maxLength` is not an integer 1..65535. */
  constructor(options: TcpDnsReaderOptions = {}) {
    const max = options.maxLength ?? 0xffff
    if (!Number.isInteger(max) || max < 1 || max > 0xffff) {
      throw badArgument(`maxLength ${String(options.maxLength)} is not an integer 1..65535`)
    }
    this.maxLength = max
  }

  /** Bytes held of a message not complete yet (its length prefix included). 0 between messages. */
  get buffered(): number {
    return this.#msg ? 2 + this.#filled : this.#lengthBytes
  }

  /**
   * Takes the next chunk of the stream.
   *
   * @returns the messages it completes (copies, without their length prefix), possibly none.
   * @throws {TunError} `ERR_TUN_INVALID_PACKET` for a length prefix of 0 or above `maxLength`.
   */
  push(chunk: Uint8Array): Buffer[] {
    if (this.#failed) throw this.#failed
    if (!(chunk instanceof Uint8Array)) throw badArgument('a chunk must be a Buffer or Uint8Array')
    const out: Buffer[] = []
    let i = 0
    while (i < chunk.length) {
      if (!this.#msg) {
        let len: number
        if (this.#lengthBytes === 1) {
          len = (this.#high << 8) | chunk[i]!
          i += 1
          this.#lengthBytes = 0
        } else if (chunk.length - i >= 2) {
          len = u16(chunk, i)
          i += 2
        } else {
          this.#high = chunk[i]!
          this.#lengthBytes = 1
          i += 1
          continue
        }
        if (len === 0 || len > this.maxLength) {
          this.#failed = invalid(`TCP message length ${len} is not 1..${this.maxLength}`)
          throw this.#failed
        }
        if (chunk.length - i >= len) {
          out.push(Buffer.from(chunk.subarray(i, i + len)))
          i += len
          continue
        }
        this.#msg = Buffer.allocUnsafe(len)
        this.#filled = 0
      }
      const n = Math.min(this.#msg.length - this.#filled, chunk.length - i)
      this.#msg.set(chunk.subarray(i, i + n), this.#filled)
      this.#filled += n
      i += n
      if (this.#filled === this.#msg.length) {
        out.push(this.#msg)
        this.#msg = undefined
      }
    }
    return out
  }
}
