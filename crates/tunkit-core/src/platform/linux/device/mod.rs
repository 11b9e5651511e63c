//! The Linux implementations of the backend contract: [`TunQueue`], the data path of one `/dev/net/tun`
//! descriptor (its offload half, splitting and coalescing super-packets, in [`offload`]), and [`LinuxControl`]
//! (in `control`), configuration through rtnetlink plus the tun ioctls that need a descriptor.

mod control;
mod offload;
#[cfg(test)]
mod tests;

pub(crate) use control::route_label;
pub use control::LinuxControl;
use offload::{Hook, Offloaded};
pub use offload::{OffloadSetup, VNET_HDR_LEN};

use super::sys::{self, errno, PollFd, POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT};
use crate::backend::{Batch, InterceptCounts, InterceptSlot, Queue, WriteReport};
use crate::config::Mode;
use crate::error::{Error, ErrorKind, Result};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread;

/// Largest IP packet a TUN device can carry (its maximum MTU).
pub const TUN_MAX_FRAME: usize = 65535;
/// Largest frame of a TAP device: the maximum MTU plus an Ethernet header with one VLAN tag (14 + 4 bytes).
pub const TAP_MAX_FRAME: usize = 65535 + 18;

/// The largest frame a read from a device of `mode` can return.
pub fn max_frame(mode: Mode) -> usize {
  match mode {
    Mode::Tun => TUN_MAX_FRAME,
    Mode::Tap => TAP_MAX_FRAME,
  }
}

/// Locks, ignoring poisoning: the offload state stays consistent at every point a panic could leave it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
  m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Prefixes an error's message with `ctx`, keeping its kind, errno and syscall.
pub(crate) fn in_context(e: Error, ctx: impl fmt::Display) -> Error {
  let kind = e.kind();
  match e.errno() {
    Some(n) => {
      // `Error::os` appends the OS text itself; strip it from the inner message so it is not repeated.
      let os = io::Error::from_raw_os_error(n);
      let os_text = os.to_string();
      let syscall = e.syscall().unwrap_or("netlink");
      let inner = e.message();
      let out = if inner == os_text {
        Error::os(syscall, &os, ctx)
      } else {
        let inner = inner
          .strip_suffix(format!(": {os_text}").as_str())
          .unwrap_or(inner);
        Error::os(syscall, &os, format_args!("{ctx}: {inner}"))
      };
      out.with_kind(kind)
    }
    None => Error::new(kind, format!("{ctx}: {}", e.message())),
  }
}

/// Runs `f` on a short-lived thread that first joined the network namespace `ns`, and returns its result. Sockets
/// and descriptors `f` opens stay in that namespace after the thread ends; the calling thread is unaffected.
pub(crate) fn run_in_netns<T: Send>(
  ns: BorrowedFd<'_>,
  what: &str,
  f: impl FnOnce() -> Result<T> + Send,
) -> Result<T> {
  thread::scope(|s| {
    let worker = thread::Builder::new()
      .name("tunkit-netns".into())
      .spawn_scoped(s, move || {
        sys::setns_net(ns).map_err(|e| match sys::errno_of(&e) {
          errno::EINVAL => Error::os(
            "setns",
            &e,
            format_args!("{what}: that file is not a network namespace"),
          )
          .with_kind(ErrorKind::InvalidArgument),
          _ => Error::os(
            "setns",
            &e,
            format_args!("{what}: entering the network namespace"),
          ),
        })?;
        f()
      })
      .map_err(|e| {
        Error::os(
          "clone",
          &e,
          format_args!("{what}: starting a thread for the network namespace"),
        )
      })?;
    match worker.join() {
      Ok(r) => r,
      Err(panic) => std::panic::resume_unwind(panic),
    }
  })
}

/// The data path of one tun descriptor (one queue). One thread may read while another writes; [`Queue::wake`]
/// releases both for good through an eventfd they also poll.
///
/// With offload ([`OffloadSetup`]) every read and write carries a virtio-net header. By default the reader splits
/// super-packets into ordinary packets ([`gso::split`]) and the writer coalesces segments of a flow into
/// super-packets ([`Coalescer`]), so the consumer sees plain packets both ways; in raw mode frames pass as they are.
pub struct TunQueue {
  fd: Arc<OwnedFd>,
  wake_fd: OwnedFd,
  woken: AtomicBool,
  name: String,
  max_frame: usize,
  offload: Option<Box<Offloaded>>,
}

/// What a wait on the device descriptor ended with.
pub(super) enum Ready {
  /// The descriptor reported the events asked for.
  Io,
  /// The descriptor reported an error or hang-up (the device went away); the next syscall says which.
  Error,
}

impl TunQueue {
  /// Wraps a non-blocking descriptor attached to the device `name`; `offload` when it was attached with
  /// `IFF_VNET_HDR` (and its header size is [`VNET_HDR_LEN`]).
  pub fn new(fd: OwnedFd, name: &str, mode: Mode, offload: Option<&OffloadSetup>) -> Result<TunQueue> {
    let wake_fd = Self::new_wake_fd(name)?;
    Ok(Self::with_wake_fd(fd, wake_fd, name, mode, offload))
  }

  /// The wake-up eventfd of a queue of `name`, for [`TunQueue::with_wake_fd`]: the one fallible part of making a
  /// queue, which `from_fd` does before it takes the caller's descriptor.
  pub(crate) fn new_wake_fd(name: &str) -> Result<OwnedFd> {
    sys::eventfd_new().map_err(|e| {
      Error::os(
        "eventfd",
        &e,
        format_args!("creating the wake-up eventfd of {name}"),
      )
    })
  }

  /// Like [`TunQueue::new`] with the wake-up eventfd already made; cannot fail.
  pub(crate) fn with_wake_fd(
    fd: OwnedFd,
    wake_fd: OwnedFd,
    name: &str,
    mode: Mode,
    offload: Option<&OffloadSetup>,
  ) -> TunQueue {
    TunQueue {
      fd: Arc::new(fd),
      wake_fd,
      woken: AtomicBool::new(false),
      name: name.to_string(),
      max_frame: Self::frame_limit(mode, offload),
      offload: offload.map(|o| Box::new(Offloaded::new(o))),
    }
  }

  /// The largest frame a read of a queue of `mode` with `offload` returns (its [`Queue::max_frame`]).
  pub(crate) fn frame_limit(mode: Mode, offload: Option<&OffloadSetup>) -> usize {
    match offload {
      // Raw frames carry the header; split packets are ordinary packets.
      Some(o) if o.raw => max_frame(mode) + VNET_HDR_LEN,
      _ => max_frame(mode),
    }
  }

  /// Makes the next super-packet write fail with a synthetic `EINVAL`, like the `offload-write` point of
  /// [`crate::testhooks`] but for one queue. Tests only.
  #[cfg(test)]
  pub(crate) fn fail_next_offload_write(&self) {
    if let Some(o) = &self.offload {
      o.fail_next_write.store(true, Ordering::Relaxed);
    }
  }

  /// The descriptor, for ioctls on the device; the control keeps only a weak reference so that it never keeps the
  /// device alive after its queues are gone.
  pub(crate) fn shared_fd(&self) -> Weak<OwnedFd> {
    Arc::downgrade(&self.fd)
  }

  /// The descriptor, for ioctls.
  pub(crate) fn fd(&self) -> BorrowedFd<'_> {
    self.fd.as_fd()
  }

  fn closed(&self, op: &str) -> Error {
    Error::closed(&format!("{op} on {}", self.name))
  }

  /// The error once the device went away under the queue (`ip link del`): the kernel then reports `POLLERR` and
  /// `EBADFD`. One kind for reads and writes alike.
  fn gone(&self, op: &str, errno: Option<&io::Error>) -> Error {
    let msg = format!("{op} on {}: the device was removed from the system", self.name);
    match errno {
      Some(e) => Error::os(if op == "write" { "write" } else { "read" }, e, msg).with_kind(ErrorKind::Gone),
      None => Error::new(ErrorKind::Gone, msg),
    }
  }

  /// Blocks until the device descriptor reports `events` (or an error), or the queue is woken.
  fn wait(&self, events: i16, op: &str) -> Result<Ready> {
    loop {
      if self.woken.load(Ordering::Acquire) {
        return Err(self.closed(op));
      }
      let mut fds = [
        PollFd::new(self.fd.as_fd(), events),
        PollFd::new(self.wake_fd.as_fd(), POLLIN),
      ];
      match sys::poll_fds(&mut fds, -1) {
        Ok(_) => {
          if fds[1].revents() != 0 || self.woken.load(Ordering::Acquire) {
            return Err(self.closed(op));
          }
          let rev = fds[0].revents();
          if rev & POLLNVAL != 0 {
            return Err(self.closed(op));
          }
          if rev & (POLLERR | POLLHUP) != 0 {
            return Ok(Ready::Error);
          }
          if rev & events != 0 {
            return Ok(Ready::Io);
          }
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
        Err(e) => return Err(Error::os("poll", &e, format_args!("{op} on {}", self.name))),
      }
    }
  }

  /// Reads packets until none is pending, `max` were read or less than one frame of room is left.
  fn drain(&self, batch: &mut Batch, max: usize) -> Result<usize> {
    let mut count = 0;
    while count < max && batch.data.capacity() - batch.data.len() >= self.max_frame {
      match sys::read_into_spare(self.fd.as_fd(), &mut batch.data) {
        // A tun read never returns 0 for a packet; treat it like "nothing pending" rather than an empty packet.
        Ok(0) => break,
        Ok(n) => {
          batch.lens.push(n as u32);
          count += 1;
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
        // Hand over what was read; the error comes back on the next call.
        Err(_) if count > 0 => break,
        // EBADFD: the descriptor is no longer attached (the device was deleted).
        Err(e) if sys::errno_of(&e) == errno::EBADFD => return Err(self.gone("read", Some(&e))),
        Err(e) => return Err(Error::os("read", &e, format_args!("reading from {}", self.name))),
      }
    }
    Ok(count)
  }

  /// The error of one refused packet (`pos`: its index in the batch, when known), with a kind that says why.
  fn packet_error(&self, e: &io::Error, len: usize, pos: Option<usize>) -> Error {
    let err = match pos {
      Some(pos) => Error::os(
        "write",
        e,
        format_args!("writing packet {pos} ({len} bytes) to {}", self.name),
      ),
      None => Error::os(
        "write",
        e,
        format_args!("writing a packet ({len} bytes) to {}", self.name),
      ),
    };
    match sys::errno_of(e) {
      errno::EINVAL => err.with_kind(ErrorKind::InvalidPacket),
      errno::EMSGSIZE => err.with_kind(ErrorKind::PacketTooLarge),
      _ => err,
    }
  }
}

impl TunQueue {
  /// Writes one frame with `write_once`, retrying while interrupted or while the device is full. The outer error
  /// is `Gone` (the device was removed) or `Closed` (the queue was woken); the inner one is the kernel refusing this
  /// frame.
  fn write_with(&self, mut write_once: impl FnMut() -> io::Result<usize>) -> Result<io::Result<usize>> {
    loop {
      if self.woken.load(Ordering::Acquire) {
        return Err(self.closed("write"));
      }
      match write_once() {
        Ok(n) => return Ok(Ok(n)),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
          if let Ready::Error = self.wait(POLLOUT, "write")? {
            return Err(self.gone("write", None));
          }
        }
        Err(e) if sys::errno_of(&e) == errno::EBADFD => return Err(self.gone("write", Some(&e))),
        Err(e) if sys::errno_of(&e) == errno::EBADF => {
          return Err(
            Error::os("write", &e, format_args!("writing to {}", self.name)).with_kind(ErrorKind::Closed),
          );
        }
        Err(e) => return Ok(Err(e)),
      }
    }
  }

  /// Adds the outcome of one write of `packets` packets (`bytes` in all) to `report`.
  fn account(
    &self,
    r: io::Result<usize>,
    packets: u64,
    bytes: usize,
    pos: Option<usize>,
    report: &mut WriteReport,
  ) {
    match r {
      Ok(_) => {
        report.packets += packets;
        report.bytes += bytes as u64;
      }
      Err(e) => {
        report.errors += packets;
        report.last_error = Some(self.packet_error(&e, bytes, pos));
      }
    }
  }
}

impl TunQueue {
  /// `read_batch` without splitting: each read goes straight into the slab.
  fn read_plain(&self, batch: &mut Batch, max: usize) -> Result<usize> {
    // The caller guarantees room for one frame; make sure anyway, since a short read buffer truncates the packet.
    batch.data.reserve(self.max_frame);
    // Under load packets are already waiting: read first, and poll only when there was nothing (one syscall less
    // per batch).
    let mut ready = Ready::Io;
    loop {
      if self.woken.load(Ordering::Acquire) {
        return Err(self.closed("read"));
      }
      let n = self.drain(batch, max)?;
      if n > 0 {
        return Ok(n);
      }
      if let Ready::Error = ready {
        // POLLERR without a read error would spin; the device is gone.
        return Err(self.gone("read", None));
      }
      ready = self.wait(POLLIN, "read")?;
    }
  }

  /// No offload: one `write()` per packet.
  fn write_plain<'a>(&self, pkts: impl Iterator<Item = &'a [u8]>) -> Result<WriteReport> {
    let mut report = WriteReport::default();
    for (pos, pkt) in pkts.enumerate() {
      let r = self.write_with(|| sys::write_fd(self.fd.as_fd(), pkt))?;
      self.account(r, 1, pkt.len(), Some(pos), &mut report);
    }
    Ok(report)
  }
}

impl Queue for TunQueue {
  fn read_batch(&self, batch: &mut Batch, max_packets: usize) -> Result<usize> {
    let max = max_packets.max(1);
    match &self.offload {
      None => self.read_plain(batch, max),
      Some(off) if off.raw => self.read_raw(off, batch, max, None),
      Some(off) => self.read_split(off, batch, max, None),
    }
  }

  /// With offload the intercept sees every frame before it is split, so a super-packet it rewrites goes back
  /// whole (one write per 64 KiB, not one per segment).
  fn intercepts_frames(&self) -> bool {
    self.offload.is_some()
  }

  fn read_batch_with(
    &self,
    batch: &mut Batch,
    max_packets: usize,
    slot: &InterceptSlot,
    counts: &mut InterceptCounts,
  ) -> Result<usize> {
    let max = max_packets.max(1);
    let hook = Some(Hook { slot, counts });
    match &self.offload {
      None => self.read_plain(batch, max),
      Some(off) if off.raw => self.read_raw(off, batch, max, hook),
      Some(off) => self.read_split(off, batch, max, hook),
    }
  }

  fn write_batch(&self, batch: &Batch) -> Result<WriteReport> {
    match &self.offload {
      None => self.write_plain(batch.iter()),
      Some(off) if off.raw => self.write_raw(off, batch.iter()),
      Some(off) => self.write_offloaded(off, &batch.iter().collect::<Vec<_>>()),
    }
  }

  /// Packets go out straight from the caller's memory, coalesced or not.
  fn write_packets(&self, pkts: &[&[u8]]) -> Result<WriteReport> {
    match &self.offload {
      None => self.write_plain(pkts.iter().copied()),
      Some(off) if off.raw => self.write_raw(off, pkts.iter().copied()),
      Some(off) => self.write_offloaded(off, pkts),
    }
  }

  fn max_frame(&self) -> usize {
    self.max_frame
  }

  /// A TUN/TAP write hands the packet to the stack and returns; it does not wait for a reader.
  fn writes_never_block(&self) -> bool {
    true
  }

  fn wake(&self) {
    self.woken.store(true, Ordering::Release);
    // The counter is never read, so the eventfd stays readable and every later poll returns at once. The write
    // cannot fail short of a counter overflow, which 1 per call never reaches.
    let _ = sys::eventfd_signal(self.wake_fd.as_fd());
  }

  /// Offload counters (none without offload):
  ///
  /// - `offloadSuperPacketsRead`: reads that brought a super-packet (split, or passed on in raw mode);
  /// - `offloadSegmentsRead`: packets those super-packets were split into (split mode);
  /// - `offloadSuperPacketsWritten`: super-packets written (coalesced, or raw frames);
  /// - `offloadSegmentsCoalesced`: packets that went out inside coalesced super-packets;
  /// - `offloadFallbacks`: times offload was turned off because the kernel refused it (at open, or a write);
  /// - `offloadTcp`, `offloadUdp`: 1 when the kernel accepted TSO / USO at open (writes coalesce that protocol
  ///   until a fallback);
  /// - `offloadReadErrors`: frames dropped because the splitter rejected them.
  fn counters(&self) -> Vec<(&'static str, u64)> {
    let Some(off) = &self.offload else {
      return Vec::new();
    };
    let s = &off.stats;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    vec![
      ("offloadSuperPacketsRead", get(&s.super_read)),
      ("offloadSegmentsRead", get(&s.segments_read)),
      ("offloadSuperPacketsWritten", get(&s.super_written)),
      ("offloadSegmentsCoalesced", get(&s.segments_coalesced)),
      ("offloadFallbacks", get(&s.fallbacks)),
      ("offloadTcp", off.tcp as u64),
      ("offloadUdp", off.udp as u64),
      ("offloadReadErrors", get(&s.read_errors)),
    ]
  }

  fn take_notice(&self) -> Option<String> {
    self.offload.as_ref().and_then(|o| lock(&o.notices).pop_front())
  }
}
