// TAP devices: Ethernet frames, the MAC address, and a neighbour played from JavaScript that answers ARP and ping.
// Runs inside the private network namespace the test runner made; nothing leaves it.
// Address plan of this file: 10.70.0.0/16 .. 10.72.0.0/16, devices tktap<n>.
import { Tun, TunError, packet } from '../index.ts'
import { deviceTest, devName } from './helpers/device.ts'
import {
  ARP_REQUEST,
  BROADCAST,
  ETH_P_IP,
  arpReplyFor,
  ethernet,
  parseArp,
  parseEthernet,
  type Arp,
} from './helpers/eth.ts'
import { ipLink, ipOk } from './helpers/link.ts'
import { run, udpSocket, until } from './helpers/net.ts'

const tag = 'tap'

deviceTest(
  'mode tap: the MAC given at create, setMac and a change from outside are read back from the kernel',
  async (t) => {
    const mac = '02:00:5e:10:00:01'
    await using tap = await Tun.create({ name: devName(tag), mode: 'tap', mac })
    t.is(tap.mode, 'tap')
    t.is(tap.link().mac, mac)
    const k = (await ipLink(tap.name))!
    t.is(k.address, mac)
    t.is(k.link_type, 'ether')
    t.is(k.linkinfo?.info_data?.type, 'tap')

    await tap.setMac('02:00:5e:10:00:02')
    t.is(tap.link().mac, '02:00:5e:10:00:02')
    t.is((await ipLink(tap.name))!.address, '02:00:5e:10:00:02')
    await ipOk(['link', 'set', tap.name, 'address', '02:00:5e:10:00:03'])
    t.is(tap.link().mac, '02:00:5e:10:00:03')

    // Without the option the kernel picks a random locally administered unicast address.
    await using other = await Tun.create({ name: devName(tag), mode: 'tap' })
    const m = other.link().mac!
    t.regex(m, /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/)
    t.is(parseInt(m.slice(0, 2), 16) & 0x03, 0x02, `${m} is locally administered and unicast`)
    // A TUN device has none.
    await using tun = await Tun.create({ name: devName(tag) })
    t.is(tun.link().mac, undefined)
    await t.throwsAsync(() => tun.setMac('02:00:5e:10:00:04'), { code: 'ERR_TUN_UNSUPPORTED' })
    // Multicast and zero addresses are refused with a typed error; the MAC stays.
    await t.throwsAsync(() => tap.setMac('01:00:5e:00:00:01'), { code: 'ERR_TUN_INVALID_ADDRESS' })
    await t.throwsAsync(() => tap.setMac('00:00:00:00:00:00'), { code: 'ERR_TUN_INVALID_ADDRESS' })
    t.is(tap.link().mac, '02:00:5e:10:00:03')
  },
)

deviceTest(
  'a neighbour played from JS answers ARP, and ping over TAP completes (ICMP echo inside Ethernet)',
  async (t) => {
    const myMac = '02:00:5e:10:00:10'
    const peerMac = '02:00:5e:10:00:99'
    const peerIp = '10.70.0.2'
    await using tap = await Tun.create({ name: devName(tag), mode: 'tap', mac: myMac, addresses: ['10.70.0.1/24'] })
    const seenArp: { arp: Arp; ethDst: string }[] = []
    const seenEcho: { dst: string; src: string }[] = []
    let answered = 0
    const ac = new AbortController()
    const neighbour = (async () => {
      try {
        for await (const frame of tap.packets({ signal: ac.signal })) {
          const eth = parseEthernet(frame)
          if (!eth) continue
          const arpReply = arpReplyFor(frame, peerIp, peerMac)
          if (arpReply) {
            seenArp.push({ arp: parseArp(eth.payload)!, ethDst: eth.dst })
            await tap.write(arpReply)
            continue
          }
          if (eth.type !== ETH_P_IP || eth.dst !== peerMac) continue
          const reply = packet.echoReply(eth.payload)
          if (!reply) continue
          seenEcho.push({ dst: eth.dst, src: eth.src })
          await tap.write(ethernet(eth.src, peerMac, ETH_P_IP, reply))
          answered++
        }
      } catch (e) {
        if ((e as Error).name !== 'AbortError') throw e
      }
    })()
    const r = await run('ping', ['-c', '3', '-i', '0.1', '-W', '2', '-n', peerIp])
    ac.abort()
    await neighbour
    t.is(r.code, 0, r.stdout + r.stderr)
    t.regex(r.stdout, /3 packets transmitted, 3 received, 0% packet loss/)
    t.is(answered, 3)
    // The kernel asked who has 10.70.0.2, from the TAP's own MAC, to the broadcast address.
    t.true(seenArp.length >= 1)
    t.like(seenArp[0]!.arp, { op: ARP_REQUEST, senderMac: myMac, senderIp: '10.70.0.1', targetIp: peerIp })
    t.is(seenArp[0]!.ethDst, BROADCAST)
    // The echo requests went to the MAC our ARP reply taught the kernel, from the TAP's MAC.
    t.true(seenEcho.every((e) => e.dst === peerMac && e.src === myMac))
    const neigh = await ipOk(['neigh', 'show', 'dev', tap.name, peerIp])
    t.regex(neigh, new RegExp(`lladdr ${peerMac}`))
  },
)

deviceTest(
  'TAP writes: frames under an Ethernet header or over MTU + 18 are refused; a full-size frame is delivered',
  async (t) => {
    const myMac = '02:00:5e:10:00:20'
    await using tap = await Tun.create({ name: devName(tag), mode: 'tap', mac: myMac, addresses: ['10.71.0.1/24'] })
    const e1 = (await t.throwsAsync(() => tap.write(Buffer.alloc(13)))) as TunError
    t.is(e1.code, 'ERR_TUN_INVALID_PACKET')
    const e2 = (await t.throwsAsync(() => tap.write(Buffer.alloc(1500 + 18 + 1)))) as TunError
    t.is(e2.code, 'ERR_TUN_PACKET_TOO_LARGE')
    // Unlike TUN, the first byte of a TAP frame is a MAC address, not an IP version: this one starts with 0x02.
    const sock = await udpSocket('udp4', '10.71.0.1', 0)
    const got: Buffer[] = []
    sock.on('message', (m) => got.push(m))
    const payload = Buffer.alloc(1500 - 28, 0x6b)
    const ip = packet.udp({ src: '10.71.0.2', dst: '10.71.0.1', srcPort: 4000, dstPort: sock.address().port, payload })
    t.is(ip.length, 1500)
    const frame = ethernet(myMac, '02:00:5e:10:00:21', ETH_P_IP, ip)
    t.is(frame.length, 1514)
    await tap.write(frame)
    await until(() => got.length === 1, 3000, 'the datagram inside the full-size frame')
    t.true(got[0]!.equals(payload))
    sock.close()
  },
)
