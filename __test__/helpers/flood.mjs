// A bounded UDP flood for tests: node flood.mjs <address> <port> <payloadBytes> <maxPackets> <maxSeconds>
// Sends in bursts without waiting for each callback; stops at the count or the time limit, whichever is first.
import dgram from 'node:dgram'

const [address, port, size, maxPackets, maxSeconds] = process.argv.slice(2)
const sock = dgram.createSocket(address.includes(':') ? 'udp6' : 'udp4')
const payload = Buffer.alloc(Number(size), 0x5a)
const limit = Number(maxPackets)
const deadline = Date.now() + Number(maxSeconds) * 1000
let sent = 0
let inflight = 0
function pump() {
  while (inflight < 256 && sent < limit && Date.now() < deadline) {
    inflight++
    sent++
    sock.send(payload, Number(port), address, () => {
      inflight--
      if (inflight === 0) pump()
    })
  }
  if ((sent >= limit || Date.now() >= deadline) && inflight === 0) {
    console.log(`sent ${sent}`)
    sock.close()
  }
}
pump()
