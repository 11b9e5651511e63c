// One process, two network namespaces, one TUN in each (the `netns` option), and JavaScript forwarding packets
// between them: `ping` run inside namespace "a" reaches 10.83.0.1, an address of namespace "b", and the replies
// come back the same way. This is the shape of a container network or VPN tool that plumbs several namespaces.
//
// The namespaces are held by `unshare --net sleep` child processes and named by `/proc/<pid>/ns/net` (a path to
// `/run/netns/NAME` made by `ip netns add` works the same way).
//
//   node --import tsx examples/netns-forward.ts      (makes a private network namespace; nothing leaves it)
import { spawn, type ChildProcess } from 'node:child_process'
import { readlinkSync } from 'node:fs'
import { Tun } from '../index.ts'
import { ensureNetns } from './netns.ts'

ensureNetns(import.meta.url)

/** A new network namespace held by a sleeping child; resolves once the child has entered it. */
async function holdNamespace(): Promise<{ path: string; child: ChildProcess }> {
  const child = spawn('unshare', ['--net', 'sleep', '60'], { stdio: 'ignore' })
  const path = `/proc/${child.pid}/ns/net`
  const ours = readlinkSync('/proc/self/ns/net')
  for (let i = 0; i < 500; i++) {
    try {
      if (readlinkSync(path) !== ours) return { path, child }
    } catch {
      // not started yet
    }
    await new Promise((r) => setTimeout(r, 10))
  }
  child.kill('SIGKILL')
  throw new Error('unshare --net did not start')
}

/** Copies every batch read from `from` into `to` until `from` closes. */
async function forward(from: Tun, to: Tun, label: string): Promise<void> {
  for await (const batch of from.batches()) {
    console.log(`  ${label}: ${batch.length} packet(s)`)
    await to.write(batch)
  }
}

const a = await holdNamespace()
const b = await holdNamespace()
try {
  await using ta = await Tun.create({
    name: 'tuna',
    netns: a.path,
    addresses: ['10.82.0.1/24'],
    routes: [{ to: '10.83.0.0/24' }],
  })
  await using tb = await Tun.create({
    name: 'tunb',
    netns: b.path,
    addresses: ['10.83.0.1/24'],
    routes: [{ to: '10.82.0.0/24' }],
  })
  console.log(`${ta.name} (10.82.0.1/24) in ${a.path}, ${tb.name} (10.83.0.1/24) in ${b.path}`)
  const forwarding = Promise.all([forward(ta, tb, 'a -> b'), forward(tb, ta, 'b -> a')])

  console.log(`\n$ nsenter --net=${a.path} ping -c 3 -i 0.2 10.83.0.1`)
  // Asynchronously: the forwarding loops run on this event loop while ping waits for its replies.
  const code = await new Promise<number>((resolve) => {
    const p = spawn('nsenter', [`--net=${a.path}`, 'ping', '-c', '3', '-i', '0.2', '-n', '10.83.0.1'], {
      stdio: 'inherit',
    })
    p.on('close', (c) => resolve(c ?? 1))
  })
  await ta.close()
  await tb.close()
  await forwarding
  process.exitCode = code
} finally {
  a.child.kill('SIGKILL')
  b.child.kill('SIGKILL')
}
