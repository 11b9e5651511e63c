//! The pure network stack: addresses, dispatch by protocol, ICMP echo and errors, UDP, and TCP through
//! [`tunkit_tcp::Endpoint`]. No threads, no I/O, time passed in.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tunkit_core::Batch;
use tunkit_tcp::{ConnId, Endpoint, ListenAddr, ListenerId, Outbox};

use crate::frag::{Reassembler, ReassemblyConfig};
use crate::ip::{self, IpView, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};
use crate::udp::{Delivery, UdpId, UdpTable};
use crate::{Error, Event, StackStats, Time};

/// How a stack is set up.
#[derive(Clone, Debug)]
pub struct StackConfig {
  /// The stack's own addresses (IPv4 and IPv6). Packets to others are dropped, except TCP with
  /// [`StackConfig::any_destination`].
  pub addrs: Vec<IpAddr>,
  /// The TCP configuration (its `mtu` is the stack's; TSO and checksum offload are turned off, since the
  /// stack writes plain packets).
  pub tcp: tunkit_tcp::Config,
  /// Proxy mode: TCP segments to any destination go to the endpoint (a listener on
  /// [`ListenAddr::any`] then accepts connections to any address and port).
  pub any_destination: bool,
  /// Datagrams a UDP socket queues before dropping.
  pub udp_queue_packets: usize,
  /// Bytes a UDP socket queues before dropping.
  pub udp_queue_bytes: usize,
  /// TTL / hop limit of the packets the stack builds (TCP uses the endpoint's own).
  pub ttl: u8,
  /// Answer UDP to a closed port with ICMP port unreachable (at most `icmp_errors_per_sec`).
  pub icmp_errors: bool,
  /// Rate limit of ICMP errors.
  pub icmp_errors_per_sec: u32,
  /// IPv4 reassembly bounds.
  pub reassembly: ReassemblyConfig,
}

impl StackConfig {
  /// Defaults with these addresses and the TCP ISN key `secret`.
  pub fn new(addrs: Vec<IpAddr>, secret: [u8; 16]) -> StackConfig {
    StackConfig {
      addrs,
      tcp: tunkit_tcp::Config::new(secret),
      any_destination: false,
      udp_queue_packets: 256,
      udp_queue_bytes: 1 << 20,
      ttl: 64,
      icmp_errors: true,
      icmp_errors_per_sec: 100,
      reassembly: ReassemblyConfig::default(),
    }
  }
}

/// A userspace IP stack (see the crate documentation).
pub struct NetStack {
  cfg: StackConfig,
  tcp: Endpoint,
  udp: UdpTable,
  frag: Reassembler,
  outbox: Outbox,
  pending: Batch,
  events: VecDeque<Event>,
  stats: StackStats,
  ident: u16,
  scratch: Vec<u8>,
  icmp_window: (Duration, u32),
}

impl NetStack {
  /// A stack with no socket.
  pub fn new(mut cfg: StackConfig) -> NetStack {
    cfg.tcp.tso_max_payload = 0;
    cfg.tcp.checksum_offload = false;
    NetStack {
      tcp: Endpoint::new(cfg.tcp.clone()),
      udp: UdpTable::new(cfg.udp_queue_packets, cfg.udp_queue_bytes),
      frag: Reassembler::new(cfg.reassembly),
      cfg,
      outbox: Outbox::new(),
      pending: Batch::default(),
      events: VecDeque::new(),
      stats: StackStats::default(),
      ident: 1,
      scratch: Vec::new(),
      icmp_window: (Duration::ZERO, 0),
    }
  }

  /// The configuration.
  pub fn config(&self) -> &StackConfig {
    &self.cfg
  }

  /// The TCP endpoint, for everything per connection (read, write, shutdown, close, info, ...).
  pub fn tcp(&mut self) -> &mut Endpoint {
    &mut self.tcp
  }

  /// Counters (the TCP endpoint has its own: [`Endpoint::stats`]).
  pub fn stats(&self) -> StackStats {
    let mut s = self.stats;
    s.frag_timeouts = self.frag.timed_out;
    s.frag_pending = self.frag.len() as u64;
    s.frag_bytes = self.frag.bytes() as u64;
    s
  }

  /// True when `ip` is one of the stack's addresses.
  pub fn is_local(&self, ip: IpAddr) -> bool {
    self.cfg.addrs.contains(&ip)
  }

  /// The stack's first address of `remote`'s family.
  pub fn source_for(&self, remote: IpAddr) -> Option<IpAddr> {
    self
      .cfg
      .addrs
      .iter()
      .copied()
      .find(|a| a.is_ipv4() == remote.is_ipv4())
  }

  /// Processes one IP packet from the link; packets to send go into `out`.
  pub fn input(&mut self, now: Time, pkt: &[u8], out: &mut Batch) {
    self.stats.rx_packets += 1;
    let v = match ip::parse(pkt) {
      Ok(v) => v,
      Err(_) => {
        self.stats.rx_malformed += 1;
        return;
      }
    };
    let pkt = &pkt[..v.total];
    if v.is_fragment() {
      let accepted = self.is_local(v.dst) || (self.cfg.any_destination && v.proto == PROTO_TCP);
      if !accepted {
        self.stats.rx_not_local += 1;
        return;
      }
      self.stats.rx_fragments += 1;
      match self.frag.insert(now, &v, pkt) {
        Ok(Some(whole)) => {
          self.stats.reassembled += 1;
          if let Ok(v) = ip::parse(&whole) {
            self.dispatch(now, &v, &whole, out);
          }
        }
        Ok(None) => {}
        Err(_) => self.stats.frag_dropped += 1,
      }
      return;
    }
    self.dispatch(now, &v, pkt, out);
  }

  fn dispatch(&mut self, now: Time, v: &IpView, pkt: &[u8], out: &mut Batch) {
    let local = self.is_local(v.dst);
    if v.proto == PROTO_TCP && (local || self.cfg.any_destination) {
      if self.tcp.input(now, pkt, &mut self.outbox).is_err() {
        self.stats.rx_tcp_errors += 1;
      }
      self.flush_tcp(out);
      self.take_tcp_events();
      return;
    }
    if !local {
      self.stats.rx_not_local += 1;
      return;
    }
    let l4 = &pkt[v.hdr_len..];
    match v.proto {
      PROTO_UDP => self.udp_input(now, v, pkt, out),
      PROTO_ICMP if v.src.is_ipv4() => self.echo(v, l4, 8, 0, out),
      PROTO_ICMPV6 if v.src.is_ipv6() => self.echo(v, l4, 128, 129, out),
      _ => self.stats.rx_unsupported += 1,
    }
  }

  fn flush_tcp(&mut self, out: &mut Batch) {
    for p in self.outbox.packets() {
      out.push(&p.data);
      self.stats.tx_packets += 1;
    }
    self.outbox.clear();
  }

  fn take_tcp_events(&mut self) {
    while let Some(e) = self.tcp.next_event() {
      self.events.push_back(Event::Tcp(e));
    }
  }

  fn next_ident(&mut self) -> u16 {
    self.ident = self.ident.wrapping_add(1);
    self.ident
  }

  fn emit(&mut self, out: &mut Batch, src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8]) {
    let id = self.next_ident();
    ip::build(&mut self.scratch, src, dst, proto, self.cfg.ttl, id, l4);
    out.push(&self.scratch);
    self.stats.tx_packets += 1;
  }

  fn echo(&mut self, v: &IpView, l4: &[u8], request: u8, reply: u8, out: &mut Batch) {
    if l4.len() < 8 || !ip::l4_checksum_ok(v, l4) {
      self.stats.rx_bad_checksum += 1;
      return;
    }
    if l4[0] != request || l4[1] != 0 {
      self.stats.icmp_ignored += 1;
      return;
    }
    let mut msg = l4.to_vec();
    msg[0] = reply;
    msg[2] = 0;
    msg[3] = 0;
    self.stats.echo_replies += 1;
    self.emit(out, v.dst, v.src, v.proto, &msg);
  }

  fn udp_input(&mut self, now: Time, v: &IpView, pkt: &[u8], out: &mut Batch) {
    let l4 = &pkt[v.hdr_len..];
    if l4.len() < 8 {
      self.stats.rx_malformed += 1;
      return;
    }
    let len = u16::from_be_bytes([l4[4], l4[5]]) as usize;
    if len < 8 || len > l4.len() {
      self.stats.rx_malformed += 1;
      return;
    }
    let l4 = &l4[..len];
    if !ip::l4_checksum_ok(v, l4) {
      self.stats.rx_bad_checksum += 1;
      return;
    }
    let from = SocketAddr::new(v.src, u16::from_be_bytes([l4[0], l4[1]]));
    let to = SocketAddr::new(v.dst, u16::from_be_bytes([l4[2], l4[3]]));
    match self.udp.deliver(from, to, &l4[8..]) {
      Delivery::Queued(id, first) => {
        self.stats.udp_rx += 1;
        if first {
          self.events.push_back(Event::UdpReadable(id));
        }
      }
      Delivery::QueueFull => self.stats.udp_queue_drops += 1,
      Delivery::NoSocket => {
        self.stats.udp_no_socket += 1;
        self.port_unreachable(now, v, pkt, out);
      }
    }
  }

  /// ICMP destination unreachable (port) quoting the offending packet, rate limited.
  fn port_unreachable(&mut self, now: Time, v: &IpView, pkt: &[u8], out: &mut Batch) {
    if !self.cfg.icmp_errors || v.src.is_multicast() || v.src.is_unspecified() {
      return;
    }
    if now >= self.icmp_window.0 + Duration::from_secs(1) {
      self.icmp_window = (now, 0);
    }
    if self.icmp_window.1 >= self.cfg.icmp_errors_per_sec {
      self.stats.icmp_errors_limited += 1;
      return;
    }
    self.icmp_window.1 += 1;
    let (proto, typ, code, quote) = if v.src.is_ipv4() {
      (PROTO_ICMP, 3, 3, (v.hdr_len + 8).min(pkt.len()))
    } else {
      (PROTO_ICMPV6, 1, 4, pkt.len().min(1280 - 48))
    };
    let mut msg = vec![typ, code, 0, 0, 0, 0, 0, 0];
    msg.extend_from_slice(&pkt[..quote]);
    self.stats.icmp_errors_sent += 1;
    self.emit(out, v.dst, v.src, proto, &msg);
  }

  /// Runs timers due at `now` and emits what application calls left pending.
  pub fn poll(&mut self, now: Time, out: &mut Batch) {
    self.frag.expire(now);
    self.tcp.poll(now, &mut self.outbox);
    self.flush_tcp(out);
    self.take_tcp_events();
    if !self.pending.is_empty() {
      for p in self.pending.iter() {
        out.push(p);
      }
      self.stats.tx_packets += self.pending.len() as u64;
      self.pending.clear();
    }
  }

  /// When [`NetStack::poll`] should run next (`Duration::ZERO`: now); `None` when nothing is scheduled.
  pub fn next_deadline(&self) -> Option<Time> {
    if !self.pending.is_empty() {
      return Some(Duration::ZERO);
    }
    match (self.tcp.next_deadline(), self.frag.next_expiry()) {
      (Some(a), Some(b)) => Some(a.min(b)),
      (a, b) => a.or(b),
    }
  }

  /// The next event for the application.
  pub fn next_event(&mut self) -> Option<Event> {
    self.take_tcp_events();
    self.events.pop_front()
  }

  /// Opens a TCP connection to `remote` from the stack's address of its family and an ephemeral port.
  pub fn tcp_connect(&mut self, now: Time, remote: SocketAddr) -> Result<ConnId, Error> {
    let src = self.source_for(remote.ip()).ok_or(Error::NoLocalAddress)?;
    Ok(self.tcp.connect(now, SocketAddr::new(src, 0), remote)?)
  }

  /// Listens on `port` on all the stack's addresses (`backlog`: see [`Endpoint::listen`]).
  pub fn tcp_listen(&mut self, port: u16, backlog: usize) -> Result<ListenerId, Error> {
    Ok(self.tcp.listen(ListenAddr::port(port), backlog)?)
  }

  /// Binds a UDP socket: an unspecified address means all the stack's addresses, port 0 an ephemeral one.
  /// Returns the handle and the bound address.
  pub fn udp_bind(&mut self, local: SocketAddr) -> Result<(UdpId, SocketAddr), Error> {
    if !local.ip().is_unspecified() && !self.is_local(local.ip()) {
      return Err(Error::NoLocalAddress);
    }
    self.udp.bind(local)
  }

  /// Closes a UDP socket (queued datagrams are dropped).
  pub fn udp_close(&mut self, id: UdpId) -> Result<(), Error> {
    self.udp.close(id)
  }

  /// Sends a datagram (it leaves at the next `poll`). Datagrams above the MTU are refused (no
  /// fragmentation on output).
  pub fn udp_send_to(&mut self, id: UdpId, data: &[u8], to: SocketAddr) -> Result<usize, Error> {
    let local = self.udp.get(id)?.local;
    if to.port() == 0
      || to.ip().is_unspecified()
      || (local.is_ipv4() != to.is_ipv4() && !local.ip().is_unspecified())
    {
      return Err(Error::InvalidInput);
    }
    let src = if local.ip().is_unspecified() {
      self.source_for(to.ip()).ok_or(Error::NoLocalAddress)?
    } else {
      local.ip()
    };
    let hdr = if to.is_ipv4() { 28 } else { 48 };
    if data.len() + hdr > self.cfg.tcp.mtu {
      return Err(Error::TooLarge);
    }
    let mut l4 = Vec::with_capacity(8 + data.len());
    l4.extend_from_slice(&local.port().to_be_bytes());
    l4.extend_from_slice(&to.port().to_be_bytes());
    l4.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    l4.extend_from_slice(&[0, 0]);
    l4.extend_from_slice(data);
    let mut pending = std::mem::take(&mut self.pending);
    self.emit(&mut pending, src, to.ip(), PROTO_UDP, &l4);
    self.stats.tx_packets -= 1;
    self.pending = pending;
    self.stats.udp_tx += 1;
    Ok(data.len())
  }

  /// Receives a datagram: (bytes copied into `buf`, sender). A longer datagram is truncated.
  /// `WouldBlock` when none is queued.
  pub fn udp_recv_from(&mut self, id: UdpId, buf: &mut [u8]) -> Result<(usize, SocketAddr), Error> {
    self.udp.recv(id, buf).map(|(n, _, from)| (n, from))
  }
}
