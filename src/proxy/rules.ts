/**
 * The rules engine of the transparent proxy: which upstream a flow (a TCP connection or a UDP session taken from the
 * TUN) goes to, decided by an ordered list of rules in the manner of Clash/mihomo — the first rule whose conditions all
 * hold names the upstream.
 *
 * Rules are compiled once, when the {@link RuleSet} is built: exact names into a `Set`, suffixes into a map walked
 * over the name's own suffixes, CIDRs into sorted ranges (numbers for IPv4, bigints for IPv6) and into per-prefix-length
 * maps, ports into sorted ranges. Matching a flow looks up the rules its name and address can hit in those maps and
 * scans only the rules that have neither (keyword, port, network and catch-all rules) in order, so that thousands of
 * domain or CIDR rules cost a few map lookups per flow, not a loop over all of them.
 *
 * @example
 * ```ts
 * import { readFileSync } from 'node:fs'
 * import { RuleSet, parseRules } from './proxy/rules.js'
 *
 * const rules = new RuleSet(parseRules(readFileSync('rules.txt', 'utf8')), { default: 'proxy' })
 * for (const name of rules.upstreams()) if (!upstreams.has(name)) throw new Error(`no upstream '${name}'`)
 * rules.match({ protocol: 'tcp', address: '142.250.74.46', port: 443, domain: 'www.google.com' }) // { upstream, index }
 * ```
 */
import { TunError } from '../errors.js'
import { parseAddress, unmapIPv4 } from '../ip.js'

/**
 * One rule: the conditions a flow must meet and the upstream it then goes to.
 *
 * Every condition given must hold (AND); within one list any entry is enough (OR). A rule with no condition matches
 * every flow (a final catch-all, like Clash's `MATCH`). An empty list is refused rather than read as "never".
 */
export interface Rule {
  /** Exact names: `example.com` matches `example.com` only. Case-insensitive; a trailing dot is ignored. */
  domain?: string[]
  /**
   * Name suffixes on label boundaries: `example.com` matches `example.com` and `a.b.example.com`, not
   * `badexample.com`. Case-insensitive; a trailing dot is ignored.
   */
  domainSuffix?: string[]
  /** Substrings of the name: `google` matches `www.google.com` and `googleapis.com`. Case-insensitive. */
  domainKeyword?: string[]
  /**
   * Destination networks, IPv4 and IPv6 mixed: `10.0.0.0/8`, `fc00::/7`, `0.0.0.0/0`. A bare address is a /32 or
   * /128; host bits are masked off. An IPv4-mapped network (`::ffff:10.0.0.0/104`) is the IPv4 network it maps.
   * An IPv6 network never matches an IPv4 flow, even `::/0`.
   */
  cidr?: string[]
  /** Destination ports: `443`, `'443'` or a range `'8000-9000'` (inclusive), each 1..65535. */
  port?: (number | string)[]
  /** The flow's transport. */
  protocol?: 'tcp' | 'udp'
  /** The upstream's name (for example `'direct'`, `'proxy'`, `'reject'`); the caller maps names to upstreams. */
  upstream: string
}

/** What a rule is matched against: one flow's destination. */
export interface Flow {
  /** The flow's transport. */
  protocol: 'tcp' | 'udp'
  /**
   * Destination IP address, IPv4 or IPv6 (an IPv6 zone `%eth0` is ignored). An IPv4-mapped IPv6 address
   * (`::ffff:a.b.c.d`) is matched as the IPv4 address. An address that does not parse meets no CIDR condition.
   */
  address: string
  /** Destination port. */
  port: number
  /**
   * The name known for that address (from a DNS answer, SNI, a fake-IP table), lower-case. Without it no domain
   * condition (`domain`, `domainSuffix`, `domainKeyword`) holds.
   */
  domain?: string
}

/** Options of the {@link RuleSet} constructor. */
export interface RuleSetOptions {
  /** Upstream of a flow that no rule matches. Default `'direct'`. */
  default?: string
}

/** The answer of {@link RuleSet.match}. */
export interface RuleMatch {
  /** The upstream's name: the matching rule's, or the default. */
  upstream: string
  /** Index of the matching rule in the array given to the constructor; -1 when none matched (the default). */
  index: number
}

/** Which condition a compiled rule is indexed by (it is looked up in that index rather than scanned). */
const KEY_NONE = 0
const KEY_DOMAIN = 1
const KEY_SUFFIX = 2
const KEY_CIDR = 3

/** Keys a rule object may have. */
const RULE_KEYS: ReadonlySet<string> = new Set([
  'domain',
  'domainSuffix',
  'domainKeyword',
  'cidr',
  'port',
  'protocol',
  'upstream',
])

/** A parsed network: IPv4 as an unsigned 32-bit number, IPv6 as a bigint; `start` has the host bits cleared. */
type Net = { v4: true; len: number; start: number } | { v4: false; len: number; start: bigint }

/** A rule after validation, in the shape matching wants. */
interface Compiled {
  upstream: string
  key: number
  protocol: 'tcp' | 'udp' | undefined
  domains: Set<string> | undefined
  suffixes: Set<string> | undefined
  keywords: string[] | undefined
  /** Whether the rule has a CIDR condition (then `v4*`/`v6*` hold its ranges, possibly none of a family). */
  cidr: boolean
  v4Starts: number[]
  v4Ends: number[]
  v6Starts: bigint[]
  v6Ends: bigint[]
  nets: Net[]
  /** Port ranges (inclusive), sorted and merged; undefined without a port condition. */
  portStarts: number[] | undefined
  portEnds: number[] | undefined
}

/** A flow in the shape matching wants: name normalized, address parsed once. */
interface Context {
  protocol: string
  port: number
  domain: string | undefined
  /** IPv4 address (also of a mapped IPv6 address) as an unsigned number; -1 when not IPv4. */
  v4: number
  /** IPv6 address; undefined when IPv4 or unparsable. */
  v6: bigint | undefined
}

/** Throws the error of a bad rule. */
function fail(where: string, message: string): never {
  throw new TunError('ERR_TUN_INVALID_ARGUMENT', `${where}: ${message}`)
}

/** A value as it reads in an error message. */
function show(value: unknown): string {
  if (typeof value === 'string') return `'${value}'`
  if (typeof value === 'bigint') return `${value}n`
  return value === undefined ? 'undefined' : (JSON.stringify(value) ?? String(value))
}

/** An IPv4 network of `len` bits holding `addr`. */
function v4Net(addr: number, len: number): Net {
  const size = 2 ** (32 - len)
  return { v4: true, len, start: Math.floor(addr / size) * size }
}

/** Parses `address/len` (or a bare address) into a network; undefined when it is not one. */
function parseCidr(text: string): Net | undefined {
  const slash = text.indexOf('/')
  const addr = slash < 0 ? text : text.slice(0, slash)
  const lenText = slash < 0 ? undefined : text.slice(slash + 1)
  if (lenText !== undefined && !/^[0-9]{1,3}$/.test(lenText)) return undefined
  const p = parseAddress(addr)
  if (p === undefined) return undefined
  if (p.family === 4) {
    const len = lenText === undefined ? 32 : Number(lenText)
    return len > 32 ? undefined : v4Net(Number(p.value), len)
  }
  const len = lenText === undefined ? 128 : Number(lenText)
  if (len > 128) return undefined
  const mapped = unmapIPv4(p.value)
  if (len >= 96 && mapped !== undefined) return v4Net(Number(mapped), len - 96)
  const shift = BigInt(128 - len)
  return { v4: false, len, start: (p.value >> shift) << shift }
}

/** Sorts and merges inclusive number ranges (adjacent ones too) into parallel start/end arrays. */
function mergeRanges(ranges: [number, number][]): { starts: number[]; ends: number[] } {
  ranges.sort((a, b) => a[0] - b[0])
  const starts: number[] = []
  const ends: number[] = []
  for (const [s, e] of ranges) {
    const last = ends.length - 1
    if (last >= 0 && s <= ends[last]! + 1) {
      if (e > ends[last]!) ends[last] = e
    } else {
      starts.push(s)
      ends.push(e)
    }
  }
  return { starts, ends }
}

/** {@link mergeRanges} for bigint ranges. */
function mergeBigRanges(ranges: [bigint, bigint][]): { starts: bigint[]; ends: bigint[] } {
  ranges.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
  const starts: bigint[] = []
  const ends: bigint[] = []
  for (const [s, e] of ranges) {
    const last = ends.length - 1
    if (last >= 0 && s <= ends[last]! + 1n) {
      if (e > ends[last]!) ends[last] = e
    } else {
      starts.push(s)
      ends.push(e)
    }
  }
  return { starts, ends }
}

/** Whether `x` is in one of the sorted, disjoint number ranges. */
function inRanges<T extends number | bigint>(starts: readonly T[], ends: readonly T[], x: T): boolean {
  let lo = 0
  let hi = starts.length - 1
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1
    if (starts[mid]! <= x) {
      if (x <= ends[mid]!) return true
      lo = mid + 1
    } else {
      hi = mid - 1
    }
  }
  return false
}

/** A name label by label: no empty label, no whitespace, none of `, / \ : @ # *` (no wildcards: a suffix is one). */
const DOMAIN_SHAPE = /^[^\s.,/\\:@#*]+(?:\.[^\s.,/\\:@#*]+)*$/

/** Validates a list condition: an array of at least one entry. */
function list(where: string, key: string, value: unknown): unknown[] {
  if (!Array.isArray(value)) fail(where, `${key} must be an array, got ${show(value)}`)
  if (value.length === 0) fail(where, `${key} is an empty list (leave it out to not test it)`)
  return value as unknown[]
}

/** Validates and normalizes a list of names (lower-case, trailing dot dropped). */
function names(where: string, key: string, value: unknown, what: string): Set<string> {
  const out = new Set<string>()
  for (const entry of list(where, key, value)) {
    if (typeof entry !== 'string') fail(where, `bad ${what} ${show(entry)} (not a string)`)
    const name = (entry.endsWith('.') ? entry.slice(0, -1) : entry).toLowerCase()
    if (!DOMAIN_SHAPE.test(name)) fail(where, `bad ${what} ${show(entry)}`)
    out.add(name)
  }
  return out
}

/** Parses one port entry into an inclusive range. */
function portRange(where: string, entry: unknown): [number, number] {
  const bad = (why: string): never => fail(where, `bad port ${show(entry)} (${why})`)
  let lo: number
  let hi: number
  if (typeof entry === 'number') {
    lo = hi = entry
  } else if (typeof entry === 'string') {
    const m = /^\s*([0-9]{1,5})\s*(?:-\s*([0-9]{1,5})\s*)?$/.exec(entry)
    if (m === null) return bad('a port is 1-65535, a range 8000-9000')
    lo = Number(m[1])
    hi = m[2] === undefined ? lo : Number(m[2])
  } else {
    return bad('a port is a number or a string')
  }
  if (!Number.isInteger(lo) || !Number.isInteger(hi)) return bad('not an integer')
  if (lo < 1 || lo > 65535 || hi < 1 || hi > 65535) return bad('out of range 1-65535')
  if (lo > hi) return bad('reversed range')
  return [lo, hi]
}

/** Validates one rule (`where` names it in errors) and compiles it. */
function compile(rule: unknown, where: string): Compiled {
  if (typeof rule !== 'object' || rule === null || Array.isArray(rule)) {
    fail(where, `a rule is an object, got ${show(rule)}`)
  }
  const r = rule as Record<string, unknown>
  for (const key of Object.keys(r)) if (!RULE_KEYS.has(key)) fail(where, `unknown key ${show(key)}`)

  if (typeof r.upstream !== 'string') fail(where, `upstream must be a string, got ${show(r.upstream)}`)
  if (r.upstream.trim() === '') fail(where, `empty upstream name ${show(r.upstream)}`)

  let protocol: 'tcp' | 'udp' | undefined
  if (r.protocol !== undefined) {
    if (r.protocol !== 'tcp' && r.protocol !== 'udp') fail(where, `bad protocol ${show(r.protocol)} (tcp or udp)`)
    protocol = r.protocol
  }

  const domains = r.domain === undefined ? undefined : names(where, 'domain', r.domain, 'domain')
  const suffixes =
    r.domainSuffix === undefined ? undefined : names(where, 'domainSuffix', r.domainSuffix, 'domain suffix')
  let keywords: string[] | undefined
  if (r.domainKeyword !== undefined) {
    const set = new Set<string>()
    for (const entry of list(where, 'domainKeyword', r.domainKeyword)) {
      if (typeof entry !== 'string' || entry === '' || /\s/.test(entry)) {
        fail(where, `bad domain keyword ${show(entry)}`)
      }
      set.add(entry.toLowerCase())
    }
    keywords = [...set]
  }

  const nets: Net[] = []
  const v4: [number, number][] = []
  const v6: [bigint, bigint][] = []
  if (r.cidr !== undefined) {
    for (const entry of list(where, 'cidr', r.cidr)) {
      const net = typeof entry === 'string' ? parseCidr(entry) : undefined
      if (net === undefined) fail(where, `bad CIDR ${show(entry)}`)
      nets.push(net)
      if (net.v4) v4.push([net.start, net.start + 2 ** (32 - net.len) - 1])
      else v6.push([net.start, net.start + (1n << BigInt(128 - net.len)) - 1n])
    }
  }
  const m4 = mergeRanges(v4)
  const m6 = mergeBigRanges(v6)

  let portStarts: number[] | undefined
  let portEnds: number[] | undefined
  if (r.port !== undefined) {
    const m = mergeRanges(list(where, 'port', r.port).map((entry) => portRange(where, entry)))
    portStarts = m.starts
    portEnds = m.ends
  }

  return {
    upstream: r.upstream,
    key: domains ? KEY_DOMAIN : suffixes ? KEY_SUFFIX : nets.length > 0 ? KEY_CIDR : KEY_NONE,
    protocol,
    domains,
    suffixes,
    keywords,
    cidr: nets.length > 0,
    v4Starts: m4.starts,
    v4Ends: m4.ends,
    v6Starts: m6.starts,
    v6Ends: m6.ends,
    nets,
    portStarts,
    portEnds,
  }
}

/** Whether `name` or one of its parent names (on label boundaries) is in `set`. */
function suffixIn(set: ReadonlySet<string>, name: string): boolean {
  let i = 0
  for (;;) {
    if (set.has(i === 0 ? name : name.slice(i))) return true
    const dot = name.indexOf('.', i)
    if (dot < 0) return false
    i = dot + 1
  }
}

/** Whether every condition of `rule` holds for `ctx`, except `skip` (already known to hold). */
function holds(rule: Compiled, ctx: Context, skip: number): boolean {
  if (rule.protocol !== undefined && rule.protocol !== ctx.protocol) return false
  if (rule.portStarts !== undefined && !inRanges(rule.portStarts, rule.portEnds!, ctx.port)) return false
  const name = ctx.domain
  if (rule.domains !== undefined && skip !== KEY_DOMAIN && (name === undefined || !rule.domains.has(name))) {
    return false
  }
  if (rule.suffixes !== undefined && skip !== KEY_SUFFIX && (name === undefined || !suffixIn(rule.suffixes, name))) {
    return false
  }
  if (rule.keywords !== undefined) {
    if (name === undefined) return false
    let hit = false
    for (const k of rule.keywords) {
      if (name.includes(k)) {
        hit = true
        break
      }
    }
    if (!hit) return false
  }
  if (rule.cidr && skip !== KEY_CIDR) {
    if (ctx.v4 >= 0) return inRanges(rule.v4Starts, rule.v4Ends, ctx.v4)
    return ctx.v6 !== undefined && inRanges(rule.v6Starts, rule.v6Ends, ctx.v6)
  }
  return true
}

/** Appends rule `index` to the list under `key`, once. */
function addTo<K>(map: Map<K, number[]>, key: K, index: number): void {
  const l = map.get(key)
  if (l === undefined) map.set(key, [index])
  else if (l[l.length - 1] !== index) l.push(index)
}

/**
 * An ordered, compiled list of rules: {@link RuleSet.match} gives the upstream of a flow, the first rule that matches
 * winning. Immutable once built.
 *
 * @example
 * ```ts
 * const rules = new RuleSet(
 *   [
 *     { domainSuffix: ['corp.example'], upstream: 'direct' },
 *     { cidr: ['10.0.0.0/8', 'fc00::/7'], upstream: 'direct' },
 *     { protocol: 'udp', port: [443], upstream: 'reject' }, // no QUIC
 *     { upstream: 'proxy' },
 *   ],
 * )
 * rules.match({ protocol: 'tcp', address: '10.1.2.3', port: 22 }) // { upstream: 'direct', index: 1 }
 * ```
 */
export class RuleSet {
  /** Number of rules. */
  readonly size: number
  readonly #rules: Compiled[]
  readonly #default: string
  readonly #upstreams: Set<string>
  /** Exact name → indices (ascending) of the rules indexed by their `domain` condition. */
  readonly #exact = new Map<string, number[]>()
  /** Suffix → indices of the rules indexed by their `domainSuffix` condition. */
  readonly #suffix = new Map<string, number[]>()
  /**
   * One entry per prefix length among the IPv4 networks of CIDR-indexed rules, longest first: 2 ** (32 - len), and
   * the map of network number (address / that) → rule indices.
   */
  readonly #v4Divs: number[] = []
  readonly #v4Maps: Map<number, number[]>[] = []
  /** Same for IPv6: network bits (address >> (128 - len)) → rule indices. */
  readonly #v6Shifts: bigint[] = []
  readonly #v6Maps: Map<bigint, number[]>[] = []
  /** Indices of the rules not in any index, scanned in order. */
  readonly #scan: number[] = []

  /**
   * Validates and compiles `rules`.
   *
   * @param rules The rules, in order; the first one that matches a flow wins.
   * @param opts `default`: the upstream when no rule matches (default `'direct'`).
   * @throws {TunError} `ERR_TUN_INVALID_ARGUMENT` naming the rule's index (`rules[3]: bad CIDR '10.0.0.0/33'`) for an
   *   unknown key, a value of the wrong type, an empty list, a bad name, CIDR, port (0, over 65535, a reversed range)
   *   or protocol, or an empty upstream name; also for an empty default.
   */
  constructor(rules: Rule[], opts: RuleSetOptions = {}) {
    if (!Array.isArray(rules)) fail('rules', `must be an array, got ${show(rules)}`)
    const def = opts.default ?? 'direct'
    if (typeof def !== 'string' || def.trim() === '') fail('rules', `empty default upstream name ${show(def)}`)
    this.#default = def
    this.#rules = rules.map((rule: unknown, i) => compile(rule, `rules[${i}]`))
    this.size = this.#rules.length
    this.#upstreams = new Set([...this.#rules.map((r) => r.upstream), def])

    const v4 = new Map<number, Map<number, number[]>>()
    const v6 = new Map<number, Map<bigint, number[]>>()
    this.#rules.forEach((rule, i) => {
      if (rule.key === KEY_DOMAIN) for (const d of rule.domains!) addTo(this.#exact, d, i)
      else if (rule.key === KEY_SUFFIX) for (const s of rule.suffixes!) addTo(this.#suffix, s, i)
      else if (rule.key === KEY_CIDR) {
        for (const net of rule.nets) {
          if (net.v4) {
            let m = v4.get(net.len)
            if (m === undefined) v4.set(net.len, (m = new Map()))
            addTo(m, net.start / 2 ** (32 - net.len), i)
          } else {
            let m = v6.get(net.len)
            if (m === undefined) v6.set(net.len, (m = new Map()))
            addTo(m, net.start >> BigInt(128 - net.len), i)
          }
        }
      } else this.#scan.push(i)
    })
    // Longer prefixes first: the more specific networks tend to be the ones listed first.
    for (const len of [...v4.keys()].sort((a, b) => b - a)) {
      this.#v4Divs.push(2 ** (32 - len))
      this.#v4Maps.push(v4.get(len)!)
    }
    for (const len of [...v6.keys()].sort((a, b) => b - a)) {
      this.#v6Shifts.push(BigInt(128 - len))
      this.#v6Maps.push(v6.get(len)!)
    }
  }

  /**
   * The upstream of `flow`: the first rule whose conditions all hold, or the default.
   *
   * @returns `upstream` and the matching rule's `index` (-1 for the default).
   */
  match(flow: Flow): RuleMatch {
    const ctx = context(flow)
    const rules = this.#rules
    let best = rules.length
    const name = ctx.domain
    if (name !== undefined) {
      if (this.#exact.size > 0) {
        const l = this.#exact.get(name)
        if (l !== undefined) best = this.#first(l, ctx, KEY_DOMAIN, best)
      }
      if (this.#suffix.size > 0) {
        let i = 0
        for (;;) {
          const l = this.#suffix.get(i === 0 ? name : name.slice(i))
          if (l !== undefined) best = this.#first(l, ctx, KEY_SUFFIX, best)
          const dot = name.indexOf('.', i)
          if (dot < 0) break
          i = dot + 1
        }
      }
    }
    if (ctx.v4 >= 0) {
      const divs = this.#v4Divs
      for (let k = 0; k < divs.length; k++) {
        const l = this.#v4Maps[k]!.get(Math.floor(ctx.v4 / divs[k]!))
        if (l !== undefined) best = this.#first(l, ctx, KEY_CIDR, best)
      }
    } else if (ctx.v6 !== undefined) {
      const shifts = this.#v6Shifts
      for (let k = 0; k < shifts.length; k++) {
        const l = this.#v6Maps[k]!.get(ctx.v6 >> shifts[k]!)
        if (l !== undefined) best = this.#first(l, ctx, KEY_CIDR, best)
      }
    }
    const scan = this.#scan
    for (let k = 0; k < scan.length; k++) {
      const i = scan[k]!
      if (i >= best) break
      if (holds(rules[i]!, ctx, KEY_NONE)) {
        best = i
        break
      }
    }
    return best < rules.length
      ? { upstream: rules[best]!.upstream, index: best }
      : { upstream: this.#default, index: -1 }
  }

  /**
   * Every upstream name the rules refer to, and the default's, so that a caller can check that each exists before
   * traffic flows. A new `Set` on each call.
   */
  upstreams(): Set<string> {
    return new Set(this.#upstreams)
  }

  /** The lowest index in the ascending `list` below `best` whose rule holds (all but `skip`), else `best`. */
  #first(list: readonly number[], ctx: Context, skip: number, best: number): number {
    const rules = this.#rules
    for (let k = 0; k < list.length; k++) {
      const i = list[k]!
      if (i >= best) return best
      if (holds(rules[i]!, ctx, skip)) return i
    }
    return best
  }
}

/** A flow with its name normalized and its address parsed. */
function context(flow: Flow): Context {
  let name = flow.domain
  if (name !== undefined) {
    if (name.endsWith('.')) name = name.slice(0, -1)
    name = name === '' ? undefined : name.toLowerCase()
  }
  let address = flow.address
  let v4 = -1
  let v6: bigint | undefined
  const zone = address.indexOf('%')
  if (zone >= 0) address = address.slice(0, zone)
  const p = parseAddress(address)
  if (p?.family === 4) v4 = Number(p.value)
  else if (p) {
    const mapped = unmapIPv4(p.value)
    if (mapped !== undefined) v4 = Number(mapped)
    else v6 = p.value
  }
  return { protocol: flow.protocol, port: flow.port, domain: name, v4, v6 }
}

/** The {@link Rule} keys a line of the Clash-style format can set. */
type LineKey = 'domain' | 'domainSuffix' | 'domainKeyword' | 'cidr' | 'port' | 'protocol'
/** Clash rule types → the {@link Rule} key each sets (`MATCH` sets none). */
const LINE_TYPES: ReadonlyMap<string, LineKey> = new Map<string, LineKey>([
  ['DOMAIN', 'domain'],
  ['DOMAIN-SUFFIX', 'domainSuffix'],
  ['DOMAIN-KEYWORD', 'domainKeyword'],
  ['IP-CIDR', 'cidr'],
  ['IP-CIDR6', 'cidr'],
  ['DST-PORT', 'port'],
  ['NETWORK', 'protocol'],
])

/** Parses the Clash-style line format. */
function parseLines(text: string): Rule[] {
  const rules: Rule[] = []
  const lines = text.split(/\r?\n|\r/)
  for (let n = 0; n < lines.length; n++) {
    const where = `rules line ${n + 1}`
    let line = lines[n]!.trim()
    const comment = line.search(/(?:^|\s)#/)
    if (comment >= 0) line = line.slice(0, comment).trim()
    // A rule pasted from a Clash config's YAML list (`  - DOMAIN,example.com,proxy`).
    if (/^-\s/.test(line)) line = line.slice(1).trim()
    if (line === '') continue
    const tokens = line.split(',').map((t) => t.trim())
    const type = tokens[0]!.toUpperCase()
    let rule: Rule
    if (type === 'MATCH') {
      if (tokens.length !== 2) fail(where, `MATCH takes one field (the upstream): ${show(line)}`)
      rule = { upstream: tokens[1]! }
    } else {
      const key = LINE_TYPES.get(type)
      if (key === undefined) fail(where, `unknown rule type ${show(tokens[0])}`)
      if (key === 'cidr' && tokens.length === 4) {
        if (tokens[3]!.toLowerCase() !== 'no-resolve') fail(where, `unknown option ${show(tokens[3])}`)
      } else if (tokens.length !== 3) {
        fail(where, `${type} takes two fields (value, upstream): ${show(line)}`)
      }
      const value = tokens[1]!
      const upstream = tokens[2]!
      if (value === '') fail(where, `empty value in ${show(line)}`)
      if (key === 'port') {
        // mihomo's `80/443/8000-9000`: any of them.
        rule = { port: value.split('/').map((p) => (/^\s*[0-9]{1,5}\s*$/.test(p) ? Number(p) : p.trim())), upstream }
      } else if (key === 'protocol') {
        const p = value.toLowerCase()
        if (p !== 'tcp' && p !== 'udp') fail(where, `bad network ${show(value)} (tcp or udp)`)
        rule = { protocol: p, upstream }
      } else if (key === 'domain') {
        rule = { domain: [value], upstream }
      } else if (key === 'domainSuffix') {
        rule = { domainSuffix: [value], upstream }
      } else if (key === 'domainKeyword') {
        rule = { domainKeyword: [value], upstream }
      } else {
        rule = { cidr: [value], upstream }
      }
    }
    compile(rule, where)
    rules.push(rule)
  }
  return rules
}

/** Parses the JSON format: an array of rules, or an object with one under `rules`. */
function parseJson(text: string): Rule[] {
  let data: unknown
  try {
    data = JSON.parse(text)
  } catch (e) {
    // V8 quotes part of the text, new lines included: keep the message on one line.
    const message = (e instanceof Error ? e.message : String(e)).replace(/\s+/g, ' ')
    const line = /\(line (\d+) column \d+\)/.exec(message)?.[1]
    const at = /at position (\d+)/.exec(message)?.[1]
    const n = line !== undefined ? Number(line) : at !== undefined ? text.slice(0, Number(at)).split('\n').length : 0
    fail(n > 0 ? `rules line ${n}` : 'rules', `invalid JSON (${message})`)
  }
  if (typeof data === 'object' && data !== null && !Array.isArray(data)) {
    data = (data as { rules?: unknown }).rules
    if (data === undefined) fail('rules', 'a JSON object must hold the rules as an array under "rules"')
  }
  if (!Array.isArray(data)) fail('rules', `JSON rules must be an array, got ${show(data)}`)
  return (data as unknown[]).map((rule, i) => {
    compile(rule, `rules[${i}]`)
    return rule as Rule
  })
}

/**
 * Parses a rules file, in either of two formats, told apart by the first character that is not white space (`[` or
 * `{` means JSON):
 *
 * - JSON: an array of {@link Rule} objects, or an object with that array under `"rules"` (its other keys ignored).
 * - The Clash-style line format, one rule per line, `# comments` and blank lines ignored, a YAML list's `- ` tolerated,
 *   type names case-insensitive, spaces around the commas allowed:
 *   ```text
 *   DOMAIN,example.com,proxy
 *   DOMAIN-SUFFIX,example.com,proxy
 *   DOMAIN-KEYWORD,google,proxy
 *   IP-CIDR,10.0.0.0/8,direct,no-resolve   # no-resolve accepted (flows carry their address) and ignored
 *   IP-CIDR6,fc00::/7,direct
 *   DST-PORT,443,proxy                      # also 8000-9000, or several: 80/443/8000-9000
 *   NETWORK,udp,direct
 *   MATCH,proxy
 *   ```
 *   Each line is one rule with one condition (`MATCH`: none).
 *
 * @returns The rules, ready for {@link RuleSet}.
 * @throws {TunError} `ERR_TUN_INVALID_ARGUMENT`: in the line format naming the line and the bad token
 *   (`rules line 7: unknown rule type 'GEOIP'`); in JSON naming the line of a syntax error, or the index of a bad
 *   rule (`rules[3]: unknown key 'domian'`). The rules are checked as the {@link RuleSet} constructor checks them.
 */
export function parseRules(text: string): Rule[] {
  if (typeof text !== 'string') fail('rules', `text must be a string, got ${show(text)}`)
  const body = text.startsWith('\uFEFF') ? text.slice(1) : text
  const first = body.trimStart()[0]
  return first === '[' || first === '{' ? parseJson(body) : parseLines(body)
}
