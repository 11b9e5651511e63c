//! Errors of the connection operations.

/// Why an operation failed (or how a connection ended).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
  /// Nothing to read, or no room to write, right now.
  WouldBlock,
  /// The handle is not (or no longer) valid: never issued, or released by `close`/`abort`.
  InvalidHandle,
  /// A bad argument (mixed address families, an unspecified local address, a zero port to listen on
  /// with an address, ...).
  InvalidInput,
  /// The 4-tuple (or listening address) is in use.
  AddrInUse,
  /// The connection cap or the ephemeral port range is exhausted.
  TooManyConnections,
  /// The connection is closed.
  NotConnected,
  /// Writing after `shutdown` or `close`.
  Shutdown,
  /// The peer reset the connection.
  Reset,
  /// The peer refused the connection (a RST answered our SYN).
  Refused,
  /// Retransmissions, SYN retries or keepalive probes ran out.
  TimedOut,
}

impl std::fmt::Display for Error {
  fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    let s = match self {
      Error::WouldBlock => "operation would block",
      Error::InvalidHandle => "invalid connection handle",
      Error::InvalidInput => "invalid argument",
      Error::AddrInUse => "address in use",
      Error::TooManyConnections => "too many connections",
      Error::NotConnected => "not connected",
      Error::Shutdown => "sending side shut down",
      Error::Reset => "connection reset by peer",
      Error::Refused => "connection refused",
      Error::TimedOut => "connection timed out",
    };
    f.write_str(s)
  }
}

impl std::error::Error for Error {}
