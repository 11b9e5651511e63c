/**
 * What the benchmark's tunkit children measure of themselves: CPU time per thread (from /proc/self/task), to see
 * whether the time goes to the JavaScript thread, tunkit's reader/writer threads or V8's helpers, and garbage
 * collections.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { constants, PerformanceObserver, type NodeGCPerformanceDetail } from 'node:perf_hooks'

/** CPU time (user + system) in µs of each live thread, by thread id, with its name. */
export type ThreadTimes = Map<number, { name: string; us: number }>

/** Linux reports thread times in clock ticks of 1/100 s (USER_HZ). */
const TICK_US = 10_000

export function threadTimes(): ThreadTimes {
  const out: ThreadTimes = new Map()
  for (const tid of readdirSync('/proc/self/task')) {
    let stat: string
    try {
      stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8')
    } catch {
      continue // the thread ended meanwhile
    }
    // "tid (name) state ppid ..."; the name may hold spaces or parentheses, so split after the last ')'.
    const close = stat.lastIndexOf(')')
    const name = stat.slice(stat.indexOf('(') + 1, close)
    const f = stat.slice(close + 2).split(' ')
    // After the name: state is field 3 of the line, utime field 14, stime field 15.
    out.set(Number(tid), { name, us: (Number(f[11]) + Number(f[12])) * TICK_US })
  }
  return out
}

/** CPU time in µs between two snapshots, split into the main (JavaScript) thread, tunkit's threads and the rest. */
export interface ThreadSplit {
  jsUs: number
  rxUs: number
  txUs: number
  otherUs: number
}

export function threadSplit(before: ThreadTimes, after: ThreadTimes): ThreadSplit {
  const split: ThreadSplit = { jsUs: 0, rxUs: 0, txUs: 0, otherUs: 0 }
  for (const [tid, { name, us }] of after) {
    const d = us - (before.get(tid)?.us ?? 0)
    if (tid === process.pid) split.jsUs += d
    else if (name === 'tunkit-rx') split.rxUs += d
    else if (name === 'tunkit-tx') split.txUs += d
    else split.otherUs += d
  }
  return split
}

/** Garbage collections since {@link countGc} was called. */
export interface GcCounts {
  major: number
  minor: number
  /** Time spent in them on the JavaScript thread, in ms. */
  ms: number
}

/** Starts counting garbage collections; read the returned object at any time. */
export function countGc(): GcCounts {
  const counts: GcCounts = { major: 0, minor: 0, ms: 0 }
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      // Entries of type 'gc' carry their kind in `detail`, which the typings only declare on marks and measures.
      const kind = (e as unknown as { detail?: NodeGCPerformanceDetail }).detail?.kind
      if (kind === constants.NODE_PERFORMANCE_GC_MAJOR) counts.major++
      else counts.minor++
      counts.ms += e.duration
    }
  }).observe({ entryTypes: ['gc'] })
  return counts
}
