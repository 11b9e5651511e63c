//! The send buffer: bytes written by the application and not yet acknowledged, starting at sequence
//! number `start`. Segments are copied out of it straight into output packets (two slices of the ring).

use std::collections::VecDeque;

use crate::seq::Seq;

/// Unacknowledged and unsent data.
#[derive(Debug)]
pub(crate) struct SendBuf {
  data: VecDeque<u8>,
  start: Seq,
}

impl SendBuf {
  /// An empty buffer whose first byte will have sequence number `start`.
  pub fn new(start: Seq) -> SendBuf {
    SendBuf {
      data: VecDeque::new(),
      start,
    }
  }

  /// Buffered bytes.
  pub fn len(&self) -> usize {
    self.data.len()
  }

  /// Sequence number of the first buffered byte.
  #[cfg(test)]
  pub fn start(&self) -> Seq {
    self.start
  }

  /// Sequence number just past the buffered data.
  pub fn end(&self) -> Seq {
    self.start + self.data.len() as u32
  }

  /// Appends application data.
  pub fn push(&mut self, b: &[u8]) {
    self.data.extend(b);
  }

  /// Drops the bytes acknowledged by `ack` (which may lie past the data, by a FIN); returns how many.
  pub fn ack(&mut self, ack: Seq) -> usize {
    let n = (ack.since(self.start) as usize).min(self.data.len());
    self.data.drain(..n);
    self.start += n as u32;
    n
  }

  /// The `len` bytes from sequence number `seq` (within the buffer) as two slices.
  pub fn slices(&self, seq: Seq, len: usize) -> (&[u8], &[u8]) {
    let off = seq.since(self.start) as usize;
    let end = (off + len).min(self.data.len());
    let off = off.min(end);
    let (a, b) = self.data.as_slices();
    if end <= a.len() {
      (&a[off..end], &[])
    } else if off >= a.len() {
      (&b[off - a.len()..end - a.len()], &[])
    } else {
      (&a[off..], &b[..end - a.len()])
    }
  }

  /// Frees the storage of an empty buffer that grew beyond `keep` bytes.
  pub fn trim(&mut self, keep: usize) {
    if self.data.is_empty() && self.data.capacity() > keep {
      self.data = VecDeque::new();
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn sendbuf_slices_across_the_ring_and_wrap() {
    let mut s = SendBuf::new(Seq(u32::MAX - 3));
    let data: Vec<u8> = (0..100u8).collect();
    s.push(&data);
    assert_eq!(s.ack(Seq(u32::MAX - 3) + 30), 30);
    s.push(&data[..40]);
    assert_eq!(s.len(), 110);
    let want: Vec<u8> = data[30..].iter().chain(&data[..40]).copied().collect();
    for off in 0..110u32 {
      for len in [0usize, 1, 7, 50, 200] {
        let (a, b) = s.slices(s.start() + off, len);
        let got: Vec<u8> = a.iter().chain(b).copied().collect();
        let end = (off as usize + len).min(110);
        assert_eq!(got, &want[off as usize..end]);
      }
    }
    assert_eq!(s.ack(s.end() + 1), 110, "a FIN past the data");
    assert_eq!(s.len(), 0);
  }
}
