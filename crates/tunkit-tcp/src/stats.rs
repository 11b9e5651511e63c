//! Counters of connections and of the endpoint.

/// Per-connection counters (see [`crate::Endpoint::conn_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnStats {
  /// Segments received for this connection.
  pub segs_in: u64,
  /// Segments sent (each TSO super-packet counts once).
  pub segs_out: u64,
  /// New payload bytes sent (retransmissions not included).
  pub bytes_sent: u64,
  /// Payload bytes acknowledged by the peer.
  pub bytes_acked: u64,
  /// In-order payload bytes received (handed to the receive buffer).
  pub bytes_received: u64,
  /// Segments retransmitted (timeouts, fast retransmit, SACK recovery).
  pub retransmits: u64,
  /// Payload bytes retransmitted.
  pub retransmitted_bytes: u64,
  /// Fast retransmits: loss-recovery episodes entered on duplicate ACKs or SACK information.
  pub fast_retransmits: u64,
  /// Bytes retransmitted in recovery because the SACK scoreboard showed them missing.
  pub sack_recovered_bytes: u64,
  /// Retransmission timeouts.
  pub rto_count: u64,
  /// Timeouts found spurious with timestamps (Eifel) and undone.
  pub spurious_rto: u64,
  /// Duplicate ACKs received.
  pub dup_acks: u64,
  /// Out-of-order segments received and stored.
  pub ooo_segments: u64,
  /// Out-of-order segments dropped for lack of a reassembly range.
  pub ooo_dropped: u64,
  /// Zero-window probes sent (persist timer).
  pub zero_window_probes: u64,
  /// Keepalive probes sent.
  pub keepalive_probes: u64,
  /// Segments dropped by PAWS (an old timestamp).
  pub paws_drops: u64,
  /// Challenge ACKs sent (RFC 5961).
  pub challenge_acks: u64,
  /// Window updates sent after the application read.
  pub window_updates: u64,
}

/// Endpoint-wide counters and gauges (see [`crate::Endpoint::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointStats {
  /// Packets given to `input`.
  pub packets_in: u64,
  /// Packets emitted.
  pub packets_out: u64,
  /// Packets refused by the parser (any [`crate::ParseError`]).
  pub parse_errors: u64,
  /// Of those, bad checksums (IP or TCP).
  pub bad_checksums: u64,
  /// RSTs sent (all causes).
  pub rst_sent: u64,
  /// RSTs sent for segments of no connection (and SYNs to no listener).
  pub rst_unknown: u64,
  /// SYNs that reached a listener.
  pub syn_received: u64,
  /// Connections opened passively (SYN accepted).
  pub passive_opens: u64,
  /// Connections opened actively (`connect`).
  pub active_opens: u64,
  /// Connections that reached ESTABLISHED.
  pub established: u64,
  /// Connections reset by the peer.
  pub resets_received: u64,
  /// Connections aborted by a timeout (retransmissions, SYN retries, keepalive).
  pub timeouts: u64,
  /// SYNs dropped because the listener's backlog was full.
  pub backlog_drops: u64,
  /// SYNs dropped because of the half-open cap.
  pub half_open_drops: u64,
  /// SYNs dropped because of the connection cap.
  pub conn_limit_drops: u64,
  /// Challenge ACKs sent.
  pub challenge_acks: u64,
  /// Challenge ACKs suppressed by the rate limit.
  pub challenge_acks_limited: u64,
  /// TIME_WAIT entries reused by a new SYN (RFC 6191 style).
  pub time_wait_reused: u64,
  /// Gauge: connections (slots) alive.
  pub connections: u64,
  /// Gauge: passive connections in SYN_RECEIVED.
  pub half_open: u64,
  /// Gauge: TIME_WAIT entries.
  pub time_wait: u64,
  /// Gauge: bytes charged against the memory budget.
  pub memory_used: u64,
  /// The memory budget.
  pub memory_budget: u64,
}
