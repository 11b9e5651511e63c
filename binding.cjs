/*
 * tunkit native loader: picks the addon for this platform (a local build next to this file, or the per-platform npm
 * package of the same version). When none loads, it exports `loadError` instead: an Error with code ERR_TUN_NO_BINDING,
 * a message saying what to do, and the original error as `cause`, which src/native.ts throws.
 *
 * Every require of a binary or a platform package is a plain string literal, one per target, so that bundlers can
 * follow them (esbuild with `--loader:.node=copy` copies the binary of each installed platform package next to the
 * bundle); the ones that are not installed sit in try blocks, where bundlers only warn.
 */
'use strict'

const { closeSync, openSync, readSync, readdirSync, readFileSync } = require('node:fs')

const { version: VERSION } = require('./package.json')
const LIBC_ABI = { gnu: 'glibc', musl: 'musl' }

/**
 * Whether this Node runs on musl, without `process.report` (which takes tens of milliseconds and more where the
 * network is slow to answer) and without a child process: the program interpreter named in Node's own ELF headers
 * (`/lib/ld-musl-<arch>.so.1` or `/lib64/ld-linux-*.so.2`), then `/usr/bin/ldd` (a script that names its libc), then
 * whether a musl loader is installed at all.
 */
function isMusl() {
  if (process.platform !== 'linux') return false
  try {
    const head = Buffer.alloc(4096)
    const fd = openSync(process.execPath, 'r')
    let n
    try {
      n = readSync(fd, head, 0, head.length, 0)
    } finally {
      closeSync(fd)
    }
    const text = head.toString('latin1', 0, n)
    if (text.includes('/ld-musl-')) return true
    if (text.includes('/ld-linux')) return false
  } catch {}
  try {
    const ldd = readFileSync('/usr/bin/ldd', 'utf8')
    if (ldd.includes('musl')) return true
    if (/GNU C Library|glibc|GLIBC/.test(ldd)) return false
  } catch {}
  try {
    return readdirSync('/lib').some((f) => f.startsWith('ld-musl-'))
  } catch {
    return false
  }
}

function platformTriple() {
  const { platform, arch } = process
  if (platform === 'linux') return `linux-${arch}-${isMusl() ? 'musl' : 'gnu'}`
  if (platform === 'win32') return `win32-${arch}-msvc`
  return `${platform}-${arch}`
}

/** The local build: `npm run build` puts it next to this file. */
function requireLocal(triple) {
  // The try makes bundlers treat a module they cannot resolve (a platform package that is not installed) as optional.
  try {
    switch (triple) {
      case 'linux-x64-gnu':
        return require('./tunkit.linux-x64-gnu.node')
      case 'linux-x64-musl':
        return require('./tunkit.linux-x64-musl.node')
      case 'linux-arm64-gnu':
        return require('./tunkit.linux-arm64-gnu.node')
      case 'linux-arm64-musl':
        return require('./tunkit.linux-arm64-musl.node')
      case 'win32-x64-msvc':
        return require('./tunkit.win32-x64-msvc.node')
      case 'win32-arm64-msvc':
        return require('./tunkit.win32-arm64-msvc.node')
      case 'darwin-x64':
        return require('./tunkit.darwin-x64.node')
      case 'darwin-arm64':
        return require('./tunkit.darwin-arm64.node')
    }
  } catch (e) {
    throw e
  }
  return undefined
}

/** The version of the installed platform package, read before its binary so that another version is never loaded. */
function requirePackageVersion(triple) {
  // The try makes bundlers treat a module they cannot resolve (a platform package that is not installed) as optional.
  try {
    switch (triple) {
      case 'linux-x64-gnu':
        return require('tunkit-linux-x64-gnu/package.json').version
      case 'linux-x64-musl':
        return require('tunkit-linux-x64-musl/package.json').version
      case 'linux-arm64-gnu':
        return require('tunkit-linux-arm64-gnu/package.json').version
      case 'linux-arm64-musl':
        return require('tunkit-linux-arm64-musl/package.json').version
      case 'win32-x64-msvc':
        return require('tunkit-win32-x64-msvc/package.json').version
      case 'win32-arm64-msvc':
        return require('tunkit-win32-arm64-msvc/package.json').version
      case 'darwin-x64':
        return require('tunkit-darwin-x64/package.json').version
      case 'darwin-arm64':
        return require('tunkit-darwin-arm64/package.json').version
    }
  } catch (e) {
    throw e
  }
  return undefined
}

/** The binary of the platform package. */
function requirePackage(triple) {
  // The try makes bundlers treat a module they cannot resolve (a platform package that is not installed) as optional.
  try {
    switch (triple) {
      case 'linux-x64-gnu':
        return require('tunkit-linux-x64-gnu')
      case 'linux-x64-musl':
        return require('tunkit-linux-x64-musl')
      case 'linux-arm64-gnu':
        return require('tunkit-linux-arm64-gnu')
      case 'linux-arm64-musl':
        return require('tunkit-linux-arm64-musl')
      case 'win32-x64-msvc':
        return require('tunkit-win32-x64-msvc')
      case 'win32-arm64-msvc':
        return require('tunkit-win32-arm64-msvc')
      case 'darwin-x64':
        return require('tunkit-darwin-x64')
      case 'darwin-arm64':
        return require('tunkit-darwin-arm64')
    }
  } catch (e) {
    throw e
  }
  return undefined
}

const TRIPLES = [
  'linux-x64-gnu',
  'linux-x64-musl',
  'linux-arm64-gnu',
  'linux-arm64-musl',
  'win32-x64-msvc',
  'win32-arm64-msvc',
  'darwin-x64',
  'darwin-arm64',
]

/** Whether `e` says that `id` itself (not something it needs) could not be found. */
function notFound(e, id) {
  return !!e && e.code === 'MODULE_NOT_FOUND' && typeof e.message === 'string' && e.message.includes(`'${id}`)
}

function firstLine(e) {
  return e && e.message ? String(e.message).split('\n')[0] : String(e)
}

function noBinding(message, cause) {
  const err = new Error(message, cause === undefined ? undefined : { cause })
  err.code = 'ERR_TUN_NO_BINDING'
  return err
}

function load(triple) {
  const where = `${process.platform}-${process.arch}${process.platform === 'linux' ? ` (${LIBC_ABI[triple.split('-')[2]]})` : ''}`
  const tried = []

  // An explicit path (tests, custom builds) wins; when it fails, that failure is the one to report.
  const explicit = process.env.TUNKIT_NATIVE_PATH
  if (explicit) {
    try {
      return require(explicit)
    } catch (e) {
      throw noBinding(`tunkit: TUNKIT_NATIVE_PATH=${explicit} could not be loaded: ${firstLine(e)}`, e)
    }
  }

  if (!TRIPLES.includes(triple)) {
    throw noBinding(
      `tunkit: there is no native binding for ${where} (node ${process.version}); tunkit is built for Linux ` +
        `(x64, arm64; glibc and musl), Windows (x64, arm64) and macOS (x64, arm64).`,
    )
  }

  try {
    return requireLocal(triple)
  } catch (e) {
    if (!notFound(e, `./tunkit.${triple}.node`)) {
      // A local build is there but does not load: say so rather than fall back to another binary.
      throw noBinding(`tunkit: the local build tunkit.${triple}.node could not be loaded: ${firstLine(e)}`, e)
    }
    tried.push(`tunkit.${triple}.node next to binding.cjs: not found`)
  }

  const pkg = `tunkit-${triple}`
  let installed
  try {
    installed = requirePackageVersion(triple)
  } catch (e) {
    if (!notFound(e, pkg)) throw noBinding(`tunkit: ${pkg}/package.json could not be read: ${firstLine(e)}`, e)
    tried.push(`${pkg}: not installed`)
    throw noBinding(
      `tunkit: no native binding for ${where} (node ${process.version}): the package ${pkg} is not installed. ` +
        `npm installs it with tunkit, as an optional dependency; it is left out by \`npm install --omit=optional\` ` +
        `(or --no-optional), and by a package-lock.json written on another platform without it ` +
        `(https://github.com/npm/cli/issues/4828). Remove node_modules and package-lock.json and run npm install ` +
        `again, or install it directly: npm install ${pkg}@${VERSION}. Tried:\n  ${tried.join('\n  ')}`,
      e,
    )
  }
  if (installed !== VERSION) {
    throw noBinding(
      `tunkit: ${pkg} ${installed} is installed, but tunkit ${VERSION} needs the same version of it ` +
        `(a binary of another version is not loaded). Install the matching one: npm install ${pkg}@${VERSION}.`,
    )
  }
  try {
    return requirePackage(triple)
  } catch (e) {
    throw noBinding(
      `tunkit: ${pkg} ${installed} is installed but its binary could not be loaded on ${where} ` +
        `(node ${process.version}): ${firstLine(e)}`,
      e,
    )
  }
}

const triple = platformTriple()
let binding
try {
  binding = load(triple)
} catch (e) {
  // Not thrown here: Node 20 reports an error thrown by a CommonJS module that an ES module imports as uncaught
  // even when the import() is caught. src/native.ts (an ES module) throws it.
  binding = { loadError: e }
}

module.exports = binding
module.exports.triple = triple
