// What a user gets from npm, proven: the main package and this platform's package are packed with `npm pack`,
// installed into a scratch project offline (with an empty npm cache, so nothing can come from the registry), and
// used there by an ES module consumer and a CommonJS consumer (memory pair; and, inside the private namespace of
// `npm test`, a real device that reads one packet), type-checked as .mts and .cts consumers, and its `tunkit`
// command run through npx. Then an app bundled with esbuild from that install, run where no node_modules is; and an
// install without the platform package, where `tunkit/packet` still works and `tunkit` says what is missing.
import test from 'ava'
import { build } from 'esbuild'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { npxTunkit, packAndInstall, pkg, root, run, triple, type Installed } from './helpers/pack.ts'

// One pack and install for the whole file.
const work = mkdtempSync(join(tmpdir(), 'tunkit-pack-'))
test.after.always(() => rmSync(work, { recursive: true, force: true }))
let installing: Promise<Installed> | undefined
const installed = () => (installing ??= Promise.resolve().then(() => packAndInstall(work)))

const inNamespace = process.env.TUNKIT_NETNS === '1' && process.getuid?.() === 0

const ESM_CONSUMER = `
import { Tun, TunError } from 'tunkit'
import { createSocket } from 'node:dgram'

const out = { esm: true }
const [a, b] = Tun.createMemoryPair()
const sent = Array.from({ length: 1000 }, (_, i) => {
  const p = Buffer.alloc(20 + (i % 200), i & 0xff)
  p[0] = 0x45
  p.writeUInt32BE(i, 4)
  return p
})
const reading = (async () => {
  const got = []
  for await (const p of b.packets()) if (got.push(Buffer.from(p)) === sent.length) break
  return got
})()
await a.write(sent)
const got = await reading
out.memoryPackets = got.filter((p, i) => p.equals(sent[i])).length
try {
  await a.write(Buffer.from([0x70, 0, 0, 0]))
} catch (e) {
  out.badPacket = e instanceof TunError ? e.code : String(e)
}
await a.close()
await b.close()

if (process.env.PACK_DEVICE === '1') {
  const tun = await Tun.create({ name: 'tkpack%d', addresses: ['10.66.0.1/24'] })
  const sock = createSocket('udp4')
  await new Promise((resolve) => sock.bind(0, '10.66.0.1', resolve))
  const payload = Buffer.from('tunkit pack test')
  const timer = setInterval(() => sock.send(payload, 4242, '10.66.0.2'), 50)
  try {
    for await (const p of tun.packets({ signal: AbortSignal.timeout(10_000) })) {
      const udpTo = p[0] >> 4 === 4 && p[9] === 17 && p.subarray(16, 20).equals(Buffer.from([10, 66, 0, 2]))
      if (udpTo && p.subarray(28).equals(payload)) {
        out.device = tun.name
        break
      }
    }
  } finally {
    clearInterval(timer)
    sock.close()
    await tun.close()
  }
}
console.log(JSON.stringify(out))
`

const CJS_CONSUMER = `
const { Tun } = require('tunkit')
const [a, b] = Tun.createMemoryPair()
;(async () => {
  const p = Buffer.alloc(64, 7)
  p[0] = 0x60
  await a.write(p)
  for await (const q of b.packets()) {
    console.log(JSON.stringify({ cjs: true, echoed: q.equals(p), typeofTun: typeof Tun }))
    break
  }
  await a.close()
  await b.close()
})().catch((e) => {
  console.error(e)
  process.exit(1)
})
`

// Type-checked only: the published declarations must serve both module systems.
const MTS_CONSUMER = `
import { Tun, TunError, type TunOptions } from 'tunkit'
const options: TunOptions = { name: 'x', addresses: ['10.0.0.1/24'], mtu: 1400 }
const pair: [Tun, Tun] = Tun.createMemoryPair({ mtu: 1500 })
const code: string | undefined = new TunError('ERR_TUN_CLOSED', 'closed').code
export { options, pair, code }
`
const CTS_CONSUMER = `
import tunkit = require('tunkit')
const pair: [tunkit.Tun, tunkit.Tun] = tunkit.Tun.createMemoryPair()
export = pair
`

test('the packed packages install offline and work from ESM and CommonJS, with types', async (t) => {
  const { app, mainTgz, platformTgz } = await installed()
  const platformFiles = run('tar', ['-tzf', platformTgz], work)
  const mainFiles = run('tar', ['-tzf', mainTgz], work)
  t.regex(platformFiles, new RegExp(`package/tunkit\\.${triple}\\.node`))
  t.notRegex(mainFiles, /\.node$/m, 'the main package carries no binary')
  t.regex(platformFiles, /^package\/LICENSE$/m, 'the platform package has the license')
  t.regex(mainFiles, /^package\/LICENSE$/m, 'the main package has the license')
  t.notRegex(mainFiles, /\.map$/m, 'no source maps without their sources')
  t.true(existsSync(join(app, 'node_modules', pkg.name, 'dist', 'index.js')))
  t.true(existsSync(join(app, 'node_modules', `${pkg.name}-${triple}`, `tunkit.${triple}.node`)))

  writeFileSync(join(app, 'esm.mjs'), ESM_CONSUMER)
  writeFileSync(join(app, 'cjs.cjs'), CJS_CONSUMER)
  // The consumers must load the installed platform package, not a binary of the repository.
  const env = { TUNKIT_NATIVE_PATH: '', PACK_DEVICE: inNamespace ? '1' : '0' }
  const esm = JSON.parse(run(process.execPath, ['esm.mjs'], app, env).trim().split('\n').pop()!)
  t.is(esm.memoryPackets, 1000)
  t.is(esm.badPacket, 'ERR_TUN_INVALID_PACKET')
  if (inNamespace) {
    t.regex(esm.device ?? '', /^tkpack\d+$/, 'a device was created and the packet read from it')
    t.log(`read a UDP packet from ${esm.device}, created by the installed package`)
  } else if (process.env.TUNKIT_REQUIRE_DEVICE === '1') {
    t.fail('TUNKIT_REQUIRE_DEVICE=1 but not running as root inside the private namespace of `npm test`')
  } else {
    t.log('device part skipped: not root inside the private namespace of `npm test`')
  }
  const cjs = JSON.parse(run(process.execPath, ['cjs.cjs'], app, env).trim())
  t.deepEqual(cjs, { cjs: true, echoed: true, typeofTun: 'function' })

  // The command, as a user runs it: `npx tunkit` resolves the installed package's bin (offline).
  const npx = (args: string[]) => run(npxTunkit(args)[0]!, npxTunkit(args).slice(1), app, env)
  t.regex(npx(['--help']), /Commands:\s+proxy/)
  t.regex(npx(['proxy', '--help']), /--socks5 \[USER:PASS@\]HOST:PORT/)

  writeFileSync(join(app, 'consumer.mts'), MTS_CONSUMER)
  writeFileSync(join(app, 'consumer.cts'), CTS_CONSUMER)
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc')
  const types = ['--typeRoots', join(root, 'node_modules', '@types'), '--types', 'node']
  const flags = ['--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022']
  run(process.execPath, [tsc, ...flags, ...types, 'consumer.mts', 'consumer.cts'], app)
})

const BUNDLED_APP = `
import { Tun, packet } from 'tunkit'
async function main() {
  const [a, b] = Tun.createMemoryPair()
  const sent = packet.udp({ src: '10.0.0.1', dst: '10.0.0.2', srcPort: 1000, dstPort: 2000, payload: Buffer.from('bundled') })
  await a.write(sent)
  let got
  for await (const p of b.packets()) {
    got = packet.summary(p)
    break
  }
  await a.close()
  await b.close()
  console.log(JSON.stringify({ got }))
}
main().catch((e) => {
  console.error(e)
  process.exit(1)
})
`

test('an app bundled with esbuild (CJS and ESM output) runs where no node_modules is', async (t) => {
  const { app } = await installed()
  writeFileSync(join(app, 'bundled-app.mjs'), BUNDLED_APP)
  for (const format of ['cjs', 'esm'] as const) {
    // Outside the app: the bundle must carry everything, the binary included (copied next to it).
    const out = join(work, `bundle-${format}`)
    const result = await build({
      absWorkingDir: app,
      entryPoints: ['bundled-app.mjs'],
      outfile: join(out, format === 'cjs' ? 'app.cjs' : 'app.mjs'),
      bundle: true,
      platform: 'node',
      format,
      loader: { '.node': 'copy' },
      // An ES module bundle has no `require` of its own; the loader's requires need one.
      banner:
        format === 'esm'
          ? { js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);" }
          : {},
      logLevel: 'silent',
    })
    t.deepEqual(result.errors, [], `${format}: esbuild errors`)
    t.deepEqual(
      result.warnings.map((w) => w.text),
      [],
      `${format}: esbuild follows every require of the loader`,
    )
    const files = readdirSync(out)
    t.true(
      files.some((f) => f.startsWith(`tunkit.${triple}`) && f.endsWith('.node')),
      `${format}: the binary is copied next to the bundle (${files.join(', ')})`,
    )
    const env = { TUNKIT_NATIVE_PATH: '', NODE_PATH: '' }
    const res = JSON.parse(
      run(
        process.execPath,
        [
          join(
            out,
            files.find((f) => /^app\.[cm]js$/.test(f))!,
          ),
        ],
        out,
        env,
      ).trim(),
    )
    t.regex(res.got, /^IPv4 UDP 10\.0\.0\.1 > 10\.0\.0\.2 1000 > 2000/, format)
  }
})

test('without the platform package: tunkit/packet works, tunkit fails with ERR_TUN_NO_BINDING and the hint', async (t) => {
  const { mainTgz } = await installed()
  const bare = join(work, 'bare')
  mkdirSync(bare)
  writeFileSync(join(bare, 'package.json'), JSON.stringify({ name: 'bare', version: '1.0.0', private: true }))
  const cache = join(work, 'npm-cache-bare')
  run('npm', ['install', '--offline', '--no-audit', '--no-fund', '--omit=optional', '--cache', cache, mainTgz], bare)
  t.false(existsSync(join(bare, 'node_modules', `${pkg.name}-${triple}`)))
  const probe = `
    const out = {}
    const packet = await import('tunkit/packet')
    out.packet = packet.summary(packet.udp({ src: '::ffff:10.0.0.1', dst: '::ffff:10.0.0.2', srcPort: 1, dstPort: 2, payload: new Uint8Array(1) }))
    try {
      await import('tunkit')
    } catch (e) {
      out.code = e.code
      out.message = e.message
      out.cause = e.cause?.code
    }
    console.log(JSON.stringify(out))
  `
  writeFileSync(join(bare, 'probe.mjs'), probe)
  const out = JSON.parse(run(process.execPath, ['probe.mjs'], bare, { TUNKIT_NATIVE_PATH: '' }).trim())
  t.is(out.packet, 'IPv6 UDP ::ffff:10.0.0.1 > ::ffff:10.0.0.2 1 > 2 (49 bytes)')
  t.is(out.code, 'ERR_TUN_NO_BINDING')
  t.regex(out.message, new RegExp(`tunkit-${triple} is not installed`))
  t.regex(out.message, /--omit=optional/)
  t.is(out.cause, 'MODULE_NOT_FOUND')
})
