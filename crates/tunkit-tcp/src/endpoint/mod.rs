//! The endpoint: the demultiplexing table (4-tuple to connection), listeners with their accept queues,
//! the tuple-only TIME_WAIT table, the timer heap, the event queue and the global memory budget. The I/O
//! layer drives it with [`Endpoint::input`] for every packet, [`Endpoint::poll`] when
//! [`Endpoint::next_deadline`] passes or after application calls, and drains [`Endpoint::next_event`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::config::Config;
use crate::conn::output::write_rst;
use crate::conn::{note, Budget, Conn, Ctx, RateLimit, State};
use crate::outbox::Outbox;
use crate::seq::Seq;
use crate::stats::EndpointStats;
use crate::wire::{parse_packet, Flags, ParseError, Segment};

mod api;
mod timewait;

pub use api::ConnInfo;
use timewait::TimeWaitTable;

/// (local, remote).
pub(crate) type Tuple = (SocketAddr, SocketAddr);

/// A connection handle. Valid from `connect`/`accept` until `close` or `abort`; a stale handle gives
/// [`crate::Error::InvalidHandle`], never another connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
  idx: u32,
  gen: u32,
}

/// A listener handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId(u32);

/// What a listener accepts SYNs for: `None` fields match anything. `ListenAddr::any()` is the proxy case
/// (a SYN to any address and port opens a connection, "promiscuous" mode); a specific listener wins over a
/// wildcard one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenAddr {
  /// Local address, or any.
  pub ip: Option<IpAddr>,
  /// Local port, or any.
  pub port: Option<u16>,
}

impl ListenAddr {
  /// Any address, any port.
  pub fn any() -> ListenAddr {
    ListenAddr { ip: None, port: None }
  }

  /// One port on any address.
  pub fn port(port: u16) -> ListenAddr {
    ListenAddr {
      ip: None,
      port: Some(port),
    }
  }

  /// One address and port.
  pub fn addr(sa: SocketAddr) -> ListenAddr {
    ListenAddr {
      ip: Some(sa.ip()),
      port: Some(sa.port()),
    }
  }

  fn matches(&self, sa: SocketAddr) -> Option<u8> {
    let ip = match self.ip {
      Some(ip) if ip != sa.ip() => return None,
      Some(_) => 2,
      None => 0,
    };
    let port = match self.port {
      Some(p) if p != sa.port() => return None,
      Some(_) => 1,
      None => 0,
    };
    Some(ip + port)
  }
}

/// What happened, for the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
  /// A connection completed its handshake and waits in this listener's accept queue.
  Acceptable(ListenerId),
  /// An active open completed (ESTABLISHED).
  Connected(ConnId),
  /// Data, the end of the stream, or an error can be read.
  Readable(ConnId),
  /// Send-buffer space opened after a short or refused write (or the connection became writable).
  Writable(ConnId),
  /// The connection ended (normally, reset, or timed out: see [`Endpoint::info`]); the handle stays valid
  /// (for reading what is left) until `close`.
  Closed(ConnId),
}

const EV_READABLE: u8 = 1;
const EV_WRITABLE: u8 = 2;
const EV_CONNECTED: u8 = 4;
const EV_CLOSED: u8 = 8;

struct Listener {
  spec: ListenAddr,
  backlog: usize,
  queue: VecDeque<ConnId>,
  pending: usize,
  notified: bool,
}

struct Slot {
  gen: u32,
  conn: Option<Box<Conn>>,
  /// Events of this connection in the queue (one of each kind at most).
  queued_events: u8,
}

/// A TCP endpoint: all connections of one stack (see the crate documentation).
pub struct Endpoint {
  cfg: Config,
  slots: Vec<Slot>,
  free: Vec<u32>,
  live: usize,
  demux: HashMap<Tuple, u32>,
  listeners: Vec<Option<Listener>>,
  tw: TimeWaitTable,
  timers: BinaryHeap<Reverse<(Duration, u32, u32)>>,
  dirty: Vec<u32>,
  events: VecDeque<Event>,
  budget: Budget,
  stats: EndpointStats,
  challenge: RateLimit,
  half_open: usize,
  pending_rst: Vec<(Tuple, Seq, Option<Seq>)>,
  port_counter: u32,
  #[cfg(test)]
  pub(crate) next_isn: Option<u32>,
}

impl Endpoint {
  /// A new endpoint with no connection.
  pub fn new(cfg: Config) -> Endpoint {
    let budget = Budget {
      limit: cfg.memory_budget,
      used: 0,
    };
    Endpoint {
      tw: TimeWaitTable::default(),
      cfg,
      slots: Vec::new(),
      free: Vec::new(),
      live: 0,
      demux: HashMap::new(),
      listeners: Vec::new(),
      timers: BinaryHeap::new(),
      dirty: Vec::new(),
      events: VecDeque::new(),
      budget,
      stats: EndpointStats::default(),
      challenge: RateLimit::default(),
      half_open: 0,
      pending_rst: Vec::new(),
      port_counter: 0,
      #[cfg(test)]
      next_isn: None,
    }
  }

  /// The configuration.
  pub fn config(&self) -> &Config {
    &self.cfg
  }

  /// Endpoint counters and gauges.
  pub fn stats(&self) -> EndpointStats {
    let mut s = self.stats;
    s.connections = self.live as u64;
    s.half_open = self.half_open as u64;
    s.time_wait = self.tw.len() as u64;
    s.memory_used = self.budget.used as u64;
    s.memory_budget = self.budget.limit as u64;
    s
  }

  /// Processes one IP packet read from the link (checksums verified), writing replies to `out`. A packet
  /// that is not a well-formed TCP segment is refused with the reason (and counted); nothing is sent then.
  pub fn input(&mut self, now: Duration, packet: &[u8], out: &mut Outbox) -> Result<(), ParseError> {
    self.input_inner(now, packet, true, out)
  }

  /// Like [`Endpoint::input`] without checksum verification, for packets the device or kernel already
  /// checked (virtio `DATA_VALID`, a GRO super-packet).
  pub fn input_verified(&mut self, now: Duration, packet: &[u8], out: &mut Outbox) -> Result<(), ParseError> {
    self.input_inner(now, packet, false, out)
  }

  fn input_inner(
    &mut self,
    now: Duration,
    packet: &[u8],
    verify: bool,
    out: &mut Outbox,
  ) -> Result<(), ParseError> {
    self.stats.packets_in += 1;
    let p = match parse_packet(packet, verify) {
      Ok(p) => p,
      Err(e) => {
        self.stats.parse_errors += 1;
        if matches!(e, ParseError::BadChecksum | ParseError::BadIpChecksum) {
          self.stats.bad_checksums += 1;
        }
        return Err(e);
      }
    };
    let key = (p.dst, p.src);
    if let Some(&idx) = self.demux.get(&key) {
      self.conn_op(idx, now, out, |c, ctx, out| {
        c.on_segment(ctx, &p.seg, out);
        c.output(ctx, out);
      });
      return Ok(());
    }
    if self.tw.contains(&key) && self.tw_segment(now, key, &p.seg, out) {
      return Ok(());
    }
    let f = p.seg.flags;
    if f.has(Flags::SYN) && !f.has(Flags::ACK) && !f.has(Flags::RST) {
      if let Some(l) = self.match_listener(p.dst) {
        self.passive_open(now, l, key, &p.seg, out);
        return Ok(());
      }
    }
    self.reply_rst(now, key, &p.seg, out);
    Ok(())
  }

  /// Runs the timers due at `now` and emits everything pending (segments after application calls, RSTs of
  /// aborted connections).
  pub fn poll(&mut self, now: Duration, out: &mut Outbox) {
    for (key, seq, ack) in std::mem::take(&mut self.pending_rst) {
      let mut ctx = Ctx {
        now,
        cfg: &self.cfg,
        budget: &mut self.budget,
        stats: &mut self.stats,
        challenge: &mut self.challenge,
      };
      write_rst(&mut ctx, out, key.0, key.1, seq, ack);
    }
    while let Some((_, conn)) = self.tw.expire(now) {
      self.tw_ended(conn);
    }
    while let Some(&Reverse((t, idx, gen))) = self.timers.peek() {
      if t > now {
        break;
      }
      self.timers.pop();
      let slot = &mut self.slots[idx as usize];
      if slot.gen != gen {
        continue;
      }
      let Some(c) = slot.conn.as_deref_mut() else {
        continue;
      };
      if c.scheduled != Some(t) {
        continue;
      }
      c.scheduled = None;
      self.conn_op(idx, now, out, |c, ctx, out| c.on_timer(ctx, out));
    }
    for idx in std::mem::take(&mut self.dirty) {
      if let Some(c) = self.slots[idx as usize].conn.as_deref_mut() {
        if c.dirty {
          c.dirty = false;
          self.conn_op(idx, now, out, |c, ctx, out| c.output(ctx, out));
        }
      }
    }
  }

  /// When [`Endpoint::poll`] should run next: `Some(t)` with `t` at or before the current time means now
  /// (`Duration::ZERO` after application calls left output pending). `None` when nothing is scheduled. It
  /// may be early (a timer that was pushed back), never late.
  pub fn next_deadline(&self) -> Option<Duration> {
    if !self.dirty.is_empty() || !self.pending_rst.is_empty() {
      return Some(Duration::ZERO);
    }
    let t = self.timers.peek().map(|r| r.0 .0);
    match (t, self.tw.next_expiry()) {
      (Some(a), Some(b)) => Some(a.min(b)),
      (a, b) => a.or(b),
    }
  }

  /// The next event, if any.
  pub fn next_event(&mut self) -> Option<Event> {
    while let Some(ev) = self.events.pop_front() {
      let (id, bit) = match ev {
        Event::Acceptable(l) => {
          if let Some(Some(lst)) = self.listeners.get_mut(l.0 as usize) {
            lst.notified = false;
            return Some(ev);
          }
          continue;
        }
        Event::Connected(id) => (id, EV_CONNECTED),
        Event::Readable(id) => (id, EV_READABLE),
        Event::Writable(id) => (id, EV_WRITABLE),
        Event::Closed(id) => (id, EV_CLOSED),
      };
      if let Some(slot) = self.slots.get_mut(id.idx as usize) {
        if slot.gen == id.gen && slot.conn.is_some() {
          slot.queued_events &= !bit;
          return Some(ev);
        }
      }
    }
    None
  }

  // ----- internals -----

  fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
    let slot = self.slots.get_mut(id.idx as usize)?;
    if slot.gen != id.gen {
      return None;
    }
    slot.conn.as_deref_mut()
  }

  /// Runs `f` on connection `idx` with a context, then does the endpoint's bookkeeping.
  fn conn_op(
    &mut self,
    idx: u32,
    now: Duration,
    out: &mut Outbox,
    f: impl FnOnce(&mut Conn, &mut Ctx, &mut Outbox),
  ) {
    let Some(c) = self.slots[idx as usize].conn.as_deref_mut() else {
      return;
    };
    let mut ctx = Ctx {
      now,
      cfg: &self.cfg,
      budget: &mut self.budget,
      stats: &mut self.stats,
      challenge: &mut self.challenge,
    };
    f(c, &mut ctx, out);
    self.after_op(idx, now);
  }

  /// Bookkeeping after any operation on a connection: budget, half-open count and accept queue, TIME_WAIT
  /// hand-over, demux removal, events, timer scheduling, freeing.
  fn after_op(&mut self, idx: u32, now: Duration) {
    let slot = &mut self.slots[idx as usize];
    let gen = slot.gen;
    let Some(c) = slot.conn.as_deref_mut() else { return };
    let id = ConnId { idx, gen };
    c.recharge(&self.cfg, &mut self.budget);
    if c.orphan && c.state == State::FinWait2 && c.linger_at.is_none() {
      c.linger_at = Some(now + self.cfg.fin_wait2_timeout);
    }
    if c.half_open && c.state != State::SynReceived {
      c.half_open = false;
      self.half_open -= 1;
      let lst = c
        .listener
        .and_then(|l| self.listeners.get_mut(l as usize))
        .and_then(|l| l.as_mut());
      match lst {
        Some(lst) => {
          lst.pending -= 1;
          if c.state.is_synchronized() && c.state != State::TimeWait {
            lst.queue.push_back(id);
            c.queued = true;
            if !lst.notified {
              lst.notified = true;
              self
                .events
                .push_back(Event::Acceptable(ListenerId(c.listener.unwrap_or(0))));
            }
          }
        }
        None if c.state.is_synchronized() => {
          self
            .pending_rst
            .push(((c.local, c.remote), c.snd_nxt, Some(c.rcv_nxt)));
          c.close_now(None);
        }
        None => {}
      }
    }
    let key = (c.local, c.remote);
    if c.state == State::TimeWait && self.demux.get(&key) == Some(&idx) {
      self.demux.remove(&key);
      let ts = c.ts_ok.then_some((c.ts_offset, c.ts_recent));
      let window = (c.rcv_adv.since(c.rcv_nxt) >> c.rcv_wscale).min(65535) as u16;
      self.tw.insert(
        now + self.cfg.time_wait,
        key,
        c.snd_nxt,
        c.rcv_nxt,
        ts,
        window,
        Some(id),
      );
      c.rto_at = None;
      c.delack_at = None;
      c.persist_at = None;
      c.keepalive_at = None;
      c.linger_at = None;
      c.notes |= note::CLOSED | note::READABLE;
    }
    if c.state == State::Closed && self.demux.get(&key) == Some(&idx) {
      self.demux.remove(&key);
    }
    let notes = std::mem::take(&mut c.notes);
    if c.owned {
      for (n, bit, ev) in [
        (note::CONNECTED, EV_CONNECTED, Event::Connected(id)),
        (note::READABLE, EV_READABLE, Event::Readable(id)),
        (note::WRITABLE, EV_WRITABLE, Event::Writable(id)),
        (note::CLOSED, EV_CLOSED, Event::Closed(id)),
      ] {
        if notes & n != 0 && slot.queued_events & bit == 0 {
          slot.queued_events |= bit;
          self.events.push_back(ev);
        }
      }
    }
    if let Some(d) = c.next_deadline() {
      if c.scheduled.map_or(true, |s| d < s) {
        c.scheduled = Some(d);
        self.timers.push(Reverse((d, idx, gen)));
      }
    }
    let ended = matches!(c.state, State::Closed | State::TimeWait);
    if ended && c.queued {
      if let Some(lst) = c
        .listener
        .and_then(|l| self.listeners.get_mut(l as usize))
        .and_then(|l| l.as_mut())
      {
        lst.queue.retain(|&q| q != id);
      }
      c.queued = false;
    }
    if ended && !c.owned && !c.queued {
      self.free_slot(idx);
    }
  }

  /// Marks a connection for output at the next `poll`.
  fn mark_dirty(&mut self, idx: u32) {
    if let Some(c) = self.slots[idx as usize].conn.as_deref_mut() {
      if !c.dirty {
        c.dirty = true;
        self.dirty.push(idx);
      }
    }
  }

  fn insert_conn(&mut self, c: Conn) -> ConnId {
    let key = (c.local, c.remote);
    let idx = match self.free.pop() {
      Some(i) => i,
      None => {
        self.slots.push(Slot {
          gen: 0,
          conn: None,
          queued_events: 0,
        });
        (self.slots.len() - 1) as u32
      }
    };
    let slot = &mut self.slots[idx as usize];
    slot.conn = Some(Box::new(c));
    slot.queued_events = 0;
    self.live += 1;
    self.demux.insert(key, idx);
    ConnId { idx, gen: slot.gen }
  }

  fn free_slot(&mut self, idx: u32) {
    let slot = &mut self.slots[idx as usize];
    let Some(c) = slot.conn.take() else { return };
    slot.gen = slot.gen.wrapping_add(1);
    slot.queued_events = 0;
    self.budget.used -= c.charged;
    let key = (c.local, c.remote);
    if self.demux.get(&key) == Some(&idx) {
      self.demux.remove(&key);
    }
    if c.half_open {
      self.half_open -= 1;
      if let Some(l) = c
        .listener
        .and_then(|l| self.listeners.get_mut(l as usize))
        .and_then(|l| l.as_mut())
      {
        l.pending -= 1;
      }
    }
    self.live -= 1;
    self.free.push(idx);
  }

  fn isn(&mut self, now: Duration, key: Tuple) -> Seq {
    #[cfg(test)]
    if let Some(i) = self.next_isn.take() {
      return Seq(i);
    }
    Seq(crate::isn::isn(self.cfg.secret, now, key.0, key.1))
  }

  fn match_listener(&self, local: SocketAddr) -> Option<u32> {
    let mut best: Option<(u8, u32)> = None;
    for (i, l) in self.listeners.iter().enumerate() {
      if let Some(l) = l {
        if let Some(score) = l.spec.matches(local) {
          if best.map_or(true, |(b, _)| score > b) {
            best = Some((score, i as u32));
          }
        }
      }
    }
    best.map(|b| b.1)
  }

  /// A SYN for a listener: a new connection in SYN_RECEIVED, unless a cap says no (the SYN is dropped and
  /// the peer retries).
  fn passive_open(&mut self, now: Duration, lid: u32, key: Tuple, seg: &Segment, out: &mut Outbox) {
    self.stats.syn_received += 1;
    let Some(Some(l)) = self.listeners.get(lid as usize) else {
      return;
    };
    if self.half_open >= self.cfg.max_half_open {
      self.stats.half_open_drops += 1;
      return;
    }
    if l.queue.len() + l.pending >= l.backlog {
      self.stats.backlog_drops += 1;
      return;
    }
    if self.live >= self.cfg.max_connections {
      self.stats.conn_limit_drops += 1;
      return;
    }
    let iss = self.isn(now, key);
    let mut c = Conn::new(&self.cfg, now, key.0, key.1, iss, true);
    c.state = State::SynReceived;
    c.irs = seg.seq;
    c.rcv_nxt = seg.seq + 1;
    c.rcv_adv = c.rcv_nxt;
    c.last_ack_sent = c.rcv_nxt;
    c.negotiate(&self.cfg, &seg.options, now);
    c.snd_wnd = seg.window as u32;
    c.max_snd_wnd = c.snd_wnd;
    c.snd_wl1 = seg.seq;
    c.snd_wl2 = iss;
    c.listener = Some(lid);
    c.half_open = true;
    self.half_open += 1;
    if let Some(Some(l)) = self.listeners.get_mut(lid as usize) {
      l.pending += 1;
    }
    self.stats.passive_opens += 1;
    let id = self.insert_conn(c);
    self.conn_op(id.idx, now, out, |c, ctx, out| c.output(ctx, out));
  }

  /// RFC 9293 3.10.7.1: a segment for no connection gets a RST (unless it is one).
  fn reply_rst(&mut self, now: Duration, key: Tuple, seg: &Segment, out: &mut Outbox) {
    if seg.flags.has(Flags::RST) {
      return;
    }
    let mut ctx = Ctx {
      now,
      cfg: &self.cfg,
      budget: &mut self.budget,
      stats: &mut self.stats,
      challenge: &mut self.challenge,
    };
    if seg.flags.has(Flags::ACK) {
      write_rst(&mut ctx, out, key.0, key.1, seg.ack, None);
    } else {
      write_rst(&mut ctx, out, key.0, key.1, Seq(0), Some(seg.seq + seg.seq_len()));
    }
    self.stats.rst_unknown += 1;
  }
}
