//! The Internet checksum (RFC 1071), mirrored from `tunkit-core`'s so this crate needs no dependency:
//! partial sums are carried unfolded in a `u64` and folded once.

/// Adds two partial sums with end-around carry.
#[inline]
pub(crate) fn add(a: u64, b: u64) -> u64 {
  let (s, carry) = a.overflowing_add(b);
  s + carry as u64
}

/// Adds `data` (starting at an even offset of the message) to the partial sum `initial`.
pub(crate) fn sum(data: &[u8], initial: u64) -> u64 {
  let body_len = data.len() & !3;
  let (body, tail) = data.split_at(body_len);
  let mut acc: u64 = 0;
  for w in body.chunks_exact(4) {
    acc += u32::from_be_bytes([w[0], w[1], w[2], w[3]]) as u64;
  }
  let mut total = add(initial, acc);
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

/// Folds a partial sum to 16 bits.
#[inline]
pub(crate) fn fold(sum: u64) -> u16 {
  let mut s = (sum & 0xffff_ffff) + (sum >> 32);
  while s >> 16 != 0 {
    s = (s & 0xffff) + (s >> 16);
  }
  s as u16
}

/// The value for a checksum field: the complement of the folded sum.
#[inline]
pub(crate) fn finish(sum: u64) -> u16 {
  !fold(sum)
}

/// Partial sum of a pseudo-header (raw addresses of 4 or 16 bytes each, protocol, upper-layer length).
pub(crate) fn pseudo_header(src: &[u8], dst: &[u8], protocol: u8, len: u32) -> u64 {
  let s = sum(dst, sum(src, 0));
  add(s, (len >> 16) as u64 + (len & 0xffff) as u64 + protocol as u64)
}

#[cfg(test)]
mod tests {
  use super::*;

  fn slow(data: &[u8], initial: u64) -> u16 {
    let mut s: u64 = initial;
    let mut i = 0;
    while i < data.len() {
      let hi = data[i] as u64;
      let lo = if i + 1 < data.len() { data[i + 1] as u64 } else { 0 };
      s += (hi << 8) | lo;
      i += 2;
    }
    !fold(s)
  }

  #[test]
  fn checksum_rfc1071_example_and_reference() {
    let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
    assert_eq!(fold(sum(&data, 0)), 0xddf2);
    let mut x: u64 = 0x1234_5678_9abc_def1;
    for len in 0..200 {
      let data: Vec<u8> = (0..len)
        .map(|_| {
          x ^= x << 13;
          x ^= x >> 7;
          x ^= x << 17;
          x as u8
        })
        .collect();
      assert_eq!(finish(sum(&data, 77)), slow(&data, 77), "len {len}");
    }
    let ones = vec![0xffu8; 70_001];
    assert_eq!(finish(sum(&ones, 0)), slow(&ones, 0));
  }
}
