//! The wire format: IPv4/IPv6 packets carrying TCP, parsed into borrowed [`Segment`]s and built into
//! caller buffers. Parsing never panics: anything malformed is a [`ParseError`].
//!
//! A packet may be larger than the MTU (a GRO super-packet, up to 64 KiB): it is one segment. Built packets
//! carry either a full TCP checksum or, for checksum/segmentation offload, the folded pseudo-header sum
//! (`partial`, the virtio `NEEDS_CSUM` convention: `csum_start` is the TCP header, `csum_offset` 16).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::checksum;
use crate::options::TcpOptions;
use crate::seq::Seq;

/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// Size of the fixed TCP header.
pub const TCP_HEADER: usize = 20;
/// Size of an IPv4 header without options.
pub const IPV4_HEADER: usize = 20;
/// Size of the fixed IPv6 header.
pub const IPV6_HEADER: usize = 40;

/// Why a packet was not accepted as a TCP segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParseError {
  /// Shorter than its headers or lengths say.
  Truncated,
  /// Not IPv4 or IPv6.
  BadVersion,
  /// A malformed IP header (IHL, total length, IPv6 jumbogram).
  BadIpHeader,
  /// The IPv4 header checksum is wrong.
  BadIpChecksum,
  /// Not TCP (another protocol, or an IPv6 extension header chain without TCP).
  NotTcp,
  /// An IP fragment (the stack does not reassemble IP).
  Fragment,
  /// The TCP data offset is below 5 or past the segment.
  BadDataOffset,
  /// A malformed option list.
  BadOption,
  /// The TCP checksum is wrong.
  BadChecksum,
  /// Source or destination is a port 0 or an address no TCP segment may carry (unspecified, multicast,
  /// broadcast).
  BadAddress,
}

impl std::fmt::Display for ParseError {
  fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    std::fmt::Debug::fmt(self, f)
  }
}

impl std::error::Error for ParseError {}

/// TCP header flags.
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Flags(pub u8);

impl Flags {
  /// FIN: no more data from the sender.
  pub const FIN: Flags = Flags(0x01);
  /// SYN: synchronize sequence numbers.
  pub const SYN: Flags = Flags(0x02);
  /// RST: reset the connection.
  pub const RST: Flags = Flags(0x04);
  /// PSH: push.
  pub const PSH: Flags = Flags(0x08);
  /// ACK: the acknowledgment field is significant.
  pub const ACK: Flags = Flags(0x10);
  /// URG: the urgent pointer is significant.
  pub const URG: Flags = Flags(0x20);
  /// No flag.
  pub const NONE: Flags = Flags(0);

  /// True when every flag of `other` is set.
  #[inline]
  pub fn has(self, other: Flags) -> bool {
    self.0 & other.0 == other.0
  }
}

impl std::ops::BitOr for Flags {
  type Output = Flags;
  fn bitor(self, o: Flags) -> Flags {
    Flags(self.0 | o.0)
  }
}

impl std::fmt::Debug for Flags {
  fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    let names = [
      (0x02, "SYN"),
      (0x10, "ACK"),
      (0x01, "FIN"),
      (0x04, "RST"),
      (0x08, "PSH"),
      (0x20, "URG"),
    ];
    let mut first = true;
    for (bit, name) in names {
      if self.0 & bit != 0 {
        if !first {
          f.write_str("|")?;
        }
        f.write_str(name)?;
        first = false;
      }
    }
    if first {
      f.write_str("-")?;
    }
    Ok(())
  }
}

/// A parsed TCP segment borrowing its payload from the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
  /// Source port.
  pub src_port: u16,
  /// Destination port.
  pub dst_port: u16,
  /// Sequence number.
  pub seq: Seq,
  /// Acknowledgment number (meaningful with ACK).
  pub ack: Seq,
  /// Flags.
  pub flags: Flags,
  /// The window field as sent (unscaled).
  pub window: u16,
  /// Urgent pointer (the stack treats urgent data as ordinary data).
  pub urgent: u16,
  /// Options.
  pub options: TcpOptions,
  /// The payload.
  pub payload: &'a [u8],
}

impl Segment<'_> {
  /// Sequence space the segment occupies: payload plus one each for SYN and FIN.
  pub fn seq_len(&self) -> u32 {
    self.payload.len() as u32 + self.flags.has(Flags::SYN) as u32 + self.flags.has(Flags::FIN) as u32
  }

  /// Parses a TCP header and payload (no checksum check: see [`parse_packet`]).
  pub fn parse(b: &[u8]) -> Result<Segment<'_>, ParseError> {
    if b.len() < TCP_HEADER {
      return Err(ParseError::Truncated);
    }
    let off = (b[12] >> 4) as usize * 4;
    if off < TCP_HEADER || off > b.len() {
      return Err(ParseError::BadDataOffset);
    }
    Ok(Segment {
      src_port: u16::from_be_bytes([b[0], b[1]]),
      dst_port: u16::from_be_bytes([b[2], b[3]]),
      seq: Seq(u32::from_be_bytes([b[4], b[5], b[6], b[7]])),
      ack: Seq(u32::from_be_bytes([b[8], b[9], b[10], b[11]])),
      flags: Flags(b[13] & 0x3f),
      window: u16::from_be_bytes([b[14], b[15]]),
      urgent: u16::from_be_bytes([b[18], b[19]]),
      options: TcpOptions::parse(&b[TCP_HEADER..off])?,
      payload: &b[off..],
    })
  }
}

/// A TCP segment with the endpoints of its IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
  /// Source address and port.
  pub src: SocketAddr,
  /// Destination address and port.
  pub dst: SocketAddr,
  /// The segment.
  pub seg: Segment<'a>,
}

/// Locates the TCP part of an IPv4/IPv6 packet: (source, destination, TCP bytes). `verify` checks the IPv4
/// header checksum.
fn ip_payload(pkt: &[u8], verify: bool) -> Result<(IpAddr, IpAddr, &[u8]), ParseError> {
  let v = pkt.first().ok_or(ParseError::Truncated)? >> 4;
  match v {
    4 => {
      if pkt.len() < IPV4_HEADER {
        return Err(ParseError::Truncated);
      }
      let ihl = (pkt[0] & 0x0f) as usize * 4;
      let total = u16::from_be_bytes([pkt[2], pkt[3]]) as usize;
      if ihl < IPV4_HEADER || total < ihl {
        return Err(ParseError::BadIpHeader);
      }
      if total > pkt.len() {
        return Err(ParseError::Truncated);
      }
      if verify && checksum::fold(checksum::sum(&pkt[..ihl], 0)) != 0xffff {
        return Err(ParseError::BadIpChecksum);
      }
      let frag = u16::from_be_bytes([pkt[6], pkt[7]]);
      if frag & 0x3fff != 0 {
        return Err(ParseError::Fragment);
      }
      if pkt[9] != PROTO_TCP {
        return Err(ParseError::NotTcp);
      }
      let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
      let dst = Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
      Ok((IpAddr::V4(src), IpAddr::V4(dst), &pkt[ihl..total]))
    }
    6 => {
      if pkt.len() < IPV6_HEADER {
        return Err(ParseError::Truncated);
      }
      let plen = u16::from_be_bytes([pkt[4], pkt[5]]) as usize;
      if plen == 0 {
        return Err(ParseError::BadIpHeader);
      }
      if IPV6_HEADER + plen > pkt.len() {
        return Err(ParseError::Truncated);
      }
      let mut a = [0u8; 16];
      a.copy_from_slice(&pkt[8..24]);
      let src = Ipv6Addr::from(a);
      a.copy_from_slice(&pkt[24..40]);
      let dst = Ipv6Addr::from(a);
      let mut next = pkt[6];
      let mut rest = &pkt[IPV6_HEADER..IPV6_HEADER + plen];
      loop {
        match next {
          PROTO_TCP => return Ok((IpAddr::V6(src), IpAddr::V6(dst), rest)),
          0 | 43 | 60 => {
            if rest.len() < 8 {
              return Err(ParseError::Truncated);
            }
            let n = (rest[1] as usize + 1) * 8;
            if n > rest.len() {
              return Err(ParseError::Truncated);
            }
            next = rest[0];
            rest = &rest[n..];
          }
          44 => return Err(ParseError::Fragment),
          _ => return Err(ParseError::NotTcp),
        }
      }
    }
    _ => Err(ParseError::BadVersion),
  }
}

fn bad_addr(ip: IpAddr) -> bool {
  match ip {
    IpAddr::V4(a) => a.is_unspecified() || a.is_multicast() || a.is_broadcast(),
    IpAddr::V6(a) => a.is_unspecified() || a.is_multicast(),
  }
}

fn ip_bytes(ip: &IpAddr, buf: &mut [u8; 16]) -> usize {
  match ip {
    IpAddr::V4(a) => {
      buf[..4].copy_from_slice(&a.octets());
      4
    }
    IpAddr::V6(a) => {
      buf.copy_from_slice(&a.octets());
      16
    }
  }
}

/// Pseudo-header partial sum for a TCP part of `len` bytes from `src` to `dst`.
pub(crate) fn pseudo_sum(src: &IpAddr, dst: &IpAddr, len: usize) -> u64 {
  let (mut s, mut d) = ([0u8; 16], [0u8; 16]);
  let n = ip_bytes(src, &mut s);
  ip_bytes(dst, &mut d);
  checksum::pseudo_header(&s[..n], &d[..n], PROTO_TCP, len as u32)
}

/// Parses an IPv4/IPv6 packet carrying one TCP segment (of any size up to 64 KiB: a GRO super-packet is one
/// segment). `verify` checks the IPv4 header and the TCP checksum; pass false when offload vouches for them.
pub fn parse_packet(pkt: &[u8], verify: bool) -> Result<Packet<'_>, ParseError> {
  let (src, dst, tcp) = ip_payload(pkt, verify)?;
  let seg = Segment::parse(tcp)?;
  if verify && checksum::fold(checksum::sum(tcp, pseudo_sum(&src, &dst, tcp.len()))) != 0xffff {
    return Err(ParseError::BadChecksum);
  }
  if bad_addr(src) || bad_addr(dst) || seg.src_port == 0 || seg.dst_port == 0 {
    return Err(ParseError::BadAddress);
  }
  Ok(Packet {
    src: SocketAddr::new(src, seg.src_port),
    dst: SocketAddr::new(dst, seg.dst_port),
    seg,
  })
}

/// The fields of a segment to build.
#[derive(Clone, Copy, Debug)]
pub struct Header {
  /// Sequence number.
  pub seq: Seq,
  /// Acknowledgment number (written as 0 without ACK).
  pub ack: Seq,
  /// Flags.
  pub flags: Flags,
  /// Window field (already scaled down).
  pub window: u16,
}

/// The IP header size for `ip`'s family.
pub fn ip_header_len(ip: &IpAddr) -> usize {
  if ip.is_ipv4() {
    IPV4_HEADER
  } else {
    IPV6_HEADER
  }
}

/// Clears `out` and writes an IP packet `src -> dst` (same family) with a TCP segment: `hdr`, `opts`, and the
/// payload given as two slices (the halves of a ring buffer) written one after the other. With `partial`
/// the TCP checksum field holds the folded pseudo-header sum (for checksum offload), else the full
/// checksum. IPv4 gets DF, TTL 64, ID 0 (RFC 6864); IPv6 hop limit 64. Returns the TCP header offset. The
/// whole packet must fit 65535 bytes of IP payload (callers size segments so).
pub fn write_packet(
  out: &mut Vec<u8>,
  src: SocketAddr,
  dst: SocketAddr,
  hdr: &Header,
  opts: &TcpOptions,
  payload: (&[u8], &[u8]),
  partial: bool,
) -> usize {
  out.clear();
  let tcp_len = TCP_HEADER + opts.encoded_len() + payload.0.len() + payload.1.len();
  let l4 = match (src.ip(), dst.ip()) {
    (IpAddr::V4(s), IpAddr::V4(d)) => {
      let total = (IPV4_HEADER + tcp_len) as u16;
      out.extend_from_slice(&[0x45, 0]);
      out.extend_from_slice(&total.to_be_bytes());
      out.extend_from_slice(&[0, 0, 0x40, 0, 64, PROTO_TCP, 0, 0]);
      out.extend_from_slice(&s.octets());
      out.extend_from_slice(&d.octets());
      let c = checksum::finish(checksum::sum(&out[..IPV4_HEADER], 0));
      out[10..12].copy_from_slice(&c.to_be_bytes());
      IPV4_HEADER
    }
    (IpAddr::V6(s), IpAddr::V6(d)) => {
      out.extend_from_slice(&[0x60, 0, 0, 0]);
      out.extend_from_slice(&(tcp_len as u16).to_be_bytes());
      out.extend_from_slice(&[PROTO_TCP, 64]);
      out.extend_from_slice(&s.octets());
      out.extend_from_slice(&d.octets());
      IPV6_HEADER
    }
    _ => panic!("write_packet: mixed address families"),
  };
  out.extend_from_slice(&src.port().to_be_bytes());
  out.extend_from_slice(&dst.port().to_be_bytes());
  out.extend_from_slice(&hdr.seq.0.to_be_bytes());
  let ack = if hdr.flags.has(Flags::ACK) { hdr.ack.0 } else { 0 };
  out.extend_from_slice(&ack.to_be_bytes());
  let off = ((TCP_HEADER + opts.encoded_len()) / 4) as u8;
  out.extend_from_slice(&[off << 4, hdr.flags.0]);
  out.extend_from_slice(&hdr.window.to_be_bytes());
  out.extend_from_slice(&[0, 0, 0, 0]);
  opts.write(out);
  out.extend_from_slice(payload.0);
  out.extend_from_slice(payload.1);
  let ph = pseudo_sum(&src.ip(), &dst.ip(), tcp_len);
  let c = if partial {
    checksum::fold(ph)
  } else {
    checksum::finish(checksum::sum(&out[l4..], ph))
  };
  out[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
  l4
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::options::{SackBlocks, Timestamps};

  fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
  }

  fn build(src: &str, dst: &str, payload: &[u8], partial: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut sack = SackBlocks::default();
    sack.push(Seq(5), Seq(9));
    let opts = TcpOptions {
      timestamps: Some(Timestamps { val: 3, ecr: 4 }),
      sack,
      ..Default::default()
    };
    let hdr = Header {
      seq: Seq(100),
      ack: Seq(200),
      flags: Flags::ACK | Flags::PSH,
      window: 512,
    };
    let (a, b) = payload.split_at(payload.len() / 3);
    write_packet(&mut out, sa(src), sa(dst), &hdr, &opts, (a, b), partial);
    out
  }

  #[test]
  fn wire_roundtrip_v4_v6() {
    for (s, d) in [
      ("10.0.0.1:1000", "10.0.0.2:80"),
      ("[fd00::1]:1000", "[fd00::2]:80"),
    ] {
      let payload: Vec<u8> = (0..1001u32).map(|i| (i * 7) as u8).collect();
      let pkt = build(s, d, &payload, false);
      let p = parse_packet(&pkt, true).unwrap();
      assert_eq!(p.src, sa(s));
      assert_eq!(p.dst, sa(d));
      assert_eq!(p.seg.seq, Seq(100));
      assert_eq!(p.seg.ack, Seq(200));
      assert_eq!(p.seg.flags, Flags::ACK | Flags::PSH);
      assert_eq!(p.seg.window, 512);
      assert_eq!(p.seg.payload, &payload[..]);
      assert_eq!(p.seg.options.timestamps, Some(Timestamps { val: 3, ecr: 4 }));
      assert_eq!(p.seg.options.sack.as_slice(), &[(Seq(5), Seq(9))]);
      assert_eq!(p.seg.seq_len(), 1001);
      // Any flipped bit is caught by a checksum (or changes the header's meaning so parsing fails).
      let v6 = p.src.is_ipv6();
      for i in 0..pkt.len() {
        if v6 && matches!(i, 1..=3 | 7) {
          continue; // Traffic class, flow label and hop limit are covered by no checksum.
        }
        let mut bad = pkt.clone();
        bad[i] ^= 0x10;
        if let Ok(q) = parse_packet(&bad, true) {
          panic!("flip at {i} accepted: {q:?}");
        }
      }
      // Partial checksum: the field is the pseudo-header sum; completing it gives the full packet.
      let part = build(s, d, &payload, true);
      assert!(parse_packet(&part, false).is_ok());
      let l4 = ip_header_len(&p.src.ip());
      let mut fixed = part.clone();
      fixed[l4 + 16..l4 + 18].copy_from_slice(&[0, 0]);
      let ph = u16::from_be_bytes([part[l4 + 16], part[l4 + 17]]) as u64;
      let c = checksum::finish(checksum::sum(&fixed[l4..], ph));
      fixed[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
      assert_eq!(fixed, pkt);
    }
  }

  #[test]
  fn wire_rejects_malformed() {
    let pkt = build("10.0.0.1:1000", "10.0.0.2:80", b"hello", false);
    for n in 0..pkt.len() {
      assert!(parse_packet(&pkt[..n], false).is_err(), "truncated to {n}");
    }
    let mut frag = pkt.clone();
    frag[6] |= 0x20;
    assert_eq!(parse_packet(&frag, false), Err(ParseError::Fragment));
    let mut udp = pkt.clone();
    udp[9] = 17;
    assert_eq!(parse_packet(&udp, false), Err(ParseError::NotTcp));
    let mut off = pkt.clone();
    off[20 + 12] = 0x40;
    assert_eq!(parse_packet(&off, false), Err(ParseError::BadDataOffset));
    let mut port0 = build("10.0.0.1:0", "10.0.0.2:80", b"", false);
    assert_eq!(parse_packet(&port0, true), Err(ParseError::BadAddress));
    port0[0] = 0x75;
    assert_eq!(parse_packet(&port0, false), Err(ParseError::BadVersion));
    // Trailing bytes after the IP total length (link padding) are ignored.
    let mut padded = pkt.clone();
    padded.extend_from_slice(&[0xee; 6]);
    assert_eq!(parse_packet(&padded, true).unwrap().seg.payload, b"hello");
    // IPv6 with a hop-by-hop header in front of TCP.
    let v6 = build("[fd00::1]:1000", "[fd00::2]:80", b"x", false);
    let mut ext = v6[..40].to_vec();
    ext[6] = 0;
    let plen = u16::from_be_bytes([v6[4], v6[5]]) + 8;
    ext[4..6].copy_from_slice(&plen.to_be_bytes());
    ext.extend_from_slice(&[PROTO_TCP, 0, 1, 4, 0, 0, 0, 0]);
    ext.extend_from_slice(&v6[40..]);
    assert_eq!(parse_packet(&ext, true).unwrap().seg.payload, b"x");
    ext[40] = 44;
    assert_eq!(parse_packet(&ext, false), Err(ParseError::Fragment));
  }
}
