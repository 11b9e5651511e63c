//! Zero-copy views of IPv4, IPv6, TCP, UDP and ICMP headers, and [`Packet::parse`], a one-call summary of a
//! packet (family, protocol, addresses, ports, payload range).
//!
//! Each view's `parse` checks that the buffer holds the whole header and that the length fields are coherent,
//! so its accessors never go out of bounds. Nothing is copied; the views borrow the packet.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use super::checksum;
use super::{get16, get32, invalid, proto};
use crate::error::Result;

/// IP version of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
  V4,
  V6,
}

impl Family {
  /// The family announced by the first nibble, if it is 4 or 6.
  pub fn of(pkt: &[u8]) -> Option<Family> {
    match pkt.first().map(|b| b >> 4) {
      Some(4) => Some(Family::V4),
      Some(6) => Some(Family::V6),
      _ => None,
    }
  }
}

/// An IPv4 header (with its options) at the start of a packet.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Header<'a> {
  b: &'a [u8],
}

impl<'a> Ipv4Header<'a> {
  /// Length of a header without options.
  pub const MIN_LEN: usize = 20;
  /// "Don't fragment" in the flags/fragment-offset word.
  pub const DF: u16 = 0x4000;
  /// "More fragments" in the flags/fragment-offset word.
  pub const MF: u16 = 0x2000;

  /// Checks version 4, IHL ≥ 5, the header inside `pkt`, and `IHL*4 ≤ total length ≤ pkt.len()` (trailing
  /// bytes past the total length are allowed and ignored).
  pub fn parse(pkt: &'a [u8]) -> Result<Ipv4Header<'a>> {
    if pkt.len() < Self::MIN_LEN {
      return Err(invalid(format!(
        "IPv4 packet of {} bytes is shorter than its 20-byte header",
        pkt.len()
      )));
    }
    if pkt[0] >> 4 != 4 {
      return Err(invalid(format!("IP version {} is not 4", pkt[0] >> 4)));
    }
    let hlen = (pkt[0] & 0x0f) as usize * 4;
    if hlen < Self::MIN_LEN {
      return Err(invalid(format!("IPv4 header length {hlen} is below 20")));
    }
    let total = get16(pkt, 2) as usize;
    if hlen > pkt.len() || total < hlen || total > pkt.len() {
      return Err(invalid(format!(
        "IPv4 lengths are inconsistent: header {hlen}, total {total}, buffer {}",
        pkt.len()
      )));
    }
    Ok(Ipv4Header { b: &pkt[..hlen] })
  }

  /// The header bytes, options included.
  pub fn as_bytes(&self) -> &'a [u8] {
    self.b
  }
  pub fn version(&self) -> u8 {
    self.b[0] >> 4
  }
  /// Header length in 32-bit words.
  pub fn ihl(&self) -> u8 {
    self.b[0] & 0x0f
  }
  /// Header length in bytes.
  pub fn header_len(&self) -> usize {
    self.b.len()
  }
  /// Type of service (DSCP and ECN).
  pub fn tos(&self) -> u8 {
    self.b[1]
  }
  /// Length of the whole packet.
  pub fn total_len(&self) -> u16 {
    get16(self.b, 2)
  }
  pub fn id(&self) -> u16 {
    get16(self.b, 4)
  }
  /// The flags and fragment offset word (see [`Self::DF`], [`Self::MF`]).
  pub fn flags_fragment(&self) -> u16 {
    get16(self.b, 6)
  }
  pub fn dont_fragment(&self) -> bool {
    self.flags_fragment() & Self::DF != 0
  }
  pub fn more_fragments(&self) -> bool {
    self.flags_fragment() & Self::MF != 0
  }
  /// Fragment offset in bytes.
  pub fn fragment_offset(&self) -> usize {
    (self.flags_fragment() & 0x1fff) as usize * 8
  }
  /// True for any fragment (first, middle or last).
  pub fn is_fragment(&self) -> bool {
    self.more_fragments() || self.fragment_offset() != 0
  }
  pub fn ttl(&self) -> u8 {
    self.b[8]
  }
  pub fn protocol(&self) -> u8 {
    self.b[9]
  }
  pub fn checksum(&self) -> u16 {
    get16(self.b, 10)
  }
  pub fn src(&self) -> Ipv4Addr {
    Ipv4Addr::new(self.b[12], self.b[13], self.b[14], self.b[15])
  }
  pub fn dst(&self) -> Ipv4Addr {
    Ipv4Addr::new(self.b[16], self.b[17], self.b[18], self.b[19])
  }
  /// The options bytes (empty when IHL is 5).
  pub fn options(&self) -> &'a [u8] {
    &self.b[Self::MIN_LEN..]
  }
  /// True when the header checksum is right.
  pub fn checksum_valid(&self) -> bool {
    checksum::verify(self.b, 0)
  }
}

/// Where the upper-layer header of an IPv6 packet starts, after any extension headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Upper {
  /// The upper-layer protocol (the next header after the last extension header walked).
  pub protocol: u8,
  /// Offset of the upper-layer header in the packet.
  pub offset: usize,
  /// A fragment header was met: the upper layer is (part of) a fragment and cannot be offloaded.
  pub fragment: bool,
  /// A routing header with segments left was met: the pseudo-header destination is not the IPv6 destination.
  pub routed: bool,
}

/// The fixed 40-byte IPv6 header at the start of a packet.
#[derive(Debug, Clone, Copy)]
pub struct Ipv6Header<'a> {
  b: &'a [u8],
}

impl<'a> Ipv6Header<'a> {
  /// Length of the fixed header.
  pub const LEN: usize = 40;

  /// Checks version 6 and `40 + payload length ≤ pkt.len()` (trailing bytes are allowed and ignored). A
  /// payload length of 0 is taken literally (jumbograms are not supported).
  pub fn parse(pkt: &'a [u8]) -> Result<Ipv6Header<'a>> {
    if pkt.len() < Self::LEN {
      return Err(invalid(format!(
        "IPv6 packet of {} bytes is shorter than its 40-byte header",
        pkt.len()
      )));
    }
    if pkt[0] >> 4 != 6 {
      return Err(invalid(format!("IP version {} is not 6", pkt[0] >> 4)));
    }
    let payload = get16(pkt, 4) as usize;
    if Self::LEN + payload > pkt.len() {
      return Err(invalid(format!(
        "IPv6 payload length {payload} exceeds the {}-byte buffer",
        pkt.len()
      )));
    }
    Ok(Ipv6Header { b: &pkt[..Self::LEN] })
  }

  pub fn as_bytes(&self) -> &'a [u8] {
    self.b
  }
  pub fn traffic_class(&self) -> u8 {
    ((get16(self.b, 0) >> 4) & 0xff) as u8
  }
  pub fn flow_label(&self) -> u32 {
    get32(self.b, 0) & 0x000f_ffff
  }
  /// Length of everything after the fixed header, extension headers included.
  pub fn payload_len(&self) -> u16 {
    get16(self.b, 4)
  }
  /// Length of the whole packet (`40 + payload length`).
  pub fn total_len(&self) -> usize {
    Self::LEN + self.payload_len() as usize
  }
  pub fn next_header(&self) -> u8 {
    self.b[6]
  }
  pub fn hop_limit(&self) -> u8 {
    self.b[7]
  }
  pub fn src(&self) -> Ipv6Addr {
    Ipv6Addr::from(<[u8; 16]>::try_from(&self.b[8..24]).unwrap_or([0; 16]))
  }
  pub fn dst(&self) -> Ipv6Addr {
    Ipv6Addr::from(<[u8; 16]>::try_from(&self.b[24..40]).unwrap_or([0; 16]))
  }
}

/// Walks the extension headers of the IPv6 packet `pkt` (cut to its length) and finds the upper layer.
/// Hop-by-hop, routing and destination-options headers are skipped; a fragment header stops the walk.
pub fn ipv6_upper_layer(pkt: &[u8]) -> Result<Ipv6Upper> {
  let h = Ipv6Header::parse(pkt)?;
  let end = h.total_len();
  let mut next = h.next_header();
  let mut off = Ipv6Header::LEN;
  let mut routed = false;
  // Every extension header is at least 8 bytes, so the walk ends within end/8 steps.
  loop {
    match next {
      proto::HOPOPTS | proto::ROUTING | proto::DSTOPTS => {
        if off + 8 > end {
          return Err(invalid(format!(
            "IPv6 extension header {next} at {off} is truncated"
          )));
        }
        let len = (pkt[off + 1] as usize + 1) * 8;
        if off + len > end {
          return Err(invalid(format!(
            "IPv6 extension header {next} at {off} runs past the packet"
          )));
        }
        if next == proto::ROUTING && pkt[off + 3] != 0 {
          routed = true;
        }
        next = pkt[off];
        off += len;
      }
      proto::FRAGMENT => {
        if off + 8 > end {
          return Err(invalid("IPv6 fragment header is truncated"));
        }
        return Ok(Ipv6Upper {
          protocol: pkt[off],
          offset: off + 8,
          fragment: true,
          routed,
        });
      }
      _ => {
        return Ok(Ipv6Upper {
          protocol: next,
          offset: off,
          fragment: false,
          routed,
        })
      }
    }
  }
}

/// A TCP header (with its options) at the start of a transport segment.
#[derive(Debug, Clone, Copy)]
pub struct TcpHeader<'a> {
  b: &'a [u8],
}

impl<'a> TcpHeader<'a> {
  pub const MIN_LEN: usize = 20;
  /// Offset of the checksum field.
  pub const CHECKSUM_OFFSET: usize = 16;
  pub const FIN: u8 = 0x01;
  pub const SYN: u8 = 0x02;
  pub const RST: u8 = 0x04;
  pub const PSH: u8 = 0x08;
  pub const ACK: u8 = 0x10;
  pub const URG: u8 = 0x20;
  pub const ECE: u8 = 0x40;
  pub const CWR: u8 = 0x80;

  /// Checks that `seg` holds a header of at least 20 bytes and its whole data offset.
  pub fn parse(seg: &'a [u8]) -> Result<TcpHeader<'a>> {
    if seg.len() < Self::MIN_LEN {
      return Err(invalid(format!(
        "TCP segment of {} bytes is shorter than its 20-byte header",
        seg.len()
      )));
    }
    let hlen = (seg[12] >> 4) as usize * 4;
    if hlen < Self::MIN_LEN || hlen > seg.len() {
      return Err(invalid(format!(
        "TCP data offset {hlen} does not fit the {}-byte segment",
        seg.len()
      )));
    }
    Ok(TcpHeader { b: &seg[..hlen] })
  }

  pub fn as_bytes(&self) -> &'a [u8] {
    self.b
  }
  pub fn src_port(&self) -> u16 {
    get16(self.b, 0)
  }
  pub fn dst_port(&self) -> u16 {
    get16(self.b, 2)
  }
  pub fn seq(&self) -> u32 {
    get32(self.b, 4)
  }
  pub fn ack(&self) -> u32 {
    get32(self.b, 8)
  }
  /// Header length in 32-bit words.
  pub fn data_offset(&self) -> u8 {
    self.b[12] >> 4
  }
  /// Header length in bytes.
  pub fn header_len(&self) -> usize {
    self.b.len()
  }
  /// The flags byte (see the `FIN`…`CWR` constants).
  pub fn flags(&self) -> u8 {
    self.b[13]
  }
  pub fn window(&self) -> u16 {
    get16(self.b, 14)
  }
  pub fn checksum(&self) -> u16 {
    get16(self.b, 16)
  }
  pub fn urgent(&self) -> u16 {
    get16(self.b, 18)
  }
  /// The options bytes.
  pub fn options(&self) -> &'a [u8] {
    &self.b[Self::MIN_LEN..]
  }
  /// Length of the options in bytes.
  pub fn options_len(&self) -> usize {
    self.b.len() - Self::MIN_LEN
  }
}

/// The 8-byte UDP header at the start of a datagram.
#[derive(Debug, Clone, Copy)]
pub struct UdpHeader<'a> {
  b: &'a [u8],
}

impl<'a> UdpHeader<'a> {
  pub const LEN: usize = 8;
  /// Offset of the checksum field.
  pub const CHECKSUM_OFFSET: usize = 6;

  /// Checks that `seg` holds the header and that the length field covers the header and fits in `seg`.
  pub fn parse(seg: &'a [u8]) -> Result<UdpHeader<'a>> {
    if seg.len() < Self::LEN {
      return Err(invalid(format!(
        "UDP datagram of {} bytes is shorter than its 8-byte header",
        seg.len()
      )));
    }
    let len = get16(seg, 4) as usize;
    if len < Self::LEN || len > seg.len() {
      return Err(invalid(format!(
        "UDP length {len} does not fit the {}-byte datagram",
        seg.len()
      )));
    }
    Ok(UdpHeader { b: &seg[..Self::LEN] })
  }

  pub fn src_port(&self) -> u16 {
    get16(self.b, 0)
  }
  pub fn dst_port(&self) -> u16 {
    get16(self.b, 2)
  }
  /// Header plus payload length.
  pub fn length(&self) -> u16 {
    get16(self.b, 4)
  }
  pub fn checksum(&self) -> u16 {
    get16(self.b, 6)
  }
}

/// The first 8 bytes of an ICMPv4 or ICMPv6 message.
#[derive(Debug, Clone, Copy)]
pub struct IcmpHeader<'a> {
  b: &'a [u8],
}

impl<'a> IcmpHeader<'a> {
  pub const LEN: usize = 8;
  pub const V4_ECHO_REPLY: u8 = 0;
  pub const V4_ECHO_REQUEST: u8 = 8;
  pub const V6_ECHO_REQUEST: u8 = 128;
  pub const V6_ECHO_REPLY: u8 = 129;

  pub fn parse(msg: &'a [u8]) -> Result<IcmpHeader<'a>> {
    if msg.len() < Self::LEN {
      return Err(invalid(format!(
        "ICMP message of {} bytes is shorter than 8 bytes",
        msg.len()
      )));
    }
    Ok(IcmpHeader { b: &msg[..Self::LEN] })
  }

  pub fn icmp_type(&self) -> u8 {
    self.b[0]
  }
  pub fn code(&self) -> u8 {
    self.b[1]
  }
  pub fn checksum(&self) -> u16 {
    get16(self.b, 2)
  }
  /// Identifier of an echo request or reply (bytes 4-5).
  pub fn echo_id(&self) -> u16 {
    get16(self.b, 4)
  }
  /// Sequence number of an echo request or reply (bytes 6-7).
  pub fn echo_seq(&self) -> u16 {
    get16(self.b, 6)
  }
  /// True for an echo request of `family` with code 0.
  pub fn is_echo_request(&self, family: Family) -> bool {
    let ty = match family {
      Family::V4 => Self::V4_ECHO_REQUEST,
      Family::V6 => Self::V6_ECHO_REQUEST,
    };
    self.icmp_type() == ty && self.code() == 0
  }
}

/// What [`Packet::parse`] found above the IP layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
  Tcp {
    src_port: u16,
    dst_port: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    header_len: usize,
  },
  Udp {
    src_port: u16,
    dst_port: u16,
  },
  /// ICMPv4 over IPv4 or ICMPv6 over IPv6.
  Icmp {
    icmp_type: u8,
    code: u8,
  },
  /// An IP fragment: the transport header is not (wholly) here.
  Fragment,
  /// Another protocol; the payload range is the whole upper-layer part.
  Other,
}

/// A summary of one IP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
  pub family: Family,
  /// Upper-layer protocol (for IPv6, after the extension headers).
  pub protocol: u8,
  pub src: IpAddr,
  pub dst: IpAddr,
  /// Length of the packet per its IP header (the buffer may be longer).
  pub ip_len: usize,
  /// Offset of the transport header (IPv4 options and IPv6 extension headers included before it).
  pub l4_offset: usize,
  pub transport: Transport,
  /// The transport payload (after the TCP/UDP/ICMP header), as a range of the buffer.
  pub payload: Range<usize>,
}

impl Packet {
  /// Parses an IP packet: IP header, IPv6 extension headers, and the TCP/UDP/ICMP header. Returns an
  /// `InvalidPacket` error naming the first inconsistency.
  pub fn parse(pkt: &[u8]) -> Result<Packet> {
    let (family, protocol, src, dst, ip_len, l4_offset, fragment) = match Family::of(pkt) {
      Some(Family::V4) => {
        let h = Ipv4Header::parse(pkt)?;
        let fragment = h.is_fragment();
        (
          Family::V4,
          h.protocol(),
          h.src().into(),
          h.dst().into(),
          h.total_len() as usize,
          h.header_len(),
          fragment,
        )
      }
      Some(Family::V6) => {
        let h = Ipv6Header::parse(pkt)?;
        let up = ipv6_upper_layer(&pkt[..h.total_len()])?;
        (
          Family::V6,
          up.protocol,
          h.src().into(),
          h.dst().into(),
          h.total_len(),
          up.offset,
          up.fragment,
        )
      }
      None if pkt.is_empty() => return Err(invalid("empty packet")),
      None => return Err(invalid(format!("IP version {} is neither 4 nor 6", pkt[0] >> 4))),
    };
    let l4 = &pkt[l4_offset..ip_len];
    let icmp = match family {
      Family::V4 => proto::ICMP,
      Family::V6 => proto::ICMPV6,
    };
    let (transport, payload) = if fragment {
      (Transport::Fragment, l4_offset..ip_len)
    } else if protocol == proto::TCP {
      let t = TcpHeader::parse(l4)?;
      let tr = Transport::Tcp {
        src_port: t.src_port(),
        dst_port: t.dst_port(),
        seq: t.seq(),
        ack: t.ack(),
        flags: t.flags(),
        header_len: t.header_len(),
      };
      (tr, l4_offset + t.header_len()..ip_len)
    } else if protocol == proto::UDP {
      let u = UdpHeader::parse(l4)?;
      let tr = Transport::Udp {
        src_port: u.src_port(),
        dst_port: u.dst_port(),
      };
      (tr, l4_offset + UdpHeader::LEN..l4_offset + u.length() as usize)
    } else if protocol == icmp {
      let i = IcmpHeader::parse(l4)?;
      (
        Transport::Icmp {
          icmp_type: i.icmp_type(),
          code: i.code(),
        },
        l4_offset + IcmpHeader::LEN..ip_len,
      )
    } else {
      (Transport::Other, l4_offset..ip_len)
    };
    Ok(Packet {
      family,
      protocol,
      src,
      dst,
      ip_len,
      l4_offset,
      transport,
      payload,
    })
  }

  /// Source port of a TCP or UDP packet.
  pub fn src_port(&self) -> Option<u16> {
    match self.transport {
      Transport::Tcp { src_port, .. } | Transport::Udp { src_port, .. } => Some(src_port),
      _ => None,
    }
  }

  /// Destination port of a TCP or UDP packet.
  pub fn dst_port(&self) -> Option<u16> {
    match self.transport {
      Transport::Tcp { dst_port, .. } | Transport::Udp { dst_port, .. } => Some(dst_port),
      _ => None,
    }
  }
}

/// The source and destination address bytes of an IP packet whose header was already validated.
pub(crate) fn addr_bytes(pkt: &[u8], family: Family) -> (&[u8], &[u8]) {
  match family {
    Family::V4 => (&pkt[12..16], &pkt[16..20]),
    Family::V6 => (&pkt[8..24], &pkt[24..40]),
  }
}

/// Offset of the checksum field in the transport header of `protocol`, for the ones this crate fills.
pub(crate) fn checksum_offset(protocol: u8) -> Option<usize> {
  match protocol {
    proto::TCP => Some(TcpHeader::CHECKSUM_OFFSET),
    proto::UDP => Some(UdpHeader::CHECKSUM_OFFSET),
    proto::ICMP | proto::ICMPV6 => Some(2),
    _ => None,
  }
}

/// The transport checksum `pkt[l4..]` should carry, computed as if its checksum field were zero. The
/// pseudo-header uses the addresses in the IP header (ICMPv4 has none). UDP's is never 0. `None` for other
/// protocols.
pub(crate) fn transport_checksum(pkt: &[u8], family: Family, l4: usize, protocol: u8) -> Option<u16> {
  let field = checksum_offset(protocol)?;
  let seg = &pkt[l4..];
  if seg.len() < field + 2 {
    return None;
  }
  let initial = if protocol == proto::ICMP {
    0
  } else {
    let (src, dst) = addr_bytes(pkt, family);
    checksum::pseudo_header(src, dst, protocol, seg.len() as u32)
  };
  // The field sits at an even offset, so the two halves sum as they would with a zero field in between.
  let s = checksum::sum(&seg[field + 2..], checksum::sum(&seg[..field], initial));
  Some(if protocol == proto::UDP {
    checksum::finish_nonzero(s)
  } else {
    checksum::finish(s)
  })
}

/// Checks the checksums of a packet: the IPv4 header checksum, and the TCP, UDP (a zero IPv4 UDP checksum
/// means "none" and passes), ICMP or ICMPv6 checksum. Fragments and other protocols are checked at the IP
/// layer only.
pub fn checksums_valid(pkt: &[u8]) -> Result<bool> {
  let p = Packet::parse(pkt)?;
  if p.family == Family::V4 && !Ipv4Header::parse(pkt)?.checksum_valid() {
    return Ok(false);
  }
  let pkt = &pkt[..p.ip_len];
  let seg = &pkt[p.l4_offset..];
  let initial = match p.transport {
    Transport::Fragment | Transport::Other => return Ok(true),
    Transport::Udp { .. } if p.family == Family::V4 && get16(seg, 6) == 0 => return Ok(true),
    Transport::Icmp { .. } if p.family == Family::V4 => 0,
    _ => {
      let (src, dst) = addr_bytes(pkt, p.family);
      checksum::pseudo_header(src, dst, p.protocol, seg.len() as u32)
    }
  };
  Ok(checksum::verify(seg, initial))
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::error::ErrorKind;
  use crate::packet::build::{self, IpFields, TcpFields};
  use crate::packet::testutil::assert_checksums_ok;

  fn v4() -> IpFields {
    IpFields::new("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap())
  }
  fn v6() -> IpFields {
    IpFields::new("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap())
  }

  #[test]
  fn parses_tcp_udp_icmp_of_both_families() {
    let opts = [2, 4, 0x05, 0xb4, 1, 1, 4, 2];
    let tcp = TcpFields {
      src_port: 1234,
      dst_port: 80,
      seq: 7,
      ack: 9,
      flags: 0x18,
      window: 100,
      options: &opts,
      ..Default::default()
    };
    struct Case {
      name: &'static str,
      pkt: Vec<u8>,
      family: Family,
      protocol: u8,
      ports: Option<(u16, u16)>,
      l4: usize,
      payload: Range<usize>,
    }
    let cases = [
      Case {
        name: "tcp4+opts",
        pkt: build::tcp(&v4(), &tcp, b"hello").unwrap(),
        family: Family::V4,
        protocol: 6,
        ports: Some((1234, 80)),
        l4: 20,
        payload: 48..53,
      },
      Case {
        name: "tcp6+opts",
        pkt: build::tcp(&v6(), &tcp, b"hello").unwrap(),
        family: Family::V6,
        protocol: 6,
        ports: Some((1234, 80)),
        l4: 40,
        payload: 68..73,
      },
      Case {
        name: "udp4",
        pkt: build::udp(&v4(), 53, 5353, b"abc").unwrap(),
        family: Family::V4,
        protocol: 17,
        ports: Some((53, 5353)),
        l4: 20,
        payload: 28..31,
      },
      Case {
        name: "udp6 empty",
        pkt: build::udp(&v6(), 1, 2, b"").unwrap(),
        family: Family::V6,
        protocol: 17,
        ports: Some((1, 2)),
        l4: 40,
        payload: 48..48,
      },
      Case {
        name: "icmp4",
        pkt: build::icmp_echo(&v4(), false, 1, 2, b"ping").unwrap(),
        family: Family::V4,
        protocol: 1,
        ports: None,
        l4: 20,
        payload: 28..32,
      },
      Case {
        name: "icmp6",
        pkt: build::icmp_echo(&v6(), false, 1, 2, b"ping").unwrap(),
        family: Family::V6,
        protocol: 58,
        ports: None,
        l4: 40,
        payload: 48..52,
      },
    ];
    for c in cases {
      let p = Packet::parse(&c.pkt).unwrap_or_else(|e| panic!("{}: {e}", c.name));
      assert_eq!(p.family, c.family, "{}", c.name);
      assert_eq!(p.protocol, c.protocol, "{}", c.name);
      assert_eq!(p.src_port().zip(p.dst_port()), c.ports, "{}", c.name);
      assert_eq!(p.l4_offset, c.l4, "{}", c.name);
      assert_eq!(p.payload, c.payload, "{}", c.name);
      assert_eq!(p.ip_len, c.pkt.len(), "{}", c.name);
      assert!(checksums_valid(&c.pkt).unwrap(), "{}", c.name);
      assert_checksums_ok(&c.pkt);
    }
  }

  #[test]
  fn header_views_expose_fields() {
    let mut ip = v4();
    ip.id = 0x1234;
    ip.ttl = 17;
    ip.tos = 0xb8;
    let tcp = TcpFields {
      src_port: 1,
      dst_port: 2,
      seq: 0xdead_beef,
      ack: 0x0102_0304,
      flags: 0x12,
      window: 0xffff,
      urgent: 0,
      options: &[1, 1, 1, 1],
    };
    let pkt = build::tcp(&ip, &tcp, b"xyz").unwrap();
    let h = Ipv4Header::parse(&pkt).unwrap();
    assert_eq!(
      (h.version(), h.ihl(), h.tos(), h.total_len(), h.id()),
      (4, 5, 0xb8, 47, 0x1234)
    );
    assert!(h.dont_fragment() && !h.more_fragments() && !h.is_fragment());
    assert_eq!(
      (h.ttl(), h.protocol(), h.src(), h.dst()),
      (17, 6, ip_v4(1), ip_v4(2))
    );
    assert!(h.checksum_valid());
    let t = TcpHeader::parse(&pkt[20..]).unwrap();
    assert_eq!(
      (
        t.seq(),
        t.ack(),
        t.data_offset(),
        t.flags(),
        t.window(),
        t.options_len()
      ),
      (0xdead_beef, 0x0102_0304, 6, 0x12, 0xffff, 4)
    );

    let mut ip6 = v6();
    ip6.tos = 0xa5;
    ip6.flow_label = 0xabcde;
    ip6.ttl = 3;
    let pkt = build::udp(&ip6, 9, 10, &[0; 11]).unwrap();
    let h = Ipv6Header::parse(&pkt).unwrap();
    assert_eq!(
      (
        h.traffic_class(),
        h.flow_label(),
        h.payload_len(),
        h.next_header(),
        h.hop_limit()
      ),
      (0xa5, 0xabcde, 19, 17, 3)
    );
    assert_eq!(h.src(), "fd00::1".parse::<Ipv6Addr>().unwrap());
    let u = UdpHeader::parse(&pkt[40..]).unwrap();
    assert_eq!((u.src_port(), u.dst_port(), u.length()), (9, 10, 19));
  }

  fn ip_v4(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, last)
  }

  /// An IPv6 packet with the given extension headers (each `(type, bytes)`) and then `upper` as protocol 17.
  fn v6_with_ext(exts: &[(u8, Vec<u8>)], upper: &[u8]) -> Vec<u8> {
    let udp = build::udp(&v6(), 5, 6, upper).unwrap();
    let mut body = Vec::new();
    let mut first = proto::UDP;
    for (i, (ty, bytes)) in exts.iter().enumerate().rev() {
      let mut e = bytes.clone();
      e[0] = if i + 1 == exts.len() {
        proto::UDP
      } else {
        exts[i + 1].0
      };
      e[1] = (bytes.len() / 8 - 1) as u8;
      body.splice(0..0, e);
      first = *ty;
    }
    body.extend_from_slice(&udp[40..]);
    let mut pkt = udp[..40].to_vec();
    pkt[6] = first;
    pkt[4..6].copy_from_slice(&(body.len() as u16).to_be_bytes());
    pkt.extend_from_slice(&body);
    pkt
  }

  #[test]
  fn ipv6_extension_headers_are_walked() {
    let pkt = v6_with_ext(
      &[
        (proto::HOPOPTS, vec![0; 8]),
        (proto::ROUTING, vec![0; 24]),
        (proto::DSTOPTS, vec![0; 16]),
      ],
      b"data",
    );
    let p = Packet::parse(&pkt).unwrap();
    assert_eq!((p.protocol, p.l4_offset), (proto::UDP, 40 + 8 + 24 + 16));
    assert_eq!(p.src_port(), Some(5));
    // The checksum was computed without extension headers and still holds: they are not in the pseudo-header.
    assert!(checksums_valid(&pkt).unwrap());
    let up = ipv6_upper_layer(&pkt).unwrap();
    assert!(!up.fragment && !up.routed);

    let mut routing = vec![0; 24];
    routing[3] = 1; // segments left
    let pkt = v6_with_ext(&[(proto::ROUTING, routing)], b"x");
    assert!(ipv6_upper_layer(&pkt).unwrap().routed);

    let pkt = v6_with_ext(&[(proto::FRAGMENT, vec![0; 8])], b"x");
    let p = Packet::parse(&pkt).unwrap();
    assert_eq!(
      (p.transport, p.protocol, p.l4_offset),
      (Transport::Fragment, proto::UDP, 48)
    );
  }

  #[test]
  fn ipv4_fragments_have_no_ports() {
    let mut pkt = build::udp(&v4(), 1, 2, b"abcdefgh").unwrap();
    pkt[6] = 0x20; // MF
    pkt[10..12].fill(0);
    let c = checksum::checksum(&pkt[..20]);
    pkt[10..12].copy_from_slice(&c.to_be_bytes());
    let p = Packet::parse(&pkt).unwrap();
    assert_eq!(p.transport, Transport::Fragment);
    assert_eq!(p.src_port(), None);
  }

  #[test]
  fn malformed_packets_are_typed_errors() {
    let tcp = build::tcp(
      &v4(),
      &TcpFields {
        src_port: 1,
        dst_port: 2,
        flags: 0x10,
        ..Default::default()
      },
      b"p",
    )
    .unwrap();
    let udp6 = build::udp(&v6(), 1, 2, b"p").unwrap();
    let with = |base: &Vec<u8>, f: &dyn Fn(&mut Vec<u8>)| {
      let mut p = base.clone();
      f(&mut p);
      p
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
      ("empty", vec![]),
      ("version 5", with(&tcp, &|p| p[0] = 0x55)),
      ("ihl 4", with(&tcp, &|p| p[0] = 0x44)),
      ("ihl past buffer", vec![0x4f; 20]),
      ("short v4", tcp[..19].to_vec()),
      ("total length past buffer", with(&tcp, &|p| p[3] = 200)),
      ("total length below header", with(&tcp, &|p| p[3] = 10)),
      ("tcp data offset 4", with(&tcp, &|p| p[32] = 0x40)),
      ("tcp data offset past segment", with(&tcp, &|p| p[32] = 0xf0)),
      (
        "tcp truncated",
        with(&tcp, &|p| {
          p.truncate(30);
          p[3] = 30
        }),
      ),
      ("short v6", udp6[..39].to_vec()),
      ("v6 payload past buffer", with(&udp6, &|p| p[5] = 100)),
      ("udp length past datagram", with(&udp6, &|p| p[45] = 100)),
      ("udp length below 8", with(&udp6, &|p| p[45] = 7)),
      ("v6 ext header truncated", with(&udp6, &|p| p[6] = proto::HOPOPTS)),
      (
        "v6 ext header past packet",
        with(&udp6, &|p| {
          p[6] = proto::DSTOPTS;
          p[41] = 3
        }),
      ),
    ];
    for (name, pkt) in cases {
      let err = Packet::parse(&pkt).expect_err(name);
      assert_eq!(err.kind(), ErrorKind::InvalidPacket, "{name}");
      assert!(!err.message().is_empty());
    }
  }

  #[test]
  fn trailing_bytes_are_ignored() {
    let mut pkt = build::udp(&v4(), 1, 2, b"hi").unwrap();
    let len = pkt.len();
    pkt.extend_from_slice(&[0xee; 6]);
    let p = Packet::parse(&pkt).unwrap();
    assert_eq!((p.ip_len, p.payload), (len, 28..30));
    assert!(checksums_valid(&pkt).unwrap());
  }

  #[test]
  fn corrupted_checksums_are_detected() {
    let tcp = build::tcp(
      &v6(),
      &TcpFields {
        src_port: 1,
        dst_port: 2,
        flags: 0x10,
        ..Default::default()
      },
      b"payload",
    )
    .unwrap();
    for i in 40..tcp.len() {
      let mut p = tcp.clone();
      p[i] ^= 0x01;
      if i == 52 {
        continue; // the data-offset byte changes the header length, caught or not depending on the value
      }
      assert!(!checksums_valid(&p).unwrap_or(false), "byte {i} flipped");
    }
    let mut p = build::udp(&v4(), 1, 2, b"x").unwrap();
    p[8] ^= 1; // TTL: only the IPv4 header checksum covers it
    assert!(!checksums_valid(&p).unwrap());
    p[8] ^= 1;
    p[26..28].fill(0); // UDP over IPv4 without checksum
    assert!(checksums_valid(&p).unwrap());
  }
}
