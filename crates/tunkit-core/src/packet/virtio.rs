//! The `virtio_net_hdr` that a TUN device opened with `IFF_VNET_HDR` puts in front of every packet (Linux
//! `include/uapi/linux/virtio_net.h`):
//!
//! ```text
//! offset 0  u8  flags        NEEDS_CSUM (1): the transport checksum field holds only the pseudo-header sum;
//!                            complete it over [csum_start, end) and store it at csum_start + csum_offset.
//!                            DATA_VALID (2): the checksum was already verified.
//! offset 1  u8  gso_type     NONE 0, TCPV4 1, UDP 3 (UFO, not used), TCPV6 4, UDP_L4 5 (USO), | ECN 0x80
//! offset 2  u16 hdr_len      length of the headers to copy into every segment (a hint; see gso.rs)
//! offset 4  u16 gso_size     payload bytes per segment (the MSS)
//! offset 6  u16 csum_start   where checksumming starts (the transport header)
//! offset 8  u16 csum_offset  where the checksum field is, relative to csum_start (TCP 16, UDP 6)
//! ```
//!
//! The 16-bit fields are in the device's virtio byte order. For the legacy header a TUN device uses by
//! default, that is the host's native order (little-endian on x86 and arm); `TUNSETVNETLE` forces
//! little-endian and `TUNSETVNETBE` (kernels built with `CONFIG_TUN_VNET_CROSS_LE`) big-endian.
//! [`Endian::NATIVE`] is the default.

use super::invalid;
use crate::error::Result;

/// The header's size with `TUNSETVNETHDRSZ` left at its default.
pub const VIRTIO_NET_HDR_LEN: usize = 10;

/// `flags`: the transport checksum is partial and must be completed.
pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
/// `flags`: the checksum was verified (receive side).
pub const VIRTIO_NET_HDR_F_DATA_VALID: u8 = 2;

/// `gso_type`: a plain packet.
pub const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
/// `gso_type`: TCP over IPv4 segmentation.
pub const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
/// `gso_type`: UDP fragmentation offload (UFO); not supported here.
pub const VIRTIO_NET_HDR_GSO_UDP: u8 = 3;
/// `gso_type`: TCP over IPv6 segmentation.
pub const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
/// `gso_type`: UDP segmentation (USO, Linux 6.2+): each segment is a datagram of its own.
pub const VIRTIO_NET_HDR_GSO_UDP_L4: u8 = 5;
/// `gso_type` bit: the TCP super-packet carries CWR (ECN).
pub const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;

/// Byte order of the header's 16-bit fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endian {
  Little,
  Big,
}

impl Endian {
  /// The host's order: what a TUN device uses unless `TUNSETVNETLE`/`TUNSETVNETBE` says otherwise.
  pub const NATIVE: Endian = if cfg!(target_endian = "big") {
    Endian::Big
  } else {
    Endian::Little
  };

  fn get(self, b: [u8; 2]) -> u16 {
    match self {
      Endian::Little => u16::from_le_bytes(b),
      Endian::Big => u16::from_be_bytes(b),
    }
  }

  fn put(self, v: u16) -> [u8; 2] {
    match self {
      Endian::Little => v.to_le_bytes(),
      Endian::Big => v.to_be_bytes(),
    }
  }
}

impl Default for Endian {
  fn default() -> Endian {
    Endian::NATIVE
  }
}

/// A decoded `virtio_net_hdr`. The all-zero value (`Default`) means "a plain packet, checksums complete".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct VirtioNetHdr {
  pub flags: u8,
  pub gso_type: u8,
  pub hdr_len: u16,
  pub gso_size: u16,
  pub csum_start: u16,
  pub csum_offset: u16,
}

impl VirtioNetHdr {
  /// Encoded size.
  pub const LEN: usize = VIRTIO_NET_HDR_LEN;

  /// Decodes the first 10 bytes of `buf` in the host's order.
  pub fn decode(buf: &[u8]) -> Result<VirtioNetHdr> {
    Self::decode_with(buf, Endian::NATIVE)
  }

  /// Decodes the first 10 bytes of `buf` in the given order.
  pub fn decode_with(buf: &[u8], endian: Endian) -> Result<VirtioNetHdr> {
    if buf.len() < Self::LEN {
      return Err(invalid(format!(
        "{} bytes are too short for a 10-byte virtio_net_hdr",
        buf.len()
      )));
    }
    let w = |i: usize| endian.get([buf[i], buf[i + 1]]);
    Ok(VirtioNetHdr {
      flags: buf[0],
      gso_type: buf[1],
      hdr_len: w(2),
      gso_size: w(4),
      csum_start: w(6),
      csum_offset: w(8),
    })
  }

  /// Encodes in the host's order.
  pub fn encode(&self) -> [u8; VIRTIO_NET_HDR_LEN] {
    self.encode_with(Endian::NATIVE)
  }

  /// Encodes in the given order.
  pub fn encode_with(&self, endian: Endian) -> [u8; VIRTIO_NET_HDR_LEN] {
    let mut out = [0u8; VIRTIO_NET_HDR_LEN];
    out[0] = self.flags;
    out[1] = self.gso_type;
    for (i, v) in [self.hdr_len, self.gso_size, self.csum_start, self.csum_offset]
      .into_iter()
      .enumerate()
    {
      out[2 + 2 * i..4 + 2 * i].copy_from_slice(&endian.put(v));
    }
    out
  }

  /// True when `NEEDS_CSUM` is set.
  pub fn needs_csum(&self) -> bool {
    self.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0
  }

  /// The segmentation type without the ECN bit.
  pub fn gso_kind(&self) -> u8 {
    self.gso_type & !VIRTIO_NET_HDR_GSO_ECN
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn encodes_both_byte_orders() {
    let h = VirtioNetHdr {
      flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
      gso_type: VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN,
      hdr_len: 0x0134,
      gso_size: 1448,
      csum_start: 20,
      csum_offset: 16,
    };
    let le = h.encode_with(Endian::Little);
    assert_eq!(le, [0x01, 0x81, 0x34, 0x01, 0xa8, 0x05, 0x14, 0x00, 0x10, 0x00]);
    let be = h.encode_with(Endian::Big);
    assert_eq!(be, [0x01, 0x81, 0x01, 0x34, 0x05, 0xa8, 0x00, 0x14, 0x00, 0x10]);
    assert_eq!(VirtioNetHdr::decode_with(&le, Endian::Little).unwrap(), h);
    assert_eq!(VirtioNetHdr::decode_with(&be, Endian::Big).unwrap(), h);
    assert_eq!(VirtioNetHdr::decode(&h.encode()).unwrap(), h);
    assert!(h.needs_csum());
    assert_eq!(h.gso_kind(), VIRTIO_NET_HDR_GSO_TCPV4);
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    assert_eq!(h.encode(), le);
  }

  #[test]
  fn decode_ignores_trailing_bytes_and_rejects_short_input() {
    let mut buf = VirtioNetHdr::default().encode().to_vec();
    buf.extend_from_slice(&[0x45, 0, 0]);
    assert_eq!(VirtioNetHdr::decode(&buf).unwrap(), VirtioNetHdr::default());
    let e = VirtioNetHdr::decode(&buf[..9]).unwrap_err();
    assert_eq!(e.kind(), crate::error::ErrorKind::InvalidPacket);
  }
}
