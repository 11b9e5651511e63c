/**
 * Child processes for the persistence, ownership and fromFd tests: a line protocol on stdout, running as an
 * unprivileged user, and the small C launcher (tunfd.c) that passes a TUN descriptor to its child.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** Absolute path of the package entry, for scripts given to `node -e` (which have no file to resolve from). */
export const INDEX = fileURLToPath(new URL('../../index.ts', import.meta.url))

/** The uid and gid of `nobody` on Debian, used as "an unprivileged user". */
export const NOBODY = 65534

/** `setpriv` arguments that run the rest of the command as `uid` with no capabilities at all. */
export function asUser(uid: number, gid = uid): string[] {
  return ['setpriv', `--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', '--inh-caps=-all', '--bounding-set=-all']
}

/**
 * Distributions ship /dev/net/tun as mode 0666: anyone may open it, and the device's owner/group decide who may
 * attach. Where it is 0600 (some containers), this returns a command prefix that gives the rest of the command
 * its own mount namespace with a 0666 node for the same device (major 10, minor 200) on a tmpfs over /dev/net;
 * the real node is not touched. Where it is already 0666, the prefix is empty.
 */
export function worldOpenTun(): string[] {
  if ((statSync('/dev/net/tun').mode & 0o006) === 0o006) return []
  return [
    'unshare',
    '--mount',
    'sh',
    '-c',
    'mount -t tmpfs -o mode=755 none /dev/net && mknod -m 666 /dev/net/tun c 10 200 && exec "$@"',
    'sh',
  ]
}

/** `node` arguments that run `script` (an ES module in TypeScript) through tsx. */
export function nodeScript(script: string): string[] {
  return [process.execPath, '--import', 'tsx', '--input-type=module', '-e', script]
}

/** An environment an unprivileged child can use (tsx writes its cache under the temp dir; HOME may be unreadable). */
export const childEnv: NodeJS.ProcessEnv = { ...process.env, HOME: '/tmp', TSX_TSCONFIG_PATH: '' }

/** A running child whose stdout is read line by line. */
export interface LineChild {
  proc: ChildProcess
  /** The next stdout line; rejects if the child exits first or after `ms`. */
  line(ms: number, what: string): Promise<string>
  /** Everything written to stderr so far. */
  stderr(): string
  /** Resolves with the exit code (or signal) once the child is gone. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  /** SIGKILLs the child unless it has exited; waits for it. */
  kill(): Promise<void>
}

/** Spawns `argv` with stdout read as lines; `extraFds` become the child's fds 3, 4, … */
export function spawnLines(argv: string[], opts: { env?: NodeJS.ProcessEnv; extraFds?: number[] } = {}): LineChild {
  const proc = spawn(argv[0]!, argv.slice(1), {
    stdio: ['ignore', 'pipe', 'pipe', ...(opts.extraFds ?? [])],
    env: opts.env ?? childEnv,
  })
  const lines: string[] = []
  let partial = ''
  let err = ''
  let wake: (() => void) | null = null
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
    partial += d
    const parts = partial.split('\n')
    partial = parts.pop()!
    lines.push(...parts)
    wake?.()
  })
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d))
  let gone = false
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once('close', (code, signal) => {
      gone = true
      wake?.()
      resolve({ code, signal })
    }),
  )
  return {
    proc,
    stderr: () => err,
    exited,
    async line(ms, what) {
      const deadline = Date.now() + ms
      while (lines.length === 0) {
        if (gone) throw new Error(`child exited before ${what}; stderr: ${err.trim()}`)
        const left = deadline - Date.now()
        if (left <= 0) throw new Error(`timed out after ${ms} ms waiting for ${what}; stderr: ${err.trim()}`)
        await new Promise<void>((r) => {
          const t = setTimeout(r, left)
          wake = () => {
            clearTimeout(t)
            r()
          }
        })
        wake = null
      }
      return lines.shift()!
    },
    async kill() {
      if (!gone) proc.kill('SIGKILL')
      await exited
    },
  }
}

let tunfdPath: string | undefined

/**
 * Builds tunfd.c (once per process) with the C compiler and returns the binary's path. Throws, saying what to
 * install, when there is no `cc`.
 */
export function buildTunFd(): string {
  if (tunfdPath && existsSync(tunfdPath)) return tunfdPath
  const src = fileURLToPath(new URL('./tunfd.c', import.meta.url))
  const out = join(mkdtempSync(join(tmpdir(), 'tunkit-tunfd-')), 'tunfd')
  try {
    execFileSync('cc', ['-O1', '-Wall', '-o', out, src], { stdio: 'pipe' })
  } catch (e) {
    throw new Error(`building ${src} needs a C compiler (node scripts/ensure-tools.mjs cc): ${(e as Error).message}`)
  }
  tunfdPath = out
  return out
}
