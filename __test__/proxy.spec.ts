// `tunkit proxy` end to end, started as a user starts it (`node dist/src/cli/main.js proxy ...`, the package's bin),
// in three network namespaces the test makes inside the runner's private one:
//   client C (10.80.0.1, fd80::1): the command, its TUN and the default route into it; curl, dig, UDP clients
//   proxy  P (10.80.0.2 | 10.81.0.1): dante (SOCKS5, CONNECT and UDP ASSOCIATE) or a small HTTP CONNECT proxy
//   remote R (10.81.0.2, fd81::2): HTTP and UDP echo servers
// P forwards between C and R (for the `direct` rule); nothing has a route out of the three.
import { spawn, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { ExecutionContext } from 'ava'
import { danteConfig, startDanted, type Danted } from './helpers/dante.ts'
import { deviceTest } from './helpers/device.ts'
import { run } from './helpers/net.ts'
import { holdNetns, nsArgv, type HeldNetns } from './helpers/ns.ts'
import { npxTunkit, packAndInstall } from './helpers/pack.ts'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const CLI = join(ROOT, 'dist', 'src', 'cli', 'main.js')
const BIG = 40_000_000
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/** The remote servers: HTTP on 8080 and 8081 (dual stack), UDP echo on 9000; prints READY <sha256 of /big>. */
const REMOTE = `
import http from 'node:http'
import dgram from 'node:dgram'
import { createHash } from 'node:crypto'
const body = Buffer.alloc(${BIG})
let x = 1
for (let i = 0; i < body.length; i++) { x = (Math.imul(x, 1103515245) + 12345) >>> 0; body[i] = x >>> 24 }
const handler = (req, res) => {
  if (req.url === '/big') return res.end(body)
  if (req.url === '/huge') {
    // 25 x /big, streamed with backpressure: more than every buffer on the way holds.
    res.setHeader('content-length', String(25 * body.length))
    let left = 25
    const more = () => { while (left > 0) { left--; if (!res.write(body)) return res.once('drain', more) } res.end() }
    return more()
  }
  res.end('hello ' + req.headers.host + ' from ' + req.socket.remoteAddress.replace(/^::ffff:/, '') + '\\n')
}
for (const port of [8080, 8081]) http.createServer(handler).listen(port, '::')
const peers = new Set()
for (const [type, addr] of [['udp4', '10.81.0.2'], ['udp6', 'fd81::2']]) {
  const s = dgram.createSocket(type)
  s.on('message', (m, r) => {
    if (!peers.has(r.address)) { peers.add(r.address); console.log('UDP-PEER ' + r.address) }
    s.send(m, r.port, r.address)
  })
  s.bind(9000, addr)
}
setTimeout(() => console.log('READY ' + createHash('sha256').update(body).digest('hex')), 300)
setInterval(() => {}, 1000)
`

/** An HTTP CONNECT proxy on 10.80.0.2:3128 that prints `CONNECT <target>` for each request. */
const CONNECT_PROXY = `
import http from 'node:http'
import net from 'node:net'
const srv = http.createServer((req, res) => { res.statusCode = 405; res.end() })
srv.on('connect', (req, client, head) => {
  console.log('CONNECT ' + req.url)
  const i = req.url.lastIndexOf(':')
  const up = net.connect(Number(req.url.slice(i + 1)), req.url.slice(0, i).replace(/^\\[|\\]$/g, ''))
  up.on('error', () => client.destroy())
  client.on('error', () => up.destroy())
  up.once('connect', () => {
    client.write('HTTP/1.1 200 Connection established\\r\\n\\r\\n')
    if (head.length) up.write(head)
    up.pipe(client)
    client.pipe(up)
  })
})
srv.listen(3128, '10.80.0.2', () => console.log('READY'))
`

/**
 * A tap in front of dante (10.80.0.2:1081 -> :1080) that prints the first client chunks of every connection as
 * `C2S <hex>`, so the test sees what the SOCKS server was asked for (dante logs the address it resolved).
 */
const SOCKS_TAP = `
import net from 'node:net'
net.createServer((c) => {
  const up = net.connect(1080, '10.80.0.2')
  let n = 0
  c.on('data', (d) => { if (n++ < 3) console.log('C2S ' + d.toString('hex')); up.write(d) })
  up.pipe(c)
  c.on('end', () => up.end())
  c.on('error', () => up.destroy()); up.on('error', () => c.destroy())
}).listen(1081, '10.80.0.2', () => console.log('READY'))
`

/** A UDP client: sends N datagrams (sizes 1..1400) to HOST:PORT, prints how many echoes came back byte-exact. */
const UDP_CLIENT = `
import dgram from 'node:dgram'
import { randomBytes } from 'node:crypto'
const [host, port, n] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])]
const s = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4')
const sent = new Map()
let ok = 0
s.on('message', (m) => { const k = m.subarray(0, 4).toString('hex'); if (sent.get(k)?.equals(m)) { ok++; sent.delete(k) } })
s.bind(0, async () => {
  for (let i = 0; i < n; i++) {
    const p = randomBytes(4 + ((i * 7919) % 1397))
    sent.set(p.subarray(0, 4).toString('hex'), p)
    s.send(p, port, host)
    await new Promise((r) => setTimeout(r, 5))
  }
  const end = Date.now() + 5000
  while (ok < n && Date.now() < end) await new Promise((r) => setTimeout(r, 20))
  console.log(JSON.stringify({ ok, n }))
  s.close()
})
`

/** A connected UDP socket to HOST:PORT sending a datagram every 100 ms for up to 3 s: prints the first error code. */
const UDP_REFUSED = `
import dgram from 'node:dgram'
const [host, port] = [process.argv[2], Number(process.argv[3])]
const s = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4')
const done = (r) => { console.log(JSON.stringify(r)); s.close(); clearInterval(iv); clearTimeout(to) }
s.on('error', (e) => done({ code: e.code }))
s.on('message', () => done({ code: 'ANSWERED' }))
let iv, to
s.connect(port, host, () => {
  iv = setInterval(() => s.send('are you there?'), 100)
  to = setTimeout(() => done({ code: 'TIMEOUT' }), 3000)
})
`

/** A child with its stdout lines, bounded waits for a line, and a stop by PID. */
class Child {
  readonly proc: ChildProcess
  out = ''
  err = ''
  code: number | null | undefined
  signal: NodeJS.Signals | null = null
  readonly exited: Promise<void>
  constructor(argv: string[], cwd?: string) {
    this.proc = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], ...(cwd ? { cwd } : {}) })
    this.proc.stdout!.setEncoding('utf8').on('data', (d: string) => (this.out += d))
    this.proc.stderr!.setEncoding('utf8').on('data', (d: string) => {
      if (this.err.length < 1 << 20) this.err += d
    })
    this.exited = new Promise((r) =>
      this.proc.once('exit', (c, sig) => {
        this.code = c
        this.signal = sig
        r()
      }),
    )
  }
  async line(re: RegExp, ms: number): Promise<RegExpMatchArray> {
    const end = Date.now() + ms
    for (;;) {
      const m = this.out
        .split('\n')
        .map((l) => re.exec(l))
        .find((x) => x)
      if (m) return m
      if (this.code !== undefined) throw new Error(`exited (${this.code}) before ${re}: ${this.err.slice(-2000)}`)
      if (Date.now() > end) throw new Error(`no ${re} within ${ms} ms: ${this.err.slice(-2000)}`)
      await sleep(25)
    }
  }
  /** Stops it by PID (SIGKILL after 10 s); its exit code, or the signal that ended it. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | NodeJS.Signals | null | undefined> {
    if (this.code === undefined) {
      this.proc.kill(signal)
      const t = setTimeout(() => this.proc.kill('SIGKILL'), 10_000)
      await this.exited
      clearTimeout(t)
    }
    return this.code ?? this.signal
  }
}

interface Net {
  C: HeldNetns
  P: HeldNetns
  R: HeldNetns
  dir: string
  /** /etc/hosts for dante and the command: web.test, direct.test -> 10.81.0.2, web6.test -> fd81::2. */
  hosts: string
  /** /etc/resolv.conf for clients in C: a nameserver that exists nowhere (the proxy hijacks port 53). */
  resolv: string
  remote: Child
  sha: string
  close(): Promise<void>
}

async function sh(ns: HeldNetns, cmd: string) {
  const r = await ns.exec('sh', ['-c', cmd], { timeoutMs: 20_000 })
  if (r.code !== 0) throw new Error(`${cmd}: ${r.stderr}`)
  return r.stdout
}

async function topology(): Promise<Net> {
  const C = await holdNetns(600)
  const P = await holdNetns(600)
  const R = await holdNetns(600)
  const dir = mkdtempSync(join(tmpdir(), 'tunkit-proxy-'))
  const link = async (a: string, an: HeldNetns, b: string, bn: HeldNetns) => {
    const r = await run('ip', [
      'link',
      'add',
      a,
      'netns',
      String(an.pid),
      'type',
      'veth',
      'peer',
      'name',
      b,
      'netns',
      String(bn.pid),
    ])
    if (r.code !== 0) throw new Error(`veth ${a}/${b}: ${r.stderr}`)
  }
  await link('pxc0', C, 'pxp0', P)
  await link('pxp1', P, 'pxr0', R)
  await sh(
    C,
    [
      'ip addr add 10.80.0.1/24 dev pxc0',
      'ip addr add fd80::1/64 dev pxc0 nodad',
      'ip link set pxc0 up',
      // A real machine's default route: the proxy leaves through it (and so would anything not routed into the TUN;
      // P has no route further, so that goes nowhere).
      'ip route add default via 10.80.0.2',
      'ip -6 route add default via fd80::2',
    ].join(' && '),
  )
  await sh(
    P,
    [
      'ip addr add 10.80.0.2/24 dev pxp0',
      'ip addr add fd80::2/64 dev pxp0 nodad',
      'ip addr add 10.81.0.1/24 dev pxp1',
      'ip addr add fd81::1/64 dev pxp1 nodad',
      'ip link set pxp0 up',
      'ip link set pxp1 up',
      'echo 1 > /proc/sys/net/ipv4/ip_forward',
      'echo 1 > /proc/sys/net/ipv6/conf/all/forwarding',
    ].join(' && '),
  )
  await sh(
    R,
    [
      'ip addr add 10.81.0.2/24 dev pxr0',
      'ip addr add fd81::2/64 dev pxr0 nodad',
      'ip link set pxr0 up',
      'ip route add 10.80.0.0/24 via 10.81.0.1',
      'ip -6 route add fd80::/64 via fd81::1',
    ].join(' && '),
  )
  const hosts = join(dir, 'hosts')
  writeFileSync(hosts, '127.0.0.1 localhost\n10.81.0.2 web.test direct.test\nfd81::2 web6.test\n')
  const resolv = join(dir, 'resolv.conf')
  writeFileSync(resolv, 'nameserver 10.81.0.53\noptions timeout:2 attempts:2\n')
  const remoteJs = join(dir, 'remote.mjs')
  writeFileSync(remoteJs, REMOTE)
  const remote = new Child(['nsenter', `--net=${R.path}`, process.execPath, remoteJs])
  const sha = (await remote.line(/^READY (\w+)$/, 30_000))[1]!
  return {
    C,
    P,
    R,
    dir,
    hosts,
    resolv,
    remote,
    sha,
    async close() {
      await remote.stop('SIGKILL')
      for (const n of [C, P, R]) await n.close()
    },
  }
}

/** Runs `argv` in C with its own /etc/resolv.conf (so names go to the hijacked resolver). */
function inClient(n: Net, argv: string[], timeoutMs = 60_000) {
  const [cmd, ...args] = nsArgv(n.C.path, argv, [[n.resolv, '/etc/resolv.conf']])
  return run(cmd!, args, { timeoutMs })
}

/** curl in C: the body's SHA-256 and size, or the body itself (short ones). */
function curl(n: Net, url: string, extra: string[] = []) {
  return new Promise<{ code: number | null; sha: string; size: number; body: string; stderr: string }>((resolve) => {
    const [cmd, ...args] = nsArgv(
      n.C.path,
      ['curl', '-sS', '--max-time', '60', ...extra, '-o', '-', url],
      [[n.resolv, '/etc/resolv.conf']],
    )
    const child = spawn(cmd!, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    const h = createHash('sha256')
    let size = 0
    let head = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => {
      h.update(d)
      size += d.length
      if (head.length < 4096) head += d.toString('latin1')
    })
    child.stderr.on('data', (d) => (stderr += d))
    const t = setTimeout(() => child.kill('SIGKILL'), 90_000)
    child.on('close', (code) => {
      clearTimeout(t)
      resolve({ code, sha: h.digest('hex'), size, body: head, stderr })
    })
  })
}

/** Starts `tunkit proxy ARGS` in C, as the package's bin, with the test's /etc/hosts; waits for its ready line. */
/**
 * Starts `tunkit proxy` in C: from the repository's build, or with `installed` (a scratch project holding the packed
 * packages, helpers/pack.ts) exactly as a user runs it, `npx tunkit proxy ...` there.
 */
async function startProxy(n: Net, args: string[], opts: { installed?: string } = {}) {
  const argv = ['proxy', '--name', 'tkpx0', ...args]
  const cmd = new Child(
    nsArgv(n.C.path, opts.installed ? npxTunkit(argv) : [process.execPath, CLI, ...argv], [[n.hosts, '/etc/hosts']]),
    opts.installed,
  )
  const ready = JSON.parse((await cmd.line(/^(\{"ready":true.*\})$/, 30_000))[1]!) as {
    name: string
    addresses: string[]
  }
  return { cmd, ready }
}

async function dante(n: Net): Promise<Danted> {
  return startDanted({
    dir: n.dir,
    name: 'dante',
    host: '10.80.0.2',
    port: 1080,
    netns: n.P.path,
    hosts: n.hosts,
    probe: async () =>
      (await n.P.exec('bash', ['-c', 'exec 3<>/dev/tcp/10.80.0.2/1080'], { timeoutMs: 2000 })).code === 0,
    config: danteConfig({
      internal: ['10.80.0.2', 'fd80::2'],
      port: 1080,
      external: 'pxp1',
      log: 'connect disconnect error',
    }),
  })
}

/** After the command ended: no device, no rule of it left in C. */
async function nothingLeft(t: ExecutionContext, n: Net) {
  // Through npx the command sees its launcher go a moment after npx exits (see src/cli/proxy.ts): give it 10 s.
  let link = await n.C.exec('ip', ['link', 'show', 'tkpx0'])
  for (let i = 0; i < 100 && link.code === 0; i++) {
    await sleep(100)
    link = await n.C.exec('ip', ['link', 'show', 'tkpx0'])
  }
  t.not(link.code, 0, 'the device is still there')
  for (const fam of ['-4', '-6']) {
    const rules = await n.C.exec('ip', [fam, 'rule', 'list'])
    t.false(/^900[01]:/m.test(rules.stdout), `ip ${fam} rule still has tunkit's rules:\n${rules.stdout}`)
  }
}

deviceTest(
  'tunkit proxy --socks5 (dante) --route default: curl byte-exact over IPv4 and IPv6, fake-ip DNS gives dante the name, UDP through UDP ASSOCIATE, a dead proxy resets and a restarted one works, SIGTERM leaves nothing behind',
  async (t) => {
    t.timeout(280_000)
    const n = await topology()
    t.teardown(() => n.close())
    let d = await dante(n)
    t.teardown(() => d.stop())
    const tapJs = join(n.dir, 'tap.mjs')
    writeFileSync(tapJs, SOCKS_TAP)
    const tap = new Child(['nsenter', `--net=${n.P.path}`, process.execPath, tapJs])
    t.teardown(() => tap.stop('SIGKILL').then(() => undefined))
    await tap.line(/^READY$/, 20_000)
    // The command from the packed package, as a user runs it: `npx tunkit proxy ...`.
    const { app } = packAndInstall(n.dir)
    const { cmd, ready } = await startProxy(n, ['--socks5', '10.80.0.2:1081', '--route', 'default', '--verbose'], {
      installed: app,
    })
    t.teardown(() => cmd.stop('SIGKILL').then(() => undefined))
    t.is(ready.name, 'tkpx0')
    t.deepEqual(ready.addresses.filter((a) => !a.startsWith('fe80:')).sort(), [
      '172.19.0.1/30',
      'fdfe:dcba:9876::1/126',
    ])

    for (const url of ['http://10.81.0.2:8080/big', 'http://[fd81::2]:8080/big']) {
      const r = await curl(n, url)
      t.is(r.code, 0, `curl ${url}: ${r.stderr}`)
      t.is(r.size, BIG, url)
      t.is(r.sha, n.sha, `${url}: SHA-256 differs`)
    }
    // The remote saw dante's address, not the client's: the bytes went through the proxy.
    t.regex((await curl(n, 'http://10.81.0.2:8080/')).body, /from 10\.81\.0\.1/)

    const dig = async (name: string, type: string) => {
      const r = await inClient(n, ['dig', '@10.81.0.53', name, type, '+short', '+time=3', '+tries=1'])
      t.is(r.code, 0, `dig ${name} ${type}: ${r.stdout} ${r.stderr}`)
      return r.stdout.trim()
    }
    const a = await dig('web.test', 'A')
    t.regex(a, /^198\.1[89]\.\d+\.\d+$/, `dig web.test A gave ${a}`)
    t.is(await dig('web.test', 'A'), a, 'the same name got another fake address')
    const aaaa = await dig('web6.test', 'AAAA')
    t.regex(aaaa, /^fc00:/, `dig web6.test AAAA gave ${aaaa}`)
    t.is(await dig('web.test', 'MX'), '', 'an MX query without a resolver is answered empty')
    const tcpDig = await inClient(n, ['dig', '+tcp', '@10.81.0.53', 'web.test', 'A', '+short', '+time=3', '+tries=1'])
    t.is(tcpDig.stdout.trim(), a, `DNS over TCP: ${tcpDig.stdout} ${tcpDig.stderr}`)

    // By name: curl resolves through the hijacked resolver, connects to the fake address; dante gets the name.
    const byName = await curl(n, 'http://web.test:8080/')
    t.is(byName.code, 0, byName.stderr)
    t.regex(byName.body, /^hello web\.test:8080 from 10\.81\.0\.1/)
    const byName6 = await curl(n, 'http://web6.test:8080/', ['-6'])
    t.is(byName6.code, 0, byName6.stderr)
    t.regex(byName6.body, /^hello web6\.test:8080 from fd81::1/)
    // The CONNECT request carried the name (ATYP 3, length 8, "web.test", port 8080), never the fake address.
    const asked = `C2S 0501000308${Buffer.from('web.test').toString('hex')}1f90`
    t.true(tap.out.includes(asked), `no CONNECT web.test:8080 by name:\n${tap.out}`)
    const fakeHex = Buffer.from(a.split('.').map(Number)).toString('hex')
    t.false(tap.out.includes(`05010001${fakeHex}`), 'dante was asked for the fake address')
    t.regex(d.logText(), /10\.81\.0\.2\.8080/, 'dante logged no connection to the remote')

    for (const host of ['10.81.0.2', 'fd81::2']) {
      const udpJs = join(n.dir, 'udp.mjs')
      writeFileSync(udpJs, UDP_CLIENT)
      const u = await n.C.exec(process.execPath, [udpJs, host, '9000', '100'], { timeoutMs: 30_000 })
      const got = JSON.parse(u.stdout.trim() || '{}') as { ok?: number; n?: number }
      t.is(got.ok, 100, `UDP echo to ${host}: ${u.stdout} ${u.stderr}`)
    }
    await n.remote.line(/^UDP-PEER 10\.81\.0\.1$/, 1000)

    // iperf3 through the proxy, both directions, 1 and 4 streams.
    for (const args of [[], ['-R'], ['-P', '4'], ['-P', '4', '-R']]) {
      const server = new Child([
        'nsenter',
        `--net=${n.R.path}`,
        'iperf3',
        '-s',
        '-1',
        '--forceflush',
        '-B',
        '10.81.0.2',
        '-p',
        '5202',
      ])
      await server.line(/Server listening/, 10_000)
      const r = await n.C.exec('iperf3', ['-c', '10.81.0.2', '-p', '5202', '-t', '2', '-J', ...args], {
        timeoutMs: 30_000,
      })
      await server.stop('SIGKILL')
      t.is(r.code, 0, `iperf3 ${args.join(' ')}: ${r.stdout.slice(-500)} ${r.stderr}`)
      const bps = (JSON.parse(r.stdout) as { end: { sum_received: { bits_per_second: number } } }).end.sum_received
        .bits_per_second
      t.log(`iperf3 ${args.join(' ') || '(upload)'} through tunkit proxy and dante: ${(bps / 1e9).toFixed(2)} Gbit/s`)
      t.true(bps > 1e6, `iperf3 ${args.join(' ')}: ${bps} bit/s`)
    }

    // The proxy dies mid-transfer: the client's transfer fails; once it is back, new connections work.
    const slow = curl(n, 'http://10.81.0.2:8080/huge', ['--limit-rate', '8M'])
    await sleep(1500)
    await d.stop()
    const cut = await slow
    t.not(cut.code, 0, 'the transfer survived the proxy dying')
    t.true(cut.size < 25 * BIG, `${cut.size} bytes arrived`)
    d = await dante(n)
    const after = await curl(n, 'http://10.81.0.2:8080/')
    t.is(after.code, 0, `after the proxy restarted: ${after.stderr}`)
    t.regex(after.body, /^hello/)

    // SIGTERM to npx's PID, as a service manager would send it: npm dies of it (a shell shows 143), and the
    // command, whose launcher is gone, cleans up all the same.
    t.is(await cmd.stop('SIGTERM'), 'SIGTERM', `exit status; stderr: ${cmd.err.slice(-2000)}`)
    t.regex(cmd.err, /tcp .* -> 10\.81\.0\.2:8080 via proxy/, '--verbose logged no flow')
    await nothingLeft(t, n)
  },
)

deviceTest(
  'tunkit proxy --http with --rules: a domain rule goes direct, a reject rule refuses the connection, the rest through CONNECT by name',
  async (t) => {
    t.timeout(200_000)
    const n = await topology()
    t.teardown(() => n.close())
    const proxyJs = join(n.dir, 'connect.mjs')
    writeFileSync(proxyJs, CONNECT_PROXY)
    const hp = new Child(nsArgv(n.P.path, [process.execPath, proxyJs], [[n.hosts, '/etc/hosts']]))
    t.teardown(() => hp.stop('SIGKILL').then(() => undefined))
    await hp.line(/^READY$/, 20_000)
    const rules = join(n.dir, 'rules.txt')
    writeFileSync(rules, '# test rules\nDOMAIN-SUFFIX,direct.test,direct\nDST-PORT,8081,reject\nMATCH,proxy\n')
    const { cmd } = await startProxy(n, ['--http', '10.80.0.2:3128', '--rules', rules, '--route', 'default'])
    t.teardown(() => cmd.stop('SIGKILL').then(() => undefined))

    const viaProxy = await curl(n, 'http://web.test:8080/')
    t.is(viaProxy.code, 0, viaProxy.stderr)
    t.regex(viaProxy.body, /^hello web\.test:8080 from 10\.81\.0\.1/)
    await hp.line(/^CONNECT web\.test:8080$/, 2000)

    const direct = await curl(n, 'http://direct.test:8080/')
    t.is(direct.code, 0, direct.stderr)
    t.regex(direct.body, /^hello direct\.test:8080 from 10\.80\.0\.1/, 'the direct rule did not go direct')
    t.false(hp.out.includes('direct.test'), 'the direct flow went through the proxy')

    const big = await curl(n, 'http://10.81.0.2:8080/big')
    t.is(big.sha, n.sha, `through CONNECT: ${big.stderr}`)

    const refused = await curl(n, 'http://10.81.0.2:8081/', ['--connect-timeout', '5'])
    t.is(refused.code, 7, `a reject rule: curl exit ${refused.code} (7 = could not connect): ${refused.stderr}`)
    t.notRegex(refused.stderr, /route|timed out/i, 'refused with something else than a reset')
    // The same rule for UDP: an ICMP port unreachable, so a connected socket gets ECONNREFUSED.
    const udpJs = join(n.dir, 'udp-refused.mjs')
    writeFileSync(udpJs, UDP_REFUSED)
    for (const host of ['10.81.0.2', 'fd81::2']) {
      const u = await n.C.exec(process.execPath, [udpJs, host, '8081'], { timeoutMs: 10_000 })
      t.deepEqual(JSON.parse(u.stdout.trim() || '{}'), { code: 'ECONNREFUSED' }, `UDP to ${host}:8081: ${u.stderr}`)
    }

    t.is(await cmd.stop('SIGTERM'), 0, cmd.err.slice(-2000))
    await nothingLeft(t, n)
  },
)

deviceTest('tunkit proxy: bad flags, an unreachable proxy and --help give clear messages and exit codes', async (t) => {
  const cli = (args: string[]) => run(process.execPath, [CLI, ...args], { timeoutMs: 20_000 })
  const help = await cli(['proxy', '--help'])
  t.is(help.code, 0)
  t.regex(help.stdout, /--socks5 \[USER:PASS@\]HOST:PORT/)
  t.regex((await cli(['--help'])).stdout, /Commands:/)
  const bad = await cli(['proxy', '--socks5', 'nope'])
  t.is(bad.code, 2)
  t.regex(bad.stderr, /expected \[USER:PASS@\]HOST:PORT/)
  const unknown = await cli(['proxy', '--bogus'])
  t.is(unknown.code, 2)
  t.regex(unknown.stderr, /bogus/)
  const none = await cli(['proxy'])
  t.is(none.code, 2)
  t.regex(none.stderr, /no upstream/)
  const dead = await cli(['proxy', '--socks5', '127.0.0.1:9'])
  t.is(dead.code, 3)
  t.regex(dead.stderr, /cannot reach the socks5 127\.0\.0\.1:9 proxy/)
  t.is((await cli(['frobnicate'])).code, 2)
})

deviceTest(
  'tunkit proxy on a terminal: a live status line; the terminal closing (SIGHUP) removes what it added',
  async (t) => {
    // A namespace of its own: --route default sends everything there into the device.
    const ns = await holdNetns()
    t.teardown(() => ns.close())
    const upJs = "require('net').createServer((s) => s.destroy()).listen(3128, '127.0.0.1', () => console.log('READY'))"
    const up = new Child(['nsenter', `--net=${ns.path}`, process.execPath, '-e', upJs])
    t.teardown(() => up.stop('SIGKILL').then(() => undefined))
    await up.line(/^READY$/, 10_000)
    const argv = [
      process.execPath,
      CLI,
      'proxy',
      '--http',
      '127.0.0.1:3128',
      '--name',
      'tkpxtty0',
      '--route',
      'default',
    ]
    // script(1) gives the command a pseudo-terminal; the status line is rewritten in place every second.
    const cmd = new Child([
      'nsenter',
      `--net=${ns.path}`,
      'script',
      '-qfec',
      argv.map((a) => `'${a}'`).join(' '),
      '/dev/null',
    ])
    t.teardown(() => cmd.stop('SIGKILL').then(() => undefined))
    await cmd.line(/"ready":true/, 30_000)
    const status = /\r\x1b\[K0 connections, 0 UDP sessions, ↑ 0\.0 Mbit\/s ↓ 0\.0 Mbit\/s, 0 DNS queries/
    const end = Date.now() + 5000
    while (!status.test(cmd.out) && Date.now() < end) await sleep(50)
    t.regex(cmd.out, status)
    t.regex((await ns.exec('ip', ['rule', 'list'])).stdout, /^9001:/m, 'no rule while it runs')
    // The terminal hanging up: SIGHUP to the command (found among script's descendants) makes it clean up and exit.
    const cli = descendants(cmd.proc.pid!).find((pid) => readCmdline(pid).includes(CLI))
    t.truthy(cli, 'the command is not among the descendants of script(1)')
    process.kill(cli!, 'SIGHUP')
    let left = 'not checked'
    for (let i = 0; i < 100; i++) {
      const link = await ns.exec('ip', ['link', 'show', 'tkpxtty0'])
      const rules = (await ns.exec('ip', ['rule', 'list'])).stdout
      left = [link.code === 0 ? 'the device' : '', /^900[01]:/m.test(rules) ? `rules:\n${rules}` : ''].join(' ').trim()
      if (!left) break
      await sleep(100)
    }
    t.is(left, '', 'left behind after the terminal closed')
  },
)

/** The pids below `pid`, from /proc (children of each thread), depth first. */
function descendants(pid: number): number[] {
  const out: number[] = []
  let tasks: string[] = []
  try {
    tasks = readdirSync(`/proc/${pid}/task`)
  } catch {
    return out
  }
  for (const task of tasks) {
    let children = ''
    try {
      children = readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8')
    } catch {
      continue
    }
    for (const c of children.trim().split(/\s+/).filter(Boolean).map(Number)) out.push(c, ...descendants(c))
  }
  return out
}

function readCmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ')
  } catch {
    return ''
  }
}
