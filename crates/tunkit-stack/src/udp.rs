//! UDP sessions: endpoint-independent mapping ("full cone"). A session is keyed by the client endpoint `S:s`
//! alone, so one session talks to any number of destinations and replies may come from any of them.
//!
//! The table is an LRU capped at `max_udp_sessions`: a new client beyond the cap evicts the least recently
//! used session (never refuses one). A session with no datagram in either direction for `udp_idle` expires.
//! Evicted and expired sessions are reported to the caller (who ends them) by `tick` / `take_evicted`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What the application learns about a new UDP session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpSessionInfo {
  /// `S:s`: the client's endpoint, where replies go.
  pub client: SocketAddr,
  /// The destination of the session's first datagram (later ones may differ: see `Verdict::Datagram`).
  pub first_destination: SocketAddr,
}

#[derive(Debug)]
struct Session {
  info: UdpSessionInfo,
  /// Position in the LRU order (higher is more recent).
  stamp: u64,
  last_seen: Instant,
}

/// Counters of the UDP table.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct UdpCounters {
  pub created: u64,
  pub evicted: u64,
  pub expired: u64,
  pub closed: u64,
}

/// The UDP session table of one device.
#[derive(Debug)]
pub(crate) struct UdpTable {
  sessions: HashMap<u64, Session>,
  by_client: HashMap<SocketAddr, u64>,
  lru: BTreeMap<u64, u64>,
  next_stamp: u64,
  next_id: u64,
  max: usize,
  idle: Duration,
  /// The latest time seen, for replies (which carry none).
  clock: Option<Instant>,
  evicted: Vec<u64>,
  full_burst: bool,
  pub notices: VecDeque<String>,
  pub counters: UdpCounters,
}

impl UdpTable {
  /// An empty table.
  pub fn new(max: usize, idle: Duration) -> UdpTable {
    UdpTable {
      sessions: HashMap::new(),
      by_client: HashMap::new(),
      lru: BTreeMap::new(),
      next_stamp: 0,
      next_id: 1,
      max,
      idle,
      clock: None,
      evicted: Vec::new(),
      full_burst: false,
      notices: VecDeque::new(),
      counters: UdpCounters::default(),
    }
  }

  /// Sessions open.
  pub fn len(&self) -> usize {
    self.sessions.len()
  }

  fn advance(&mut self, now: Instant) -> Instant {
    let t = match self.clock {
      Some(c) if c > now => c,
      _ => now,
    };
    self.clock = Some(t);
    t
  }

  fn bump(&mut self, id: u64, now: Instant) {
    let stamp = self.next_stamp;
    self.next_stamp += 1;
    if let Some(s) = self.sessions.get_mut(&id) {
      self.lru.remove(&s.stamp);
      s.stamp = stamp;
      if now > s.last_seen {
        s.last_seen = now;
      }
      self.lru.insert(stamp, id);
    }
  }

  /// A datagram from `client` to `destination`: its session id, and the session's info if it is new.
  pub fn datagram(
    &mut self,
    client: SocketAddr,
    destination: SocketAddr,
    now: Instant,
  ) -> (u64, Option<UdpSessionInfo>) {
    let now = self.advance(now);
    if let Some(&id) = self.by_client.get(&client) {
      self.bump(id, now);
      return (id, None);
    }
    if self.sessions.len() >= self.max {
      let in_burst = self.full_burst;
      if !in_burst {
        self.notices.push_back(format!(
          "UDP session table full ({} sessions): evicting the least recently used",
          self.sessions.len()
        ));
      }
      if let Some((_, &old)) = self.lru.iter().next() {
        self.remove(old);
        self.evicted.push(old);
        self.counters.evicted += 1;
      }
      // After `remove`, which ends a burst when the table shrinks below the cap.
      self.full_burst = true;
    }
    let id = self.next_id;
    self.next_id += 1;
    let info = UdpSessionInfo {
      client,
      first_destination: destination,
    };
    let stamp = self.next_stamp;
    self.next_stamp += 1;
    self.sessions.insert(
      id,
      Session {
        info,
        stamp,
        last_seen: now,
      },
    );
    self.lru.insert(stamp, id);
    self.by_client.insert(client, id);
    self.counters.created += 1;
    (id, Some(info))
  }

  /// The client of session `id` for a reply, refreshing the session (at the latest time seen).
  pub fn reply(&mut self, id: u64) -> Option<SocketAddr> {
    let client = self.sessions.get(&id)?.info.client;
    if let Some(now) = self.clock {
      self.bump(id, now);
    }
    Some(client)
  }

  /// The session's info.
  pub fn info(&self, id: u64) -> Option<UdpSessionInfo> {
    self.sessions.get(&id).map(|s| s.info)
  }

  /// Ends session `id` at the application's request.
  pub fn close(&mut self, id: u64) {
    if self.remove(id) {
      self.counters.closed += 1;
    }
  }

  fn remove(&mut self, id: u64) -> bool {
    let Some(s) = self.sessions.remove(&id) else {
      return false;
    };
    self.lru.remove(&s.stamp);
    self.by_client.remove(&s.info.client);
    if self.sessions.len() < self.max {
      self.full_burst = false;
    }
    true
  }

  /// Sessions evicted since the last call.
  pub fn take_evicted(&mut self) -> Vec<u64> {
    std::mem::take(&mut self.evicted)
  }

  /// Expires sessions idle for `udp_idle` and returns them, after the evicted ones not yet taken.
  pub fn tick(&mut self, now: Instant) -> Vec<u64> {
    let now = self.advance(now);
    let mut ended = self.take_evicted();
    while let Some((_, &id)) = self.lru.iter().next() {
      let Some(s) = self.sessions.get(&id) else {
        break;
      };
      if s.last_seen + self.idle > now {
        break;
      }
      self.remove(id);
      self.counters.expired += 1;
      ended.push(id);
    }
    ended
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
  }

  #[test]
  fn lru_order_follows_use_and_replies() {
    let t0 = Instant::now();
    let mut u = UdpTable::new(2, Duration::from_secs(10));
    let (a, _) = u.datagram(sa("10.0.0.5:1"), sa("1.1.1.1:53"), t0);
    let (b, _) = u.datagram(sa("10.0.0.5:2"), sa("1.1.1.1:53"), t0);
    assert_eq!(u.reply(a), Some(sa("10.0.0.5:1"))); // a is now the most recent
    let (c, new) = u.datagram(sa("10.0.0.5:3"), sa("8.8.8.8:53"), t0);
    assert!(new.is_some() && c != a && c != b);
    assert_eq!(u.take_evicted(), vec![b]);
    assert_eq!(u.take_evicted(), Vec::<u64>::new());
    assert_eq!(u.notices.len(), 1);
    assert_eq!(u.info(b), None);
    assert_eq!(u.len(), 2);
  }
}
