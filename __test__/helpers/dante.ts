/**
 * Dante (`dante-server`: Debian installs its sockd as `danted`), the real SOCKS5 server of the proxy tests: found or
 * installed, started with a config the test writes (optionally inside a network namespace and with a hosts file of
 * its own), waited for until it listens, and stopped by PID, its forked children included.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { nsArgv } from './ns.ts'

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/** A running sockd. */
export interface Danted {
  child: ChildProcess
  /** Its log file (`logoutput`). */
  log: string
  logText(): string
  stop(): Promise<void>
}

function sh(cmd: string, args: string[]) {
  return spawnSync(cmd, args, { encoding: 'utf8', timeout: 30_000 })
}

/** The sockd binary, or undefined. */
export function findDanted(): string | undefined {
  for (const name of ['danted', 'sockd']) {
    const r = sh('sh', ['-c', `command -v ${name}`])
    if (r.status === 0 && r.stdout.trim()) return r.stdout.trim()
  }
  return ['/usr/sbin/danted', '/usr/sbin/sockd', '/usr/local/sbin/sockd'].find((p) => existsSync(p))
}

/** The sockd binary, installed first when missing (`scripts/ensure-tools.mjs danted`); throws saying why not. */
export function ensureDanted(): string {
  const found = findDanted()
  if (found) return found
  const r = spawnSync('node', [join(root, 'scripts', 'ensure-tools.mjs'), 'danted'], {
    encoding: 'utf8',
    timeout: 300_000,
  })
  const again = findDanted()
  if (again) return again
  throw new Error(
    'sockd (Debian package dante-server, binary danted) is missing and `node scripts/ensure-tools.mjs danted` could ' +
      `not install it (run it as root outside the test namespace, or apt-get install dante-server):\n${r.stdout}\n${r.stderr}`,
  )
}

/** Children of `pid` (from /proc), recursively: sockd forks its negotiate/request/io processes. */
function descendants(pid: number): number[] {
  const out: number[] = []
  const walk = (p: number) => {
    let kids: number[] = []
    try {
      for (const task of sh('ls', [`/proc/${p}/task`])
        .stdout.split(/\s+/)
        .filter(Boolean)) {
        const text = readFileSync(`/proc/${p}/task/${task}/children`, 'utf8')
        kids = kids.concat(text.split(/\s+/).filter(Boolean).map(Number))
      }
    } catch {
      // gone
    }
    for (const k of kids) {
      out.push(k)
      walk(k)
    }
  }
  walk(pid)
  return out
}

const isSockd = (pid: number) => {
  try {
    return /sockd|danted/.test(readFileSync(`/proc/${pid}/cmdline`, 'latin1'))
  } catch {
    return false
  }
}

/** Whether a TCP connection to `host:port` opens, from this process's namespace. */
function accepts(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(port, host)
    c.once('connect', () => {
      c.destroy()
      resolve(true)
    })
    c.once('error', () => resolve(false))
  })
}

/**
 * Writes `config` (without `logoutput`, which is added) to `<dir>/<name>.conf` and starts sockd on it; resolves
 * once `probe()` (default: a TCP connect to `host:port`) succeeds, within 15 s. With `netns` it runs inside that
 * network namespace (then give a `probe` that looks from there), with `hosts` inside a private mount namespace
 * whose /etc/hosts is that file (so names resolve to the test's addresses).
 */
export async function startDanted(opts: {
  dir: string
  name: string
  config: string[]
  host: string
  port: number
  netns?: string
  hosts?: string
  probe?: () => Promise<boolean>
}): Promise<Danted> {
  const sockd = ensureDanted()
  const log = join(opts.dir, `${opts.name}.log`)
  const conf = join(opts.dir, `${opts.name}.conf`)
  writeFileSync(conf, [`logoutput: ${log}`, ...opts.config, ''].join('\n'))
  const pidfile = join(opts.dir, `${opts.name}.pid`)
  const argv = nsArgv(
    opts.netns,
    [sockd, '-f', conf, '-p', pidfile, '-N', '1'],
    opts.hosts ? [[opts.hosts, '/etc/hosts']] : [],
  )
  let stderr = ''
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] })
  child.stderr?.on('data', (d: Buffer) => {
    if (stderr.length < 16_384) stderr += d.toString()
  })
  let exited: string | undefined
  child.once('exit', (code, sig) => (exited = `exited with ${code ?? sig}`))
  child.once('error', (e) => (exited = `failed to start: ${e.message}`))
  const logText = () => (existsSync(log) ? readFileSync(log, 'utf8') : '')
  const probe = opts.probe ?? (() => accepts(opts.host, opts.port))
  const deadline = Date.now() + 15_000
  const stop = async () => {
    const pid = child.pid
    if (pid === undefined || child.exitCode !== null || child.signalCode !== null) return
    const kids = descendants(pid)
    const exit = new Promise<void>((r) => child.once('exit', () => r()))
    process.kill(pid, 'SIGTERM')
    const t = setTimeout(() => child.kill('SIGKILL'), 5000)
    await exit
    clearTimeout(t)
    await sleep(100)
    for (const k of kids) {
      if (!isSockd(k)) continue
      try {
        process.kill(k, 'SIGKILL')
      } catch {
        // already gone
      }
    }
  }
  for (;;) {
    if (exited) throw new Error(`sockd (${opts.name}) ${exited}:\n${stderr}\n${logText().slice(-4000)}`)
    if (await probe()) break
    if (Date.now() > deadline) {
      await stop()
      throw new Error(
        `sockd (${opts.name}) did not listen on ${opts.host}:${opts.port} within 15 s:\n${stderr}\n${logText().slice(-4000)}`,
      )
    }
    await sleep(50)
  }
  return { child, log, logText, stop }
}

/**
 * A sockd configuration: listening on each `internal` address at `port`, going out through `external` (an
 * interface), `socksmethod` none or username, CONNECT and UDP ASSOCIATE allowed from anywhere, and `log` (dante's
 * log keywords) for the requests.
 */
export function danteConfig(o: {
  internal: string[]
  port: number
  external: string
  method?: 'none' | 'username'
  log?: string
}): string[] {
  return [
    ...o.internal.map((a) => `internal: ${a} port = ${o.port}`),
    `external: ${o.external}`,
    'clientmethod: none',
    `socksmethod: ${o.method ?? 'none'}`,
    'user.privileged: root',
    'user.unprivileged: nobody',
    'timeout.negotiate: 30',
    'client pass {',
    '  from: 0/0 to: 0/0',
    '  log: error',
    '}',
    'socks pass {',
    '  from: 0/0 to: 0/0',
    '  command: connect udpassociate udpreply',
    `  log: ${o.log ?? 'error'}`,
    '}',
  ]
}
