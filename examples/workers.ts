// A multi-queue TUN whose queues are driven by worker_threads workers: a UDP echo service on 10.80.0.2:7 that
// answers from JavaScript, one thread per queue. The kernel spreads flows over the queues (each flow stays on one),
// so with several client sockets every thread gets some of them. Queue 0 always runs on the thread that created
// the device (here the main thread); queues 1..N-1 are detached and attached in workers.
//
//   node --import tsx examples/workers.ts [workers]      (makes a private network namespace; nothing leaves it)
import dgram from 'node:dgram'
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads'
import { Tun, TunQueue, packet } from '../index.ts'
import { ensureNetns } from './netns.ts'

ensureNetns(import.meta.url)

/** Answers every UDP datagram to port 7 on `q` with the same payload; returns how many it answered. */
async function udpEcho(q: TunQueue | Tun): Promise<number> {
  let n = 0
  for await (const p of q.packets()) {
    const i = packet.parse(p)
    if (i?.protocol !== packet.PROTO_UDP || i.dstPort !== 7) continue
    const payload = p.subarray(i.payloadOffset, i.payloadOffset + i.payloadLength)
    await q.write(packet.udp({ src: i.dst, dst: i.src, srcPort: 7, dstPort: i.srcPort!, payload }))
    n++
  }
  return n
}

/**
 * Starts this same file as a worker. Compiled JavaScript needs only `new Worker(url, { workerData })`; run from
 * TypeScript through tsx under Node 20, the worker must register tsx itself before it can load a .ts module.
 */
function startWorker(data: unknown): Worker {
  const self = new URL(import.meta.url)
  if (!self.pathname.endsWith('.ts')) return new Worker(self, { workerData: data })
  const api = import.meta.resolve('tsx/esm/api')
  const boot = `import(${JSON.stringify(api)}).then(({ register }) => { register(); return import(${JSON.stringify(self.href)}) })`
  return new Worker(boot, { eval: true, workerData: data })
}

if (!isMainThread) {
  // Worker: attach the queue whose token the main thread sent, serve it until the main thread says stop.
  const q = TunQueue.attach((workerData as { token: number }).token)
  parentPort!.on('message', (m) => m === 'stop' && void q.close())
  parentPort!.postMessage({ ready: true })
  parentPort!.postMessage({ answered: await udpEcho(q) })
  parentPort!.close()
} else {
  const workers = Math.max(1, Math.min(8, Number(process.argv[2] ?? 2)))
  await using tun = await Tun.create({ name: 'mq0', queues: workers + 1, addresses: ['10.80.0.1/24'] })
  console.log(`created ${tun.name} with ${tun.queueCount} queues: queue 0 on the main thread, ${workers} in workers`)

  const threads = await Promise.all(
    Array.from({ length: workers }, async (_, i) => {
      const w = startWorker({ token: tun.detachQueue(i + 1) })
      const answered = new Promise<number>((resolve, reject) => {
        w.on('message', (m) => m.answered !== undefined && resolve(m.answered))
        w.once('error', reject)
      })
      await new Promise<void>((resolve, reject) => {
        w.on('message', (m) => m.ready && resolve())
        w.once('error', reject)
      })
      return { w, answered }
    }),
  )
  const main = udpEcho(tun)

  // 32 clients, one source port (one flow) each, 20 requests each.
  const clients = await Promise.all(
    Array.from(
      { length: 32 },
      () =>
        new Promise<dgram.Socket>((r) => {
          const s = dgram.createSocket('udp4')
          s.bind(0, () => r(s))
        }),
    ),
  )
  let replies = 0
  for (const s of clients) s.on('message', () => replies++)
  for (let round = 0; round < 20; round++) {
    for (const s of clients) s.send(`hello ${round}`, 7, '10.80.0.2')
    await new Promise((r) => setTimeout(r, 5))
  }
  const deadline = Date.now() + 3000
  while (replies < 640 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
  for (const s of clients) s.close()

  for (const { w } of threads) w.postMessage('stop')
  const counts = await Promise.all(threads.map((t) => t.answered))
  await tun.close()
  const mainCount = await main
  console.log(`replies received by the clients: ${replies} of 640`)
  console.log(`answered per thread: main ${mainCount}, ${counts.map((c, i) => `worker ${i + 1} ${c}`).join(', ')}`)
  process.exitCode = replies === 640 ? 0 : 1
}
