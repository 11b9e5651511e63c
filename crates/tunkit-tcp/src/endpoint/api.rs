//! The application's side of the endpoint: listen, accept, connect, read, write, shutdown, close, abort,
//! and introspection. None of these emits packets itself: output goes out at the next
//! [`Endpoint::poll`] (whose deadline becomes "now").

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use super::{ConnId, Endpoint, ListenAddr, Listener, ListenerId};
use crate::conn::{Conn, State};
use crate::error::Error;
use crate::stats::ConnStats;

/// A snapshot of a connection (see [`Endpoint::info`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnInfo {
  /// Local address and port.
  pub local: SocketAddr,
  /// Remote address and port.
  pub remote: SocketAddr,
  /// State.
  pub state: State,
  /// How it ended, if by an error.
  pub error: Option<Error>,
  /// Payload bytes of a full segment (the peer's MSS and our MTU, minus the usual options): the
  /// `gso_size` of super-packets.
  pub mss: u32,
  /// Peer's window, bytes.
  pub snd_wnd: u32,
  /// Window we advertise now, bytes.
  pub rcv_wnd: u32,
  /// Congestion window, bytes.
  pub cwnd: u32,
  /// Slow-start threshold, bytes (`u32::MAX` before the first loss).
  pub ssthresh: u32,
  /// Smoothed RTT.
  pub srtt: Option<Duration>,
  /// Current retransmission timeout.
  pub rto: Duration,
  /// Sequence space in flight.
  pub in_flight: u32,
  /// Bytes in the send buffer (unacknowledged and unsent).
  pub send_buffered: usize,
  /// Bytes ready to read.
  pub readable: usize,
  /// SACK negotiated.
  pub sack: bool,
  /// Timestamps negotiated.
  pub timestamps: bool,
  /// Window scaling negotiated: (our shift, the peer's).
  pub window_scale: Option<(u8, u8)>,
  /// Counters.
  pub stats: ConnStats,
}

impl Endpoint {
  /// Starts listening. `backlog` bounds the connections that completed their handshake and wait for
  /// `accept`, plus those still in SYN_RECEIVED: a SYN beyond it is dropped.
  pub fn listen(&mut self, spec: ListenAddr, backlog: usize) -> Result<ListenerId, Error> {
    if self.listeners.iter().flatten().any(|l| l.spec == spec) {
      return Err(Error::AddrInUse);
    }
    if spec.port == Some(0) {
      return Err(Error::InvalidInput);
    }
    let l = Listener {
      spec,
      backlog: backlog.max(1),
      queue: VecDeque::new(),
      pending: 0,
      notified: false,
    };
    let idx = match self.listeners.iter().position(|l| l.is_none()) {
      Some(i) => {
        self.listeners[i] = Some(l);
        i
      }
      None => {
        self.listeners.push(Some(l));
        self.listeners.len() - 1
      }
    };
    Ok(ListenerId(idx as u32))
  }

  /// Stops listening: connections waiting in the accept queue or still handshaking are reset.
  pub fn unlisten(&mut self, id: ListenerId) -> Result<(), Error> {
    let l = self
      .listeners
      .get_mut(id.0 as usize)
      .and_then(|l| l.take())
      .ok_or(Error::InvalidHandle)?;
    for cid in l.queue {
      if let Some(c) = self.get_mut(cid) {
        c.queued = false;
        c.listener = None;
      }
      self.abort_inner(cid);
    }
    for idx in 0..self.slots.len() as u32 {
      let gen = self.slots[idx as usize].gen;
      let pending = match self.slots[idx as usize].conn.as_deref_mut() {
        Some(c) if c.listener == Some(id.0) && c.half_open => {
          c.listener = None;
          true
        }
        _ => false,
      };
      if pending {
        self.abort_inner(ConnId { idx, gen });
      }
    }
    Ok(())
  }

  /// The next established connection of a listener, if any.
  pub fn accept(&mut self, id: ListenerId) -> Option<ConnId> {
    loop {
      let l = self.listeners.get_mut(id.0 as usize)?.as_mut()?;
      let cid = l.queue.pop_front()?;
      if let Some(c) = self.get_mut(cid) {
        c.queued = false;
        c.owned = true;
        c.listener = None;
        return Some(cid);
      }
    }
  }

  /// Opens a connection from `local` to `remote` (same family; a local port 0 picks a free ephemeral
  /// port). The SYN goes out at the next `poll`; [`super::Event::Connected`] follows the handshake.
  pub fn connect(&mut self, now: Duration, local: SocketAddr, remote: SocketAddr) -> Result<ConnId, Error> {
    if local.is_ipv4() != remote.is_ipv4()
      || local.ip().is_unspecified()
      || remote.ip().is_unspecified()
      || remote.port() == 0
      || remote.ip().is_multicast()
    {
      return Err(Error::InvalidInput);
    }
    if self.live >= self.cfg.max_connections {
      return Err(Error::TooManyConnections);
    }
    let local = if local.port() == 0 {
      self.pick_port(local, remote)?
    } else {
      local
    };
    let key = (local, remote);
    if self.demux.contains_key(&key) || self.tw.contains(&key) {
      return Err(Error::AddrInUse);
    }
    let iss = self.isn(now, key);
    let c = Conn::new(&self.cfg, now, local, remote, iss, false);
    self.stats.active_opens += 1;
    let id = self.insert_conn(c);
    self.mark_dirty(id.idx);
    Ok(id)
  }

  /// RFC 6056 algorithm 3: a keyed hash of the tuple plus a counter that advances with every pick, so a
  /// tuple is not reused right after its last connection (whose old segments may still be in flight).
  fn pick_port(&mut self, local: SocketAddr, remote: SocketAddr) -> Result<SocketAddr, Error> {
    let (lo, hi) = self.cfg.ephemeral_ports;
    let (lo, hi) = (lo.min(hi).max(1) as u32, hi.max(lo).max(1) as u32);
    let n = hi - lo + 1;
    let start =
      (crate::isn::tuple_hash(self.cfg.secret, 2, local, remote) as u32).wrapping_add(self.port_counter);
    for i in 0..n {
      let port = (lo + start.wrapping_add(i) % n) as u16;
      let sa = SocketAddr::new(local.ip(), port);
      if !self.demux.contains_key(&(sa, remote)) && !self.tw.contains(&(sa, remote)) {
        self.port_counter = self.port_counter.wrapping_add(i + 1);
        return Ok(sa);
      }
    }
    Err(Error::TooManyConnections)
  }

  fn user(&mut self, id: ConnId) -> Result<&mut Conn, Error> {
    match self.get_mut(id) {
      Some(c) if c.owned => Ok(c),
      _ => Err(Error::InvalidHandle),
    }
  }

  /// Reads received data. `Ok(0)` (with a non-empty `buf`) is the end of the stream; `WouldBlock` means
  /// nothing yet; after a reset or timeout, that error.
  pub fn read(&mut self, id: ConnId, buf: &mut [u8]) -> Result<usize, Error> {
    let c = self
      .slots
      .get_mut(id.idx as usize)
      .filter(|s| s.gen == id.gen)
      .and_then(|s| s.conn.as_deref_mut());
    let c = match c {
      Some(c) if c.owned => c,
      _ => return Err(Error::InvalidHandle),
    };
    let r = c.read(buf, &self.cfg, &mut self.budget);
    if c.ack_now {
      self.mark_dirty(id.idx);
    }
    r
  }

  /// Queues data to send; returns how much was taken (less than `data.len()` when the send buffer or the
  /// memory budget is full: [`super::Event::Writable`] follows when space opens).
  pub fn write(&mut self, id: ConnId, data: &[u8]) -> Result<usize, Error> {
    let c = self
      .slots
      .get_mut(id.idx as usize)
      .filter(|s| s.gen == id.gen)
      .and_then(|s| s.conn.as_deref_mut());
    let c = match c {
      Some(c) if c.owned => c,
      _ => return Err(Error::InvalidHandle),
    };
    let r = c.write(data, &self.cfg, &mut self.budget);
    if matches!(r, Ok(n) if n > 0) {
      self.mark_dirty(id.idx);
    }
    r
  }

  /// Closes the sending side (a FIN after the buffered data); reading goes on.
  pub fn shutdown(&mut self, id: ConnId) -> Result<(), Error> {
    self.user(id)?.shutdown()?;
    self.mark_dirty(id.idx);
    Ok(())
  }

  /// Releases the handle and closes gracefully: buffered data and a FIN go out, the connection finishes on
  /// its own (FIN_WAIT_2 waits at most `fin_wait2_timeout`). With unread received data it is reset instead
  /// (as kernels do). The handle is invalid afterwards.
  pub fn close(&mut self, id: ConnId) -> Result<(), Error> {
    let c = self.user(id)?;
    c.owned = false;
    match c.state {
      State::Closed | State::TimeWait => {
        self.free_slot(id.idx);
      }
      State::SynSent => {
        c.close_now(None);
        self.free_slot(id.idx);
      }
      _ if c.recvbuf.readable() > 0 => {
        self.abort_inner(id);
      }
      _ => {
        c.orphan = true;
        let _ = c.shutdown();
        self.mark_dirty(id.idx);
      }
    }
    Ok(())
  }

  /// Resets the connection (RST to the peer unless it was still opening) and releases the handle.
  pub fn abort(&mut self, id: ConnId) -> Result<(), Error> {
    self.user(id)?;
    self.abort_inner(id);
    Ok(())
  }

  fn abort_inner(&mut self, id: ConnId) {
    let Some(c) = self.get_mut(id) else { return };
    if !matches!(c.state, State::SynSent | State::Closed | State::TimeWait) {
      let rst = ((c.local, c.remote), c.snd_nxt, Some(c.rcv_nxt));
      self.pending_rst.push(rst);
    }
    self.free_slot(id.idx);
  }

  /// The state, or `None` for an invalid handle.
  pub fn state(&self, id: ConnId) -> Option<State> {
    self.get(id).map(|c| c.state)
  }

  /// Bytes ready to read.
  pub fn readable(&self, id: ConnId) -> usize {
    self.get(id).map_or(0, |c| c.recvbuf.readable())
  }

  /// Bytes `write` would take now.
  pub fn send_space(&self, id: ConnId) -> usize {
    self.get(id).map_or(0, |c| c.send_space(&self.cfg, &self.budget))
  }

  /// Counters of a connection.
  pub fn conn_stats(&self, id: ConnId) -> Option<ConnStats> {
    self.get(id).map(|c| c.stats)
  }

  /// A snapshot of a connection.
  pub fn info(&self, id: ConnId) -> Option<ConnInfo> {
    let c = self.get(id)?;
    Some(ConnInfo {
      local: c.local,
      remote: c.remote,
      state: c.state,
      error: c.error,
      mss: c.smss(),
      snd_wnd: c.snd_wnd,
      rcv_wnd: (c.rcv_adv.since(c.rcv_nxt) >> c.rcv_wscale) << c.rcv_wscale,
      cwnd: c.cc.cwnd,
      ssthresh: c.cc.ssthresh,
      srtt: c.rtt.srtt(),
      rto: c.rtt.rto(),
      in_flight: c.flight(),
      send_buffered: c.sendbuf.len(),
      readable: c.recvbuf.readable(),
      sack: c.sack_ok,
      timestamps: c.ts_ok,
      window_scale: c.ws_ok.then_some((c.rcv_wscale, c.snd_wscale)),
      stats: c.stats,
    })
  }

  /// The handles the application holds (in slot order).
  pub fn connections(&self) -> Vec<ConnId> {
    let mut v = Vec::new();
    for (i, s) in self.slots.iter().enumerate() {
      if let Some(c) = s.conn.as_deref() {
        if c.owned {
          v.push(ConnId {
            idx: i as u32,
            gen: s.gen,
          });
        }
      }
    }
    v
  }

  fn get(&self, id: ConnId) -> Option<&Conn> {
    let s = self.slots.get(id.idx as usize)?;
    if s.gen != id.gen {
      return None;
    }
    s.conn.as_deref()
  }

  /// Checks the endpoint's internal invariants (tests and fuzzers call it after every step).
  #[cfg(test)]
  pub(crate) fn check_invariants(&self) {
    let mut live = 0;
    let mut charged = 0;
    let mut half_open = 0;
    for s in &self.slots {
      let Some(c) = s.conn.as_deref() else { continue };
      live += 1;
      charged += c.charged;
      half_open += c.half_open as usize;
      c.check_invariants(&self.cfg);
    }
    assert_eq!(live, self.live);
    assert_eq!(charged, self.budget.used, "budget accounting");
    assert_eq!(half_open, self.half_open);
    for (key, &idx) in &self.demux {
      let c = self.slots[idx as usize]
        .conn
        .as_deref()
        .expect("demux to a live slot");
      assert_eq!((c.local, c.remote), *key);
      assert!(
        !matches!(c.state, State::Closed | State::TimeWait),
        "{:?} in demux",
        c.state
      );
    }
  }

  /// Every connection slot, described (tests).
  #[cfg(test)]
  pub(crate) fn describe(&self) -> Vec<String> {
    let mut v = Vec::new();
    for s in &self.slots {
      if let Some(c) = s.conn.as_deref() {
        v.push(format!(
          "{:?} owned {} orphan {} queued {} una {:?} nxt {:?} buf {} wnd {} fin_q {} fin_sent {} rto {:?} persist {:?} \
           linger {:?} retries {} pb {} next {:?}",
          c.state,
          c.owned,
          c.orphan,
          c.queued,
          c.snd_una,
          c.snd_nxt,
          c.sendbuf.len(),
          c.snd_wnd,
          c.fin_queued,
          c.fin_sent,
          c.rto_at,
          c.persist_at,
          c.linger_at,
          c.retries,
          c.persist_backoff,
          c.next_deadline()
        ));
      }
    }
    v
  }

  /// The connection behind a handle, for the crate's tests.
  #[cfg(test)]
  pub(crate) fn conn(&self, id: ConnId) -> &Conn {
    self.get(id).expect("live connection")
  }
}
