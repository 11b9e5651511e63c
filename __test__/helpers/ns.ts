/**
 * Extra network namespaces for tests, nested inside the runner's private one.
 *
 * `ip netns add` is not used: it bind-mounts under /run/netns, and the runner's namespace is a network namespace
 * only (no mount namespace), so that mount would land in the host's mount table. Instead a child process
 * `unshare --net sleep` holds each namespace, which stays reachable as `/proc/<pid>/ns/net` and dies with it.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { readlinkSync } from 'node:fs'
import { run, type RunResult } from './net.ts'

/** A network namespace held by a sleeping child process. */
export interface HeldNetns {
  /** pid of the holder. */
  pid: number
  /** `/proc/<pid>/ns/net`: a path for tunkit's `netns` option and `nsenter --net=`. */
  path: string
  /** Runs a command inside the namespace (through nsenter). */
  exec(cmd: string, args: string[], opts?: { timeoutMs?: number }): Promise<RunResult>
  /** Kills the holder (by its pid) and waits for it; the namespace goes once nothing else refers to it. */
  close(): Promise<void>
}

function nsId(path: string): string | null {
  try {
    return readlinkSync(path)
  } catch {
    return null
  }
}

/**
 * Makes a new network namespace with `lo` up, held for at most `seconds` (a safety net; call `close()`).
 * `unshare` execs `sleep` in the same process, so the holder's pid is the child's; until unshare(2) has run,
 * `/proc/<pid>/ns/net` still names our own namespace, so this waits (bounded) until it differs.
 */
export async function holdNetns(seconds = 120): Promise<HeldNetns> {
  const child: ChildProcess = spawn('unshare', ['--net', 'sleep', String(seconds)], { stdio: 'ignore' })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const pid = child.pid
  if (pid === undefined) throw new Error('could not spawn unshare')
  const path = `/proc/${pid}/ns/net`
  const own = nsId('/proc/self/ns/net')
  const deadline = Date.now() + 5000
  for (;;) {
    const id = nsId(path)
    if (id !== null && id !== own) break
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL')
      throw new Error(`unshare --net did not make a namespace (exit ${child.exitCode})`)
    }
    await new Promise((r) => setTimeout(r, 5))
  }
  const exec = (cmd: string, args: string[], opts: { timeoutMs?: number } = {}) =>
    run('nsenter', [`--net=${path}`, cmd, ...args], opts)
  const lo = await exec('ip', ['link', 'set', 'lo', 'up'])
  if (lo.code !== 0) throw new Error(`lo up in ${path}: ${lo.stderr}`)
  return {
    pid,
    path,
    exec,
    async close() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
      await exited
    },
  }
}

/**
 * The argv that runs `argv` inside the network namespace `netns` (a path; undefined: this one) and, with `binds`,
 * inside a private mount namespace where each `[file, target]` is bind-mounted over `target` (a resolv.conf or a
 * hosts file of the test's own). Every step execs the next, so the spawned pid is the command's.
 */
export function nsArgv(netns: string | undefined, argv: string[], binds: [string, string][] = []): string[] {
  let out = argv
  if (binds.length > 0) {
    const mounts = binds.map(([file, target]) => `mount --bind ${file} ${target}`).join(' && ')
    out = ['unshare', '--mount', 'sh', '-c', `${mounts} && exec "$@"`, 'sh', ...out]
  }
  return netns === undefined ? out : ['nsenter', `--net=${netns}`, ...out]
}
