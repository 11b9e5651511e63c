//! The stream relay: pairs of connected TCP sockets whose bytes are moved by the kernel with `splice(2)`, socket
//! to pipe to socket, one pipe per direction, on one thread per [`Relay`] that watches every pair with a
//! level-triggered `epoll`. The forwarding stack uses it to join an accepted connection to its upstream socket
//! without the bytes passing through JavaScript.
//!
//! The sockets belong to someone else (libuv): the relay works on duplicates of their descriptors
//! (`F_DUPFD_CLOEXEC`, same open file, so the same `O_NONBLOCK` the owner set), never changes their flags, and
//! closes only its duplicates and its pipes. So the owner closing its descriptor at any time cannot make the
//! relay touch a reused descriptor number, and the socket itself is only released once both are closed.
//!
//! Per direction: read what the source has into the pipe, write the pipe into the destination. End of stream on
//! the source: the pipe is drained, then the destination is half-closed (`shutdown(SHUT_WR)`), and the other
//! direction goes on. Both directions done: the pair ends `Closed`; a reset or broken pipe on either socket ends
//! it `Reset`; no byte either way for the pair's idle time ends it `Idle`; any other error `Error`. An ended pair
//! is taken out of the epoll set, its pipes and duplicates closed, and its record ([`RelayEnd`]) queued for
//! [`Relay::take_ended`], with the `notify` callback called when the queue becomes non-empty.

use super::sys::{self, errno, splice as sx};
use crate::error::{Error, ErrorKind, Result};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The pipe size asked for per direction (`F_SETPIPE_SZ`); the kernel's default (64 KiB) is kept if refused.
pub const PIPE_BYTES: usize = 256 << 10;
/// The default cap on pairs relayed at once.
pub const DEFAULT_MAX_PAIRS: usize = 65536;
/// Rounds of read-then-write one direction gets per wakeup before the thread looks at the other pairs.
const ROUNDS: usize = 8;
/// The token of the control eventfd in the epoll set (pair tokens are `id << 1 | side`, ids below 2^53).
const WAKE: u64 = u64::MAX;
/// Idle expiry is checked at most this often.
const IDLE_GRAIN: Duration = Duration::from_millis(50);

/// Why a pair ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
  /// Both directions reached their end of stream and were delivered and half-closed.
  Closed,
  /// A socket was reset (`ECONNRESET`) or its peer was gone while writing (`EPIPE`).
  Reset,
  /// No byte moved either way for the pair's idle time.
  Idle,
  /// Any other error (see [`RelayEnd::errno`]).
  Error,
  /// Taken out by [`Relay::cancel`] or [`Relay::stop`].
  Cancelled,
}

impl EndReason {
  /// The name JavaScript sees.
  pub fn as_str(self) -> &'static str {
    match self {
      EndReason::Closed => "closed",
      EndReason::Reset => "reset",
      EndReason::Idle => "idle",
      EndReason::Error => "error",
      EndReason::Cancelled => "cancelled",
    }
  }
}

/// The record of an ended pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayEnd {
  pub id: u64,
  /// Bytes delivered from the first socket to the second (client to upstream).
  pub sent: u64,
  /// Bytes delivered from the second socket to the first (upstream to client).
  pub received: u64,
  pub reason: EndReason,
  /// The errno behind `Reset` or `Error`; 0 otherwise.
  pub errno: i32,
}

/// How one pair is relayed.
#[derive(Clone, Copy, Debug, Default)]
pub struct PairOptions {
  /// End the pair after this long without a byte either way.
  pub idle: Option<Duration>,
  /// The first socket's write side is shut already: nothing is relayed to it (the second is not read).
  pub a_write_closed: bool,
  /// The second socket's write side is shut already: nothing is relayed to it (the first is not read).
  pub b_write_closed: bool,
}

/// One direction of a pair: source -> pipe -> destination.
struct Direction {
  pipe_r: OwnedFd,
  pipe_w: OwnedFd,
  cap: usize,
  /// Bytes in the pipe now.
  in_pipe: usize,
  /// The source reached its end of stream.
  eof: bool,
  /// Everything delivered and the destination half-closed (or nothing is to be relayed this way).
  done: bool,
  /// Bytes delivered to the destination.
  bytes: u64,
}

impl Direction {
  fn new(done: bool) -> io::Result<Direction> {
    let (pipe_r, pipe_w) = sx::pipe_new()?;
    let cap = sx::set_pipe_size(pipe_w.as_fd(), PIPE_BYTES)
      .unwrap_or(64 << 10)
      .max(4096);
    Ok(Direction {
      pipe_r,
      pipe_w,
      cap,
      in_pipe: 0,
      eof: false,
      done,
      bytes: 0,
    })
  }
}

struct Pair {
  /// Duplicates of the two sockets' descriptors (owned by the relay, closed when the pair ends).
  fds: [OwnedFd; 2],
  /// `dirs[0]`: fds[0] -> fds[1]; `dirs[1]`: fds[1] -> fds[0].
  dirs: [Direction; 2],
  /// The events each socket is registered for in the epoll set; 0 when it is not registered.
  regs: [u32; 2],
  idle: Option<Duration>,
  last: Instant,
}

impl Pair {
  /// Moves what can be moved one way without blocking. `Ok(true)` when a byte moved or the direction finished;
  /// `Err(errno)` on a socket error.
  fn pump(&mut self, d: usize) -> std::result::Result<bool, i32> {
    let src = self.fds[d].as_fd();
    let dst = self.fds[1 - d].as_fd();
    let dir = &mut self.dirs[d];
    let mut progress = false;
    for _ in 0..ROUNDS {
      if dir.done {
        break;
      }
      let mut moved = false;
      if !dir.eof && dir.in_pipe < dir.cap {
        match sx::splice_move(src, dir.pipe_w.as_fd(), dir.cap - dir.in_pipe) {
          Ok(0) => {
            dir.eof = true;
            moved = true;
          }
          Ok(n) => {
            dir.in_pipe += n;
            moved = true;
          }
          Err(e) if transient(&e) => {}
          Err(e) => return Err(sys::errno_of(&e)),
        }
      }
      if dir.in_pipe > 0 {
        match sx::splice_move(dir.pipe_r.as_fd(), dst, dir.in_pipe) {
          Ok(n) => {
            dir.in_pipe -= n;
            dir.bytes += n as u64;
            moved |= n > 0;
          }
          Err(e) if transient(&e) => {}
          Err(e) => return Err(sys::errno_of(&e)),
        }
      }
      if dir.eof && dir.in_pipe == 0 {
        match sx::shutdown_write(dst) {
          // ENOTCONN: the destination is gone already; the other direction finds out how.
          Err(e) if sys::errno_of(&e) != errno::ENOTCONN => return Err(sys::errno_of(&e)),
          _ => {}
        }
        dir.done = true;
        moved = true;
      }
      if !moved {
        break;
      }
      progress = true;
    }
    Ok(progress)
  }

  /// The events socket `side` must be watched for: readable when the direction it feeds waits for data (its pipe
  /// empty), writable when the direction into it has bytes in its pipe. After a pump every direction not done
  /// wants exactly one of the two, and only what makes it move again, so level-triggered epoll never spins.
  fn wants(&self, side: usize) -> u32 {
    let from = &self.dirs[side];
    let into = &self.dirs[1 - side];
    let mut m = 0;
    if !from.done && !from.eof && from.in_pipe == 0 {
      m |= sx::EPOLLIN;
    }
    if !into.done && into.in_pipe > 0 {
      m |= sx::EPOLLOUT;
    }
    m
  }

  /// Brings the epoll registrations in line with [`Pair::wants`]. A socket nothing is wanted of is taken out of
  /// the set (a hang-up on it would otherwise be reported again and again).
  fn sync(&mut self, ep: BorrowedFd<'_>, id: u64) -> io::Result<()> {
    for side in 0..2 {
      let want = self.wants(side);
      let have = self.regs[side];
      if want == have {
        continue;
      }
      let fd = self.fds[side].as_fd();
      let token = id << 1 | side as u64;
      if have == 0 {
        sx::epoll_add(ep, fd, want, token)?;
      } else if want == 0 {
        sx::epoll_del(ep, fd)?;
      } else {
        sx::epoll_mod(ep, fd, want, token)?;
      }
      self.regs[side] = want;
    }
    Ok(())
  }

  fn finished(&self) -> bool {
    self.dirs[0].done && self.dirs[1].done
  }

  fn record(&self, id: u64, reason: EndReason, errno: i32) -> RelayEnd {
    RelayEnd {
      id,
      sent: self.dirs[0].bytes,
      received: self.dirs[1].bytes,
      reason,
      errno,
    }
  }

  /// Takes both sockets out of the epoll set (the duplicates and pipes close when the pair drops).
  fn unregister(&mut self, ep: BorrowedFd<'_>) {
    for side in 0..2 {
      if self.regs[side] != 0 {
        let _ = sx::epoll_del(ep, self.fds[side].as_fd());
        self.regs[side] = 0;
      }
    }
  }
}

fn transient(e: &io::Error) -> bool {
  matches!(sys::errno_of(e), errno::EAGAIN | errno::EINTR)
}

fn reason_of(errno: i32) -> EndReason {
  match errno {
    errno::ECONNRESET | errno::EPIPE | errno::ENOTCONN => EndReason::Reset,
    _ => EndReason::Error,
  }
}

struct State {
  pairs: HashMap<u64, Pair>,
  ended: Vec<RelayEnd>,
  /// `notify` was called and the ended records have not been taken since.
  notified: bool,
  next_id: u64,
  stopped: bool,
  /// When idle expiry is next looked at (`None`: no pair has an idle time).
  next_idle: Option<Instant>,
}

struct Shared {
  state: Mutex<State>,
  epoll: OwnedFd,
  wake: OwnedFd,
  max_pairs: usize,
  notify: Box<dyn Fn() + Send + Sync>,
}

impl Shared {
  fn lock(&self) -> MutexGuard<'_, State> {
    self.state.lock().unwrap_or_else(|e| e.into_inner())
  }

  /// Ends pair `id`, queueing its record. Returns whether `notify` is due.
  fn end(&self, st: &mut State, id: u64, reason: EndReason, errno: i32) -> bool {
    let Some(mut p) = st.pairs.remove(&id) else {
      return false;
    };
    p.unregister(self.epoll.as_fd());
    st.ended.push(p.record(id, reason, errno));
    drop(p);
    let due = !st.notified;
    st.notified = true;
    due
  }
}

/// A relay thread and the pairs it carries. Dropping it stops the thread (see [`Relay::stop`]).
pub struct Relay {
  shared: Arc<Shared>,
  thread: Mutex<Option<JoinHandle<()>>>,
}

impl Relay {
  /// Starts a relay thread carrying at most `max_pairs` pairs at once. `notify` is called (on the relay thread, or
  /// on the caller's in [`Relay::add`]) whenever ended records become available for [`Relay::take_ended`].
  pub fn new(max_pairs: usize, notify: Box<dyn Fn() + Send + Sync>) -> Result<Relay> {
    let epoll = sx::epoll_new().map_err(|e| Error::os("epoll_create1", &e, "creating the relay's epoll"))?;
    let wake = sys::eventfd_new().map_err(|e| Error::os("eventfd", &e, "creating the relay's eventfd"))?;
    sx::epoll_add(epoll.as_fd(), wake.as_fd(), sx::EPOLLIN, WAKE)
      .map_err(|e| Error::os("epoll_ctl", &e, "registering the relay's eventfd"))?;
    let shared = Arc::new(Shared {
      state: Mutex::new(State {
        pairs: HashMap::new(),
        ended: Vec::new(),
        notified: false,
        next_id: 1,
        stopped: false,
        next_idle: None,
      }),
      epoll,
      wake,
      max_pairs: max_pairs.max(1),
      notify,
    });
    let sh = shared.clone();
    let thread = std::thread::Builder::new()
      .name("tunkit-relay".into())
      .spawn(move || run(&sh))
      .map_err(|e| Error::os("clone", &e, "starting the relay thread"))?;
    Ok(Relay {
      shared,
      thread: Mutex::new(Some(thread)),
    })
  }

  /// Starts relaying between the connected stream sockets `a` and `b` (descriptors the caller keeps owning; the
  /// relay duplicates them). Returns the pair's id.
  ///
  /// Errors: `InvalidArgument` when a descriptor is not an open stream socket; `QueueFull` at the cap on pairs;
  /// `Closed` once stopped; `Os` when pipes or epoll fail (descriptor limit).
  pub fn add(&self, a: RawFd, b: RawFd, opts: PairOptions) -> Result<u64> {
    let bad = |which: &str, fd: RawFd, why: &str| {
      Error::new(
        ErrorKind::InvalidArgument,
        format!("relay: the {which} descriptor {fd} {why}"),
      )
    };
    let mut fds = Vec::with_capacity(2);
    for (which, fd) in [("first", a), ("second", b)] {
      let d = sx::dup_raw_fd(fd).map_err(|e| match sys::errno_of(&e) {
        errno::EBADF => bad(which, fd, "is not open"),
        _ => Error::os("fcntl", &e, format_args!("relay: duplicating descriptor {fd}")),
      })?;
      match sx::socket_type(d.as_fd()) {
        Ok(sx::SOCK_STREAM) => {}
        Ok(_) => return Err(bad(which, fd, "is not a stream socket")),
        Err(_) => return Err(bad(which, fd, "is not a socket")),
      }
      fds.push(d);
    }
    let pipes = |done| Direction::new(done).map_err(|e| Error::os("pipe2", &e, "relay: creating a pipe"));
    let dirs = [pipes(opts.b_write_closed)?, pipes(opts.a_write_closed)?];
    let [fa, fb]: [OwnedFd; 2] = fds
      .try_into()
      .map_err(|_| Error::new(ErrorKind::Internal, "relay fds"))?;
    let mut pair = Pair {
      fds: [fa, fb],
      dirs,
      regs: [0, 0],
      idle: opts.idle,
      last: Instant::now(),
    };
    let sh = &self.shared;
    let mut st = sh.lock();
    if st.stopped {
      return Err(Error::new(ErrorKind::Closed, "relay: the relay is closed"));
    }
    if st.pairs.len() >= sh.max_pairs {
      return Err(Error::new(
        ErrorKind::QueueFull,
        format!(
          "relay: {} connections are relayed already, the most at once",
          sh.max_pairs
        ),
      ));
    }
    let id = st.next_id;
    st.next_id += 1;
    if let Err(e) = pair.sync(sh.epoll.as_fd(), id) {
      pair.unregister(sh.epoll.as_fd());
      return Err(Error::os("epoll_ctl", &e, "relay: registering a socket"));
    }
    let finished = pair.finished();
    st.pairs.insert(id, pair);
    let mut due = false;
    if finished {
      due = sh.end(&mut st, id, EndReason::Closed, 0);
    } else if let Some(idle) = opts.idle {
      let at = Instant::now() + idle;
      st.next_idle = Some(st.next_idle.map_or(at, |n| n.min(at)));
      // The thread may be sleeping past this deadline.
      let _ = sys::eventfd_signal(sh.wake.as_fd());
    }
    drop(st);
    if due {
      (sh.notify)();
    }
    Ok(id)
  }

  /// Ends pair `id` at once, from any thread: when this returns the relay no longer touches its sockets. Returns
  /// its record (reason `Cancelled`), or `None` when it had ended already (its record is then queued).
  pub fn cancel(&self, id: u64) -> Option<RelayEnd> {
    let sh = &self.shared;
    let mut st = sh.lock();
    let mut p = st.pairs.remove(&id)?;
    p.unregister(sh.epoll.as_fd());
    Some(p.record(id, EndReason::Cancelled, 0))
  }

  /// The records of the pairs that ended since the last call.
  pub fn take_ended(&self) -> Vec<RelayEnd> {
    let mut st = self.shared.lock();
    st.notified = false;
    std::mem::take(&mut st.ended)
  }

  /// Pairs relayed now.
  pub fn len(&self) -> usize {
    self.shared.lock().pairs.len()
  }

  /// Whether no pair is relayed now.
  pub fn is_empty(&self) -> bool {
    self.len() == 0
  }

  /// Stops the thread (idempotent): every pair still relayed ends `Cancelled` (queued for
  /// [`Relay::take_ended`]; `notify` is not called), and later [`Relay::add`] calls fail with `Closed`.
  pub fn stop(&self) {
    {
      let mut st = self.shared.lock();
      st.stopped = true;
      let ids: Vec<u64> = st.pairs.keys().copied().collect();
      for id in ids {
        self.shared.end(&mut st, id, EndReason::Cancelled, 0);
      }
    }
    let _ = sys::eventfd_signal(self.shared.wake.as_fd());
    let t = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(t) = t {
      if t.thread().id() != std::thread::current().id() {
        let _ = t.join();
      }
    }
  }
}

impl Drop for Relay {
  fn drop(&mut self) {
    self.stop();
  }
}

/// The relay thread.
fn run(sh: &Shared) {
  let mut events = vec![sx::EpollEvent::zeroed(); 512];
  loop {
    let timeout = {
      let st = sh.lock();
      if st.stopped {
        return;
      }
      match st.next_idle {
        None => -1,
        Some(at) => {
          let left = at.saturating_duration_since(Instant::now());
          left.as_millis().min(60_000) as i32 + i32::from(left.subsec_micros() % 1000 != 0)
        }
      }
    };
    let n = match sx::epoll_wait_events(sh.epoll.as_fd(), &mut events, timeout) {
      Ok(n) => n,
      Err(e) if sys::errno_of(&e) == errno::EINTR => 0,
      Err(_) => {
        // Should not happen (EBADF/EFAULT/EINVAL are bugs); do not spin.
        std::thread::sleep(Duration::from_millis(10));
        0
      }
    };
    let mut st = sh.lock();
    if st.stopped {
      return;
    }
    let now = Instant::now();
    let mut due = false;
    for ev in &events[..n] {
      let token = ev.token();
      if token == WAKE {
        let _ = sys::eventfd_read(sh.wake.as_fd());
        continue;
      }
      let id = token >> 1;
      let side = (token & 1) as usize;
      // A pair ended (or cancelled) after this wait began: its events are stale.
      let Some(p) = st.pairs.get_mut(&id) else {
        continue;
      };
      let mut outcome = None;
      if ev.events() & sx::EPOLLERR != 0 {
        match sx::socket_error(p.fds[side].as_fd()) {
          Ok(0) => {}
          Ok(e) => outcome = Some((reason_of(e), e)),
          Err(e) => outcome = Some((EndReason::Error, sys::errno_of(&e))),
        }
      }
      if outcome.is_none() {
        let mut progress = false;
        for d in 0..2 {
          match p.pump(d) {
            Ok(moved) => progress |= moved,
            Err(e) => {
              outcome = Some((reason_of(e), e));
              break;
            }
          }
        }
        if progress {
          p.last = now;
        }
        if outcome.is_none() {
          if p.finished() {
            outcome = Some((EndReason::Closed, 0));
          } else if let Err(e) = p.sync(sh.epoll.as_fd(), id) {
            outcome = Some((EndReason::Error, sys::errno_of(&e)));
          }
        }
      }
      if let Some((reason, e)) = outcome {
        due |= sh.end(&mut st, id, reason, e);
      }
    }
    if st.next_idle.is_some_and(|at| now >= at) {
      let mut next: Option<Instant> = None;
      let mut expired = Vec::new();
      for (id, p) in &st.pairs {
        if let Some(idle) = p.idle {
          let at = p.last + idle;
          if now >= at {
            expired.push(*id);
          } else {
            next = Some(next.map_or(at, |n| n.min(at)));
          }
        }
      }
      for id in expired {
        due |= sh.end(&mut st, id, EndReason::Idle, 0);
      }
      st.next_idle = next.map(|n| n.max(now + IDLE_GRAIN));
    }
    drop(st);
    if due {
      (sh.notify)();
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use std::io::{Read, Write};
  use std::net::{Shutdown, TcpListener, TcpStream};
  use std::os::fd::AsRawFd;
  use std::sync::atomic::{AtomicUsize, Ordering};

  /// A connected pair of loopback sockets: (the one the test drives, the one to relay).
  fn socket_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    s.set_nonblocking(true).unwrap();
    (c, s)
  }

  fn relay() -> (Relay, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let r = Relay::new(
      4,
      Box::new(move || {
        c.fetch_add(1, Ordering::SeqCst);
      }),
    )
    .unwrap();
    (r, calls)
  }

  fn wait_ended(r: &Relay) -> RelayEnd {
    let t0 = Instant::now();
    loop {
      if let Some(e) = r.take_ended().pop() {
        return e;
      }
      assert!(t0.elapsed() < Duration::from_secs(10), "the pair never ended");
      std::thread::sleep(Duration::from_millis(5));
    }
  }

  #[test]
  fn linux_relay_moves_bytes_both_ways_with_half_close() {
    let (r, calls) = relay();
    let (mut client, a) = socket_pair();
    let (mut server, b) = socket_pair();
    let id = r
      .add(a.as_raw_fd(), b.as_raw_fd(), PairOptions::default())
      .unwrap();
    let up: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7) as u8).collect();
    let down: Vec<u8> = (0..1_000_000u32).map(|i| (i * 13) as u8).collect();
    let up2 = up.clone();
    let writer = std::thread::spawn(move || {
      client.write_all(&up2).unwrap();
      client.shutdown(Shutdown::Write).unwrap();
      let mut got = Vec::new();
      client.read_to_end(&mut got).unwrap();
      got
    });
    let mut got = Vec::new();
    server.read_to_end(&mut got).unwrap();
    assert!(got == up, "upstream got {} of {} bytes", got.len(), up.len());
    // Half-closed: the other direction still works.
    server.write_all(&down).unwrap();
    server.shutdown(Shutdown::Write).unwrap();
    let back = writer.join().unwrap();
    assert!(back == down, "client got {} of {} bytes", back.len(), down.len());
    let e = wait_ended(&r);
    assert_eq!(
      e,
      RelayEnd {
        id,
        sent: up.len() as u64,
        received: down.len() as u64,
        reason: EndReason::Closed,
        errno: 0
      }
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(r.is_empty());
    // The caller's descriptors are still open (only the duplicates were closed).
    assert!(sys::raw_fd_is_open(a.as_raw_fd()) && sys::raw_fd_is_open(b.as_raw_fd()));
  }

  #[test]
  fn linux_relay_idle_cap_cancel_and_bad_fds() {
    let (r, _) = relay();
    let pairs: Vec<_> = (0..5).map(|_| (socket_pair(), socket_pair())).collect();
    let idle = PairOptions {
      idle: Some(Duration::from_millis(150)),
      ..Default::default()
    };
    let t0 = Instant::now();
    let id0 = r
      .add(pairs[0].0 .1.as_raw_fd(), pairs[0].1 .1.as_raw_fd(), idle)
      .unwrap();
    let mut ids = vec![id0];
    for p in &pairs[1..4] {
      ids.push(
        r.add(p.0 .1.as_raw_fd(), p.1 .1.as_raw_fd(), PairOptions::default())
          .unwrap(),
      );
    }
    let full = r.add(
      pairs[4].0 .1.as_raw_fd(),
      pairs[4].1 .1.as_raw_fd(),
      PairOptions::default(),
    );
    assert_eq!(full.unwrap_err().kind(), ErrorKind::QueueFull);
    let e = wait_ended(&r);
    assert_eq!((e.id, e.reason), (id0, EndReason::Idle));
    assert!(t0.elapsed() >= Duration::from_millis(150));
    let c = r.cancel(ids[1]).unwrap();
    assert_eq!(c.reason, EndReason::Cancelled);
    assert!(r.cancel(ids[1]).is_none());
    assert_eq!(r.len(), 2);
    let bad = r.add(-1, pairs[4].1 .1.as_raw_fd(), PairOptions::default());
    assert_eq!(bad.unwrap_err().kind(), ErrorKind::InvalidArgument);
    let efd = sys::eventfd_new().unwrap();
    let bad = r.add(efd.as_raw_fd(), pairs[4].1 .1.as_raw_fd(), PairOptions::default());
    assert_eq!(bad.unwrap_err().kind(), ErrorKind::InvalidArgument);
    r.stop();
    assert!(r.is_empty());
    let ended = r.take_ended();
    assert_eq!(ended.len(), 2);
    assert!(ended.iter().all(|e| e.reason == EndReason::Cancelled));
    let closed = r.add(
      pairs[4].0 .1.as_raw_fd(),
      pairs[4].1 .1.as_raw_fd(),
      PairOptions::default(),
    );
    assert_eq!(closed.unwrap_err().kind(), ErrorKind::Closed);
  }
}
