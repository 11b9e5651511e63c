//! The calls of the stream relay (`../relay.rs`): `epoll`, `pipe2`, `splice`, `shutdown`, duplicating a
//! descriptor, the pipe size, and a socket's pending error. Each is wrapped with a safe signature returning
//! `io::Result`; every descriptor made here is returned as an [`OwnedFd`], so `close` is never called by hand.

use super::cvt;
use std::ffi::{c_int, c_uint, c_void};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

const EPOLL_CLOEXEC: c_int = 0o2000000;
const EPOLL_CTL_ADD: c_int = 1;
const EPOLL_CTL_DEL: c_int = 2;
const EPOLL_CTL_MOD: c_int = 3;
/// `epoll` event bits (`<sys/epoll.h>`).
pub const EPOLLIN: u32 = 0x001;
pub const EPOLLOUT: u32 = 0x004;
pub const EPOLLERR: u32 = 0x008;
pub const EPOLLHUP: u32 = 0x010;

const O_NONBLOCK: c_int = 0o4000;
const O_CLOEXEC: c_int = 0o2000000;
const SPLICE_F_MOVE: c_uint = 1;
const SPLICE_F_NONBLOCK: c_uint = 2;
const F_DUPFD_CLOEXEC: c_int = 1030;
const F_SETPIPE_SZ: c_int = 1031;
const F_GETPIPE_SZ: c_int = 1032;
const SHUT_WR: c_int = 1;
const SOL_SOCKET: c_int = 1;
const SO_ERROR: c_int = 4;
const SO_TYPE: c_int = 3;
/// `SOCK_STREAM`, as `SO_TYPE` reports it.
pub const SOCK_STREAM: i32 = 1;

/// `struct epoll_event`: packed on x86_64 (12 bytes), naturally aligned elsewhere (16 bytes).
#[cfg_attr(target_arch = "x86_64", repr(C, packed))]
#[cfg_attr(not(target_arch = "x86_64"), repr(C))]
#[derive(Clone, Copy)]
pub struct EpollEvent {
  events: u32,
  data: u64,
}

impl EpollEvent {
  /// An empty entry for [`epoll_wait_events`] to fill.
  pub const fn zeroed() -> EpollEvent {
    EpollEvent { events: 0, data: 0 }
  }
  /// The ready bits (`EPOLLIN`, …).
  pub fn events(&self) -> u32 {
    self.events
  }
  /// The token the descriptor was registered with.
  pub fn token(&self) -> u64 {
    self.data
  }
}

extern "C" {
  fn epoll_create1(flags: c_int) -> c_int;
  fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, event: *mut EpollEvent) -> c_int;
  fn epoll_wait(epfd: c_int, events: *mut EpollEvent, maxevents: c_int, timeout: c_int) -> c_int;
  fn pipe2(fds: *mut c_int, flags: c_int) -> c_int;
  fn splice(
    fd_in: c_int,
    off_in: *mut i64,
    fd_out: c_int,
    off_out: *mut i64,
    len: usize,
    flags: c_uint,
  ) -> isize;
  fn shutdown(fd: c_int, how: c_int) -> c_int;
  fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
  fn getsockopt(fd: c_int, level: c_int, name: c_int, value: *mut c_void, len: *mut c_uint) -> c_int;
}

/// A new close-on-exec epoll instance.
pub fn epoll_new() -> io::Result<OwnedFd> {
  // SAFETY: epoll_create1 takes a flag and no memory.
  let fd = cvt(unsafe { epoll_create1(EPOLL_CLOEXEC) })?;
  // SAFETY: `fd` was just returned by epoll_create1: open and owned by nobody else.
  Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ctl(ep: BorrowedFd<'_>, op: c_int, fd: BorrowedFd<'_>, events: u32, token: u64) -> io::Result<()> {
  let mut ev = EpollEvent { events, data: token };
  // SAFETY: `ev` is a live, properly laid out `struct epoll_event` for the duration of the call (the kernel only
  // reads it); both descriptors are borrowed, so open, for the call.
  cvt(unsafe { epoll_ctl(ep.as_raw_fd(), op, fd.as_raw_fd(), &mut ev) }).map(|_| ())
}

/// Registers `fd` in `ep` for `events` (level-triggered) with `token`.
pub fn epoll_add(ep: BorrowedFd<'_>, fd: BorrowedFd<'_>, events: u32, token: u64) -> io::Result<()> {
  ctl(ep, EPOLL_CTL_ADD, fd, events, token)
}

/// Changes the events of a registered `fd`.
pub fn epoll_mod(ep: BorrowedFd<'_>, fd: BorrowedFd<'_>, events: u32, token: u64) -> io::Result<()> {
  ctl(ep, EPOLL_CTL_MOD, fd, events, token)
}

/// Removes `fd` from `ep`.
pub fn epoll_del(ep: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> io::Result<()> {
  ctl(ep, EPOLL_CTL_DEL, fd, 0, 0)
}

/// Waits up to `timeout_ms` (`-1`: forever) for events of `ep`, filling `out`; returns how many were filled.
pub fn epoll_wait_events(ep: BorrowedFd<'_>, out: &mut [EpollEvent], timeout_ms: i32) -> io::Result<usize> {
  let max = out.len().min(c_int::MAX as usize) as c_int;
  // SAFETY: `out` is an exclusively borrowed array of at least `max` `struct epoll_event`s, which the kernel fills
  // (never more than `max`); `ep` is open for the call.
  let n = cvt(unsafe { epoll_wait(ep.as_raw_fd(), out.as_mut_ptr(), max, timeout_ms) })?;
  Ok(n as usize)
}

/// A non-blocking, close-on-exec pipe: `(read end, write end)`.
pub fn pipe_new() -> io::Result<(OwnedFd, OwnedFd)> {
  let mut fds: [c_int; 2] = [-1, -1];
  // SAFETY: `fds` is a live array of two ints that pipe2 fills.
  cvt(unsafe { pipe2(fds.as_mut_ptr(), O_NONBLOCK | O_CLOEXEC) })?;
  // SAFETY: both were just returned by pipe2: open and owned by nobody else.
  Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Asks for a pipe of `bytes` (`F_SETPIPE_SZ`); returns the capacity it has afterwards.
pub fn set_pipe_size(pipe: BorrowedFd<'_>, bytes: usize) -> io::Result<usize> {
  // SAFETY: F_SETPIPE_SZ takes an int by value; no memory is involved.
  let r = unsafe { fcntl(pipe.as_raw_fd(), F_SETPIPE_SZ, bytes as c_int) };
  if r >= 0 {
    return Ok(r as usize);
  }
  // SAFETY: F_GETPIPE_SZ takes no argument and reads no memory.
  cvt(unsafe { fcntl(pipe.as_raw_fd(), F_GETPIPE_SZ) }).map(|n| n as usize)
}

/// Moves up to `len` bytes from `from` to `to` (one of them a pipe) without blocking (`SPLICE_F_NONBLOCK`; the
/// socket side blocks or not by its own `O_NONBLOCK`). `Ok(0)` from a socket is its end of stream.
pub fn splice_move(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
  // SAFETY: null offsets (both ends are streams); both descriptors are open for the call; no memory is passed.
  let n = unsafe {
    splice(
      from.as_raw_fd(),
      std::ptr::null_mut(),
      to.as_raw_fd(),
      std::ptr::null_mut(),
      len,
      SPLICE_F_MOVE | SPLICE_F_NONBLOCK,
    )
  };
  super::cvt_size(n)
}

/// `shutdown(fd, SHUT_WR)`: sends the end of stream (a FIN) and keeps receiving.
pub fn shutdown_write(fd: BorrowedFd<'_>) -> io::Result<()> {
  // SAFETY: shutdown takes a descriptor and a flag, no memory.
  cvt(unsafe { shutdown(fd.as_raw_fd(), SHUT_WR) }).map(|_| ())
}

/// A close-on-exec duplicate of `fd` (same open file, hence same status flags), owned by the caller. Fails with
/// `EBADF` when `fd` is not open.
pub fn dup_raw_fd(fd: RawFd) -> io::Result<OwnedFd> {
  // SAFETY: F_DUPFD_CLOEXEC takes an int by value and touches no memory; a number that is not open fails with
  // EBADF without side effects.
  let d = cvt(unsafe { fcntl(fd, F_DUPFD_CLOEXEC, 0) })?;
  // SAFETY: `d` was just returned by fcntl(F_DUPFD_CLOEXEC): a new descriptor nobody else owns.
  Ok(unsafe { OwnedFd::from_raw_fd(d) })
}

fn sockopt_int(fd: BorrowedFd<'_>, name: c_int) -> io::Result<i32> {
  let mut v: c_int = 0;
  let mut len = std::mem::size_of::<c_int>() as c_uint;
  // SAFETY: `v` and `len` are live locals the kernel writes (at most `len` = 4 bytes into `v`); `fd` is open.
  cvt(unsafe {
    getsockopt(
      fd.as_raw_fd(),
      SOL_SOCKET,
      name,
      (&mut v as *mut c_int).cast(),
      &mut len,
    )
  })?;
  Ok(v)
}

/// The pending error of a socket (`SO_ERROR`, which also clears it); 0 when none.
pub fn socket_error(fd: BorrowedFd<'_>) -> io::Result<i32> {
  sockopt_int(fd, SO_ERROR)
}

/// The socket type (`SO_TYPE`): [`SOCK_STREAM`] for TCP; `ENOTSOCK` for a descriptor that is not a socket.
pub fn socket_type(fd: BorrowedFd<'_>) -> io::Result<i32> {
  sockopt_int(fd, SO_TYPE)
}
