//! tunkit's userspace network stack: an IP stack with its own IPv4 and IPv6 addresses that runs on any
//! tunkit device (a TUN device, or the in-memory pair with no privileges at all), the Rust layer under
//! the Node binding's `Stack`.
//!
//! # Design
//!
//! Two layers:
//!
//! - [`NetStack`], the pure part: no threads, no I/O, no clock. [`NetStack::input`] takes one IP packet
//!   from the link and appends the packets to send to a [`tunkit_core::Batch`]; [`NetStack::poll`] runs
//!   the timers due and emits what application calls left pending; [`NetStack::next_deadline`] says when
//!   to poll again; [`NetStack::next_event`] hands out readiness [`Event`]s. It answers ICMP and ICMPv6
//!   echo, answers UDP to a closed port with ICMP port unreachable (rate limited), holds UDP sockets
//!   with bounded receive queues, reassembles IPv4 fragments within bounds ([`ReassemblyConfig`]) and
//!   terminates TCP with [`tunkit_tcp::Endpoint`]. Packets for addresses that are not the stack's are
//!   dropped and counted, except TCP in proxy mode ([`StackConfig::any_destination`], with a listener on
//!   [`tunkit_tcp::ListenAddr::any`]).
//! - [`Stack`], the driver: a reader thread blocks in [`tunkit_core::Queue::read_batch`] and feeds each
//!   batch to the `NetStack`; a writer/timer thread sleeps on a condition variable until output is
//!   pending, the next deadline, or an application call, then polls and writes batches to the device.
//!   The reader never writes to the device itself, so two stacks over a bounded memory pair cannot
//!   deadlock each waiting for the other to read (output waiting for the writer is capped:
//!   [`DriverConfig::max_pending_bytes`], beyond which packets are dropped and counted, as a full device
//!   queue would). Nothing polls busily. The application side ([`Stack`], shared through an `Arc`,
//!   `Send + Sync`) offers non-blocking calls (a timeout of `Some(Duration::ZERO)`) and blocking calls
//!   with a timeout, and readiness through a callback (`Fn(Event) + Send + Sync`, called on the driver's
//!   threads outside its lock: it must not block, which suits a Node thread-safe function).
//!
//! One mutex guards the `NetStack`; packets are processed a batch at a time under it.
//!
//! # Limits
//!
//! No IPv6 extension headers (fragmented IPv6 is dropped and counted), no fragmentation of output (UDP
//! datagrams above the MTU are refused), no TSO on output (the TCP endpoint writes MTU-sized packets),
//! no ICMP errors other than port unreachable (and none are acted upon), no ARP/NDP (a layer-3 device).

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod driver;
pub mod frag;
pub mod ip;
mod stack;
mod udp;

#[cfg(test)]
mod tests;

pub use driver::{Callback, DriverConfig, DriverStats, Stack};
pub use frag::ReassemblyConfig;
pub use stack::{NetStack, StackConfig};
pub use udp::UdpId;

pub use tunkit_tcp::{ConnId, ConnInfo, ListenerId, State};

/// Time as the caller counts it: a monotonic duration since an epoch of its choosing.
pub type Time = std::time::Duration;

/// What became ready, for the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
  /// A TCP event (acceptable, connected, readable, writable, closed).
  Tcp(tunkit_tcp::Event),
  /// A datagram arrived at an empty UDP socket queue.
  UdpReadable(UdpId),
}

/// Why a call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
  /// Nothing now (a non-blocking call).
  WouldBlock,
  /// A blocking call's timeout passed.
  Timeout,
  /// The handle is not (or no longer) valid.
  InvalidHandle,
  /// A bad argument.
  InvalidInput,
  /// The address or port is in use.
  AddrInUse,
  /// The stack has no address of that family (or the address is not the stack's).
  NoLocalAddress,
  /// A datagram larger than the MTU allows.
  TooLarge,
  /// The stack was stopped, or its device closed.
  Stopped,
  /// A TCP error: refused, reset, timed out, not connected, shut down, too many connections.
  Tcp(tunkit_tcp::Error),
}

impl From<tunkit_tcp::Error> for Error {
  fn from(e: tunkit_tcp::Error) -> Error {
    use tunkit_tcp::Error as T;
    match e {
      T::WouldBlock => Error::WouldBlock,
      T::InvalidHandle => Error::InvalidHandle,
      T::InvalidInput => Error::InvalidInput,
      T::AddrInUse => Error::AddrInUse,
      e => Error::Tcp(e),
    }
  }
}

impl std::fmt::Display for Error {
  fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    match self {
      Error::WouldBlock => f.write_str("operation would block"),
      Error::Timeout => f.write_str("timed out waiting"),
      Error::InvalidHandle => f.write_str("invalid handle"),
      Error::InvalidInput => f.write_str("invalid argument"),
      Error::AddrInUse => f.write_str("address in use"),
      Error::NoLocalAddress => f.write_str("no local address of that family"),
      Error::TooLarge => f.write_str("datagram too large"),
      Error::Stopped => f.write_str("stack stopped"),
      Error::Tcp(e) => write!(f, "{e}"),
    }
  }
}

impl std::error::Error for Error {}

/// Counters of the stack (TCP's own are in [`tunkit_tcp::EndpointStats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackStats {
  /// Packets given to `input`.
  pub rx_packets: u64,
  /// Unparseable IP packets (bad version, lengths, IPv4 header checksum).
  pub rx_malformed: u64,
  /// Packets for an address that is not the stack's (dropped).
  pub rx_not_local: u64,
  /// Packets of a protocol the stack does not handle (dropped).
  pub rx_unsupported: u64,
  /// UDP or ICMP packets with a bad checksum (dropped).
  pub rx_bad_checksum: u64,
  /// TCP packets the endpoint refused (malformed, bad checksum).
  pub rx_tcp_errors: u64,
  /// IPv4 fragments received.
  pub rx_fragments: u64,
  /// Datagrams reassembled.
  pub reassembled: u64,
  /// Fragments dropped (a bound reached, invalid or overlapping).
  pub frag_dropped: u64,
  /// Partial datagrams dropped after the timeout.
  pub frag_timeouts: u64,
  /// Partial datagrams held now.
  pub frag_pending: u64,
  /// Fragment bytes held now.
  pub frag_bytes: u64,
  /// Packets emitted.
  pub tx_packets: u64,
  /// Echo replies sent.
  pub echo_replies: u64,
  /// ICMP messages received that are not echo requests (ignored).
  pub icmp_ignored: u64,
  /// ICMP errors sent (port unreachable).
  pub icmp_errors_sent: u64,
  /// ICMP errors not sent because of the rate limit.
  pub icmp_errors_limited: u64,
  /// UDP datagrams queued to sockets.
  pub udp_rx: u64,
  /// UDP datagrams sent.
  pub udp_tx: u64,
  /// UDP datagrams dropped because the socket's queue was full.
  pub udp_queue_drops: u64,
  /// UDP datagrams for a port with no socket.
  pub udp_no_socket: u64,
}
