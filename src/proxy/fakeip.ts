/**
 * Fake-IP allocation for a transparent proxy: every name a client resolves gets an address from a reserved range, so
 * that a connection to that address can later be mapped back to the name it was meant for (and proxied by name).
 *
 * @example
 * ```ts
 * import { FakeIpPool } from './fakeip.js'
 * const pool = new FakeIpPool({ v4: '198.18.0.0/15', v6: 'fc00::/18' })
 * pool.lookup('example.com', 4) // '198.18.0.2'
 * pool.lookup('example.com', 6) // 'fc00::2'
 * pool.reverse('198.18.0.2') // 'example.com'
 * ```
 *
 * @module
 */
import { TunError } from '../errors.js'
import { formatAddress, mapIPv4, parseAddress, unmapIPv4 } from '../ip.js'

/** The IPv4 range {@link FakeIpPool} uses when none is given (RFC 2544 benchmarking range, never routed). */
export const DEFAULT_FAKE_V4 = '198.18.0.0/15'
/** The IPv6 range {@link FakeIpPool} uses when none is given (inside the unique-local fc00::/7). */
export const DEFAULT_FAKE_V6 = 'fc00::/18'
/** How many names {@link FakeIpPool} keeps when no `max` is given. */
export const DEFAULT_FAKE_MAX = 65536

/** Options of {@link FakeIpPool}. */
export interface FakeIpPoolOptions {
  /** IPv4 range in CIDR notation (network address, no host bits), at least 16 addresses. Default {@link DEFAULT_FAKE_V4}. */
  v4?: string
  /** IPv6 range in CIDR notation (network address, no host bits), at least 16 addresses. Default {@link DEFAULT_FAKE_V6}. */
  v6?: string
  /** At most this many names are kept; past it the least recently used one is evicted. Default {@link DEFAULT_FAKE_MAX}. */
  max?: number
}

interface Entry {
  name: string
  v4?: bigint
  v6?: bigint
}

/** One family's range: offsets from the network address, a cursor for never-used ones and a queue of freed ones. */
class Range {
  readonly family: 4 | 6
  readonly cidr: string
  readonly base: bigint
  readonly hostBits: bigint
  /** First offset past the last usable one (the broadcast address for IPv4, the end of the range for IPv6). */
  readonly end: bigint
  /** Next never-allocated offset; offsets 0 (network) and 1 (the device's own address) are never handed out. */
  next = 2n
  /** Released addresses, oldest first; reused before the cursor moves on, so the range in use stays at most `max`. */
  readonly free = new Set<bigint>()
  readonly byAddr = new Map<bigint, Entry>()
  /** Names holding an address of this family, least recently used first. */
  readonly lru = new Map<string, Entry>()

  constructor(family: 4 | 6, cidr: unknown, option: string) {
    this.family = family
    const bits = family === 4 ? 32 : 128
    if (typeof cidr !== 'string') throw badOption(`${option} must be a CIDR string such as '${defaultFor(family)}'`)
    const slash = cidr.indexOf('/')
    const addr = slash < 0 ? undefined : parseAddress(cidr.slice(0, slash))
    const prefixText = slash < 0 ? '' : cidr.slice(slash + 1)
    if (!addr || addr.family !== family || !/^\d{1,3}$/.test(prefixText) || Number(prefixText) > bits) {
      throw badOption(`${option} '${cidr}' is not an IPv${family} CIDR such as '${defaultFor(family)}'`)
    }
    const prefix = Number(prefixText)
    this.hostBits = BigInt(bits - prefix)
    if (this.hostBits < 4n) {
      throw badOption(`${option} '${cidr}' has fewer than 16 addresses (the prefix can be at most /${bits - 4})`)
    }
    const hostMask = (1n << this.hostBits) - 1n
    if ((addr.value & hostMask) !== 0n) {
      const net = formatAddress(family, addr.value & ~hostMask)
      throw badOption(`${option} '${cidr}' has host bits set; the range is written '${net}/${prefix}'`)
    }
    this.base = addr.value
    this.cidr = `${formatAddress(family, this.base)}/${prefix}`
    const size = 1n << this.hostBits
    this.end = family === 4 ? size - 1n : size
  }

  contains(value: bigint): boolean {
    return value >> this.hostBits === this.base >> this.hostBits
  }

  /** A free address, or `undefined` when every usable one is taken. */
  take(): bigint | undefined {
    for (const v of this.free) {
      this.free.delete(v)
      return v
    }
    if (this.next < this.end) return this.base + this.next++
    return undefined
  }

  release(value: bigint): void {
    this.byAddr.delete(value)
    this.free.add(value)
  }
}

function defaultFor(family: 4 | 6): string {
  return family === 4 ? DEFAULT_FAKE_V4 : DEFAULT_FAKE_V6
}

function badOption(message: string): TunError {
  return new TunError('ERR_TUN_INVALID_ARGUMENT', `FakeIpPool: ${message}`)
}

/** Lower-cases (ASCII only, as DNS compares names) and drops one trailing dot. */
function normalizeName(name: string): string {
  const lower = name.replace(/[A-Z]+/g, (s) => s.toLowerCase())
  if (!lower.endsWith('.')) return lower
  // A dot after an odd number of backslashes is part of a label (`a\.`), not the root.
  let slashes = 0
  while (lower[lower.length - 2 - slashes] === '\\') slashes++
  return slashes % 2 === 0 ? lower.slice(0, -1) : lower
}

/**
 * Hands out fake addresses for names, one per name and family, and maps them back.
 *
 * - Addresses come from the `v4` and `v6` ranges; the network address, the first host address (`.1` / `::1` of the
 *   range, which the device itself uses) and the IPv4 broadcast address are never handed out.
 * - The same name keeps the same addresses while it is in the pool. {@link lookup} and {@link reverse} make a name the
 *   most recently used; past `max` names the least recently used name is evicted (both its addresses) and its
 *   addresses are reused. When a small range runs out before `max`, the least recently used name holding an address
 *   of that family is evicted the same way.
 * - Names are compared lower-cased (ASCII), without a trailing dot.
 *
 * @example
 * ```ts
 * const pool = new FakeIpPool({ v4: '198.18.0.0/15', max: 10_000 })
 * const addr = pool.lookup('Example.COM', 4) // '198.18.0.2'
 * pool.reverse(addr) // 'example.com'
 * pool.reverse('::ffff:198.18.0.2') // 'example.com' (IPv4-mapped form, as a dual-stack socket reports it)
 * pool.contains('198.19.255.255') // true: inside the range, even though never handed out
 * ```
 */
export class FakeIpPool {
  /** The IPv4 range, normalized (e.g. `'198.18.0.0/15'`). */
  readonly v4: string
  /** The IPv6 range, normalized (e.g. `'fc00::/18'`). */
  readonly v6: string
  /** The most names kept at once. */
  readonly max: number
  readonly #r4: Range
  readonly #r6: Range
  /** Every name in the pool, least recently used first. */
  readonly #names = new Map<string, Entry>()
  #evicted = 0

  /**
   * @throws {TunError} `ERR_TUN_INVALID_ARGUMENT` for a range that is not a CIDR of its family, has host bits set or
   *   holds fewer than 16 addresses, or a `max` that is not an integer of at least 1.
   */
  constructor(options: FakeIpPoolOptions = {}) {
    if (options === null || typeof options !== 'object') throw badOption('options must be an object')
    const max = options.max ?? DEFAULT_FAKE_MAX
    if (typeof max !== 'number' || !Number.isSafeInteger(max) || max < 1) {
      throw badOption(`max must be an integer of at least 1 (got ${String(options.max)})`)
    }
    this.max = max
    this.#r4 = new Range(4, options.v4 ?? DEFAULT_FAKE_V4, 'v4')
    this.#r6 = new Range(6, options.v6 ?? DEFAULT_FAKE_V6, 'v6')
    this.v4 = this.#r4.cidr
    this.v6 = this.#r6.cidr
  }

  /** How many names are in the pool. */
  get size(): number {
    return this.#names.size
  }

  /** How many names have been evicted (to stay within `max`, or because a range ran out) since the pool was made. */
  get evicted(): number {
    return this.#evicted
  }

  /**
   * The fake address of `name` in `family`, allocated when the name has none yet. Makes the name the most recently
   * used. May evict the least recently used name.
   *
   * @throws {TunError} `ERR_TUN_INVALID_ARGUMENT` when `name` is not a string or `family` is not 4 or 6.
   */
  lookup(name: string, family: 4 | 6): string {
    if (typeof name !== 'string') throw badOption('lookup: name must be a string')
    if (family !== 4 && family !== 6) throw badOption(`lookup: family must be 4 or 6 (got ${String(family)})`)
    const key = normalizeName(name) // '' (the root) is a name like any other: a client may ask for it
    const range = family === 4 ? this.#r4 : this.#r6
    let entry = this.#names.get(key)
    if (entry) {
      this.#touch(entry)
    } else {
      while (this.#names.size >= this.max) {
        const oldest = this.#names.values().next().value
        if (!oldest) break
        this.#evict(oldest)
      }
      entry = { name: key }
      this.#names.set(key, entry)
    }
    const held = family === 4 ? entry.v4 : entry.v6
    if (held !== undefined) return formatAddress(family, held)
    let value = range.take()
    while (value === undefined) {
      // The range is exhausted: evict the least recently used name holding one of its addresses. `entry` holds
      // none, so it is never the one evicted; the range has at least 13 usable addresses, so one is found.
      const oldest = range.lru.values().next().value
      if (!oldest) throw new TunError('ERR_TUN_INTERNAL', 'FakeIpPool: range exhausted with no name to evict')
      this.#evict(oldest)
      value = range.take()
    }
    if (family === 4) entry.v4 = value
    else entry.v6 = value
    range.byAddr.set(value, entry)
    range.lru.set(key, entry)
    return formatAddress(family, value)
  }

  /**
   * The name a fake address was handed out for, or `undefined` when the address is not (or no longer) handed out.
   * Accepts IPv4-mapped IPv6 text (`::ffff:198.18.0.2`) for IPv4 addresses. Makes the name the most recently used.
   */
  reverse(address: string): string | undefined {
    const parsed = parseAddress(address)
    if (!parsed) return undefined
    let entry: Entry | undefined
    if (parsed.family === 4) {
      entry = this.#r4.byAddr.get(parsed.value)
    } else {
      entry = this.#r6.byAddr.get(parsed.value)
      const mapped = unmapIPv4(parsed.value)
      if (!entry && mapped !== undefined) entry = this.#r4.byAddr.get(mapped)
    }
    if (!entry) return undefined
    this.#touch(entry)
    return entry.name
  }

  /**
   * Whether `address` is inside either fake range (whether or not it is handed out; including the network, first
   * host and broadcast addresses). Accepts IPv4-mapped IPv6 text for IPv4 addresses. Does not refresh anything.
   */
  contains(address: string): boolean {
    const parsed = parseAddress(address)
    if (!parsed) return false
    if (parsed.family === 4) return this.#r4.contains(parsed.value)
    if (this.#r6.contains(parsed.value)) return true
    const mapped = unmapIPv4(parsed.value)
    return mapped !== undefined && this.#r4.contains(mapped)
  }

  /** Moves an entry to the most recently used end of every list it is on. */
  #touch(entry: Entry): void {
    this.#names.delete(entry.name)
    this.#names.set(entry.name, entry)
    if (entry.v4 !== undefined) {
      this.#r4.lru.delete(entry.name)
      this.#r4.lru.set(entry.name, entry)
    }
    if (entry.v6 !== undefined) {
      this.#r6.lru.delete(entry.name)
      this.#r6.lru.set(entry.name, entry)
    }
  }

  #evict(entry: Entry): void {
    this.#names.delete(entry.name)
    if (entry.v4 !== undefined) {
      this.#r4.lru.delete(entry.name)
      this.#r4.release(entry.v4)
    }
    if (entry.v6 !== undefined) {
      this.#r6.lru.delete(entry.name)
      this.#r6.release(entry.v6)
    }
    this.#evicted++
  }
}
