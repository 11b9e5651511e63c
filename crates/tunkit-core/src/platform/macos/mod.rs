//! The macOS backend: layer-3 `utun` devices from the `com.apple.net.utun_control` kernel control, configured with
//! interface ioctls and the routing socket.
//!
//! A utun device lives as long as the control socket that created it: [`open`] connects one (unit `N + 1` for
//! `utunN`, 0 for the next free one), and closing the queue destroys the interface. Every packet on that socket
//! carries a 4-byte address family header, which the queue adds and strips, so the ring above the backend contract
//! sees bare IP packets as on Linux.
//!
//! What macOS has no equivalent for is refused with `Unsupported` at open: TAP mode (utun is layer 3), several
//! queues, persistence, owner/group, network namespaces, and attaching to an existing device (a utun belongs to
//! the socket that created it). `txQueueLength` is a Linux kernel setting and is ignored here.

mod route;
pub mod sys;

use crate::backend::{Batch, Control, KernelStats, LinkInfo, Opened, Queue, WriteReport};
use crate::config::{self, DeviceConfig, IpCidr, Mode, RouteSpec, MIN_MTU_IPV6};
use crate::error::{Error, ErrorKind, Result};
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Mutex;
use sys::{errno, PollFd, UtunStep, POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT};

/// Largest packet a utun read returns (the largest IP packet).
pub const UTUN_MAX_FRAME: usize = 65535;
/// How long a writer waits when the interface queue is full (`ENOBUFS`) before trying again.
const FULL_QUEUE_RETRY_MS: i32 = 1;

/// Creates the utun device `cfg` describes.
///
/// Errors: `InvalidName` for a name other than `utunN`/`utun%d`; `NoDriver` without the utun control;
/// `Permission` when not root; `Busy` when `utunN` is taken; `Unsupported` for options macOS has no equivalent for.
pub fn open(cfg: &DeviceConfig) -> Result<Opened> {
  cfg.validate()?;
  check_supported(cfg)?;
  let unit = unit_of(cfg.name.as_deref())?;
  let shown = cfg.name.clone().unwrap_or_else(|| "utun%d".into());
  let (fd, name) = sys::open_utun(unit).map_err(|(step, e)| utun_error(step, &e, &shown))?;
  let index =
    sys::if_index(&name).map_err(|e| mac_error("if_nametoindex", &e, format_args!("looking up {name}")))?;
  let queue = UtunQueue::new(fd, &name)?;
  let control = MacControl::new(name.clone(), index);
  // An error from here on drops the queue, whose socket takes the interface with it.
  super::configure(cfg, &control).map_err(|e| context(e, format_args!("creating {name}")))?;
  Ok(Opened {
    queues: vec![Box::new(queue) as Box<dyn Queue>],
    control: Box::new(control) as Box<dyn Control>,
  })
}

/// Refuses the options macOS has no equivalent for, before anything is created.
fn check_supported(cfg: &DeviceConfig) -> Result<()> {
  super::refuse_linux_only(cfg, "macOS")?;
  if cfg.open_existing {
    return Err(Error::unsupported(
      "attaching to an existing device on macOS (a utun device belongs to the socket that created it)",
    ));
  }
  Ok(())
}

/// The kernel control unit for a requested name: 0 (next free) for none or `utun%d`, `N + 1` for `utunN`.
fn unit_of(name: Option<&str>) -> Result<u32> {
  let name = match name {
    None | Some("utun%d") => return Ok(0),
    Some(n) => n,
  };
  let bad = || {
    Error::new(
      ErrorKind::InvalidName,
      format!(
        "invalid interface name {name:?}: on macOS a device is named utunN (or utun%d for the next free one)"
      ),
    )
  };
  let digits = name.strip_prefix("utun").ok_or_else(bad)?;
  if digits.is_empty()
    || !digits.bytes().all(|b| b.is_ascii_digit())
    || (digits.len() > 1 && digits.starts_with('0'))
  {
    return Err(bad());
  }
  let n: u32 = digits.parse().map_err(|_| bad())?;
  n.checked_add(1).ok_or_else(bad)
}

/// The error of a failed step of opening a utun device, with the kind that step's errno means.
fn utun_error(step: UtunStep, e: &io::Error, name: &str) -> Error {
  let code = sys::errno_of(e);
  let (syscall, what) = match step {
    UtunStep::Socket => ("socket", "opening a kernel control socket".to_string()),
    UtunStep::ControlInfo => (
      "ioctl",
      "looking up the utun kernel control (CTLIOCGINFO)".to_string(),
    ),
    UtunStep::Connect => ("connect", format!("creating {name}")),
    UtunStep::InterfaceName => ("getsockopt", "reading the utun interface name".to_string()),
    UtunStep::NonBlocking => ("fcntl", "making the utun socket non-blocking".to_string()),
  };
  let err = mac_error(syscall, e, what);
  match (step, code) {
    (
      UtunStep::Socket | UtunStep::ControlInfo,
      errno::EPROTONOSUPPORT | errno::EAFNOSUPPORT | errno::ENOENT,
    ) => context(
      err.with_kind(ErrorKind::NoDriver),
      "the utun kernel control is not available",
    ),
    (UtunStep::Connect, errno::EBUSY) => context(
      err.with_kind(ErrorKind::Busy),
      format_args!("{name} is in use; use utun%d for the next free device"),
    ),
    (_, errno::EPERM | errno::EACCES) => context(
      err.with_kind(ErrorKind::Permission),
      "creating a utun device needs root",
    ),
    _ => err,
  }
}

/// The data path of a utun socket. One thread may read while another writes; [`Queue::wake`] releases both for
/// good through a socket pair they also poll.
pub struct UtunQueue {
  fd: OwnedFd,
  wake_rx: UnixStream,
  wake_tx: UnixStream,
  woken: AtomicBool,
  name: String,
}

/// What a wait on the utun socket ended with.
enum Ready {
  Io,
  /// The socket reported an error or hang-up; the next syscall says which.
  Error,
}

impl UtunQueue {
  fn new(fd: OwnedFd, name: &str) -> Result<UtunQueue> {
    let (wake_rx, wake_tx) = UnixStream::pair().map_err(|e| {
      mac_error(
        "socketpair",
        &e,
        format_args!("creating the wake-up pipe of {name}"),
      )
    })?;
    wake_tx
      .set_nonblocking(true)
      .map_err(|e| mac_error("fcntl", &e, format_args!("creating the wake-up pipe of {name}")))?;
    Ok(UtunQueue {
      fd,
      wake_rx,
      wake_tx,
      woken: AtomicBool::new(false),
      name: name.to_string(),
    })
  }

  fn closed(&self, op: &str) -> Error {
    Error::closed(&format!("{op} on {}", self.name))
  }

  /// Sleeps `ms` milliseconds, or until the queue is woken (then `Closed`).
  fn pause(&self, ms: i32, op: &str) -> Result<()> {
    let mut fds = [PollFd::new(self.wake_rx.as_fd(), POLLIN)];
    match sys::poll_fds(&mut fds, ms) {
      Ok(_) => {}
      Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
      Err(e) => return Err(mac_error("poll", &e, format_args!("waiting for {}", self.name))),
    }
    if self.woken.load(Ordering::Acquire) {
      return Err(self.closed(op));
    }
    Ok(())
  }

  /// Waits until the socket has `events` or the queue is woken (then `Closed`).
  fn wait(&self, events: i16, op: &str) -> Result<Ready> {
    loop {
      if self.woken.load(Ordering::Acquire) {
        return Err(self.closed(op));
      }
      let mut fds = [
        PollFd::new(self.fd.as_fd(), events),
        PollFd::new(self.wake_rx.as_fd(), POLLIN),
      ];
      match sys::poll_fds(&mut fds, -1) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
        Err(e) => return Err(mac_error("poll", &e, format_args!("waiting for {}", self.name))),
      }
      if fds[1].revents() != 0 || self.woken.load(Ordering::Acquire) {
        return Err(self.closed(op));
      }
      let r = fds[0].revents();
      if r & (POLLERR | POLLHUP | POLLNVAL) != 0 {
        return Ok(Ready::Error);
      }
      if r & events != 0 {
        return Ok(Ready::Io);
      }
    }
  }
}

impl Queue for UtunQueue {
  fn read_batch(&self, batch: &mut Batch, max_packets: usize) -> Result<usize> {
    let max = max_packets.max(1);
    batch.data.reserve(UTUN_MAX_FRAME);
    loop {
      let ready = self.wait(POLLIN, "read")?;
      let mut n = 0;
      while n < max && batch.data.capacity() - batch.data.len() >= UTUN_MAX_FRAME {
        match sys::utun_read(self.fd.as_fd(), &mut batch.data) {
          // A datagram with nothing after the 4-byte header carries no packet.
          Ok(0) => {}
          Ok(len) => {
            batch.lens.push(len as u32);
            n += 1;
          }
          Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
          Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
          Err(_) if n > 0 => break,
          Err(e) => {
            let err = mac_error("readv", &e, format_args!("reading from {}", self.name));
            return Err(if sys::errno_of(&e) == errno::EBADF {
              err.with_kind(ErrorKind::Closed)
            } else {
              err
            });
          }
        }
      }
      if n > 0 {
        return Ok(n);
      }
      if let Ready::Error = ready {
        return Err(self.closed("read"));
      }
    }
  }

  fn write_batch(&self, batch: &Batch) -> Result<WriteReport> {
    let mut report = WriteReport::default();
    for (pos, pkt) in batch.iter().enumerate() {
      if let Err(e) = check_packet(pkt) {
        report.errors += 1;
        report.last_error = Some(context(e, format_args!("writing packet {pos} to {}", self.name)));
        continue;
      }
      let family = route::family_of_version(pkt[0] >> 4);
      loop {
        if self.woken.load(Ordering::Acquire) {
          return Err(self.closed("write"));
        }
        match sys::utun_write(self.fd.as_fd(), family, pkt) {
          Ok(_) => {
            report.packets += 1;
            report.bytes += pkt.len() as u64;
            break;
          }
          Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
          // The socket buffer is full: wait until it has room.
          Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            if let Ready::Error = self.wait(POLLOUT, "write")? {
              return Err(self.closed("write"));
            }
          }
          // The interface's queue is full, which poll does not report: retry shortly (at once on wake).
          Err(e) if sys::errno_of(&e) == errno::ENOBUFS => self.pause(FULL_QUEUE_RETRY_MS, "write")?,
          Err(e) if sys::errno_of(&e) == errno::EBADF => return Err(self.closed("write")),
          Err(e) => {
            let err = mac_error(
              "writev",
              &e,
              format_args!("writing packet {pos} ({} bytes) to {}", pkt.len(), self.name),
            );
            report.errors += 1;
            report.last_error = Some(match sys::errno_of(&e) {
              errno::EINVAL => err.with_kind(ErrorKind::InvalidPacket),
              errno::EMSGSIZE => err.with_kind(ErrorKind::PacketTooLarge),
              _ => err,
            });
            break;
          }
        }
      }
    }
    Ok(report)
  }

  fn max_frame(&self) -> usize {
    UTUN_MAX_FRAME
  }

  fn wake(&self) {
    self.woken.store(true, Ordering::Release);
    // One byte makes the other end readable for good (it is never read). A full buffer means it already is.
    let _ = sys::write_fd(self.wake_tx.as_fd(), &[1]);
  }
}

/// Refuses what the Linux kernel refuses on a TUN device (see [`crate::packet::check_write`]).
fn check_packet(pkt: &[u8]) -> Result<()> {
  crate::packet::check_write(pkt, Mode::Tun, UTUN_MAX_FRAME)
}

/// Configuration of one utun interface by name: ioctls on datagram sockets, routes through the routing socket.
pub struct MacControl {
  name: String,
  index: u32,
  /// Sequence numbers of routing messages.
  seq: AtomicI32,
  /// Serializes configuration changes (read-modify-write of the flags, address plus route).
  lock: Mutex<()>,
}

impl MacControl {
  fn new(name: String, index: u32) -> MacControl {
    MacControl {
      name,
      index,
      seq: AtomicI32::new(1),
      lock: Mutex::new(()),
    }
  }

  /// Runs `f` under the control's lock with a datagram socket of the family; errors say `"{op} on {name}: …"`.
  fn with_socket<T>(
    &self,
    op: impl fmt::Display,
    v6: bool,
    f: impl FnOnce(&OwnedFd) -> Result<T>,
  ) -> Result<T> {
    let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
    let sock = sys::inet_socket(v6).map_err(|e| mac_error("socket", &e, "opening a configuration socket"));
    sock
      .and_then(|s| f(&s))
      .map_err(|e| context(e, format_args!("{op} on {}", self.name)))
  }

  /// Sends one routing message for `route` through this interface.
  fn route(&self, ty: u8, route: &RouteSpec) -> Result<()> {
    let msg = route::message(ty, self.seq.fetch_add(1, Ordering::Relaxed), self.index, route);
    let sock = sys::route_socket().map_err(|e| mac_error("socket", &e, "opening a routing socket"))?;
    let syscall = if ty == route::RTM_ADD {
      "RTM_ADD"
    } else {
      "RTM_DELETE"
    };
    // The kernel answers a bad request on the write itself (EEXIST, ESRCH for a missing route, ...).
    sys::write_fd(sock.as_fd(), &msg)
      .map(|_| ())
      .map_err(|e| mac_error("write", &e, syscall))
  }

  /// The on-link route that Linux adds for an address's prefix, which a point-to-point utun does not get.
  fn prefix_route(addr: &IpCidr) -> Option<RouteSpec> {
    let full = if addr.is_ipv4() { 32 } else { 128 };
    (addr.peer.is_none() && addr.prefix < full).then(|| RouteSpec {
      to: IpCidr {
        addr: addr.network(),
        prefix: addr.prefix,
        peer: None,
      },
      via: None,
      metric: None,
      table: None,
    })
  }

  fn check_route(route: &RouteSpec) -> Result<()> {
    route.validate()?;
    if route.table.is_some() {
      return Err(Error::unsupported("a routing table id on macOS"));
    }
    if route.metric.is_some() {
      return Err(Error::unsupported("a route metric on macOS"));
    }
    Ok(())
  }
}

impl Control for MacControl {
  fn name(&self) -> String {
    self.name.clone()
  }

  fn index(&self) -> u32 {
    self.index
  }

  fn link(&self) -> Result<LinkInfo> {
    self.with_socket("reading the link state", false, |s| {
      let mtu = sys::get_mtu(s.as_fd(), &self.name).map_err(|e| mac_error("ioctl", &e, "SIOCGIFMTU"))?;
      let flags =
        sys::get_flags(s.as_fd(), &self.name).map_err(|e| mac_error("ioctl", &e, "SIOCGIFFLAGS"))?;
      let state = sys::interface_state(&self.name).map_err(|e| mac_error("getifaddrs", &e, "getifaddrs"))?;
      let stats = state
        .link
        .map(|d| KernelStats {
          rx_packets: d.ifi_ipackets.into(),
          tx_packets: d.ifi_opackets.into(),
          rx_bytes: d.ifi_ibytes.into(),
          tx_bytes: d.ifi_obytes.into(),
          rx_dropped: d.ifi_iqdrops.into(),
          tx_dropped: 0,
          rx_errors: d.ifi_ierrors.into(),
          tx_errors: d.ifi_oerrors.into(),
        })
        .unwrap_or_default();
      Ok(LinkInfo {
        name: self.name.clone(),
        index: self.index,
        mtu,
        up: flags & sys::IFF_UP != 0,
        tx_queue_len: 0,
        mac: None,
        stats,
      })
    })
  }

  fn set_mtu(&self, mtu: u32) -> Result<()> {
    config::validate_mtu(mtu, false)
      .map_err(|e| context(e, format_args!("setMtu {mtu} on {}", self.name)))?;
    if mtu < MIN_MTU_IPV6 && self.addresses()?.iter().any(|a| !a.is_ipv4()) {
      return Err(Error::new(
        ErrorKind::InvalidMtu,
        format!(
          "setMtu {mtu} on {}: below {MIN_MTU_IPV6}, the minimum for the IPv6 addresses of the link",
          self.name
        ),
      ));
    }
    self.with_socket(format_args!("setMtu {mtu}"), false, |s| {
      sys::set_mtu(s.as_fd(), &self.name, mtu).map_err(|e| {
        let err = mac_error("ioctl", &e, "SIOCSIFMTU");
        if sys::errno_of(&e) == errno::EINVAL {
          err.with_kind(ErrorKind::InvalidMtu)
        } else {
          err
        }
      })
    })
  }

  fn set_up(&self, up: bool) -> Result<()> {
    let op = if up {
      "setting the link up"
    } else {
      "setting the link down"
    };
    self.with_socket(op, false, |s| {
      let flags =
        sys::get_flags(s.as_fd(), &self.name).map_err(|e| mac_error("ioctl", &e, "SIOCGIFFLAGS"))?;
      let flags = if up {
        flags | sys::IFF_UP
      } else {
        flags & !sys::IFF_UP
      };
      sys::set_flags(s.as_fd(), &self.name, flags).map_err(|e| mac_error("ioctl", &e, "SIOCSIFFLAGS"))
    })
  }

  fn add_address(&self, addr: &IpCidr) -> Result<()> {
    self.with_socket(format_args!("addAddress {addr}"), !addr.is_ipv4(), |s| {
      // utun is point-to-point: without a peer, an IPv4 address is its own destination.
      let r = match (addr.addr, addr.peer) {
        (IpAddr::V4(a), peer) => {
          let dst = match peer {
            Some(IpAddr::V4(p)) => p,
            _ => a,
          };
          sys::add_addr4(s.as_fd(), &self.name, a, route::mask_v4(addr.prefix), dst)
            .map_err(|e| mac_error("ioctl", &e, "SIOCAIFADDR"))
        }
        (IpAddr::V6(a), peer) => {
          let dst = match peer {
            Some(IpAddr::V6(p)) => Some(p),
            _ => None,
          };
          sys::add_addr6(s.as_fd(), &self.name, a, route::mask_v6(addr.prefix), dst)
            .map_err(|e| mac_error("ioctl", &e, "SIOCAIFADDR_IN6"))
        }
      };
      r?;
      if let Some(prefix) = MacControl::prefix_route(addr) {
        match self.route(route::RTM_ADD, &prefix) {
          Ok(()) => {}
          Err(e) if e.errno() == Some(errno::EEXIST) => {}
          Err(e) => return Err(context(e, format_args!("adding the route to {}", prefix.to))),
        }
      }
      Ok(())
    })
  }

  fn remove_address(&self, addr: &IpCidr) -> Result<()> {
    self.with_socket(format_args!("removeAddress {addr}"), !addr.is_ipv4(), |s| {
      let r = match addr.addr {
        IpAddr::V4(a) => {
          sys::del_addr4(s.as_fd(), &self.name, a).map_err(|e| mac_error("ioctl", &e, "SIOCDIFADDR"))
        }
        IpAddr::V6(a) => {
          sys::del_addr6(s.as_fd(), &self.name, a).map_err(|e| mac_error("ioctl", &e, "SIOCDIFADDR_IN6"))
        }
      };
      r.map_err(|e| {
        if e.errno() == Some(errno::EADDRNOTAVAIL) {
          e.with_kind(ErrorKind::NotFound)
        } else {
          e
        }
      })?;
      if let Some(prefix) = MacControl::prefix_route(addr) {
        // Gone already when the kernel removed it with the address.
        let _ = self.route(route::RTM_DELETE, &prefix);
      }
      Ok(())
    })
  }

  fn addresses(&self) -> Result<Vec<IpCidr>> {
    let state = sys::interface_state(&self.name).map_err(|e| {
      mac_error(
        "getifaddrs",
        &e,
        format_args!("listing addresses on {}", self.name),
      )
    })?;
    Ok(
      state
        .addrs
        .iter()
        .map(|a| {
          let full = if a.addr.is_ipv4() { 32 } else { 128 };
          let peer = a
            .dstaddr
            .filter(|d| a.flags & sys::IFF_POINTOPOINT != 0 && *d != a.addr && !d.is_unspecified());
          IpCidr {
            addr: a.addr,
            prefix: a.netmask.map(route::mask_prefix).unwrap_or(full),
            peer,
          }
        })
        .collect(),
    )
  }

  fn add_route(&self, route: &RouteSpec) -> Result<()> {
    let op = format!("addRoute {}", route_label(route));
    MacControl::check_route(route)
      .and_then(|()| self.route(route::RTM_ADD, route))
      .map_err(|e| context(e, format_args!("{op} on {}", self.name)))
  }

  fn remove_route(&self, route: &RouteSpec) -> Result<()> {
    let op = format!("removeRoute {}", route_label(route));
    MacControl::check_route(route)
      .and_then(|()| self.route(route::RTM_DELETE, route))
      .map_err(|e| context(e, format_args!("{op} on {}", self.name)))
  }
}

/// `"10.9.0.0/16 via 10.0.0.1"`, for messages.
fn route_label(r: &RouteSpec) -> String {
  match r.via {
    Some(via) => format!("{} via {via}", r.to),
    None => r.to.to_string(),
  }
}

/// The kind of a macOS errno for device operations (BSD numbering; the core's default mapping is Linux's).
pub fn kind_of_errno(code: i32) -> ErrorKind {
  match code {
    errno::EPERM | errno::EACCES => ErrorKind::Permission,
    errno::ENOENT | errno::ENXIO | errno::ENODEV | errno::ESRCH => ErrorKind::NotFound,
    errno::EBUSY => ErrorKind::Busy,
    errno::EEXIST => ErrorKind::AlreadyExists,
    errno::EINVAL => ErrorKind::InvalidArgument,
    errno::EBADF => ErrorKind::Closed,
    errno::ENOTSUP | errno::EOPNOTSUPP => ErrorKind::Unsupported,
    errno::EADDRNOTAVAIL => ErrorKind::InvalidAddress,
    errno::ENETUNREACH | errno::EHOSTUNREACH => ErrorKind::Unreachable,
    _ => ErrorKind::Os,
  }
}

/// An error from a failed syscall, with the kind derived from the macOS errno.
fn mac_error(syscall: &'static str, err: &io::Error, ctx: impl fmt::Display) -> Error {
  let kind = err.raw_os_error().map(kind_of_errno).unwrap_or(ErrorKind::Os);
  Error::os(syscall, err, ctx).with_kind(kind)
}

/// Prefixes an error's message with `ctx`, keeping its kind, errno and syscall.
fn context(e: Error, ctx: impl fmt::Display) -> Error {
  let kind = e.kind();
  match (e.errno(), e.syscall()) {
    (Some(n), Some(syscall)) => {
      // `Error::os` appends the OS text itself; drop it from the inner message so it is not repeated.
      let os = io::Error::from_raw_os_error(n);
      let suffix = format!(": {os}");
      let inner = e.message().strip_suffix(suffix.as_str()).unwrap_or(e.message());
      Error::os(syscall, &os, format_args!("{ctx}: {inner}")).with_kind(kind)
    }
    _ => Error::new(kind, format!("{ctx}: {}", e.message())),
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use std::time::Duration;

  #[test]
  fn macos_unit_numbers() {
    assert_eq!(unit_of(None).unwrap(), 0);
    assert_eq!(unit_of(Some("utun%d")).unwrap(), 0);
    assert_eq!(unit_of(Some("utun0")).unwrap(), 1);
    assert_eq!(unit_of(Some("utun12")).unwrap(), 13);
    for bad in ["tun0", "utun", "utun01", "utunx", "utun-1", "utun4294967295"] {
      assert_eq!(
        unit_of(Some(bad)).unwrap_err().kind(),
        ErrorKind::InvalidName,
        "{bad}"
      );
    }
  }

  #[test]
  fn macos_masks_and_packets() {
    assert_eq!(route::prefix_mask(false, 24).to_string(), "255.255.255.0");
    assert_eq!(route::prefix_mask(false, 0).to_string(), "0.0.0.0");
    assert_eq!(route::prefix_mask(true, 64).to_string(), "ffff:ffff:ffff:ffff::");
    for p in [0u8, 1, 24, 32] {
      assert_eq!(route::mask_prefix(route::prefix_mask(false, p)), p);
    }
    assert_eq!(check_packet(&[]).unwrap_err().kind(), ErrorKind::InvalidPacket);
    assert_eq!(
      check_packet(&[0x75, 0]).unwrap_err().kind(),
      ErrorKind::InvalidPacket
    );
    assert!(check_packet(&[0x45, 0]).is_ok() && check_packet(&[0x60, 0]).is_ok());
  }

  #[test]
  fn macos_route_messages() {
    let r = RouteSpec {
      to: "10.9.0.0/16".parse().unwrap(),
      via: None,
      metric: None,
      table: None,
    };
    let m = route::message(route::RTM_ADD, 7, 12, &r);
    // header + dst sockaddr_in + gateway sockaddr_dl + netmask sockaddr_in
    assert_eq!(m.len(), sys::RT_MSGHDR_SIZE + 16 + sys::SOCKADDR_DL_SIZE + 16);
    assert_eq!(u16::from_ne_bytes([m[0], m[1]]) as usize, m.len());
    assert_eq!((m[2], m[3]), (5, route::RTM_ADD));
    let body = &m[sys::RT_MSGHDR_SIZE..];
    assert_eq!(&body[..8], &[16, sys::AF_INET, 0, 0, 10, 9, 0, 0]);
    assert_eq!(&body[16..20], &[20, sys::AF_LINK, 12, 0]);
    assert_eq!(&body[36 + 4..36 + 8], &[255, 255, 0, 0]);
  }

  /// A real device: needs root (CI runs it with sudo); skipped otherwise unless TUNKIT_REQUIRE_DEVICE=1.
  #[test]
  fn macos_utun_round_trip() {
    let cfg = DeviceConfig {
      addresses: vec!["10.79.0.1/24".parse().unwrap()],
      ..Default::default()
    };
    let opened = match open(&cfg) {
      Ok(o) => o,
      Err(e)
        if e.kind() == ErrorKind::Permission
          && std::env::var("TUNKIT_REQUIRE_DEVICE").as_deref() != Ok("1") =>
      {
        eprintln!("skipping macos_utun_round_trip: {e}");
        return;
      }
      Err(e) => panic!("{e}"),
    };
    let name = opened.control.name();
    assert!(name.starts_with("utun"), "{name}");
    let link = opened.control.link().unwrap();
    assert!(link.up && link.index > 0, "{link:?}");
    assert!(opened
      .control
      .addresses()
      .unwrap()
      .iter()
      .any(|a| a.addr.to_string() == "10.79.0.1" && a.prefix == 24));
    let queue: std::sync::Arc<dyn Queue> = std::sync::Arc::from(opened.queues.into_iter().next().unwrap());
    // Never block for good: wake the queue if the test has not finished in time.
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let watchdog = {
      let queue = queue.clone();
      std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(Duration::from_secs(10))
        {
          queue.wake();
        }
      })
    };
    let sock = std::net::UdpSocket::bind("10.79.0.1:0").unwrap();
    sock.send_to(b"tunkit", "10.79.0.2:4242").unwrap();
    let mut batch = Batch::with_capacity(2 * UTUN_MAX_FRAME, 8);
    let mut found = false;
    for _ in 0..20 {
      batch.clear();
      queue.read_batch(&mut batch, 8).unwrap();
      if batch
        .iter()
        .any(|p| p.len() >= 28 && p[0] >> 4 == 4 && p[16..20] == [10, 79, 0, 2] && &p[28..] == b"tunkit")
      {
        found = true;
        break;
      }
    }
    assert!(found, "the UDP datagram did not come out of {name}");
    drop(stop);
    watchdog.join().unwrap();
    queue.wake();
    assert_eq!(
      queue.read_batch(&mut batch, 8).unwrap_err().kind(),
      ErrorKind::Closed
    );
  }
}
