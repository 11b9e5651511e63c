/**
 * IP addresses as numbers: parsing (as Node's `net.isIP` accepts the text), printing (as Node prints them), network
 * byte order. One implementation for the stack, the rules, the fake-ip pool and DNS.
 *
 * @module
 * @internal
 */
import { SocketAddress, isIPv4, isIPv6 } from 'node:net'

/** An IP address as a family and an unsigned integer (32 bits for IPv4, 128 bits for IPv6). */
export interface IpValue {
  /** 4 or 6. */
  family: 4 | 6
  /** The address as an unsigned integer, most significant byte first on the wire. */
  value: bigint
}

const V4_RE = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/
const HEX_GROUP_RE = /^[0-9a-fA-F]{1,4}$/
const MAPPED_PREFIX = 0xffffn << 32n
const MASK32 = 0xffffffffn

function parseV4(s: string): bigint | undefined {
  if (!isIPv4(s)) return undefined
  const m = V4_RE.exec(s)
  if (!m) return undefined
  let v = 0n
  for (let i = 1; i <= 4; i++) {
    const octet = Number(m[i])
    if (octet > 255) return undefined
    v = (v << 8n) | BigInt(octet)
  }
  return v
}

function parseV6(s: string): bigint | undefined {
  if (!isIPv6(s) || s.includes('%')) return undefined
  let text = s
  const extra: number[] = []
  const lastColon = text.lastIndexOf(':')
  if (text.indexOf('.', lastColon) >= 0) {
    const v4 = parseV4(text.slice(lastColon + 1))
    if (v4 === undefined) return undefined
    extra.push(Number(v4 >> 16n), Number(v4 & 0xffffn))
    text = text.slice(0, lastColon + 1)
    if (!text.endsWith('::')) text = text.slice(0, -1)
  }
  const halves = text.split('::')
  if (halves.length > 2) return undefined
  const head = halves[0] ? halves[0].split(':') : []
  const tail = halves.length === 2 && halves[1] ? halves[1].split(':') : []
  const given = head.length + tail.length + extra.length
  if (halves.length === 1 ? given !== 8 : given > 7) return undefined
  const groups: number[] = []
  for (const g of head) {
    if (!HEX_GROUP_RE.test(g)) return undefined
    groups.push(parseInt(g, 16))
  }
  if (halves.length === 2) for (let i = given; i < 8; i++) groups.push(0)
  for (const g of tail) {
    if (!HEX_GROUP_RE.test(g)) return undefined
    groups.push(parseInt(g, 16))
  }
  groups.push(...extra)
  let v = 0n
  for (const g of groups) v = (v << 16n) | BigInt(g)
  return v
}

/**
 * Parses an IPv4 or IPv6 address (text as `net.isIP` accepts it, without an IPv6 zone) into its family and value.
 * An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) stays IPv6 here; see {@link unmapIPv4}.
 *
 * @returns `undefined` when `address` is not an IP address.
 */
export function parseAddress(address: string): IpValue | undefined {
  if (typeof address !== 'string') return undefined
  const v4 = parseV4(address)
  if (v4 !== undefined) return { family: 4, value: v4 }
  const v6 = parseV6(address)
  if (v6 !== undefined) return { family: 6, value: v6 }
  return undefined
}

/** The IPv4 value inside an IPv4-mapped IPv6 value (`::ffff:a.b.c.d`), or `undefined` when it is not one. */
export function unmapIPv4(v6: bigint): bigint | undefined {
  return v6 >> 32n === 0xffffn ? v6 & MASK32 : undefined
}

/** The IPv4-mapped IPv6 value (`::ffff:a.b.c.d`) of an IPv4 value. */
export function mapIPv4(v4: bigint): bigint {
  return MAPPED_PREFIX | (v4 & MASK32)
}

/**
 * Prints an address the way Node's `net` module does: dotted decimal for IPv4, RFC 5952 compressed lower-case text
 * for IPv6 (with the dotted tail Node uses for IPv4-mapped and IPv4-compatible addresses).
 */
export function formatAddress(family: 4 | 6, value: bigint): string {
  if (family === 4) {
    const n = Number(value & MASK32)
    return `${n >>> 24}.${(n >>> 16) & 0xff}.${(n >>> 8) & 0xff}.${n & 0xff}`
  }
  const groups: string[] = []
  for (let shift = 112n; shift >= 0n; shift -= 16n) groups.push(((value >> shift) & 0xffffn).toString(16))
  return new SocketAddress({ address: groups.join(':'), family: 'ipv6' }).address
}

/** The address as network-order bytes (4 or 16). */
export function addressBytes(family: 4 | 6, value: bigint): Buffer {
  const n = family === 4 ? 4 : 16
  const out = Buffer.alloc(n)
  let v = value
  for (let i = n - 1; i >= 0; i--) {
    out[i] = Number(v & 0xffn)
    v >>= 8n
  }
  return out
}

/** The value of network-order address bytes (4 or 16 of them, from `offset`). */
export function bytesToValue(bytes: Uint8Array, offset = 0, length = bytes.length - offset): bigint {
  let v = 0n
  for (let i = 0; i < length; i++) v = (v << 8n) | BigInt(bytes[offset + i] ?? 0)
  return v
}

/** `address` as Node prints it, with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as the IPv4 one; other text as is. */
export function normalizeAddress(address: string): string {
  const p = parseAddress(address)
  if (!p) return address
  const v4 = p.family === 6 ? unmapIPv4(p.value) : undefined
  return v4 !== undefined ? formatAddress(4, v4) : formatAddress(p.family, p.value)
}
