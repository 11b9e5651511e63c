// Multi-queue devices (IFF_MULTI_QUEUE): one descriptor, reader and writer per queue; the kernel keeps each flow on
// one queue; queues detached to worker_threads workers.
// Runs inside the private network namespace the test runner made; nothing leaves it.
// Address plan of this file: 10.40.0.0/16 .. 10.44.0.0/16, devices tkmq<n>.
import type { Worker } from 'node:worker_threads'
import { Tun, TunError, TunQueue, packet } from '../index.ts'
import { deviceTest, devName } from './helpers/device.ts'
import { ipLink, ipOk, waitGone } from './helpers/link.ts'
import { send, udpSocket, until } from './helpers/net.ts'
import { nextMessage, tsWorker } from './helpers/worker.ts'

const tag = 'mq'
const WORKER = new URL('./helpers/queue-worker.ts', import.meta.url)

/** Sends `perFlow` datagrams from each of `flows` sockets (one source port each) to `dst:port`; returns the ports. */
async function sendFlows(dst: string, port: number, flows: number, perFlow: number): Promise<number[]> {
  const socks = await Promise.all(Array.from({ length: flows }, () => udpSocket('udp4')))
  try {
    for (let i = 0; i < perFlow; i++)
      for (const s of socks) await send(s, Buffer.from(`flow ${s.address().port} #${i}`), port, dst)
    return socks.map((s) => s.address().port)
  } finally {
    for (const s of socks) s.close()
  }
}

/** Counts, per UDP source port, the datagrams to `port` that `q` delivers, until `signal` aborts. */
async function countFlows(q: TunQueue, port: number, signal: AbortSignal, into: Map<number, number>): Promise<void> {
  try {
    for await (const p of q.packets({ signal })) {
      const i = packet.parse(p)
      if (i?.protocol === packet.PROTO_UDP && i.dstPort === port) into.set(i.srcPort!, (into.get(i.srcPort!) ?? 0) + 1)
    }
  } catch (e) {
    if ((e as Error).name !== 'AbortError') throw e
  }
}

const sum = (m: Map<number, number>) => [...m.values()].reduce((a, b) => a + b, 0)

type Msg = { type: string; [k: string]: unknown }
const isType =
  <T extends string>(type: T) =>
  (m: unknown): m is Msg & { type: T } =>
    (m as Msg)?.type === type

/** A worker driving one detached queue (helpers/queue-worker.ts), counting datagrams to `port` per flow. */
class QueueWorker {
  total = 0
  private constructor(
    readonly w: Worker,
    readonly name: string,
  ) {
    w.on('message', (m: Msg) => {
      if (m.type === 'progress') this.total = m.total as number
    })
  }

  static async start(token: number, port: number): Promise<QueueWorker> {
    const w = tsWorker(WORKER, { workerData: { token, port } })
    const m = await nextMessage(
      w,
      (x): x is Msg => isType('ready')(x) || isType('error')(x),
      20_000,
      'the worker to attach',
    )
    if (m.type === 'error') {
      await w.terminate()
      throw new TunError(m.code as never, `in the worker: ${m.message as string}`)
    }
    return new QueueWorker(w, m.name as string)
  }

  async write(packets: Buffer[]): Promise<Msg> {
    const reply = nextMessage(
      this.w,
      (x): x is Msg => isType('written')(x) || isType('write-error')(x),
      10_000,
      'the write',
    )
    this.w.postMessage({ type: 'write', packets })
    return reply
  }

  /** Closes the queue in the worker and returns its per-flow counts. */
  async stop(): Promise<Map<number, number>> {
    const counts = nextMessage(this.w, isType('counts'), 10_000, 'the counts')
    this.w.postMessage({ type: 'stop' })
    const m = await counts
    await this.w.terminate()
    return new Map(m.flows as [number, number][])
  }
}

deviceTest('queues: N opens N queues of one multi-queue device, as `ip -d link` reports', async (t) => {
  await using tun = await Tun.create({ name: devName(tag), queues: 2, addresses: ['10.40.0.1/24'] })
  t.is(tun.queueCount, 2)
  let info = (await ipLink(tun.name))!.linkinfo?.info_data
  t.is(info?.multi_queue, true)
  t.is(info?.numqueues, 2)
  await using four = await Tun.create({ name: devName(tag), queues: 4, mode: 'tap' })
  t.is(four.queueCount, 4)
  info = (await ipLink(four.name))!.linkinfo?.info_data
  t.deepEqual([info?.type, info?.multi_queue, info?.numqueues], ['tap', true, 4])
  // A single-queue device is not multi-queue at all.
  await using one = await Tun.create({ name: devName(tag) })
  t.is(one.queueCount, 1)
  t.is((await ipLink(one.name))!.linkinfo?.info_data?.multi_queue, false)
  // Queue handles: the same object each time; queue 0 is what packets()/write() use.
  t.is(tun.queue(1), tun.queue(1))
  t.is(tun.queue(0).name, tun.name)
})

deviceTest('packets of one flow stay on one queue, and flows spread over both queues', async (t) => {
  await using tun = await Tun.create({ name: devName(tag), queues: 2, addresses: ['10.40.0.1/24'] })
  const counts = [new Map<number, number>(), new Map<number, number>()]
  const ac = new AbortController()
  const readers = [0, 1].map((i) => countFlows(tun.queue(i), 9400, ac.signal, counts[i]!))
  const flows = 32
  const perFlow = 10
  const ports = await sendFlows('10.40.0.2', 9400, flows, perFlow)
  await until(() => sum(counts[0]!) + sum(counts[1]!) >= flows * perFlow, 5000, 'every datagram')
  ac.abort()
  await Promise.all(readers)
  for (const p of ports) {
    const on = counts.map((c) => c.get(p) ?? 0)
    t.true(on.filter((n) => n > 0).length === 1, `flow ${p} was split over the queues: ${on}`)
    t.is(on[0]! + on[1]!, perFlow, `flow ${p}`)
  }
  t.true(
    counts[0]!.size > 0 && counts[1]!.size > 0,
    `all ${flows} flows on one queue: ${counts[0]!.size} / ${counts[1]!.size}`,
  )
  t.log(`flows per queue: ${counts[0]!.size} / ${counts[1]!.size}`)
  const st = tun.stats()
  t.true(st.rxPackets >= flows * perFlow, 'stats() sums the queues')
})

deviceTest(
  'two worker_threads workers each drive one queue of a 2-queue device: every flow arrives, none twice',
  async (t) => {
    await using tun = await Tun.create({ name: devName(tag), queues: 2, addresses: ['10.41.0.1/24'] })
    // Every queue goes to a worker; the main thread keeps only the configuration.
    const tokens = [tun.detachQueue(0), tun.detachQueue(1)]
    const workers = await Promise.all(tokens.map((tok) => QueueWorker.start(tok, 9401)))
    try {
      t.deepEqual(
        workers.map((w) => w.name),
        [tun.name, tun.name],
      )
      const ports = await sendFlows('10.41.0.2', 9401, 32, 10)
      await until(() => workers[0]!.total + workers[1]!.total >= 320, 10_000, 'every datagram in the workers')
      const counts = await Promise.all(workers.map((w) => w.stop()))
      for (const p of ports) {
        const on = counts.map((c) => c.get(p) ?? 0)
        t.is(on.filter((n) => n > 0).length, 1, `flow ${p}: ${on}`)
        t.is(on[0]! + on[1]!, 10, `flow ${p}`)
      }
      t.true(counts[0]!.size > 0 && counts[1]!.size > 0, `flows per worker ${counts[0]!.size} / ${counts[1]!.size}`)
    } finally {
      await Promise.all(workers.map((w) => w.w.terminate()))
    }
  },
)

deviceTest('the main thread and two workers share a 3-queue device: each flow on exactly one of them', async (t) => {
  await using tun = await Tun.create({ name: devName(tag), queues: 3, addresses: ['10.42.0.1/24'] })
  const workers = await Promise.all([tun.detachQueue(1), tun.detachQueue(2)].map((tok) => QueueWorker.start(tok, 9402)))
  try {
    const main = new Map<number, number>()
    const ac = new AbortController()
    const reader = countFlows(tun.queue(0), 9402, ac.signal, main)
    const flows = 48
    const ports = await sendFlows('10.42.0.2', 9402, flows, 10)
    await until(() => sum(main) + workers[0]!.total + workers[1]!.total >= flows * 10, 10_000, 'every datagram')
    ac.abort()
    await reader
    const counts = [main, ...(await Promise.all(workers.map((w) => w.stop())))]
    for (const p of ports) {
      const on = counts.map((c) => c.get(p) ?? 0)
      t.is(on.filter((n) => n > 0).length, 1, `flow ${p}: ${on}`)
      t.is(
        on.reduce((a, b) => a + b),
        10,
        `flow ${p}`,
      )
    }
    t.true(counts[1]!.size > 0 && counts[2]!.size > 0, `flows per queue ${counts.map((c) => c.size)}`)
    t.log(`flows per queue (main, worker 1, worker 2): ${counts.map((c) => c.size).join(' / ')}`)
  } finally {
    await Promise.all(workers.map((w) => w.w.terminate()))
  }
})

deviceTest('a worker writes through its queue, also after the MTU was raised from outside', async (t) => {
  await using tun = await Tun.create({ name: devName(tag), queues: 2, addresses: ['10.43.0.1/24'] })
  const worker = await QueueWorker.start(tun.detachQueue(1), 9403)
  try {
    const sock = await udpSocket('udp4', '10.43.0.1', 0)
    const got: Buffer[] = []
    sock.on('message', (m) => got.push(m))
    const mk = (size: number) =>
      packet.udp({
        src: '10.43.0.2',
        dst: '10.43.0.1',
        srcPort: 5000,
        dstPort: sock.address().port,
        payload: Buffer.alloc(size, 0x33),
      })
    t.deepEqual(await worker.write([mk(100), mk(1472)]), { type: 'written' })
    await until(() => got.length === 2, 3000, 'the datagrams the worker wrote')
    t.deepEqual(
      got.map((g) => g.length),
      [100, 1472],
    )
    // Too large for the current MTU: refused in the worker, typed.
    const big = await worker.write([mk(9000 - 28)])
    t.like(big, { type: 'write-error', code: 'ERR_TUN_PACKET_TOO_LARGE' })
    // Raised from outside, after the queue was detached: the worker's queue follows the kernel's MTU.
    await ipOk(['link', 'set', tun.name, 'mtu', '9000'])
    t.deepEqual(
      await worker.write([mk(9000 - 28)]),
      { type: 'written' },
      'a 9000-byte packet after the MTU went to 9000',
    )
    await until(() => got.length === 3, 3000, 'the 9000-byte datagram')
    t.is(got[2]!.length, 9000 - 28)
    sock.close()
  } finally {
    await worker.w.terminate()
  }
})

deviceTest(
  'close(): a queue detached but never attached does not keep the device, and its token is void',
  async (t) => {
    const tun = await Tun.create({ name: devName(tag), queues: 2, addresses: ['10.44.0.1/24'] })
    const token = tun.detachQueue(1)
    await tun.close()
    await t.notThrowsAsync(
      () => waitGone(tun.name, 2000),
      'the device outlived close() because of its unattached queue',
    )
    const e = t.throws(() => TunQueue.attach(token)) as TunError
    t.true(e.code === 'ERR_TUN_NOT_FOUND' || e.code === 'ERR_TUN_CLOSED', e.message)
  },
)

deviceTest(
  'a detached queue keeps the device until the worker closes it; a terminated worker lets it go',
  async (t) => {
    const tun = await Tun.create({ name: devName(tag), queues: 2, addresses: ['10.44.1.1/24'] })
    const a = await QueueWorker.start(tun.detachQueue(1), 9404)
    await tun.close()
    // The worker's queue still holds a descriptor of the device.
    t.truthy(await ipLink(tun.name), 'the device went while a worker still had a queue')
    // Ending the worker (terminate(), no close()) releases it.
    await a.w.terminate()
    await t.notThrowsAsync(() => waitGone(tun.name, 3000))
  },
)

deviceTest('refused ring options leave the queue in the device and the detach token attachable', async (t) => {
  // With several queues each starts on first use, so the device's ring options are only checked then.
  const tun = await Tun.create({ name: devName(tag), queues: 2, ring: { memoryBudget: 1 } })
  try {
    for (const attempt of ['first', 'second']) {
      const e = t.throws(() => tun.queue(1), undefined, attempt) as TunError
      t.is(e.code, 'ERR_TUN_INVALID_ARGUMENT', `${attempt} start: ${e.message}`)
      t.regex(e.message, /memoryBudget/)
    }
    // The refused start did not take the queue: it can still be detached, and attached with good options.
    const token = tun.detachQueue(1)
    for (const ring of [{ batchPackets: 0 }, { memoryBudget: 1 }, { slabBytes: 1 }, { txRingBytes: 1 }]) {
      const e = t.throws(() => TunQueue.attach(token, { ring }), undefined, JSON.stringify(ring)) as TunError
      t.is(e.code, 'ERR_TUN_INVALID_ARGUMENT', `${JSON.stringify(ring)}: ${e.message}`)
    }
    const q = TunQueue.attach(token, { ring: { batchPackets: 16 } })
    t.is(q.name, tun.name)
    await q.close()
    t.throws(() => TunQueue.attach(token), { code: 'ERR_TUN_NOT_FOUND' }, 'a token attaches once')
  } finally {
    await tun.close()
  }
})
