/**
 * Child-process scenarios of the reliability tests: environment teardown with live queues, threads and
 * subscriptions (worker throw / terminate / process.exit, the main thread's own exit), garbage collection of
 * devices nobody closed, and injected panics. Each prints one JSON line with what it measured and exits; the test
 * checks the exit status (an abort would be SIGABRT) and the numbers.
 *
 *   node --import tsx __test__/helpers/teardown.ts <scenario> [args...]
 */
import { execFileSync } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { Worker } from 'node:worker_threads'
import { Tun, TunError } from '../../index.ts'
import { ipv4 } from './packets.ts'

const [scenario, ...args] = process.argv.slice(2)

/** Open descriptors of this process. */
const fds = () => readdirSync('/proc/self/fd').length
/** Threads of this process whose name starts with `tunkit-`. */
function tunkitThreads(): number {
  let n = 0
  for (const t of readdirSync('/proc/self/task')) {
    try {
      if (readFileSync(`/proc/self/task/${t}/comm`, 'utf8').startsWith('tunkit-')) n++
    } catch {
      // the thread ended meanwhile
    }
  }
  return n
}
/** Interfaces in this namespace whose name starts with `prefix`. */
function links(prefix: string): string[] {
  const out = execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' })
  return out
    .split('\n')
    .map((l) => l.split(': ')[1]?.split('@')[0] ?? '')
    .filter((n) => n.startsWith(prefix))
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** What a worker does before it dies: a memory pair or a device with a read waiting, writes in flight, events. */
function workerBody(kind: string, how: string, name: string): string {
  const open =
    kind === 'memory'
      ? `const [a, b] = Tun.createMemoryPair({ ring: { txRingBytes: 65536 } }); const dev = a`
      : `const dev = await Tun.create({ name: ${JSON.stringify(name)}, addresses: ['10.77.0.1/24'] })
         const ev = dev.events(); ev.next().catch(() => {})`
  const die =
    how === 'throw'
      ? `setTimeout(() => { throw new Error('worker fails on purpose') }, 20)`
      : how === 'exit'
        ? `setTimeout(() => process.exit(3), 20)`
        : `setInterval(() => {}, 1000)`
  return `
    const { register } = await import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))})
    register()
    const { Tun } = await import(${JSON.stringify(new URL('../../index.ts', import.meta.url).href)})
    ${open}
    const it = dev.packets(); it.next().catch(() => {})
    const pkt = Buffer.alloc(1400); pkt[0] = 0x45; pkt.writeUInt16BE(1400, 2); pkt[8] = 64; pkt[9] = 17
    pkt.set([10, 77, 0, 1], 12); pkt.set([10, 77, 0, 9], 16)
    const flood = () => { for (let i = 0; i < 64; i++) dev.write(Array(8).fill(pkt)).catch(() => {}); setImmediate(flood) }
    flood()
    ;(await import('node:worker_threads')).parentPort.postMessage('ready')
    ${die}`
}

async function workers(kind: string, how: string, rounds: number): Promise<void> {
  const run = async (i: number) => {
    const w = new Worker(workerBody(kind, how, `tkwt${i}`), { eval: true, type: 'module' } as never)
    w.on('error', () => {})
    const exited = new Promise((r) => w.once('exit', r))
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`worker ${i} never got ready`)), 20_000)
      w.once('message', () => {
        clearTimeout(t)
        resolve()
      })
      w.once('exit', (c) => {
        clearTimeout(t)
        reject(new Error(`worker ${i} exited (${c}) before it was ready`))
      })
    })
    if (how === 'terminate') setTimeout(() => void w.terminate(), 30)
    await exited
  }
  await run(0) // warm-up: the first worker loads modules and starts libuv's pools
  await sleep(100)
  const before = { fds: fds(), threads: tunkitThreads() }
  for (let i = 1; i <= rounds; i++) await run(i)
  await sleep(200)
  console.log(JSON.stringify({ before, after: { fds: fds(), threads: tunkitThreads() }, links: links('tkwt'), rounds }))
}

/** `process.exit()` from the main thread while devices, memory pairs, reads, writes and events are all live. */
async function exitWithOpen(): Promise<void> {
  const tun = await Tun.create({ name: 'tkexit0', addresses: ['10.78.0.1/24'] })
  const [a] = Tun.createMemoryPair()
  void tun.events().next()
  void tun.packets().next()
  void a.packets().next()
  for (let i = 0; i < 200; i++) void a.write(ipv4(1000, i)).catch(() => {})
  console.log(JSON.stringify({ open: true }))
  setTimeout(() => process.exit(7), 50)
}

/** The main thread's event loop runs dry with devices open but nothing waiting: the process ends by itself. */
async function naturalEnd(): Promise<void> {
  await Tun.create({ name: 'tkend0', addresses: ['10.79.0.1/24'] })
  Tun.createMemoryPair()
  console.log(JSON.stringify({ open: true }))
}

/** Devices and memory pairs dropped without close(): collected, their threads and devices gone. */
async function collect(): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc
  if (!gc) throw new Error('run with --expose-gc')
  const base = tunkitThreads()
  await (async () => {
    for (let i = 0; i < 4; i++) {
      const t = await Tun.create({ name: `tkgc${i}`, addresses: [`10.80.${i}.1/24`] })
      await t.write(ipv4(100, i))
    }
    for (let i = 0; i < 20; i++) {
      const [a, b] = Tun.createMemoryPair()
      await a.write(ipv4(100, i))
      await b.packets().next()
    }
  })()
  const opened = { threads: tunkitThreads(), links: links('tkgc').length }
  const deadline = Date.now() + 10_000
  while ((tunkitThreads() > base || links('tkgc').length > 0) && Date.now() < deadline) {
    gc()
    await sleep(50) // finalizers run from the event loop
  }
  console.log(JSON.stringify({ base, opened, after: { threads: tunkitThreads(), links: links('tkgc').length } }))
}

/** A read someone awaits keeps its device alive through garbage collections, though nothing else refers to it. */
async function collectWhileWaiting(): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc
  if (!gc) throw new Error('run with --expose-gc')
  const a = (() => {
    const [a, b] = Tun.createMemoryPair()
    void (async () => {
      for await (const p of b.packets()) {
        console.log(JSON.stringify({ got: p.readUInt32BE(28) }))
        process.exit(0)
      }
    })()
    return a
  })()
  for (let i = 0; i < 10; i++) {
    gc()
    await sleep(20)
  }
  await a.write(ipv4(100, 42))
  await sleep(5000)
  console.log(JSON.stringify({ got: null }))
}

/** With the test addon and a panic point armed: what reads and writes report. */
async function panic(point: string): Promise<void> {
  const codes: Record<string, string> = {}
  const code = (e: unknown) => (e instanceof TunError ? e.code : String(e))
  let a: Tun
  let peer: Tun | undefined
  if (point === 'panic-inline') {
    a = await Tun.create({ name: 'tkpanic0', addresses: ['10.81.0.1/24'] })
  } else {
    ;[a, peer] = Tun.createMemoryPair()
  }
  const reading = (async () => {
    try {
      for await (const _ of a.packets()) {
        // keep reading
      }
      codes.read = 'ended'
    } catch (e) {
      codes.read = code(e)
    }
  })()
  if (point === 'panic-reader') await peer!.write(ipv4(100, 1))
  try {
    await a.write(ipv4(100, 2))
    codes.firstWrite = 'ok'
  } catch (e) {
    codes.firstWrite = code(e)
  }
  const deadline = Date.now() + 5000
  for (;;) {
    try {
      await a.write(ipv4(100, 3))
    } catch (e) {
      codes.laterWrite = code(e)
      break
    }
    if (Date.now() > deadline) {
      codes.laterWrite = 'never failed'
      break
    }
    await sleep(20)
  }
  await Promise.race([reading, sleep(5000).then(() => (codes.read ??= 'hung'))])
  await a.close()
  await peer?.close()
  console.log(JSON.stringify(codes))
}

switch (scenario) {
  case 'workers':
    await workers(args[0] ?? 'memory', args[1] ?? 'throw', Number(args[2] ?? 8))
    break
  case 'exit':
    await exitWithOpen()
    break
  case 'natural-end':
    await naturalEnd()
    break
  case 'gc':
    await collect()
    break
  case 'gc-waiting':
    await collectWhileWaiting()
    break
  case 'panic':
    await panic(args[0] ?? 'panic-reader')
    break
  default:
    throw new Error(`unknown scenario ${scenario}`)
}
