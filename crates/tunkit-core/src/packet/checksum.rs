//! The Internet checksum (RFC 1071): the ones'-complement of the ones'-complement sum of the data taken as
//! big-endian 16-bit words, an odd trailing byte padded with a zero byte.
//!
//! Partial sums are carried *unfolded* in a `u64` (see [`sum`]) so pieces (pseudo-header, header, payload)
//! can be added cheaply and folded once with [`fold`]. A partial sum is always in the big-endian word domain:
//! adding `0x0102` to it means the bytes `01 02`.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Adds two partial sums with end-around carry (valid because 2^64 ≡ 1 modulo 0xFFFF).
#[inline]
pub fn add(a: u64, b: u64) -> u64 {
  let (s, carry) = a.overflowing_add(b);
  s + carry as u64
}

/// Adds `data` to the running partial sum `initial`. `data` is taken to start at an even offset of the
/// checksummed message (as every header and payload does); an odd trailing byte is padded with zero.
///
/// The bulk is summed as native-endian 32-bit words into a 64-bit accumulator (which the compiler vectorizes)
/// and byte-swapped once at the end: the ones'-complement sum is independent of byte order up to that final
/// swap (RFC 1071 section 2(B)).
pub fn sum(data: &[u8], initial: u64) -> u64 {
  let body_len = data.len() & !3;
  let (body, tail) = data.split_at(body_len);
  let mut acc: u64 = 0;
  // 4-byte words: 2^32 of them would be needed to overflow the u64, far beyond any packet.
  for word in body.chunks_exact(4) {
    acc += u32::from_ne_bytes([word[0], word[1], word[2], word[3]]) as u64;
  }
  let native = fold(acc);
  let be = if cfg!(target_endian = "little") {
    native.swap_bytes()
  } else {
    native
  };
  let mut total = add(initial, be as u64);
  let mut rest = tail;
  if rest.len() >= 2 {
    total = add(total, u16::from_be_bytes([rest[0], rest[1]]) as u64);
    rest = &rest[2..];
  }
  if let Some(&last) = rest.first() {
    total = add(total, (last as u64) << 8);
  }
  total
}

/// Folds a partial sum to 16 bits with end-around carry. The result is 0 only when the sum is 0.
#[inline]
pub fn fold(sum: u64) -> u16 {
  let mut s = (sum & 0xffff_ffff) + (sum >> 32);
  while s >> 16 != 0 {
    s = (s & 0xffff) + (s >> 16);
  }
  s as u16
}

/// The value to store in a checksum field: the complement of the folded sum.
#[inline]
pub fn finish(sum: u64) -> u16 {
  !fold(sum)
}

/// Like [`finish`] but never 0: a computed 0 is sent as 0xFFFF (the same number in ones'-complement). UDP
/// needs this because a 0 UDP checksum means "none"; the kernel does the same when it completes any partial
/// checksum.
#[inline]
pub fn finish_nonzero(sum: u64) -> u16 {
  match finish(sum) {
    0 => 0xffff,
    c => c,
  }
}

/// The Internet checksum of `data` (for example an IPv4 header whose checksum field is zero).
pub fn checksum(data: &[u8]) -> u16 {
  finish(sum(data, 0))
}

/// True when `data`, checksum field included, sums (with `initial`, for example a pseudo-header) to all ones.
pub fn verify(data: &[u8], initial: u64) -> bool {
  fold(sum(data, initial)) == 0xffff
}

/// Incremental update (RFC 1624, equation 3: `HC' = ~(~HC + ~m + m')`) of checksum `csum` when a 16-bit word
/// at an even offset changes from `old` to `new`.
#[inline]
pub fn update16(csum: u16, old: u16, new: u16) -> u16 {
  !fold((!csum) as u64 + (!old) as u64 + new as u64)
}

/// [`update16`] for a 32-bit field (an IPv4 address, a TCP sequence number) at an even offset.
#[inline]
pub fn update32(csum: u16, old: u32, new: u32) -> u16 {
  let c = update16(csum, (old >> 16) as u16, (new >> 16) as u16);
  update16(c, old as u16, new as u16)
}

/// [`update16`] for a byte range: `old` was replaced by `new` (same length, starting at an even offset of the
/// checksummed data). Handy for address rewrites (NAT) of either family.
pub fn update_bytes(csum: u16, old: &[u8], new: &[u8]) -> u16 {
  debug_assert_eq!(old.len(), new.len());
  let s = (!csum) as u64 + (!fold(sum(old, 0))) as u64 + fold(sum(new, 0)) as u64;
  !fold(s)
}

/// Partial sum of a pseudo-header given raw addresses (4 bytes each for IPv4, 16 for IPv6), the upper-layer
/// protocol and the upper-layer length (transport header plus payload).
pub fn pseudo_header(src: &[u8], dst: &[u8], protocol: u8, len: u32) -> u64 {
  let s = sum(dst, sum(src, 0));
  add(s, (len >> 16) as u64 + (len & 0xffff) as u64 + protocol as u64)
}

/// Partial sum of the IPv4 pseudo-header (RFC 793/768): source, destination, zero, protocol, length.
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: u16) -> u64 {
  pseudo_header(&src.octets(), &dst.octets(), protocol, len as u32)
}

/// Partial sum of the IPv6 pseudo-header (RFC 8200 section 8.1): source, destination, 32-bit upper-layer
/// length, three zero bytes, next header.
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, protocol: u8, len: u32) -> u64 {
  pseudo_header(&src.octets(), &dst.octets(), protocol, len)
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::packet::testutil::{slow_checksum, Rng};

  #[test]
  fn rfc1071_example() {
    // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to 0xddf2.
    let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
    assert_eq!(fold(sum(&data, 0)), 0xddf2);
    assert_eq!(checksum(&data), !0xddf2);
  }

  #[test]
  fn known_ipv4_header() {
    // A textbook header (Wikipedia "IPv4 header checksum"): checksum 0xb861.
    let mut h = [
      0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0,
      0xa8, 0x00, 0xc7,
    ];
    assert_eq!(checksum(&h), 0xb861);
    h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
    assert!(verify(&h, 0));
    assert_eq!(checksum(&h), 0);
  }

  #[test]
  fn empty_and_edge_inputs() {
    assert_eq!(sum(&[], 0), 0);
    assert_eq!(checksum(&[]), 0xffff);
    assert_eq!(checksum(&[0xff]), !0xff00);
    assert_eq!(fold(u64::MAX), 0xffff);
    assert_eq!(fold(0x1_0000), 1);
    assert_eq!(add(u64::MAX, 1), 1);
    assert!(!verify(&[0, 0], 0));
    assert_eq!(finish_nonzero(0xffff), 0xffff);
    assert_eq!(finish(0xffff), 0);
  }

  #[test]
  fn matches_slow_reference_for_all_lengths() {
    let mut rng = Rng::new(7);
    for len in 0..300 {
      for _ in 0..4 {
        let data = rng.bytes(len);
        let initial = rng.next() >> rng.below(64);
        let slow = slow_checksum(&data, initial);
        assert_eq!(
          finish(sum(&data, initial)),
          slow,
          "len {len} initial {initial:#x}"
        );
      }
    }
    // All-ones data exercises the carries.
    let ones = vec![0xffu8; 70_001];
    assert_eq!(finish(sum(&ones, 0)), slow_checksum(&ones, 0));
  }

  #[test]
  fn sums_compose_over_even_splits() {
    let mut rng = Rng::new(11);
    let data = rng.bytes(1001);
    for cut in (0..data.len()).step_by(2) {
      let whole = fold(sum(&data, 0));
      let parts = fold(sum(&data[cut..], sum(&data[..cut], 0)));
      assert_eq!(whole, parts, "cut {cut}");
    }
  }

  #[test]
  fn incremental_update_matches_recompute() {
    let mut rng = Rng::new(3);
    for _ in 0..2000 {
      let words = 4 + rng.below(40) as usize;
      let mut data = rng.bytes(2 * words);
      let before = checksum(&data);
      let off = 2 * rng.below(words as u64 - 1) as usize;
      let old16 = crate::packet::get16(&data, off);
      let new16 = rng.next() as u16;
      crate::packet::put16(&mut data, off, new16);
      let inc = update16(before, old16, new16);
      assert_same_checksum(checksum(&data), inc);

      let before = checksum(&data);
      let off = 2 * rng.below(words as u64 - 2) as usize;
      let old32 = crate::packet::get32(&data, off);
      let new32 = rng.next() as u32;
      crate::packet::put32(&mut data, off, new32);
      let inc = update32(before, old32, new32);
      assert_same_checksum(checksum(&data), inc);
      assert!(verify_with(&data, inc));
    }
  }

  /// Equal, or the two ones'-complement representations of zero (RFC 1624 section 3).
  fn assert_same_checksum(full: u16, incremental: u16) {
    assert!(
      full == incremental || (full == 0 && incremental == 0xffff) || (full == 0xffff && incremental == 0),
      "recomputed {full:#06x} vs incremental {incremental:#06x}"
    );
  }

  fn verify_with(data: &[u8], csum: u16) -> bool {
    fold(sum(data, csum as u64)) == 0xffff
  }

  #[test]
  fn update_bytes_for_addresses() {
    let mut rng = Rng::new(5);
    for _ in 0..500 {
      let mut data = rng.bytes(40);
      let before = checksum(&data);
      let old = data[8..24].to_vec();
      let new = rng.bytes(16);
      data[8..24].copy_from_slice(&new);
      let inc = update_bytes(before, &old, &new);
      assert!(verify_with(&data, inc));
    }
  }

  #[test]
  fn pseudo_headers_match_hand_layout() {
    let s4 = Ipv4Addr::new(10, 0, 0, 1);
    let d4 = Ipv4Addr::new(192, 168, 1, 200);
    let mut ph = Vec::new();
    ph.extend_from_slice(&s4.octets());
    ph.extend_from_slice(&d4.octets());
    ph.extend_from_slice(&[0, 6, 0x05, 0xdc]);
    assert_eq!(fold(pseudo_header_v4(s4, d4, 6, 1500)), fold(sum(&ph, 0)));

    let s6: Ipv6Addr = "fd00::1".parse().unwrap();
    let d6: Ipv6Addr = "2001:db8:ffff::abcd".parse().unwrap();
    let mut ph = Vec::new();
    ph.extend_from_slice(&s6.octets());
    ph.extend_from_slice(&d6.octets());
    ph.extend_from_slice(&70_000u32.to_be_bytes());
    ph.extend_from_slice(&[0, 0, 0, 17]);
    assert_eq!(fold(pseudo_header_v6(s6, d6, 17, 70_000)), fold(sum(&ph, 0)));
  }
}
