// The forwarding stack as a transparent proxy: every TCP connection a client opens through the TUN is connected to
// its destination from JavaScript, and every UDP session is echoed back. Here the "destinations" are servers on
// loopback (an HTTP server, a UDP echo), so nothing leaves the private network namespace the example makes:
//
//   node --import tsx examples/stack-proxy.ts
//
// curl to 203.0.113.7:8080 (routed into the TUN) reaches the HTTP server through the stack; ping 203.0.113.9 is
// answered by the stack itself, natively.
import { execFile } from 'node:child_process'
import dgram from 'node:dgram'
import http from 'node:http'
import net from 'node:net'
import { promisify } from 'node:util'
import { Stack, Tun } from '../index.ts'
import { ensureNetns } from './netns.ts'

ensureNetns(import.meta.url)
const sh = (cmd: string) => promisify(execFile)('sh', ['-c', cmd], { encoding: 'utf8' }).then((r) => r.stdout.trim())

await using tun = await Tun.create({
  name: 'tk0',
  addresses: ['198.18.0.1/15', 'fd18::1/64'],
  routes: [{ to: '203.0.113.0/24' }, { to: '2001:db8:7::/64' }],
  offload: true, // TCP super-packets cross the stack whole
})
await using stack = await Stack.create(tun, { icmp: 'reply' })

// The "internet": an HTTP server on loopback.
const web = http.createServer((req, res) => res.end(`hello from the server, you asked for ${req.url}\n`))
await new Promise<void>((r) => web.listen(0, '127.0.0.1', r))
const webPort = (web.address() as net.AddressInfo).port

// TCP: connect each connection to its destination (here: every destination maps to the loopback server).
void (async () => {
  for await (const conn of stack.connections()) {
    console.log(
      `tcp ${conn.source.address}:${conn.source.port} -> ${conn.destination.address}:${conn.destination.port}`,
    )
    const upstream = net.connect({ port: webPort, host: '127.0.0.1', allowHalfOpen: true })
    upstream.on('error', () => {})
    // The bytes move natively (splice); `pipeline(conn, upstream, conn, () => {})` does the same through JavaScript.
    void stack
      .relay(conn, upstream)
      .then((r) => console.log(`tcp done: ${r.sent} B up, ${r.received} B down (${r.reason})`))
  }
})()

// UDP: echo every datagram back to the client, from the address it was sent to.
void (async () => {
  for await (const session of stack.datagrams()) {
    console.log(`udp session from ${session.client.address}:${session.client.port}`)
    void (async () => {
      for await (const m of session) session.send(m.data, m.destination)
    })()
  }
})()

console.log('\n$ curl http://203.0.113.7:8080/index.html')
console.log(await sh('curl -s --max-time 5 http://203.0.113.7:8080/index.html'))
console.log('$ curl http://[2001:db8:7::5]:8080/v6')
console.log(await sh('curl -s --max-time 5 "http://[2001:db8:7::5]:8080/v6"'))

const client = dgram.createSocket('udp4')
const echoed = new Promise<string>((r) => client.once('message', (m) => r(m.toString())))
client.send('ping over udp', 5000, '203.0.113.9')
console.log(`udp echo: ${await echoed}`)
client.close()

console.log('\n$ ping -c 3 -i 0.2 203.0.113.9')
console.log(await sh('ping -c 3 -i 0.2 -n 203.0.113.9 | tail -2'))
console.log('\nstack stats:', stack.stats())
web.close()
