/** Test packets. */

/**
 * An IPv4/UDP packet of `len` bytes (at least 32) from 10.7.0.1 to 10.7.0.2 whose payload starts with `tag` (a
 * 32-bit number at offset 28): enough of a header for a TUN device and the memory pair to take it.
 */
export function ipv4(len: number, tag: number): Buffer {
  const b = Buffer.alloc(len)
  b[0] = 0x45
  b.writeUInt16BE(len, 2)
  b[8] = 64
  b[9] = 17
  b.set([10, 7, 0, 1], 12)
  b.set([10, 7, 0, 2], 16)
  b.writeUInt32BE(tag >>> 0, 28)
  return b
}
