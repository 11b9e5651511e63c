//! The tuple-only TIME_WAIT table: a connection that closed first leaves its TCB and keeps only what it
//! needs to acknowledge a retransmitted FIN (the sequence numbers, the timestamp state) for
//! [`crate::Config::time_wait`]. Entries expire in insertion order (one fixed duration, restarted by a
//! retransmitted FIN), so a FIFO queue holds the deadlines. A SYN with a sequence number (or timestamp)
//! beyond the old connection's reopens the tuple at once (RFC 6191 style).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use super::{ConnId, Endpoint, Tuple};
use crate::options::{TcpOptions, Timestamps};
use crate::outbox::Outbox;
use crate::seq::Seq;
use crate::wire::{write_packet, Flags, Header, Segment};

#[derive(Clone, Copy, Debug)]
pub(crate) struct TwEntry {
  expires: Duration,
  snd_nxt: Seq,
  rcv_nxt: Seq,
  /// (timestamp offset, TS.Recent) when timestamps were on.
  ts: Option<(u32, u32)>,
  window: u16,
  conn: Option<ConnId>,
}

#[derive(Default)]
pub(crate) struct TimeWaitTable {
  map: HashMap<Tuple, TwEntry>,
  queue: VecDeque<(Duration, Tuple)>,
}

impl TimeWaitTable {
  pub fn len(&self) -> usize {
    self.map.len()
  }

  pub fn contains(&self, key: &Tuple) -> bool {
    self.map.contains_key(key)
  }

  #[allow(clippy::too_many_arguments)]
  pub fn insert(
    &mut self,
    expires: Duration,
    key: Tuple,
    snd_nxt: Seq,
    rcv_nxt: Seq,
    ts: Option<(u32, u32)>,
    window: u16,
    conn: Option<ConnId>,
  ) {
    self.map.insert(
      key,
      TwEntry {
        expires,
        snd_nxt,
        rcv_nxt,
        ts,
        window,
        conn,
      },
    );
    self.queue.push_back((expires, key));
  }

  /// The next entry whose time is up (with the connection it came from).
  pub fn expire(&mut self, now: Duration) -> Option<(Tuple, Option<ConnId>)> {
    while let Some(&(t, key)) = self.queue.front() {
      if t > now {
        return None;
      }
      self.queue.pop_front();
      if let Some(e) = self.map.get(&key) {
        if e.expires == t {
          let e = self.map.remove(&key).unwrap();
          return Some((key, e.conn));
        }
      }
    }
    None
  }

  pub fn next_expiry(&self) -> Option<Duration> {
    self.queue.front().map(|q| q.0)
  }
}

impl Endpoint {
  /// A TIME_WAIT entry ended: its connection, if the application still holds it, is CLOSED now.
  pub(super) fn tw_ended(&mut self, conn: Option<ConnId>) {
    if let Some(c) = conn.and_then(|id| self.get_mut(id)) {
      if c.state == crate::conn::State::TimeWait {
        c.state = crate::conn::State::Closed;
      }
    }
  }

  /// A segment for a tuple in TIME_WAIT. False when it is a SYN that reopens the tuple (the entry is gone
  /// and the caller treats the SYN as new).
  pub(super) fn tw_segment(&mut self, now: Duration, key: Tuple, seg: &Segment, out: &mut Outbox) -> bool {
    let Some(e) = self.tw.map.get(&key).copied() else {
      return false;
    };
    let f = seg.flags;
    if f.has(Flags::RST) {
      self.tw.map.remove(&key);
      self.tw_ended(e.conn);
      return true;
    }
    if f.has(Flags::SYN) && !f.has(Flags::ACK) {
      let newer_ts = match (e.ts, seg.options.timestamps) {
        (Some((_, recent)), Some(t)) => (t.val.wrapping_sub(recent) as i32) > 0,
        _ => false,
      };
      if seg.seq > e.rcv_nxt || newer_ts {
        self.tw.map.remove(&key);
        self.tw_ended(e.conn);
        self.stats.time_wait_reused += 1;
        return false;
      }
    } else if f.has(Flags::FIN) {
      // A retransmitted FIN: acknowledge it and restart the wait.
      let expires = now + self.cfg.time_wait;
      if let Some(m) = self.tw.map.get_mut(&key) {
        m.expires = expires;
      }
      self.tw.queue.push_back((expires, key));
    } else if seg.payload.is_empty() && seg.seq == e.rcv_nxt {
      return true; // A plain ACK: nothing to say.
    }
    let mut o = TcpOptions::default();
    if let Some((off, recent)) = e.ts {
      o.timestamps = Some(Timestamps {
        val: (now.as_millis() as u32).wrapping_add(off),
        ecr: recent,
      });
    }
    let hdr = Header {
      seq: e.snd_nxt,
      ack: e.rcv_nxt,
      flags: Flags::ACK,
      window: e.window,
    };
    let pkt = out.next();
    pkt.l4_offset = write_packet(&mut pkt.data, key.0, key.1, &hdr, &o, (&[], &[]), false);
    self.stats.packets_out += 1;
    true
  }
}
