//! One connection (the TCB of RFC 9293): its state, sequence variables, buffers, timers and the operations
//! the endpoint applies to it. Segment arrival is in [`input`], emission in [`output`], timers in
//! [`timers`]; this file holds the structure, the user operations and the receive-window and memory
//! accounting.
//!
//! Conventions: `snd_nxt` is the highest sequence number sent plus one and never moves back;
//! retransmissions are sent from the `high_rxt` pointer of [`Recovery`]. Send data starts at `iss + 1` and
//! the FIN, once sent, sits at `fin_seq`, just past the data. Times are absolute (`Duration` since the
//! caller's epoch).

use std::net::SocketAddr;
use std::time::Duration;

use crate::cc::NewReno;
use crate::config::Config;
use crate::error::Error;
use crate::options::TcpOptions;
use crate::recvbuf::RecvBuf;
use crate::rtt::RttEstimator;
use crate::sack::Scoreboard;
use crate::sendbuf::SendBuf;
use crate::seq::Seq;
use crate::stats::{ConnStats, EndpointStats};

pub(crate) mod input;
pub(crate) mod output;
pub(crate) mod timers;

/// The state of a connection (RFC 9293 figure 5; LISTEN belongs to listeners, not connections).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
  /// SYN sent, waiting for the peer's SYN.
  SynSent,
  /// SYN received and SYN-ACK sent, waiting for the ACK.
  SynReceived,
  /// Open in both directions.
  Established,
  /// We closed (FIN sent or queued), the peer has not acknowledged it.
  FinWait1,
  /// Our FIN is acknowledged; the peer may still send.
  FinWait2,
  /// The peer closed; we may still send.
  CloseWait,
  /// Both closed at once, our FIN not yet acknowledged.
  Closing,
  /// The peer closed first, then we did; waiting for the ACK of our FIN.
  LastAck,
  /// Closed, lingering (as a tuple-only entry) to answer a retransmitted FIN.
  TimeWait,
  /// No connection (ended, reset, timed out or aborted).
  Closed,
}

impl State {
  /// True in the states where both sides have exchanged SYNs.
  pub fn is_synchronized(self) -> bool {
    !matches!(self, State::SynSent | State::SynReceived | State::Closed)
  }
}

/// Event bits a connection raises for the endpoint to turn into [`crate::Event`]s.
pub(crate) mod note {
  pub const READABLE: u8 = 1;
  pub const WRITABLE: u8 = 2;
  pub const CONNECTED: u8 = 4;
  pub const CLOSED: u8 = 8;
}

/// Duplicate ACKs that start fast retransmit.
pub(crate) const DUP_THRESH: u32 = 3;

/// What the endpoint lends a connection for one operation.
pub(crate) struct Ctx<'a> {
  pub now: Duration,
  pub cfg: &'a Config,
  pub budget: &'a mut Budget,
  pub stats: &'a mut EndpointStats,
  pub challenge: &'a mut RateLimit,
}

/// The global memory budget: bytes charged by all connections beyond their [`Config::min_buffer`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Budget {
  pub limit: usize,
  pub used: usize,
}

impl Budget {
  pub fn available(&self) -> usize {
    self.limit.saturating_sub(self.used)
  }
}

/// A per-second rate limit (challenge ACKs).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RateLimit {
  second: u64,
  count: u32,
}

impl RateLimit {
  /// Takes one token for the second of `now`; false when `limit` were already taken.
  pub fn take(&mut self, now: Duration, limit: u32) -> bool {
    let s = now.as_secs();
    if s != self.second {
      self.second = s;
      self.count = 0;
    }
    if self.count < limit {
      self.count += 1;
      true
    } else {
      false
    }
  }
}

/// Loss recovery in progress: fast recovery (RFC 6675 with NewReno windows) or after a timeout.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Recovery {
  /// Recovery ends when this is acknowledged (`SND.NXT` when it began).
  pub point: Seq,
  /// Retransmission pointer: holes below it were retransmitted in this episode.
  pub high_rxt: Seq,
  /// Un-SACKed data below this is presumed lost.
  pub lost_to: Seq,
  /// Fast recovery (true) or timeout recovery (false: slow start from one segment).
  pub fast: bool,
  /// The first retransmission goes out whatever the pipe (RFC 6675 5, step 4.3).
  pub force: bool,
}

/// What to restore if a timeout proves spurious.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Undo {
  pub cwnd: u32,
  pub ssthresh: u32,
  pub tsval: u32,
}

/// A connection.
#[derive(Debug)]
pub(crate) struct Conn {
  pub local: SocketAddr,
  pub remote: SocketAddr,
  pub state: State,
  /// Opened by a listener (a SYN received) rather than `connect`.
  pub passive: bool,

  pub iss: Seq,
  pub snd_una: Seq,
  pub snd_nxt: Seq,
  pub snd_wnd: u32,
  pub snd_wl1: Seq,
  pub snd_wl2: Seq,
  pub max_snd_wnd: u32,
  pub snd_wscale: u8,
  pub sendbuf: SendBuf,
  /// The application shut the sending side: a FIN follows the buffered data.
  pub fin_queued: bool,
  pub fin_sent: bool,
  pub fin_seq: Seq,
  pub fin_acked: bool,

  pub irs: Seq,
  pub rcv_nxt: Seq,
  /// Right edge of the window advertised (never moved left).
  pub rcv_adv: Seq,
  pub rcv_wscale: u8,
  pub recvbuf: RecvBuf,
  /// The peer's FIN was consumed (in order): `rcv_nxt` counts it.
  pub fin_rcvd: bool,
  /// Sequence number of a FIN seen beyond `rcv_nxt`.
  pub rcv_fin_seq: Option<Seq>,
  /// Largest payload seen from the peer (at most our MSS): the "full segment" of the ACK policy.
  pub rcv_mss: u32,

  /// Largest option-plus-payload bytes per wire segment: min(peer MSS, our MTU limit).
  pub mss_send: u32,
  pub mss_adv: u16,
  pub ts_ok: bool,
  pub sack_ok: bool,
  pub ws_ok: bool,
  pub ts_recent: u32,
  pub ts_recent_at: Duration,
  pub ts_offset: u32,
  pub last_ack_sent: Seq,
  /// Window sent in our SYN (unscaled).
  pub syn_window: u16,

  pub rto_at: Option<Duration>,
  pub delack_at: Option<Duration>,
  pub persist_at: Option<Duration>,
  pub keepalive_at: Option<Duration>,
  pub linger_at: Option<Duration>,
  /// The endpoint's timer-heap entry for this connection.
  pub scheduled: Option<Duration>,
  pub rtt: RttEstimator,
  pub rtt_probe: Option<(Seq, Duration)>,
  pub retries: u32,
  pub persist_backoff: u32,
  pub ka_probes: u32,
  pub last_rx: Duration,

  pub cc: NewReno,
  pub scoreboard: Scoreboard,
  pub recovery: Option<Recovery>,
  pub recover: Seq,
  pub dupacks: u32,
  pub undo: Option<Undo>,

  pub ack_now: bool,
  pub unacked_rx: u32,
  pub syn_pending: bool,
  pub probe_pending: bool,
  pub ka_pending: bool,

  /// The application holds a handle (active open, or accepted).
  pub owned: bool,
  /// The application closed its handle: the endpoint frees the connection when it ends.
  pub orphan: bool,
  pub error: Option<Error>,
  pub notes: u8,
  pub write_blocked: bool,
  pub charged: usize,
  pub dirty: bool,
  pub listener: Option<u32>,
  pub half_open: bool,
  pub queued: bool,
  pub stats: ConnStats,
}

impl Conn {
  /// A connection in SYN_SENT (`passive` false) or about to enter SYN_RECEIVED.
  pub fn new(
    cfg: &Config,
    now: Duration,
    local: SocketAddr,
    remote: SocketAddr,
    iss: Seq,
    passive: bool,
  ) -> Conn {
    let v6 = local.is_ipv6();
    let mss_adv = cfg.mss_for(v6);
    let ts_offset = crate::isn::tuple_hash(cfg.secret, 1, local, remote) as u32;
    let mut rtt = RttEstimator::new(cfg.rto_initial, cfg.rto_min, cfg.rto_max);
    rtt.backoff = 0;
    let default_mss = if v6 { 1220 } else { 536 };
    Conn {
      local,
      remote,
      state: State::SynSent,
      passive,
      iss,
      snd_una: iss,
      snd_nxt: iss,
      snd_wnd: 0,
      snd_wl1: Seq(0),
      snd_wl2: iss,
      max_snd_wnd: 0,
      snd_wscale: 0,
      sendbuf: SendBuf::new(iss + 1),
      fin_queued: false,
      fin_sent: false,
      fin_seq: Seq(0),
      fin_acked: false,
      irs: Seq(0),
      rcv_nxt: Seq(0),
      rcv_adv: Seq(0),
      rcv_wscale: if cfg.window_scaling { cfg.wscale() } else { 0 },
      recvbuf: RecvBuf::new(cfg.max_ooo_ranges),
      fin_rcvd: false,
      rcv_fin_seq: None,
      rcv_mss: 536,
      mss_send: default_mss.min(mss_adv as u32),
      mss_adv,
      ts_ok: false,
      sack_ok: false,
      ws_ok: false,
      ts_recent: 0,
      ts_recent_at: now,
      ts_offset,
      last_ack_sent: Seq(0),
      syn_window: 0,
      rto_at: None,
      delack_at: None,
      persist_at: None,
      keepalive_at: None,
      linger_at: None,
      scheduled: None,
      rtt,
      rtt_probe: None,
      retries: 0,
      persist_backoff: 0,
      ka_probes: 0,
      last_rx: now,
      cc: NewReno::new(default_mss, cfg.initial_cwnd),
      scoreboard: Scoreboard::default(),
      recovery: None,
      recover: iss,
      dupacks: 0,
      undo: None,
      ack_now: false,
      unacked_rx: 0,
      syn_pending: true,
      probe_pending: false,
      ka_pending: false,
      owned: !passive,
      orphan: false,
      error: None,
      notes: 0,
      write_blocked: false,
      charged: 0,
      dirty: false,
      listener: None,
      half_open: false,
      queued: false,
      stats: ConnStats::default(),
    }
  }

  /// Applies the options of the peer's SYN: what both sides offered is on.
  pub fn negotiate(&mut self, cfg: &Config, o: &TcpOptions, now: Duration) {
    let v6 = self.local.is_ipv6();
    let peer_mss = o.mss.map(|m| m as u32).unwrap_or(if v6 { 1220 } else { 536 });
    self.mss_send = peer_mss.min(cfg.mss_for(v6) as u32).max(64);
    self.ws_ok = cfg.window_scaling && o.window_scale.is_some();
    if self.ws_ok {
      self.snd_wscale = o.window_scale.unwrap_or(0).min(14);
    } else {
      self.snd_wscale = 0;
      self.rcv_wscale = 0;
    }
    self.sack_ok = cfg.sack && o.sack_permitted;
    self.ts_ok = cfg.timestamps && o.timestamps.is_some();
    if let Some(ts) = o.timestamps {
      self.ts_recent = ts.val;
      self.ts_recent_at = now;
    }
    self.cc = NewReno::new(self.smss(), cfg.initial_cwnd);
  }

  /// Payload bytes of a full segment with the usual options (timestamps).
  pub fn smss(&self) -> u32 {
    self
      .mss_send
      .saturating_sub(if self.ts_ok { 12 } else { 0 })
      .max(1)
  }

  /// Our timestamp clock: milliseconds plus the connection's offset.
  pub fn tsval(&self, now: Duration) -> u32 {
    (now.as_millis() as u32).wrapping_add(self.ts_offset)
  }

  /// Sequence space sent and not acknowledged (SYN and FIN included).
  pub fn flight(&self) -> u32 {
    self.snd_nxt.since(self.snd_una)
  }

  /// True once our SYN is acknowledged.
  pub fn syn_acked(&self) -> bool {
    self.snd_una > self.iss
  }

  /// The application's receive buffer size for this connection (what the window field can express).
  fn recv_cap(&self, cfg: &Config) -> u32 {
    let cap = cfg.recv_cap();
    if self.ws_ok {
      cap.min(65535 << self.rcv_wscale)
    } else {
      cap.min(65535)
    }
  }

  /// Bytes committed on the receive side: unread data plus the window still open.
  fn rcv_commit(&self) -> usize {
    let data_nxt = self.rcv_nxt - self.fin_rcvd as u32;
    self.recvbuf.readable() + self.rcv_adv.since(data_nxt) as usize
  }

  /// How much of a window increase of `inc` bytes the budget allows.
  fn grantable(&self, inc: u32, cfg: &Config, budget: &Budget) -> u32 {
    let free = cfg.min_buffer.saturating_sub(self.rcv_commit()) as u32;
    let extra = inc.saturating_sub(free);
    free.min(inc) + extra.min(budget.available().min(u32::MAX as usize) as u32)
  }

  /// Re-charges the budget with this connection's current use beyond its minimum buffers.
  pub fn recharge(&mut self, cfg: &Config, budget: &mut Budget) {
    let floor = cfg.min_buffer;
    let now = self.rcv_commit().saturating_sub(floor) + self.sendbuf.len().saturating_sub(floor);
    budget.used = budget.used - self.charged + now;
    self.charged = now;
  }

  /// The window to advertise now (already scaled down), opening the right edge if the receiver-side silly
  /// window rule (RFC 9293 3.8.6.2.2) and the budget allow. Never moves the acceptance edge left.
  pub fn advertise(&mut self, cfg: &Config, budget: &mut Budget) -> u16 {
    let cap = self.recv_cap(cfg);
    let data_nxt = self.rcv_nxt - self.fin_rcvd as u32;
    let target = data_nxt + cap.saturating_sub(self.recvbuf.readable() as u32);
    let mut edge = self.rcv_adv.max(self.rcv_nxt);
    let inc = target.since(edge);
    if inc > 0 && inc >= (cap / 2).min(self.mss_adv as u32) {
      edge += self.grantable(inc, cfg, budget);
    }
    // Rounded down to the scale: the peer may see the edge below `rcv_adv` by less than 2^wscale bytes
    // (never moving it left by more), while everything up to `rcv_adv` stays acceptable and charged. Rounding
    // up instead would creep past the budget by up to 2^wscale bytes with every ACK.
    let wnd = edge.since(self.rcv_nxt);
    let field = (wnd >> self.rcv_wscale).min(65535);
    self.rcv_adv = self.rcv_adv.max(edge);
    self.recharge(cfg, budget);
    field as u16
  }

  /// The unscaled window of a SYN or SYN-ACK, within the budget.
  pub fn syn_window(&self, cfg: &Config, budget: &Budget) -> u16 {
    let want = self.recv_cap(cfg).min(65535);
    let extra = want.saturating_sub(cfg.min_buffer as u32);
    let w = want.min(cfg.min_buffer as u32) + extra.min(budget.available().min(65535) as u32);
    w.max(1) as u16
  }

  // ----- user operations -----

  /// Copies received data out. `Ok(0)` is the end of the stream (the peer's FIN, all data read).
  pub fn read(&mut self, buf: &mut [u8], cfg: &Config, budget: &mut Budget) -> Result<usize, Error> {
    if let Some(e) = self.error {
      return Err(e);
    }
    let n = self.recvbuf.read(buf);
    if n > 0 {
      self.recharge(cfg, budget);
      self.maybe_window_update(cfg, budget);
      if self.recvbuf.readable() == 0 {
        self.recvbuf.trim(cfg.min_buffer.max(64 << 10));
      }
      return Ok(n);
    }
    if self.fin_rcvd {
      return Ok(0);
    }
    match self.state {
      State::Closed | State::TimeWait => Ok(0),
      _ if buf.is_empty() => Ok(0),
      _ => Err(Error::WouldBlock),
    }
  }

  /// After a read: send a window update if the window was getting small and can now open by at least
  /// min(half the buffer, one MSS).
  fn maybe_window_update(&mut self, cfg: &Config, budget: &Budget) {
    if !self.state.is_synchronized() || self.fin_rcvd {
      return;
    }
    let cap = self.recv_cap(cfg);
    let open = self.rcv_adv.since(self.rcv_nxt);
    let could = cap
      .saturating_sub(self.recvbuf.readable() as u32)
      .saturating_sub(open);
    let could = self.grantable(could, cfg, budget);
    if open < cap / 2 && could >= (cap / 2).min(self.mss_adv as u32) && !self.ack_now {
      self.ack_now = true;
      self.stats.window_updates += 1;
    }
  }

  /// Queues data for sending; returns how much was taken (within the send buffer and the budget).
  pub fn write(&mut self, data: &[u8], cfg: &Config, budget: &mut Budget) -> Result<usize, Error> {
    if let Some(e) = self.error {
      return Err(e);
    }
    match self.state {
      State::SynSent | State::SynReceived | State::Established | State::CloseWait => {}
      State::Closed => return Err(Error::NotConnected),
      _ => return Err(Error::Shutdown),
    }
    if self.fin_queued {
      return Err(Error::Shutdown);
    }
    let len = self.sendbuf.len();
    let room = cfg.send_buffer.saturating_sub(len);
    let room = room.min(cfg.min_buffer.saturating_sub(len) + budget.available());
    let n = room.min(data.len());
    if n < data.len() {
      self.write_blocked = true;
    }
    if n == 0 {
      return Err(Error::WouldBlock);
    }
    self.sendbuf.push(&data[..n]);
    self.recharge(cfg, budget);
    Ok(n)
  }

  /// Bytes `write` would accept now.
  pub fn send_space(&self, cfg: &Config, budget: &Budget) -> usize {
    let len = self.sendbuf.len();
    cfg
      .send_buffer
      .saturating_sub(len)
      .min(cfg.min_buffer.saturating_sub(len) + budget.available())
  }

  /// Half-close: a FIN follows the buffered data; receiving goes on.
  pub fn shutdown(&mut self) -> Result<(), Error> {
    if let Some(e) = self.error {
      return Err(e);
    }
    match self.state {
      State::SynSent => self.fin_queued = true,
      State::SynReceived | State::Established => {
        self.fin_queued = true;
        self.state = State::FinWait1;
      }
      State::CloseWait => {
        self.fin_queued = true;
        self.state = State::LastAck;
      }
      State::Closed => return Err(Error::NotConnected),
      _ => {}
    }
    Ok(())
  }

  /// Ends the connection now: state CLOSED, timers stopped, `err` reported to the application. With an
  /// error (a reset, a timeout) the buffers are flushed (RFC 9293 3.10.7.4).
  pub fn close_now(&mut self, err: Option<Error>) {
    if let Some(e) = err {
      self.error = Some(e);
      self.recvbuf.clear();
      let end = self.sendbuf.end();
      self.sendbuf.ack(end);
    }
    self.state = State::Closed;
    self.rto_at = None;
    self.delack_at = None;
    self.persist_at = None;
    self.keepalive_at = None;
    self.linger_at = None;
    self.recovery = None;
    self.ack_now = false;
    self.syn_pending = false;
    self.probe_pending = false;
    self.ka_pending = false;
    self.notes |= note::CLOSED | note::READABLE | note::WRITABLE;
  }

  /// Internal invariants (for tests and fuzzers).
  #[cfg(test)]
  pub fn check_invariants(&self, cfg: &Config) {
    assert!(
      self.snd_una <= self.snd_nxt,
      "snd_una {:?} > snd_nxt {:?}",
      self.snd_una,
      self.snd_nxt
    );
    if self.state == State::Closed {
      return;
    }
    assert!(
      self.flight() as usize <= self.sendbuf.len() + 2,
      "flight beyond data+SYN+FIN: {:?} una {:?} nxt {:?} buf {}..{:?} fin {} {:?} acked {}",
      self.state,
      self.snd_una,
      self.snd_nxt,
      self.sendbuf.len(),
      self.sendbuf.end(),
      self.fin_sent,
      self.fin_seq,
      self.fin_acked
    );
    if self.syn_acked() && self.state != State::Closed {
      let fin_done = self.fin_acked && self.snd_una == self.sendbuf.end() + 1;
      assert!(
        self.sendbuf.start() == self.snd_una || fin_done,
        "send buffer starts at SND.UNA"
      );
    }
    if self.state.is_synchronized() && self.state != State::Closed {
      assert!(
        self.rcv_nxt <= self.rcv_adv + 1,
        "rcv_nxt {:?} rcv_adv {:?}",
        self.rcv_nxt,
        self.rcv_adv
      );
      assert!(
        self.recvbuf.held() <= self.rcv_commit(),
        "reassembly within the window"
      );
    }
    for &(l, r) in self.scoreboard.ranges() {
      assert!(
        self.snd_una < r && l < r && r <= self.snd_nxt,
        "SACK range {l:?}..{r:?} outside"
      );
    }
    if let Some(r) = self.recovery {
      assert!(r.lost_to <= self.snd_nxt);
    }
    assert!(self.cc.cwnd >= 1);
    let floor = cfg.min_buffer;
    let want = self.rcv_commit().saturating_sub(floor) + self.sendbuf.len().saturating_sub(floor);
    assert_eq!(want, self.charged, "charge up to date");
  }

  /// The earliest timer.
  pub fn next_deadline(&self) -> Option<Duration> {
    [
      self.rto_at,
      self.delack_at,
      self.persist_at,
      self.keepalive_at,
      self.linger_at,
    ]
    .into_iter()
    .flatten()
    .min()
  }
}
