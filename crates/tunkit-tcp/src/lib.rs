//! tunkit's userspace TCP: a pure TCP implementation for the userspace stack (`tcp: 'userspace'`: the
//! process terminates TCP itself, accepting SYNs to any destination) and for virtual networks with no
//! kernel device (dial and listen inside a tunnel). No syscalls, no threads, no I/O and no clock: the
//! caller passes packets in, gets packets out, and passes the time (a monotonic [`Duration`] since an
//! epoch of its choosing). Everything is deterministic given the inputs and [`Config::secret`], and tested
//! without privileges by simulation.
//!
//! # Driving an endpoint
//!
//! An [`Endpoint`] holds every connection of one stack. The I/O layer:
//! - calls [`Endpoint::input`] for each IP packet read from the link (IPv4 or IPv6; a GRO super-packet of
//!   up to 64 KiB is one segment), which may write replies into an [`Outbox`];
//! - calls [`Endpoint::poll`] when [`Endpoint::next_deadline`] is reached, and after application calls
//!   (which only queue work: the deadline becomes "now");
//! - writes the packets of the outbox to the link, then clears it (its buffers are reused: no allocation
//!   per segment in the steady state);
//! - hands [`Event`]s ([`Endpoint::next_event`]) to the application, which uses
//!   [`Endpoint::listen`]/[`Endpoint::accept`], [`Endpoint::connect`], [`Endpoint::read`],
//!   [`Endpoint::write`], [`Endpoint::shutdown`], [`Endpoint::close`] and [`Endpoint::abort`] on
//!   [`ConnId`] handles.
//!
//! # What the TCP does
//!
//! - RFC 9293's state machine: passive open (a listener on [`ListenAddr::any`] takes SYNs for any
//!   destination, for a proxy), active open, simultaneous open and close, half-close, RST handling in
//!   each state with RFC 5961 challenge ACKs, RSTs for segments of unknown flows, listen backlogs and an
//!   endpoint-wide cap on half-open connections, ISNs per RFC 6528 ([`isn`]), a short tuple-only
//!   TIME_WAIT.
//! - Data: send buffers and receive buffers with bounded out-of-order reassembly, the MSS from the MTU
//!   and the peer's option, window scaling with windows of a few MiB, timestamps with PAWS (RFC 7323),
//!   SACK blocks sent most recent first and a SACK scoreboard driving retransmission (RFC 2018, RFC
//!   6675), RTO per RFC 6298 with a low configurable floor (20 ms by default) and exponential backoff,
//!   fast retransmit and NewReno (RFC 5681, RFC 6582), spurious-timeout undo with timestamps (Eifel),
//!   delayed ACKs of a few ms (immediate for out-of-order data and every second full segment), Nagle off
//!   by default, zero-window probes with backoff, optional keepalive.
//! - A global memory budget across connections: when it runs out, advertised windows stop opening and
//!   writes are taken only in part; nothing accepted is ever dropped and each connection keeps a minimum
//!   ([`Config::min_buffer`]) so readers always progress.
//! - Offload: received super-packets are single segments; with [`Config::tso_max_payload`] bulk data leaves
//!   as TSO super-packets whose [`OutPacket::gso_size`] is the per-segment payload, and with
//!   [`Config::checksum_offload`] checksums are left partial for the device.
//!
//! # Layout
//!
//! [`wire`] and [`options`] parse and build segments; [`seq`] is sequence arithmetic. Inside the crate:
//! `sendbuf`, `recvbuf` (reassembly, SACK blocks) and `sack` (the scoreboard) are the buffers; `rtt` the
//! RFC 6298 estimator and `cc` NewReno; `conn` the TCB (arrival in `conn::input`, emission in
//! `conn::output`, timers in `conn::timers`); `endpoint` the demultiplexing table, listeners, TIME_WAIT
//! table, timer heap and application API. Tests (`tests`) drive two endpoints over a simulated link with a
//! fake clock, script segments against one endpoint, and fuzz the parser and the state machine.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod cc;
mod checksum;
mod config;
mod conn;
mod endpoint;
mod error;
pub mod isn;
pub mod options;
mod outbox;
mod recvbuf;
mod rtt;
mod sack;
mod sendbuf;
pub mod seq;
mod stats;
pub mod wire;

#[cfg(test)]
mod tests;

pub use config::{Config, Keepalive};
pub use conn::State;
pub use endpoint::{ConnId, ConnInfo, Endpoint, Event, ListenAddr, ListenerId};
pub use error::Error;
pub use outbox::{OutPacket, Outbox};
pub use seq::Seq;
pub use stats::{ConnStats, EndpointStats};
pub use wire::{Flags, Packet, ParseError, Segment};

use std::time::Duration;

/// Time as the caller counts it: a monotonic duration since an epoch of its choosing.
pub type Time = Duration;
