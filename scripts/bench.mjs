#!/usr/bin/env node
// `npm run bench`: every benchmark, each in a private network namespace of its own, then benchmark/RESULTS.md
// assembled from their sections.
//
//   receive/transmit  benchmark/bench.ts       tunkit batches()/packets()/write() against C read()/write() loops
//   multi-queue       benchmark/multiqueue.ts  received pps with 1 and 2 queues
//   forwarding        benchmark/forward.ts     TCP through a forwarder between two namespaces, offload on and off
//   soak              benchmark/soak.ts        RSS over 10 M packets through packets()/batches() of a memory pair
//   stack             benchmark/stack.ts       TCP, connections/s, UDP and idle memory through Stack vs a veth
//   proxy             benchmark/proxy.ts       iperf3 through `tunkit proxy` vs proxychains4, both through dante
//
// BENCH_ONLY=receive,multiqueue,forward,soak,stack,proxy picks some. Tools (cc, iperf3, ping, curl) are installed when
// missing.
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const parts = [
  { name: 'receive', script: 'benchmark/bench.ts', out: 'benchmark/RESULTS-receive.md' },
  { name: 'multiqueue', script: 'benchmark/multiqueue.ts', out: 'benchmark/RESULTS-multiqueue.md' },
  { name: 'forward', script: 'benchmark/forward.ts', out: 'benchmark/RESULTS-forward.md' },
  { name: 'soak', script: 'benchmark/soak.ts', out: 'benchmark/RESULTS-soak.md' },
  { name: 'stack', script: 'benchmark/stack.ts', out: 'benchmark/RESULTS-stack.md' },
  { name: 'proxy', script: 'benchmark/proxy.ts', out: 'benchmark/RESULTS-proxy.md' },
]
const only = process.env.BENCH_ONLY?.split(',').map((s) => s.trim())
const run = (cmd, args) => spawnSync(cmd, args, { cwd: root, stdio: 'inherit' }).status ?? 1

if (run('node', ['scripts/ensure-tools.mjs', 'cc', 'iperf3', 'ping', 'curl', 'danted', 'proxychains4']) !== 0) {
  process.exit(1)
}
let failed = false
for (const p of parts) {
  if (only && !only.includes(p.name)) continue
  console.log(`\n=== ${p.name}: ${p.script}\n`)
  if (run('node', ['scripts/netns.mjs', process.execPath, '--import', 'tsx', p.script]) !== 0) failed = true
}

const sections = parts
  .filter((p) => existsSync(join(root, p.out)))
  .map((p) => readFileSync(join(root, p.out), 'utf8').trim())
writeFileSync(
  join(root, 'benchmark', 'RESULTS.md'),
  [
    '# tunkit benchmark results',
    '',
    'Produced by `npm run bench` (scripts/bench.mjs), which runs the six benchmarks below, each in a private',
    'network namespace of its own, and assembles this file from the sections they write',
    '(`benchmark/RESULTS-receive.md`, `RESULTS-multiqueue.md`, `RESULTS-forward.md`, `RESULTS-soak.md`,',
    '`RESULTS-stack.md`, `RESULTS-proxy.md`). Every throughput table compares tunkit side by side with a baseline in',
    'the same run (a C program built by the benchmark; for the stack, the same traffic straight over a veth pair;',
    'for the proxy, proxychains4 through the same SOCKS server); the soak checks memory over 10 million packets.',
    '',
    // Each section's headings go one level down under this file's title.
    ...sections.map((s) => s.replace(/^(#+) /gm, '#$1 ') + '\n'),
  ].join('\n'),
)
console.log('\nWrote benchmark/RESULTS.md')
process.exit(failed ? 1 : 0)
