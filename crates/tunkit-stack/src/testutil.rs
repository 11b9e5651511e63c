//! Test helpers: a seeded PRNG, standard configurations, packet builders and a checksum reference written
//! independently of the incremental code.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tunkit_core::packet::build::{self, IpFields, TcpFields};
use tunkit_core::packet::{proto, Family, Packet, Transport};

use crate::{FamilyConfig, StackConfig};

/// xorshift64*: deterministic, seedable, no crates.
pub struct Rng(u64);

impl Rng {
  pub fn new(seed: u64) -> Rng {
    Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
  }

  pub fn next(&mut self) -> u64 {
    let mut x = self.0;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    self.0 = x;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
  }

  /// In `0..n` (`n > 0`).
  pub fn below(&mut self, n: u64) -> u64 {
    self.next() % n
  }

  /// True with probability `1/n`.
  pub fn one_in(&mut self, n: u64) -> bool {
    self.below(n) == 0
  }

  pub fn bytes(&mut self, n: usize) -> Vec<u8> {
    (0..n).map(|_| self.next() as u8).collect()
  }

  /// Fewer than `max` random bytes.
  pub fn some_bytes(&mut self, max: u64) -> Vec<u8> {
    let n = self.below(max) as usize;
    self.bytes(n)
  }
}

pub const P: u16 = 4000;

pub fn ip(s: &str) -> IpAddr {
  s.parse().unwrap()
}

pub fn sa(s: &str) -> SocketAddr {
  s.parse().unwrap()
}

/// IPv4 `10.7.0.1/24` with NAT `10.7.0.2`, IPv6 `fd07::1/64` with NAT `fd07::2`; listener port [`P`].
pub fn config() -> StackConfig {
  let mut c = StackConfig::new(P);
  c.v4 = Some(FamilyConfig::new(ip("10.7.0.1"), vec![ip("10.7.0.2")], 24));
  c.v6 = Some(FamilyConfig::new(ip("fd07::1"), vec![ip("fd07::2")], 64));
  c.quarantine = Duration::from_secs(60);
  c
}

/// The gateway `A` of `addr`'s family in [`config`].
pub fn gateway_of(addr: SocketAddr) -> IpAddr {
  if addr.is_ipv4() {
    ip("10.7.0.1")
  } else {
    ip("fd07::1")
  }
}

/// A TCP segment `src -> dst`.
pub fn tcp(src: SocketAddr, dst: SocketAddr, flags: u8, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
  let mut ipf = IpFields::new(src.ip(), dst.ip());
  ipf.id = 0x1234;
  ipf.flow_label = 0xabcde;
  let opts = [2, 4, 0x05, 0xb4];
  let t = TcpFields {
    src_port: src.port(),
    dst_port: dst.port(),
    seq,
    ack,
    flags,
    window: 65_000,
    urgent: 0,
    options: if flags & 0x02 != 0 { &opts } else { &[] },
  };
  build::tcp(&ipf, &t, payload).unwrap()
}

/// A UDP datagram `src -> dst`.
pub fn udp(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
  build::udp(
    &IpFields::new(src.ip(), dst.ip()),
    src.port(),
    dst.port(),
    payload,
  )
  .unwrap()
}

/// An echo request `src -> dst`.
pub fn ping(src: IpAddr, dst: IpAddr, payload: &[u8]) -> Vec<u8> {
  build::icmp_echo(&IpFields::new(src, dst), false, 0x77, 3, payload).unwrap()
}

/// (source, destination) endpoints of a TCP/UDP packet.
pub fn endpoints(pkt: &[u8]) -> (SocketAddr, SocketAddr) {
  let p = Packet::parse(pkt).unwrap();
  (
    SocketAddr::new(p.src, p.src_port().unwrap()),
    SocketAddr::new(p.dst, p.dst_port().unwrap()),
  )
}

/// RFC 1071 the slow way: one word at a time, end-around carry after each addition.
fn slow_sum(data: &[u8], mut s: u32) -> u32 {
  let mut i = 0;
  while i < data.len() {
    let hi = data[i] as u32;
    let lo = if i + 1 < data.len() { data[i + 1] as u32 } else { 0 };
    s += (hi << 8) | lo;
    if s > 0xffff {
      s -= 0xffff;
    }
    i += 2;
  }
  s
}

/// Checksum of `data` with the 16-bit field at `field` taken as zero.
fn recompute(data: &[u8], field: usize, initial: u32) -> u16 {
  let mut d = data.to_vec();
  d[field] = 0;
  d[field + 1] = 0;
  !(slow_sum(&d, initial) as u16)
}

fn same(stored: u16, computed: u16) -> bool {
  // 0x0000 and 0xffff are the same number in ones'-complement (RFC 1624 section 3).
  stored == computed || (stored == 0xffff && computed == 0) || (stored == 0 && computed == 0xffff)
}

/// Recomputes every checksum of `pkt` from scratch (IPv4 header, TCP/UDP with the pseudo-header, ICMP/ICMPv6)
/// and compares it with the stored one. `Err` names the wrong one; packets that do not parse are `Err`.
pub fn checksums_recomputed_ok(pkt: &[u8]) -> Result<(), String> {
  let p = Packet::parse(pkt).map_err(|e| e.to_string())?;
  let pkt = &pkt[..p.ip_len];
  if p.family == Family::V4 {
    let ihl = (pkt[0] & 0x0f) as usize * 4;
    let stored = u16::from_be_bytes([pkt[10], pkt[11]]);
    if !same(stored, recompute(&pkt[..ihl], 10, 0)) {
      return Err("IPv4 header checksum".into());
    }
  }
  let l4 = &pkt[p.l4_offset..];
  let pseudo = |protocol: u8| -> u32 {
    let mut ph = Vec::new();
    match p.family {
      Family::V4 => {
        ph.extend_from_slice(&pkt[12..20]);
        ph.extend_from_slice(&[0, protocol]);
        ph.extend_from_slice(&(l4.len() as u16).to_be_bytes());
      }
      Family::V6 => {
        ph.extend_from_slice(&pkt[8..40]);
        ph.extend_from_slice(&(l4.len() as u32).to_be_bytes());
        ph.extend_from_slice(&[0, 0, 0, protocol]);
      }
    }
    slow_sum(&ph, 0)
  };
  let (field, initial) = match p.transport {
    Transport::Tcp { .. } => (16, pseudo(proto::TCP)),
    Transport::Udp { .. } => {
      if p.family == Family::V4 && l4[6..8] == [0, 0] {
        return Ok(());
      }
      (6, pseudo(proto::UDP))
    }
    Transport::Icmp { .. } if p.family == Family::V6 => (2, pseudo(proto::ICMPV6)),
    Transport::Icmp { .. } => (2, 0),
    _ => return Ok(()),
  };
  let stored = u16::from_be_bytes([l4[field], l4[field + 1]]);
  if same(stored, recompute(l4, field, initial)) {
    Ok(())
  } else {
    Err(format!("transport checksum of {:?}", p.transport))
  }
}

/// Panics unless [`checksums_recomputed_ok`].
pub fn assert_checksums(pkt: &[u8]) {
  if let Err(what) = checksums_recomputed_ok(pkt) {
    panic!("bad {what} in {pkt:02x?}");
  }
}

/// The folded pseudo-header sum a `NEEDS_CSUM` TCP packet carries in its checksum field, from its current
/// addresses and length. `None` unless `pkt` is unfragmented TCP.
pub fn partial_sum(pkt: &[u8]) -> Option<u16> {
  let p = Packet::parse(pkt).ok()?;
  if !matches!(p.transport, Transport::Tcp { .. }) {
    return None;
  }
  let (s, d) = match p.family {
    Family::V4 => (&pkt[12..16], &pkt[16..20]),
    Family::V6 => (&pkt[8..24], &pkt[24..40]),
  };
  let ph = tunkit_core::packet::checksum::pseudo_header(s, d, proto::TCP, (p.ip_len - p.l4_offset) as u32);
  Some(tunkit_core::packet::checksum::fold(ph))
}

/// Turns a TCP packet into its `NEEDS_CSUM` form (checksum field = pseudo-header sum). False if not TCP.
pub fn make_partial(pkt: &mut [u8]) -> bool {
  let Some(sum) = partial_sum(pkt) else { return false };
  let l4 = Packet::parse(pkt).unwrap().l4_offset;
  pkt[l4 + 16..l4 + 18].copy_from_slice(&sum.to_be_bytes());
  true
}

/// Whether a `NEEDS_CSUM` TCP packet's field still matches its (rewritten) pseudo-header.
pub fn partial_ok(pkt: &[u8]) -> bool {
  let Some(want) = partial_sum(pkt) else {
    return false;
  };
  let l4 = Packet::parse(pkt).unwrap().l4_offset;
  same(u16::from_be_bytes([pkt[l4 + 16], pkt[l4 + 17]]), want)
}
