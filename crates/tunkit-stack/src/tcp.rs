//! The TCP flow table of the system stack: client segments `S:s -> D:d` become `B:n -> A:P` for the kernel
//! listener, the kernel's replies `A:P -> B:n` become `D:d -> S:s` again.
//!
//! # A flow's life
//!
//! - **Created** by a client SYN (without ACK) for a 5-tuple with no flow, if the table is below
//!   `max_tcp_flows` and a NAT port is free; otherwise the SYN is answered with a RST and a notice is queued.
//! - **Pending** instead, with `hold_syn`: the SYN is not written back ([`crate::Verdict::Hold`]); the flow has
//!   its NAT port and counts as live, but the kernel has not seen it. Its retransmitted SYNs and other
//!   segments are dropped, a SYN with another initial sequence number replaces the stored one. The
//!   application's [`crate::Decision`] writes the stored SYN (the flow goes on as below, its handshake timer
//!   starting then) or answers the client with a RST or an ICMP unreachable and frees the port at once (no
//!   quarantine: the kernel never used it); after `hold_timeout` undecided it is removed silently (by the
//!   sweep, or by its client's next SYN, which then opens a new pending flow).
//! - **Live** while the kernel socket may exist: translated both ways; FIN in each direction and the kernel's
//!   SYN-ACK are recorded. It is *established* once the client acknowledged the kernel's SYN-ACK, or when the
//!   application looked it up (it accepted the socket). Live flows are never evicted and never expire once
//!   established: long-idle TCP keeps working, its life is tied to the accepted socket.
//! - **Ended** by `release_tcp` (the application closed the socket), a RST in either direction, or, for a flow
//!   that never got established, `tcp_syn_idle` without packets. An ended flow keeps its mapping and keeps
//!   being translated (the kernel's FIN after `close()`, the last ACKs, retransmissions) while its port sits
//!   in **quarantine**: each packet restarts the `quarantine` period, and the port is freed (and the mapping
//!   removed) only after that much silence. So a port the kernel may still hold in TIME_WAIT or FIN_WAIT is
//!   never reused. A flow the application looked up (it holds the accepted socket) keeps its port after a
//!   RST until it is also released, so a late `release_tcp` can never hit a newer flow on a reused port.
//! - A flow ended only by the handshake timer comes back to life when a late packet arrives (or the
//!   application looks it up) and the table is below its cap.
//! - A new SYN on a 5-tuple whose flow has ended, or with another initial sequence number, is a new
//!   connection: the old flow is detached from the 5-tuple (it keeps translating the kernel's side until it
//!   ends) and a new flow with a new port is created. A SYN with the same initial sequence number is a
//!   retransmission and goes to the same flow.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tunkit_core::packet::TcpHeader;

use crate::nat::PortPool;
use crate::wire;
use crate::Verdict;
use hold::Held;

mod hold;

pub use hold::Decision;

const SYN: u8 = TcpHeader::SYN;
const ACK: u8 = TcpHeader::ACK;
const RST: u8 = TcpHeader::RST;
const FIN: u8 = TcpHeader::FIN;

/// The endpoints of a TCP flow as the client sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpFlowInfo {
  /// `S:s`: the client's endpoint.
  pub client: SocketAddr,
  /// `D:d`: the destination the client dialled.
  pub destination: SocketAddr,
}

/// What the table needs of a TCP segment (already parsed and bounds-checked).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Segment {
  /// Offset of the TCP header.
  pub l4: usize,
  /// Length of the IP packet (the buffer may be longer).
  pub ip_len: usize,
  pub src: SocketAddr,
  pub dst: SocketAddr,
  pub seq: u32,
  pub ack: u32,
  pub flags: u8,
  /// Payload bytes (for the RST's acknowledgment number).
  pub payload_len: usize,
  /// The checksum field holds only the pseudo-header sum (virtio `NEEDS_CSUM`).
  pub partial: bool,
}

#[derive(Debug)]
struct Flow {
  info: TcpFlowInfo,
  /// `B:n`.
  nat: SocketAddr,
  /// Index of the family (0 IPv4, 1 IPv6) and of `B` among that family's NAT addresses.
  pool: usize,
  nat_idx: usize,
  /// The client's initial sequence number (tells retransmitted SYNs from new connections).
  isn: u32,
  last_seen: Instant,
  /// `Some(t)`: ended, the port is free at `t` (pushed later by each packet seen).
  until: Option<Instant>,
  /// Still the flow of its 5-tuple in `by_tuple`.
  attached: bool,
  synack: bool,
  established: bool,
  /// Looked up: the application holds the accepted socket, so the port stays taken until it is released.
  accepted: bool,
  fin_client: bool,
  fin_kernel: bool,
  reset: bool,
  released: bool,
  expired: bool,
  /// Pending (held SYN, no decision yet): the kernel has not seen the flow.
  held: Option<Box<Held>>,
}

impl Flow {
  /// Ended only by the handshake timer: a late packet or lookup brings it back.
  fn revivable(&self) -> bool {
    self.expired && !self.reset && !self.released
  }

  /// The application holds the socket: the port is not freed, even after a RST, until it is released.
  fn held(&self) -> bool {
    self.accepted && !self.released
  }
}

/// Counters of the TCP table.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TcpCounters {
  pub created: u64,
  pub refused_full: u64,
  pub refused_ports: u64,
  pub resets_sent: u64,
  pub syn_expired: u64,
  pub ended_reset: u64,
  pub released: u64,
  pub held: u64,
  pub accepted: u64,
  pub refused_reset: u64,
  pub refused_unreachable: u64,
  pub hold_expired: u64,
}

/// The TCP NAT state of one device.
#[derive(Debug)]
pub(crate) struct TcpTable {
  flows: HashMap<u64, Flow>,
  by_tuple: HashMap<TcpFlowInfo, u64>,
  by_nat: HashMap<SocketAddr, u64>,
  /// Port pools of the IPv4 and IPv6 NAT addresses.
  pools: [Option<PortPool>; 2],
  /// (free-at, flow) in about increasing time; entries whose flow was extended are pushed again.
  quarantine: VecDeque<(Instant, u64)>,
  /// (check-at, flow) for flows not yet established.
  handshakes: VecDeque<(Instant, u64)>,
  next_id: u64,
  live: usize,
  max_flows: usize,
  quarantine_for: Duration,
  syn_idle: Duration,
  /// `Some(hold_timeout)` when SYNs are held.
  hold: Option<Duration>,
  /// (expires-at, flow) for pending flows, in about increasing time.
  holds: VecDeque<(Instant, u64)>,
  /// Pending flows removed by expiry, not yet taken.
  expired_holds: Vec<u64>,
  pending: usize,
  /// The latest time seen, for calls that take none.
  clock: Option<Instant>,
  full_burst: bool,
  ports_burst: bool,
  pub notices: VecDeque<String>,
  pub counters: TcpCounters,
}

impl TcpTable {
  /// An empty table with the given pools (IPv4, IPv6) and limits; `hold` is `Some(hold_timeout)` to hold
  /// SYNs.
  pub fn new(
    pools: [Option<PortPool>; 2],
    max_flows: usize,
    quarantine: Duration,
    syn_idle: Duration,
    hold: Option<Duration>,
  ) -> Self {
    TcpTable {
      flows: HashMap::new(),
      by_tuple: HashMap::new(),
      by_nat: HashMap::new(),
      pools,
      quarantine: VecDeque::new(),
      handshakes: VecDeque::new(),
      next_id: 1,
      live: 0,
      max_flows,
      quarantine_for: quarantine,
      syn_idle,
      hold,
      holds: VecDeque::new(),
      expired_holds: Vec::new(),
      pending: 0,
      clock: None,
      full_burst: false,
      ports_burst: false,
      notices: VecDeque::new(),
      counters: TcpCounters::default(),
    }
  }

  /// Live flows (not ended), pending ones included.
  pub fn live(&self) -> usize {
    self.live
  }

  /// Pending flows (held SYNs awaiting a decision).
  pub fn pending(&self) -> usize {
    self.pending
  }

  /// Ended flows whose port is still in quarantine.
  pub fn quarantined(&self) -> usize {
    self.flows.len() - self.live
  }

  /// (ports in use, port capacity) over both families.
  pub fn ports(&self) -> (usize, usize) {
    self
      .pools
      .iter()
      .flatten()
      .fold((0, 0), |(u, c), p| (u + p.in_use(), c + p.capacity()))
  }

  fn advance(&mut self, now: Instant) -> Instant {
    let t = match self.clock {
      Some(c) if c > now => c,
      _ => now,
    };
    self.clock = Some(t);
    now
  }

  /// A client segment `S:s -> D:d` (family pool `pool`) for the listener `gateway`: find or create its flow,
  /// rewrite it to `B:n -> A:P`.
  pub fn client_segment(
    &mut self,
    pkt: &mut [u8],
    seg: &Segment,
    pool: usize,
    listener: SocketAddr,
    now: Instant,
    out: &mut Vec<u8>,
  ) -> Verdict {
    let now = self.advance(now);
    let key = TcpFlowInfo {
      client: seg.src,
      destination: seg.dst,
    };
    let connect = seg.flags & (SYN | ACK | RST) == SYN;
    if self.hold.is_some() {
      // A hold that is over ends before its client's next SYN is looked at: that SYN opens a new flow.
      self.sweep_holds(now);
    }
    let mut id = self.by_tuple.get(&key).copied();
    if let Some(fid) = id.filter(|fid| self.flows.get(fid).is_some_and(|f| f.held.is_some())) {
      if connect {
        self.rehold(fid, pkt, seg, listener, now);
      }
      return Verdict::Drop;
    }
    if let (Some(fid), true) = (id, connect) {
      let retransmit = self
        .flows
        .get(&fid)
        .is_some_and(|f| f.isn == seg.seq && !f.reset && !f.released);
      if !retransmit {
        self.detach(fid);
        id = None;
      }
    }
    let fid = match id {
      Some(fid) => fid,
      None if connect => match self.create(key, seg.seq, pool, now) {
        Some(fid) if self.hold.is_some() => return self.hold(fid, pkt, seg, listener, now),
        Some(fid) => fid,
        None => {
          reset_for(seg, out);
          self.counters.resets_sent += 1;
          return Verdict::Reply;
        }
      },
      None if seg.flags & RST != 0 => return Verdict::Drop,
      None => {
        reset_for(seg, out);
        self.counters.resets_sent += 1;
        return Verdict::Reply;
      }
    };
    self.touch(fid, now);
    let Some(f) = self.flows.get_mut(&fid) else {
      return Verdict::Drop;
    };
    if seg.flags & FIN != 0 {
      f.fin_client = true;
    }
    if seg.flags & (ACK | SYN) == ACK && f.synack {
      f.established = true;
    }
    let nat = f.nat;
    if seg.flags & RST != 0 {
      self.end(fid, now, End::Reset);
    }
    wire::rewrite(
      pkt,
      seg.l4,
      TcpHeader::CHECKSUM_OFFSET,
      nat,
      listener,
      seg.partial,
    );
    Verdict::WriteBack
  }

  /// A kernel segment `A:P -> B:n`: rewrite it to `D:d -> S:s`, or drop it if `B:n` has no flow.
  pub fn kernel_segment(&mut self, pkt: &mut [u8], seg: &Segment, now: Instant) -> Verdict {
    let now = self.advance(now);
    let Some(&fid) = self.by_nat.get(&seg.dst) else {
      return Verdict::Drop;
    };
    if self.flows.get(&fid).is_some_and(|f| f.held.is_some()) {
      return Verdict::Drop; // the kernel never saw a pending flow: a stray segment
    }
    self.touch(fid, now);
    let Some(f) = self.flows.get_mut(&fid) else {
      return Verdict::Drop;
    };
    if seg.flags & (SYN | ACK) == SYN | ACK {
      f.synack = true;
    }
    if seg.flags & FIN != 0 {
      f.fin_kernel = true;
    }
    let info = f.info;
    if seg.flags & RST != 0 {
      self.end(fid, now, End::Reset);
    }
    let (from, to) = (info.destination, info.client);
    wire::rewrite(pkt, seg.l4, TcpHeader::CHECKSUM_OFFSET, from, to, seg.partial);
    Verdict::WriteBack
  }

  /// The flow behind the accepted socket's peer `B:n` (live or in quarantine). Marks it established: the
  /// application holds the socket and will release it. A pending flow has no socket yet: `None`.
  pub fn lookup(&mut self, peer: SocketAddr) -> Option<TcpFlowInfo> {
    let fid = *self.by_nat.get(&wire::normalize(peer))?;
    let f = self.flows.get_mut(&fid).filter(|f| f.held.is_none())?;
    f.established = true;
    f.accepted = true;
    let info = f.info;
    if f.revivable() {
      let now = f.last_seen.max(self.clock.unwrap_or(f.last_seen));
      self.touch(fid, now);
    }
    Some(info)
  }

  /// The application closed the accepted socket for `B:n`: the flow ends, its port goes to quarantine. A
  /// pending flow has no socket yet: ignored.
  pub fn release(&mut self, peer: SocketAddr, now: Instant) {
    let now = self.advance(now);
    let Some(&fid) = self.by_nat.get(&wire::normalize(peer)) else {
      return;
    };
    if self.flows.get(&fid).is_some_and(|f| f.held.is_some()) {
      return;
    }
    self.end(fid, now, End::Released);
  }

  /// Ends quarantines that are over, expires handshakes idle for `syn_idle` and pending flows older than
  /// `hold_timeout`.
  pub fn sweep(&mut self, now: Instant) {
    let now = self.advance(now);
    self.sweep_holds(now);
    while let Some(&(t, fid)) = self.handshakes.front() {
      if t > now {
        break;
      }
      self.handshakes.pop_front();
      let Some(f) = self.flows.get(&fid) else { continue };
      if f.until.is_some() || f.established || f.held.is_some() {
        continue; // a pending flow's handshake timer starts when it is accepted
      }
      let due = f.last_seen + self.syn_idle;
      if due > now {
        self.handshakes.push_back((due, fid));
      } else {
        self.counters.syn_expired += 1;
        self.end(fid, now, End::Expired);
      }
    }
    while let Some(&(t, fid)) = self.quarantine.front() {
      if t > now {
        break;
      }
      self.quarantine.pop_front();
      let Some(f) = self.flows.get(&fid) else { continue };
      match f.until {
        None => {} // revived
        Some(u) if u > now => self.quarantine.push_back((u, fid)),
        // Ended by a RST or the timer while the application holds the socket: look again later.
        Some(_) if f.held() => self.quarantine.push_back((now + self.quarantine_for, fid)),
        Some(_) => self.remove(fid),
      }
    }
  }

  fn create(&mut self, info: TcpFlowInfo, isn: u32, pool: usize, now: Instant) -> Option<u64> {
    self.sweep(now);
    if self.live >= self.max_flows {
      self.counters.refused_full += 1;
      if !self.full_burst {
        self.full_burst = true;
        self.notices.push_back(format!(
          "TCP flow table full ({} flows): new connections refused",
          self.live
        ));
      }
      return None;
    }
    let p = self.pools[pool].as_mut()?;
    let Some((nat_idx, port)) = p.alloc() else {
      self.counters.refused_ports += 1;
      if !self.ports_burst {
        self.ports_burst = true;
        self.notices.push_back(format!(
          "TCP NAT ports exhausted ({} ports live or in quarantine): new connections refused; add NAT addresses",
          p.in_use()
        ));
      }
      return None;
    };
    let nat = SocketAddr::new(p.addr(nat_idx), port);
    self.full_burst = false;
    self.ports_burst = false;
    let fid = self.next_id;
    self.next_id += 1;
    self.flows.insert(
      fid,
      Flow {
        info,
        nat,
        pool,
        nat_idx,
        isn,
        last_seen: now,
        until: None,
        attached: true,
        synack: false,
        established: false,
        accepted: false,
        fin_client: false,
        fin_kernel: false,
        reset: false,
        released: false,
        expired: false,
        held: None,
      },
    );
    self.by_tuple.insert(info, fid);
    self.by_nat.insert(nat, fid);
    self.handshakes.push_back((now + self.syn_idle, fid));
    self.live += 1;
    self.counters.created += 1;
    Some(fid)
  }

  /// A packet or lookup on flow `fid` at `now`: refresh it, push its quarantine out, revive it if only the
  /// handshake timer had ended it.
  fn touch(&mut self, fid: u64, now: Instant) {
    let Some(f) = self.flows.get_mut(&fid) else { return };
    if now > f.last_seen {
      f.last_seen = now;
    }
    let Some(u) = f.until else { return };
    if f.revivable() && self.live < self.max_flows {
      f.until = None;
      f.expired = false;
      self.live += 1;
      if !f.established {
        self.handshakes.push_back((now + self.syn_idle, fid));
      }
    } else {
      let q = now + self.quarantine_for;
      if q > u {
        f.until = Some(q);
      }
    }
  }

  fn end(&mut self, fid: u64, now: Instant, why: End) {
    let Some(f) = self.flows.get_mut(&fid) else { return };
    match why {
      End::Reset if !f.reset => {
        f.reset = true;
        self.counters.ended_reset += 1;
      }
      End::Released if !f.released => {
        f.released = true;
        self.counters.released += 1;
      }
      End::Expired => f.expired = true,
      _ => {}
    }
    let q = now + self.quarantine_for;
    match f.until {
      None => {
        f.until = Some(q);
        self.live -= 1;
        self.quarantine.push_back((q, fid));
      }
      Some(u) if q > u => f.until = Some(q),
      Some(_) => {}
    }
  }

  fn detach(&mut self, fid: u64) {
    if let Some(f) = self.flows.get_mut(&fid) {
      if f.attached {
        f.attached = false;
        self.by_tuple.remove(&f.info);
      }
    }
  }

  fn remove(&mut self, fid: u64) {
    let Some(f) = self.flows.remove(&fid) else { return };
    if f.until.is_none() {
      self.live -= 1;
    }
    if f.held.is_some() {
      self.pending -= 1;
    }
    if f.attached {
      self.by_tuple.remove(&f.info);
    }
    self.by_nat.remove(&f.nat);
    if let Some(p) = self.pools[f.pool].as_mut() {
      p.free(f.nat_idx, f.nat.port());
    }
  }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
  Reset,
  Released,
  Expired,
}

/// The RST answering `seg` (RFC 793, "Reset Generation"), from its destination to its source: if the segment
/// carries an ACK, the RST takes its sequence number from that acknowledgment and has no ACK; otherwise it has
/// sequence number 0 and acknowledges everything the segment occupied (payload, plus one for SYN and for FIN).
pub(crate) fn reset_for(seg: &Segment, out: &mut Vec<u8>) {
  if seg.flags & ACK != 0 {
    wire::tcp_segment(out, seg.dst, seg.src, seg.ack, 0, RST);
  } else {
    let len = seg.payload_len as u32 + (seg.flags & SYN != 0) as u32 + (seg.flags & FIN != 0) as u32;
    wire::tcp_segment(out, seg.dst, seg.src, 0, seg.seq.wrapping_add(len), RST | ACK);
  }
}
