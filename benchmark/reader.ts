/**
 * tunkit reader child of the benchmark: the counterpart of `c/tunread.c`, run as its own process so that its CPU
 * time and memory are measured apart from the sender's and the benchmark driver's.
 *
 *   node --import tsx benchmark/reader.ts <packets|batches> <ifname> <txQueueLength> <max-seconds>
 *
 * Creates the device with tunkit (address 10.7.0.1/24, MTU 1500, the given kernel queue length, link up), starts
 * iterating, and prints `READY`. Counts packets and bytes until SIGTERM (or <max-seconds>), then prints one JSON
 * line with the counts, the CPU time of the whole process (all threads) since READY and its split by thread, its
 * peak RSS and `tun.stats()` taken before closing.
 */
import { Tun, type TunStats } from '../index.js'
import { countGc, threadSplit, threadTimes } from './probe.js'

const [mode, name, qlenArg, maxArg] = process.argv.slice(2)
if ((mode !== 'packets' && mode !== 'batches') || !name || !qlenArg || !maxArg) {
  console.error('usage: reader.ts <packets|batches> <ifname> <txQueueLength> <max-seconds>')
  process.exit(2)
}
const maxSeconds = Number(maxArg)

const tun = await Tun.create({ name, addresses: ['10.7.0.1/24'], mtu: 1500, txQueueLength: Number(qlenArg) })
const stop = new AbortController()
let packets = 0
let bytes = 0

/** The loop under test: count packets and bytes, nothing else, like the C loop. */
async function consume(signal: AbortSignal): Promise<void> {
  try {
    if (mode === 'batches') {
      for await (const batch of tun.batches({ signal })) {
        packets += batch.length
        for (const pkt of batch) bytes += pkt.length
      }
    } else {
      for await (const pkt of tun.packets({ signal })) {
        packets++
        bytes += pkt.length
      }
    }
  } catch (e) {
    if (!signal.aborted) throw e
  }
}

let stats: TunStats | undefined
const finish = () => {
  if (stop.signal.aborted) return
  // Counters first: once the device is closed the kernel's are gone.
  stats = tun.stats()
  stop.abort()
}
process.once('SIGTERM', finish)
process.once('SIGINT', finish)
const safety = setTimeout(finish, maxSeconds * 1000)
safety.unref()

const threads0 = threadTimes()
const gc = countGc()
const cpu0 = process.cpuUsage()
const t0 = performance.now()
const loop = consume(stop.signal)
process.stdout.write('READY\n')
await loop
const cpu = process.cpuUsage(cpu0)
const threads = threadSplit(threads0, threadTimes())
const seconds = (performance.now() - t0) / 1000
clearTimeout(safety)
process.stdout.write(
  JSON.stringify({
    packets,
    bytes,
    seconds,
    userUs: cpu.user,
    sysUs: cpu.system,
    maxRssKiB: process.resourceUsage().maxRSS,
    threads,
    gc,
    stats,
  }) + '\n',
)
await tun.close()
