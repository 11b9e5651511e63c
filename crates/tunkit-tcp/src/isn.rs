//! Initial sequence numbers per RFC 6528: `ISN = M + F(localip, localport, remoteip, remoteport, key)`, `M`
//! a clock ticking every 4 µs and `F` a keyed hash: SipHash-2-4 (written here, std has no keyed one) with
//! the 128-bit key the caller gives [`crate::Config::secret`]. The same hash (another domain byte) gives
//! each connection's timestamp offset (RFC 7323 section 7.1) and the endpoint's ephemeral-port start.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// SipHash-2-4 of `data` under the key `k`.
pub(crate) fn siphash24(k: [u8; 16], data: &[u8]) -> u64 {
  let k0 = u64::from_le_bytes(k[..8].try_into().unwrap());
  let k1 = u64::from_le_bytes(k[8..].try_into().unwrap());
  let mut v = [
    k0 ^ 0x736f_6d65_7073_6575,
    k1 ^ 0x646f_7261_6e64_6f6d,
    k0 ^ 0x6c79_6765_6e65_7261,
    k1 ^ 0x7465_6462_7974_6573,
  ];
  fn round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
  }
  let mut chunks = data.chunks_exact(8);
  for c in &mut chunks {
    let m = u64::from_le_bytes(c.try_into().unwrap());
    v[3] ^= m;
    round(&mut v);
    round(&mut v);
    v[0] ^= m;
  }
  let rest = chunks.remainder();
  let mut last = [0u8; 8];
  last[..rest.len()].copy_from_slice(rest);
  last[7] = data.len() as u8;
  let m = u64::from_le_bytes(last);
  v[3] ^= m;
  round(&mut v);
  round(&mut v);
  v[0] ^= m;
  v[2] ^= 0xff;
  for _ in 0..4 {
    round(&mut v);
  }
  v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// Hash of a 4-tuple with a domain byte (0: ISN, 1: timestamp offset, 2: port choice).
pub(crate) fn tuple_hash(key: [u8; 16], domain: u8, local: SocketAddr, remote: SocketAddr) -> u64 {
  let mut buf = [0u8; 1 + 2 * 18];
  buf[0] = domain;
  let mut n = 1;
  for sa in [local, remote] {
    match sa.ip() {
      IpAddr::V4(a) => {
        buf[n..n + 4].copy_from_slice(&a.octets());
        n += 4;
      }
      IpAddr::V6(a) => {
        buf[n..n + 16].copy_from_slice(&a.octets());
        n += 16;
      }
    }
    buf[n..n + 2].copy_from_slice(&sa.port().to_be_bytes());
    n += 2;
  }
  siphash24(key, &buf[..n])
}

/// The RFC 6528 ISN for a connection opened at `now`.
pub(crate) fn isn(key: [u8; 16], now: Duration, local: SocketAddr, remote: SocketAddr) -> u32 {
  let m = (now.as_nanos() / 4000) as u32;
  m.wrapping_add(tuple_hash(key, 0, local, remote) as u32)
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn siphash_reference_vectors() {
    // The reference vectors of the SipHash paper: key 00..0f, messages 00..(n-1).
    let key: [u8; 16] = std::array::from_fn(|i| i as u8);
    let msg: Vec<u8> = (0..64).collect();
    assert_eq!(siphash24(key, &msg[..0]), 0x726f_db47_dd0e_0e31);
    assert_eq!(siphash24(key, &msg[..1]), 0x74f8_39c5_93dc_67fd);
    assert_eq!(siphash24(key, &msg[..8]), 0x93f5_f579_9a93_2462);
    assert_eq!(siphash24(key, &msg[..15]), 0xa129_ca61_49be_45e5);
  }

  #[test]
  fn isn_is_keyed_tuple_specific_and_clocked() {
    let a: SocketAddr = "10.0.0.1:1000".parse().unwrap();
    let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
    let c: SocketAddr = "10.0.0.2:81".parse().unwrap();
    let k1 = [1u8; 16];
    let k2 = [2u8; 16];
    let t = Duration::from_secs(5);
    assert_eq!(isn(k1, t, a, b), isn(k1, t, a, b));
    assert_ne!(isn(k1, t, a, b), isn(k2, t, a, b));
    assert_ne!(isn(k1, t, a, b), isn(k1, t, a, c));
    let later = isn(k1, t + Duration::from_micros(400), a, b);
    assert_eq!(later.wrapping_sub(isn(k1, t, a, b)), 100, "M ticks every 4 us");
  }
}
