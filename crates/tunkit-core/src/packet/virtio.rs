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
use crate::error::{Error, ErrorKind, Result};

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

/// Largest IP packet a TUN device carries: its maximum MTU.
const MAX_TUN_PACKET: usize = crate::config::MAX_MTU as usize;
/// Largest Ethernet frame a TAP device carries: the maximum MTU plus a header with one VLAN tag.
const MAX_TAP_FRAME: usize = MAX_TUN_PACKET + 18;

/// Checks one frame a consumer hands to `write` on a device opened with `offload: { raw: true }`: a 10-byte
/// header in the host's order, then an IP packet (TUN) or an Ethernet frame (TAP). Returns the decoded header.
///
/// The checks are those that make the kernel refuse the write or that would make the frame meaningless, done
/// before anything is queued so that a bad frame fails its own `write` call with a typed error:
///
/// - at least the header and a packet: 11 bytes for TUN (an IP version nibble), 24 for TAP (an Ethernet header);
/// - at most the header plus 65535 bytes (TUN) or 65553 (TAP): a super-packet can exceed the MTU, not 64 KiB;
/// - a known `gso_type` (`NONE`, `TCPV4`, `TCPV6`, `UDP_L4`; UFO is refused), the ECN bit only with TCP, a
///   non-zero `gso_size` when segmenting, and `hdr_len` within the packet;
/// - with `NEEDS_CSUM`, the checksum field (`csum_start + csum_offset`, 2 bytes) within the packet;
/// - TUN: the packet is IPv4 or IPv6, and `TCPV4`/`TCPV6` match its version.
///
/// The packet's own headers are not parsed further: the kernel checks a super-packet as it segments it.
pub fn validate_raw(frame: &[u8], mode: crate::config::Mode) -> Result<VirtioNetHdr> {
  let tap = mode == crate::config::Mode::Tap;
  let (min, max) = if tap {
    (14, MAX_TAP_FRAME)
  } else {
    (1, MAX_TUN_PACKET)
  };
  if frame.len() < VIRTIO_NET_HDR_LEN + min {
    return Err(invalid(format!(
      "a raw offload frame is the 10-byte virtio_net_hdr and then the {}; {} bytes are too short",
      if tap { "Ethernet frame" } else { "IP packet" },
      frame.len()
    )));
  }
  if frame.len() > VIRTIO_NET_HDR_LEN + max {
    return Err(Error::new(
      ErrorKind::PacketTooLarge,
      format!(
        "a raw offload frame is at most {} bytes (the header and {max}), got {}",
        VIRTIO_NET_HDR_LEN + max,
        frame.len()
      ),
    ));
  }
  let hdr = VirtioNetHdr::decode(frame)?;
  let pkt = &frame[VIRTIO_NET_HDR_LEN..];
  let ecn = hdr.gso_type & VIRTIO_NET_HDR_GSO_ECN != 0;
  let kind = hdr.gso_kind();
  match kind {
    VIRTIO_NET_HDR_GSO_NONE | VIRTIO_NET_HDR_GSO_UDP_L4 if ecn => {
      return Err(invalid(format!(
        "virtio gso_type {:#04x}: the ECN bit goes only with TCP",
        hdr.gso_type
      )))
    }
    VIRTIO_NET_HDR_GSO_NONE
    | VIRTIO_NET_HDR_GSO_TCPV4
    | VIRTIO_NET_HDR_GSO_TCPV6
    | VIRTIO_NET_HDR_GSO_UDP_L4 => {}
    _ => {
      return Err(invalid(format!(
        "virtio gso_type {:#04x} is not NONE, TCPV4, TCPV6 or UDP_L4",
        hdr.gso_type
      )))
    }
  }
  if kind != VIRTIO_NET_HDR_GSO_NONE && hdr.gso_size == 0 {
    return Err(invalid("virtio gso_size is 0 on a super-packet"));
  }
  if hdr.hdr_len as usize > pkt.len() {
    return Err(invalid(format!(
      "virtio hdr_len {} is beyond the {}-byte packet",
      hdr.hdr_len,
      pkt.len()
    )));
  }
  if hdr.needs_csum() && hdr.csum_start as usize + hdr.csum_offset as usize + 2 > pkt.len() {
    return Err(invalid(format!(
      "virtio checksum at {}+{} is beyond the {}-byte packet",
      hdr.csum_start,
      hdr.csum_offset,
      pkt.len()
    )));
  }
  if !tap {
    let version = pkt[0] >> 4;
    let want = match kind {
      VIRTIO_NET_HDR_GSO_TCPV4 => Some(4),
      VIRTIO_NET_HDR_GSO_TCPV6 => Some(6),
      _ => None,
    };
    if version != 4 && version != 6 {
      return Err(invalid(format!(
        "the packet after the virtio header is not IPv4 or IPv6 (version nibble {version})"
      )));
    }
    if want.is_some_and(|w| w != version) {
      return Err(invalid(format!(
        "virtio gso_type {:#04x} does not match the IPv{version} packet",
        hdr.gso_type
      )));
    }
  }
  Ok(hdr)
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

  #[test]
  fn validate_raw_table() {
    use crate::config::Mode;
    let frame = |h: VirtioNetHdr, pkt: &[u8]| {
      let mut f = h.encode().to_vec();
      f.extend_from_slice(pkt);
      f
    };
    let mut v4 = vec![0u8; 1500];
    v4[0] = 0x45;
    let mut v6 = vec![0u8; 1500];
    v6[0] = 0x60;
    let eth = vec![0u8; 60];
    let tso = |gso_type: u8| VirtioNetHdr {
      flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
      gso_type,
      hdr_len: 52,
      gso_size: 1448,
      csum_start: 20,
      csum_offset: 16,
    };
    let plain = VirtioNetHdr::default();
    let ok: Vec<(&str, Vec<u8>, Mode)> = vec![
      ("plain v4", frame(plain, &v4), Mode::Tun),
      ("plain v6, one byte", frame(plain, &v6[..1]), Mode::Tun),
      ("tso4", frame(tso(VIRTIO_NET_HDR_GSO_TCPV4), &v4), Mode::Tun),
      (
        "tso6 + ECN",
        frame(tso(VIRTIO_NET_HDR_GSO_TCPV6 | VIRTIO_NET_HDR_GSO_ECN), &v6),
        Mode::Tun,
      ),
      ("uso", frame(tso(VIRTIO_NET_HDR_GSO_UDP_L4), &v6), Mode::Tun),
      ("64 KiB", frame(plain, &vec![0x45; 65535]), Mode::Tun),
      ("tap frame", frame(plain, &eth), Mode::Tap),
      ("tap 64 KiB + vlan", frame(plain, &vec![0; 65553]), Mode::Tap),
    ];
    for (name, f, mode) in ok {
      let h = validate_raw(&f, mode).unwrap_or_else(|e| panic!("{name}: {e}"));
      assert_eq!(h, VirtioNetHdr::decode(&f).unwrap(), "{name}");
    }
    let bad: Vec<(&str, Vec<u8>, Mode, ErrorKind)> = vec![
      (
        "header only",
        plain.encode().to_vec(),
        Mode::Tun,
        ErrorKind::InvalidPacket,
      ),
      ("9 bytes", vec![0; 9], Mode::Tun, ErrorKind::InvalidPacket),
      (
        "too long",
        frame(plain, &vec![0x45; 65536]),
        Mode::Tun,
        ErrorKind::PacketTooLarge,
      ),
      (
        "tap too long",
        frame(plain, &vec![0; 65554]),
        Mode::Tap,
        ErrorKind::PacketTooLarge,
      ),
      (
        "tap short",
        frame(plain, &eth[..13]),
        Mode::Tap,
        ErrorKind::InvalidPacket,
      ),
      (
        "not IP",
        frame(plain, &[0x20, 0, 0]),
        Mode::Tun,
        ErrorKind::InvalidPacket,
      ),
      (
        "tso4 on v6",
        frame(tso(VIRTIO_NET_HDR_GSO_TCPV4), &v6),
        Mode::Tun,
        ErrorKind::InvalidPacket,
      ),
      (
        "tso6 on v4",
        frame(tso(VIRTIO_NET_HDR_GSO_TCPV6), &v4),
        Mode::Tun,
        ErrorKind::InvalidPacket,
      ),
      (
        "UFO",
        frame(tso(VIRTIO_NET_HDR_GSO_UDP), &v4),
        Mode::Tun,
        ErrorKind::InvalidPacket,
      ),
      (
        "unknown type",
        frame(tso(2), &v4),
        Mode::Tun,
        ErrorKind::InvalidPacket,
      ),
      (
        "ECN on USO",
        frame(tso(VIRTIO_NET_HDR_GSO_UDP_L4 | VIRTIO_NET_HDR_GSO_ECN), &v4),
        Mode::Tun,
        ErrorKind::InvalidPacket,
      ),
      (
        "ECN without GSO",
        frame(
          VirtioNetHdr {
            gso_type: VIRTIO_NET_HDR_GSO_ECN,
            ..plain
          },
          &v4,
        ),
        Mode::Tun,
        ErrorKind::InvalidPacket,
      ),
      (
        "gso_size 0",
        frame(
          VirtioNetHdr {
            gso_size: 0,
            ..tso(VIRTIO_NET_HDR_GSO_TCPV4)
          },
          &v4,
        ),
        Mode::Tun,
        ErrorKind::InvalidPacket,
      ),
      (
        "hdr_len beyond",
        frame(
          VirtioNetHdr {
            hdr_len: 1501,
            ..tso(VIRTIO_NET_HDR_GSO_TCPV4)
          },
          &v4,
        ),
        Mode::Tun,
        ErrorKind::InvalidPacket,
      ),
      (
        "checksum field beyond",
        frame(
          VirtioNetHdr {
            csum_start: 1490,
            csum_offset: 9,
            ..tso(VIRTIO_NET_HDR_GSO_TCPV4)
          },
          &v4,
        ),
        Mode::Tun,
        ErrorKind::InvalidPacket,
      ),
    ];
    for (name, f, mode, kind) in bad {
      let e = validate_raw(&f, mode).expect_err(name);
      assert_eq!(e.kind(), kind, "{name}: {e}");
    }
    // The checksum field may end exactly at the end of the packet.
    let edge = VirtioNetHdr {
      csum_start: 1482,
      csum_offset: 16,
      ..tso(VIRTIO_NET_HDR_GSO_TCPV4)
    };
    assert!(validate_raw(&frame(edge, &v4), Mode::Tun).is_ok());
  }
}
