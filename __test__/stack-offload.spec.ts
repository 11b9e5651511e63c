// The forwarding stack on a device with offload (IFF_VNET_HDR): TCP super-packets are rewritten whole by the
// stack and written back as they came (never split into segments and coalesced again), UDP GSO super-packets
// become one message per datagram or one in all (`udpGso`). Real clients (curl, a UDP_SEGMENT sender) and servers
// on loopback, inside the private network namespace the test runner made (conventions as in stack.spec.ts).
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import net from 'node:net'
import { Stack, Tun, TunError, type UdpMessage, type UdpSession } from '../index.ts'
import { devName, deviceTestIf } from './helpers/device.ts'
import { curl, deviceTest, eventually, forwardTo, httpServer, plan, serve, sha256, stats } from './helpers/stack.ts'
import { uso, usoDatagrams, usoSend } from './helpers/uso.ts'

type Backend = Record<string, number>

deviceTest(
  'offload: curl 200 MB through the stack, IPv4 and IPv6, pipeline() and the native relay, SHA-256 equal; every TCP super-packet crosses whole',
  async (t) => {
    const body = randomBytes(200_000_000)
    const want = sha256(body)
    const web = await httpServer(body)
    t.teardown(web.close)
    const p = plan(201)
    await using tun = await Tun.create({
      name: devName('so'),
      addresses: p.addresses,
      routes: p.routes,
      offload: true,
    })
    const before = tun.stats().backend as Backend
    t.is(before.offloadTcp, 1, 'the device has no TCP offload')
    await using stack = await Stack.create(tun)
    const relayed: { received: number; native: boolean }[] = []
    const pipe = forwardTo(web.port)
    const h = serve(stack, async (conn) => {
      if (conn.destination.port === 8080) return pipe(conn)
      const up = net.connect({ port: web.port, host: '127.0.0.1', allowHalfOpen: true })
      up.on('error', () => {})
      const r = await stack.relay(conn, up)
      relayed.push({ received: r.received, native: r.native })
    })
    for (const url of [
      `http://${p.dst4(7)}:8080/`,
      `http://[${p.dst6(7)}]:8080/`,
      `http://${p.dst4(8)}:9090/`,
      `http://[${p.dst6(8)}]:9090/`,
    ]) {
      const r = await curl(url)
      t.is(r.code, 0, `curl ${url}: ${r.stderr}`)
      t.is(r.size, body.length, `curl ${url} got ${r.size} bytes`)
      t.is(r.sha, want, `curl ${url}: SHA-256 differs`)
    }
    t.deepEqual(h.errors, [])
    t.true(await eventually(() => relayed.length === 2, 5000), 'the relays did not end')
    for (const r of relayed) {
      t.true(r.native, 'the relay did not run natively')
      t.true(r.received > body.length, `a relay moved ${r.received} bytes down`)
    }
    const b = tun.stats().backend as Backend
    const s = tun.stats()
    const st = stats(stack)
    t.log(`backend ${JSON.stringify(b)}; intercepted ${s.intercepted}, written back ${s.interceptWrites}`)
    // 800 MB at most 64 KiB per super-packet: well over 12 000 of them if the kernel used TSO at all.
    const read = b.offloadSuperPacketsRead! - before.offloadSuperPacketsRead!
    t.true(read > 2000, `only ${read} super-packets read for 800 MB`)
    t.true(b.offloadSuperPacketsWritten! >= read, 'super-packets were not written back as super-packets')
    t.is(b.offloadSegmentsCoalesced, 0, 'segments were split and coalesced again instead of crossing whole')
    t.is(b.offloadFallbacks, 0)
    t.is(b.offloadReadErrors, 0)
    t.true(s.intercepted >= read, `${s.intercepted} frames intercepted for ${read} super-packets`)
    t.is(s.interceptWrites, st.writeBack + st.replies)
    t.true(await eventually(() => stats(stack).tcpFlows === 0, 5000), JSON.stringify(stats(stack)))
  },
)

/** Runs the UDP_SEGMENT sender to `address:port`: `sends` sends of `len` bytes cut into `seg`-byte datagrams. */
function sendUso(address: string, port: number, sends: number, len: number, seg: number) {
  return new Promise<{ code: number | null; stderr: string }>((resolve, reject) => {
    const child = spawn(uso.sender!, [address, String(port), String(sends), String(len), String(seg)], {
      stdio: ['ignore', 'ignore', 'pipe'],
    })
    let stderr = ''
    child.stderr.on('data', (d) => (stderr += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000)
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stderr })
    })
  })
}

/** Every message of every session of `stack`, in order of arrival. */
function takeMessages(stack: Stack) {
  const got: UdpMessage[] = []
  const sessions: UdpSession[] = []
  void (async () => {
    for await (const s of stack.datagrams()) {
      sessions.push(s)
      void (async () => {
        for await (const m of s) got.push(m)
      })()
    }
  })()
  return { got, sessions }
}

deviceTestIf(
  uso.reason,
  "offload: UDP GSO super-packets reach the stack as one message per datagram ('split') or as one with segmentSize ('pass'), IPv4 and IPv6",
  async (t) => {
    const p = plan(202)
    await using tun = await Tun.create({
      name: devName('so'),
      addresses: p.addresses,
      routes: p.routes,
      offload: { tcp: true, udp: true },
    })
    t.is((tun.stats().backend as Backend).offloadUdp, 1, 'the TUN refused USO although the probe had it')
    const SENDS = 6
    const LEN = 12_500
    const SEG = 1200
    for (const mode of ['split', 'pass'] as const) {
      const stack = await Stack.create(tun, { udpGso: mode, tcp: false })
      try {
        const { got, sessions } = takeMessages(stack)
        for (const fam of [4, 6] as const) {
          got.length = 0
          const dst = fam === 4 ? p.dst4(9) : p.dst6(9)
          const readBefore = (tun.stats().backend as Backend).offloadSuperPacketsRead!
          const r = await sendUso(dst, 4433, SENDS, LEN, SEG)
          t.is(r.code, 0, r.stderr)
          const want =
            mode === 'split' ? usoDatagrams(SENDS, LEN, SEG) : [...Array(SENDS).keys()].map((k) => usoSend(k, LEN))
          await eventually(() => got.length >= want.length, 5000)
          t.is(got.length, want.length, `${mode} IPv${fam}: ${got.length} of ${want.length} messages`)
          t.true(
            got.every((m, i) => m.data.equals(want[i]!)),
            `${mode} IPv${fam}: a message arrived changed or out of order`,
          )
          for (const m of got) {
            t.deepEqual(m.destination, { address: dst, port: 4433, family: fam })
            if (mode === 'pass') t.is(m.segmentSize, SEG)
            else t.is(m.segmentSize, undefined)
          }
          const read = (tun.stats().backend as Backend).offloadSuperPacketsRead! - readBefore
          t.true(read >= SENDS, `${mode} IPv${fam}: only ${read} super-packets read: the sends were not USO`)
        }
        t.is(sessions.length, 2, 'one session per client socket')
      } finally {
        await stack.close()
      }
    }
    const bad = await Stack.create(tun, { udpGso: 'whole' as never }).catch((e: unknown) => e)
    t.true(bad instanceof TunError)
    t.is((bad as TunError).code, 'ERR_TUN_INVALID_ARGUMENT')
  },
)
