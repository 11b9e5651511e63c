//! The Linux implementations of the backend contract: [`TunQueue`], the data path of one `/dev/net/tun`
//! descriptor, and [`LinuxControl`], configuration through rtnetlink plus the tun ioctls that need a descriptor.

use super::netlink::{LinkEvents, Netlink};
use super::sys::{self, errno, tun, PollFd, POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT};
use crate::backend::{Batch, Control, EventSource, LinkInfo, Queue, WriteReport};
use crate::config::{self, format_mac, IpCidr, Mode, RouteSpec, MIN_MTU_IPV6};
use crate::error::{Error, ErrorKind, Result};
use crate::packet::gro::{Coalescer, GroOptions};
use crate::packet::gso;
use crate::packet::virtio::{self, VirtioNetHdr};
use std::collections::VecDeque;
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

/// Size of the virtio-net header in front of every packet of a device opened with offload (`TUNSETVNETHDRSZ`):
/// the plain 10-byte `struct virtio_net_hdr`.
pub const VNET_HDR_LEN: usize = virtio::VIRTIO_NET_HDR_LEN;

/// The header of a plain packet: no segmentation, checksums complete.
const PLAIN_HDR: [u8; VNET_HDR_LEN] = [0; VNET_HDR_LEN];

/// Size of the buffer one offload read goes into: the header and the largest packet the kernel can hand over (an
/// IPv6 packet is at most 40 + 65535 bytes), plus one byte, so that a read filling it all is known to be truncated.
const SCRATCH_LEN: usize = VNET_HDR_LEN + 40 + 65535 + 1;

/// Below this much room left in the slab, the split reader stops reading: nothing more would fit.
const MIN_SPLIT_ROOM: usize = 2048;

/// What `open` settled on for a device opened with `IFF_VNET_HDR`, handed to each of its queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffloadSetup {
  /// Pass frames through with their header instead of splitting on read and coalescing on write.
  pub raw: bool,
  /// TCP offload: the kernel accepted TSO (reads bring TCP super-packets) and writes coalesce TCP segments.
  pub tcp: bool,
  /// UDP offload: the kernel accepted USO (Linux 6.2+) and writes coalesce equal-size UDP datagrams.
  pub udp: bool,
  /// Times offload was turned off at open because the kernel refused it (counted in `offloadFallbacks`).
  pub fallbacks: u64,
  /// What the kernel refused at open, said once by the queue that gets this setup.
  pub notice: Option<String>,
}

/// Locks, ignoring poisoning: the offload state stays consistent at every point a panic could leave it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
  m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Room left in a slab without reallocating it.
fn spare(batch: &Batch) -> usize {
  batch.data.capacity() - batch.data.len()
}

/// The data path of an offload queue: its switches, scratch buffers and counters.
struct Offloaded {
  raw: bool,
  tcp: bool,
  udp: bool,
  /// Set for good once the kernel refused a super-packet write: from then on every packet goes out alone.
  writes_off: AtomicBool,
  /// Test hook (the `offload-write` point of [`crate::testhooks`], checked when the queue is created): the next
  /// super-packet write fails with a synthetic `EINVAL`.
  fail_next_write: AtomicBool,
  /// A dropped read was already reported in a notice.
  read_drop_told: AtomicBool,
  rx: Mutex<RxScratch>,
  tx: Mutex<TxScratch>,
  stats: OffloadStats,
  notices: Mutex<VecDeque<String>>,
}

#[derive(Default)]
struct OffloadStats {
  super_read: AtomicU64,
  segments_read: AtomicU64,
  super_written: AtomicU64,
  segments_coalesced: AtomicU64,
  fallbacks: AtomicU64,
  read_errors: AtomicU64,
}

/// Reader-side buffers (only the reader thread locks them).
struct RxScratch {
  /// One frame as read: header and packet.
  frame: Vec<u8>,
  /// Length of a frame in `frame` that did not fit in the last batch and goes first into the next (0: none).
  pending: usize,
  /// The segments of a super-packet too large for one batch (more segments than a batch takes, or more bytes than
  /// a slab holds), handed out over the following calls.
  overflow: Batch,
  /// Index and byte offset of the next segment of `overflow` to hand out.
  overflow_next: usize,
  overflow_off: usize,
}

/// Writer-side buffers (only the writer thread locks them).
#[derive(Default)]
struct TxScratch {
  coalescer: Coalescer,
  /// The coalesced batch: header and packet per write.
  out: Batch,
  /// The segments of a super-packet the kernel refused, to be written one by one.
  segments: Batch,
}

/// What became of the frame waiting in [`RxScratch::frame`].
enum Split {
  /// Its packets are in the batch.
  Done(usize),
  /// It does not fit; it stays for the next batch.
  NoRoom,
  /// It went into the overflow batch.
  Overflow,
  /// It was malformed and dropped.
  Dropped,
}

impl Offloaded {
  fn new(setup: &OffloadSetup) -> Offloaded {
    let fail = crate::testhooks::armed("offload-write");
    let stats = OffloadStats::default();
    stats.fallbacks.store(setup.fallbacks, Ordering::Relaxed);
    Offloaded {
      raw: setup.raw,
      tcp: setup.tcp,
      udp: setup.udp,
      writes_off: AtomicBool::new(false),
      fail_next_write: AtomicBool::new(fail),
      read_drop_told: AtomicBool::new(false),
      rx: Mutex::new(RxScratch {
        frame: if setup.raw {
          Vec::new()
        } else {
          vec![0; SCRATCH_LEN]
        },
        pending: 0,
        overflow: Batch::default(),
        overflow_next: 0,
        overflow_off: 0,
      }),
      tx: Mutex::new(TxScratch::default()),
      stats,
      notices: Mutex::new(setup.notice.iter().cloned().collect()),
    }
  }

  fn notice(&self, msg: String) {
    lock(&self.notices).push_back(msg);
  }
}

/// Number of segments of a super-packet and the bytes they add up to once split (each carries the headers).
fn segments_of(hdr: &VirtioNetHdr, pkt_len: usize) -> (u64, u64) {
  let hdr_len = (hdr.hdr_len as usize).min(pkt_len);
  let gso = (hdr.gso_size as usize).max(1);
  let n = (pkt_len - hdr_len).div_ceil(gso).max(1);
  (n as u64, (pkt_len + (n - 1) * hdr_len) as u64)
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
enum Ready {
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

  // ---- Offload, read side ----

  /// `read_batch` of a split (default) offload queue: every read brings a header and a packet, maybe a
  /// super-packet, which goes into the batch as ordinary packets.
  fn read_split(&self, off: &Offloaded, batch: &mut Batch, max: usize) -> Result<usize> {
    // Only the reader thread takes this lock, so holding it while blocked in poll costs nothing.
    let mut rx = lock(&off.rx);
    let mut ready = Ready::Io;
    loop {
      if self.woken.load(Ordering::Acquire) {
        return Err(self.closed("read"));
      }
      // A frame left over from the last call goes out before anything is read (and before any wait).
      let n = self.drain_split(off, &mut rx, batch, max)?;
      if n > 0 {
        return Ok(n);
      }
      if let Ready::Error = ready {
        return Err(self.gone("read", None));
      }
      ready = self.wait(POLLIN, "read")?;
    }
  }

  /// Hands out left-over segments and frames, then reads and splits until nothing is pending, `max` packets are
  /// in, or the next frame does not fit (it then waits in the scratch buffer for the next call). Never blocks.
  fn drain_split(&self, off: &Offloaded, rx: &mut RxScratch, batch: &mut Batch, max: usize) -> Result<usize> {
    let mut count = take_overflow(rx, batch, max);
    if rx.overflow_next < rx.overflow.len() {
      return Ok(count);
    }
    while count < max && spare(batch) >= MIN_SPLIT_ROOM {
      if rx.pending == 0 {
        match sys::read_fd(self.fd.as_fd(), &mut rx.frame) {
          // With a virtio-net header a read is never empty; treat 0 like "nothing pending".
          Ok(0) => break,
          Ok(n) => rx.pending = n,
          Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
          Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
          Err(_) if count > 0 => break,
          Err(e) => return Err(Error::os("read", &e, format_args!("reading from {}", self.name))),
        }
      }
      match self.split_pending(off, rx, batch, max - count, count == 0) {
        Split::Done(n) => count += n,
        Split::NoRoom => break,
        Split::Overflow => {
          count += take_overflow(rx, batch, max - count);
          break;
        }
        Split::Dropped => {}
      }
    }
    Ok(count)
  }

  /// Splits the frame waiting in the scratch buffer into `batch` if its packets fit (`room` more packets and the
  /// slab's spare bytes); if they do not and the batch got nothing yet (`alone`), into the overflow batch.
  fn split_pending(
    &self,
    off: &Offloaded,
    rx: &mut RxScratch,
    batch: &mut Batch,
    room: usize,
    alone: bool,
  ) -> Split {
    let RxScratch {
      frame,
      pending,
      overflow,
      overflow_next,
      overflow_off,
    } = rx;
    let len = std::mem::replace(pending, 0);
    if len == frame.len() {
      self.drop_read(
        off,
        &Error::new(
          ErrorKind::InvalidPacket,
          format!("a {len}-byte read filled the whole buffer and may be truncated"),
        ),
      );
      return Split::Dropped;
    }
    let frame = &frame[..len];
    let planned = VirtioNetHdr::decode(frame).and_then(|h| Ok((h, gso::plan(&h, &frame[VNET_HDR_LEN..])?)));
    let (hdr, plan) = match planned {
      Ok(x) => x,
      Err(e) => {
        self.drop_read(off, &e);
        return Split::Dropped;
      }
    };
    let pkt = &frame[VNET_HDR_LEN..];
    let fits = plan.segments <= room && plan.bytes <= spare(batch);
    let result = if fits {
      gso::split(&hdr, pkt, batch).map(Split::Done)
    } else if alone {
      overflow.clear();
      *overflow_next = 0;
      *overflow_off = 0;
      gso::split(&hdr, pkt, overflow).map(|_| Split::Overflow)
    } else {
      *pending = len;
      return Split::NoRoom;
    };
    match result {
      Ok(r) => {
        if hdr.gso_kind() != virtio::VIRTIO_NET_HDR_GSO_NONE {
          off.stats.super_read.fetch_add(1, Ordering::Relaxed);
          off
            .stats
            .segments_read
            .fetch_add(plan.segments as u64, Ordering::Relaxed);
        }
        r
      }
      // `plan` accepted it, so `split` does too; should they ever disagree, the frame is dropped like any other
      // the splitter rejects.
      Err(e) => {
        self.drop_read(off, &e);
        Split::Dropped
      }
    }
  }

  /// Drops a frame the splitter rejected, counts it, and says so once.
  ///
  /// Such a frame has a header that contradicts its packet (a segment size of 0, a checksum offset past the end,
  /// an IP length that is not the packet's, a fragment to segment...). Handing it over as it is would put a
  /// header-prefixed frame among plain packets, and the packet behind it is malformed for any IP consumer anyway;
  /// the kernel never produces one, so a drop is the honest answer, and `offloadReadErrors` shows it.
  fn drop_read(&self, off: &Offloaded, e: &Error) {
    off.stats.read_errors.fetch_add(1, Ordering::Relaxed);
    if !off.read_drop_told.swap(true, Ordering::Relaxed) {
      off.notice(format!(
        "offload: dropped a frame read from the device that could not be split into packets ({}); further drops are \
         only counted in stats().backend.offloadReadErrors",
        e.message()
      ));
    }
  }

  /// `read_batch` of a raw offload queue: frames go into the batch as read, header included.
  fn read_raw(&self, off: &Offloaded, batch: &mut Batch, max: usize) -> Result<usize> {
    let first = batch.lens.len();
    let mut at = batch.data.len();
    let n = self.read_plain(batch, max)?;
    for &len in &batch.lens[first..] {
      let frame = &batch.data[at..at + len as usize];
      if frame.len() > 1 && frame[1] & !virtio::VIRTIO_NET_HDR_GSO_ECN != virtio::VIRTIO_NET_HDR_GSO_NONE {
        off.stats.super_read.fetch_add(1, Ordering::Relaxed);
      }
      at += len as usize;
    }
    Ok(n)
  }

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

  // ---- Offload, write side ----

  /// `write_batch` of an offload queue.
  /// Raw mode: each frame is a virtio-net header and a packet, written as it is.
  fn write_raw<'a>(&self, off: &Offloaded, frames: impl Iterator<Item = &'a [u8]>) -> Result<WriteReport> {
    let mut report = WriteReport::default();
    let mut tx = lock(&off.tx);
    for (pos, frame) in frames.enumerate() {
      let gso =
        frame.len() > 1 && frame[1] & !virtio::VIRTIO_NET_HDR_GSO_ECN != virtio::VIRTIO_NET_HDR_GSO_NONE;
      if gso {
        self.write_super(off, frame, Some(pos), &mut tx.segments, &mut report)?;
      } else {
        let r = self.write_with(|| sys::write_fd(self.fd.as_fd(), frame))?;
        self.account(r, 1, frame.len(), Some(pos), &mut report);
      }
    }
    Ok(report)
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

  /// Split-mode offload writes: consecutive segments of a flow are coalesced into super-packets (straight from
  /// the packets' memory), everything else goes out with a plain header.
  fn write_offloaded(&self, off: &Offloaded, pkts: &[&[u8]]) -> Result<WriteReport> {
    let mut report = WriteReport::default();
    let mut tx = lock(&off.tx);
    let TxScratch {
      coalescer,
      out,
      segments,
    } = &mut *tx;
    out.clear();
    let coalescing = (off.tcp || off.udp) && !off.writes_off.load(Ordering::Relaxed);
    if !coalescing {
      for (pos, pkt) in pkts.iter().enumerate() {
        let r = self.write_with(|| sys::write2_fd(self.fd.as_fd(), &PLAIN_HDR, pkt))?;
        self.account(r, 1, pkt.len(), Some(pos), &mut report);
      }
      return Ok(report);
    }
    let opts = GroOptions {
      tcp: off.tcp,
      udp: off.udp,
      ..GroOptions::default()
    };
    coalescer.coalesce_packets(pkts, &opts, out);
    for entry in out.iter() {
      if entry[1] == virtio::VIRTIO_NET_HDR_GSO_NONE {
        let r = self.write_with(|| sys::write_fd(self.fd.as_fd(), entry))?;
        self.account(r, 1, entry.len() - VNET_HDR_LEN, None, &mut report);
      } else {
        self.write_super(off, entry, None, segments, &mut report)?;
      }
    }
    Ok(report)
  }

  /// Writes one super-packet (header and packet): coalesced by the writer, or a raw frame (`pos` is then its
  /// index in the batch). If the kernel refuses it with `EINVAL`, super-packet writes are turned off for good and
  /// its segments go out one by one; so they do when that already happened.
  fn write_super(
    &self,
    off: &Offloaded,
    frame: &[u8],
    pos: Option<usize>,
    segments: &mut Batch,
    report: &mut WriteReport,
  ) -> Result<()> {
    let raw = pos.is_some();
    let parsed = VirtioNetHdr::decode(frame);
    let (hdr, pkt) = match &parsed {
      Ok(h) => (*h, &frame[VNET_HDR_LEN..]),
      Err(e) => {
        report.errors += 1;
        report.last_error = Some(e.clone());
        return Ok(());
      }
    };
    let (segs, bytes) = segments_of(&hdr, pkt.len());
    // Raw frames are counted as the consumer wrote them; coalesced ones as the packets that went into them.
    let (packets, size) = if raw {
      (1, frame.len())
    } else {
      (segs, bytes as usize)
    };
    if !off.writes_off.load(Ordering::Relaxed) {
      let r = if off.fail_next_write.swap(false, Ordering::Relaxed) {
        Err(io::Error::from_raw_os_error(errno::EINVAL))
      } else {
        self.write_with(|| sys::write_fd(self.fd.as_fd(), frame))?
      };
      match r {
        Ok(_) => {
          off.stats.super_written.fetch_add(1, Ordering::Relaxed);
          if !raw {
            off.stats.segments_coalesced.fetch_add(segs, Ordering::Relaxed);
          }
          self.account(Ok(0), packets, size, pos, report);
          return Ok(());
        }
        // EINVAL for a super-packet the splitter accepts (coalesced ones always are) is the kernel refusing
        // segmentation offload on writes, a known failure of some kernels that accept IFF_VNET_HDR. A raw frame
        // the splitter rejects is just a bad frame.
        Err(e) if sys::errno_of(&e) == errno::EINVAL && (!raw || gso::plan(&hdr, pkt).is_ok()) => {
          self.turn_off_writes(off, &e);
        }
        Err(e) => {
          self.account(Err(e), packets, size, pos, report);
          return Ok(());
        }
      }
    }
    segments.clear();
    if let Err(e) = gso::split(&hdr, pkt, segments) {
      report.errors += packets;
      report.last_error = Some(e);
      return Ok(());
    }
    let mut failed: Option<io::Error> = None;
    for seg in segments.iter() {
      let r = self.write_with(|| sys::write2_fd(self.fd.as_fd(), &PLAIN_HDR, seg))?;
      match r {
        Err(e) if raw => {
          failed.get_or_insert(e);
        }
        Ok(_) if raw => {}
        r => self.account(r, 1, seg.len(), None, report),
      }
    }
    if raw {
      // The consumer wrote one frame: it went out whole or it did not.
      self.account(failed.map_or(Ok(0), Err), 1, frame.len(), pos, report);
    }
    Ok(())
  }

  /// Turns super-packet writes off for good after the kernel refused one, counts it and says so once.
  fn turn_off_writes(&self, off: &Offloaded, e: &io::Error) {
    if !off.writes_off.swap(true, Ordering::Relaxed) {
      off.stats.fallbacks.fetch_add(1, Ordering::Relaxed);
      off.notice(format!(
        "offload: the kernel refused a super-packet write ({e}); from now on every packet is written on its own \
         (reads still use offload). No packet was lost: the refused write was re-sent as its segments"
      ));
    }
  }
}

/// Moves segments from the overflow batch into `batch`: at most `max`, and only while they fit in its spare
/// capacity, except that the first always goes in (a slab always has room for one largest packet).
fn take_overflow(rx: &mut RxScratch, batch: &mut Batch, max: usize) -> usize {
  let mut count = 0;
  while rx.overflow_next < rx.overflow.len() && count < max {
    let len = rx.overflow.lens[rx.overflow_next] as usize;
    if count > 0 && len > spare(batch) {
      break;
    }
    batch.push(&rx.overflow.data[rx.overflow_off..rx.overflow_off + len]);
    rx.overflow_next += 1;
    rx.overflow_off += len;
    count += 1;
  }
  if rx.overflow_next >= rx.overflow.len() && !rx.overflow.is_empty() {
    rx.overflow.clear();
    rx.overflow_next = 0;
    rx.overflow_off = 0;
  }
  count
}

impl Queue for TunQueue {
  fn read_batch(&self, batch: &mut Batch, max_packets: usize) -> Result<usize> {
    let max = max_packets.max(1);
    match &self.offload {
      None => self.read_plain(batch, max),
      Some(off) if off.raw => self.read_raw(off, batch, max),
      Some(off) => self.read_split(off, batch, max),
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

/// Configuration of one Linux device: rtnetlink through a socket opened in the device's namespace, and the tun
/// ioctls through the first queue's descriptor.
pub struct LinuxControl {
  name: String,
  index: u32,
  /// Adopted descriptors (`from_fd`) resolve the index by name on every call, in case the device was re-created.
  by_name: bool,
  netlink: Mutex<Netlink>,
  first_fd: Weak<OwnedFd>,
  /// The namespace the device lives in when it is not the caller's, to open event subscriptions there.
  netns: Option<OwnedFd>,
}

impl LinuxControl {
  /// A control for the device `name` (`index`), configured through `netlink`.
  pub(crate) fn new(
    name: String,
    index: u32,
    netlink: Netlink,
    first_fd: Weak<OwnedFd>,
    by_name: bool,
  ) -> LinuxControl {
    LinuxControl {
      name,
      index,
      by_name,
      netlink: Mutex::new(netlink),
      first_fd,
      netns: None,
    }
  }

  /// Records the namespace the device was created in.
  pub(crate) fn set_netns(&mut self, ns: OwnedFd) {
    self.netns = Some(ns);
  }

  fn netlink(&self) -> MutexGuard<'_, Netlink> {
    self.netlink.lock().unwrap_or_else(|e| e.into_inner())
  }

  /// The current index of the device (looked up by name for adopted descriptors).
  fn resolve(&self, nl: &Netlink) -> Result<u32> {
    if self.by_name {
      nl.link_index(&self.name)
    } else {
      Ok(self.index)
    }
  }

  /// Runs one netlink operation on the device; errors say `"{op} on {name}: …"`.
  fn with_link<T>(&self, op: impl fmt::Display, f: impl FnOnce(&Netlink, u32) -> Result<T>) -> Result<T> {
    let nl = self.netlink();
    self
      .resolve(&nl)
      .and_then(|index| f(&nl, index))
      .map_err(|e| in_context(e, format_args!("{op} on {}", self.name)))
  }
}

/// `"10.9.0.0/16 via 10.0.0.1 table 100"`, for messages.
pub(crate) fn route_label(r: &RouteSpec) -> String {
  let mut s = r.to.to_string();
  if let Some(via) = r.via {
    s.push_str(&format!(" via {via}"));
  }
  if let Some(t) = r.table {
    s.push_str(&format!(" table {t}"));
  }
  s
}

impl Control for LinuxControl {
  fn name(&self) -> String {
    self.name.clone()
  }

  fn index(&self) -> u32 {
    self.index
  }

  fn link(&self) -> Result<LinkInfo> {
    self.with_link("reading the link state", |nl, i| nl.link(i))
  }

  fn set_mtu(&self, mtu: u32) -> Result<()> {
    let op = format!("setMtu {mtu}");
    config::validate_mtu(mtu, false).map_err(|e| in_context(e, format_args!("{op} on {}", self.name)))?;
    self.with_link(&op, |nl, i| {
      // The kernel accepts a small MTU on a link with IPv6 addresses by silently disabling IPv6 there.
      if mtu < MIN_MTU_IPV6 && nl.addresses(i)?.iter().any(IpCidr::needs_ipv6_mtu) {
        return Err(Error::new(
          ErrorKind::InvalidMtu,
          format!("mtu {mtu} is below {MIN_MTU_IPV6}, the minimum for the IPv6 addresses of the link"),
        ));
      }
      nl.set_mtu(i, mtu).map_err(|e| {
        if e.kind() == ErrorKind::InvalidArgument {
          e.with_kind(ErrorKind::InvalidMtu)
        } else {
          e
        }
      })
    })
  }

  fn set_up(&self, up: bool) -> Result<()> {
    self.with_link(
      if up {
        "setting the link up"
      } else {
        "setting the link down"
      },
      |nl, i| nl.set_up(i, up),
    )
  }

  fn set_tx_queue_len(&self, len: u32) -> Result<()> {
    self.with_link(format_args!("txQueueLength {len}"), |nl, i| {
      nl.set_tx_queue_len(i, len)
    })
  }

  fn set_mac(&self, mac: [u8; 6]) -> Result<()> {
    self.with_link(format_args!("setMac {}", format_mac(&mac)), |nl, i| {
      nl.set_mac(i, mac)
    })
  }

  fn add_address(&self, addr: &IpCidr) -> Result<()> {
    self.with_link(format_args!("addAddress {addr}"), |nl, i| {
      // Below 1280 the kernel has IPv6 disabled on the link; say why instead of passing on its errno.
      if addr.needs_ipv6_mtu() {
        let mtu = nl.link(i)?.mtu;
        if mtu < MIN_MTU_IPV6 {
          return Err(Error::new(
            ErrorKind::InvalidMtu,
            format!("mtu {mtu} is below {MIN_MTU_IPV6}, too small for IPv6"),
          ));
        }
      }
      nl.add_address(i, addr)
    })
  }

  fn remove_address(&self, addr: &IpCidr) -> Result<()> {
    self.with_link(format_args!("removeAddress {addr}"), |nl, i| {
      nl.remove_address(i, addr)
    })
  }

  fn addresses(&self) -> Result<Vec<IpCidr>> {
    self.with_link("listing addresses", |nl, i| nl.addresses(i))
  }

  fn add_route(&self, route: &RouteSpec) -> Result<()> {
    self.with_link(format_args!("addRoute {}", route_label(route)), |nl, i| {
      nl.add_route(i, route)
    })
  }

  fn remove_route(&self, route: &RouteSpec) -> Result<()> {
    self.with_link(format_args!("removeRoute {}", route_label(route)), |nl, i| {
      nl.remove_route(i, route)
    })
  }

  fn routes(&self) -> Result<Vec<RouteSpec>> {
    self.with_link("listing routes", |nl, i| nl.routes(i))
  }

  fn events(&self) -> Result<Box<dyn EventSource>> {
    let index = {
      let nl = self.netlink();
      self
        .resolve(&nl)
        .map_err(|e| in_context(e, format_args!("events on {}", self.name)))?
    };
    let what = format!("events on {}", self.name);
    let events = match &self.netns {
      None => LinkEvents::subscribe(index),
      Some(ns) => run_in_netns(ns.as_fd(), &what, || LinkEvents::subscribe(index)),
    }
    .map_err(|e| in_context(e, &what))?;
    Ok(Box::new(events))
  }

  fn set_persist(&self, persist: bool) -> Result<()> {
    let fd = self
      .first_fd
      .upgrade()
      .ok_or_else(|| Error::closed(&format!("persist on {}", self.name)))?;
    tun::set_persist(fd.as_fd(), persist).map_err(|e| {
      Error::os(
        "ioctl",
        &e,
        format_args!("TUNSETPERSIST {} on {}", persist as u8, self.name),
      )
    })
  }
}

#[cfg(test)]
mod tests {
  use super::super::test_support::{in_netns, ipv4_udp};
  use super::*;
  use crate::config::DeviceConfig;
  use std::net::UdpSocket;
  use std::sync::mpsc;
  use std::time::{Duration, Instant};

  /// Opens a TUN device named `name` with `addr` (so it is up) and returns its single queue, shareable.
  fn device(name: &str, addr: Option<&str>) -> (Arc<dyn Queue>, Box<dyn Control>) {
    let cfg = DeviceConfig {
      name: Some(name.into()),
      addresses: addr.map(|a| vec![a.parse().unwrap()]).unwrap_or_default(),
      ..Default::default()
    };
    let opened = super::super::open(&cfg).unwrap();
    let queue = opened.queues.into_iter().next().unwrap();
    (Arc::from(queue), opened.control)
  }

  /// Wakes `queue` unless `stop` is signalled within `limit`, so that a test never blocks forever in a read.
  fn watchdog(queue: &Arc<dyn Queue>, limit: Duration) -> mpsc::Sender<()> {
    let (tx, rx) = mpsc::channel::<()>();
    let queue = queue.clone();
    thread::spawn(move || {
      if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
        queue.wake();
      }
    });
    tx
  }

  /// The UDP payload of an IPv4 packet to `dst`, if it is one.
  fn udp_payload_to(pkt: &[u8], dst: [u8; 4]) -> Option<&[u8]> {
    (pkt.len() >= 28 && pkt[0] >> 4 == 4 && pkt[9] == 17 && pkt[16..20] == dst).then(|| &pkt[28..])
  }

  #[test]
  fn linux_read_batch_returns_what_the_kernel_sends() {
    in_netns("linux_read_batch_returns_what_the_kernel_sends", || {
      let (queue, _control) = device("tk-rd", Some("10.77.0.1/24"));
      let _stop = watchdog(&queue, Duration::from_secs(10));
      let frame = queue.max_frame();
      assert_eq!(frame, TUN_MAX_FRAME);
      let sock = UdpSocket::bind("10.77.0.1:0").unwrap();
      for i in 0..5u8 {
        sock.send_to(&[b'p', i], "10.77.0.2:4242").unwrap();
      }
      // Room for exactly one frame: one packet per call, never a truncated one.
      let mut small = Batch::with_capacity(frame + 10, 8);
      let mut got = Vec::new();
      for _ in 0..20 {
        if got.len() == 2 {
          break;
        }
        small.clear();
        assert_eq!(queue.read_batch(&mut small, 8).unwrap(), 1);
        assert_eq!(small.len(), 1);
        assert_eq!(small.data.len(), small.lens[0] as usize);
        if let Some(p) = udp_payload_to(small.iter().next().unwrap(), [10, 77, 0, 2]) {
          got.push(p.to_vec());
        }
      }
      // The other three are already queued: a roomy batch takes them in one call, bounded by max_packets.
      let mut batch = Batch::with_capacity(8 * frame, 8);
      let n = queue.read_batch(&mut batch, 2).unwrap();
      assert_eq!((n, batch.len()), (2, 2));
      for _ in 0..20 {
        if got.len()
          + batch
            .iter()
            .filter(|p| udp_payload_to(p, [10, 77, 0, 2]).is_some())
            .count()
          >= 5
        {
          break;
        }
        queue.read_batch(&mut batch, 64).unwrap();
      }
      assert_eq!(
        batch.data.len(),
        batch.lens.iter().map(|&l| l as usize).sum::<usize>()
      );
      got.extend(
        batch
          .iter()
          .filter_map(|p| udp_payload_to(p, [10, 77, 0, 2]))
          .map(|p| p.to_vec()),
      );
      assert_eq!(got, (0..5u8).map(|i| vec![b'p', i]).collect::<Vec<_>>());
    });
  }

  #[test]
  fn linux_wake_unblocks_a_blocked_read_within_100ms() {
    in_netns("linux_wake_unblocks_a_blocked_read_within_100ms", || {
      // Down and without addresses: nothing ever arrives, so the reader blocks in poll.
      let (queue, _control) = device("tk-wake", None);
      let (done_tx, done_rx) = mpsc::channel();
      let reader = {
        let queue = queue.clone();
        thread::spawn(move || {
          let mut batch = Batch::with_capacity(2 * TUN_MAX_FRAME, 8);
          let r = queue.read_batch(&mut batch, 8);
          done_tx.send(Instant::now()).unwrap();
          r
        })
      };
      thread::sleep(Duration::from_millis(50));
      assert!(
        done_rx.try_recv().is_err(),
        "read_batch returned with nothing to read"
      );
      let woke = Instant::now();
      queue.wake();
      let returned = done_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("read_batch still blocked after wake");
      assert!(
        returned.duration_since(woke) < Duration::from_millis(100),
        "{:?}",
        returned.duration_since(woke)
      );
      let e = reader.join().unwrap().unwrap_err();
      assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
      assert!(e.message().contains("tk-wake"), "{e}");
      // Woken for good: both directions fail at once from now on.
      let mut batch = Batch::with_capacity(2 * TUN_MAX_FRAME, 8);
      assert_eq!(
        queue.read_batch(&mut batch, 8).unwrap_err().kind(),
        ErrorKind::Closed
      );
      let mut out = Batch::default();
      out.push(&ipv4_udp([10, 0, 0, 2], [10, 0, 0, 1], 1, 2, b"x"));
      assert_eq!(queue.write_batch(&out).unwrap_err().kind(), ErrorKind::Closed);
      queue.wake();
    });
  }

  #[test]
  fn linux_write_batch_delivers_and_reports_bad_packets() {
    in_netns("linux_write_batch_delivers_and_reports_bad_packets", || {
      let (queue, _control) = device("tk-wr", Some("10.78.0.1/24"));
      let sock = UdpSocket::bind("10.78.0.1:0").unwrap();
      sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
      let port = sock.local_addr().unwrap().port();
      let one = ipv4_udp([10, 78, 0, 2], [10, 78, 0, 1], 5555, port, b"one");
      let mut bad = ipv4_udp([10, 78, 0, 2], [10, 78, 0, 1], 5555, port, b"bad");
      bad[0] = 0x75; // IP version 7
      let two = ipv4_udp([10, 78, 0, 2], [10, 78, 0, 1], 5555, port, b"two");
      let mut batch = Batch::default();
      for p in [&one, &bad, &two] {
        batch.push(p);
      }
      let report = queue.write_batch(&batch).unwrap();
      assert_eq!((report.packets, report.errors), (2, 1), "{report:?}");
      assert_eq!(report.bytes, (one.len() + two.len()) as u64);
      let e = report.last_error.unwrap();
      assert_eq!(e.kind(), ErrorKind::InvalidPacket, "{e}");
      assert_eq!(e.errno(), Some(errno::EINVAL));
      assert!(
        e.message().contains("packet 1") && e.message().contains("tk-wr"),
        "{e}"
      );
      let mut buf = [0u8; 64];
      for want in [&b"one"[..], b"two"] {
        let (n, from) = sock
          .recv_from(&mut buf)
          .expect("datagram written to the device did not arrive");
        assert_eq!(&buf[..n], want);
        assert_eq!(from, "10.78.0.2:5555".parse().unwrap());
      }
    });
  }

  // ---- Offload: two namespaces joined by a forwarder, the way the benchmark and ava tests run ----

  use crate::config::{Offload, RouteSpec as Route};
  use std::fs::File;
  use std::io::{Read, Write};
  use std::net::{TcpListener, TcpStream};
  use std::os::fd::AsRawFd;

  /// Two TUN devices in two namespaces: `a` (10.50.0.1/24) in the caller's, `b` (10.60.0.1/24) in a fresh one,
  /// each with a route to the other's network, and the threads that forward between them.
  struct Link {
    a: Arc<TunQueue>,
    b: Arc<TunQueue>,
    ns_b: File,
    forwarders: Vec<thread::JoinHandle<()>>,
    _controls: (LinuxControl, LinuxControl),
  }

  /// A device with the given addresses and a direct route to each of `routes`.
  fn offload_cfg(name: &str, addrs: &[&str], routes: &[&str], offload: Option<Offload>) -> DeviceConfig {
    DeviceConfig {
      name: Some(name.into()),
      addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
      routes: routes
        .iter()
        .map(|r| Route {
          to: r.parse().unwrap(),
          via: None,
          metric: None,
          table: None,
        })
        .collect(),
      offload,
      ..Default::default()
    }
  }

  type Side = (&'static [&'static str], &'static [&'static str]);
  const A_SIDE: Side = (&["10.50.0.1/24", "fd50::1/64"], &["10.60.0.0/24", "fd60::/64"]);
  const B_SIDE: Side = (&["10.60.0.1/24", "fd60::1/64"], &["10.50.0.0/24", "fd50::/64"]);

  impl Link {
    /// Opens both devices (`tweak` runs on the queues before forwarding starts) and forwards with batches of at
    /// most `batch_packets` packets in slabs of `slab_bytes` plus one frame.
    fn open(
      offload: Option<Offload>,
      batch_packets: usize,
      slab_bytes: usize,
      tweak: impl FnOnce(&TunQueue, &TunQueue),
    ) -> Link {
      let ns_b = thread::spawn(|| {
        sys::unshare_netns().unwrap();
        File::open("/proc/thread-self/ns/net").unwrap()
      })
      .join()
      .unwrap();
      let (mut qa, ca) = super::super::create(&offload_cfg("tkoa", A_SIDE.0, A_SIDE.1, offload)).unwrap();
      let (mut qb, cb) = run_in_netns(ns_b.as_fd(), "test", || {
        super::super::create(&offload_cfg("tkob", B_SIDE.0, B_SIDE.1, offload))
      })
      .unwrap();
      let (a, b) = (qa.remove(0), qb.remove(0));
      tweak(&a, &b);
      let (a, b) = (Arc::new(a), Arc::new(b));
      let forward = |from: Arc<TunQueue>, to: Arc<TunQueue>| {
        thread::spawn(move || {
          let mut batch = Batch::with_capacity(slab_bytes + from.max_frame(), batch_packets);
          loop {
            batch.clear();
            if from.read_batch(&mut batch, batch_packets).is_err() {
              break;
            }
            assert!(batch.len() <= batch_packets, "{} > {batch_packets}", batch.len());
            match to.write_batch(&batch) {
              Ok(r) => assert_eq!(r.errors, 0, "{:?}", r.last_error),
              Err(_) => break,
            }
          }
        })
      };
      let forwarders = vec![forward(a.clone(), b.clone()), forward(b.clone(), a.clone())];
      Link {
        a,
        b,
        ns_b,
        forwarders,
        _controls: (ca, cb),
      }
    }

    fn stop(mut self) {
      self.a.wake();
      self.b.wake();
      for t in self.forwarders.drain(..) {
        t.join().expect("a forwarder panicked");
      }
    }
  }

  fn counter(q: &TunQueue, name: &str) -> u64 {
    q.counters()
      .iter()
      .find(|(n, _)| *n == name)
      .unwrap_or_else(|| panic!("no counter {name}"))
      .1
  }

  /// Deterministic test data.
  fn fill(buf: &mut [u8], state: &mut u64) {
    for b in buf {
      *state ^= *state << 13;
      *state ^= *state >> 7;
      *state ^= *state << 17;
      *b = *state as u8;
    }
  }

  /// Sends `total` bytes of deterministic data over TCP (IPv4 or IPv6) from namespace A to a receiver in B through
  /// `link`. The receiver generates the same stream and compares every byte; returns how many arrived, all equal.
  fn tcp_transfer_to(link: &Link, total: usize, v6: bool) -> usize {
    const SEED: u64 = 0x9e37_79b9_7f4a_7c15;
    let listener = run_in_netns(link.ns_b.as_fd(), "test", || {
      TcpListener::bind(if v6 { "[fd60::1]:0" } else { "10.60.0.1:0" })
        .map_err(|e| Error::os("bind", &e, "test listener"))
    })
    .unwrap();
    let addr = listener.local_addr().unwrap();
    let receiver = thread::spawn(move || {
      let (mut conn, _) = listener.accept().unwrap();
      conn.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
      let mut buf = vec![0u8; 256 * 1024];
      let mut want = vec![0u8; 256 * 1024];
      let mut state = SEED;
      let mut n = 0;
      loop {
        match conn.read(&mut buf) {
          Ok(0) => break,
          Ok(k) => {
            fill(&mut want[..k], &mut state);
            if let Some(i) = (0..k).find(|&i| buf[i] != want[i]) {
              panic!(
                "byte {} differs: got {:#04x}, sent {:#04x}",
                n + i,
                buf[i],
                want[i]
              );
            }
            n += k;
          }
          Err(e) => panic!("receiver after {n} bytes: {e}"),
        }
      }
      n
    });
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    conn.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut chunk = vec![0u8; 1 << 20];
    let mut state = SEED;
    let mut sent = 0;
    while sent < total {
      let k = chunk.len().min(total - sent);
      fill(&mut chunk[..k], &mut state);
      conn.write_all(&chunk[..k]).unwrap();
      sent += k;
    }
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    receiver
      .join()
      .expect("the receiver found a difference or timed out")
  }

  fn tcp_transfer(link: &Link, total: usize) -> usize {
    tcp_transfer_to(link, total, false)
  }

  const TCP_OFFLOAD: Offload = Offload {
    tcp: true,
    udp: true,
    raw: false,
  };

  #[test]
  fn linux_offload_tcp_through_a_splitting_and_coalescing_forwarder_is_byte_exact() {
    in_netns("linux_offload_tcp_split_coalesce", || {
      let link = Link::open(Some(TCP_OFFLOAD), 256, 256 * 1024, |_, _| {});
      assert_eq!(link.a.max_frame(), TUN_MAX_FRAME);
      assert_eq!(tcp_transfer(&link, 16 << 20), 16 << 20);
      let v4 = counter(&link.a, "offloadSuperPacketsRead");
      assert_eq!(tcp_transfer_to(&link, 8 << 20, true), 8 << 20);
      assert!(
        counter(&link.a, "offloadSuperPacketsRead") > v4,
        "no TCPv6 super-packet"
      );
      let (a, b) = (link.a.clone(), link.b.clone());
      link.stop();
      eprintln!("a: {:?}\nb: {:?}", a.counters(), b.counters());
      assert_eq!((counter(&a, "offloadTcp"), counter(&b, "offloadTcp")), (1, 1));
      // The sender's kernel handed super-packets to a; they were split, forwarded, and coalesced again into b.
      let read = counter(&a, "offloadSuperPacketsRead");
      assert!(read > 0, "{:?}", a.counters());
      assert!(counter(&a, "offloadSegmentsRead") > read);
      assert!(
        counter(&b, "offloadSuperPacketsWritten") > 0,
        "{:?}",
        b.counters()
      );
      assert!(counter(&b, "offloadSegmentsCoalesced") > counter(&b, "offloadSuperPacketsWritten"));
      for q in [&a, &b] {
        assert_eq!(counter(q, "offloadFallbacks"), 0);
        assert_eq!(counter(q, "offloadReadErrors"), 0);
        assert_eq!(q.take_notice(), None);
      }
    });
  }

  #[test]
  fn linux_offload_write_fallback_loses_nothing_and_says_so_once() {
    in_netns("linux_offload_write_fallback", || {
      // Small batches in small slabs: super-packets also go through the overflow and left-over paths.
      let link = Link::open(Some(TCP_OFFLOAD), 16, 16 * 1024, |_, b| {
        b.fail_next_offload_write()
      });
      assert_eq!(tcp_transfer(&link, 8 << 20), 8 << 20);
      let (a, b) = (link.a.clone(), link.b.clone());
      link.stop();
      assert!(counter(&a, "offloadSuperPacketsRead") > 0, "{:?}", a.counters());
      eprintln!("a: {:?}\nb: {:?}", a.counters(), b.counters());
      assert_eq!(counter(&b, "offloadFallbacks"), 1);
      // The refused write was the first; after it nothing is coalesced any more.
      assert_eq!(counter(&b, "offloadSuperPacketsWritten"), 0, "{:?}", b.counters());
      let notice = b.take_notice().expect("a notice about the fallback");
      assert!(
        notice.starts_with("offload: ") && notice.contains("refused") && notice.contains("os error 22"),
        "{notice}"
      );
      assert_eq!(b.take_notice(), None, "the notice comes once");
      assert_eq!((counter(&a, "offloadFallbacks"), a.take_notice()), (0, None));
    });
  }

  #[test]
  fn linux_offload_raw_frames_pass_through_a_forwarder() {
    in_netns("linux_offload_raw", || {
      let raw = Offload {
        raw: true,
        ..TCP_OFFLOAD
      };
      let link = Link::open(Some(raw), 256, 256 * 1024, |a, _| {
        assert_eq!(a.max_frame(), TUN_MAX_FRAME + VNET_HDR_LEN);
      });
      assert_eq!(tcp_transfer(&link, 8 << 20), 8 << 20);
      let (a, b) = (link.a.clone(), link.b.clone());
      link.stop();
      assert!(counter(&a, "offloadSuperPacketsRead") > 0, "{:?}", a.counters());
      assert!(
        counter(&b, "offloadSuperPacketsWritten") > 0,
        "{:?}",
        b.counters()
      );
      // Raw mode neither splits nor coalesces.
      assert_eq!(counter(&a, "offloadSegmentsRead"), 0);
      assert_eq!(counter(&b, "offloadSegmentsCoalesced"), 0);
    });
  }

  #[test]
  fn linux_offload_raw_write_fallback_resends_the_segments() {
    in_netns("linux_offload_raw_fallback", || {
      let raw = Offload {
        raw: true,
        ..TCP_OFFLOAD
      };
      let link = Link::open(Some(raw), 64, 128 * 1024, |_, b| b.fail_next_offload_write());
      assert_eq!(tcp_transfer(&link, 4 << 20), 4 << 20);
      let b = link.b.clone();
      link.stop();
      assert_eq!(counter(&b, "offloadFallbacks"), 1);
      assert!(b.take_notice().is_some());
    });
  }

  #[test]
  fn linux_offload_uso_datagrams_are_split_and_coalesced() {
    in_netns("linux_offload_uso", || {
      let link = Link::open(Some(TCP_OFFLOAD), 256, 256 * 1024, |_, _| {});
      if counter(&link.a, "offloadUdp") == 0 {
        eprintln!("skipping the USO part: this kernel has no UDP segmentation offload (Linux 6.2+)");
        link.stop();
        return;
      }
      let rx = run_in_netns(link.ns_b.as_fd(), "test", || {
        UdpSocket::bind("10.60.0.1:0").map_err(|e| Error::os("bind", &e, "test socket"))
      })
      .unwrap();
      rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
      let tx = UdpSocket::bind("10.50.0.1:0").unwrap();
      sys::set_udp_segment(tx.as_fd(), 1200).unwrap();
      let mut state = 7u64;
      let mut want = Vec::new();
      for _ in 0..8 {
        // 10 datagrams of 1200 bytes and one of 500 per send.
        let mut buf = vec![0u8; 12_500];
        fill(&mut buf, &mut state);
        tx.send_to(&buf, rx.local_addr().unwrap()).unwrap();
        want.extend(buf.chunks(1200).map(|c| c.to_vec()));
      }
      let mut got = Vec::new();
      let mut buf = [0u8; 2048];
      while got.len() < want.len() {
        let (n, _) = rx
          .recv_from(&mut buf)
          .unwrap_or_else(|e| panic!("after {} of {} datagrams: {e}", got.len(), want.len()));
        got.push(buf[..n].to_vec());
      }
      assert_eq!(got, want);
      let (a, b) = (link.a.clone(), link.b.clone());
      link.stop();
      assert!(counter(&a, "offloadSuperPacketsRead") >= 8, "{:?}", a.counters());
      assert!(counter(&a, "offloadSegmentsRead") >= 88, "{:?}", a.counters());
      assert!(
        counter(&b, "offloadSuperPacketsWritten") > 0,
        "{:?}",
        b.counters()
      );
    });
  }

  #[test]
  fn linux_offload_plain_packets_both_ways_and_adopted_vnet_descriptors() {
    in_netns("linux_offload_plain_and_adopted", || {
      // An adopted descriptor with virtio-net headers runs in split mode: plain packets in and out.
      let fd = tun::open_clone_device().unwrap();
      tun::set_iff(
        fd.as_fd(),
        "tk-vfd",
        tun::IFF_TUN | tun::IFF_NO_PI | tun::IFF_VNET_HDR,
      )
      .unwrap();
      tun::set_vnet_hdr_size(fd.as_fd(), 12).unwrap();
      let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
      let e = super::super::from_fd(raw, Mode::Tun).err().unwrap();
      assert!(e.message().contains("12-byte virtio-net header"), "{e}");
      // Refused: the descriptor is still the caller's.
      let fd = sys::adopt_raw_fd(raw).unwrap();
      tun::set_vnet_hdr_size(fd.as_fd(), 10).unwrap();
      // TUNSETOFFLOAD with checksum offload: locally sent packets arrive with NEEDS_CSUM, which the reader completes.
      tun::set_offload(fd.as_fd(), tun::TUN_F_CSUM).unwrap();
      let opened = super::super::from_fd(std::os::fd::IntoRawFd::into_raw_fd(fd), Mode::Tun).unwrap();
      opened
        .control
        .add_address(&"10.79.0.1/24".parse().unwrap())
        .unwrap();
      opened.control.set_up(true).unwrap();
      let queue: Arc<dyn Queue> = Arc::from(opened.queues.into_iter().next().unwrap());
      let _stop = watchdog(&queue, Duration::from_secs(10));
      assert!(queue.counters().contains(&("offloadTcp", 1)));

      let sock = UdpSocket::bind("10.79.0.1:0").unwrap();
      sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
      let port = sock.local_addr().unwrap().port();
      let mut out = Batch::default();
      out.push(&ipv4_udp([10, 79, 0, 2], [10, 79, 0, 1], 5555, port, b"in"));
      let report = queue.write_batch(&out).unwrap();
      assert_eq!((report.packets, report.errors), (1, 0), "{report:?}");
      assert_eq!(report.bytes, out.data.len() as u64);
      let mut buf = [0u8; 64];
      let (n, _) = sock
        .recv_from(&mut buf)
        .expect("the written packet did not arrive");
      assert_eq!(&buf[..n], b"in");

      sock.send_to(b"out", "10.79.0.2:4242").unwrap();
      let mut batch = Batch::with_capacity(2 * TUN_MAX_FRAME, 8);
      let mut found = None;
      for _ in 0..20 {
        batch.clear();
        queue.read_batch(&mut batch, 8).unwrap();
        if let Some(p) = batch.iter().find(|p| udp_payload_to(p, [10, 79, 0, 2]).is_some()) {
          found = Some(p.to_vec());
          break;
        }
      }
      let p = found.expect("the UDP datagram was not read");
      assert_eq!(udp_payload_to(&p, [10, 79, 0, 2]), Some(&b"out"[..]));
      // A complete, valid UDP checksum, though with TUN_F_CSUM the kernel left it partial.
      assert_ne!(&p[26..28], &[0, 0], "no UDP checksum: {p:02x?}");
      assert!(crate::packet::ip::checksums_valid(&p).unwrap(), "{p:02x?}");
    });
  }

  #[test]
  fn linux_offload_multi_queue_descriptors_all_carry_headers() {
    in_netns("linux_offload_multi_queue", || {
      let (queues, _control) = super::super::create(&DeviceConfig {
        queues: Some(3),
        offload: Some(TCP_OFFLOAD),
        ..offload_cfg("tk-omq", &["10.81.0.1/24"], &["10.82.0.0/24"], None)
      })
      .unwrap();
      for q in &queues {
        let (_, flags) = tun::get_iff(q.fd().as_raw_fd()).unwrap();
        assert_ne!(flags & tun::IFF_VNET_HDR, 0, "{flags:#x}");
        assert_eq!(tun::get_vnet_hdr_size(q.fd().as_raw_fd()).unwrap(), VNET_HDR_LEN);
        assert!(q.counters().contains(&("offloadTcp", 1)));
        assert_eq!(q.take_notice(), None);
      }
      // TAP devices take offload in raw mode only; frames then carry the header too.
      let (taps, _control) = super::super::create(&DeviceConfig {
        name: Some("tk-otap".into()),
        mode: Mode::Tap,
        offload: Some(Offload {
          raw: true,
          ..TCP_OFFLOAD
        }),
        ..Default::default()
      })
      .unwrap();
      let (_, flags) = tun::get_iff(taps[0].fd().as_raw_fd()).unwrap();
      assert_eq!(
        flags & (tun::IFF_TAP | tun::IFF_VNET_HDR),
        tun::IFF_TAP | tun::IFF_VNET_HDR
      );
      assert_eq!(taps[0].max_frame(), TAP_MAX_FRAME + VNET_HDR_LEN);
      // Without offload nothing changes: no header, no counters.
      let (plain, _control) = super::super::create(&offload_cfg("tk-onone", &[], &[], None)).unwrap();
      let (_, flags) = tun::get_iff(plain[0].fd().as_raw_fd()).unwrap();
      assert_eq!(flags & tun::IFF_VNET_HDR, 0);
      assert!(plain[0].counters().is_empty());
      assert_eq!(plain[0].max_frame(), TUN_MAX_FRAME);
    });
  }
}
