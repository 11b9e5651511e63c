#!/usr/bin/env node
// Builds the test addon: the binding with tunkit-core's fault injection points (`--features test-hooks`, see
// crates/tunkit-core/src/testhooks.rs), in its own target directory so it never mixes with the release addon, and
// copies it to target/test-hooks/tunkit.test.node. Tests load it in child processes through TUNKIT_NATIVE_PATH
// (__test__/helpers/native.ts); nothing ships it. `npm run build:test-native` runs this; so does `npm test`.
import { spawnSync } from 'node:child_process'
import { copyFileSync, existsSync, renameSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const targetDir = join(root, 'target', 'test-hooks')
const args = ['build', '--offline', '--release', '-p', 'tunkit-napi', '--features', 'test-hooks']
console.log(`build-test-native: cargo ${args.join(' ')} --target-dir target/test-hooks`)
const status = spawnSync('cargo', [...args, '--target-dir', targetDir], { cwd: root, stdio: 'inherit' }).status
if (status !== 0) {
  console.error('build-test-native: cargo build failed')
  process.exit(1)
}

const lib = { win32: 'tunkit_napi.dll', darwin: 'libtunkit_napi.dylib' }[process.platform] ?? 'libtunkit_napi.so'
const built = join(targetDir, 'release', lib)
if (!existsSync(built)) {
  console.error(`build-test-native: cargo succeeded but ${built} is missing`)
  process.exit(1)
}
const out = join(targetDir, 'tunkit.test.node')
// Copy, then rename over the old file: a process that has the old one loaded keeps its mapping intact.
copyFileSync(built, `${out}.tmp`)
renameSync(`${out}.tmp`, out)
console.log(`build-test-native: ${out}`)
