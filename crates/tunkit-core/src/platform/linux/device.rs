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

/// Environment variable, read once when a queue is created, that makes the first super-packet write of the queue
/// fail with a synthetic `EINVAL`, to exercise the fallback. For tests only.
pub const TEST_FAIL_OFFLOAD_WRITE_ENV: &str = "TUNKIT_TEST_FAIL_OFFLOAD_WRITE";

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
  /// Test hook ([`TEST_FAIL_OFFLOAD_WRITE_ENV`]): the next super-packet write fails with a synthetic `EINVAL`.
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
    let fail = std::env::var_os(TEST_FAIL_OFFLOAD_WRITE_ENV).is_some_and(|v| v == "1");
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
        frame: if setup.raw { Vec::new() } else { vec![0; SCRATCH_LEN] },
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
    let wake_fd = sys::eventfd_new().map_err(|e| {
      Error::os(
        "eventfd",
        &e,
        format_args!("creating the wake-up eventfd of {name}"),
      )
    })?;
    let max_frame = match offload {
      // Raw frames carry the header; split packets are ordinary packets.
      Some(o) if o.raw => max_frame(mode) + VNET_HDR_LEN,
      _ => max_frame(mode),
    };
    Ok(TunQueue {
      fd: Arc::new(fd),
      wake_fd,
      woken: AtomicBool::new(false),
      name: name.to_string(),
      max_frame,
      offload: offload.map(|o| Box::new(Offloaded::new(o))),
    })
  }

  /// Makes the next super-packet write fail with a synthetic `EINVAL`, like [`TEST_FAIL_OFFLOAD_WRITE_ENV`] but
  /// for one queue. Tests only.
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
        // EBADFD: the descriptor is no longer attached (the device was deleted); kind_of_errno makes it Closed.
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

impl Queue for TunQueue {
  fn read_batch(&self, batch: &mut Batch, max_packets: usize) -> Result<usize> {
    let max = max_packets.max(1);
    // The caller guarantees room for one frame; make sure anyway, since a short read buffer truncates the packet.
    batch.data.reserve(self.max_frame);
    loop {
      let ready = self.wait(POLLIN, "read")?;
      let n = self.drain(batch, max)?;
      if n > 0 {
        return Ok(n);
      }
      if let Ready::Error = ready {
        // POLLERR without a read error would spin; the device is gone.
        return Err(self.closed("read"));
      }
    }
  }

  fn write_batch(&self, batch: &Batch) -> Result<WriteReport> {
    let mut report = WriteReport::default();
    for (pos, pkt) in batch.iter().enumerate() {
      loop {
        if self.woken.load(Ordering::Acquire) {
          return Err(self.closed("write"));
        }
        match sys::write_fd(self.fd.as_fd(), pkt) {
          Ok(n) => {
            report.packets += 1;
            report.bytes += n as u64;
            break;
          }
          Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
          Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            if let Ready::Error = self.wait(POLLOUT, "write")? {
              return Err(self.closed("write"));
            }
          }
          Err(e) if matches!(sys::errno_of(&e), errno::EBADF | errno::EBADFD) => {
            return Err(
              Error::os("write", &e, format_args!("writing to {}", self.name)).with_kind(ErrorKind::Closed),
            );
          }
          Err(e) => {
            report.errors += 1;
            report.last_error = Some(self.packet_error(&e, pkt.len(), pos));
            break;
          }
        }
      }
    }
    Ok(report)
  }

  fn max_frame(&self) -> usize {
    self.max_frame
  }

  fn wake(&self) {
    self.woken.store(true, Ordering::Release);
    // The counter is never read, so the eventfd stays readable and every later poll returns at once. The write
    // cannot fail short of a counter overflow, which 1 per call never reaches.
    let _ = sys::eventfd_signal(self.wake_fd.as_fd());
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
      if mtu < MIN_MTU_IPV6 && nl.addresses(i)?.iter().any(|a| !a.is_ipv4()) {
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
    self.with_link(format_args!("addAddress {addr}"), |nl, i| nl.add_address(i, addr))
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
}
