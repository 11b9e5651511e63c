/**
 * Super-packets as the kernel hands them over with offload: `packets({ superPackets: true })` and
 * `batches({ superPackets: true })` yield {@link SuperPacket}s, and `write()` takes them back unchanged.
 */
import { endianness } from 'node:os'

/** Size of the virtio-net header in front of every frame of an offload device. */
export const VNET_HDR_LEN = 10

const LE = endianness() === 'LE'
const NEEDS_CSUM = 1
const GSO_ECN = 0x80
const GSO_TYPES: Record<number, GsoInfo['type'] | undefined> = { 0: 'none', 1: 'tcp4', 3: 'udp', 4: 'tcp6', 5: 'udp' }

/**
 * What the kernel's virtio-net header says of a super-packet: how to cut it into packets and which checksum is
 * left to complete. Offsets are into {@link SuperPacket.data}.
 */
export interface GsoInfo {
  /**
   * Segmentation the packet asks for: `'tcp4'`/`'tcp6'` (TSO), `'udp'` (USO, or UFO), `'none'` (one packet, only its
   * checksum may be partial).
   */
  type: 'none' | 'tcp4' | 'tcp6' | 'udp'
  /** The ECN bit of a TCP super-packet: its segments carry CWR only on the first (RFC 3168). */
  ecn: boolean
  /** Payload bytes per segment (`gso_size`); 0 with type `'none'`. */
  size: number
  /** Bytes of headers copied in front of every segment (IP, extensions, TCP/UDP header) (`hdr_len`). */
  hdrLen: number
  /** The transport checksum is partial: the pseudo-header sum only, to be completed from `csumStart`. */
  needsCsum: boolean
  /** Where the checksum starts (the transport header), and where it goes relative to that. */
  csumStart: number
  csumOffset: number
}

/** Read from a frame's header in native byte order (virtio-net headers of a TUN device are). */
function u16(b: Uint8Array, at: number): number {
  return LE ? b[at]! | (b[at + 1]! << 8) : (b[at]! << 8) | b[at + 1]!
}

/** @internal The frame (header and packet) behind a {@link SuperPacket}, for `write()`. */
export const FRAME: unique symbol = Symbol('tunkit.frame')

/**
 * One packet as the device handed it over, maybe a super-packet of up to 64 KiB that stands for many packets of
 * one flow (TCP/UDP segmentation offload). Yielded by `packets({ superPackets: true })` and
 * `batches({ superPackets: true })`; `write()` takes it back as it is: to a device with offload in one write, to a
 * device without offload cut into ordinary packets first (with complete checksums). Made without copying: `data` is
 * a view into the batch, like the `Buffer`s of `packets()`.
 */
export class SuperPacket {
  readonly #frame: Buffer | null
  #data: Buffer | null
  #gso: GsoInfo | null | undefined = undefined

  /** @internal */
  constructor(frame: Buffer | null, data: Buffer | null) {
    this.#frame = frame
    this.#data = data
  }

  /** The IP packet (TUN) or Ethernet frame (TAP), its headers first; larger than the MTU when it is a super-packet. */
  get data(): Buffer {
    return (this.#data ??= this.#frame!.subarray(VNET_HDR_LEN))
  }

  /**
   * The offload metadata, or `null` for an ordinary packet (nothing to cut, checksums complete): always `null` on a
   * device without offload.
   */
  get gso(): GsoInfo | null {
    if (this.#gso !== undefined) return this.#gso
    const f = this.#frame
    if (f === null || ((f[0]! & NEEDS_CSUM) === 0 && (f[1]! & ~GSO_ECN) === 0)) return (this.#gso = null)
    const kind = f[1]! & ~GSO_ECN
    const info: GsoInfo = {
      type: GSO_TYPES[kind] ?? 'none',
      ecn: (f[1]! & GSO_ECN) !== 0,
      size: kind === 0 ? 0 : u16(f, 4),
      hdrLen: u16(f, 2),
      needsCsum: (f[0]! & NEEDS_CSUM) !== 0,
      csumStart: u16(f, 6),
      csumOffset: u16(f, 8),
    }
    return (this.#gso = info)
  }

  /** Whether it stands for more than one packet (its `gso.type` is not `'none'`). */
  get isSuper(): boolean {
    const f = this.#frame
    return f !== null && (f[1]! & ~GSO_ECN) !== 0
  }

  /** How many packets it stands for: 1 for an ordinary packet. */
  get segments(): number {
    const g = this.gso
    if (g === null || g.type === 'none' || g.size === 0) return 1
    return Math.max(1, Math.ceil((this.data.length - g.hdrLen) / g.size))
  }

  /** @internal The frame (virtio-net header and packet), `null` for a packet read without one. */
  get [FRAME](): Buffer | null {
    return this.#frame
  }
}
