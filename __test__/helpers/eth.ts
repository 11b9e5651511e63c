/**
 * Ethernet and ARP frames for TAP tests: the test plays a neighbour on the TAP link, so it parses the kernel's
 * frames and builds its own (Ethernet II header, ARP for IPv4 over Ethernet, RFC 826).
 */
export const ETH_P_IP = 0x0800
export const ETH_P_ARP = 0x0806
export const ETH_P_IPV6 = 0x86dd
export const ARP_REQUEST = 1
export const ARP_REPLY = 2
export const BROADCAST = 'ff:ff:ff:ff:ff:ff'

/** `'02:00:5e:00:00:01'` → 6 bytes. */
export function macBytes(mac: string): Buffer {
  const parts = mac.split(':')
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-f]{2}$/i.test(p))) throw new Error(`bad MAC ${mac}`)
  return Buffer.from(parts.map((p) => parseInt(p, 16)))
}

/** 6 bytes → `'02:00:5e:00:00:01'`. */
export function macString(b: Uint8Array, offset = 0): string {
  return Array.from(b.subarray(offset, offset + 6), (x) => x.toString(16).padStart(2, '0')).join(':')
}

function ipv4Bytes(ip: string): Buffer {
  return Buffer.from(ip.split('.').map(Number))
}

function ipv4String(b: Uint8Array, offset: number): string {
  return Array.from(b.subarray(offset, offset + 4)).join('.')
}

/** An Ethernet II frame: destination, source, EtherType, payload. */
export function ethernet(dst: string, src: string, type: number, payload: Uint8Array): Buffer {
  const f = Buffer.alloc(14 + payload.length)
  macBytes(dst).copy(f, 0)
  macBytes(src).copy(f, 6)
  f.writeUInt16BE(type, 12)
  f.set(payload, 14)
  return f
}

/** The header fields of an Ethernet frame and a view of its payload; `null` when shorter than a header. */
export interface EthFrame {
  dst: string
  src: string
  type: number
  payload: Buffer
}

export function parseEthernet(frame: Uint8Array): EthFrame | null {
  if (frame.length < 14) return null
  const b = Buffer.from(frame.buffer, frame.byteOffset, frame.length)
  return { dst: macString(b, 0), src: macString(b, 6), type: b.readUInt16BE(12), payload: b.subarray(14) }
}

/** An ARP packet for IPv4 over Ethernet. */
export interface Arp {
  op: number
  senderMac: string
  senderIp: string
  targetMac: string
  targetIp: string
}

/** Parses the payload of an ARP frame; `null` unless it is IPv4-over-Ethernet ARP. */
export function parseArp(payload: Uint8Array): Arp | null {
  if (payload.length < 28) return null
  const b = Buffer.from(payload.buffer, payload.byteOffset, payload.length)
  // htype 1 (Ethernet), ptype 0x0800, hlen 6, plen 4.
  if (b.readUInt16BE(0) !== 1 || b.readUInt16BE(2) !== ETH_P_IP || b[4] !== 6 || b[5] !== 4) return null
  return {
    op: b.readUInt16BE(6),
    senderMac: macString(b, 8),
    senderIp: ipv4String(b, 14),
    targetMac: macString(b, 18),
    targetIp: ipv4String(b, 24),
  }
}

/** The 28-byte ARP packet for `a`. */
export function arpPacket(a: Arp): Buffer {
  const b = Buffer.alloc(28)
  b.writeUInt16BE(1, 0)
  b.writeUInt16BE(ETH_P_IP, 2)
  b[4] = 6
  b[5] = 4
  b.writeUInt16BE(a.op, 6)
  macBytes(a.senderMac).copy(b, 8)
  ipv4Bytes(a.senderIp).copy(b, 14)
  macBytes(a.targetMac).copy(b, 18)
  ipv4Bytes(a.targetIp).copy(b, 24)
  return b
}

/**
 * The complete Ethernet frame answering `request` (an ARP request frame) with "`request.targetIp` is at `myMac`",
 * or `null` when `frame` is not an ARP request for `myIp`.
 */
export function arpReplyFor(frame: Uint8Array, myIp: string, myMac: string): Buffer | null {
  const eth = parseEthernet(frame)
  if (eth?.type !== ETH_P_ARP) return null
  const req = parseArp(eth.payload)
  if (req?.op !== ARP_REQUEST || req.targetIp !== myIp) return null
  const reply = arpPacket({
    op: ARP_REPLY,
    senderMac: myMac,
    senderIp: myIp,
    targetMac: req.senderMac,
    targetIp: req.senderIp,
  })
  return ethernet(req.senderMac, myMac, ETH_P_ARP, reply)
}
