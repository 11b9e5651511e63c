/**
 * Policy routing rules (`ip rule`): which routing table the kernel looks a packet up in, by its source,
 * destination, firewall mark or interfaces. Rules belong to the network namespace, not to a device, so these are
 * plain functions. Linux only.
 */
import { native, TunError } from './errors.js'
import { binding } from './native.js'

/**
 * A policy routing rule: packets that match every selector given (`from`, `to`, `fwmark`, `iif`, `oif`) are looked
 * up in `table`. Only rules that look up a table are modelled (not `goto`, `blackhole`, `prohibit`, `not`, `tos`,
 * ports or uid ranges).
 *
 * @example
 * ```ts
 * // Everything into table 100, except what this host sends from 192.0.2.10.
 * await addRoutingRule({ priority: 9000, from: '192.0.2.10', table: 254 })
 * await addRoutingRule({ family: 4, priority: 9001, table: 100 })
 * ```
 */
export interface RoutingRule {
  /**
   * `4` or `6`. May be left out when `from` or `to` gives it (both must then be of one family); required otherwise.
   * {@link routingRules} always sets it.
   */
  family?: 4 | 6
  /**
   * Preference, 0..4294967295: the kernel tries rules from the lowest, and several may share one. Its own rules are
   * `lookup local` at 0, `lookup main` at 32766 and (IPv4) `lookup default` at 32767.
   */
  priority: number
  /** The routing table to look up, 1..4294967295: 254 is `main`, 255 `local`, 253 `default`. */
  table: number
  /** Source prefix, `'10.0.0.0/8'`, `'fd00::/64'` or a bare address (a /32 or /128). Omitted (or a /0): any. */
  from?: string
  /** Destination prefix, in the same form as `from`. Omitted (or a /0): any. */
  to?: string
  /** Firewall mark (`SO_MARK`, an iptables/nftables mark): the rule matches packets whose `mark & fwmask` is this. */
  fwmark?: number
  /** The mask of `fwmark` (which then needs its bits inside it); default 0xffffffff. Needs `fwmark`. */
  fwmask?: number
  /** Input interface name; `'lo'` matches the packets this host's own sockets send. */
  iif?: string
  /** Output interface name: matches the packets of sockets bound to that device. */
  oif?: string
}

/** Options of {@link routingRules}. */
export interface RoutingRulesOptions {
  /** Only the rules of this family; both (IPv4 first) when omitted. */
  family?: 4 | 6
}

const KNOWN_RULE_KEYS = new Set(['family', 'priority', 'table', 'from', 'to', 'fwmark', 'fwmask', 'iif', 'oif'])
const KNOWN_LIST_OPTIONS = new Set(['family'])

function checkKeys(obj: unknown, known: Set<string>, what: string): void {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
    throw new TunError('ERR_TUN_INVALID_ARGUMENT', `${what} must be an object`)
  }
  for (const k of Object.keys(obj)) {
    if (!known.has(k)) throw new TunError('ERR_TUN_INVALID_ARGUMENT', `unknown ${what} key '${k}'`)
  }
}

/**
 * Adds a policy routing rule in this process's network namespace (needs `CAP_NET_ADMIN`). A rule equal in every
 * field rejects with `ERR_TUN_EXISTS` (with `errno`); table 0, a priority or table outside 32 bits or not an
 * integer, or an unknown key, with `ERR_TUN_INVALID_ARGUMENT`; a bad prefix or prefixes of two families with
 * `ERR_TUN_INVALID_ADDRESS`; a bad interface name with `ERR_TUN_INVALID_NAME`. Off Linux: `ERR_TUN_UNSUPPORTED`.
 */
export async function addRoutingRule(rule: RoutingRule): Promise<void> {
  checkKeys(rule, KNOWN_RULE_KEYS, 'routing rule')
  native(() => binding.addRule(rule))
}

/**
 * Removes a policy routing rule: the first, in the order the kernel tries them, with `rule`'s priority and table and
 * every selector `rule` gives; selectors left out match any value, as with `ip rule del`. None rejects with
 * `ERR_TUN_NOT_FOUND` (with `errno`); the argument errors are those of {@link addRoutingRule}.
 */
export async function removeRoutingRule(rule: RoutingRule): Promise<void> {
  checkKeys(rule, KNOWN_RULE_KEYS, 'routing rule')
  native(() => binding.removeRule(rule))
}

/**
 * The policy routing rules of this process's network namespace, read from the kernel, in the order it tries them
 * (IPv4 first when both families are asked for), its own rules included. Each has its `family`; rules that do
 * something else than look up a table, or select on what {@link RoutingRule} has no field for, are left out.
 */
export async function routingRules(options: RoutingRulesOptions = {}): Promise<RoutingRule[]> {
  checkKeys(options, KNOWN_LIST_OPTIONS, 'routingRules option')
  return native(() => binding.rules(options.family))
}
