/**
 * A `worker_threads` worker for the multi-queue tests (start it with `tsWorker`): it attaches the queue whose
 * token it gets in `workerData.token` and counts, per UDP source port, the datagrams to `workerData.port` that
 * arrive on that queue.
 *
 * Messages to the main thread: `{ type: 'ready', name }` once attached (or `{ type: 'error', code, message }`),
 * `{ type: 'progress', total }` after each counted datagram, `{ type: 'written' }` /
 * `{ type: 'write-error', code, message }` after a `write` request, and finally
 * `{ type: 'counts', flows: [srcPort, count][], total }` when the queue has ended.
 * Messages from it: `{ type: 'write', packets: Uint8Array[] }`, `{ type: 'stop' }` (closes the queue).
 */
import { parentPort, workerData } from 'node:worker_threads'
import { TunQueue, TunError, packet } from '../../index.ts'

const { token, port } = workerData as { token: number; port: number }
const out = parentPort!

let q: TunQueue
try {
  q = TunQueue.attach(token)
} catch (e) {
  const err = e as TunError
  out.postMessage({ type: 'error', code: err.code, message: err.message })
  process.exit(0)
}

out.on('message', (m: { type: string; packets?: Uint8Array[] }) => {
  if (m.type === 'stop') void q.close()
  else if (m.type === 'write') {
    q.write(m.packets!.map((p) => Buffer.from(p))).then(
      () => out.postMessage({ type: 'written' }),
      (e: TunError) => out.postMessage({ type: 'write-error', code: e.code, message: e.message }),
    )
  }
})
out.postMessage({ type: 'ready', name: q.name })

const flows = new Map<number, number>()
let total = 0
for await (const p of q.packets()) {
  const info = packet.parse(p)
  if (info?.protocol !== packet.PROTO_UDP || info.dstPort !== port) continue
  flows.set(info.srcPort!, (flows.get(info.srcPort!) ?? 0) + 1)
  out.postMessage({ type: 'progress', total: ++total })
}
out.postMessage({ type: 'counts', flows: [...flows], total })
