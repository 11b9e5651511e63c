//! Test helpers: a tiny seeded PRNG and reference implementations written independently of the fast code.

use super::ip::{Family, Packet, Transport};
use super::proto;

/// xorshift64* — deterministic, seedable, no crates.
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

  /// Uniform-ish in `0..n` (`n > 0`).
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
}

/// RFC 1071 the slow way: one big-endian word at a time with an end-around carry after every addition.
pub fn slow_checksum(data: &[u8], initial: u64) -> u16 {
  let mut init = initial;
  while init > 0xffff {
    init = (init & 0xffff) + (init >> 16);
  }
  let mut s = init as u32;
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
  !(s as u16)
}

/// The pseudo-header built byte by byte, then summed slowly; returns the sum as an `initial` for
/// [`slow_checksum`].
fn slow_pseudo(pkt: &[u8], family: Family, protocol: u8, len: usize) -> u64 {
  let mut ph = Vec::new();
  match family {
    Family::V4 => {
      ph.extend_from_slice(&pkt[12..20]);
      ph.extend_from_slice(&[0, protocol]);
      ph.extend_from_slice(&(len as u16).to_be_bytes());
    }
    Family::V6 => {
      ph.extend_from_slice(&pkt[8..40]);
      ph.extend_from_slice(&(len as u32).to_be_bytes());
      ph.extend_from_slice(&[0, 0, 0, protocol]);
    }
  }
  (!slow_checksum(&ph, 0)) as u64
}

/// Checks every checksum of `pkt` with the slow reference: the IPv4 header checksum and the TCP/UDP/ICMP one.
/// Panics with a message naming the bad one.
pub fn assert_checksums_ok(pkt: &[u8]) {
  let p = Packet::parse(pkt).expect("packet parses");
  if p.family == Family::V4 {
    let ihl = (pkt[0] & 0x0f) as usize * 4;
    assert_eq!(slow_checksum(&pkt[..ihl], 0), 0, "IPv4 header checksum");
  }
  let l4 = &pkt[p.l4_offset..p.ip_len];
  match p.transport {
    Transport::Tcp { .. } | Transport::Udp { .. } => {
      if p.family == Family::V4 && p.protocol == proto::UDP && l4[6..8] == [0, 0] {
        return; // IPv4 UDP without checksum
      }
      let init = slow_pseudo(pkt, p.family, p.protocol, l4.len());
      assert_eq!(
        slow_checksum(l4, init),
        0,
        "transport checksum of {:?}",
        p.transport
      );
    }
    Transport::Icmp { .. } => {
      let init = if p.family == Family::V6 {
        slow_pseudo(pkt, p.family, proto::ICMPV6, l4.len())
      } else {
        0
      };
      assert_eq!(slow_checksum(l4, init), 0, "ICMP checksum");
    }
    _ => {}
  }
}
