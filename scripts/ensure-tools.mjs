#!/usr/bin/env node
// Installs the Debian packages the tests, demo and benchmarks need when they are missing (a fresh machine has
// neither ping nor iperf3). Usage: node scripts/ensure-tools.mjs ping [iperf3 ...]. Runs apt-get update once.
import { spawnSync } from 'node:child_process'

const packages = {
  ping: 'iputils-ping',
  iperf3: 'iperf3',
  curl: 'curl',
  dig: 'bind9-dnsutils',
  setpriv: 'util-linux',
  cc: 'gcc',
  ip: 'iproute2',
  ss: 'iproute2',
  danted: 'dante-server', // Debian's name for Dante's sockd
  proxychains4: 'proxychains4',
}
const has = (tool) => spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status === 0
const missing = process.argv.slice(2).filter((t) => !has(t))
if (missing.length === 0) process.exit(0)
const isRoot = typeof process.getuid === 'function' && process.getuid() === 0
if (!isRoot) {
  console.error(
    `ensure-tools: missing ${missing.join(', ')} and not root: install ${missing.map((t) => packages[t] ?? t).join(' ')}`,
  )
  process.exit(1)
}
const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
const apt = (args) => spawnSync('apt-get', args, { stdio: ['ignore', 'inherit', 'inherit'], env }).status
if (apt(['update', '-q']) !== 0) console.error('ensure-tools: apt-get update failed; trying the install anyway')
const status = apt(['install', '-y', '-q', '--no-install-recommends', ...missing.map((t) => packages[t] ?? t)])
process.exit(status === 0 && missing.every(has) ? 0 : 1)
