/* tunkit native loader: picks the .node file for this platform and fails with a message naming what it tried. */
'use strict'

const { existsSync, readFileSync } = require('node:fs')
const { join } = require('node:path')

function isMusl() {
  if (process.platform !== 'linux') return false
  try {
    return readFileSync('/usr/bin/ldd', 'utf8').includes('musl')
  } catch {}
  const report = typeof process.report?.getReport === 'function' ? process.report.getReport() : null
  if (report && report.header) return !report.header.glibcVersionRuntime
  return false
}

function platformTriple() {
  const { platform, arch } = process
  if (platform === 'linux') return `linux-${arch}-${isMusl() ? 'musl' : 'gnu'}`
  if (platform === 'win32') return `win32-${arch}-msvc`
  return `${platform}-${arch}`
}

const triple = platformTriple()
const candidates = []
if (process.env.TUNKIT_NATIVE_PATH) candidates.push(process.env.TUNKIT_NATIVE_PATH)
candidates.push(join(__dirname, `tunkit.${triple}.node`))
candidates.push(`tunkit-${triple}`)

const failures = []
let binding
for (const id of candidates) {
  if (id.endsWith('.node') && !existsSync(id)) {
    failures.push(`${id}: not found`)
    continue
  }
  try {
    binding = require(id)
    break
  } catch (e) {
    failures.push(`${id}: ${e && e.message ? e.message.split('\n')[0] : e}`)
  }
}

if (!binding) {
  const err = new Error(
    `tunkit: no native binding for ${triple} (node ${process.version}). Tried:\n  ${failures.join('\n  ')}\n` +
      `Install the platform package (npm i tunkit-${triple}) or build from source (npm run build).`,
  )
  err.code = 'ERR_TUN_NO_BINDING'
  throw err
}

module.exports = binding
module.exports.triple = triple
