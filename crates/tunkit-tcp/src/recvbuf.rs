//! The receive buffer with out-of-order reassembly.
//!
//! One ring holds, in sequence order from the first unread byte, the in-order bytes the application has not
//! read (`ready` of them) and then the reassembly area: out-of-order data written at its offset, with gaps.
//! The out-of-order ranges are kept sorted and disjoint (at most `max_ranges`), and the SACK blocks to send
//! (RFC 2018: the block holding the most recent segment first, then the others by recency) are kept as a
//! list of those ranges. The caller trims segments to the advertised window, which bounds the ring.

use std::collections::VecDeque;

use crate::options::{SackBlocks, MAX_SACK_BLOCKS};
use crate::seq::Seq;

/// What an insertion did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Insert {
  /// In order: `RCV.NXT` advanced by `bytes` (more than the segment if it closed holes); `filled` when
  /// out-of-order data was pending (the ACK should go at once).
  InOrder { bytes: u32, filled: bool },
  /// Stored out of order.
  OutOfOrder,
  /// Out of order but no range left to track it: dropped (the peer retransmits).
  Dropped,
}

/// Reassembly buffer.
#[derive(Debug)]
pub(crate) struct RecvBuf {
  buf: VecDeque<u8>,
  ready: usize,
  ooo: Vec<(Seq, Seq)>,
  recent: Vec<(Seq, Seq)>,
  max_ranges: usize,
}

impl RecvBuf {
  pub fn new(max_ranges: usize) -> RecvBuf {
    RecvBuf {
      buf: VecDeque::new(),
      ready: 0,
      ooo: Vec::new(),
      recent: Vec::new(),
      max_ranges: max_ranges.max(1),
    }
  }

  /// In-order bytes waiting for the application.
  pub fn readable(&self) -> usize {
    self.ready
  }

  /// True when out-of-order data is held.
  pub fn has_ooo(&self) -> bool {
    !self.ooo.is_empty()
  }

  /// The out-of-order ranges.
  #[cfg(test)]
  pub fn ooo(&self) -> &[(Seq, Seq)] {
    &self.ooo
  }

  /// Bytes held (in order and the reassembly area, gaps included).
  #[cfg(test)]
  pub fn held(&self) -> usize {
    self.buf.len()
  }

  fn write_at(&mut self, idx: usize, data: &[u8]) {
    if self.buf.len() < idx + data.len() {
      self.buf.resize(idx + data.len(), 0);
    }
    let (a, b) = self.buf.as_mut_slices();
    let mut i = idx;
    let mut d = data;
    if i < a.len() {
      let n = (a.len() - i).min(d.len());
      a[i..i + n].copy_from_slice(&d[..n]);
      d = &d[n..];
      i += n;
    }
    if !d.is_empty() {
      let j = i - a.len();
      b[j..j + d.len()].copy_from_slice(d);
    }
  }

  /// Stores `data` at `seq`, `seq` at or after `nxt` (= `RCV.NXT`; the caller trimmed old bytes and bytes
  /// past the window).
  pub fn insert(&mut self, nxt: Seq, seq: Seq, data: &[u8]) -> Insert {
    let off = seq.since(nxt) as usize;
    if off == 0 {
      self.write_at(self.ready, data);
      let had = !self.ooo.is_empty();
      let mut new_nxt = nxt + data.len() as u32;
      self.ready += data.len();
      let mut k = 0;
      while k < self.ooo.len() && self.ooo[k].0 <= new_nxt {
        let r = self.ooo[k].1;
        if r > new_nxt {
          self.ready += r.since(new_nxt) as usize;
          new_nxt = r;
        }
        k += 1;
      }
      self.ooo.drain(..k);
      self.recent.retain(|&(_, r)| r > new_nxt);
      return Insert::InOrder {
        bytes: new_nxt.since(nxt),
        filled: had,
      };
    }
    let (l, r) = (seq, seq + data.len() as u32);
    let mut i = 0;
    while i < self.ooo.len() && self.ooo[i].1 < l {
      i += 1;
    }
    let mut j = i;
    let (mut nl, mut nr) = (l, r);
    while j < self.ooo.len() && self.ooo[j].0 <= r {
      nl = nl.min(self.ooo[j].0);
      nr = nr.max(self.ooo[j].1);
      j += 1;
    }
    if i == j && self.ooo.len() >= self.max_ranges {
      return Insert::Dropped;
    }
    self.write_at(self.ready + off, data);
    self.ooo.splice(i..j, [(nl, nr)]);
    self.recent.retain(|&(a, b)| b < nl || a > nr);
    self.recent.insert(0, (nl, nr));
    self.recent.truncate(MAX_SACK_BLOCKS);
    Insert::OutOfOrder
  }

  /// The SACK blocks to send, most recent first.
  pub fn sack_blocks(&self) -> SackBlocks {
    let mut s = SackBlocks::default();
    for &(a, b) in &self.recent {
      s.push(a, b);
    }
    s
  }

  /// Copies in-order data to `out`, consuming it; returns the count.
  pub fn read(&mut self, out: &mut [u8]) -> usize {
    let n = out.len().min(self.ready);
    let (a, b) = self.buf.as_slices();
    let na = n.min(a.len());
    out[..na].copy_from_slice(&a[..na]);
    out[na..n].copy_from_slice(&b[..n - na]);
    self.buf.drain(..n);
    self.ready -= n;
    n
  }

  /// Drops everything (a reset).
  pub fn clear(&mut self) {
    self.buf = VecDeque::new();
    self.ready = 0;
    self.ooo.clear();
    self.recent.clear();
  }

  /// Frees the storage of an empty buffer that grew beyond `keep` bytes.
  pub fn trim(&mut self, keep: usize) {
    if self.buf.is_empty() && self.buf.capacity() > keep {
      self.buf = VecDeque::new();
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  fn data(from: u32, n: u32) -> Vec<u8> {
    (from..from + n).map(|i| (i % 251) as u8).collect()
  }

  #[test]
  fn recvbuf_reassembles_out_of_order_and_sacks_most_recent_first() {
    let base = Seq(u32::MAX - 100);
    let mut r = RecvBuf::new(8);
    let mut nxt = base;
    assert_eq!(r.insert(nxt, base + 100, &data(100, 50)), Insert::OutOfOrder);
    assert_eq!(r.insert(nxt, base + 300, &data(300, 50)), Insert::OutOfOrder);
    assert_eq!(r.insert(nxt, base + 200, &data(200, 50)), Insert::OutOfOrder);
    assert_eq!(
      r.sack_blocks().as_slice(),
      &[
        (base + 200, base + 250),
        (base + 300, base + 350),
        (base + 100, base + 150)
      ]
    );
    // Bridges 200..250 and 300..350.
    assert_eq!(r.insert(nxt, base + 250, &data(250, 50)), Insert::OutOfOrder);
    assert_eq!(
      r.sack_blocks().as_slice(),
      &[(base + 200, base + 350), (base + 100, base + 150)]
    );
    assert_eq!(r.readable(), 0);
    match r.insert(nxt, base, &data(0, 100)) {
      Insert::InOrder { bytes, filled } => {
        assert_eq!((bytes, filled), (150, true));
        nxt += bytes;
      }
      x => panic!("{x:?}"),
    }
    assert_eq!(r.sack_blocks().as_slice(), &[(base + 200, base + 350)]);
    let mut out = vec![0u8; 1000];
    assert_eq!(r.read(&mut out[..70]), 70);
    assert_eq!(r.read(&mut out[70..]), 80);
    assert_eq!(&out[..150], &data(0, 150)[..]);
    assert_eq!(
      r.insert(nxt, nxt, &data(150, 60)),
      Insert::InOrder {
        bytes: 200,
        filled: true
      }
    );
    assert!(r.sack_blocks().is_empty());
    assert_eq!(r.read(&mut out), 200);
    assert_eq!(&out[..200], &data(150, 200)[..]);
  }

  #[test]
  fn recvbuf_range_cap_drops_new_ranges_only() {
    let mut r = RecvBuf::new(2);
    let n = Seq(0);
    assert_eq!(r.insert(n, Seq(10), b"a"), Insert::OutOfOrder);
    assert_eq!(r.insert(n, Seq(20), b"b"), Insert::OutOfOrder);
    assert_eq!(r.insert(n, Seq(30), b"c"), Insert::Dropped);
    assert_eq!(r.insert(n, Seq(11), b"x"), Insert::OutOfOrder, "extends a range");
    assert_eq!(r.ooo(), &[(Seq(10), Seq(12)), (Seq(20), Seq(21))]);
    assert_eq!(r.held(), 21);
    r.clear();
    assert_eq!(r.held(), 0);
  }
}
