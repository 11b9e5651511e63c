//! The retransmission timer's value per RFC 6298: SRTT and RTTVAR from RTT samples (Karn's rule is the
//! caller's: samples only from segments never retransmitted), `RTO = SRTT + 4 * RTTVAR` clamped to
//! `[rto_min, rto_max]`, doubled on each timeout (exponential backoff) until a new sample arrives.

use std::time::Duration;

/// RFC 6298 estimator with a configurable floor.
#[derive(Clone, Debug)]
pub(crate) struct RttEstimator {
  srtt: Option<Duration>,
  rttvar: Duration,
  initial: Duration,
  min: Duration,
  max: Duration,
  /// Timeouts since the last sample (the RTO is doubled this many times).
  pub backoff: u32,
}

impl RttEstimator {
  pub fn new(initial: Duration, min: Duration, max: Duration) -> RttEstimator {
    RttEstimator {
      srtt: None,
      rttvar: Duration::ZERO,
      initial,
      min,
      max: max.max(min),
      backoff: 0,
    }
  }

  /// Feeds one RTT measurement (RFC 6298 2.2 and 2.3) and clears the backoff (5.7).
  pub fn sample(&mut self, r: Duration) {
    match self.srtt {
      None => {
        self.srtt = Some(r);
        self.rttvar = r / 2;
      }
      Some(srtt) => {
        let err = if srtt > r { srtt - r } else { r - srtt };
        self.rttvar = (self.rttvar * 3 + err) / 4;
        self.srtt = Some((srtt * 7 + r) / 8);
      }
    }
    self.backoff = 0;
  }

  /// The smoothed RTT, once measured.
  pub fn srtt(&self) -> Option<Duration> {
    self.srtt
  }

  /// The RTT variation.
  #[cfg(test)]
  pub fn rttvar(&self) -> Duration {
    self.rttvar
  }

  /// The RTO without backoff.
  pub fn base_rto(&self) -> Duration {
    let rto = match self.srtt {
      None => self.initial,
      Some(s) => s + (self.rttvar * 4).max(Duration::from_micros(1)),
    };
    rto.clamp(self.min, self.max)
  }

  /// The current RTO: the base doubled once per timeout since the last sample, at most `rto_max`.
  pub fn rto(&self) -> Duration {
    let mut r = self.base_rto();
    for _ in 0..self.backoff.min(32) {
      r = (r * 2).min(self.max);
    }
    r
  }

  /// A timeout happened: back off (RFC 6298 5.5).
  pub fn on_timeout(&mut self) {
    self.backoff = self.backoff.saturating_add(1);
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
  }

  #[test]
  fn rtt_rfc6298_formulas_floor_and_backoff() {
    let mut e = RttEstimator::new(ms(1000), ms(20), ms(60_000));
    assert_eq!(e.rto(), ms(1000));
    e.sample(ms(100));
    assert_eq!(e.srtt(), Some(ms(100)));
    assert_eq!(e.rttvar(), ms(50));
    assert_eq!(e.rto(), ms(300));
    e.sample(ms(200));
    // rttvar = 3/4*50 + 1/4*100 = 62.5; srtt = 7/8*100 + 1/8*200 = 112.5
    assert_eq!(e.rttvar(), Duration::from_micros(62_500));
    assert_eq!(e.srtt(), Some(Duration::from_micros(112_500)));
    assert_eq!(e.rto(), Duration::from_micros(362_500));
    e.on_timeout();
    e.on_timeout();
    assert_eq!(e.rto(), Duration::from_micros(1_450_000));
    for _ in 0..40 {
      e.on_timeout();
    }
    assert_eq!(e.rto(), ms(60_000), "capped");
    e.sample(ms(100));
    assert_eq!(e.backoff, 0);
    // A microsecond link: the floor applies.
    let mut f = RttEstimator::new(ms(1000), ms(20), ms(60_000));
    for _ in 0..50 {
      f.sample(Duration::from_micros(30));
    }
    assert_eq!(f.rto(), ms(20));
  }
}
