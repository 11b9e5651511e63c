//! Endpoint configuration.

use std::time::Duration;

/// Keepalive probing (RFC 9293 3.8.4): after `idle` without any segment from the peer, a probe every
/// `interval`; after `probes` unanswered probes the connection is aborted ([`crate::Error::TimedOut`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
  /// Silence before the first probe.
  pub idle: Duration,
  /// Time between probes.
  pub interval: Duration,
  /// Unanswered probes before giving up.
  pub probes: u32,
}

impl Default for Keepalive {
  /// Linux's defaults: 2 hours, 75 s, 9 probes.
  fn default() -> Keepalive {
    Keepalive {
      idle: Duration::from_secs(7200),
      interval: Duration::from_secs(75),
      probes: 9,
    }
  }
}

/// Configuration of an [`crate::Endpoint`]. [`Config::new`] gives defaults suited to a local link (a TUN to
/// the host kernel, a virtual network): every field is public and documented with its default.
#[derive(Clone, Debug)]
pub struct Config {
  /// Key of the RFC 6528 ISN hash (and of timestamp offsets and port choice). Give a random key in
  /// production and a fixed one in tests (everything is then deterministic).
  pub secret: [u8; 16],
  /// The IP MTU of the link (default 1500). The MSS announced is the MTU minus the IP header (20 or 40) and
  /// 20; segments sent are at most the peer's MSS and this limit.
  pub mtu: usize,
  /// Largest receive window of a connection, in bytes (default 4 MiB; the window scale is chosen from it).
  pub recv_buffer: usize,
  /// Largest send buffer of a connection (bytes written and not yet acknowledged; default 4 MiB).
  pub send_buffer: usize,
  /// Global memory budget over all connections' send buffers and receive windows (default 64 MiB). When it
  /// is used up, advertised windows stop opening and writes are accepted only partly; nothing already
  /// accepted is dropped. Each connection may use [`Config::min_buffer`] for each direction beyond it.
  pub memory_budget: usize,
  /// What each connection may always use per direction regardless of the budget (default 16 KiB), so a
  /// connection whose application reads can always make progress.
  pub min_buffer: usize,
  /// Floor of the retransmission timeout (default 20 ms, suited to a local link; RFC 6298 says 1 s, Linux
  /// uses 200 ms). Keep it above the peer's delayed-ACK time: a spurious timeout on a tail segment is undone
  /// with timestamps (Eifel detection) but costs one retransmission.
  pub rto_min: Duration,
  /// Ceiling of the retransmission timeout after backoff (default 60 s).
  pub rto_max: Duration,
  /// The retransmission timeout before any RTT sample (SYN, SYN-ACK; default 1 s, RFC 6298 2.1).
  pub rto_initial: Duration,
  /// Delayed-ACK timeout (default 4 ms); out-of-order data, a FIN and every second full-sized segment are
  /// acknowledged at once. `Duration::ZERO` acknowledges every segment immediately.
  pub delayed_ack: Duration,
  /// Disables Nagle's algorithm (default true: Nagle is off, small writes go out at once).
  pub nodelay: bool,
  /// Keepalive probing (default off).
  pub keepalive: Option<Keepalive>,
  /// How long a connection that closed first stays in TIME_WAIT as a tuple-only entry (default 2 s; RFC 9293
  /// says 2 MSL = 4 min, which only matters on paths that hold segments for minutes).
  pub time_wait: Duration,
  /// How long a connection the application closed may wait in FIN_WAIT_2 for the peer's FIN (default
  /// 60 s, Linux's `tcp_fin_timeout`).
  pub fin_wait2_timeout: Duration,
  /// SYN (and SYN-ACK) retransmissions before the open fails (default 6).
  pub syn_retries: u32,
  /// Consecutive retransmission timeouts of the same data before the connection is aborted (default 15).
  pub max_retransmits: u32,
  /// Ceiling of the zero-window probe interval after backoff (default 10 s).
  pub persist_max: Duration,
  /// Endpoint-wide cap on half-open (SYN_RECEIVED) passive connections (default 1024); SYNs beyond it are
  /// dropped (and counted).
  pub max_half_open: usize,
  /// Endpoint-wide cap on connections (default 65536); SYNs beyond it are dropped, `connect` fails.
  pub max_connections: usize,
  /// Offer window scaling (RFC 7323; default true).
  pub window_scaling: bool,
  /// Offer SACK (RFC 2018; default true).
  pub sack: bool,
  /// Offer timestamps (RFC 7323; default true).
  pub timestamps: bool,
  /// Segmentation offload: the largest payload of one emitted packet (default 0: off, every packet is one
  /// segment). With a value above the MSS, bulk data leaves as TSO super-packets whose
  /// [`crate::OutPacket::gso_size`] gives the per-segment payload for the device.
  pub tso_max_payload: usize,
  /// Emit partial TCP checksums (the pseudo-header sum, virtio `NEEDS_CSUM`) for the device to complete
  /// (default false: full checksums). Needed with `tso_max_payload` on a virtio device.
  pub checksum_offload: bool,
  /// Initial congestion window in segments (default 10, RFC 6928).
  pub initial_cwnd: u32,
  /// Out-of-order ranges kept per connection (default 64); a segment that would need more is dropped (and
  /// retransmitted by the peer).
  pub max_ooo_ranges: usize,
  /// Challenge ACKs (RFC 5961) sent per second at most, endpoint-wide (default 1000).
  pub challenge_ack_limit: u32,
  /// Range of local ports `connect` picks from when given port 0 (default 49152..=65535).
  pub ephemeral_ports: (u16, u16),
}

impl Config {
  /// The defaults (see each field), with the ISN key `secret`.
  pub fn new(secret: [u8; 16]) -> Config {
    Config {
      secret,
      mtu: 1500,
      recv_buffer: 4 << 20,
      send_buffer: 4 << 20,
      memory_budget: 64 << 20,
      min_buffer: 16 << 10,
      rto_min: Duration::from_millis(20),
      rto_max: Duration::from_secs(60),
      rto_initial: Duration::from_secs(1),
      delayed_ack: Duration::from_millis(4),
      nodelay: true,
      keepalive: None,
      time_wait: Duration::from_secs(2),
      fin_wait2_timeout: Duration::from_secs(60),
      syn_retries: 6,
      max_retransmits: 15,
      persist_max: Duration::from_secs(10),
      max_half_open: 1024,
      max_connections: 65536,
      window_scaling: true,
      sack: true,
      timestamps: true,
      tso_max_payload: 0,
      checksum_offload: false,
      initial_cwnd: 10,
      max_ooo_ranges: 64,
      challenge_ack_limit: 1000,
      ephemeral_ports: (49152, 65535),
    }
  }

  /// The MSS announced for a family: the MTU minus the IP and TCP headers (at least 64).
  pub fn mss_for(&self, ipv6: bool) -> u16 {
    let hdr = if ipv6 { 60 } else { 40 };
    self.mtu.saturating_sub(hdr).clamp(64, 65535 - hdr) as u16
  }

  /// The window scale to announce: the smallest shift with which the receive buffer fits the 16-bit field.
  pub(crate) fn wscale(&self) -> u8 {
    let mut s = 0u8;
    while s < 14 && (self.recv_buffer >> s) > 65535 {
      s += 1;
    }
    s
  }

  /// The receive buffer, capped to what the window field can express with the largest scale.
  pub(crate) fn recv_cap(&self) -> u32 {
    self.recv_buffer.clamp(1, 65535 << 14) as u32
  }
}
