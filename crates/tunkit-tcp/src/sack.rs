//! The sender's SACK scoreboard (RFC 2018, used as RFC 6675 describes): the ranges above `SND.UNA` the
//! peer reported holding, sorted and disjoint, bounded in count (dropping information only makes the
//! sender retransmit more, never less).

use crate::seq::Seq;

/// Most ranges remembered.
const MAX_RANGES: usize = 128;

/// Sorted, disjoint SACKed ranges `[left, right)`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scoreboard {
  ranges: Vec<(Seq, Seq)>,
  sacked: u32,
}

impl Scoreboard {
  /// Records `[l, r)` (already clipped to `(SND.UNA, SND.NXT]` by the caller); returns the bytes newly SACKed.
  pub fn insert(&mut self, l: Seq, r: Seq) -> u32 {
    if r <= l {
      return 0;
    }
    let before = self.sacked;
    // First range whose right edge reaches l.
    let mut i = 0;
    while i < self.ranges.len() && self.ranges[i].1 < l {
      i += 1;
    }
    let (mut nl, mut nr) = (l, r);
    let mut j = i;
    while j < self.ranges.len() && self.ranges[j].0 <= r {
      nl = nl.min(self.ranges[j].0);
      nr = nr.max(self.ranges[j].1);
      self.sacked -= self.ranges[j].1.since(self.ranges[j].0);
      j += 1;
    }
    self.ranges.splice(i..j, [(nl, nr)]);
    self.sacked += nr.since(nl);
    if self.ranges.len() > MAX_RANGES {
      let (a, b) = self.ranges.pop().unwrap();
      self.sacked -= b.since(a);
    }
    self.sacked.saturating_sub(before)
  }

  /// `SND.UNA` moved to `una`: forgets what is below it.
  pub fn advance(&mut self, una: Seq) {
    let mut drop = 0;
    for r in self.ranges.iter_mut() {
      if r.1 <= una {
        drop += 1;
      } else {
        if r.0 < una {
          self.sacked -= una.since(r.0);
          r.0 = una;
        }
        break;
      }
    }
    for (a, b) in self.ranges.drain(..drop) {
      self.sacked -= b.since(a);
    }
  }

  /// Forgets everything (after a timeout the receiver may have reneged, RFC 2018 section 8).
  pub fn clear(&mut self) {
    self.ranges.clear();
    self.sacked = 0;
  }

  /// Total SACKed bytes.
  pub fn sacked_bytes(&self) -> u32 {
    self.sacked
  }

  /// True when nothing is SACKed.
  pub fn is_empty(&self) -> bool {
    self.ranges.is_empty()
  }

  /// The ranges (for tests and invariants).
  #[cfg(test)]
  pub fn ranges(&self) -> &[(Seq, Seq)] {
    &self.ranges
  }

  /// SACKed bytes within `[lo, hi)`.
  pub fn sacked_in(&self, lo: Seq, hi: Seq) -> u32 {
    let mut n = 0;
    for &(a, b) in &self.ranges {
      if a >= hi {
        break;
      }
      n += b.min(hi).since(a.max(lo));
    }
    n
  }

  /// The first run of un-SACKed sequence space at or after `from` and before `limit`: `[start, end)`.
  pub fn next_unsacked(&self, from: Seq, limit: Seq) -> Option<(Seq, Seq)> {
    let mut s = from;
    for &(a, b) in &self.ranges {
      if b <= s {
        continue;
      }
      if a <= s {
        s = b;
        continue;
      }
      // a > s: the hole is [s, a).
      return if s < limit { Some((s, a.min(limit))) } else { None };
    }
    if s < limit {
      Some((s, limit))
    } else {
      None
    }
  }

  /// RFC 6675 `IsLost`: every un-SACKed byte below the returned edge has more than `thresh` SACKed bytes
  /// above it (`thresh` = (DupThresh - 1) * SMSS), and so is presumed lost. `una` when nothing is.
  pub fn lost_edge(&self, una: Seq, thresh: u32) -> Seq {
    let mut acc = 0u32;
    for &(a, b) in self.ranges.iter().rev() {
      acc += b.since(a);
      if acc > thresh {
        return a.max(una);
      }
    }
    una
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn scoreboard_merge_advance_holes_and_loss() {
    let mut s = Scoreboard::default();
    assert_eq!(s.insert(Seq(200), Seq(300)), 100);
    assert_eq!(s.insert(Seq(400), Seq(500)), 100);
    assert_eq!(s.insert(Seq(250), Seq(320)), 20);
    assert_eq!(s.ranges(), &[(Seq(200), Seq(320)), (Seq(400), Seq(500))]);
    assert_eq!(s.insert(Seq(320), Seq(400)), 80, "bridges two ranges");
    assert_eq!(s.ranges(), &[(Seq(200), Seq(500))]);
    assert_eq!(s.insert(Seq(600), Seq(700)), 100);
    assert_eq!(s.insert(Seq(100), Seq(150)), 50);
    assert_eq!(s.sacked_bytes(), 450);
    assert_eq!(s.sacked_in(Seq(120), Seq(250)), 80);
    assert_eq!(s.next_unsacked(Seq(0), Seq(1000)), Some((Seq(0), Seq(100))));
    assert_eq!(s.next_unsacked(Seq(100), Seq(1000)), Some((Seq(150), Seq(200))));
    assert_eq!(s.next_unsacked(Seq(210), Seq(1000)), Some((Seq(500), Seq(600))));
    assert_eq!(s.next_unsacked(Seq(700), Seq(1000)), Some((Seq(700), Seq(1000))));
    assert_eq!(s.next_unsacked(Seq(500), Seq(550)), Some((Seq(500), Seq(550))));
    assert_eq!(s.next_unsacked(Seq(700), Seq(700)), None);
    // 100 bytes SACKed above 500..600, 400 above 150..200.
    assert_eq!(s.lost_edge(Seq(0), 99), Seq(600));
    assert_eq!(s.lost_edge(Seq(0), 150), Seq(200));
    assert_eq!(s.lost_edge(Seq(0), 10_000), Seq(0));
    s.advance(Seq(250));
    assert_eq!(s.ranges()[0], (Seq(250), Seq(500)));
    assert_eq!(s.sacked_bytes(), 350);
    s.advance(Seq(800));
    assert!(s.is_empty());
    assert_eq!(s.sacked_bytes(), 0);
  }

  #[test]
  fn scoreboard_across_wrap_and_bounded() {
    let base = Seq(u32::MAX - 50);
    let mut s = Scoreboard::default();
    s.insert(base + 10, base + 100);
    s.insert(base + 200, base + 300);
    assert_eq!(s.sacked_bytes(), 190);
    assert_eq!(s.next_unsacked(base, base + 1000), Some((base, base + 10)));
    for i in 0..300u32 {
      s.insert(base + 1000 + i * 10, base + 1005 + i * 10);
    }
    assert!(s.ranges().len() <= MAX_RANGES);
    let total: u32 = s.ranges().iter().map(|(a, b)| b.since(*a)).sum();
    assert_eq!(total, s.sacked_bytes());
  }
}
