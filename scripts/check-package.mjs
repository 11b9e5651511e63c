#!/usr/bin/env node
// What npm users get, checked before the tests (.ci/run calls it after the build; the release workflow too):
//
//   - publint --strict: package.json's entry points, exports and files agree with what `npm pack` takes;
//   - @arethetypeswrong/cli on the packed tarball: every entry resolves to its declarations under node10, node16
//     (ESM and CJS) and bundler resolution. One rule is ignored, on purpose: tunkit is an ES module package, and
//     `require('tunkit')` works through Node's require(esm) (Node >= 20.19, the README says so) which attw still
//     reports as "ESM (dynamic import only)";
//   - the published declarations: they compile on their own (no skipLibCheck: a declaration that stripInternal
//     removed but another still names fails here), and they expose none of the internals (the native binding, the
//     address module);
//   - the publish path as a dry run (scripts/publish-dry-run.mjs, shared with the release workflow).
//
// The esbuild bundle test is an ava test (__test__/pack.spec.ts). Needs `npm run build` first.
// Usage: node scripts/check-package.mjs [--require-binaries | --release]
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const bin = (name) => join(root, 'node_modules', '.bin', name)
let failed = 0

function step(title, cmd, args) {
  console.log(`\n== ${title}: ${relative(root, cmd) || cmd} ${args.join(' ')}`)
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env: { ...process.env, FORCE_COLOR: '0' } })
  if (r.status !== 0) {
    console.error(`check-package: ${title} failed (${r.status ?? r.signal})`)
    failed++
  }
}

function declarations(dir) {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.d.ts'))
    .map((e) => join(e.parentPath ?? e.path, e.name))
}

step('publint', bin('publint'), ['--strict'])
// attw's own --pack runs a plain `npm pack`, whose `prepare` would rebuild everything: pack without scripts instead.
{
  const dest = mkdtempSync(join(tmpdir(), 'tunkit-attw-'))
  const r = spawnSync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dest], {
    cwd: root,
    encoding: 'utf8',
  })
  if (r.status !== 0) {
    console.error(`check-package: npm pack failed:\n${r.stderr}`)
    failed++
  } else {
    const tgz = join(dest, JSON.parse(r.stdout)[0].filename)
    step('are the types wrong', bin('attw'), [tgz, '--ignore-rules', 'cjs-resolves-to-esm'])
  }
  rmSync(dest, { recursive: true, force: true })
}

const dts = [...declarations(join(root, 'dist')), join(root, 'binding.d.cts')]
step('declarations compile on their own', bin('tsc'), [
  '--noEmit',
  '--strict',
  '--skipLibCheck',
  'false',
  '--module',
  'nodenext',
  '--moduleResolution',
  'nodenext',
  '--target',
  'es2022',
  '--lib',
  'es2023,esnext.disposable',
  '--types',
  'node',
  ...dts,
])

console.log('\n== no internals in the declarations')
const internals = [
  [/\bNativeBinding\b/, 'the native binding'],
  [/\bdeclare const binding\b/, 'the loaded addon'],
  [/\bNativeStackOptions\b|\bNativeDeviceOptions\b/, 'the addon options'],
  [/\bparseAddress\b|\bformatAddress\b|\bIpValue\b/, 'the address module (src/ip.ts)'],
  [/\bclass (LinkEventIterator|Channel|Relayer)\b/, 'a class of the implementation'],
]
for (const file of dts.filter((f) => !f.endsWith('binding.d.cts'))) {
  const text = readFileSync(file, 'utf8')
  for (const [re, what] of internals) {
    if (re.test(text)) {
      console.error(`check-package: ${relative(root, file)} exposes ${what} (mark it @internal)`)
      failed++
    }
  }
}
if (!failed) console.log(`${dts.length} declaration files, none exposes an internal`)

console.log("\n== every error code the code can throw is in the README's table and in TunErrorCode")
{
  const sources = [join(root, 'index.ts'), join(root, 'binding.cjs')]
  const walk = (dir, ext) =>
    readdirSync(dir, { withFileTypes: true, recursive: true })
      .filter((e) => e.isFile() && ext.test(e.name))
      .map((e) => join(e.parentPath ?? e.path, e.name))
  sources.push(...walk(join(root, 'src'), /\.ts$/))
  for (const c of readdirSync(join(root, 'crates'))) sources.push(...walk(join(root, 'crates', c, 'src'), /\.rs$/))
  const thrown = new Set(sources.flatMap((f) => readFileSync(f, 'utf8').match(/ERR_TUN_[A-Z_]*[A-Z]/g) ?? []))
  const readme = readFileSync(join(root, 'README.md'), 'utf8')
  const table = new Set([...readme.matchAll(/^\| `(ERR_TUN_[A-Z_]+)` \|/gm)].map((m) => m[1]))
  const errorsTs = readFileSync(join(root, 'src', 'errors.ts'), 'utf8')
  const union = new Set([...errorsTs.matchAll(/^ {2}\| '(ERR_TUN_[A-Z_]+)'$/gm)].map((m) => m[1]))
  for (const code of [...thrown].sort()) {
    if (!table.has(code)) (failed++, console.error(`check-package: ${code} is thrown but not in the README's table`))
    if (!union.has(code)) (failed++, console.error(`check-package: ${code} is thrown but not in TunErrorCode`))
  }
  if (table.size === 0) (failed++, console.error("check-package: the README's error table was not found"))
  console.log(`${thrown.size} codes, all in the table (${table.size} rows) and in TunErrorCode`)
}

// Flags (--require-binaries, --release) go on to the dry run.
step('publish dry run', process.execPath, [join(root, 'scripts', 'publish-dry-run.mjs'), ...process.argv.slice(2)])

if (failed) {
  console.error(`\ncheck-package: ${failed} check(s) failed`)
  process.exit(1)
}
console.log('\ncheck-package: publint, attw, declarations and the publish dry run are clean')
