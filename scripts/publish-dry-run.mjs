#!/usr/bin/env node
// The release's publish path as a dry run, offline, in a staging copy (the work tree is never changed):
//
//   1. `napi create-npm-dirs`, as the release workflow runs it: the committed npm/<triple> manifests must be what it
//      generates from package.json (so what CI checks is what gets published), and each directory has the LICENSE.
//   2. the binaries: npm/<triple>/tunkit.<triple>.node where `napi artifacts` put them (the release), else the local
//      build tunkit.<triple>.node (here, this platform's), else an empty placeholder marked as such in the output;
//      `--require-binaries` (CI with every target's artifact) refuses placeholders.
//   With `--release` (the release workflow, after it ran create-npm-dirs, added wintun and ran `napi artifacts`), the
//   npm/ directories are taken as they are: no regeneration, every binary required, wintun.dll in the Windows ones.
//   3. `napi pre-publish -t npm --no-gh-release --dry-run`: napi's own validation of the eight packages (names, `main`,
//      `files`, what `npm pack` takes). With --dry-run it publishes nothing, writes nothing and makes no GitHub or
//      registry request (the GitHub release is off anyway).
//   4. what a real pre-publish then does to the root manifest, done here explicitly: each platform package at the
//      root's version, and `optionalDependencies` pinning every one of them to exactly that version. The committed
//      package.json must already say so (a release must not publish a manifest CI never saw).
//   5. `npm publish --dry-run --offline` of every package, the eight platform ones and tunkit, and checks of what
//      each tarball holds: LICENSE and README everywhere, the binary in each platform package, and in tunkit the
//      JavaScript, the declarations and the loader but no binary, no source map and no TypeScript source.
//
// Usage: node scripts/publish-dry-run.mjs [--require-binaries | --release]. Needs `npm run build:ts` first (dist/).
import { spawnSync } from 'node:child_process'
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const release = process.argv.includes('--release')
const requireBinaries = release || process.argv.includes('--require-binaries')
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
const napiBin = join(root, 'node_modules', '@napi-rs', 'cli', 'dist', 'cli.js')

/** The napi target triple (Rust) → the package suffix (`platformArchABI`). */
function platformOf(target) {
  const table = {
    'x86_64-unknown-linux-gnu': 'linux-x64-gnu',
    'x86_64-unknown-linux-musl': 'linux-x64-musl',
    'aarch64-unknown-linux-gnu': 'linux-arm64-gnu',
    'aarch64-unknown-linux-musl': 'linux-arm64-musl',
    'x86_64-pc-windows-msvc': 'win32-x64-msvc',
    'aarch64-pc-windows-msvc': 'win32-arm64-msvc',
    'x86_64-apple-darwin': 'darwin-x64',
    'aarch64-apple-darwin': 'darwin-arm64',
  }
  const p = table[target]
  if (!p) fail(`publish-dry-run: no package name known for the napi target ${target}`)
  return p
}

function fail(message) {
  console.error(`publish-dry-run: ${message}`)
  process.exit(1)
}

function run(cmd, args, cwd) {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', env: { ...process.env, npm_config_loglevel: 'warn' } })
  if (r.status !== 0) {
    fail(`${cmd} ${args.join(' ')} (in ${cwd}) failed with ${r.status ?? r.signal}:\n${r.stdout}\n${r.stderr}`)
  }
  // npm fixes some manifest mistakes silently at publish time; the published manifest must be the committed one.
  // (The dry run's "requires you to be logged in" notice is expected: nobody is, here or before the OIDC exchange.)
  const warnings = r.stderr.split('\n').filter((l) => /^npm warn publish/i.test(l) && !/logged in/.test(l))
  if (warnings.length) fail(`${cmd} ${args.join(' ')} warned:\n${warnings.join('\n')}`)
  return r.stdout
}

const platforms = pkg.napi.targets.map(platformOf)
if (!existsSync(join(root, 'dist', 'index.js'))) fail('dist/ is missing: run npm run build:ts first')

const stage = mkdtempSync(join(tmpdir(), 'tunkit-publish-'))
process.on('exit', () => rmSync(stage, { recursive: true, force: true }))
for (const f of ['package.json', 'README.md', 'LICENSE', 'binding.cjs', 'binding.d.cts', 'dist', 'npm']) {
  cpSync(join(root, f), join(stage, f), { recursive: true })
}

// 1. The platform directories, as the release makes them.
if (!release) run(process.execPath, [napiBin, 'create-npm-dirs'], stage)
const license = readFileSync(join(root, 'LICENSE'), 'utf8')
for (const p of platforms) {
  const committed = readFileSync(join(root, 'npm', p, 'package.json'), 'utf8')
  const generated = readFileSync(join(stage, 'npm', p, 'package.json'), 'utf8')
  if (!release && JSON.stringify(JSON.parse(committed)) !== JSON.stringify(JSON.parse(generated))) {
    fail(`npm/${p}/package.json is not what napi create-npm-dirs makes of package.json: run npx napi create-npm-dirs`)
  }
  const lic = join(root, 'npm', p, 'LICENSE')
  if (!existsSync(lic) || readFileSync(lic, 'utf8') !== license) fail(`npm/${p}/LICENSE is missing or not ./LICENSE`)
}

// 2. The binaries.
const placeholders = []
for (const p of platforms) {
  const file = `tunkit.${p}.node`
  const dest = join(stage, 'npm', p, file)
  if (existsSync(dest)) continue // put there by `napi artifacts` (copied with npm/)
  if (existsSync(join(root, file))) {
    cpSync(join(root, file), dest)
  } else if (requireBinaries) {
    fail(`npm/${p}/${file} is missing (run napi artifacts first)`)
  } else {
    writeFileSync(dest, '')
    placeholders.push(p)
  }
}

// 3. napi's validation of the release packages.
run(process.execPath, [napiBin, 'pre-publish', '-t', 'npm', '--no-gh-release', '--dry-run'], stage)

// 4. What a real pre-publish writes: versions and the pinned optional dependencies.
const stagedPkg = JSON.parse(readFileSync(join(stage, 'package.json'), 'utf8'))
const optional = {}
for (const p of platforms) {
  const file = join(stage, 'npm', p, 'package.json')
  const m = JSON.parse(readFileSync(file, 'utf8'))
  m.version = pkg.version
  writeFileSync(file, JSON.stringify(m, null, 2) + '\n')
  optional[`${pkg.name}-${p}`] = pkg.version
}
const sorted = (o) => JSON.stringify(Object.fromEntries(Object.entries(o ?? {}).sort(([a], [b]) => a.localeCompare(b))))
if (sorted(pkg.optionalDependencies) !== sorted(optional)) {
  fail(`package.json's optionalDependencies must pin every platform package at ${pkg.version}: ${sorted(optional)}`)
}
stagedPkg.optionalDependencies = optional
writeFileSync(join(stage, 'package.json'), JSON.stringify(stagedPkg, null, 2) + '\n')

// 5. npm publish --dry-run of every package, and what each tarball holds.
function publishDryRun(dir) {
  const out = run('npm', ['publish', '--dry-run', '--offline', '--json', '--ignore-scripts', '--access', 'public'], dir)
  const info = JSON.parse(out.slice(out.indexOf('{')))
  const entry = info.files ? info : Object.values(info)[0]
  return { id: entry.id, size: entry.size, files: entry.files.map((f) => f.path) }
}
function expect(id, files, cond, what) {
  if (!cond) fail(`${id}: ${what}; the tarball holds:\n  ${files.join('\n  ')}`)
}

for (const p of platforms) {
  const { id, files, size } = publishDryRun(join(stage, 'npm', p))
  const wintun = release && p.startsWith('win32-') ? ['wintun.dll', 'wintun-LICENSE.txt'] : []
  for (const f of ['LICENSE', 'README.md', 'package.json', `tunkit.${p}.node`, ...wintun]) {
    expect(id, files, files.includes(f), `${f} is missing`)
  }
  console.log(
    `npm publish --dry-run ${id}: ${files.length} files, ${size} bytes${placeholders.includes(p) ? ' (placeholder binary: not built here)' : ''}`,
  )
}
{
  const { id, files, size } = publishDryRun(stage)
  for (const f of [
    'LICENSE',
    'README.md',
    'package.json',
    'binding.cjs',
    'binding.d.cts',
    'dist/index.js',
    'dist/index.d.ts',
  ]) {
    expect(id, files, files.includes(f), `${f} is missing`)
  }
  for (const entry of [
    pkg.bin.tunkit,
    ...Object.values(pkg.exports).flatMap((e) => (typeof e === 'string' ? [e] : Object.values(e))),
  ]) {
    expect(id, files, files.includes(entry.replace(/^\.\//, '')), `${entry} (bin or exports) is missing`)
  }
  expect(id, files, !files.some((f) => f.endsWith('.node')), 'the main package must carry no binary')
  expect(id, files, !files.some((f) => f.endsWith('.map')), 'source maps would ship without their sources')
  expect(id, files, !files.some((f) => /\.[cm]?ts$/.test(f) && !/\.d\.[cm]?ts$/.test(f)), 'TypeScript sources ship')
  console.log(`npm publish --dry-run ${id}: ${files.length} files, ${size} bytes`)
}
console.log(
  `publish dry run: ${platforms.length + 1} packages ok` +
    (placeholders.length ? ` (${placeholders.length} with placeholder binaries: ${placeholders.join(', ')})` : ''),
)
