//! IP headers: parsing what arrives (IPv4 with its header checksum, IPv6 without extension headers) and
//! building what leaves (a header, the transport bytes, the transport checksum).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tunkit_core::packet::checksum;

/// ICMP (IPv4).
pub const PROTO_ICMP: u8 = 1;
/// TCP.
pub const PROTO_TCP: u8 = 6;
/// UDP.
pub const PROTO_UDP: u8 = 17;
/// IPv6 fragment header.
pub const PROTO_FRAG6: u8 = 44;
/// ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;

/// The parts of an IP header the stack dispatches on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpView {
  /// Source address.
  pub src: IpAddr,
  /// Destination address.
  pub dst: IpAddr,
  /// Upper-layer protocol (IPv4 protocol, IPv6 next header).
  pub proto: u8,
  /// Header length: where the upper layer starts.
  pub hdr_len: usize,
  /// Length of the packet per its header (bytes after it on the link are padding).
  pub total: usize,
  /// IPv4 identification (0 for IPv6).
  pub ident: u16,
  /// IPv4 fragment offset in bytes.
  pub frag_off: usize,
  /// IPv4 "more fragments".
  pub more_frags: bool,
}

impl IpView {
  /// True for an IPv4 fragment (not a whole datagram).
  pub fn is_fragment(&self) -> bool {
    self.frag_off != 0 || self.more_frags
  }
}

/// Why a packet was not parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpError {
  /// Too short, bad version, bad lengths.
  Malformed,
  /// The IPv4 header checksum does not match.
  BadChecksum,
}

/// Parses the IP header of `pkt`.
pub fn parse(pkt: &[u8]) -> Result<IpView, IpError> {
  match pkt.first().map(|b| b >> 4) {
    Some(4) => parse_v4(pkt),
    Some(6) => parse_v6(pkt),
    _ => Err(IpError::Malformed),
  }
}

fn parse_v4(pkt: &[u8]) -> Result<IpView, IpError> {
  if pkt.len() < 20 {
    return Err(IpError::Malformed);
  }
  let hdr_len = ((pkt[0] & 0x0f) as usize) * 4;
  let total = u16::from_be_bytes([pkt[2], pkt[3]]) as usize;
  if hdr_len < 20 || total < hdr_len || total > pkt.len() {
    return Err(IpError::Malformed);
  }
  if !checksum::verify(&pkt[..hdr_len], 0) {
    return Err(IpError::BadChecksum);
  }
  let frag = u16::from_be_bytes([pkt[6], pkt[7]]);
  Ok(IpView {
    src: IpAddr::V4(Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15])),
    dst: IpAddr::V4(Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19])),
    proto: pkt[9],
    hdr_len,
    total,
    ident: u16::from_be_bytes([pkt[4], pkt[5]]),
    frag_off: ((frag & 0x1fff) as usize) * 8,
    more_frags: frag & 0x2000 != 0,
  })
}

fn parse_v6(pkt: &[u8]) -> Result<IpView, IpError> {
  if pkt.len() < 40 {
    return Err(IpError::Malformed);
  }
  let total = 40 + u16::from_be_bytes([pkt[4], pkt[5]]) as usize;
  if total > pkt.len() {
    return Err(IpError::Malformed);
  }
  let addr = |o: usize| {
    let mut a = [0u8; 16];
    a.copy_from_slice(&pkt[o..o + 16]);
    IpAddr::V6(Ipv6Addr::from(a))
  };
  Ok(IpView {
    src: addr(8),
    dst: addr(24),
    proto: pkt[6],
    hdr_len: 40,
    total,
    ident: 0,
    frag_off: 0,
    more_frags: false,
  })
}

/// The pseudo-header partial sum of a transport segment of `len` bytes.
pub fn pseudo(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u64 {
  match (src, dst) {
    (IpAddr::V4(s), IpAddr::V4(d)) => checksum::pseudo_header_v4(s, d, proto, len as u16),
    (IpAddr::V6(s), IpAddr::V6(d)) => checksum::pseudo_header_v6(s, d, proto, len as u32),
    _ => 0,
  }
}

/// True when the transport checksum of `l4` (UDP, ICMP, ICMPv6) is right. A zero UDP checksum over IPv4
/// means "none" and is accepted.
pub fn l4_checksum_ok(v: &IpView, l4: &[u8]) -> bool {
  match v.proto {
    PROTO_ICMP => checksum::verify(l4, 0),
    PROTO_UDP if v.src.is_ipv4() && l4.len() >= 8 && l4[6] == 0 && l4[7] == 0 => true,
    p => checksum::verify(l4, pseudo(v.src, v.dst, p, l4.len())),
  }
}

/// Builds an IP packet from `src` to `dst` (same family) carrying `l4` (the transport header and payload,
/// its checksum field zero) into `buf` (cleared first), and fills in the transport checksum: UDP (never
/// 0), ICMP (no pseudo-header) or ICMPv6. `ident` is the IPv4 identification.
pub fn build(buf: &mut Vec<u8>, src: IpAddr, dst: IpAddr, proto: u8, ttl: u8, ident: u16, l4: &[u8]) {
  buf.clear();
  match (src, dst) {
    (IpAddr::V4(s), IpAddr::V4(d)) => {
      let total = (20 + l4.len()) as u16;
      buf.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, ttl, proto, 0, 0]);
      buf[2..4].copy_from_slice(&total.to_be_bytes());
      buf[4..6].copy_from_slice(&ident.to_be_bytes());
      buf.extend_from_slice(&s.octets());
      buf.extend_from_slice(&d.octets());
      let c = checksum::checksum(&buf[..20]);
      buf[10..12].copy_from_slice(&c.to_be_bytes());
    }
    (IpAddr::V6(s), IpAddr::V6(d)) => {
      buf.extend_from_slice(&[0x60, 0, 0, 0]);
      buf.extend_from_slice(&(l4.len() as u16).to_be_bytes());
      buf.extend_from_slice(&[proto, ttl]);
      buf.extend_from_slice(&s.octets());
      buf.extend_from_slice(&d.octets());
    }
    _ => return,
  }
  let hl = buf.len();
  buf.extend_from_slice(l4);
  let seg = &mut buf[hl..];
  let (field, sum) = match proto {
    PROTO_UDP => (6, checksum::sum(seg, pseudo(src, dst, proto, seg.len()))),
    PROTO_ICMP => (2, checksum::sum(seg, 0)),
    _ => (2, checksum::sum(seg, pseudo(src, dst, proto, seg.len()))),
  };
  let c = if proto == PROTO_UDP {
    checksum::finish_nonzero(sum)
  } else {
    checksum::finish(sum)
  };
  if seg.len() >= field + 2 {
    seg[field..field + 2].copy_from_slice(&c.to_be_bytes());
  }
}
