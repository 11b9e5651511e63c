/** Small helpers for device tests: run a command asynchronously, UDP sockets, waiting with a deadline. */
import { spawn } from 'node:child_process'
import dgram from 'node:dgram'

export interface RunResult {
  code: number | null
  stdout: string
  stderr: string
}

/** Runs a command without blocking the event loop (the test's own packet loop must keep running). */
export function run(
  cmd: string,
  args: string[],
  opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000)
    child.on('error', (e) => {
      clearTimeout(timer)
      reject(e)
    })
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })
}

/** A UDP socket bound to `address:port` (port 0 = any). */
export async function udpSocket(type: 'udp4' | 'udp6', address?: string, port = 0): Promise<dgram.Socket> {
  const s = dgram.createSocket(type)
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject)
    s.bind(port, address, () => {
      s.off('error', reject)
      resolve()
    })
  })
  return s
}

export function send(s: dgram.Socket, msg: Uint8Array, port: number, address: string): Promise<void> {
  return new Promise((resolve, reject) => s.send(msg, port, address, (e) => (e ? reject(e) : resolve())))
}

/** Resolves when `cond()` is true, or rejects after `ms`. */
export async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 5))
  }
}
