//! Sequence-number arithmetic modulo 2^32 (RFC 9293 section 3.4, comparisons in the style of RFC 1982).
//!
//! `a < b` means "`b` is ahead of `a` by less than 2^31". That is not a total order over the whole space
//! (it is not transitive across more than half of it), so [`Seq`] implements [`PartialOrd`] only; every use
//! in the stack compares numbers within one window, far less than 2^31 apart. Two numbers exactly 2^31
//! apart compare as `a < b` when `b - a` (wrapping) is 2^31, deterministically.

use std::cmp::Ordering;
use std::fmt;
use std::ops::{Add, AddAssign, Sub};

/// A TCP sequence (or acknowledgment) number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Seq(pub u32);

impl Seq {
  /// `self - other` as a signed distance (positive when `self` is ahead).
  #[inline]
  pub fn diff(self, other: Seq) -> i32 {
    self.0.wrapping_sub(other.0) as i32
  }

  /// `self - from` as an unsigned distance: the number of sequence numbers from `from` up to `self`, for
  /// `self` at or ahead of `from`; 0 when `self` is behind.
  #[inline]
  pub fn since(self, from: Seq) -> u32 {
    let d = self.diff(from);
    if d > 0 {
      d as u32
    } else {
      0
    }
  }

  /// True when `lo <= self < hi`.
  #[inline]
  pub fn in_range(self, lo: Seq, hi: Seq) -> bool {
    lo <= self && self < hi
  }

  /// The later of two numbers.
  #[inline]
  pub fn max(self, other: Seq) -> Seq {
    if other > self {
      other
    } else {
      self
    }
  }

  /// The earlier of two numbers.
  #[inline]
  pub fn min(self, other: Seq) -> Seq {
    if other < self {
      other
    } else {
      self
    }
  }
}

impl PartialOrd for Seq {
  #[inline]
  fn partial_cmp(&self, other: &Seq) -> Option<Ordering> {
    let d = self.0.wrapping_sub(other.0);
    Some(if d == 0 {
      Ordering::Equal
    } else if d == 1 << 31 {
      // Exactly half the space apart: self is "behind" by the rule `b - a == 2^31 => a < b`.
      Ordering::Less
    } else if (d as i32) > 0 {
      Ordering::Greater
    } else {
      Ordering::Less
    })
  }
}

impl Add<u32> for Seq {
  type Output = Seq;
  #[inline]
  fn add(self, n: u32) -> Seq {
    Seq(self.0.wrapping_add(n))
  }
}

impl AddAssign<u32> for Seq {
  #[inline]
  fn add_assign(&mut self, n: u32) {
    self.0 = self.0.wrapping_add(n);
  }
}

impl Sub<u32> for Seq {
  type Output = Seq;
  #[inline]
  fn sub(self, n: u32) -> Seq {
    Seq(self.0.wrapping_sub(n))
  }
}

impl fmt::Debug for Seq {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    write!(f, "Seq({})", self.0)
  }
}

impl fmt::Display for Seq {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    write!(f, "{}", self.0)
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn seq_compare_across_wrap() {
    let a = Seq(u32::MAX - 5);
    let b = a + 10;
    assert_eq!(b.0, 4);
    assert!(a < b);
    assert!(b > a);
    assert!(a <= b);
    assert_ne!(a, b);
    assert_eq!(b.diff(a), 10);
    assert_eq!(a.diff(b), -10);
    assert_eq!(b.since(a), 10);
    assert_eq!(a.since(b), 0);
    assert!(Seq(u32::MAX).in_range(a, b));
    assert!(Seq(0).in_range(a, b));
    assert!(!b.in_range(a, b));
    assert_eq!(a.max(b), b);
    assert_eq!(a.min(b), a);
    assert_eq!(b - 10, a);
    let mut c = a;
    c += 6;
    assert_eq!(c, Seq(0));
  }

  #[test]
  fn seq_half_space_is_deterministic() {
    let a = Seq(0);
    let b = Seq(1 << 31);
    assert!(a < b);
    assert!(b < a);
    assert!(Seq(7) <= Seq(7) && Seq(7) >= Seq(7));
  }

  #[test]
  fn seq_exhaustive_small_distances() {
    for base in [0u32, 1, 1 << 31, u32::MAX, u32::MAX - 1000, 123_456_789] {
      let s = Seq(base);
      for d in 1..2000u32 {
        assert!(s < s + d, "{base} {d}");
        assert!(s + d > s);
        assert!(s - d < s);
        assert_eq!((s + d).diff(s), d as i32);
      }
    }
  }
}
