//! tunkit's forwarding stack: the pure protocol logic that turns packets read from a TUN into TCP connections
//! and UDP sessions for the application, in the "system stack" style (sing-tun's `stack_system.go`): TCP is
//! terminated by the kernel itself through a NAT, UDP becomes sessions the application serves, pings are
//! answered. No syscalls, no threads, no I/O, no clock: the caller passes the time in, so every behaviour is
//! deterministic and tested without a device.
//!
//! # TCP: the kernel NAT
//!
//! The TUN prefix holds the TUN's own address `A` and one or more NAT addresses `B`. A kernel TCP listener is
//! bound on `A:P`. A client segment `S:s -> D:d` read from the TUN is rewritten in place to `B:n -> A:P` (`n` a
//! NAT port allocated for the 5-tuple) and written back ([`Verdict::WriteBack`]); the kernel sees an ordinary
//! connection to its listener and answers `A:P -> B:n`, which routes out of the TUN and is rewritten to
//! `D:d -> S:s`. The application `accept()`s on the listener, gets peer `B:n`, and asks [`Stack::lookup_tcp`]
//! who the client is and where it was going. Only addresses, ports and checksums change (an incremental
//! RFC 1624 update), whatever the segment's size. See [`tcp`] for a flow's life (quarantine, handshake expiry).
//!
//! With [`StackConfig::hold_syn`] ("connect before accept") a SYN that opens a flow is not written back but
//! held ([`Verdict::Hold`]): the application dials the destination first and then calls [`Stack::decide`],
//! which gives the SYN to write (accept), or a RST or an ICMP unreachable for the client (refuse), so a
//! destination that refuses or cannot be reached fails the client's connect instead of opening and resetting.
//!
//! # UDP, ICMP and the rest
//!
//! UDP datagrams become [`Verdict::Datagram`]s of sessions keyed by the client endpoint (endpoint-independent
//! mapping); the application answers through [`Stack::udp_reply`], which builds the packet to write. ICMP echo
//! requests are answered, dropped or passed ([`IcmpMode`]). Everything else, and anything addressed to the
//! gateway `A` itself, is [`Verdict::Pass`]: the application's, unchanged (`tun.packets()`). Malformed packets
//! and fragments pass too; no input makes the stack panic.
//!
//! # Concurrency
//!
//! [`Stack`] is `Send + Sync` and every method takes `&self`: share it (`Arc<Stack>`) between the reader
//! threads of a multi-queue device and the binding. The TCP table and the UDP table each sit behind their own
//! mutex (held for a few hash-map operations per packet, never across I/O); ICMP and packets that pass take no
//! lock; the per-verdict counters are atomics.

#![warn(missing_docs)]

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use tunkit_core::packet::ip::ipv6_upper_layer;
use tunkit_core::packet::{checksum, Family as IpFamily, Packet, Transport};
use tunkit_core::{Error, ErrorKind, Result};

mod config;
mod icmp;
pub mod nat;
pub mod tcp;
pub mod udp;
mod wire;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;

pub use config::{FamilyConfig, IcmpMode, StackConfig};
pub use tcp::{Decision, TcpFlowInfo};
pub use udp::UdpSessionInfo;

use config::Family;
use tcp::{Segment, TcpTable};
use udp::UdpTable;

/// What to do with a packet after [`Stack::inbound`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
  /// Rewritten in place (addresses/ports/checksums): write it back to the TUN as it is now.
  WriteBack,
  /// The stack answered: write `out` (an ICMP echo reply, a TCP RST) to the TUN; the original is consumed.
  Reply,
  /// A UDP datagram for the application: session `session` (new or known), with the payload at `payload` (a
  /// range into the packet) sent to `destination`.
  Datagram {
    /// The session id (stable for the client endpoint until the session ends).
    session: u64,
    /// `Some` for the first datagram of a new session.
    new: Option<UdpSessionInfo>,
    /// The UDP payload as a range of the packet buffer.
    payload: Range<usize>,
    /// Where this datagram was sent (`D:d`; one session may talk to many destinations).
    destination: SocketAddr,
  },
  /// Consumed, nothing to send (on purpose: ICMP in `Drop` mode, a kernel segment for an unknown NAT port, a
  /// RST for an unknown flow, an echo request with a bad checksum).
  Drop,
  /// Not the stack's: hand the packet to the application unchanged.
  Pass,
  /// With `hold_syn`: a SYN that opened the TCP flow `flow`, consumed and held (nothing to write; the packet
  /// is unchanged). Dial `destination` for `client`, then call [`Stack::decide`] within `hold_timeout`.
  Hold {
    /// The pending flow's id, for [`Stack::decide`] (and [`Stack::take_expired_holds`]).
    flow: u64,
    /// `S:s`: the client's endpoint.
    client: SocketAddr,
    /// `D:d`: the destination it dialled.
    destination: SocketAddr,
  },
}

/// Counters and table sizes of a [`Stack`] (see [`Stack::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StackStats {
  /// Live TCP flows (the ones `max_tcp_flows` caps), pending ones included.
  pub tcp_flows: usize,
  /// Of `tcp_flows`, those pending (a held SYN awaiting [`Stack::decide`]).
  pub tcp_pending: usize,
  /// Ended TCP flows whose NAT port is still in quarantine (their packets are still translated).
  pub tcp_quarantined: usize,
  /// TCP flows created since the start.
  pub tcp_created: u64,
  /// TCP flows ended by a RST (either direction).
  pub tcp_reset: u64,
  /// TCP flows ended by [`Stack::release_tcp`].
  pub tcp_released: u64,
  /// TCP flows whose handshake never completed within `tcp_syn_idle`.
  pub tcp_syn_expired: u64,
  /// RSTs the stack sent (refused SYNs, segments of unknown flows, `tcp_refused_reset`).
  pub tcp_resets_sent: u64,
  /// SYNs held ([`Verdict::Hold`]); each pending flow ends in exactly one of the four counters below.
  pub tcp_held: u64,
  /// Pending flows accepted ([`Decision::Accept`]).
  pub tcp_accepted: u64,
  /// Pending flows refused with a RST ([`Decision::Reset`]).
  pub tcp_refused_reset: u64,
  /// Pending flows refused with an ICMP unreachable ([`Decision::Unreachable`]).
  pub tcp_refused_unreachable: u64,
  /// Pending flows removed undecided after `hold_timeout`.
  pub tcp_hold_expired: u64,
  /// SYNs refused because the flow table was full or no NAT port was free.
  pub refused_full: u64,
  /// Of `refused_full`, those refused for want of a NAT port (all live or in quarantine).
  pub refused_ports: u64,
  /// NAT ports allocated (live and quarantined flows).
  pub nat_ports_in_use: usize,
  /// NAT ports there are (64 512 per NAT address).
  pub nat_ports_capacity: usize,
  /// Open UDP sessions.
  pub udp_sessions: usize,
  /// UDP sessions created since the start.
  pub udp_created: u64,
  /// UDP sessions evicted at the cap.
  pub udp_evicted: u64,
  /// UDP sessions expired after `udp_idle`.
  pub udp_expired: u64,
  /// UDP sessions closed by [`Stack::close_udp`].
  pub udp_closed: u64,
  /// UDP reply packets built by [`Stack::udp_reply`].
  pub udp_replies: u64,
  /// ICMP port unreachables built by [`Stack::udp_unreachable`].
  pub udp_refused: u64,
  /// Packets per verdict of [`Stack::inbound`] (`Hold` is `tcp_held`).
  pub write_back: u64,
  /// See `write_back`.
  pub reply: u64,
  /// See `write_back`.
  pub datagram: u64,
  /// See `write_back`.
  pub drop: u64,
  /// See `write_back`.
  pub pass: u64,
}

#[derive(Debug, Default)]
struct Counters {
  write_back: AtomicU64,
  reply: AtomicU64,
  datagram: AtomicU64,
  drop: AtomicU64,
  pass: AtomicU64,
  udp_replies: AtomicU64,
  udp_refused: AtomicU64,
}

/// The forwarding stack of one device. `Send + Sync`, every method takes `&self` (see the crate docs).
#[derive(Debug)]
pub struct Stack {
  cfg: StackConfig,
  v4: Option<Family>,
  v6: Option<Family>,
  tcp: Mutex<TcpTable>,
  udp: Mutex<UdpTable>,
  counters: Counters,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
  // A panic while holding the lock would be a bug; the tables stay usable rather than poisoning every thread.
  m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Stack {
  /// A stack for `cfg`. Validates it: at least one family; `listen_port` not 0; caps at least 1; in each
  /// family a unicast gateway `A` of that family, a prefix length that fits, and one or more distinct NAT
  /// addresses `B` inside `A`'s prefix that are neither `A` nor the IPv4 network or broadcast address.
  /// Errors are `ErrorKind::InvalidAddress` (an address or prefix) or `ErrorKind::InvalidArgument` (the rest).
  pub fn new(cfg: StackConfig) -> Result<Stack> {
    let (v4, v6) = config::validate(&cfg)?;
    let pools = [
      v4.as_ref().map(|f| nat::PortPool::new(&f.nat)),
      v6.as_ref().map(|f| nat::PortPool::new(&f.nat)),
    ];
    Ok(Stack {
      tcp: Mutex::new(TcpTable::new(
        pools,
        cfg.max_tcp_flows,
        cfg.quarantine,
        cfg.tcp_syn_idle,
        cfg.hold_syn.then_some(cfg.hold_timeout),
      )),
      udp: Mutex::new(UdpTable::new(cfg.max_udp_sessions, cfg.udp_idle)),
      cfg,
      v4,
      v6,
      counters: Counters::default(),
    })
  }

  /// The configuration the stack was built with.
  pub fn config(&self) -> &StackConfig {
    &self.cfg
  }

  /// One packet read from the TUN (an IP packet, no virtio header, with complete checksums). May rewrite `pkt`
  /// in place (never changing its length); `out` receives the packet to write for [`Verdict::Reply`] (it is
  /// left alone otherwise). For `Pass`, `Drop` and `Hold` the packet is unchanged.
  pub fn inbound(&self, pkt: &mut [u8], now: Instant, out: &mut Vec<u8>) -> Verdict {
    self.inbound_offload(pkt, now, out, false)
  }

  /// [`Stack::inbound`] for a packet read with a virtio header: with `csum_partial` (the header's
  /// `NEEDS_CSUM` flag) the TCP checksum field holds only the pseudo-header sum, which a rewrite updates for
  /// the new addresses (the ports are not part of it), so a 64 KiB GSO super-packet can be rewritten whole
  /// and written back with the same virtio header. Without it, exactly `inbound`. An ICMP echo request whose
  /// checksum is partial is not answered (`Drop` in `Reply` mode): the reply builder checks checksums.
  pub fn inbound_offload(
    &self,
    pkt: &mut [u8],
    now: Instant,
    out: &mut Vec<u8>,
    csum_partial: bool,
  ) -> Verdict {
    let v = self.classify(pkt, now, out, csum_partial);
    let c = match v {
      Verdict::WriteBack => &self.counters.write_back,
      Verdict::Reply => &self.counters.reply,
      Verdict::Datagram { .. } => &self.counters.datagram,
      Verdict::Drop => &self.counters.drop,
      Verdict::Pass => &self.counters.pass,
      Verdict::Hold { .. } => return v, // counted by the table (`tcp_held`)
    };
    c.fetch_add(1, Ordering::Relaxed);
    v
  }

  fn classify(&self, pkt: &mut [u8], now: Instant, out: &mut Vec<u8>, partial: bool) -> Verdict {
    let Ok(p) = Packet::parse(pkt) else {
      return Verdict::Pass;
    };
    let (fam, pool) = match p.family {
      IpFamily::V4 => (self.v4.as_ref(), 0),
      IpFamily::V6 => (self.v6.as_ref(), 1),
    };
    let Some(fam) = fam else {
      return Verdict::Pass;
    };
    // Not for the stack: the gateway's own traffic, broadcast and multicast, unspecified or multicast sources.
    let foreign = p.dst == fam.gateway || fam.special_destination(p.dst) || Family::special_source(p.src);
    match p.transport {
      Transport::Tcp {
        src_port,
        dst_port,
        seq,
        ack,
        flags,
        ..
      } if self.cfg.tcp => {
        if src_port == 0 || dst_port == 0 {
          return Verdict::Pass;
        }
        if p.family == IpFamily::V6 && p.l4_offset != 40 {
          // A routing header moves the pseudo-header's destination: not rewritten.
          match ipv6_upper_layer(&pkt[..p.ip_len]) {
            Ok(u) if !u.routed => {}
            _ => return Verdict::Pass,
          }
        }
        let seg = Segment {
          l4: p.l4_offset,
          ip_len: p.ip_len,
          src: SocketAddr::new(p.src, src_port),
          dst: SocketAddr::new(p.dst, dst_port),
          seq,
          ack,
          flags,
          payload_len: p.payload.len(),
          partial,
        };
        if p.src == fam.gateway && src_port == self.cfg.listen_port && fam.nat_index(p.dst).is_some() {
          return lock(&self.tcp).kernel_segment(pkt, &seg, now);
        }
        if foreign || fam.nat_index(p.src).is_some() {
          return Verdict::Pass;
        }
        let listener = SocketAddr::new(fam.gateway, self.cfg.listen_port);
        lock(&self.tcp).client_segment(pkt, &seg, pool, listener, now, out)
      }
      Transport::Udp { src_port, dst_port } if self.cfg.udp => {
        if foreign || src_port == 0 || dst_port == 0 {
          return Verdict::Pass;
        }
        let client = SocketAddr::new(p.src, src_port);
        let destination = SocketAddr::new(p.dst, dst_port);
        let (session, new) = lock(&self.udp).datagram(client, destination, now);
        Verdict::Datagram {
          session,
          new,
          payload: p.payload.clone(),
          destination,
        }
      }
      Transport::Icmp { .. } if !foreign => icmp::inbound(self.cfg.icmp, pkt, &p, out),
      _ => Verdict::Pass,
    }
  }

  /// The accepted kernel socket's peer address (`B:n`, as `accept()` reports it; an IPv4-mapped IPv6 address
  /// is taken as IPv4) -> the client's endpoint and the destination it dialled. `None` if `B:n` has no flow
  /// (never created, or its quarantine is over). A looked-up flow counts as established and as held by the
  /// application: it no longer expires by itself, and its NAT port is not freed (even after a RST) until
  /// [`Stack::release_tcp`]. Call it once per accepted socket, and release every socket looked up.
  pub fn lookup_tcp(&self, peer: SocketAddr) -> Option<TcpFlowInfo> {
    lock(&self.tcp).lookup(peer)
  }

  /// The application's decision for the pending TCP flow `flow` (from [`Verdict::Hold`]), into `out` (cleared
  /// first), to write to the TUN:
  /// - [`Decision::Accept`]: the stored SYN, rewritten to `B:n -> A:P` with complete checksums (write it
  ///   without a `NEEDS_CSUM` virtio header even if the client's SYN had one); from here the flow is exactly
  ///   a flow whose SYN was written back, its `tcp_syn_idle` timer starting now.
  /// - [`Decision::Reset`]: a RST|ACK from `D:d` to `S:s` for the client's SYN (sequence 0, acknowledging
  ///   the SYN: ISN + 1, plus any payload it carried).
  /// - [`Decision::Unreachable`]: an ICMP destination unreachable from `D` to `S` (IPv4 type 3 code 1, host
  ///   unreachable; ICMPv6 type 1 code 3, address unreachable) quoting the client's original SYN (as much of
  ///   it as fits 576 bytes, 1280 for IPv6).
  ///
  /// Refusing removes the flow and frees its NAT port at once (the kernel never saw it: no quarantine).
  /// Returns false, with `out` empty, if `flow` is unknown, not pending (decided already) or its hold has
  /// expired (`hold_timeout` after its SYN; then it is removed now, and not reported by
  /// [`Stack::take_expired_holds`]).
  pub fn decide(&self, flow: u64, decision: Decision, now: Instant, out: &mut Vec<u8>) -> bool {
    lock(&self.tcp).decide(flow, decision, now, out)
  }

  /// The pending TCP flows that [`Stack::tick`] (or the creation of another flow) removed undecided after
  /// `hold_timeout` since the last call (their ports are free, nothing was sent to the client): drop what
  /// the application kept for them. Call it after each `tick` when `hold_syn` is set.
  pub fn take_expired_holds(&self) -> Vec<u64> {
    lock(&self.tcp).take_expired_holds()
  }

  /// The application closed the accepted socket for peer `B:n`: the flow ends and its NAT port goes to
  /// quarantine (not reused until `quarantine` has passed without packets on it; the kernel's closing
  /// segments are still translated meanwhile). Unknown peers are ignored.
  pub fn release_tcp(&self, peer: SocketAddr, now: Instant) {
    lock(&self.tcp).release(peer, now)
  }

  /// A UDP reply from the application for session `session`, appearing to come from `from` (the real remote;
  /// an IPv4-mapped IPv6 address is taken as IPv4): builds the whole IPv4/IPv6 + UDP packet to the session's
  /// client, checksums included, into `out` (cleared first). Refreshes the session. Errors: `NotFound` if the
  /// session is gone, `InvalidAddress` if `from` is not of the client's family, `PacketTooLarge` if the
  /// payload does not fit one IP packet.
  pub fn udp_reply(&self, session: u64, from: SocketAddr, payload: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let from = wire::normalize(from);
    let mut udp = lock(&self.udp);
    let Some(info) = udp.info(session) else {
      return Err(Error::new(
        ErrorKind::NotFound,
        format!("UDP session {session} is gone (closed, evicted or expired)"),
      ));
    };
    let client = info.client;
    if from.is_ipv4() != client.is_ipv4() {
      return Err(Error::new(
        ErrorKind::InvalidAddress,
        format!("reply source {from} is not of the family of the session's client {client}"),
      ));
    }
    let max = if client.is_ipv4() { 65_535 - 28 } else { 65_535 - 8 };
    if payload.len() > max {
      return Err(Error::new(
        ErrorKind::PacketTooLarge,
        format!(
          "a {}-byte UDP payload does not fit one packet (at most {max})",
          payload.len()
        ),
      ));
    }
    udp.reply(session);
    drop(udp);
    wire::udp_datagram(out, from, client, payload);
    self.counters.udp_replies.fetch_add(1, Ordering::Relaxed);
    Ok(())
  }

  /// Refuses a datagram of session `session` to `destination` (a `reject` rule, say): builds the ICMP port
  /// unreachable (IPv4 type 3 code 3, ICMPv6 type 1 code 4) from `destination` to the session's client into
  /// `out` (cleared first), quoting the datagram `payload` as the client sent it (headers rebuilt, cut to 576
  /// bytes for IPv4, 1280 for IPv6). A client's connected UDP socket then fails with `ECONNREFUSED`. The
  /// session stays open (its other destinations are not refused). Errors as [`Stack::udp_reply`]'s, with
  /// `destination` in place of `from`.
  pub fn udp_unreachable(
    &self,
    session: u64,
    destination: SocketAddr,
    payload: &[u8],
    out: &mut Vec<u8>,
  ) -> Result<()> {
    let destination = wire::normalize(destination);
    let Some(info) = lock(&self.udp).info(session) else {
      return Err(Error::new(
        ErrorKind::NotFound,
        format!("UDP session {session} is gone (closed, evicted or expired)"),
      ));
    };
    let client = info.client;
    if destination.is_ipv4() != client.is_ipv4() {
      return Err(Error::new(
        ErrorKind::InvalidAddress,
        format!("destination {destination} is not of the family of the session's client {client}"),
      ));
    }
    let v6 = client.is_ipv6();
    let keep = icmp::quote_len(v6) - if v6 { 48 } else { 28 };
    let mut quote = Vec::with_capacity(icmp::quote_len(v6));
    wire::udp_datagram(
      &mut quote,
      client,
      destination,
      &payload[..payload.len().min(keep)],
    );
    // The quoted headers keep the datagram's real lengths, as the packet the client sent had them (the quoted
    // UDP checksum covers the whole datagram, which is how a cut quote is; receivers do not check it).
    let udp_len = (8 + payload.len()).min(u16::MAX as usize) as u16;
    if v6 {
      wire::put16(&mut quote, 4, udp_len);
      wire::put16(&mut quote, 44, udp_len);
    } else {
      wire::put16(&mut quote, 2, udp_len.saturating_add(20));
      wire::put16(&mut quote, 10, 0);
      let c = checksum::checksum(&quote[..20]);
      wire::put16(&mut quote, 10, c);
      wire::put16(&mut quote, 24, udp_len);
    }
    icmp::unreachable(
      out,
      destination.ip(),
      client.ip(),
      icmp::Unreachable::Port,
      &quote,
    );
    self.counters.udp_refused.fetch_add(1, Ordering::Relaxed);
    Ok(())
  }

  /// The client and first destination of UDP session `session`, while it is open.
  pub fn udp_session(&self, session: u64) -> Option<UdpSessionInfo> {
    lock(&self.udp).info(session)
  }

  /// The application ended UDP session `session` (a no-op if it is already gone). Its client's next datagram
  /// opens a new session.
  pub fn close_udp(&self, session: u64) {
    lock(&self.udp).close(session)
  }

  /// Expires idle UDP sessions, never-established TCP flows and pending TCP flows whose hold is over (see
  /// [`Stack::take_expired_holds`]), ends quarantines that are over. Returns the UDP
  /// sessions that ended inside the stack since the last call (evicted at the cap, then expired): the
  /// application ends them. Call it every second or so.
  pub fn tick(&self, now: Instant) -> Vec<u64> {
    lock(&self.tcp).sweep(now);
    lock(&self.udp).tick(now)
  }

  /// The UDP sessions evicted at the cap since the last call (to end them sooner than the next
  /// [`Stack::tick`], which would otherwise return them).
  pub fn take_evicted(&self) -> Vec<u64> {
    lock(&self.udp).take_evicted()
  }

  /// Counters and table sizes.
  pub fn stats(&self) -> StackStats {
    let c = &self.counters;
    let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut s = StackStats {
      write_back: ld(&c.write_back),
      reply: ld(&c.reply),
      datagram: ld(&c.datagram),
      drop: ld(&c.drop),
      pass: ld(&c.pass),
      udp_replies: ld(&c.udp_replies),
      udp_refused: ld(&c.udp_refused),
      ..StackStats::default()
    };
    {
      let t = lock(&self.tcp);
      s.tcp_flows = t.live();
      s.tcp_pending = t.pending();
      s.tcp_quarantined = t.quarantined();
      (s.nat_ports_in_use, s.nat_ports_capacity) = t.ports();
      let k = t.counters;
      s.tcp_created = k.created;
      s.tcp_reset = k.ended_reset;
      s.tcp_released = k.released;
      s.tcp_syn_expired = k.syn_expired;
      s.tcp_resets_sent = k.resets_sent;
      s.tcp_held = k.held;
      s.tcp_accepted = k.accepted;
      s.tcp_refused_reset = k.refused_reset;
      s.tcp_refused_unreachable = k.refused_unreachable;
      s.tcp_hold_expired = k.hold_expired;
      s.refused_full = k.refused_full + k.refused_ports;
      s.refused_ports = k.refused_ports;
    }
    let u = lock(&self.udp);
    s.udp_sessions = u.len();
    s.udp_created = u.counters.created;
    s.udp_evicted = u.counters.evicted;
    s.udp_expired = u.counters.expired;
    s.udp_closed = u.counters.closed;
    s
  }

  /// A notice for the log, once per burst of cap hits ("TCP flow table full (N flows): new connections
  /// refused", NAT ports exhausted, UDP sessions evicted), each taken once. A burst ends when a flow can be
  /// created again (TCP) or the table is below its cap again (UDP).
  pub fn take_notice(&self) -> Option<String> {
    if let Some(n) = lock(&self.tcp).notices.pop_front() {
      return Some(n);
    }
    lock(&self.udp).notices.pop_front()
  }
}
