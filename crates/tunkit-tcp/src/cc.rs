//! Congestion control: NewReno (RFC 5681 with the RFC 6582 recovery exit), windows in bytes.
//!
//! Slow start grows `cwnd` by the bytes newly acknowledged, at most 2 SMSS per ACK (RFC 3465, L = 2);
//! congestion avoidance by one SMSS per window of acknowledged bytes. Growth only happens while the sender
//! is using at least half its window (a light form of RFC 7661: an application-limited flow does not
//! inflate `cwnd`). Loss recovery itself (which segment to retransmit, the pipe) lives in the sender: this
//! module only sets `cwnd` and `ssthresh` at its edges.

/// NewReno state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NewReno {
  /// Congestion window, bytes.
  pub cwnd: u32,
  /// Slow-start threshold, bytes.
  pub ssthresh: u32,
  /// Bytes acknowledged in congestion avoidance since `cwnd` last grew.
  acked_acc: u32,
}

impl NewReno {
  /// Initial window: `min(iw * mss, max(2 * mss, 14600))` (RFC 6928 with IW = `iw`).
  pub fn new(mss: u32, iw: u32) -> NewReno {
    let cwnd = iw.max(1).saturating_mul(mss).min((2 * mss).max(14600));
    NewReno {
      cwnd,
      ssthresh: u32::MAX,
      acked_acc: 0,
    }
  }

  /// `acked` new bytes were acknowledged outside recovery; `flight` was in flight before.
  pub fn on_ack(&mut self, acked: u32, flight: u32, mss: u32) {
    if flight.saturating_mul(2) < self.cwnd {
      return; // Application-limited.
    }
    if self.cwnd < self.ssthresh {
      self.cwnd = self.cwnd.saturating_add(acked.min(2 * mss));
    } else {
      self.acked_acc = self.acked_acc.saturating_add(acked);
      if self.acked_acc >= self.cwnd {
        self.acked_acc -= self.cwnd;
        self.cwnd = self.cwnd.saturating_add(mss);
      }
    }
  }

  /// Entering fast recovery (RFC 5681 3.2 / RFC 6675 5): halve.
  pub fn on_fast_loss(&mut self, flight: u32, mss: u32) {
    self.ssthresh = (flight / 2).max(2 * mss);
    self.cwnd = self.ssthresh;
    self.acked_acc = 0;
  }

  /// A full ACK ended fast recovery (RFC 6582 3.2 step 3, the burst-avoiding option).
  pub fn on_recovery_exit(&mut self, flight: u32, mss: u32) {
    self.cwnd = self.ssthresh.min(flight.max(mss) + mss);
  }

  /// A retransmission timeout (RFC 5681 3.1): one segment, ssthresh halved (not again on repeated
  /// timeouts of the same data: `first` is false then).
  pub fn on_rto(&mut self, flight: u32, mss: u32, first: bool) {
    if first {
      self.ssthresh = (flight / 2).max(2 * mss);
    }
    self.cwnd = mss;
    self.acked_acc = 0;
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn cc_slow_start_avoidance_loss_and_rto() {
    let mss = 1000;
    let mut c = NewReno::new(mss, 10);
    assert_eq!(c.cwnd, 10_000);
    c.on_ack(1000, 10_000, mss);
    assert_eq!(c.cwnd, 11_000);
    c.on_ack(5000, 11_000, mss);
    assert_eq!(c.cwnd, 13_000, "at most 2 SMSS per ACK");
    c.on_ack(1000, 1000, mss);
    assert_eq!(c.cwnd, 13_000, "application-limited: no growth");
    c.on_fast_loss(13_000, mss);
    assert_eq!((c.cwnd, c.ssthresh), (6500, 6500));
    for _ in 0..6 {
      c.on_ack(1000, 6500, mss);
    }
    assert_eq!(c.cwnd, 6500);
    c.on_ack(1000, 6500, mss);
    assert_eq!(c.cwnd, 7500, "one SMSS per window in congestion avoidance");
    c.on_recovery_exit(0, mss);
    assert_eq!(c.cwnd, 2000);
    c.on_rto(8000, mss, true);
    assert_eq!((c.cwnd, c.ssthresh), (1000, 4000));
    c.on_rto(8000, mss, false);
    assert_eq!(c.ssthresh, 4000);
    assert_eq!(NewReno::new(9000, 10).cwnd, 18_000, "large MSS: 2 segments");
  }
}
