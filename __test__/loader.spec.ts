// The native loader (binding.cjs) as npm lays it out: `node_modules/tunkit/binding.cjs` next to its package.json,
// and the platform package `node_modules/tunkit-<triple>`. Each case runs in a child process (the loader runs once
// per process) with TUNKIT_NATIVE_PATH unset, so that only the layout decides. A failure is exported as `loadError`
// (src/native.ts throws it), never thrown by the loader itself.
import test from 'ava'
import { spawnSync } from 'node:child_process'
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pkg, root, triple } from './helpers/pack.ts'

interface Outcome {
  ok: boolean
  triple?: string
  hasCreateDevice?: boolean
  code?: string
  message?: string
  causeCode?: string
  causeMessage?: string
  reportCalls?: number
}

const PROBE = `
let reportCalls = 0
if (process.report) {
  const real = process.report.getReport.bind(process.report)
  process.report.getReport = (...a) => (reportCalls++, real(...a))
}
let out
try {
  const b = require(process.argv[1])
  if (b.loadError) throw b.loadError
  out = { ok: true, triple: b.triple, hasCreateDevice: typeof b.createDevice === 'function' }
} catch (e) {
  out = { ok: false, code: e.code, message: e.message, causeCode: e.cause && e.cause.code, causeMessage: e.cause && e.cause.message }
}
out.reportCalls = reportCalls
console.log(JSON.stringify(out))
`

/** A scratch project with tunkit's loader installed, and optionally a platform package. */
function layout(t: { teardown(f: () => void): void }, platform?: { version: string; binary: 'real' | 'garbage' }) {
  const dir = mkdtempSync(join(tmpdir(), 'tunkit-loader-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const main = join(dir, 'node_modules', 'tunkit')
  mkdirSync(main, { recursive: true })
  copyFileSync(join(root, 'binding.cjs'), join(main, 'binding.cjs'))
  copyFileSync(join(root, 'package.json'), join(main, 'package.json'))
  if (platform) {
    const p = join(dir, 'node_modules', `tunkit-${triple}`)
    mkdirSync(p)
    const file = `tunkit.${triple}.node`
    writeFileSync(
      join(p, 'package.json'),
      JSON.stringify({ name: `tunkit-${triple}`, version: platform.version, main: file }),
    )
    if (platform.binary === 'real') copyFileSync(join(root, file), join(p, file))
    else writeFileSync(join(p, file), 'not a shared object')
  }
  return join(main, 'binding.cjs')
}

function load(loader: string, env: NodeJS.ProcessEnv = {}): Outcome {
  const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env }
  if (!env.TUNKIT_NATIVE_PATH) delete childEnv.TUNKIT_NATIVE_PATH
  const r = spawnSync(process.execPath, ['-e', PROBE, loader], { encoding: 'utf8', env: childEnv })
  if (r.status !== 0) throw new Error(`probe failed: ${r.stderr}`)
  return JSON.parse(r.stdout.trim()) as Outcome
}

test('the platform package of the same version is loaded, and libc is found without process.report', (t) => {
  const out = load(layout(t, { version: pkg.version, binary: 'real' }))
  t.true(out.ok, out.message)
  t.is(out.triple, triple)
  t.true(out.hasCreateDevice)
  t.is(out.reportCalls, 0, 'process.report.getReport is slow and must not be needed to tell musl from glibc')
  if (process.platform === 'linux') t.regex(triple, /-(gnu|musl)$/)
})

test('a missing platform package: ERR_TUN_NO_BINDING with the optional-dependencies hint and the cause', (t) => {
  const out = load(layout(t))
  t.false(out.ok)
  t.is(out.code, 'ERR_TUN_NO_BINDING')
  t.regex(out.message!, new RegExp(`the package tunkit-${triple} is not installed`))
  t.regex(out.message!, /optional dependency/)
  t.regex(out.message!, /--omit=optional/)
  t.regex(out.message!, new RegExp(`npm install tunkit-${triple}@${pkg.version.replace(/\./g, '\\.')}`))
  t.is(out.causeCode, 'MODULE_NOT_FOUND')
})

test('a platform package of another version is refused before its binary is loaded', (t) => {
  // The binary is garbage: had the loader tried it, the error would be a dlopen failure instead.
  const out = load(layout(t, { version: '0.0.1-other', binary: 'garbage' }))
  t.false(out.ok)
  t.is(out.code, 'ERR_TUN_NO_BINDING')
  t.regex(out.message!, new RegExp(`tunkit-${triple} 0\\.0\\.1-other is installed, but tunkit ${pkg.version}`))
  t.notRegex(out.message!, /could not be loaded/)
})

test('a binary that does not load: the loader error is the cause', (t) => {
  const out = load(layout(t, { version: pkg.version, binary: 'garbage' }))
  t.false(out.ok)
  t.is(out.code, 'ERR_TUN_NO_BINDING')
  t.regex(out.message!, /its binary could not be loaded/)
  t.truthy(out.causeMessage)
  t.true(out.message!.includes(out.causeMessage!.split('\n')[0]!))
})

test('TUNKIT_NATIVE_PATH that does not load: ERR_TUN_NO_BINDING naming it, with the cause', (t) => {
  const out = load(layout(t, { version: pkg.version, binary: 'real' }), { TUNKIT_NATIVE_PATH: '/nonexistent/x.node' })
  t.false(out.ok)
  t.is(out.code, 'ERR_TUN_NO_BINDING')
  t.regex(out.message!, /TUNKIT_NATIVE_PATH=\/nonexistent\/x\.node/)
  t.is(out.causeCode, 'MODULE_NOT_FOUND')
})
