//! Pure packet logic: parsing, checksums, and the offload transforms (GSO split, GRO coalesce). No syscalls,
//! safe code only, no allocation beyond the output buffers the caller hands in.
//!
//! # Formats
//!
//! A TUN device moves bare IP packets; the first nibble is the IP version. All multi-byte packet fields are
//! big-endian (network order).
//!
//! - **IPv4** header, 20 to 60 bytes: version/IHL (IHL = header length in 32-bit words), TOS, total length
//!   (the whole packet), identification, flags (DF = 0x4000, MF = 0x2000) with the fragment offset, TTL,
//!   protocol, header checksum (over the header only), source, destination, options.
//! - **IPv6** header, 40 bytes: version/traffic class/flow label, payload length (everything after these 40
//!   bytes), next header, hop limit, source, destination. Extension headers (hop-by-hop 0, routing 43,
//!   destination options 60: length in 8-byte units, plus 8; fragment 44: 8 bytes) may sit between it and the
//!   transport header.
//! - **TCP** header, 20 to 60 bytes: ports, sequence, acknowledgment, data offset (header length in words)
//!   and flags, window, checksum, urgent pointer, options. **UDP** header, 8 bytes: ports, length (header and
//!   payload), checksum. **ICMP/ICMPv6**: type, code, checksum, then for echo an identifier and sequence
//!   number.
//! - TCP, UDP and ICMPv6 checksums cover a *pseudo-header* (source, destination, protocol, transport length)
//!   plus the transport header and payload; ICMPv4 covers only its message. A UDP checksum that computes to 0
//!   is sent as 0xFFFF, because 0 means "no checksum" over IPv4.
//!
//! With `IFF_VNET_HDR` every read and write on the device carries a 10-byte [`virtio::VirtioNetHdr`] in front
//! of the packet. On reads the kernel may hand over a *super-packet* of up to 64 KiB: one set of headers
//! followed by the payload of many segments, with `gso_type`/`gso_size` saying how to cut it and `NEEDS_CSUM`
//! saying the transport checksum field holds only the pseudo-header sum. [`gso::split`] turns it back into
//! MTU-sized packets with complete checksums. On writes, [`gro::Coalescer`] does the inverse: consecutive
//! segments of one flow become one super-packet, so a single `write()` carries many packets.
//!
//! Submodules: [`checksum`] (RFC 1071/1624), [`ip`] (zero-copy header views and [`Packet::parse`]), [`build`]
//! (packet builders and ICMP echo replies), [`virtio`], [`gso`], [`gro`].

pub mod build;
pub mod checksum;
pub mod gro;
pub mod gso;
pub mod ip;
pub mod virtio;

use crate::config::Mode;
use crate::error::{Error, ErrorKind, Result};

/// Length of an Ethernet header, the least a TAP frame holds.
pub const ETHERNET_HEADER_LEN: usize = 14;

/// Checks that `pkt` is something a device of `mode` accepts, as the kernel's TUN driver would: not empty, an IPv4 or
/// IPv6 packet on a TUN device, at least an Ethernet header on a TAP device, and at most `max_len` bytes. The one
/// check every write path uses (the binding before queueing, the Windows and macOS backends before sending).
pub fn check_write(pkt: &[u8], mode: Mode, max_len: usize) -> Result<()> {
  let bad = |why: String| Err(Error::new(ErrorKind::InvalidPacket, why));
  match (mode, pkt.first()) {
    (_, None) => return bad("is empty".into()),
    (Mode::Tun, Some(b)) if b >> 4 != 4 && b >> 4 != 6 => {
      return bad(format!("is not IPv4 or IPv6 (version nibble {})", b >> 4))
    }
    (Mode::Tap, _) if pkt.len() < ETHERNET_HEADER_LEN => {
      return bad(format!("is {} bytes, shorter than an Ethernet header", pkt.len()))
    }
    _ => {}
  }
  if pkt.len() > max_len {
    return Err(Error::new(
      ErrorKind::PacketTooLarge,
      format!("is {} bytes, the device takes at most {max_len}", pkt.len()),
    ));
  }
  Ok(())
}

#[cfg(test)]
mod check_tests {
  use super::*;

  #[test]
  fn write_checks() {
    let kind = |p: &[u8], m, max| check_write(p, m, max).unwrap_err().kind();
    assert_eq!(kind(&[], Mode::Tun, 1500), ErrorKind::InvalidPacket);
    assert_eq!(kind(&[0x75, 0], Mode::Tun, 1500), ErrorKind::InvalidPacket);
    assert_eq!(kind(&[0x45; 1501], Mode::Tun, 1500), ErrorKind::PacketTooLarge);
    assert!(
      check_write(&[0x45, 0], Mode::Tun, 1500).is_ok() && check_write(&[0x60, 0], Mode::Tun, 1500).is_ok()
    );
    assert_eq!(kind(&[0; 13], Mode::Tap, 1518), ErrorKind::InvalidPacket);
    assert!(check_write(&[0; 14], Mode::Tap, 1518).is_ok());
    assert_eq!(kind(&[0; 1519], Mode::Tap, 1518), ErrorKind::PacketTooLarge);
  }
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod testutil;

pub use ip::{Family, IcmpHeader, Ipv4Header, Ipv6Header, Packet, TcpHeader, Transport, UdpHeader};
pub use virtio::VirtioNetHdr;

/// IP protocol numbers (IPv4 protocol / IPv6 next header) used here.
pub mod proto {
  /// IPv6 hop-by-hop options extension header.
  pub const HOPOPTS: u8 = 0;
  /// ICMP for IPv4.
  pub const ICMP: u8 = 1;
  /// Transmission Control Protocol.
  pub const TCP: u8 = 6;
  /// User Datagram Protocol.
  pub const UDP: u8 = 17;
  /// IPv6 routing extension header.
  pub const ROUTING: u8 = 43;
  /// IPv6 fragment extension header.
  pub const FRAGMENT: u8 = 44;
  /// ICMP for IPv6.
  pub const ICMPV6: u8 = 58;
  /// IPv6 "no next header".
  pub const NONE: u8 = 59;
  /// IPv6 destination options extension header.
  pub const DSTOPTS: u8 = 60;
}

/// The typed error for a malformed packet.
pub(crate) fn invalid(msg: impl Into<String>) -> Error {
  Error::new(ErrorKind::InvalidPacket, msg)
}

// Big-endian field access. Callers check bounds first; these index directly so a logic error shows up as a
// test failure (the fuzz tests run every path) rather than as silently wrong data.

#[inline]
pub(crate) fn get16(b: &[u8], off: usize) -> u16 {
  u16::from_be_bytes([b[off], b[off + 1]])
}

#[inline]
pub(crate) fn get32(b: &[u8], off: usize) -> u32 {
  u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

#[inline]
pub(crate) fn put16(b: &mut [u8], off: usize, v: u16) {
  b[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub(crate) fn put32(b: &mut [u8], off: usize, v: u32) {
  b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}
