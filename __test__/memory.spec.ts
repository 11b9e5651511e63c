// The iterator, ring, backpressure, close and error paths, on the in-memory device pair: no privileges needed.
import test from 'ava'
import { Tun, TunError, type TunErrorCode } from '../index.ts'

function ipv4(len: number, tag: number): Buffer {
  const b = Buffer.alloc(len, tag & 0xff)
  b[0] = 0x45
  b.writeUInt32BE(tag >>> 0, 4)
  return b
}

async function collect(it: AsyncIterable<Buffer>, n: number): Promise<Buffer[]> {
  const out: Buffer[] = []
  if (n === 0) return out
  for await (const p of it) {
    out.push(p)
    if (out.length === n) break
  }
  return out
}

test('packets() yields every packet in order, byte-exact, single and batched writes', async (t) => {
  const [a, b] = Tun.createMemoryPair()
  const sent = Array.from({ length: 5000 }, (_, i) => ipv4(20 + ((i * 37) % 1400), i))
  const reading = collect(b.packets(), sent.length)
  for (let i = 0; i < 1000; i++) await a.write(sent[i]!)
  for (let i = 1000; i < sent.length; i += 100) await a.write(sent.slice(i, i + 100))
  const got = await reading
  t.is(got.length, sent.length)
  t.true(got.every((p, i) => p.equals(sent[i]!)))
  t.is(b.stats().rxPackets, sent.length)
  await a.close()
  await b.close()
})

test('batches() yields arrays of zero-copy Buffers sharing one ArrayBuffer', async (t) => {
  const [a, b] = Tun.createMemoryPair()
  const sent = Array.from({ length: 300 }, (_, i) => ipv4(100, i))
  await a.write(sent)
  let total = 0
  const seen: Buffer[] = []
  for await (const batch of b.batches()) {
    t.true(batch.length >= 1)
    t.true(
      batch.every((p) => p.buffer === batch[0]!.buffer),
      'packets of a batch share one slab',
    )
    seen.push(...batch)
    total += batch.length
    if (total >= sent.length) break
  }
  t.is(total, sent.length)
  t.true(seen.every((p, i) => p.equals(sent[i]!)))
  await a.close()
  await b.close()
})

test('breaking out of a loop leaves the device open; closeOnReturn closes it', async (t) => {
  const [a, b] = Tun.createMemoryPair()
  await a.write([ipv4(60, 1), ipv4(60, 2), ipv4(60, 3)])
  for await (const _ of b.packets()) break
  t.false(b.closed)
  const [second] = await collect(b.packets(), 1)
  t.is(second!.readUInt32BE(4), 2)
  for await (const _ of b.packets({ closeOnReturn: true })) break
  t.true(b.closed)
  await a.close()
})

test('packets kept from early batches stay intact while 100 000 more pass', async (t) => {
  const [a, b] = Tun.createMemoryPair()
  const kept: Buffer[] = []
  const copies: Buffer[] = []
  const total = 100_200
  const reader = (async () => {
    let n = 0
    for await (const p of b.packets()) {
      if (kept.length < 200) {
        kept.push(p)
        copies.push(Buffer.from(p))
      }
      if (++n === total) break
    }
    return n
  })()
  const batch: Buffer[] = []
  for (let i = 0; i < total; i++) {
    batch.push(ipv4(64 + (i % 200), i))
    if (batch.length === 200) await a.write(batch.splice(0))
  }
  t.is(await reader, total)
  t.is(kept.length, 200)
  t.true(
    kept.every((p, i) => p.equals(copies[i]!)),
    'a kept packet changed',
  )
  t.true(kept.every((p, i) => p.readUInt32BE(4) === i))
  await a.close()
  await b.close()
})

test('write() waits when the transmit ring is full and resolves once the peer reads', async (t) => {
  const [a, b] = Tun.createMemoryPair({
    capacity: 8,
    ring: { txRingBytes: 65536, ringBatches: 2, batchPackets: 8, slabBytes: 4096 },
  })
  const pkt = ipv4(1400, 7)
  let pending: Promise<void> | null = null
  let writes = 0
  for (; writes < 10_000; writes++) {
    let settled = false
    const p = a.write(Array(16).fill(pkt)).then(() => {
      settled = true
    })
    await new Promise((r) => setImmediate(r))
    if (!settled) {
      pending = p
      break
    }
  }
  t.truthy(pending, 'write() never applied backpressure')
  t.true(a.stats().txBackpressure >= 1)
  let resolved = false
  void pending!.then(() => (resolved = true))
  await new Promise((r) => setTimeout(r, 50))
  t.false(resolved, 'write resolved although nobody read')
  const drained = collect(b.packets(), (writes + 1) * 16)
  await pending
  t.is((await drained).length, (writes + 1) * 16)
  await a.close()
  await b.close()
})

test('close() ends a waiting for-await loop at once, and is idempotent', async (t) => {
  const [a, b] = Tun.createMemoryPair()
  const started = performance.now()
  const loop = (async () => {
    let n = 0
    for await (const _ of b.packets()) n++
    return n
  })()
  await new Promise((r) => setTimeout(r, 20))
  const closing = performance.now()
  await b.close()
  t.is(await loop, 0)
  t.true(performance.now() - closing < 100, 'loop did not end within 100 ms of close()')
  t.true(performance.now() - started >= 20)
  await b.close()
  await a.close()
})

test('an AbortSignal ends the iteration with an AbortError', async (t) => {
  const [a, b] = Tun.createMemoryPair()
  const ac = new AbortController()
  setTimeout(() => ac.abort(new Error('enough')), 20)
  const err = await t.throwsAsync(async () => {
    for await (const _ of b.packets({ signal: ac.signal })) {
      /* nothing arrives */
    }
  })
  t.is(err!.name, 'AbortError')
  t.is((err as Error & { code: string }).code, 'ABORT_ERR')
  // An already-aborted signal ends it before any read; the device still works afterwards.
  await t.throwsAsync(() => collect(b.batches({ signal: AbortSignal.abort() }) as never, 1), { name: 'AbortError' })
  await a.write(ipv4(40, 9))
  t.is((await collect(b.packets(), 1))[0]!.readUInt32BE(4), 9)
  await a.close()
  await b.close()
})

test('a second concurrent reader gets ERR_TUN_CONCURRENT_READ', async (t) => {
  const [a, b] = Tun.createMemoryPair()
  const first = collect(b.packets(), 1)
  await new Promise((r) => setImmediate(r))
  const err = await t.throwsAsync(() => collect(b.packets(), 1))
  t.true(err instanceof TunError)
  t.is((err as TunError).code, 'ERR_TUN_CONCURRENT_READ')
  await a.write(ipv4(40, 1))
  t.is((await first).length, 1)
  await a.close()
  await b.close()
})

test('bad packets reject with typed errors and nothing of their batch is sent; queued packets are not lost', async (t) => {
  const [a, b] = Tun.createMemoryPair({ mtu: 1000 })
  await a.write([ipv4(100, 1), ipv4(100, 2)])
  const cases: [Uint8Array | Uint8Array[], TunErrorCode][] = [
    [Buffer.alloc(0), 'ERR_TUN_INVALID_PACKET'],
    [Buffer.from([0x70, 0, 0, 0]), 'ERR_TUN_INVALID_PACKET'],
    [[ipv4(100, 3), Buffer.from([0x10])], 'ERR_TUN_INVALID_PACKET'],
    [ipv4(1001, 4), 'ERR_TUN_PACKET_TOO_LARGE'],
    [[ipv4(100, 5), ipv4(2000, 6)], 'ERR_TUN_PACKET_TOO_LARGE'],
  ]
  for (const [pkts, code] of cases) {
    const e = await t.throwsAsync(() => a.write(pkts))
    t.true(e instanceof TunError, code)
    t.is((e as TunError).code, code)
    t.regex(e!.message, /mem0/)
  }
  await a.write(ipv4(100, 7))
  const got = await collect(b.packets(), 3)
  t.deepEqual(
    got.map((p) => p.readUInt32BE(4)),
    [1, 2, 7],
  )
  t.is(b.stats().rxPackets, 3)
  await a.close()
  await b.close()
})

test('wrong argument types reject with ERR_TUN_INVALID_ARGUMENT', async (t) => {
  const [a, b] = Tun.createMemoryPair()
  for (const bad of ['string', 42, null, [1, 2], [Buffer.from([0x45]), 'x'], new Uint16Array(4), {}] as unknown[]) {
    const e = await t.throwsAsync(() => a.write(bad as Buffer))
    t.is((e as TunError).code, 'ERR_TUN_INVALID_ARGUMENT', String(bad))
  }
  t.throws(() => Tun.createMemoryPair({ mtu: 'big' as never }), { code: 'ERR_TUN_INVALID_ARGUMENT' })
  t.throws(() => Tun.createMemoryPair({ mtu: 20 }), { code: 'ERR_TUN_INVALID_MTU' })
  t.throws(() => Tun.createMemoryPair({ capacity: 0 }), { code: 'ERR_TUN_INVALID_ARGUMENT' })
  t.throws(() => Tun.createMemoryPair({ ring: { batchPackets: 0 } }), { code: 'ERR_TUN_INVALID_ARGUMENT' })
  t.throws(() => Tun.createMemoryPair({ ring: { batchSize: 8 } as never }), { code: 'ERR_TUN_INVALID_ARGUMENT' })
  t.throws(() => Tun.createMemoryPair({ ring: { memoryBudget: 1000 } }), { code: 'ERR_TUN_INVALID_ARGUMENT' })
  await t.throwsAsync(() => Tun.create({ nmae: 'x' } as never), { code: 'ERR_TUN_INVALID_ARGUMENT', message: /nmae/ })
  await t.throwsAsync(() => Tun.create({ name: 7 } as never), { code: 'ERR_TUN_INVALID_ARGUMENT' })
  await t.throwsAsync(() => Tun.create({ addresses: '10.0.0.1/24' } as never), { code: 'ERR_TUN_INVALID_ARGUMENT' })
  await t.throwsAsync(() => Tun.create({ mtu: 1.5 }), { code: 'ERR_TUN_INVALID_ARGUMENT' })
  await t.throwsAsync(() => Tun.create({ mode: 'tan' as never }), { code: 'ERR_TUN_INVALID_ARGUMENT' })
  await t.throwsAsync(() => Tun.create({ routes: [{ via: '10.0.0.1' }] as never }), {
    code: 'ERR_TUN_INVALID_ARGUMENT',
  })
  // The device still works after all of that.
  await a.write(ipv4(40, 1))
  t.is((await collect(b.packets(), 1)).length, 1)
  await a.close()
  await b.close()
})

test('configuration is validated before any syscall (no privileges needed)', async (t) => {
  const cases: [Parameters<typeof Tun.create>[0], TunErrorCode][] = [
    [{ name: '' }, 'ERR_TUN_INVALID_NAME'],
    [{ name: 'a-very-long-name0' }, 'ERR_TUN_INVALID_NAME'],
    [{ name: 'bad/name' }, 'ERR_TUN_INVALID_NAME'],
    [{ name: 'bad name' }, 'ERR_TUN_INVALID_NAME'],
    [{ name: 'tun%s' }, 'ERR_TUN_INVALID_NAME'],
    [{ name: 'tun%d%d' }, 'ERR_TUN_INVALID_NAME'],
    [{ addresses: ['10.0.0.1/33'] }, 'ERR_TUN_INVALID_ADDRESS'],
    [{ addresses: ['10.0.0.300/24'] }, 'ERR_TUN_INVALID_ADDRESS'],
    [{ addresses: ['fd00::1/129'] }, 'ERR_TUN_INVALID_ADDRESS'],
    [{ addresses: ['10.0.0.1/24', '10.0.0.1/16'] }, 'ERR_TUN_EXISTS'],
    [{ mtu: 67 }, 'ERR_TUN_INVALID_MTU'],
    [{ mtu: 65536 }, 'ERR_TUN_INVALID_MTU'],
    [{ mtu: 1200, addresses: ['fd00::1/64'] }, 'ERR_TUN_INVALID_MTU'],
    [{ routes: [{ to: '10.9.0.1/16' }] }, 'ERR_TUN_INVALID_ADDRESS'],
    [{ routes: [{ to: '10.9.0.0/16', via: 'fd00::1' }] }, 'ERR_TUN_INVALID_ADDRESS'],
    [{ mac: '02:00:00:00:00:01' }, 'ERR_TUN_INVALID_ARGUMENT'],
    [{ mode: 'tap', mac: '01:00:00:00:00:01' }, 'ERR_TUN_INVALID_ADDRESS'],
    [{ mode: 'tap', mac: 'zz:00:00:00:00:01' }, 'ERR_TUN_INVALID_ADDRESS'],
    [{ queues: 0 }, 'ERR_TUN_INVALID_ARGUMENT'],
  ]
  for (const [opts, code] of cases) {
    const e = await t.throwsAsync(() => Tun.create(opts), undefined, JSON.stringify(opts))
    t.true(e instanceof TunError)
    t.is((e as TunError).code, code, JSON.stringify(opts))
  }
})

test('use after close rejects with ERR_TUN_CLOSED; await using closes', async (t) => {
  const [a, b] = Tun.createMemoryPair()
  {
    await using scoped = b
    t.false(scoped.closed)
  }
  t.true(b.closed)
  await a.close()
  await t.throwsAsync(() => a.write(ipv4(40, 1)), { code: 'ERR_TUN_CLOSED' })
  t.throws(() => a.packets(), { code: 'ERR_TUN_CLOSED' })
  t.throws(() => a.stats(), { code: 'ERR_TUN_CLOSED' })
  await t.throwsAsync(() => a.setMtu(1400), { code: 'ERR_TUN_CLOSED' })
  await a.close()
})

test('writes not awaited: the ring takes up to twice its budget, refuses the rest whole, and all settle on close', async (t) => {
  const [a, b] = Tun.createMemoryPair({
    capacity: 4,
    ring: { txRingBytes: 65536, ringBatches: 1, batchPackets: 4, slabBytes: 4096, closeFlushMs: 50 },
  })
  const pkt = ipv4(1400, 1)
  const writes: Promise<void>[] = []
  for (let i = 0; i < 400; i++) writes.push(a.write(Array(16).fill(pkt)))
  const queued = a.stats().txQueuedBytes
  t.true(queued <= 2 * 65536, `${queued} bytes queued past twice txRingBytes`)
  await a.close()
  const results = await Promise.allSettled(writes)
  const rejected = results.filter((r) => r.status === 'rejected') as PromiseRejectedResult[]
  t.true(rejected.length > 0 && rejected.length < 400, `${rejected.length} of 400 refused`)
  for (const r of rejected) {
    t.true(r.reason instanceof TunError && r.reason.code === 'ERR_TUN_QUEUE_FULL', String(r.reason))
  }
  await b.close()
})
