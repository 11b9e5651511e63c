// Smoke test of a cross-built addon on the built package (dist/index.js), for machines where ava cannot run (ava
// starts child processes, which under qemu-user need a binfmt_misc handler). scripts/qemu-arm64-test.sh runs it with
// the arm64 node and TUNKIT_NATIVE_PATH pointing at the arm64 .node when it cannot register one privately.
//
// Checks: 10 000 packets of varied sizes cross a memory pair
// intact and in order (single and batched writes), and a malformed packet is refused with a typed error.
import { Tun, TunError } from '../../dist/index.js'
import assert from 'node:assert/strict'

const COUNT = 10_000

function ipv4(len, tag) {
  const b = Buffer.alloc(len, tag & 0xff)
  b[0] = 0x45
  b.writeUInt32BE(tag >>> 0, 4)
  return b
}

// A node process can only load a .node of its own architecture, so getting this far under the arm64 node means
// the arm64 addon is in use.
console.log(
  `arm64-smoke: node ${process.version} ${process.arch}, addon ${process.env.TUNKIT_NATIVE_PATH ?? '(default)'}`,
)
const timer = setTimeout(() => {
  console.error('arm64-smoke: timed out')
  process.exit(1)
}, 300_000)

const [a, b] = Tun.createMemoryPair()
const sent = Array.from({ length: COUNT }, (_, i) => ipv4(20 + ((i * 37) % 1400), i))
const received = (async () => {
  const got = []
  for await (const p of b.packets()) {
    got.push(Buffer.from(p))
    if (got.length === COUNT) break
  }
  return got
})()
for (let i = 0; i < 2000; i++) await a.write(sent[i])
for (let i = 2000; i < COUNT; i += 100) await a.write(sent.slice(i, i + 100))
const got = await received
assert.equal(got.length, COUNT)
got.forEach((p, i) => assert.ok(p.equals(sent[i]), `packet ${i} differs`))

await assert.rejects(
  a.write(Buffer.from([0x70, 0, 0, 0])),
  (e) => e instanceof TunError && e.code === 'ERR_TUN_INVALID_PACKET',
)

await a.close()
await b.close()
clearTimeout(timer)
console.log(`arm64-smoke: ${COUNT} packets crossed intact on ${process.arch}; a bad packet was refused`)
