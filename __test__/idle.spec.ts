// The idle hand-over (Linux): while a device is idle its reader thread parks and the JavaScript thread's own event
// loop waits on the device, so an idle packet costs one thread wake-up instead of two; under load the reader thread
// takes over again, and back. Checked through the counters (rxInlineBatches: batches read on the JavaScript
// thread), a flood in between, and the CPU an idle device costs.
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { Tun, packet } from '../index.ts'
import { deviceTest, devName } from './helpers/device.ts'

const FLOOD = fileURLToPath(new URL('./helpers/flood.mjs', import.meta.url))

/** Runs a command to its end: exit code and stdout. */
function run(cmd: string, args: string[]): Promise<{ code: number | null; stdout: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] })
    let stdout = ''
    p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    const timer = setTimeout(() => p.kill('SIGKILL'), 60_000)
    p.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout })
    })
  })
}

const rtts = (out: string) => [...out.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]))

deviceTest(
  'idle hand-over: idle pings are read on the JS thread, a flood goes to the reader thread and back',
  async (t) => {
    await using tun = await Tun.create({ name: devName('i'), addresses: ['10.7.0.1/24'] })
    let floodPackets = 0
    const responder = (async () => {
      for await (const batch of tun.batches()) {
        const replies: Buffer[] = []
        for (const p of batch) {
          const r = packet.echoReply(p)
          if (r) replies.push(r)
          else floodPackets++
        }
        if (replies.length > 0) await tun.write(replies)
      }
    })()
    const ping = () => run('ping', ['-c', '20', '-i', '0.02', '-W', '2', '-n', '10.7.0.2'])

    const first = await ping()
    t.is(first.code, 0, first.stdout)
    t.is(rtts(first.stdout).length, 20)
    const s1 = tun.stats()
    t.log(`idle: ${JSON.stringify({ rxBatches: s1.rxBatches, rxInlineBatches: s1.rxInlineBatches })}`)
    // The first packet wakes the reader thread; once it has parked the rest are read on this thread.
    t.true(s1.rxInlineBatches >= 15, `only ${s1.rxInlineBatches} of ${s1.rxBatches} batches read on the JS thread`)

    // A flood: full batches hand reading back to the reader thread.
    const flood = await run(process.execPath, [FLOOD, '10.7.0.2', '9100', '120', '200000', '10'])
    t.is(flood.code, 0)
    const deadline = Date.now() + 10_000
    while (floodPackets < 1000 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
    const s2 = tun.stats()
    const threaded = s2.rxBatches - s1.rxBatches - (s2.rxInlineBatches - s1.rxInlineBatches)
    t.log(
      `flood: ${floodPackets} packets, ${JSON.stringify({ rxBatches: s2.rxBatches, rxInlineBatches: s2.rxInlineBatches })}`,
    )
    t.true(floodPackets >= 1000, `${floodPackets} flood packets read`)
    t.true(threaded > 0, 'no batch of the flood was read by the reader thread')

    // Idle again: back on the JS thread.
    await new Promise((r) => setTimeout(r, 200))
    const again = await ping()
    t.is(rtts(again.stdout).length, 20, again.stdout)
    const s3 = tun.stats()
    t.true(s3.rxInlineBatches - s2.rxInlineBatches >= 15, 'the idle device did not come back to the JS thread')

    // An idle device with a reader waiting costs (nearly) no CPU: nothing spins.
    const c0 = process.cpuUsage()
    await new Promise((r) => setTimeout(r, 1000))
    const c = process.cpuUsage(c0)
    const ms = (c.user + c.system) / 1000
    t.log(`CPU of the idle process over 1 s: ${ms.toFixed(1)} ms`)
    t.true(ms < 100, `${ms} ms of CPU in 1 s while idle`)

    await tun.close()
    await responder
  },
)
