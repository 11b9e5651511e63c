/**
 * `tunkit proxy`: a TUN whose every connection and UDP session goes through a SOCKS5 or HTTP proxy (or directly) by
 * rules, with fake-ip DNS. Creates and configures the device, routes, and (for `--route default`) two policy
 * routing rules; removes all of it on SIGINT/SIGTERM.
 */
import dgram from 'node:dgram'
import { readFileSync } from 'node:fs'
import net from 'node:net'
import { parseArgs } from 'node:util'
import { TunError } from '../errors.js'
import { Proxy, type Upstream } from '../proxy/proxy.js'
import { parseRules, type Rule } from '../proxy/rules.js'
import { addRoutingRule, removeRoutingRule, type RoutingRule } from '../routing.js'
import { Tun, type RouteSpec } from '../tun.js'

export const PROXY_HELP = `Usage: tunkit proxy (--socks5 | --http) [USER:PASS@]HOST:PORT [OPTIONS]

Creates a TUN device and sends every TCP connection and UDP session that enters it through the proxy (or
directly, or nowhere, by --rules), answering DNS from a fake-ip pool so that the proxy gets names, not
addresses. Runs until SIGINT, SIGTERM or SIGHUP, then removes the device, its routes and rules. Needs CAP_NET_ADMIN.

Upstream:
  --socks5 [USER:PASS@]HOST:PORT   a SOCKS5 proxy (CONNECT, and UDP ASSOCIATE for UDP)
  --http [USER:PASS@]HOST:PORT     an HTTP CONNECT proxy (TCP only; UDP then goes direct)
  --rules FILE                     rules, first match wins: Clash-style lines (DOMAIN-SUFFIX,example.com,direct)
                                   or JSON; upstreams: proxy, direct, reject, drop. Default: everything to proxy

Device:
  --name NAME                      interface name (default tunkit0)
  --address CIDR                   an address of the device, repeatable (default 172.19.0.1/30 and
                                   fdfe:dcba:9876::1/126)
  --route CIDR                     send CIDR into the device, repeatable; 'default' sends everything, by policy
                                   routing (table --table, the proxy's own sockets excepted: no loop)
  --table N                        the routing table of --route default (default 7890)
  --mtu N                          MTU (default 1500)
  --offload on|off                 TCP/UDP segmentation offload (default on)

DNS and UDP:
  --dns fake-ip|forward|off        fake-ip (default): A/AAAA answered from the pool; forward: queries go to
                                   --dns-server through the upstream; off: DNS is ordinary traffic
  --fake-ip CIDR                   the fake-ip pool, one per family, repeatable (default 198.18.0.0/15, fc00::/18)
  --dns-server IP[:PORT]           the resolver for forward mode and for other query types
  --dns-real NAME                  a name (and its subdomains) that gets real answers, repeatable
  --udp on|off                     take UDP (default on)
  --stack system                   how TCP is terminated (system: the kernel's TCP, by NAT)

Output:
  --verbose                        a log line per flow on stderr
  -h, --help                       this text

When the device is up and every route is in place, prints one JSON line {"ready":true,...} on stdout.
Exit status: 0 after a signal, 1 runtime failure, 2 bad usage, 3 proxy unreachable, 4 no privilege.
`

interface Parsed {
  upstream: Upstream
  label: string
}

class Usage extends Error {}

function parseProxy(kind: 'socks5' | 'http', spec: string): Parsed {
  const m = /^(?:([^:@]*):([^@]*)@)?(\[[^\]]+\]|[^:[\]]+):(\d+)$/.exec(spec)
  if (!m) throw new Usage(`--${kind} ${spec}: expected [USER:PASS@]HOST:PORT`)
  const host = m[3]!.replace(/^\[|\]$/g, '')
  const port = Number(m[4])
  if (port < 1 || port > 65535) throw new Usage(`--${kind} ${spec}: port must be 1..65535`)
  const auth = m[1] !== undefined ? { username: decodeURIComponent(m[1]), password: decodeURIComponent(m[2]!) } : {}
  return { upstream: { type: kind, host, port, ...auth }, label: `${kind} ${host}:${port}` }
}

function onOff(flag: string, v: string | undefined, dflt: boolean): boolean {
  if (v === undefined) return dflt
  if (v === 'on') return true
  if (v === 'off') return false
  throw new Usage(`--${flag} must be on or off, got ${v}`)
}

/**
 * The source address the kernel picks for `dst`, or undefined when it has no route there (or no such family). A
 * UDP socket connected to `dst` makes the kernel look the route up and choose its source; nothing is sent.
 */
function sourceFor(dst: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    let s: dgram.Socket
    try {
      s = dgram.createSocket(net.isIP(dst) === 6 ? 'udp6' : 'udp4')
    } catch {
      return resolve(undefined)
    }
    let settled = false
    const done = (address: string | undefined) => {
      if (settled) return
      settled = true
      s.close()
      resolve(address)
    }
    s.once('error', () => done(undefined))
    s.connect(9, dst, (err?: Error) => {
      if (err) return done(undefined)
      try {
        done(s.address().address)
      } catch {
        done(undefined)
      }
    })
  })
}

/** Whether a TCP connection to `host:port` opens within `ms`. */
function reachable(host: string, port: number, ms: number): Promise<string | null> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port })
    const t = setTimeout(() => done('timed out'), ms)
    const done = (err: string | null) => {
      clearTimeout(t)
      s.destroy()
      resolve(err)
    }
    s.once('connect', () => done(null))
    s.once('error', (e) => done(e.message))
  })
}

/** `tunkit proxy ARGS`; resolves with the exit status. */
export async function main(argv: string[]): Promise<number> {
  let values: ReturnType<typeof parse>['values']
  try {
    values = parse(argv).values
  } catch (e) {
    process.stderr.write(`tunkit proxy: ${(e as Error).message}\n\nSee 'tunkit proxy --help'.\n`)
    return 2
  }
  if (values.help) {
    process.stdout.write(PROXY_HELP)
    return 0
  }
  let cfg: ReturnType<typeof configure>
  try {
    cfg = configure(values)
  } catch (e) {
    if (!(e instanceof Usage) && !(e instanceof TunError)) throw e
    process.stderr.write(`tunkit proxy: ${e.message}\n\nSee 'tunkit proxy --help'.\n`)
    return 2
  }
  const up = cfg.upstreams['proxy']
  if (up && (up.type === 'socks5' || up.type === 'http')) {
    const err = await reachable(up.host, up.port, 3000)
    if (err !== null) {
      process.stderr.write(`tunkit proxy: cannot reach the ${cfg.label} proxy: ${err}\n`)
      return 3
    }
  }
  return run(cfg, values.verbose === true)
}

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      socks5: { type: 'string' },
      http: { type: 'string' },
      rules: { type: 'string' },
      name: { type: 'string' },
      address: { type: 'string', multiple: true },
      route: { type: 'string', multiple: true },
      table: { type: 'string' },
      mtu: { type: 'string' },
      offload: { type: 'string' },
      dns: { type: 'string' },
      'fake-ip': { type: 'string', multiple: true },
      'dns-server': { type: 'string' },
      'dns-real': { type: 'string', multiple: true },
      udp: { type: 'string' },
      stack: { type: 'string' },
      verbose: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  })
}

function configure(v: ReturnType<typeof parse>['values']) {
  if (v.socks5 !== undefined && v.http !== undefined) throw new Usage('give --socks5 or --http, not both')
  if (v.socks5 === undefined && v.http === undefined && v.rules === undefined) {
    throw new Usage('no upstream: give --socks5 HOST:PORT or --http HOST:PORT (or --rules with direct rules)')
  }
  const p =
    v.socks5 !== undefined
      ? parseProxy('socks5', v.socks5)
      : v.http !== undefined
        ? parseProxy('http', v.http)
        : undefined
  const upstreams: Record<string, Upstream> = p ? { proxy: p.upstream } : {}
  let rules: Rule[] = []
  if (v.rules !== undefined) {
    let text: string
    try {
      text = readFileSync(v.rules, 'utf8')
    } catch (e) {
      throw new Usage(`--rules ${v.rules}: ${(e as Error).message}`)
    }
    rules = parseRules(text)
  }
  const stack = v.stack ?? 'system'
  if (stack !== 'system') throw new Usage(`--stack ${stack}: only 'system' is available`)
  const dns = v.dns ?? 'fake-ip'
  if (dns !== 'fake-ip' && dns !== 'forward' && dns !== 'off') throw new Usage(`--dns must be fake-ip, forward or off`)
  if (dns === 'forward' && v['dns-server'] === undefined) throw new Usage('--dns forward needs --dns-server')
  const mtu = v.mtu === undefined ? 1500 : Number(v.mtu)
  if (!Number.isInteger(mtu)) throw new Usage(`--mtu ${v.mtu}: not a number`)
  const table = v.table === undefined ? 7890 : Number(v.table)
  if (!Number.isInteger(table) || table < 1 || table > 0xfffffffe || table === 254 || table === 255) {
    throw new Usage(`--table ${v.table}: a table number other than main (254) and local (255)`)
  }
  const fake: { v4?: string; v6?: string } = {}
  for (const c of v['fake-ip'] ?? []) {
    const fam = net.isIP(c.split('/')[0] ?? '')
    if (fam === 0) throw new Usage(`--fake-ip ${c}: not a CIDR`)
    if (fam === 4) fake.v4 = c
    else fake.v6 = c
  }
  const routes = v.route ?? []
  return {
    label: p?.label ?? 'direct',
    upstreams,
    rules,
    name: v.name ?? 'tunkit0',
    addresses: v.address ?? ['172.19.0.1/30', 'fdfe:dcba:9876::1/126'],
    everything: routes.includes('default'),
    routes: routes.filter((r) => r !== 'default'),
    table,
    mtu,
    offload: onOff('offload', v.offload, true),
    udp: onOff('udp', v.udp, true),
    dns: dns as 'fake-ip' | 'forward' | 'off',
    fake: { v4: fake.v4 ?? '198.18.0.0/15', v6: fake.v6 ?? 'fc00::/18' },
    dnsServer: v['dns-server'],
    dnsReal: v['dns-real'] ?? [],
  }
}

async function run(cfg: ReturnType<typeof configure>, verbose: boolean): Promise<number> {
  const routes: RouteSpec[] = cfg.routes.map((to) => ({ to }))
  if (cfg.dns === 'fake-ip') routes.push({ to: cfg.fake.v4 }, { to: cfg.fake.v6 })
  const v6 = cfg.addresses.some((a) => a.includes(':'))
  if (cfg.everything) {
    routes.push({ to: '0.0.0.0/0', table: cfg.table })
    if (v6) routes.push({ to: '::/0', table: cfg.table })
  }
  // The proxy's own sockets leave from the address the kernel uses now (before any route of ours), and a rule
  // keeps that address out of the device's table.
  const up = cfg.upstreams['proxy']
  const upHost = up && (up.type === 'socks5' || up.type === 'http') && net.isIP(up.host) ? up.host : undefined
  const bind = cfg.everything
    ? {
        v4: await sourceFor(upHost && net.isIP(upHost) === 4 ? upHost : '192.0.2.1'),
        v6: await sourceFor(upHost && net.isIP(upHost) === 6 ? upHost : '2001:db8::1'),
      }
    : undefined
  let tun: Tun
  try {
    tun = await Tun.create({ name: cfg.name, addresses: cfg.addresses, routes, mtu: cfg.mtu, offload: cfg.offload })
  } catch (e) {
    const err = e as TunError
    process.stderr.write(`tunkit proxy: ${err.message}\n`)
    return err.code === 'ERR_TUN_PERMISSION' ? 4 : err.code === 'ERR_TUN_INVALID_ADDRESS' ? 2 : 1
  }
  const added: RoutingRule[] = []
  const cleanup = async () => {
    for (const r of added.reverse()) {
      try {
        await removeRoutingRule(r)
      } catch {
        /* gone already */
      }
    }
    added.length = 0
  }
  let proxy: Proxy
  try {
    if (cfg.everything) {
      for (const [family, addr] of [
        [4, bind?.v4],
        [6, v6 ? bind?.v6 : undefined],
      ] as const) {
        if (family === 6 && !v6) continue
        // The proxy's own address looks up main (254); everything else the device's table.
        const rules: RoutingRule[] = addr ? [{ family, priority: 9000, from: addr, table: 254 }] : []
        rules.push({ family, priority: 9001, table: cfg.table })
        for (const r of rules) {
          await addRoutingRule(r)
          added.push(r)
        }
      }
    }
    proxy = await Proxy.create(tun, {
      upstreams: cfg.upstreams,
      rules: cfg.rules,
      udp: cfg.udp,
      dns: {
        mode: cfg.dns,
        fakeIp: cfg.fake,
        ...(cfg.dnsServer ? { resolver: cfg.dnsServer } : {}),
        realNames: cfg.dnsReal,
      },
      ...(bind ? { bind: { ...(bind.v4 ? { v4: bind.v4 } : {}), ...(bind.v6 ? { v6: bind.v6 } : {}) } } : {}),
    })
  } catch (e) {
    await cleanup()
    await tun.close()
    process.stderr.write(`tunkit proxy: ${(e as Error).message}\n`)
    return e instanceof TunError && e.code === 'ERR_TUN_INVALID_ARGUMENT' ? 2 : 1
  }
  const addresses = (await tun.addresses()).map((a) => a.cidr)
  process.stdout.write(
    JSON.stringify({ ready: true, name: tun.name, index: tun.index, addresses, upstream: cfg.label, dns: cfg.dns }) +
      '\n',
  )
  const tty = process.stdout.isTTY === true
  let last = { up: 0, down: 0, at: Date.now() }
  const status = tty
    ? setInterval(() => {
        const s = proxy.stats()
        const now = Date.now()
        const dt = (now - last.at) / 1000 || 1
        const rate = (b: number) => `${((b * 8) / dt / 1e6).toFixed(1)} Mbit/s`
        process.stdout.write(
          `\r\x1b[K${s.tcpActive} connections, ${s.udpSessions} UDP sessions, ↑ ${rate(s.bytesUp - last.up)} ↓ ${rate(s.bytesDown - last.down)}, ${s.dnsQueries} DNS queries`,
        )
        last = { up: s.bytesUp, down: s.bytesDown, at: now }
      }, 1000)
    : undefined
  const logging = verbose
    ? (async () => {
        for await (const f of proxy.flows()) {
          if (f.type !== 'end') continue
          const dst = `${f.domain ?? f.destination.address}:${f.destination.port}`
          process.stderr.write(
            `${f.protocol} ${f.source.address}:${f.source.port} -> ${dst} via ${f.upstream} (rule ${f.rule}): ` +
              `${f.sent} B up, ${f.received} B down, ${f.durationMs} ms${f.reason ? `, ${f.reason}` : ''}\n`,
          )
        }
      })()
    : undefined
  await untilStopped()
  if (status) {
    clearInterval(status)
    process.stdout.write('\n')
  }
  await proxy.close()
  await logging
  await cleanup()
  await tun.close()
  return 0
}

/**
 * Resolves at SIGINT, SIGTERM or SIGHUP (its terminal closed), or, when started through `npx`/`npm exec`, once the
 * npm process that started it is gone: npm hands a SIGTERM to the `sh -c` it runs the command in, and that shell dies
 * without passing it on, which would leave the proxy running with its device and routes after `kill <npx pid>`.
 */
const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const

function untilStopped(): Promise<void> {
  return new Promise<void>((resolve) => {
    let watch: NodeJS.Timeout | undefined
    const stop = () => {
      clearInterval(watch)
      for (const sig of STOP_SIGNALS) process.off(sig, stop)
      resolve()
    }
    for (const sig of STOP_SIGNALS) process.once(sig, stop)
    if (process.env['npm_command'] === 'exec') {
      const parent = process.ppid
      watch = setInterval(() => {
        if (process.ppid !== parent) stop()
      }, 250)
    }
  })
}
