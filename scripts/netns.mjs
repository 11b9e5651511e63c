#!/usr/bin/env node
// Runs a command inside a private network namespace made for it, with only `lo` (up) in it, so that devices,
// addresses, routes and traffic of tests, examples and benchmarks never touch the host's network.
//
//   node scripts/netns.mjs <command> [args...]
//
// As root it re-executes itself under `unshare --net`; otherwise it tries a user namespace
// (`unshare --net --map-root-user`). Inside, TUNKIT_NETNS=1 is set: device tests and examples refuse to create
// devices without it. If no namespace can be made, the command runs without one and TUNKIT_NETNS stays unset.
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const self = fileURLToPath(import.meta.url)
const [inner, ...rest] = process.argv.slice(2)

function run(cmd, args, env = process.env) {
  const r = spawnSync(cmd, args, { stdio: 'inherit', env })
  if (r.error) throw r.error
  return r.status ?? (r.signal ? 128 : 1)
}

if (inner === '--inside') {
  // We are the first process of the new namespace: bring loopback up, then hand over to the command.
  const up = spawnSync('ip', ['link', 'set', 'lo', 'up'], { stdio: 'inherit' })
  if (up.status !== 0) console.error('netns: could not bring lo up (is iproute2 installed?)')
  process.exit(run(rest[0], rest.slice(1), { ...process.env, TUNKIT_NETNS: '1' }))
}

const cmd = process.argv.slice(2)
if (cmd.length === 0) {
  console.error('usage: node scripts/netns.mjs <command> [args...]')
  process.exit(2)
}
if (process.env.TUNKIT_NETNS === '1') process.exit(run(cmd[0], cmd.slice(1)))

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0
const attempts = isRoot ? [['--net']] : [['--net', '--map-root-user']]
for (const flags of attempts) {
  const probe = spawnSync('unshare', [...flags, 'true'], { stdio: 'ignore' })
  if (probe.status === 0) {
    process.exit(run('unshare', [...flags, '--', process.execPath, self, '--inside', ...cmd]))
  }
}
console.error('netns: cannot create a network namespace here (need root or user namespaces); running without one')
process.exit(run(cmd[0], cmd.slice(1)))
