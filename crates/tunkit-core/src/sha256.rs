//! SHA-256 (FIPS 180-4), small and dependency-free, plus the `sha256sum` listing format.
//!
//! The Windows backend uses it to check that the `wintun.dll` it is about to load is byte for byte the official
//! build whose digest the package pins (see `wintun.sha256` at the repository root); the release workflow checks the
//! same listing with `sha256sum -c`. Speed does not matter here (a 400 KiB file once per process), clarity does.

use std::fmt::Write as _;
use std::io::{self, Read};

/// A digest: 32 bytes.
pub type Digest = [u8; 32];

/// Round constants: the first 32 bits of the fractional parts of the cube roots of the first 64 primes.
const K: [u32; 64] = [
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
  0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
  0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
  0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
  0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
  0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
  0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
  0xc67178f2,
];

/// Initial hash value: the first 32 bits of the fractional parts of the square roots of the first 8 primes.
const H0: [u32; 8] = [
  0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// An incremental SHA-256 computation: feed bytes with [`Sha256::update`], then take the digest with
/// [`Sha256::finish`].
#[derive(Clone)]
pub struct Sha256 {
  state: [u32; 8],
  /// Bytes of the current, incomplete block.
  block: [u8; 64],
  block_len: usize,
  /// Total message length in bytes.
  total: u64,
}

impl Default for Sha256 {
  fn default() -> Self {
    Sha256::new()
  }
}

impl Sha256 {
  pub fn new() -> Sha256 {
    Sha256 {
      state: H0,
      block: [0; 64],
      block_len: 0,
      total: 0,
    }
  }

  /// Appends `data` to the message.
  pub fn update(&mut self, mut data: &[u8]) {
    self.total = self.total.wrapping_add(data.len() as u64);
    if self.block_len > 0 {
      let take = (64 - self.block_len).min(data.len());
      self.block[self.block_len..self.block_len + take].copy_from_slice(&data[..take]);
      self.block_len += take;
      data = &data[take..];
      if self.block_len < 64 {
        return;
      }
      let block = self.block;
      compress(&mut self.state, &block);
      self.block_len = 0;
    }
    let mut blocks = data.chunks_exact(64);
    for b in &mut blocks {
      compress(
        &mut self.state,
        b.try_into().expect("chunks_exact yields 64-byte blocks"),
      );
    }
    let rest = blocks.remainder();
    self.block[..rest.len()].copy_from_slice(rest);
    self.block_len = rest.len();
  }

  /// Pads the message (a 1 bit, zeros, the 64-bit big-endian bit length) and returns the digest.
  pub fn finish(mut self) -> Digest {
    let bits = self.total.wrapping_mul(8);
    let mut pad = [0u8; 72];
    pad[0] = 0x80;
    // Pad to 56 mod 64, then 8 bytes of length.
    let zeros = (55usize.wrapping_sub(self.block_len)) % 64;
    pad[1 + zeros..9 + zeros].copy_from_slice(&bits.to_be_bytes());
    let total = self.total;
    self.update(&pad[..9 + zeros]);
    debug_assert_eq!(self.block_len, 0, "padding ends on a block boundary");
    self.total = total;
    let mut out = [0u8; 32];
    for (o, w) in out.chunks_exact_mut(4).zip(self.state) {
      o.copy_from_slice(&w.to_be_bytes());
    }
    out
  }
}

/// The compression function over one 64-byte block.
fn compress(state: &mut [u32; 8], block: &[u8; 64]) {
  let mut w = [0u32; 64];
  for (i, word) in block.chunks_exact(4).enumerate() {
    w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
  }
  for i in 16..64 {
    let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
    let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
  }
  let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
  for i in 0..64 {
    let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
    let ch = (e & f) ^ (!e & g);
    let t1 = h
      .wrapping_add(s1)
      .wrapping_add(ch)
      .wrapping_add(K[i])
      .wrapping_add(w[i]);
    let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
    let maj = (a & b) ^ (a & c) ^ (b & c);
    let t2 = s0.wrapping_add(maj);
    h = g;
    g = f;
    f = e;
    e = d.wrapping_add(t1);
    d = c;
    c = b;
    b = a;
    a = t1.wrapping_add(t2);
  }
  for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
    *s = s.wrapping_add(v);
  }
}

/// The digest of `data`.
pub fn digest(data: &[u8]) -> Digest {
  let mut h = Sha256::new();
  h.update(data);
  h.finish()
}

/// The digest of everything `reader` yields.
pub fn digest_reader(mut reader: impl Read) -> io::Result<Digest> {
  let mut h = Sha256::new();
  let mut buf = [0u8; 16 * 1024];
  loop {
    match reader.read(&mut buf) {
      Ok(0) => return Ok(h.finish()),
      Ok(n) => h.update(&buf[..n]),
      Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
      Err(e) => return Err(e),
    }
  }
}

/// Lower-case hex of a digest.
pub fn to_hex(d: &Digest) -> String {
  let mut s = String::with_capacity(64);
  for b in d {
    let _ = write!(s, "{b:02x}");
  }
  s
}

/// Parses 64 hex digits (either case) into a digest.
pub fn parse_hex(s: &str) -> Option<Digest> {
  if s.len() != 64 || !s.is_ascii() {
    return None;
  }
  let mut d = [0u8; 32];
  for (i, b) in d.iter_mut().enumerate() {
    *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
  }
  Some(d)
}

/// Parses a `sha256sum` listing: lines of `<64 hex digits><two spaces or " *"><path>`. Blank lines and lines
/// starting with `#` are skipped. Returns `(digest, path)` pairs in order, or the first bad line.
pub fn parse_sums(text: &str) -> Result<Vec<(Digest, &str)>, String> {
  let mut out = Vec::new();
  for (no, line) in text.lines().enumerate() {
    let line = line.trim_end();
    if line.is_empty() || line.starts_with('#') {
      continue;
    }
    let bad = || format!("line {}: expected '<sha256 hex>  <path>', got {line:?}", no + 1);
    let (hex, rest) = line.split_at_checked(64).ok_or_else(bad)?;
    let path = rest
      .strip_prefix("  ")
      .or_else(|| rest.strip_prefix(" *"))
      .ok_or_else(bad)?;
    let digest = parse_hex(hex).ok_or_else(bad)?;
    if path.is_empty() {
      return Err(bad());
    }
    out.push((digest, path));
  }
  Ok(out)
}

/// The digest a listing gives for `path`.
pub fn lookup(sums: &[(Digest, &str)], path: &str) -> Option<Digest> {
  sums.iter().find(|(_, p)| *p == path).map(|(d, _)| *d)
}

#[cfg(test)]
mod tests {
  use super::*;

  fn hex_of(data: &[u8]) -> String {
    to_hex(&digest(data))
  }

  // FIPS 180-2, appendix B (and the empty message).
  #[test]
  fn fips_180_2_vectors() {
    assert_eq!(
      hex_of(b"abc"),
      "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
      hex_of(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
      "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
    );
    assert_eq!(
      hex_of(b""),
      "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let mut h = Sha256::new();
    let chunk = [b'a'; 1000];
    for _ in 0..1000 {
      h.update(&chunk);
    }
    assert_eq!(
      to_hex(&h.finish()),
      "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
    );
  }

  #[test]
  fn split_updates_match_one_shot() {
    // Lengths around the padding edges (55, 56, 63, 64, 119, 120) and odd split points.
    let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
    for len in [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 300] {
      let whole = digest(&data[..len]);
      for split in [0, 1, 13, 63, 64, len / 2, len] {
        let split = split.min(len);
        let mut h = Sha256::new();
        h.update(&data[..split]);
        h.update(&data[split..len]);
        assert_eq!(h.finish(), whole, "len {len} split {split}");
      }
      assert_eq!(digest_reader(&data[..len]).unwrap(), whole);
    }
  }

  #[test]
  fn hex_round_trip() {
    let d = digest(b"abc");
    assert_eq!(parse_hex(&to_hex(&d)), Some(d));
    assert_eq!(parse_hex(&to_hex(&d).to_uppercase()), Some(d));
    assert_eq!(parse_hex("abc"), None);
    assert_eq!(parse_hex(&"g".repeat(64)), None);
  }

  #[test]
  fn sums_listing() {
    let abc = to_hex(&digest(b"abc"));
    let text = format!("# pinned\n\n{abc}  dir/a.bin\n{abc} *b.bin\n");
    let sums = parse_sums(&text).unwrap();
    assert_eq!(sums.len(), 2);
    assert_eq!(lookup(&sums, "dir/a.bin"), Some(digest(b"abc")));
    assert_eq!(lookup(&sums, "b.bin"), Some(digest(b"abc")));
    assert_eq!(lookup(&sums, "c.bin"), None);
    for bad in [
      format!("{abc} a.bin"),
      format!("{abc}  "),
      "xyz  a.bin".to_string(),
      abc[..60].to_string(),
    ] {
      assert!(parse_sums(&bad).is_err(), "{bad:?}");
    }
  }

  /// The pinned wintun listing of the repository parses and names a DLL for each Windows architecture we ship.
  #[test]
  fn pinned_wintun_listing() {
    let sums = parse_sums(include_str!("../../../wintun.sha256")).unwrap();
    for arch in ["amd64", "arm64"] {
      assert!(
        lookup(&sums, &format!("wintun/bin/{arch}/wintun.dll")).is_some(),
        "{arch}"
      );
    }
    assert!(sums
      .iter()
      .any(|(_, p)| p.starts_with("wintun-") && p.ends_with(".zip")));
  }
}
