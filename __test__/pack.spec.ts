// What a user gets from npm, proven: the main package and this platform's package are packed with `npm pack`,
// installed into a scratch project offline (with an empty npm cache, so nothing can come from the registry), and
// used there by an ES module consumer and a CommonJS consumer (memory pair; and, inside the private namespace of
// `npm test`, a real device that reads one packet), type-checked as .mts and .cts consumers, and its `tunkit`
// command run through npx.
import test from 'ava'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { npxTunkit, packAndInstall, pkg, root, run, triple } from './helpers/pack.ts'

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
  const work = mkdtempSync(join(tmpdir(), 'tunkit-pack-'))
  t.teardown(() => rmSync(work, { recursive: true, force: true }))
  const { app, mainTgz, platformTgz } = packAndInstall(work)
  t.regex(run('tar', ['-tzf', platformTgz], work), new RegExp(`package/tunkit\\.${triple}\\.node`))
  t.notRegex(run('tar', ['-tzf', mainTgz], work), /\.node$/m, 'the main package carries no binary')
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
