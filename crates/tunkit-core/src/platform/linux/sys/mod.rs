//! Raw Linux interfaces of the backend: hand-declared libc functions, constants and kernel structs, each wrapped in
//! a function with a safe signature that returns `io::Result`. Every `unsafe` block of the Linux backend lives under
//! this directory; `device.rs`, `netlink.rs` and `mod.rs` one level up are safe code.
//!
//! This module holds the pieces shared by the tun device and rtnetlink code: errno values, `read`/`write` on a
//! borrowed descriptor, `poll`, `eventfd`, `fcntl`, and the namespace calls `setns`/`unshare`. Descriptors are owned
//! by [`OwnedFd`] everywhere, so `close` is never called by hand.

pub mod netlink;
pub mod splice;
pub mod tun;

use std::ffi::{c_int, c_short, c_uint, c_ulong, c_void};
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The errno values the backend looks at (x86_64 and aarch64 Linux share them).
pub mod errno {
  pub const EPERM: i32 = 1;
  pub const ENOENT: i32 = 2;
  pub const EINTR: i32 = 4;
  pub const EIO: i32 = 5;
  pub const ENXIO: i32 = 6;
  pub const EBADF: i32 = 9;
  pub const EAGAIN: i32 = 11;
  pub const EACCES: i32 = 13;
  pub const EBUSY: i32 = 16;
  pub const EEXIST: i32 = 17;
  pub const ENODEV: i32 = 19;
  pub const EINVAL: i32 = 22;
  pub const ENOTTY: i32 = 25;
  pub const EBADFD: i32 = 77;
  pub const EMSGSIZE: i32 = 90;
  pub const EPIPE: i32 = 32;
  pub const ECONNRESET: i32 = 104;
  pub const ENOTCONN: i32 = 107;
}

/// `poll` event bits (`<poll.h>`).
pub const POLLIN: i16 = 0x001;
pub const POLLOUT: i16 = 0x004;
pub const POLLERR: i16 = 0x008;
pub const POLLHUP: i16 = 0x010;
pub const POLLNVAL: i16 = 0x020;

const EFD_NONBLOCK: c_int = 0o4000;
const EFD_CLOEXEC: c_int = 0o2000000;
const F_GETFD: c_int = 1;
const F_GETFL: c_int = 3;
const F_SETFL: c_int = 4;
/// `O_NONBLOCK` (also the value of `EFD_NONBLOCK`); exported for `OpenOptionsExt::custom_flags`.
pub const O_NONBLOCK: c_int = 0o4000;
const CLONE_NEWNET: c_int = 0x4000_0000;

extern "C" {
  fn read(fd: c_int, buf: *mut c_void, count: usize) -> isize;
  fn write(fd: c_int, buf: *const c_void, count: usize) -> isize;
  fn writev(fd: c_int, iov: *const IoVec, iovcnt: c_int) -> isize;
  // `struct pollfd *`, declared untyped as the other declarations of `poll` in this crate are.
  fn poll(fds: *mut c_void, nfds: c_ulong, timeout: c_int) -> c_int;
  fn eventfd(initval: c_uint, flags: c_int) -> c_int;
  fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
  fn setns(fd: c_int, nstype: c_int) -> c_int;
  fn unshare(flags: c_int) -> c_int;
  #[cfg(test)]
  fn setsockopt(fd: c_int, level: c_int, name: c_int, value: *const c_void, len: c_uint) -> c_int;
}

/// Turns the `-1`-and-errno convention of a libc call into an `io::Result`.
pub fn cvt(ret: c_int) -> io::Result<c_int> {
  if ret < 0 {
    Err(io::Error::last_os_error())
  } else {
    Ok(ret)
  }
}

/// Like [`cvt`] for calls returning `ssize_t`.
pub fn cvt_size(ret: isize) -> io::Result<usize> {
  if ret < 0 {
    Err(io::Error::last_os_error())
  } else {
    Ok(ret as usize)
  }
}

/// The errno of an `io::Error`, or 0 when it has none.
pub fn errno_of(err: &io::Error) -> i32 {
  err.raw_os_error().unwrap_or(0)
}

/// Reads once from `fd` into the spare capacity of `buf` and extends `buf` by the bytes read. `buf`'s existing
/// contents are untouched; a read never goes past its capacity.
pub fn read_into_spare(fd: BorrowedFd<'_>, buf: &mut Vec<u8>) -> io::Result<usize> {
  let spare = buf.spare_capacity_mut();
  // SAFETY: `spare` is writable memory of `spare.len()` bytes owned by `buf`, which we borrow mutably for the
  // duration of the call; `fd` is a live descriptor for as long as the borrow lasts.
  let ret = unsafe { read(fd.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len()) };
  let n = cvt_size(ret)?;
  let new_len = buf.len() + n;
  debug_assert!(new_len <= buf.capacity());
  // SAFETY: the kernel initialized the first `n` bytes of the spare capacity (`read` never returns more than the
  // count it was given), so the first `new_len` bytes of the buffer are initialized and within capacity.
  unsafe { buf.set_len(new_len) };
  Ok(n)
}

/// Reads once from `fd` into `buf`.
pub fn read_fd(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
  // SAFETY: `buf` is writable for `buf.len()` bytes and exclusively borrowed; `fd` is live for the call.
  cvt_size(unsafe { read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) })
}

/// Writes `data` to `fd` once and returns the count the kernel took.
pub fn write_fd(fd: BorrowedFd<'_>, data: &[u8]) -> io::Result<usize> {
  // SAFETY: `data` is readable for `data.len()` bytes for the duration of the call; `fd` is live for the call.
  cvt_size(unsafe { write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) })
}

/// `struct iovec`: one buffer of a gathered write.
#[repr(C)]
struct IoVec {
  base: *const c_void,
  len: usize,
}

/// Writes `head` and then `body` to `fd` with one `writev` call (for a tun descriptor: one packet whose first bytes
/// are `head`, such as a virtio-net header, without copying the two together). Returns the count the kernel took.
pub fn write2_fd(fd: BorrowedFd<'_>, head: &[u8], body: &[u8]) -> io::Result<usize> {
  let iov = [
    IoVec {
      base: head.as_ptr().cast(),
      len: head.len(),
    },
    IoVec {
      base: body.as_ptr().cast(),
      len: body.len(),
    },
  ];
  // SAFETY: `iov` is an array of two `struct iovec` pointing into `head` and `body`, both readable for their
  // lengths and borrowed for the duration of the call; writev only reads them. `fd` is live for the call.
  cvt_size(unsafe { writev(fd.as_raw_fd(), iov.as_ptr(), iov.len() as c_int) })
}

/// One entry of a `poll` set (`struct pollfd`), tied to the lifetime of the descriptor it watches.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PollFd<'fd> {
  fd: c_int,
  events: c_short,
  revents: c_short,
  _fd: PhantomData<BorrowedFd<'fd>>,
}

impl<'fd> PollFd<'fd> {
  /// Watches `fd` for `events` (`POLLIN`, `POLLOUT`, …).
  pub fn new(fd: BorrowedFd<'fd>, events: i16) -> PollFd<'fd> {
    PollFd {
      fd: fd.as_raw_fd(),
      events,
      revents: 0,
      _fd: PhantomData,
    }
  }

  /// The events the last [`poll`](poll_fds) reported for this descriptor.
  pub fn revents(&self) -> i16 {
    self.revents
  }
}

/// Waits until one of `fds` is ready or `timeout_ms` passed (`-1`: no timeout). Returns how many are ready. An
/// interrupted wait is reported as `ErrorKind::Interrupted`; callers retry.
pub fn poll_fds(fds: &mut [PollFd<'_>], timeout_ms: i32) -> io::Result<usize> {
  // SAFETY: `fds` is an exclusively borrowed array of `fds.len()` entries laid out as `struct pollfd` (int, short,
  // short; the PhantomData is zero-sized), and each entry's descriptor outlives the borrow.
  let n = cvt(unsafe { poll(fds.as_mut_ptr().cast(), fds.len() as c_ulong, timeout_ms) })?;
  Ok(n as usize)
}

/// Creates a non-blocking, close-on-exec `eventfd` with a zero counter.
pub fn eventfd_new() -> io::Result<OwnedFd> {
  // SAFETY: eventfd takes no pointers.
  let fd = cvt(unsafe { eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK) })?;
  // SAFETY: `fd` was just returned by eventfd, so it is open and owned by nobody else.
  Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds 1 to an eventfd counter, making it readable.
pub fn eventfd_signal(fd: BorrowedFd<'_>) -> io::Result<()> {
  write_fd(fd, &1u64.to_ne_bytes()).map(|_| ())
}

/// Reads (and so resets) an eventfd counter; `WouldBlock` when it is zero.
pub fn eventfd_read(fd: BorrowedFd<'_>) -> io::Result<u64> {
  let mut buf = [0u8; 8];
  read_fd(fd, &mut buf)?;
  Ok(u64::from_ne_bytes(buf))
}

/// Sets `O_NONBLOCK` on a descriptor, keeping its other status flags.
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
  // SAFETY: F_GETFL takes no third argument and reads no memory.
  let flags = cvt(unsafe { fcntl(fd.as_raw_fd(), F_GETFL) })?;
  if flags & O_NONBLOCK == 0 {
    // SAFETY: F_SETFL takes an int argument, passed by value; no memory is involved.
    cvt(unsafe { fcntl(fd.as_raw_fd(), F_SETFL, flags | O_NONBLOCK) })?;
  }
  Ok(())
}

/// Whether `fd` is an open descriptor of this process (`fcntl(F_GETFD)`), without taking ownership of it.
pub fn raw_fd_is_open(fd: RawFd) -> bool {
  // SAFETY: F_GETFD only reads the descriptor flags of `fd`; it fails with EBADF for a number that is not open and
  // touches no memory.
  fd >= 0 && unsafe { fcntl(fd, F_GETFD) } >= 0
}

/// Takes ownership of a raw descriptor handed to the library by its user (`Tun.fromFd`). The descriptor must not be
/// used or closed by anyone else afterwards: it is closed when the returned `OwnedFd` drops. Fails with `EBADF`
/// when `fd` is not open.
pub fn adopt_raw_fd(fd: RawFd) -> io::Result<OwnedFd> {
  if !raw_fd_is_open(fd) {
    return Err(io::Error::from_raw_os_error(errno::EBADF));
  }
  // SAFETY: `fd` is open (checked above), and the caller of the public `from_fd` transfers its ownership to us by
  // contract; nothing in this library holds another owner of that number.
  Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Moves the calling thread into the network namespace `ns` (an open `/run/netns/NAME` or `/proc/PID/ns/net`).
/// Only this thread changes namespace; sockets and tun descriptors it opens afterwards belong to `ns` for good.
pub fn setns_net(ns: BorrowedFd<'_>) -> io::Result<()> {
  // SAFETY: setns takes a descriptor and a flag, no memory.
  cvt(unsafe { setns(ns.as_raw_fd(), CLONE_NEWNET) }).map(|_| ())
}

/// Moves the calling thread into a new, empty network namespace (only `lo`, down). Used by tests so that devices
/// and traffic never touch the host's namespace.
pub fn unshare_netns() -> io::Result<()> {
  // SAFETY: unshare takes a flag, no memory; CLONE_NEWNET is allowed in a multi-threaded process.
  cvt(unsafe { unshare(CLONE_NEWNET) }).map(|_| ())
}

/// `setsockopt(SOL_UDP, UDP_SEGMENT)`: every send on the UDP socket `fd` is cut by the kernel into datagrams of
/// `size` payload bytes, handed down as one super-packet (UDP GSO). Tests use it to make the kernel produce USO
/// super-packets.
#[cfg(test)]
pub fn set_udp_segment(fd: BorrowedFd<'_>, size: u16) -> io::Result<()> {
  const SOL_UDP: c_int = 17;
  const UDP_SEGMENT: c_int = 103;
  let value = size as c_int;
  // SAFETY: setsockopt reads `len` (4) bytes from the pointer, which points to a live local int for the whole call.
  let ret = unsafe {
    setsockopt(
      fd.as_raw_fd(),
      SOL_UDP,
      UDP_SEGMENT,
      (&value as *const c_int).cast(),
      std::mem::size_of::<c_int>() as c_uint,
    )
  };
  cvt(ret).map(|_| ())
}

#[cfg(test)]
mod tests {
  use super::*;
  use std::os::fd::AsFd;

  #[test]
  fn linux_sys_eventfd_and_poll() {
    let efd = eventfd_new().unwrap();
    let mut fds = [PollFd::new(efd.as_fd(), POLLIN)];
    assert_eq!(poll_fds(&mut fds, 0).unwrap(), 0);
    assert_eq!(
      eventfd_read(efd.as_fd()).unwrap_err().kind(),
      io::ErrorKind::WouldBlock
    );
    eventfd_signal(efd.as_fd()).unwrap();
    eventfd_signal(efd.as_fd()).unwrap();
    let mut fds = [PollFd::new(efd.as_fd(), POLLIN)];
    assert_eq!(poll_fds(&mut fds, 1000).unwrap(), 1);
    assert_eq!(fds[0].revents() & POLLIN, POLLIN);
    assert_eq!(eventfd_read(efd.as_fd()).unwrap(), 2);
  }

  #[test]
  fn linux_sys_read_into_spare_appends() {
    let efd = eventfd_new().unwrap();
    eventfd_signal(efd.as_fd()).unwrap();
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(b"abc");
    assert_eq!(read_into_spare(efd.as_fd(), &mut buf).unwrap(), 8);
    assert_eq!(buf.len(), 11);
    assert_eq!(&buf[..3], b"abc");
    assert_eq!(u64::from_ne_bytes(buf[3..].try_into().unwrap()), 1);
    assert_eq!(
      read_into_spare(efd.as_fd(), &mut buf).unwrap_err().raw_os_error(),
      Some(errno::EAGAIN)
    );
    assert_eq!(buf.len(), 11);
  }

  #[test]
  fn linux_sys_nonblocking_and_raw_fds() {
    let efd = eventfd_new().unwrap();
    set_nonblocking(efd.as_fd()).unwrap();
    assert!(raw_fd_is_open(efd.as_raw_fd()));
    assert!(!raw_fd_is_open(-1));
    assert_eq!(adopt_raw_fd(-5).unwrap_err().raw_os_error(), Some(errno::EBADF));
  }
}
