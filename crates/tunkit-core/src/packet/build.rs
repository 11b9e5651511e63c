//! Packet builders for tests, examples and simple responders: IPv4/IPv6 with TCP, UDP or ICMP echo, every
//! checksum filled in, and [`echo_reply`] which answers a ping.

use std::net::IpAddr;

use super::ip::{
  transport_checksum, Family, IcmpHeader, Ipv4Header, Ipv6Header, Packet, TcpHeader, Transport,
};
use super::{checksum, invalid, proto, put16, put32};
use crate::error::{Error, ErrorKind, Result};

/// IP-layer fields of a built packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpFields {
  pub src: IpAddr,
  pub dst: IpAddr,
  /// TTL (IPv4) or hop limit (IPv6).
  pub ttl: u8,
  /// TOS (IPv4) or traffic class (IPv6).
  pub tos: u8,
  /// IPv4 identification (ignored for IPv6).
  pub id: u16,
  /// IPv4 "don't fragment" (ignored for IPv6).
  pub dont_fragment: bool,
  /// IPv6 flow label, 20 bits (ignored for IPv4).
  pub flow_label: u32,
}

impl IpFields {
  /// TTL 64, TOS 0, id 0, DF set, flow label 0.
  pub fn new(src: IpAddr, dst: IpAddr) -> IpFields {
    IpFields {
      src,
      dst,
      ttl: 64,
      tos: 0,
      id: 0,
      dont_fragment: true,
      flow_label: 0,
    }
  }
}

/// TCP header fields of a built packet. `options` must be a multiple of 4 bytes, at most 40.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpFields<'a> {
  pub src_port: u16,
  pub dst_port: u16,
  pub seq: u32,
  pub ack: u32,
  /// Flags byte (`TcpHeader::ACK` etc.).
  pub flags: u8,
  pub window: u16,
  pub urgent: u16,
  pub options: &'a [u8],
}

/// Builds an IP packet carrying a TCP segment.
pub fn tcp(ip: &IpFields, tcp: &TcpFields, payload: &[u8]) -> Result<Vec<u8>> {
  if tcp.options.len() & 3 != 0 || tcp.options.len() > 40 {
    return Err(Error::new(
      ErrorKind::InvalidArgument,
      format!(
        "TCP options must be a multiple of 4 bytes up to 40, not {}",
        tcp.options.len()
      ),
    ));
  }
  let hlen = TcpHeader::MIN_LEN + tcp.options.len();
  let mut seg = Vec::with_capacity(hlen + payload.len());
  seg.extend_from_slice(&tcp.src_port.to_be_bytes());
  seg.extend_from_slice(&tcp.dst_port.to_be_bytes());
  seg.extend_from_slice(&tcp.seq.to_be_bytes());
  seg.extend_from_slice(&tcp.ack.to_be_bytes());
  seg.push(((hlen / 4) as u8) << 4);
  seg.push(tcp.flags);
  seg.extend_from_slice(&tcp.window.to_be_bytes());
  seg.extend_from_slice(&[0, 0]);
  seg.extend_from_slice(&tcp.urgent.to_be_bytes());
  seg.extend_from_slice(tcp.options);
  seg.extend_from_slice(payload);
  ip_packet(ip, proto::TCP, &seg)
}

/// Builds an IP packet carrying a UDP datagram.
pub fn udp(ip: &IpFields, src_port: u16, dst_port: u16, payload: &[u8]) -> Result<Vec<u8>> {
  let len = u16::try_from(8 + payload.len()).map_err(|_| too_large(8 + payload.len()))?;
  let mut seg = Vec::with_capacity(8 + payload.len());
  seg.extend_from_slice(&src_port.to_be_bytes());
  seg.extend_from_slice(&dst_port.to_be_bytes());
  seg.extend_from_slice(&len.to_be_bytes());
  seg.extend_from_slice(&[0, 0]);
  seg.extend_from_slice(payload);
  ip_packet(ip, proto::UDP, &seg)
}

/// Builds an ICMP (IPv4) or ICMPv6 (IPv6) echo request, or reply when `reply` is set.
pub fn icmp_echo(ip: &IpFields, reply: bool, ident: u16, seq: u16, payload: &[u8]) -> Result<Vec<u8>> {
  let (protocol, ty) = match (ip.src, reply) {
    (IpAddr::V4(_), false) => (proto::ICMP, IcmpHeader::V4_ECHO_REQUEST),
    (IpAddr::V4(_), true) => (proto::ICMP, IcmpHeader::V4_ECHO_REPLY),
    (IpAddr::V6(_), false) => (proto::ICMPV6, IcmpHeader::V6_ECHO_REQUEST),
    (IpAddr::V6(_), true) => (proto::ICMPV6, IcmpHeader::V6_ECHO_REPLY),
  };
  let mut msg = Vec::with_capacity(8 + payload.len());
  msg.extend_from_slice(&[ty, 0, 0, 0]);
  msg.extend_from_slice(&ident.to_be_bytes());
  msg.extend_from_slice(&seq.to_be_bytes());
  msg.extend_from_slice(payload);
  ip_packet(ip, protocol, &msg)
}

/// Answers an ICMP/ICMPv6 echo request: a new packet from the request's destination to its source, type 0
/// (IPv4) or 129 (IPv6), same identifier, sequence and data, TTL/hop limit 64, checksums computed. IPv4
/// options and IPv6 extension headers of the request are not echoed. Errors if `request` is not a valid,
/// unfragmented echo request with correct checksums.
pub fn echo_reply(request: &[u8]) -> Result<Vec<u8>> {
  let p = Packet::parse(request)?;
  let msg = &request[p.l4_offset..p.ip_len];
  match p.transport {
    Transport::Icmp { .. } if IcmpHeader::parse(msg)?.is_echo_request(p.family) => {}
    _ => return Err(invalid("not an ICMP echo request")),
  }
  if !super::ip::checksums_valid(request)? {
    return Err(invalid("echo request has a bad checksum"));
  }
  let mut ip = IpFields::new(p.dst, p.src);
  if p.family == Family::V4 {
    let h = Ipv4Header::parse(request)?;
    ip.tos = h.tos();
    ip.id = h.id();
    ip.dont_fragment = h.dont_fragment();
  } else {
    let h = Ipv6Header::parse(request)?;
    ip.tos = h.traffic_class();
    ip.flow_label = h.flow_label();
  }
  let mut reply = msg.to_vec();
  reply[0] = match p.family {
    Family::V4 => IcmpHeader::V4_ECHO_REPLY,
    Family::V6 => IcmpHeader::V6_ECHO_REPLY,
  };
  reply[2..4].fill(0);
  ip_packet(&ip, p.protocol, &reply)
}

fn too_large(len: usize) -> Error {
  Error::new(
    ErrorKind::PacketTooLarge,
    format!("a {len}-byte packet does not fit a 16-bit length field"),
  )
}

/// Prepends the IP header to `seg` (whose checksum field is zero) and fills every checksum.
fn ip_packet(ip: &IpFields, protocol: u8, seg: &[u8]) -> Result<Vec<u8>> {
  let mut pkt;
  let family = match (ip.src, ip.dst) {
    (IpAddr::V4(src), IpAddr::V4(dst)) => {
      let total = u16::try_from(20 + seg.len()).map_err(|_| too_large(20 + seg.len()))?;
      pkt = Vec::with_capacity(total as usize);
      pkt.extend_from_slice(&[0x45, ip.tos]);
      pkt.extend_from_slice(&total.to_be_bytes());
      pkt.extend_from_slice(&ip.id.to_be_bytes());
      pkt.extend_from_slice(&(if ip.dont_fragment { Ipv4Header::DF } else { 0 }).to_be_bytes());
      pkt.extend_from_slice(&[ip.ttl, protocol, 0, 0]);
      pkt.extend_from_slice(&src.octets());
      pkt.extend_from_slice(&dst.octets());
      let c = checksum::checksum(&pkt);
      put16(&mut pkt, 10, c);
      Family::V4
    }
    (IpAddr::V6(src), IpAddr::V6(dst)) => {
      let payload = u16::try_from(seg.len()).map_err(|_| too_large(40 + seg.len()))?;
      pkt = Vec::with_capacity(40 + seg.len());
      pkt.extend_from_slice(&[0; 4]);
      put32(
        &mut pkt,
        0,
        6 << 28 | (ip.tos as u32) << 20 | (ip.flow_label & 0xf_ffff),
      );
      pkt.extend_from_slice(&payload.to_be_bytes());
      pkt.extend_from_slice(&[protocol, ip.ttl]);
      pkt.extend_from_slice(&src.octets());
      pkt.extend_from_slice(&dst.octets());
      Family::V6
    }
    _ => {
      return Err(Error::new(
        ErrorKind::InvalidAddress,
        format!(
          "source {} and destination {} are of different families",
          ip.src, ip.dst
        ),
      ))
    }
  };
  let l4 = pkt.len();
  pkt.extend_from_slice(seg);
  if let (Some(c), Some(off)) = (
    transport_checksum(&pkt, family, l4, protocol),
    super::ip::checksum_offset(protocol),
  ) {
    put16(&mut pkt, l4 + off, c);
  }
  Ok(pkt)
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::packet::ip::checksums_valid;
  use crate::packet::testutil::assert_checksums_ok;

  #[test]
  fn echo_reply_for_both_families() {
    for (src, dst) in [("192.0.2.1", "198.51.100.7"), ("2001:db8::1", "2001:db8::99")] {
      let mut ip = IpFields::new(src.parse().unwrap(), dst.parse().unwrap());
      ip.ttl = 5;
      ip.id = 77;
      let req = icmp_echo(&ip, false, 0x4242, 9, b"abcdefghijklmnopq").unwrap(); // odd length
      assert_checksums_ok(&req);
      let rep = echo_reply(&req).unwrap();
      assert_checksums_ok(&rep);
      let p = Packet::parse(&rep).unwrap();
      assert_eq!((p.src, p.dst), (ip.dst, ip.src));
      let want_type = if p.family == Family::V4 { 0 } else { 129 };
      assert_eq!(
        p.transport,
        Transport::Icmp {
          icmp_type: want_type,
          code: 0
        }
      );
      let h = IcmpHeader::parse(&rep[p.l4_offset..]).unwrap();
      assert_eq!((h.echo_id(), h.echo_seq()), (0x4242, 9));
      assert_eq!(&rep[p.payload.clone()], b"abcdefghijklmnopq");
      // Same as building the reply directly.
      let mut rip = IpFields::new(ip.dst, ip.src);
      rip.id = 77;
      assert_eq!(
        rep,
        icmp_echo(&rip, true, 0x4242, 9, b"abcdefghijklmnopq").unwrap()
      );
    }
  }

  #[test]
  fn echo_reply_refuses_other_packets() {
    let ip = IpFields::new("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
    let reply = icmp_echo(&ip, true, 1, 1, b"x").unwrap();
    let udp = udp(&ip, 1, 2, b"x").unwrap();
    let mut bad = icmp_echo(&ip, false, 1, 1, b"x").unwrap();
    bad[25] ^= 0xff;
    for pkt in [reply, udp, bad, vec![0x45]] {
      assert_eq!(echo_reply(&pkt).unwrap_err().kind(), ErrorKind::InvalidPacket);
    }
  }

  #[test]
  fn builder_errors() {
    let v4: IpAddr = "10.0.0.1".parse().unwrap();
    let v6: IpAddr = "::1".parse().unwrap();
    assert_eq!(
      udp(&IpFields::new(v4, v6), 1, 2, b"").unwrap_err().kind(),
      ErrorKind::InvalidAddress
    );
    let t = TcpFields {
      options: &[1, 1, 1],
      ..Default::default()
    };
    assert_eq!(
      tcp(&IpFields::new(v4, v4), &t, b"").unwrap_err().kind(),
      ErrorKind::InvalidArgument
    );
    let big = vec![0; 65_536 - 28];
    let err = udp(&IpFields::new(v4, v4), 1, 2, &big)
      .map(|p| p.len())
      .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PacketTooLarge);
    assert!(udp(&IpFields::new(v4, v4), 1, 2, &big[1..]).is_ok());
    // IPv6's payload length excludes the fixed header: 65527 bytes of UDP payload still fit, 65528 do not.
    assert!(udp(&IpFields::new(v6, v6), 1, 2, &vec![0; 65_527]).is_ok());
    let err = udp(&IpFields::new(v6, v6), 1, 2, &vec![0; 65_528])
      .map(|p| p.len())
      .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PacketTooLarge);
  }

  #[test]
  fn built_packets_verify_with_slow_reference() {
    let mut rng = crate::packet::testutil::Rng::new(1);
    for len in 0..64 {
      for (s, d) in [("10.1.2.3", "10.3.2.1"), ("fe80::1", "ff02::1:2")] {
        let ip = IpFields::new(s.parse().unwrap(), d.parse().unwrap());
        let payload = rng.bytes(len);
        let t = TcpFields {
          src_port: 9,
          dst_port: 10,
          seq: rng.next() as u32,
          flags: 0x10,
          options: &[1, 1, 1, 0],
          ..Default::default()
        };
        for pkt in [
          tcp(&ip, &t, &payload).unwrap(),
          udp(&ip, 3, 4, &payload).unwrap(),
          icmp_echo(&ip, false, 1, 2, &payload).unwrap(),
        ] {
          assert_checksums_ok(&pkt);
          assert!(checksums_valid(&pkt).unwrap());
        }
      }
    }
  }
}
