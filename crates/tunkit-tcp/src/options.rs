//! TCP options: MSS (RFC 9293), window scale and timestamps (RFC 7323), SACK-permitted and SACK blocks
//! (RFC 2018), NOP and EOL. Unknown options with a sane length are skipped; a malformed option list (a
//! length byte missing, below 2 or past the header, a known option of the wrong size) is an error.

use crate::seq::Seq;
use crate::wire::ParseError;

/// Option kinds.
pub(crate) mod kind {
  pub const EOL: u8 = 0;
  pub const NOP: u8 = 1;
  pub const MSS: u8 = 2;
  pub const WSCALE: u8 = 3;
  pub const SACK_PERMITTED: u8 = 4;
  pub const SACK: u8 = 5;
  pub const TIMESTAMPS: u8 = 8;
}

/// The most SACK blocks one segment can carry (4 without timestamps, 3 with them: 40 option bytes).
pub const MAX_SACK_BLOCKS: usize = 4;

/// A TCP timestamps option (RFC 7323): the sender's clock and the echoed value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timestamps {
  /// TSval: the sender's timestamp clock.
  pub val: u32,
  /// TSecr: the most recent TSval received from the peer (0 in a SYN).
  pub ecr: u32,
}

/// Up to [`MAX_SACK_BLOCKS`] SACK blocks `[left, right)`, in the order they were sent (most recent first).
#[derive(Clone, Copy, Debug, Default, Eq)]
pub struct SackBlocks {
  blocks: [(Seq, Seq); MAX_SACK_BLOCKS],
  len: u8,
}

impl PartialEq for SackBlocks {
  fn eq(&self, o: &SackBlocks) -> bool {
    self.as_slice() == o.as_slice()
  }
}

impl SackBlocks {
  /// Appends a block; ignored when already full.
  pub fn push(&mut self, left: Seq, right: Seq) {
    if (self.len as usize) < MAX_SACK_BLOCKS {
      self.blocks[self.len as usize] = (left, right);
      self.len += 1;
    }
  }

  /// The blocks, most recent first.
  pub fn as_slice(&self) -> &[(Seq, Seq)] {
    &self.blocks[..self.len as usize]
  }

  /// Number of blocks.
  pub fn len(&self) -> usize {
    self.len as usize
  }

  /// True when there is no block.
  pub fn is_empty(&self) -> bool {
    self.len == 0
  }

  /// Keeps only the first `n` blocks.
  pub fn truncate(&mut self, n: usize) {
    self.len = self.len.min(n as u8);
  }
}

/// The options of one segment, parsed or to be written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpOptions {
  /// Maximum segment size (SYN only).
  pub mss: Option<u16>,
  /// Window scale shift count as received (SYN only; values above 14 are used as 14, RFC 7323 2.3).
  pub window_scale: Option<u8>,
  /// SACK permitted (SYN only).
  pub sack_permitted: bool,
  /// Timestamps.
  pub timestamps: Option<Timestamps>,
  /// SACK blocks.
  pub sack: SackBlocks,
}

impl TcpOptions {
  /// Parses the option bytes of a TCP header (everything after the fixed 20 bytes).
  pub fn parse(mut b: &[u8]) -> Result<TcpOptions, ParseError> {
    let mut o = TcpOptions::default();
    while let Some(&k) = b.first() {
      match k {
        kind::EOL => break,
        kind::NOP => {
          b = &b[1..];
          continue;
        }
        _ => {}
      }
      let len = *b.get(1).ok_or(ParseError::BadOption)? as usize;
      if len < 2 || len > b.len() {
        return Err(ParseError::BadOption);
      }
      let body = &b[2..len];
      match k {
        kind::MSS => {
          if len != 4 {
            return Err(ParseError::BadOption);
          }
          o.mss = Some(u16::from_be_bytes([body[0], body[1]]));
        }
        kind::WSCALE => {
          if len != 3 {
            return Err(ParseError::BadOption);
          }
          o.window_scale = Some(body[0]);
        }
        kind::SACK_PERMITTED => {
          if len != 2 {
            return Err(ParseError::BadOption);
          }
          o.sack_permitted = true;
        }
        kind::SACK => {
          let n = body.len() / 8;
          if body.len() % 8 != 0 || n == 0 || n > MAX_SACK_BLOCKS {
            return Err(ParseError::BadOption);
          }
          for blk in body.chunks_exact(8) {
            let l = u32::from_be_bytes([blk[0], blk[1], blk[2], blk[3]]);
            let r = u32::from_be_bytes([blk[4], blk[5], blk[6], blk[7]]);
            o.sack.push(Seq(l), Seq(r));
          }
        }
        kind::TIMESTAMPS => {
          if len != 10 {
            return Err(ParseError::BadOption);
          }
          let val = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
          let ecr = u32::from_be_bytes([body[4], body[5], body[6], body[7]]);
          o.timestamps = Some(Timestamps { val, ecr });
        }
        _ => {} // Unknown: skipped (RFC 9293 3.2, MUST-6).
      }
      b = &b[len..];
    }
    Ok(o)
  }

  /// Bytes these options take when written by [`TcpOptions::write`] (a multiple of 4, at most 40: SACK
  /// blocks that do not fit are not counted).
  pub fn encoded_len(&self) -> usize {
    let mut n = 0;
    if self.mss.is_some() {
      n += 4;
    }
    if self.timestamps.is_some() || self.sack_permitted {
      n += if self.timestamps.is_some() { 12 } else { 4 };
    }
    if self.window_scale.is_some() {
      n += 4;
    }
    match self.fitting_sack_blocks(n) {
      0 => n,
      k => n + 4 + 8 * k,
    }
  }

  fn fitting_sack_blocks(&self, used: usize) -> usize {
    let room = 40usize.saturating_sub(used + 4) / 8;
    self.sack.len().min(room)
  }

  /// Appends the options (padded to a multiple of 4 with NOPs) to `out`. The layout is the usual one
  /// (`MSS, SACK-permitted+TS | NOP NOP TS | NOP NOP SACK-permitted, NOP WS, NOP NOP SACK`); SACK blocks that
  /// do not fit in 40 bytes are left off (the oldest ones).
  pub fn write(&self, out: &mut Vec<u8>) {
    let start = out.len();
    if let Some(mss) = self.mss {
      out.extend_from_slice(&[kind::MSS, 4]);
      out.extend_from_slice(&mss.to_be_bytes());
    }
    match (self.sack_permitted, self.timestamps) {
      (true, Some(ts)) => {
        out.extend_from_slice(&[kind::SACK_PERMITTED, 2, kind::TIMESTAMPS, 10]);
        out.extend_from_slice(&ts.val.to_be_bytes());
        out.extend_from_slice(&ts.ecr.to_be_bytes());
      }
      (false, Some(ts)) => {
        out.extend_from_slice(&[kind::NOP, kind::NOP, kind::TIMESTAMPS, 10]);
        out.extend_from_slice(&ts.val.to_be_bytes());
        out.extend_from_slice(&ts.ecr.to_be_bytes());
      }
      (true, None) => out.extend_from_slice(&[kind::NOP, kind::NOP, kind::SACK_PERMITTED, 2]),
      (false, None) => {}
    }
    if let Some(ws) = self.window_scale {
      out.extend_from_slice(&[kind::NOP, kind::WSCALE, 3, ws]);
    }
    let n = self.fitting_sack_blocks(out.len() - start);
    if n > 0 {
      out.extend_from_slice(&[kind::NOP, kind::NOP, kind::SACK, 2 + 8 * n as u8]);
      for &(l, r) in &self.sack.as_slice()[..n] {
        out.extend_from_slice(&l.0.to_be_bytes());
        out.extend_from_slice(&r.0.to_be_bytes());
      }
    }
    debug_assert_eq!(out.len() - start, self.encoded_len());
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  fn roundtrip(o: &TcpOptions) -> TcpOptions {
    let mut v = Vec::new();
    o.write(&mut v);
    assert_eq!(v.len() % 4, 0);
    assert!(v.len() <= 40);
    assert_eq!(v.len(), o.encoded_len());
    TcpOptions::parse(&v).unwrap()
  }

  #[test]
  fn options_roundtrip_syn_and_data() {
    let syn = TcpOptions {
      mss: Some(1460),
      window_scale: Some(7),
      sack_permitted: true,
      timestamps: Some(Timestamps { val: 1, ecr: 0 }),
      sack: SackBlocks::default(),
    };
    assert_eq!(roundtrip(&syn), syn);
    assert_eq!(syn.encoded_len(), 20);
    let mut data = TcpOptions {
      timestamps: Some(Timestamps { val: 9, ecr: 8 }),
      ..Default::default()
    };
    for i in 0..4 {
      data.sack.push(Seq(i * 100), Seq(i * 100 + 50));
    }
    let back = roundtrip(&data);
    assert_eq!(back.sack.len(), 3, "3 blocks fit with timestamps");
    assert_eq!(back.sack.as_slice(), &data.sack.as_slice()[..3]);
    data.timestamps = None;
    assert_eq!(roundtrip(&data).sack.len(), 4);
    for sp in [false, true] {
      let o = TcpOptions {
        sack_permitted: sp,
        ..Default::default()
      };
      assert_eq!(roundtrip(&o), o);
    }
  }

  #[test]
  fn options_unknown_skipped_malformed_rejected() {
    // Unknown kind 30 of length 4, NOP, MSS, EOL and garbage after EOL.
    let b = [30, 4, 0xaa, 0xbb, 1, 2, 4, 0x05, 0xb4, 0, 99, 99];
    let o = TcpOptions::parse(&b).unwrap();
    assert_eq!(o.mss, Some(1460));
    for bad in [
      &[2u8][..],
      &[2, 3, 0],
      &[2, 5, 0, 0, 0],
      &[30, 1],
      &[30, 0],
      &[30, 9, 0],
      &[3, 2],
      &[4, 3, 0],
      &[5, 2],
      &[5, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0],
      &[5, 9, 0, 0, 0, 0, 0, 0, 0],
      &[8, 9, 0, 0, 0, 0, 0, 0, 0],
    ] {
      assert_eq!(TcpOptions::parse(bad), Err(ParseError::BadOption), "{bad:?}");
    }
    assert_eq!(TcpOptions::parse(&[]).unwrap(), TcpOptions::default());
    assert_eq!(TcpOptions::parse(&[1, 1, 1, 0]).unwrap(), TcpOptions::default());
  }
}
