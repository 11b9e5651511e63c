//! Test helpers: a seeded PRNG, addresses, configurations.

use std::net::SocketAddr;
use std::time::Duration;

use crate::Config;

/// xorshift64* seeded through splitmix64: deterministic, no crates.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
  pub fn new(seed: u64) -> Rng {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    Rng((z ^ (z >> 31)) | 1)
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

  /// True with probability `ppm` per million.
  pub fn ppm(&mut self, ppm: u32) -> bool {
    self.below(1_000_000) < ppm as u64
  }

  pub fn bytes(&mut self, n: usize) -> Vec<u8> {
    (0..n).map(|_| self.next() as u8).collect()
  }
}

pub fn sa(s: &str) -> SocketAddr {
  s.parse().unwrap()
}

pub fn ms(n: u64) -> Duration {
  Duration::from_millis(n)
}

/// A deterministic configuration.
pub fn config() -> Config {
  Config::new(*b"tunkit-tcp-tests")
}

/// Byte `i` of the test stream `stream`: a cheap pattern that differs per offset and stream.
pub fn pattern(stream: u8, i: u64) -> u8 {
  let x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (stream as u64) << 56;
  (x >> 29) as u8 ^ (i as u8)
}
