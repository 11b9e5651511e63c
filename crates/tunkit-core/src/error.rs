//! The one error type of the core. Every failure carries a stable [`ErrorKind`] (which the binding turns into a
//! JavaScript `code` such as `ERR_TUN_INVALID_NAME`), a message naming the operation and the device, and the OS
//! `errno` and syscall where the failure came from the OS.

use std::fmt;
use std::io;

/// What went wrong, as a stable category. The JavaScript `code` of each kind is [`ErrorKind::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
  /// The interface name is empty, too long, or has characters the kernel refuses.
  InvalidName,
  /// An address or prefix could not be parsed, or does not fit the family.
  InvalidAddress,
  /// The address (or route) is already present.
  AlreadyExists,
  /// The address, route or device to act on is not there.
  NotFound,
  /// The MTU is outside what the device or the addresses allow.
  InvalidMtu,
  /// An option has the wrong type or an out-of-range value.
  InvalidArgument,
  /// A packet is malformed for this device (empty, wrong IP version for TUN, too short for TAP).
  InvalidPacket,
  /// A packet is larger than the device allows.
  PacketTooLarge,
  /// The driver is missing (`/dev/net/tun`, `wintun.dll`, the utun control).
  NoDriver,
  /// The caller lacks the privilege (`CAP_NET_ADMIN`, Administrator, root).
  Permission,
  /// The device name is already in use by a device this process cannot attach to.
  Busy,
  /// The device was closed.
  Closed,
  /// The device went away underneath an open queue (deleted with `ip link del`, its namespace removed, the driver
  /// unloaded): reads and writes of that queue end with this.
  Gone,
  /// More outgoing packets wait than the transmit ring may hold beyond its budget (`write()` calls not awaited).
  QueueFull,
  /// A bug in tunkit (a panic in one of its threads); the queue it happened in is ended.
  Internal,
  /// A route target is unreachable (no route to the gateway, no such table entry).
  Unreachable,
  /// This platform or kernel lacks the capability.
  Unsupported,
  /// Any other OS error.
  Os,
}

impl ErrorKind {
  /// The stable code JavaScript sees as `err.code`.
  pub fn code(self) -> &'static str {
    match self {
      ErrorKind::InvalidName => "ERR_TUN_INVALID_NAME",
      ErrorKind::InvalidAddress => "ERR_TUN_INVALID_ADDRESS",
      ErrorKind::AlreadyExists => "ERR_TUN_EXISTS",
      ErrorKind::NotFound => "ERR_TUN_NOT_FOUND",
      ErrorKind::InvalidMtu => "ERR_TUN_INVALID_MTU",
      ErrorKind::InvalidArgument => "ERR_TUN_INVALID_ARGUMENT",
      ErrorKind::InvalidPacket => "ERR_TUN_INVALID_PACKET",
      ErrorKind::PacketTooLarge => "ERR_TUN_PACKET_TOO_LARGE",
      ErrorKind::NoDriver => "ERR_TUN_NO_DRIVER",
      ErrorKind::Permission => "ERR_TUN_PERMISSION",
      ErrorKind::Busy => "ERR_TUN_BUSY",
      ErrorKind::Closed => "ERR_TUN_CLOSED",
      ErrorKind::Gone => "ERR_TUN_GONE",
      ErrorKind::QueueFull => "ERR_TUN_QUEUE_FULL",
      ErrorKind::Internal => "ERR_TUN_INTERNAL",
      ErrorKind::Unreachable => "ERR_TUN_UNREACHABLE",
      ErrorKind::Unsupported => "ERR_TUN_UNSUPPORTED",
      ErrorKind::Os => "ERR_TUN_OS",
    }
  }
}

/// A tunkit error: kind, message, and the OS errno and syscall where there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
  kind: ErrorKind,
  message: String,
  errno: Option<i32>,
  syscall: Option<&'static str>,
}

/// The core's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
  /// An error without an OS cause.
  pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
    Error {
      kind,
      message: message.into(),
      errno: None,
      syscall: None,
    }
  }

  /// An error from a failed syscall. The kind is derived from the errno unless the caller knows better (see
  /// [`Error::with_kind`]); the message gets the OS text appended.
  pub fn os(syscall: &'static str, err: &io::Error, context: impl fmt::Display) -> Self {
    let errno = err.raw_os_error();
    let kind = errno.map(kind_of_errno).unwrap_or(ErrorKind::Os);
    Error {
      kind,
      message: format!("{context}: {err}"),
      errno,
      syscall: Some(syscall),
    }
  }

  /// The "device closed" error for an operation.
  pub fn closed(op: &str) -> Self {
    Error::new(ErrorKind::Closed, format!("{op}: the device is closed"))
  }

  /// The "not on this platform" error for an operation.
  pub fn unsupported(op: &str) -> Self {
    Error::new(
      ErrorKind::Unsupported,
      format!("{op} is not supported on this platform"),
    )
  }

  /// Replaces the kind, keeping message and errno.
  pub fn with_kind(mut self, kind: ErrorKind) -> Self {
    self.kind = kind;
    self
  }

  pub fn kind(&self) -> ErrorKind {
    self.kind
  }
  pub fn code(&self) -> &'static str {
    self.kind.code()
  }
  pub fn message(&self) -> &str {
    &self.message
  }
  pub fn errno(&self) -> Option<i32> {
    self.errno
  }
  pub fn syscall(&self) -> Option<&'static str> {
    self.syscall
  }
}

/// The usual meaning of an errno for device operations. Callers refine it where the context says more (for example
/// `EEXIST` from `RTM_NEWADDR` is a duplicate address, from `TUNSETIFF` a busy name).
pub fn kind_of_errno(errno: i32) -> ErrorKind {
  match errno {
    1 | 13 => ErrorKind::Permission,     // EPERM, EACCES
    2 | 6 | 19 => ErrorKind::NotFound,   // ENOENT, ENXIO, ENODEV
    16 => ErrorKind::Busy,               // EBUSY
    17 => ErrorKind::AlreadyExists,      // EEXIST
    22 => ErrorKind::InvalidArgument,    // EINVAL
    9 | 77 => ErrorKind::Closed,         // EBADF, EBADFD
    95 => ErrorKind::Unsupported,        // EOPNOTSUPP
    99 => ErrorKind::InvalidAddress,     // EADDRNOTAVAIL
    101 | 113 => ErrorKind::Unreachable, // ENETUNREACH, EHOSTUNREACH
    _ => ErrorKind::Os,
  }
}

impl fmt::Display for Error {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.write_str(&self.message)
  }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn os_errors_keep_errno_and_syscall() {
    let e = Error::os("ioctl", &io::Error::from_raw_os_error(1), "TUNSETIFF tun0");
    assert_eq!(e.kind(), ErrorKind::Permission);
    assert_eq!(e.code(), "ERR_TUN_PERMISSION");
    assert_eq!(e.errno(), Some(1));
    assert_eq!(e.syscall(), Some("ioctl"));
    assert!(e.message().starts_with("TUNSETIFF tun0: "));
  }

  #[test]
  fn codes_are_distinct() {
    use std::collections::HashSet;
    let kinds = [
      ErrorKind::InvalidName,
      ErrorKind::InvalidAddress,
      ErrorKind::AlreadyExists,
      ErrorKind::NotFound,
      ErrorKind::InvalidMtu,
      ErrorKind::InvalidArgument,
      ErrorKind::InvalidPacket,
      ErrorKind::PacketTooLarge,
      ErrorKind::NoDriver,
      ErrorKind::Permission,
      ErrorKind::Busy,
      ErrorKind::Closed,
      ErrorKind::Gone,
      ErrorKind::QueueFull,
      ErrorKind::Internal,
      ErrorKind::Unreachable,
      ErrorKind::Unsupported,
      ErrorKind::Os,
    ];
    let codes: HashSet<_> = kinds.iter().map(|k| k.code()).collect();
    assert_eq!(codes.len(), kinds.len());
  }
}
