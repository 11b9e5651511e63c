/**
 * Soak benchmark: does memory stay flat while millions of packets go through `packets()` and `batches()` and the
 * reader keeps some of them?
 *
 *   node --import tsx benchmark/soak.ts            (or: BENCH_ONLY=soak npm run bench)
 *
 * Each phase runs in a child process of its own (a clean heap and RSS), on `Tun.createMemoryPair()` (no kernel, no
 * privileges, no traffic anywhere): a writer on side A sends SOAK_PACKETS (default 10 000 000) IPv4/UDP packets,
 * 64 per `await a.write(array)`, and the reader on side B iterates them with `packets()` or `batches()`. Every packet
 * carries its sequence number (the first 4 payload bytes; valid IPv4 header checksum, UDP checksum 0 = none), so the
 * reader checks that nothing is lost or reordered, and at the end that every packet it kept is still intact.
 *
 * "Keeps every 1000th packet" (the packets whose sequence number is a multiple of 1000), three ways:
 *   - window: a ring of the SOAK_WINDOW (default 100) most recently kept packets, zero-copy views; older ones are
 *     dropped, so the reader holds a bounded number of packets;
 *   - all: every kept packet (10 000 of 10 M), zero-copy views, held until the end;
 *   - all-copy: every kept packet, as a copy outside Node's Buffer pool (`Buffer.allocUnsafeSlow` + `copy`), held
 *     until the end.
 * A zero-copy view keeps its whole batch buffer alive (a slab of 192 KiB + room for one 64 KiB frame, ~256 KiB,
 * counted against `ring.memoryBudget`, default 256 MiB; batches under `ring.copyBelow`, 16 KiB, are copied to a
 * buffer of their own size first), so the three differ in what they pin; the benchmark measures what happens.
 *
 * Every second a phase prints RSS, V8 heap and external memory, the queue's `rxLiveBytes` and `rxStalls`, and the
 * rate. The criterion: RSS when the last packet has been read is within 32 MiB of RSS right after the warm-up (the
 * first SOAK_WARMUP packets, default 1 000 000). A phase that stops making progress for SOAK_STALL_S seconds
 * (default 10; the reader waiting on the memory budget, say) or runs longer than SOAK_LIMIT_S (default 120) is ended
 * and reported as such (FAIL). No --expose-gc: garbage collection runs as V8 decides.
 *
 * SOAK_PHASES (comma-separated names, e.g. "packets-64-window,batches-64-all") picks phases; SOAK_SIZES (default
 * "64,1400") the packet sizes (whole IPv4 packet, bytes). Results: stdout and benchmark/RESULTS-soak.md.
 */
import { execFileSync, spawn } from 'node:child_process'
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { cpus, loadavg } from 'node:os'
import { dirname, join } from 'node:path'
import { setImmediate as immediate, setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { Tun, packet, type RingOptions } from '../index.js'

const HERE = dirname(fileURLToPath(import.meta.url))
const MiB = 1024 * 1024

function envInt(name: string, dflt: number, min: number, max: number): number {
  const v = Number(process.env[name] ?? dflt)
  if (!Number.isInteger(v) || v < min || v > max) throw new Error(`${name} must be an integer in [${min}, ${max}]`)
  return v
}

const PACKETS = envInt('SOAK_PACKETS', 10_000_000, 10_000, 100_000_000)
const WARMUP = envInt('SOAK_WARMUP', 1_000_000, 1000, PACKETS)
const KEEP_EVERY = 1000
const WINDOW = envInt('SOAK_WINDOW', 100, 1, 1_000_000)
const LIMIT_S = envInt('SOAK_LIMIT_S', 120, 5, 3600)
const STALL_S = envInt('SOAK_STALL_S', 10, 2, 600)
const CRITERION_MIB = 32
/** Packets per `write()` call. */
const WRITE_BATCH = 64
const SIZES = (process.env.SOAK_SIZES ?? '64,1400').split(',').map((s) => {
  const n = Number(s.trim())
  if (!Number.isInteger(n) || n < 32 || n > 1500) throw new Error('SOAK_SIZES: packet sizes in 32..1500')
  return n
})
/** Ring options for both sides (JSON, exploratory; default: none, i.e. the library's defaults). */
const RING: RingOptions = JSON.parse(process.env.SOAK_RING ?? '{}') as RingOptions
/** The ring's budget and batch buffer size with these options (defaults as src/queue.ts documents them). */
const BUDGET = RING.memoryBudget ?? 256 * MiB
const SLAB_BYTES = (RING.slabBytes ?? 192 * 1024) + 65535

type Iter = 'packets' | 'batches'
type Keep = 'window' | 'all' | 'all-copy'
const ITERS: Iter[] = ['packets', 'batches']
const KEEPS: Keep[] = ['window', 'all', 'all-copy']
const KEEP_LABEL: Record<Keep, string> = {
  window: `last ${WINDOW} kept, zero-copy views`,
  all: 'all kept, zero-copy views',
  'all-copy': 'all kept, copied',
}

interface Sample {
  t: number
  packets: number
  pps: number
  rss: number
  heapUsed: number
  external: number
  arrayBuffers: number
  rxLiveBytes: number
  rxStalls: number
  rxQueuedBatches: number
  kept: number
  /** Load average (1 min) and this process's CPU time (user + system, all threads) since the phase began, in s. */
  load: number
  cpu: number
}

interface PhaseResult {
  phase: string
  iter: Iter
  size: number
  keep: Keep
  /** 'done': all packets read; 'stalled': no progress for STALL_S s; 'limit': LIMIT_S reached; 'error'. */
  outcome: 'done' | 'stalled' | 'limit' | 'error'
  error?: string
  packets: number
  seconds: number
  pps: number
  /** Warm-up reached: RSS and stats right then. */
  warm?: Sample
  /** When the last packet was read (or when the phase was ended). */
  end: Sample
  peakRssAfterWarm: number
  peakLiveAfterWarm: number
  /** RSS when each further million packets had been read. */
  checkpoints: { packets: number; rss: number; rxLiveBytes: number }[]
  /** Bytes of the kept packets themselves, at the end. */
  keptBytes: number
  rxBatches: number
  rxStalls: number
  kept: number
  keptIntact: boolean
  outOfOrder: number
}

// ---------------------------------------------------------------------------------------------------------------
// One phase, in a child process
// ---------------------------------------------------------------------------------------------------------------

function templates(size: number): Buffer[] {
  const out: Buffer[] = []
  for (let i = 0; i < WRITE_BATCH; i++) {
    const p = packet.udp({
      src: '10.77.0.1',
      dst: '10.77.0.2',
      srcPort: 40000,
      dstPort: 9000,
      payload: Buffer.alloc(size - 28, 0xa5),
    })
    p.writeUInt16BE(0, 26) // no UDP checksum (valid for IPv4): the sequence number below changes per packet
    out.push(p)
  }
  return out
}

async function runPhase(iter: Iter, size: number, keep: Keep): Promise<PhaseResult> {
  const phase = `${iter}-${size}-${keep}`
  const [a, b] = Tun.createMemoryPair({ mtu: 1500, ring: RING })
  const cpu0 = process.cpuUsage()
  const ac = new AbortController()
  const t0 = performance.now()
  let received = 0
  let outOfOrder = 0
  let outcome: PhaseResult['outcome'] = 'done'
  let error: string | undefined

  // What the reader keeps.
  const window: (Buffer | undefined)[] = new Array(keep === 'window' ? WINDOW : 0)
  let windowPos = 0
  const all: Buffer[] = []
  let keptCount = 0
  const keepIt = (pkt: Buffer) => {
    keptCount++
    if (keep === 'window') {
      window[windowPos] = pkt
      windowPos = (windowPos + 1) % WINDOW
    } else if (keep === 'all') all.push(pkt)
    else {
      // A copy kept for long is best made outside Node's Buffer pool: a pooled one (Buffer.from) pins its whole
      // 8 KiB pool chunk, and with one kept packet per chunk that is 8 KiB per packet kept.
      const copy = Buffer.allocUnsafeSlow(pkt.length)
      pkt.copy(copy)
      all.push(copy)
    }
  }

  const sample = (): Sample => {
    const m = process.memoryUsage()
    const s = b.stats()
    return {
      t: (performance.now() - t0) / 1000,
      packets: received,
      pps: 0,
      rss: m.rss,
      heapUsed: m.heapUsed,
      external: m.external,
      arrayBuffers: m.arrayBuffers,
      rxLiveBytes: s.rxLiveBytes,
      rxStalls: s.rxStalls,
      rxQueuedBatches: s.rxQueuedBatches,
      kept: keptCount,
      load: loadavg()[0]!,
      cpu: ((u) => (u.user + u.system) / 1e6)(process.cpuUsage(cpu0)),
    }
  }

  let warm: Sample | undefined
  let peakRssAfterWarm = 0
  let peakLiveAfterWarm = 0
  const checkpoints: PhaseResult['checkpoints'] = []
  let nextCheckpoint = WARMUP
  /** Called for every packet read; returns nothing, records the warm-up sample and the checkpoints. */
  const onMilestone = () => {
    const s = sample()
    if (!warm) warm = s
    checkpoints.push({ packets: received, rss: s.rss, rxLiveBytes: s.rxLiveBytes })
    nextCheckpoint += 1_000_000
  }

  // The writer: PACKETS packets, 64 per call, sequence numbers in the first payload bytes.
  const batch = templates(size)
  const writer = (async () => {
    let seq = 0
    let lastYield = performance.now()
    while (seq < PACKETS && !ac.signal.aborted) {
      const n = Math.min(WRITE_BATCH, PACKETS - seq)
      const arr = n === WRITE_BATCH ? batch : batch.slice(0, n)
      for (let i = 0; i < n; i++) arr[i]!.writeUInt32BE(seq++, 28)
      await a.write(arr)
      // A write that finds room resolves at once; let timers and the reader's events run now and then.
      const now = performance.now()
      if (now - lastYield >= 8) {
        await immediate()
        lastYield = performance.now()
      }
    }
  })().catch((e) => {
    if (!ac.signal.aborted) throw e
  })

  // The per-second report and the watchdogs.
  let last = sample()
  let lastProgressAt = performance.now()
  const ticker = setInterval(() => {
    const s = sample()
    s.pps = (s.packets - last.packets) / (s.t - last.t)
    if (s.packets !== last.packets) lastProgressAt = performance.now()
    if (warm) {
      peakRssAfterWarm = Math.max(peakRssAfterWarm, s.rss)
      peakLiveAfterWarm = Math.max(peakLiveAfterWarm, s.rxLiveBytes)
    }
    last = s
    console.log(
      `[${phase}] ${s.t.toFixed(0).padStart(3)} s  ${(s.packets / 1e6).toFixed(2).padStart(5)} M pkts  ` +
        `${(s.pps / 1000).toFixed(0).padStart(5)} kpps  RSS ${mib(s.rss).padStart(6)} MiB  ` +
        `rxLiveBytes ${mib(s.rxLiveBytes).padStart(6)} MiB  heap ${mib(s.heapUsed)} MiB  ` +
        `external ${mib(s.external)} MiB  rxStalls ${s.rxStalls}  kept ${s.kept}`,
    )
    if ((performance.now() - lastProgressAt) / 1000 >= STALL_S) {
      outcome = 'stalled'
      ac.abort()
    } else if (s.t >= LIMIT_S) {
      outcome = 'limit'
      ac.abort()
    }
  }, 1000)

  // The reader.
  try {
    if (iter === 'packets') {
      for await (const pkt of b.packets({ signal: ac.signal })) {
        const seq = pkt.readUInt32BE(28)
        if (seq !== received) outOfOrder++
        if (seq % KEEP_EVERY === 0) keepIt(pkt)
        if (++received === nextCheckpoint) onMilestone()
        if (received === PACKETS) break
      }
    } else {
      outer: for await (const pkts of b.batches({ signal: ac.signal })) {
        for (const pkt of pkts) {
          const seq = pkt.readUInt32BE(28)
          if (seq !== received) outOfOrder++
          if (seq % KEEP_EVERY === 0) keepIt(pkt)
          if (++received === nextCheckpoint) onMilestone()
          if (received === PACKETS) break outer
        }
      }
    }
  } catch (e) {
    if (!ac.signal.aborted) {
      outcome = 'error'
      error = String(e)
    }
  }
  clearInterval(ticker)
  const end = sample()
  const seconds = end.t
  if (warm) {
    peakRssAfterWarm = Math.max(peakRssAfterWarm, end.rss)
    peakLiveAfterWarm = Math.max(peakLiveAfterWarm, end.rxLiveBytes)
  }
  const stats = b.stats()

  // Every kept packet must still hold its own sequence number (zero-copy views never change).
  let keptIntact = true
  let keptBytes = 0
  const held = keep === 'window' ? window.filter((p): p is Buffer => p !== undefined) : all
  for (const p of held) {
    keptBytes += p.length
    if (p.readUInt32BE(28) % KEEP_EVERY !== 0) keptIntact = false
  }
  if (keep !== 'window')
    for (let i = 0; i < all.length; i++) if (all[i]!.readUInt32BE(28) !== i * KEEP_EVERY) keptIntact = false

  ac.abort()
  await a.close()
  await b.close()
  await writer

  return {
    phase,
    iter,
    size,
    keep,
    outcome,
    error,
    packets: received,
    seconds,
    pps: received / seconds,
    warm,
    end,
    peakRssAfterWarm,
    peakLiveAfterWarm,
    checkpoints,
    keptBytes,
    rxBatches: stats.rxBatches,
    rxStalls: stats.rxStalls,
    kept: keptCount,
    keptIntact,
    outOfOrder,
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The driver: one child per phase, the summary, RESULTS-soak.md
// ---------------------------------------------------------------------------------------------------------------

const mib = (n: number) => (n / MiB).toFixed(1)
const signed = (n: number) => `${n >= 0 ? '+' : ''}${mib(n)}`
/** The checkpoint halfway between the warm-up and the end (rounded down to a million), for the second-half growth. */
const midOf = (r: PhaseResult) => {
  const want = WARMUP + Math.floor((PACKETS - WARMUP) / 2 / 1_000_000) * 1_000_000
  return r.checkpoints.find((c) => c.packets === want)
}

function verdict(r: PhaseResult): { pass: boolean; why: string } {
  if (r.outcome !== 'done') {
    const what =
      r.outcome === 'stalled'
        ? `stalled: no packet for ${STALL_S} s after ${r.packets.toLocaleString('en')}; rxLiveBytes ${mib(r.end.rxLiveBytes)} of the ${mib(BUDGET)} MiB budget` +
          (r.keep === 'all'
            ? `, ${r.kept} kept views pinning up to ${r.kept} batch buffers (${mib(r.kept * SLAB_BYTES)} MiB)`
            : '')
        : r.outcome === 'limit'
          ? `time limit ${LIMIT_S} s reached after ${r.packets.toLocaleString('en')} packets`
          : `error: ${r.error}`
    return { pass: false, why: what }
  }
  if (!r.warm) return { pass: false, why: 'no warm-up sample' }
  const growth = r.end.rss - r.warm.rss
  const ok = growth <= CRITERION_MIB * MiB
  return { pass: ok, why: `${growth >= 0 ? '+' : ''}${mib(growth)} MiB ${ok ? '≤' : '>'} ${CRITERION_MIB} MiB` }
}

/** What the rows say, from the numbers of this run. */
function reading(results: PhaseResult[]): string[] {
  const out = ['## Reading the numbers', '']
  const stalled = results.filter((r) => r.outcome === 'stalled' && r.keep === 'all')
  if (stalled.length > 0) {
    const perBatch = stalled.map((r) => (r.packets / Math.max(1, r.rxBatches)).toFixed(0))
    out.push(
      `- Keeping zero-copy views of every ${KEEP_EVERY}th packet stalls the reader for good: ` +
        stalled
          .map(
            (r) =>
              `${r.phase} after ${r.packets.toLocaleString('en')} packets (${r.kept} kept, rxLiveBytes ${mib(r.end.rxLiveBytes)} MiB, RSS ${mib(r.end.rss)} MiB)`,
          )
          .join('; ') +
        `. A view keeps its whole batch buffer (${(SLAB_BYTES / 1024).toFixed(0)} KiB, counted by capacity) alive; with ${perBatch.join(' / ')} packets per batch every kept packet lies in a batch of its own, so K kept packets pin K buffers, and the ${mib(BUDGET)} MiB budget holds ${Math.floor(BUDGET / SLAB_BYTES)} of them. Once they are spent the reader thread waits for a buffer to come back, which none does while the views are held: no packet is read again (the memory pair is lossless, so the writer waits too; a real device would drop in the kernel). Nothing grows past the budget: it is the budget that stops it.`,
      `- RSS is not rxLiveBytes: a batch buffer's pages count in RSS only as far as packets were written into them, so 64-byte packets (${(64 * 256) / 1024} KiB per full batch) pin far less RSS than 1400-byte ones, whose batches fill the buffer.`,
    )
  }
  const copies = results.filter((r) => r.keep === 'all-copy' && r.outcome === 'done')
  if (copies.length > 0)
    out.push(
      `- Copying the packets one keeps (\`Buffer.allocUnsafeSlow\` + \`copy\`, outside Node's Buffer pool: a pooled \`Buffer.from(pkt)\` would pin an 8 KiB pool chunk per kept packet) costs only their own bytes (${copies.map((r) => `${r.phase}: ${mib(r.keptBytes)} MiB`).join(', ')}) and lets every batch buffer go back to the pool.`,
    )
  const windows = results.filter((r) => r.keep === 'window' && r.outcome === 'done')
  if (windows.length > 0)
    out.push(
      `- A bounded window of ${WINDOW} zero-copy views pins at most ${WINDOW} batch buffers (${mib(WINDOW * SLAB_BYTES)} MiB of capacity) at a time; that is part of the warm-up figure already. RSS growth over the second half: ${windows
        .map((r) => {
          const m = midOf(r)
          return `${r.phase} ${m ? signed(r.end.rss - m.rss) : '–'} MiB`
        })
        .join(', ')}.`,
    )
  out.push(
    '- rxLiveBytes and RSS swing by tens of MiB from one second to the next (see the checkpoints): batch buffers that JavaScript no longer references return to the pool only when V8 collects their ArrayBuffers, so the end and warm-up samples each carry that noise; the second-half column separates a trend from it.',
    '',
  )
  return out
}

function runChild(name: string): Promise<PhaseResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), '--phase', name], {
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    // Hard bound on top of the phase's own limits.
    const kill = setTimeout(() => child.kill('SIGKILL'), (LIMIT_S + STALL_S + 30) * 1000)
    let buf = ''
    let result: PhaseResult | undefined
    child.stdout.setEncoding('utf8')
    child.stdout.on('data', (d: string) => {
      buf += d
      let i
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i)
        buf = buf.slice(i + 1)
        if (line.startsWith('@@result ')) result = JSON.parse(line.slice(9)) as PhaseResult
        else console.log(line)
      }
    })
    child.on('error', reject)
    child.on('close', (code, signal) => {
      clearTimeout(kill)
      if (result) resolve(result)
      else reject(new Error(`phase ${name} exited ${code ?? signal} without a result`))
    })
  })
}

/** The commit the code under test comes from, and whether the work tree differs from it. */
function codeVersion(): string {
  try {
    const git = (...args: string[]) => execFileSync('git', args, { cwd: join(HERE, '..'), encoding: 'utf8' }).trim()
    const dirty = git('status', '--porcelain', '--', 'crates', 'src', 'index.ts') !== ''
    return `commit ${git('rev-parse', '--short', 'HEAD')}${dirty ? ' plus uncommitted changes in crates/ or src/' : ''}`
  } catch {
    return 'unknown (no git)'
  }
}

/** A fingerprint of the code under test: the addon's mtime and the diff of crates/, src/ and index.ts. */
function codeFingerprint(): string {
  let addon = ''
  try {
    const dir = join(HERE, '..')
    addon = readdirSync(dir)
      .filter((f) => f.endsWith('.node'))
      .map((f) => `${f}@${statSync(join(dir, f)).mtimeMs}`)
      .join(',')
  } catch {}
  try {
    return (
      addon +
      execFileSync('git', ['diff', 'HEAD', '--', 'crates', 'src', 'index.ts'], {
        cwd: join(HERE, '..'),
        encoding: 'utf8',
      })
    )
  } catch {
    return addon
  }
}

function osRelease(): string {
  try {
    return readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim()
  } catch {
    return 'unknown'
  }
}

async function main(): Promise<void> {
  const only = process.env.SOAK_PHASES?.split(',').map((s) => s.trim())
  const phases: string[] = []
  for (const size of SIZES) for (const iter of ITERS) for (const keep of KEEPS) phases.push(`${iter}-${size}-${keep}`)
  const todo = only ? phases.filter((p) => only.includes(p)) : phases
  if (todo.length === 0) throw new Error(`SOAK_PHASES matches none of ${phases.join(', ')}`)

  const started = new Date()
  const load0 = loadavg()
  const code0 = codeFingerprint()
  const version0 = codeVersion()
  console.log(
    `soak: ${PACKETS.toLocaleString('en')} packets per phase, warm-up ${WARMUP.toLocaleString('en')}, ` +
      `keeping every ${KEEP_EVERY}th; phases: ${todo.join(', ')}`,
  )
  const results: PhaseResult[] = []
  for (const name of todo) {
    console.log(`\n--- ${name}`)
    const r = await runChild(name)
    const v = verdict(r)
    console.log(`[${name}] ${r.outcome}, ${(r.pps / 1000).toFixed(0)} kpps; ${v.pass ? 'PASS' : 'FAIL'} (${v.why})`)
    results.push(r)
    await sleep(200)
  }
  const seconds = ((Date.now() - started.getTime()) / 1000).toFixed(0)
  const codeChanged = codeFingerprint() !== code0
  if (codeChanged)
    console.log('\nWARNING: the addon or crates/, src/ changed during the run; the phases may have run different code')

  const row = (r: PhaseResult) => {
    const v = verdict(r)
    const w = r.warm
    return [
      r.iter + '()',
      `${r.size} B`,
      KEEP_LABEL[r.keep],
      r.outcome === 'done' ? `${(r.packets / 1e6).toFixed(1)} M` : `${r.outcome} at ${(r.packets / 1e6).toFixed(2)} M`,
      r.seconds.toFixed(1),
      (r.pps / 1000).toFixed(0),
      w ? mib(w.rss) : '–',
      mib(r.end.rss),
      w ? signed(r.end.rss - w.rss) : '–',
      ((m) =>
        m && r.outcome === 'done' ? `${signed(r.end.rss - m.rss)} (from ${(m.packets / 1e6).toFixed(0)} M)` : '–')(
        midOf(r),
      ),
      r.peakRssAfterWarm ? mib(r.peakRssAfterWarm) : '–',
      w ? mib(w.rxLiveBytes) : '–',
      mib(r.end.rxLiveBytes),
      r.peakLiveAfterWarm ? mib(r.peakLiveAfterWarm) : '–',
      mib(r.end.heapUsed),
      mib(r.end.external),
      String(r.rxStalls),
      (r.packets / Math.max(1, r.rxBatches)).toFixed(1),
      `${r.kept} (${mib(r.keptBytes)} MiB)${r.keptIntact ? '' : ' CHANGED!'}`,
      String(r.outOfOrder),
      `${((100 * r.end.cpu) / r.seconds).toFixed(0)} / ${r.end.load.toFixed(1)}`,
      `**${v.pass ? 'PASS' : 'FAIL'}** (${v.why})`,
    ]
  }
  const header = [
    'reader',
    'packet',
    'keeps',
    'read',
    's',
    'kpps',
    'RSS warm MiB',
    'RSS end MiB',
    'Δ RSS MiB',
    'Δ RSS 2nd half MiB',
    'RSS peak MiB',
    'live warm MiB',
    'live end MiB',
    'live peak MiB',
    'heap end MiB',
    'external end MiB',
    'rxStalls',
    'pkts/batch',
    'kept',
    'out of order',
    '% core / load',
    'criterion',
  ]
  const table = [
    `| ${header.join(' | ')} |`,
    `| ${header.map(() => '---').join(' | ')} |`,
    ...results.map((r) => `| ${row(r).join(' | ')} |`),
  ].join('\n')

  const marks: number[] = []
  for (let n = WARMUP; n <= PACKETS; n += 1_000_000) marks.push(n)
  const cpHeader = ['phase', ...marks.map((n) => `${(n / 1e6).toFixed(n % 1e6 ? 1 : 0)} M`)]
  const cpTable = [
    `| ${cpHeader.join(' | ')} |`,
    `| ${cpHeader.map(() => '---').join(' | ')} |`,
    ...results.map((r) => {
      const cells = marks.map((n) => {
        const cp = r.checkpoints.find((c) => c.packets === n)
        return cp ? `${mib(cp.rss)} / ${mib(cp.rxLiveBytes)}` : '–'
      })
      return `| ${r.phase} | ${cells.join(' | ')} |`
    }),
  ].join('\n')

  console.log(`\nSummary (criterion: RSS at the end within ${CRITERION_MIB} MiB of RSS after the warm-up)\n`)
  for (const r of results) {
    const v = verdict(r)
    console.log(
      `${v.pass ? 'PASS' : 'FAIL'}  ${r.phase.padEnd(24)} ${r.outcome.padEnd(7)} ${(r.packets / 1e6).toFixed(2)} M pkts ` +
        `${(r.pps / 1000).toFixed(0)} kpps  RSS ${r.warm ? mib(r.warm.rss) : '–'} -> ${mib(r.end.rss)} MiB  ` +
        `rxLiveBytes ${r.warm ? mib(r.warm.rxLiveBytes) : '–'} -> ${mib(r.end.rxLiveBytes)} MiB  rxStalls ${r.rxStalls}  (${v.why})`,
    )
  }

  const cmd =
    process.env.npm_lifecycle_event === 'bench'
      ? '`npm run bench` (its part benchmark/soak.ts; alone: `BENCH_ONLY=soak npm run bench`)'
      : '`node --import tsx benchmark/soak.ts`'
  const envSet = Object.entries(process.env)
    .filter(([k]) => k.startsWith('SOAK_'))
    .map(([k, v]) => `${k}=${v}`)
  const md = [
    '# Soak: memory over 10 million packets',
    '',
    `Produced by ${cmd}${envSet.length ? ` with ${envSet.join(' ')}` : ''} on ${started.toISOString()}, in ${seconds} s.`,
    '',
    `- Machine: ${cpus().length} CPUs (${cpus()[0]?.model.trim()}), Linux ${osRelease()}, Node ${process.version}; load average when it started: ${load0.map((x) => x.toFixed(2)).join(' ')}; code: ${version0}${codeChanged ? ' — **the addon or crates/, src/ changed during this run: the phases may have run different code; run it again**' : ''}`,
    `- Device: \`Tun.createMemoryPair({ mtu: 1500${process.env.SOAK_RING ? `, ring: ${JSON.stringify(RING)}` : ''} })\`, ${process.env.SOAK_RING ? 'these' : 'default'} ring options (memoryBudget ${mib(BUDGET)} MiB, batchPackets ${RING.batchPackets ?? 256}, slabBytes ${((SLAB_BYTES - 65535) / 1024).toFixed(0)} KiB + 64 KiB room for one frame = ${(SLAB_BYTES / 1024).toFixed(0)} KiB per batch buffer, copyBelow ${((RING.copyBelow ?? 16384) / 1024).toFixed(0)} KiB, ringBatches ${RING.ringBatches ?? 64}); writer and reader in the same process and JavaScript thread, each phase a process of its own`,
    `- Writer: ${PACKETS.toLocaleString('en')} IPv4/UDP packets of the given size (whole packet; valid IPv4 header checksum, UDP checksum 0), ${WRITE_BATCH} per \`await a.write(array)\`, a sequence number in the first 4 payload bytes`,
    `- Reader: \`b.packets()\` or \`b.batches()\`; checks every sequence number (*out of order* = packets not in the order sent, 0 = none lost or reordered) and keeps the packets whose sequence number is a multiple of ${KEEP_EVERY}: *last ${WINDOW} kept* = a ring of the ${WINDOW} most recent (zero-copy views; older ones dropped), *all kept* = all ${(PACKETS / KEEP_EVERY).toLocaleString('en')} of them as zero-copy views, *copied* = all of them as copies (\`Buffer.allocUnsafeSlow\` + \`copy\`); at the end it checks that every kept packet still holds its own sequence number`,
    `- Criterion: RSS when the last packet has been read within ${CRITERION_MIB} MiB of RSS right after the warm-up (the first ${WARMUP.toLocaleString('en')} packets). A phase with no progress for ${STALL_S} s (*stalled*) or running past ${LIMIT_S} s is ended and fails. No \`--expose-gc\`; V8 collects as it decides`,
    '',
    "Columns: *read* = packets read (all, or how far a phase got before it was ended); *s* and *kpps* = its length and packets per second; *RSS* = `process.memoryUsage().rss` right after the warm-up, when the last packet was read, their difference (the criterion), the growth over the second half (end against the checkpoint halfway: a leak keeps growing there, a warm-up transient does not), and the highest per-second sample after the warm-up; *live* = the reading queue's `stats().rxLiveBytes` (batch buffers alive: queued, held by JavaScript, or unreachable but not yet collected; counted by capacity, not by touched pages) at the same moments; *heap* / *external* = V8's `heapUsed` / `external` at the end; *rxStalls* = times the reader thread stopped because JavaScript was behind (ring full, or memory budget spent); *pkts/batch* = packets per batch handed to JavaScript; *kept* = packets held at the end and their own bytes (CHANGED! if one no longer held its sequence number); *% core / load* = CPU time of the phase's process (all threads) in % of one core, and the 1-minute load average at the end (the machine is shared: throughput varies with it).",
    '',
    table,
    '',
    '## RSS / rxLiveBytes (MiB) after each million packets',
    '',
    cpTable,
    '',
    '## Verdicts',
    '',
    ...results.map((r) => {
      const v = verdict(r)
      return `- ${r.phase}: **${v.pass ? 'PASS' : 'FAIL'}** (${v.why})`
    }),
    '',
    ...reading(results),
  ]
  writeFileSync(join(HERE, 'RESULTS-soak.md'), md.join('\n'))
  console.log(`\nwritten to ${join(HERE, 'RESULTS-soak.md')}`)
}

const phaseArg = process.argv.indexOf('--phase')
if (phaseArg >= 0) {
  const [iter, size, ...rest] = process.argv[phaseArg + 1]!.split('-')
  const r = await runPhase(iter as Iter, Number(size), rest.join('-') as Keep)
  console.log(`@@result ${JSON.stringify(r)}`)
  process.exit(0)
} else {
  await main()
}
