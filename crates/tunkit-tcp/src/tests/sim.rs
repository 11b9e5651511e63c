//! A simulated link between two endpoints with a fake clock: per direction a propagation delay, a
//! bandwidth (serialization, with a tail-drop queue), and seeded loss, reordering and duplication.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use super::util::Rng;
use crate::{Config, Endpoint, Outbox};

/// One direction's behaviour.
#[derive(Clone, Copy, Debug)]
pub struct LinkCfg {
  pub delay: Duration,
  /// Bits per second; 0 for no serialization delay (and no queue).
  pub bandwidth: u64,
  pub loss_ppm: u32,
  pub reorder_ppm: u32,
  /// Extra delay of a reordered packet (uniform in 0..=this).
  pub reorder_delay: Duration,
  pub dup_ppm: u32,
  /// Tail-drop queue in bytes (with a bandwidth).
  pub queue_bytes: u64,
}

impl Default for LinkCfg {
  fn default() -> LinkCfg {
    LinkCfg {
      delay: Duration::from_micros(500),
      bandwidth: 0,
      loss_ppm: 0,
      reorder_ppm: 0,
      reorder_delay: Duration::from_millis(2),
      dup_ppm: 0,
      queue_bytes: 1 << 20,
    }
  }
}

/// Counters of one direction.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinkStats {
  pub sent: u64,
  pub bytes: u64,
  pub lost: u64,
  pub queue_drops: u64,
  pub reordered: u64,
  pub duplicated: u64,
}

pub struct Link {
  pub cfg: LinkCfg,
  heap: BinaryHeap<Reverse<(Duration, u64, Vec<u8>)>>,
  busy_until: Duration,
  order: u64,
  rng: Rng,
  pub stats: LinkStats,
}

impl Link {
  pub fn new(cfg: LinkCfg, seed: u64) -> Link {
    Link {
      cfg,
      heap: BinaryHeap::new(),
      busy_until: Duration::ZERO,
      order: 0,
      rng: Rng::new(seed),
      stats: LinkStats::default(),
    }
  }

  pub fn send(&mut self, now: Duration, pkt: &[u8]) {
    self.stats.sent += 1;
    self.stats.bytes += pkt.len() as u64;
    if self.rng.ppm(self.cfg.loss_ppm) {
      self.stats.lost += 1;
      return;
    }
    let mut depart = now;
    if self.cfg.bandwidth > 0 {
      let start = self.busy_until.max(now);
      let backlog = (start - now).as_nanos() as u64 * self.cfg.bandwidth / 8_000_000_000;
      if backlog > self.cfg.queue_bytes {
        self.stats.queue_drops += 1;
        return;
      }
      let ser = Duration::from_nanos(pkt.len() as u64 * 8 * 1_000_000_000 / self.cfg.bandwidth);
      depart = start + ser;
      self.busy_until = depart;
    }
    let mut at = depart + self.cfg.delay;
    if self.rng.ppm(self.cfg.reorder_ppm) {
      self.stats.reordered += 1;
      let extra = self.rng.below(self.cfg.reorder_delay.as_nanos() as u64 + 1);
      at += Duration::from_nanos(extra);
    }
    let copies = if self.rng.ppm(self.cfg.dup_ppm) { 2 } else { 1 };
    self.stats.duplicated += copies - 1;
    for _ in 0..copies {
      self.order += 1;
      self.heap.push(Reverse((at, self.order, pkt.to_vec())));
    }
  }

  pub fn next_at(&self) -> Option<Duration> {
    self.heap.peek().map(|r| r.0 .0)
  }

  pub fn pop_due(&mut self, now: Duration) -> Option<Vec<u8>> {
    if self.next_at()? <= now {
      self.heap.pop().map(|r| r.0 .2)
    } else {
      None
    }
  }
}

/// Two endpoints, `a` and `b`, joined by `ab` (a to b) and `ba`.
pub struct Sim {
  pub a: Endpoint,
  pub b: Endpoint,
  pub now: Duration,
  pub ab: Link,
  pub ba: Link,
  out: Outbox,
  pub steps: u64,
}

fn earliest(ts: [Option<Duration>; 4]) -> Option<Duration> {
  ts.into_iter().flatten().min()
}

impl Sim {
  pub fn new(a: Config, b: Config, ab: LinkCfg, ba: LinkCfg, seed: u64) -> Sim {
    Sim {
      a: Endpoint::new(a),
      b: Endpoint::new(b),
      now: Duration::from_secs(1),
      ab: Link::new(ab, seed),
      ba: Link::new(ba, seed ^ 0x5555),
      out: Outbox::new(),
      steps: 0,
    }
  }

  fn flush(out: &mut Outbox, link: &mut Link, now: Duration) {
    for p in out.packets() {
      link.send(now, &p.data);
    }
    out.clear();
  }

  /// Advances to the next event (a delivery or a deadline) and processes everything due then. False when
  /// nothing at all is scheduled.
  pub fn step(&mut self) -> bool {
    let Some(t) = earliest([
      self.ab.next_at(),
      self.ba.next_at(),
      self.a.next_deadline(),
      self.b.next_deadline(),
    ]) else {
      return false;
    };
    self.steps += 1;
    self.now = self.now.max(t);
    let now = self.now;
    while let Some(p) = self.ab.pop_due(now) {
      let _ = self.b.input(now, &p, &mut self.out);
      Self::flush(&mut self.out, &mut self.ba, now);
    }
    while let Some(p) = self.ba.pop_due(now) {
      let _ = self.a.input(now, &p, &mut self.out);
      Self::flush(&mut self.out, &mut self.ab, now);
    }
    if self.a.next_deadline().is_some_and(|d| d <= now) {
      self.a.poll(now, &mut self.out);
      Self::flush(&mut self.out, &mut self.ab, now);
    }
    if self.b.next_deadline().is_some_and(|d| d <= now) {
      self.b.poll(now, &mut self.out);
      Self::flush(&mut self.out, &mut self.ba, now);
    }
    true
  }

  /// Steps until `done` (checked after every step) holds, or simulated time passes `limit` from now, or
  /// nothing is left to do. Returns whether `done` held.
  pub fn run(&mut self, limit: Duration, mut done: impl FnMut(&mut Sim) -> bool) -> bool {
    let end = self.now + limit;
    loop {
      if done(self) {
        return true;
      }
      if self.now > end || !self.step() {
        return done(self);
      }
    }
  }

  /// Lets time pass by `d`, processing everything due.
  pub fn idle(&mut self, d: Duration) {
    let end = self.now + d;
    while let Some(t) = earliest([
      self.ab.next_at(),
      self.ba.next_at(),
      self.a.next_deadline(),
      self.b.next_deadline(),
    ]) {
      if t > end {
        break;
      }
      self.step();
    }
    self.now = self.now.max(end);
  }
}
