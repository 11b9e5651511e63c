#!/usr/bin/env node
// The whole test suite: the core's Rust tests, then the ava suite inside a private network namespace, ending with
// one plain line `ava: N passed, N failed, N skipped`. `npm test` runs this; so does .ci/run.
//
// Environment: TUNKIT_REQUIRE_DEVICE=1 turns "cannot create a device" into failures instead of skips (CI sets it).
// TUNKIT_SKIP_CARGO=1 skips the Rust tests. Extra arguments go to ava (for example a file to run).
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const run = (cmd, args, opts = {}) => spawnSync(cmd, args, { cwd: root, stdio: 'inherit', ...opts }).status ?? 1
let failed = false

const triple = `${process.platform}-${process.arch}`
if (!existsSync(join(root, 'dist', 'index.js')) || !hasNative()) {
  console.log('run-tests: building first (npm run build)')
  if (run('npm', ['run', 'build']) !== 0) process.exit(1)
}

function hasNative() {
  return ['gnu', 'musl', 'msvc', ''].some((abi) =>
    existsSync(join(root, `tunkit.${triple}${abi ? '-' + abi : ''}.node`)),
  )
}

// Tools the device tests drive (ping). Installed outside the namespace, which has no route to the package mirror.
if (process.platform === 'linux' && run('node', ['scripts/ensure-tools.mjs', 'ping', 'setpriv']) !== 0) {
  console.error('run-tests: could not install ping; the ping tests will fail')
}

if (process.env.TUNKIT_SKIP_CARGO !== '1') {
  // The core's tests; the seeded packet fuzzers run time-bounded and print how many inputs they tried.
  console.log('run-tests: cargo test -p tunkit-core')
  const cargo = ['test', '--offline', '-p', 'tunkit-core', '--release']
  if (run('cargo', [...cargo, '--', '--skip', 'fuzz']) !== 0) failed = true
  if (run('cargo', [...cargo, 'fuzz', '--', '--show-output']) !== 0) failed = true
}

// Per run, so concurrent runs cannot mix their results; the last run's copy is left in .ava.tap.
const tap = join(tmpdir(), `tunkit-ava-${process.pid}.tap`)
const ava = join(root, 'node_modules', '.bin', 'ava')
const inner = `"${ava}" --tap ${process.argv
  .slice(2)
  .map((a) => `'${a}'`)
  .join(' ')} > "${tap}" 2>&1; rc=$?; cat "${tap}"; exit $rc`
const status = run('node', ['scripts/netns.mjs', 'sh', '-c', inner])
if (status !== 0) failed = true

const text = existsSync(tap) ? readFileSync(tap, 'utf8') : ''
const count = (re) => Number((text.match(re) ?? [])[1] ?? 0)
const passed = count(/^# pass (\d+)/m)
const fails = count(/^# fail (\d+)/m)
const skipped = count(/^# skip (\d+)/m)
const todo = count(/^# todo (\d+)/m)
if (passed + fails + skipped === 0) failed = true
writeFileSync(join(root, '.ava.tap'), text)
rmSync(tap, { force: true })
console.log(`ava: ${passed} passed, ${fails} failed, ${skipped + todo} skipped`)
process.exit(failed || fails > 0 ? 1 : 0)
