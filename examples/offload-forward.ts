// A forwarder with kernel offload: two network namespaces, A and B, each get a TUN device (created from here
// through the `netns` option), and this program moves packets between them with
//
//   for await (const batch of a.batches()) await b.write(batch)
//
// and back. With `offload: true` the kernel hands over TCP/UDP super-packets of up to 64 KiB, tunkit splits them
// into ordinary packets for this loop and coalesces them again on the way out, so one syscall carries dozens of
// packets each way. A TCP transfer from A to B (a `node` child in each namespace) shows the result.
//
//   node --import tsx examples/offload-forward.ts [--raw | --off] [megabytes]
//
// `--raw` passes super-packets through with their 10-byte virtio-net header instead (`offload: { raw: true }`);
// `--off` forwards without offload, to compare. It makes its own private namespace; nothing leaves it.
import { spawn } from 'node:child_process'
import { readlinkSync } from 'node:fs'
import { Tun, type TunOptions } from '../index.ts'
import { ensureNetns } from './netns.ts'

ensureNetns(import.meta.url)

const raw = process.argv.includes('--raw')
const off = process.argv.includes('--off')
const megabytes = Number(process.argv.slice(2).find((a) => /^\d+$/.test(a)) ?? 200)
const offload: TunOptions['offload'] = off ? false : raw ? { raw: true } : true

/** Runs a command and collects its stdout (`onOutput` sees it as it grows); rejects on a non-zero exit. */
function run(cmd: string, args: string[], onOutput?: (out: string) => void): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    p.stdout.setEncoding('utf8').on('data', (d: string) => onOutput?.((out += d)))
    p.on('error', reject)
    p.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} exited with ${code}`))))
  })
}

/** A network namespace held by a sleeping `unshare --net` child: its path, and how to let it go. */
async function namespace(): Promise<{ path: string; close: () => void }> {
  const holder = spawn('unshare', ['--net', 'sleep', '600'], { stdio: 'ignore' })
  const path = `/proc/${holder.pid}/ns/net`
  const own = readlinkSync('/proc/self/ns/net')
  for (let i = 0; i < 500; i++) {
    try {
      if (readlinkSync(path) !== own) break
    } catch {
      /* not yet */
    }
    await new Promise((r) => setTimeout(r, 10))
  }
  await run('nsenter', [`--net=${path}`, 'ip', 'link', 'set', 'lo', 'up'])
  return { path, close: () => holder.kill('SIGKILL') }
}

const nsA = await namespace()
const nsB = await namespace()
try {
  await using a = await Tun.create({
    name: 'fwda',
    netns: nsA.path,
    addresses: ['10.50.0.1/24'],
    routes: [{ to: '10.60.0.0/24' }],
    offload,
  })
  await using b = await Tun.create({
    name: 'fwdb',
    netns: nsB.path,
    addresses: ['10.60.0.1/24'],
    routes: [{ to: '10.50.0.0/24' }],
    offload,
  })
  console.log(
    `forwarding between ${a.name} (A, 10.50.0.1) and ${b.name} (B, 10.60.0.1), offload ${JSON.stringify(offload)}`,
  )
  const forward = async (from: Tun, to: Tun) => {
    for await (const batch of from.batches()) await to.write(batch)
  }
  const loops = [forward(a, b), forward(b, a)]

  // A receiver in B and a sender in A: plain node TCP sockets, each in its namespace through nsenter.
  // It prints "listening" first (the parent waits for it), then the bytes it got and the seconds they took.
  let ready: () => void = () => {}
  const listening = new Promise<void>((r) => (ready = r))
  const receiver = run(
    'nsenter',
    [
      `--net=${nsB.path}`,
      process.execPath,
      '--input-type=module',
      '-e',
      `import net from 'node:net'
       const srv = net.createServer((c) => {
         let n = 0, t0 = 0
         c.on('data', (d) => { if (n === 0) t0 = performance.now(); n += d.length })
         c.on('end', () => { console.log(n, (performance.now() - t0) / 1000); srv.close() })
       })
       srv.listen(5000, '10.60.0.1', () => console.log('listening'))`,
    ],
    (out) => out.startsWith('listening') && ready(),
  )
  await Promise.race([listening, receiver])
  await run('nsenter', [
    `--net=${nsA.path}`,
    process.execPath,
    '--input-type=module',
    '-e',
    `import net from 'node:net'
     const chunk = Buffer.alloc(1 << 20, 7)
     const s = net.connect(5000, '10.60.0.1', async () => {
       for (let i = 0; i < ${megabytes}; i++) if (!s.write(chunk)) await new Promise((r) => s.once('drain', r))
       s.end()
     })`,
  ])
  const [received, secs] = (await receiver).trim().split('\n').pop()!.split(' ').map(Number) as [number, number]
  console.log(
    `${(received / 2 ** 20).toFixed(0)} MiB from A to B in ${secs.toFixed(2)} s: ${((received * 8) / secs / 1e9).toFixed(2)} Gbit/s`,
  )
  for (const [label, t] of [
    ['A', a],
    ['B', b],
  ] as const) {
    const s = t.stats()
    console.log(
      `${label} ${t.name}: read ${s.rxPackets} packets in ${s.rxBatches} batches, wrote ${s.txPackets}; offload ${JSON.stringify(s.backend)}`,
    )
  }
  await a.close()
  await b.close()
  await Promise.all(loops)
} finally {
  nsB.close()
  nsA.close()
}
