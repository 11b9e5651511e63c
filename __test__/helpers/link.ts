/**
 * The kernel's view of a link as `ip` (iproute2) reports it, for tests that check what tunkit says against an
 * independent tool. Every call runs `ip -j` (JSON output) in the caller's network namespace, or in another one
 * through `nsenter --net=<path>`.
 */
import { run, type RunResult } from './net.ts'

/** `ip -d -j link show` of one link, the fields the tests read. */
export interface IpLink {
  ifindex: number
  ifname: string
  flags: string[]
  mtu: number
  txqlen: number
  operstate: string
  address?: string
  link_type: string
  linkinfo?: {
    info_kind: string
    info_data?: {
      type: 'tun' | 'tap'
      multi_queue: boolean
      numqueues: number
      persist: boolean
      /** A user name or a uid, as iproute2 prints it. */
      user?: string
      group?: string
    }
  }
}

/** One address of `ip -j addr show`. */
export interface IpAddr {
  family: 'inet' | 'inet6'
  local: string
  prefixlen: number
  /** The peer of a point-to-point address. */
  address?: string
  scope: string
}

/** One route of `ip -j route show table all`. */
export interface IpRoute {
  dst: string
  gateway?: string
  metric?: number
  table?: string
  protocol?: string
  type?: string
}

/** Runs `ip args…`, in the namespace at `netns` when given (through nsenter). */
export function ip(args: string[], netns?: string): Promise<RunResult> {
  return netns ? run('nsenter', [`--net=${netns}`, 'ip', ...args]) : run('ip', args)
}

/** Runs `ip args…` and throws with its stderr unless it exits 0. */
export async function ipOk(args: string[], netns?: string): Promise<string> {
  const r = await ip(args, netns)
  if (r.code !== 0) throw new Error(`ip ${args.join(' ')} failed (${r.code}): ${r.stderr.trim()}`)
  return r.stdout
}

async function ipJson<T>(args: string[], netns?: string): Promise<T | null> {
  const r = await ip(['-j', ...args], netns)
  if (r.code !== 0) {
    if (/does not exist|Cannot find device/.test(r.stderr)) return null
    throw new Error(`ip -j ${args.join(' ')} failed (${r.code}): ${r.stderr.trim()}`)
  }
  return JSON.parse(r.stdout || '[]') as T
}

/** The link named `name`, with tun details (`ip -d`), or `null` when there is none. */
export async function ipLink(name: string, netns?: string): Promise<IpLink | null> {
  const links = await ipJson<IpLink[]>(['-d', 'link', 'show', 'dev', name], netns)
  return links?.[0] ?? null
}

/** The addresses on `name` (IPv4 and IPv6, including the kernel's link-local one). */
export async function ipAddrs(name: string, netns?: string): Promise<IpAddr[]> {
  const links = await ipJson<{ addr_info: IpAddr[] }[]>(['addr', 'show', 'dev', name], netns)
  return links?.[0]?.addr_info ?? []
}

/** `"10.7.0.1/24"`, or `"10.7.0.1/32 peer 10.7.0.2"` for a point-to-point address, as tunkit would name it. */
export function addrLabel(a: IpAddr): string {
  return a.address && a.address !== a.local
    ? `${a.local}/${a.prefixlen} peer ${a.address}`
    : `${a.local}/${a.prefixlen}`
}

/** The unicast routes through `name` in every table, IPv4 and IPv6, without the kernel's local/broadcast ones. */
export async function ipRoutes(name: string, netns?: string): Promise<IpRoute[]> {
  const out: IpRoute[] = []
  for (const family of ['-4', '-6']) {
    const rs = await ipJson<IpRoute[]>([family, 'route', 'show', 'table', 'all', 'dev', name], netns)
    for (const r of rs ?? []) if (r.type === undefined || r.type === 'unicast') out.push(r)
  }
  return out
}

/** `"10.33.0.0/16"` from iproute2's `dst`, which leaves out the prefix length of a host route. */
export function routeDst(r: IpRoute): string {
  if (r.dst === 'default') return 'default'
  return r.dst.includes('/') ? r.dst : `${r.dst}/${r.dst.includes(':') ? 128 : 32}`
}

/** Whether a link named `name` exists (in `netns` when given). */
export async function linkExists(name: string, netns?: string): Promise<boolean> {
  return (await ipLink(name, netns)) !== null
}

/** Resolves once `name` is gone; rejects after `ms`. */
export async function waitGone(name: string, ms: number, netns?: string): Promise<number> {
  const start = Date.now()
  while (await linkExists(name, netns)) {
    if (Date.now() - start > ms) throw new Error(`${name} still exists after ${ms} ms`)
    await new Promise((r) => setTimeout(r, 20))
  }
  return Date.now() - start
}
