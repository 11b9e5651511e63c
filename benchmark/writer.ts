/**
 * tunkit writer child of the benchmark: the counterpart of `c/tunwrite.c`.
 *
 *   node --import tsx benchmark/writer.ts <ifname> <seconds> <packet-hex> [max-writes]
 *
 * Creates the device (10.7.0.1/24, MTU 1500, up), prints `READY` and waits for a line on stdin. Then calls
 * `await tun.write(batch)` with a batch of 64 copies of the given packet for <seconds> (at most [max-writes] calls),
 * and prints one JSON line: `packets` is what tunkit had written to the device when the time was up
 * (`stats().txPackets`), `queued` what `write()` had accepted. It closes the device once stdin ends, so that the
 * caller can read the device's kernel counters first.
 */
import { createInterface } from 'node:readline'
import { setTimeout as sleep } from 'node:timers/promises'
import { Tun } from '../index.js'
import { countGc, threadSplit, threadTimes } from './probe.js'

const [name, secondsArg, hex, maxArg] = process.argv.slice(2)
if (!name || !secondsArg || !hex) {
  console.error('usage: writer.ts <ifname> <seconds> <packet-hex> [max-writes]')
  process.exit(2)
}
const seconds = Number(secondsArg)
const maxWrites = Number(maxArg ?? 1e8)
/** Packets per write() call. */
const BATCH = 64

const tun = await Tun.create({ name, addresses: ['10.7.0.1/24'], mtu: 1500 })
const pkt = Buffer.from(hex, 'hex')
const batch: Buffer[] = new Array<Buffer>(BATCH).fill(pkt)

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]()
process.stdout.write('READY\n')
await lines.next()

const threads0 = threadTimes()
const gc = countGc()
const cpu0 = process.cpuUsage()
const t0 = performance.now()
const deadline = t0 + seconds * 1000
let writes = 0
while (writes < maxWrites && performance.now() < deadline) {
  await tun.write(batch)
  writes++
}
const elapsed = (performance.now() - t0) / 1000
const stats = tun.stats()
const cpu = process.cpuUsage(cpu0)
const threads = threadSplit(threads0, threadTimes())
process.stdout.write(
  JSON.stringify({
    packets: stats.txPackets,
    queued: writes * BATCH,
    errors: stats.txErrors,
    seconds: elapsed,
    userUs: cpu.user,
    sysUs: cpu.system,
    maxRssKiB: process.resourceUsage().maxRSS,
    threads,
    gc,
    stats,
  }) + '\n',
)
// Hold the device until the caller has read its counters (stdin closes), for 30 s at most.
const stdinEnd = (async () => {
  while (!(await lines.next()).done) {
    // Nothing more is expected; wait for the end.
  }
})()
await Promise.race([stdinEnd, sleep(30_000)])
await tun.close()
process.exit(0)
