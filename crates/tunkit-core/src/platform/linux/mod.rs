//! The Linux backend: TUN/TAP devices from `/dev/net/tun`, configured through rtnetlink.
//!
//! [`open`] creates (or attaches to) a device: it opens one descriptor per queue, applies the device ioctls
//! (persist, owner, group), then the link configuration through [`netlink::Netlink`] (MTU, queue length, MAC,
//! addresses, up, routes). With `netns` set, all of that happens on a short-lived thread that entered the namespace
//! first, since descriptors and sockets keep the namespace they were opened in. [`from_fd`] adopts a descriptor
//! someone else attached.

mod device;
pub mod netlink;
pub mod relay;
pub mod sys;

pub use device::{
  max_frame, LinuxControl, OffloadSetup, TunQueue, TAP_MAX_FRAME, TUN_MAX_FRAME, VNET_HDR_LEN,
};

use crate::backend::{Control, Opened, Queue};
use crate::config::{format_mac, DeviceConfig, Mode, Offload};
use crate::error::{Error, ErrorKind, Result};
use crate::ring::RingConfig;
use device::{in_context, route_label, run_in_netns};
use netlink::Netlink;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use sys::{errno, tun};

/// Creates the device `cfg` describes, or with `open_existing` attaches to the existing one, in the caller's
/// network namespace or in `cfg.netns`.
///
/// Errors: `NoDriver` without `/dev/net/tun`; `Permission` without `CAP_NET_ADMIN`; `Busy` when the name is taken
/// (by any device when creating, by a device of another kind when attaching); `NotFound` when `open_existing`
/// finds no device. When a configuration step fails the device is removed again and the error names the step.
pub fn open(cfg: &DeviceConfig) -> Result<Opened> {
  cfg.validate()?;
  let (queues, control) = match &cfg.netns {
    None => create(cfg)?,
    Some(path) => {
      let ns: OwnedFd = File::open(path)
        .map_err(|e| Error::os("open", &e, format_args!("opening the network namespace {path}")))?
        .into();
      let (queues, mut control) =
        run_in_netns(ns.as_fd(), &format!("opening a device in {path}"), || create(cfg))?;
      control.set_netns(ns);
      (queues, control)
    }
  };
  Ok(into_opened(queues, control))
}

/// Adopts `fd`, a descriptor of `/dev/net/tun` already attached to a device (for example one passed in by a
/// parent process), as a single-queue device of `mode`. Ownership of `fd` passes to the returned device, which
/// closes it; on error the caller keeps it. The device is configured by name through rtnetlink in the calling
/// thread's network namespace.
pub fn from_fd(fd: i32, mode: Mode) -> Result<Opened> {
  from_fd_with_ring(fd, mode, &RingConfig::default())
}

/// [`from_fd`] for a device whose queue is to run a ring of `ring`: the sizes are checked against the queue's
/// largest frame before the descriptor is taken.
///
/// On any error `fd` is left exactly as it was: open, with the same status and descriptor flags. Every check and
/// every fallible step runs before the descriptor is touched; the only change made to it, `O_NONBLOCK`, is the
/// last fallible step, and ownership is released again if it fails.
pub fn from_fd_with_ring(fd: i32, mode: Mode, ring: &RingConfig) -> Result<Opened> {
  let raw: RawFd = fd;
  let bad = |why: String| Error::new(ErrorKind::InvalidArgument, format!("fd {fd} {why}"));
  let (name, flags) = tun::get_iff(raw).map_err(|e| match sys::errno_of(&e) {
    errno::EBADF => bad("is not an open descriptor".into()),
    errno::EBADFD => bad(format!(
      "is a {} descriptor that is not attached to a device",
      tun::TUN_PATH
    )),
    errno::ENOTTY | errno::EINVAL => bad("is not a TUN/TAP descriptor (TUNGETIFF failed)".into()),
    _ => Error::os("ioctl", &e, format_args!("TUNGETIFF on fd {fd}")),
  })?;
  let kind = if flags & tun::IFF_TAP != 0 {
    Mode::Tap
  } else {
    Mode::Tun
  };
  if kind != mode {
    return Err(bad(format!(
      "is attached to {name}, a {} device, not a {} device",
      kind.as_str(),
      mode.as_str()
    )));
  }
  if flags & tun::IFF_NO_PI == 0 {
    return Err(bad(format!(
      "is attached to {name} without IFF_NO_PI; packets would carry a 4-byte header"
    )));
  }
  // A descriptor with virtio-net headers is adopted in split mode (see `adopted_offload`).
  let offload = if flags & tun::IFF_VNET_HDR != 0 {
    if mode == Mode::Tap {
      return Err(bad(format!(
        "is attached to {name}, a tap device with IFF_VNET_HDR, which an adopted descriptor does not support"
      )));
    }
    let size = tun::get_vnet_hdr_size(raw)
      .map_err(|e| Error::os("ioctl", &e, format_args!("TUNGETVNETHDRSZ on fd {fd}")))?;
    if size != VNET_HDR_LEN {
      return Err(bad(format!(
        "is attached to {name} with a {size}-byte virtio-net header; only the {VNET_HDR_LEN}-byte one is supported"
      )));
    }
    Some(adopted_offload())
  } else {
    None
  };
  ring.validate(TunQueue::frame_limit(mode, offload.as_ref()))?;
  let nl = Netlink::open().map_err(|e| in_context(e, format_args!("adopting fd {fd} ({name})")))?;
  // The device may live in another namespace than ours; then the data path still works but control fails by name.
  let index = nl.link_index(&name).unwrap_or(0);
  let wake_fd = TunQueue::new_wake_fd(&name)?;
  let owned = sys::adopt_raw_fd(raw).map_err(|e| Error::os("fcntl", &e, format_args!("adopting fd {fd}")))?;
  if let Err(e) = sys::set_nonblocking(owned.as_fd()) {
    // Give the descriptor back unclosed; a failed F_SETFL changed nothing.
    let _ = owned.into_raw_fd();
    return Err(Error::os(
      "fcntl",
      &e,
      format_args!("O_NONBLOCK on fd {fd} ({name})"),
    ));
  }
  // Nothing below can fail: the descriptor is the device's from here on.
  let queue = TunQueue::with_wake_fd(owned, wake_fd, &name, mode, offload.as_ref());
  let control = LinuxControl::new(name, index, nl, queue.shared_fd(), true);
  Ok(into_opened(vec![queue], control))
}

/// Offload of an adopted descriptor that has virtio-net headers: its owner chose the kernel's offloads, which this
/// library leaves alone. Reads are split whatever they bring; writes coalesce TCP (the kernel takes TCP
/// super-packets on any device with the header, whatever `TUNSETOFFLOAD` said, and if one refuses the writer falls
/// back); UDP is not coalesced, since whether the kernel knows USO cannot be asked without changing the device.
fn adopted_offload() -> OffloadSetup {
  OffloadSetup {
    raw: false,
    tcp: true,
    udp: false,
    fallbacks: 0,
    notice: None,
  }
}

/// `TUNSETOFFLOAD` flags for a setup: checksum offload, which every other needs, plus TSO and USO as chosen.
fn offload_flags(tcp: bool, udp: bool) -> u32 {
  let tso = if tcp { tun::TUN_F_TSO4 | tun::TUN_F_TSO6 } else { 0 };
  let uso = if udp { tun::TUN_F_USO4 | tun::TUN_F_USO6 } else { 0 };
  if tso | uso == 0 {
    0
  } else {
    tun::TUN_F_CSUM | tso | uso
  }
}

/// Sets the header size of a descriptor attached with `IFF_VNET_HDR` and negotiates the offloads `want` asks for.
/// USO is only known to Linux 6.2 and later; older kernels refuse the whole request with `EINVAL`, which is then
/// repeated without it. If the kernel refuses offload altogether the device keeps working without it (every
/// packet still carries a header, saying "plain packet"), and the returned setup says so in a notice (the facade
/// prefixes notices with the device's name).
fn probe_offload(fd: BorrowedFd<'_>, want: Offload) -> Result<OffloadSetup> {
  tun::set_vnet_hdr_size(fd, VNET_HDR_LEN)
    .map_err(|e| Error::os("ioctl", &e, format_args!("TUNSETVNETHDRSZ {VNET_HDR_LEN}")))?;
  Ok(negotiate_offload(want, |flags| tun::set_offload(fd, flags)))
}

/// The negotiation of [`probe_offload`], with `set_offload` standing for `TUNSETOFFLOAD`.
fn negotiate_offload(want: Offload, mut set_offload: impl FnMut(u32) -> std::io::Result<()>) -> OffloadSetup {
  let mut setup = OffloadSetup {
    raw: want.raw,
    tcp: want.tcp,
    udp: want.udp,
    fallbacks: 0,
    notice: None,
  };
  let mut result = set_offload(offload_flags(want.tcp, want.udp));
  if want.udp && matches!(&result, Err(e) if sys::errno_of(e) == errno::EINVAL) {
    setup.udp = false;
    result = set_offload(offload_flags(want.tcp, false));
    if result.is_ok() && !want.tcp {
      setup.notice = Some(
        "offload: this kernel has no UDP segmentation offload (USO needs Linux 6.2 or later), and TCP offload \
         was not asked for; the device runs without offload"
          .to_string(),
      );
    }
  }
  if let Err(e) = result {
    setup.tcp = false;
    setup.udp = false;
    setup.fallbacks = 1;
    setup.notice = Some(format!(
      "offload: the kernel refused TUNSETOFFLOAD ({e}); the device runs without offload (its packets \
       still carry virtio-net headers, which tunkit handles)"
    ));
  }
  setup
}

/// Gives another queue's descriptor the offloads the first one negotiated. The header size and offloads belong to
/// the device, so this repeats what is already in force; it is done anyway so that every descriptor is known to
/// be set up alike.
fn apply_offload(fd: BorrowedFd<'_>, setup: &OffloadSetup) -> Result<()> {
  tun::set_vnet_hdr_size(fd, VNET_HDR_LEN)
    .map_err(|e| Error::os("ioctl", &e, format_args!("TUNSETVNETHDRSZ {VNET_HDR_LEN}")))?;
  // After a refusal tcp and udp are off: 0 asks for no offload, which every kernel accepts.
  let flags = offload_flags(setup.tcp, setup.udp);
  tun::set_offload(fd, flags)
    .map_err(|e| Error::os("ioctl", &e, format_args!("TUNSETOFFLOAD {flags:#x}")))?;
  Ok(())
}

fn into_opened(queues: Vec<TunQueue>, control: LinuxControl) -> Opened {
  Opened {
    queues: queues
      .into_iter()
      .map(|q| Box::new(q) as Box<dyn Queue>)
      .collect(),
    control: Box::new(control) as Box<dyn Control>,
  }
}

/// The device flags for `TUNSETIFF`.
fn iff_flags(mode: Mode, multi_queue: bool, vnet_hdr: bool) -> u16 {
  let kind = match mode {
    Mode::Tun => tun::IFF_TUN,
    Mode::Tap => tun::IFF_TAP,
  };
  kind
    | tun::IFF_NO_PI
    | if multi_queue { tun::IFF_MULTI_QUEUE } else { 0 }
    | if vnet_hdr { tun::IFF_VNET_HDR } else { 0 }
}

/// Opens `/dev/net/tun` and attaches the descriptor with `TUNSETIFF`; returns it and the device's real name.
fn attach(requested: &str, flags: u16, mode: Mode, attaching: bool) -> Result<(OwnedFd, String)> {
  let fd = tun::open_clone_device().map_err(|e| {
    let err = Error::os("open", &e, format_args!("opening {}", tun::TUN_PATH));
    match sys::errno_of(&e) {
      errno::ENOENT | errno::ENODEV | errno::ENXIO => in_context(
        err.with_kind(ErrorKind::NoDriver),
        format_args!(
          "the tun driver is missing ({} not usable; is the tun module loaded?)",
          tun::TUN_PATH
        ),
      ),
      errno::EPERM | errno::EACCES => in_context(
        err.with_kind(ErrorKind::Permission),
        format_args!(
          "opening {} needs CAP_NET_ADMIN or access to the file",
          tun::TUN_PATH
        ),
      ),
      _ => err,
    }
  })?;
  let shown = if requested.is_empty() {
    format!("{}%d", mode.as_str())
  } else {
    requested.to_string()
  };
  let name = tun::set_iff(fd.as_fd(), requested, flags).map_err(|e| {
    let err = Error::os("ioctl", &e, format_args!("TUNSETIFF {shown}"));
    let mq = flags & tun::IFF_MULTI_QUEUE != 0;
    match sys::errno_of(&e) {
      errno::EPERM | errno::EACCES => in_context(
        err.with_kind(ErrorKind::Permission),
        format_args!(
          "{} {shown} needs CAP_NET_ADMIN",
          if attaching { "attaching to" } else { "creating" }
        ),
      ),
      errno::EBUSY if attaching => in_context(
        err.with_kind(ErrorKind::Busy),
        format_args!("{shown} is in use by another process (a single-queue device takes one descriptor)"),
      ),
      errno::EBUSY => in_context(
        err.with_kind(ErrorKind::Busy),
        format_args!(
          "the interface name {shown} already exists; use Tun.open to attach to an existing device"
        ),
      ),
      // An existing device of another kind (not tun/tap, or tun vs tap, or a different multi-queue setting).
      errno::EINVAL if attaching => in_context(
        err.with_kind(ErrorKind::Busy),
        format_args!(
          "the name {shown} is taken by a device that is not a {}{} device",
          if mq { "multi-queue " } else { "single-queue " },
          mode.as_str()
        ),
      ),
      _ => err,
    }
  })?;
  Ok((fd, name))
}

/// A device being set up: its queues so far and whether `open` set `TUNSETPERSIST` on a device it created.
struct Pending {
  queues: Vec<TunQueue>,
  made_persistent: bool,
}

impl Pending {
  /// Removes what `open` created: clears persistence (else the device would outlive its descriptors), then closes
  /// the descriptors, which deletes a non-persistent device.
  fn abandon(self) {
    if self.made_persistent {
      if let Some(q) = self.queues.first() {
        let _ = tun::set_persist(q.fd(), false);
      }
    }
    drop(self.queues);
  }
}

/// Creates or attaches in the calling thread's namespace.
fn create(cfg: &DeviceConfig) -> Result<(Vec<TunQueue>, LinuxControl)> {
  let mode = cfg.mode;
  let nqueues = cfg.queues.unwrap_or(1);
  let flags = iff_flags(mode, nqueues > 1, cfg.offload.is_some());
  let nl = Netlink::open().map_err(|e| in_context(e, "opening rtnetlink"))?;

  let (requested, existing) = if cfg.open_existing {
    let name = match cfg.name.as_deref() {
      Some(n) if !n.contains('%') => n,
      _ => {
        return Err(Error::new(
          ErrorKind::InvalidArgument,
          "attaching to an existing device needs its exact name",
        ))
      }
    };
    let index = nl.link_index(name).map_err(|e| match e.kind() {
      ErrorKind::NotFound => Error::new(
        ErrorKind::NotFound,
        format!("there is no device named {name} to attach to"),
      ),
      _ => in_context(e, format_args!("looking up {name}")),
    })?;
    (name, Some(index))
  } else {
    (cfg.name.as_deref().unwrap_or(""), None)
  };

  // IFF_TUN_EXCL: when creating, never attach silently to an existing (persistent) device of that name.
  let first_flags = if existing.is_some() {
    flags
  } else {
    flags | tun::IFF_TUN_EXCL
  };
  let (first, name) = attach(requested, first_flags, mode, existing.is_some())?;
  let doing = if existing.is_some() {
    "attaching to"
  } else {
    "creating"
  };
  // Until persistence is set, dropping the descriptor is enough to undo the creation.
  let offload = match cfg.offload {
    Some(want) => {
      Some(probe_offload(first.as_fd(), want).map_err(|e| in_context(e, format_args!("{doing} {name}")))?)
    }
    None => None,
  };
  let first = TunQueue::new(first, &name, mode, offload.as_ref())?;
  let mut pending = Pending {
    queues: vec![first],
    made_persistent: false,
  };
  // The other queues run with the same offloads; what the kernel refused at open is said and counted by the first
  // queue only (the facade sums counters over queues).
  let others = offload.map(|o| OffloadSetup {
    notice: None,
    fallbacks: 0,
    ..o
  });
  match setup(cfg, &nl, &name, flags, existing, others.as_ref(), &mut pending) {
    Ok(index) => {
      let control = LinuxControl::new(name, index, nl, pending.queues[0].shared_fd(), false);
      Ok((pending.queues, control))
    }
    Err(e) => {
      pending.abandon();
      Err(in_context(e, format_args!("{doing} {name}")))
    }
  }
}

/// Everything after the first descriptor is attached; returns the device index.
fn setup(
  cfg: &DeviceConfig,
  nl: &Netlink,
  name: &str,
  flags: u16,
  existing: Option<u32>,
  offload: Option<&OffloadSetup>,
  pending: &mut Pending,
) -> Result<u32> {
  let index = nl
    .link_index(name)
    .map_err(|e| in_context(e, "looking up its index"))?;
  if let Some(expected) = existing {
    // The device vanished between the lookup and TUNSETIFF, which then created a fresh one; drop that.
    if index != expected {
      return Err(Error::new(
        ErrorKind::NotFound,
        "the device disappeared while attaching",
      ));
    }
  }
  let first = pending.queues[0].fd();
  if let Some(uid) = cfg.owner {
    tun::set_owner(first, uid).map_err(|e| Error::os("ioctl", &e, format_args!("TUNSETOWNER {uid}")))?;
  }
  if let Some(gid) = cfg.group {
    tun::set_group(first, gid).map_err(|e| Error::os("ioctl", &e, format_args!("TUNSETGROUP {gid}")))?;
  }
  if cfg.persist {
    tun::set_persist(first, true).map_err(|e| Error::os("ioctl", &e, "TUNSETPERSIST 1"))?;
    pending.made_persistent = existing.is_none();
  }
  for i in 1..cfg.queues.unwrap_or(1) {
    let (fd, _) =
      attach(name, flags, cfg.mode, true).map_err(|e| in_context(e, format_args!("opening queue {i}")))?;
    if let Some(o) = offload {
      apply_offload(fd.as_fd(), o).map_err(|e| in_context(e, format_args!("opening queue {i}")))?;
    }
    pending.queues.push(TunQueue::new(fd, name, cfg.mode, offload)?);
  }
  configure(cfg, nl, index)?;
  Ok(index)
}

/// Applies the link configuration: MTU, queue length, MAC, addresses, up, then routes (which need the link up).
fn configure(cfg: &DeviceConfig, nl: &Netlink, index: u32) -> Result<()> {
  if let Some(mtu) = cfg.mtu {
    nl.set_mtu(index, mtu)
      .map_err(|e| in_context(e, format_args!("setMtu {mtu}")))?;
  }
  if let Some(len) = cfg.tx_queue_len {
    nl.set_tx_queue_len(index, len)
      .map_err(|e| in_context(e, format_args!("txQueueLength {len}")))?;
  }
  if let Some(mac) = cfg.mac {
    nl.set_mac(index, mac)
      .map_err(|e| in_context(e, format_args!("setMac {}", format_mac(&mac))))?;
  }
  for a in &cfg.addresses {
    nl.add_address(index, a)
      .map_err(|e| in_context(e, format_args!("addAddress {a}")))?;
  }
  if cfg.wants_up() {
    nl.set_up(index, true)
      .map_err(|e| in_context(e, "setting the link up"))?;
  }
  for r in &cfg.routes {
    nl.add_route(index, r)
      .map_err(|e| in_context(e, format_args!("addRoute {}", route_label(r))))?;
  }
  Ok(())
}

/// Helpers for tests that create devices.
#[cfg(test)]
pub(crate) mod test_support {
  use super::sys;
  use std::path::Path;

  /// Runs `f` on a new thread that first moved itself into a fresh network namespace, so that devices and traffic
  /// stay away from the host. Returns `None` (after saying so) when `/dev/net/tun` is absent, unless
  /// `TUNKIT_REQUIRE_DEVICE=1`, which turns that into a failure. A panic in `f` fails the calling test.
  pub fn in_netns<T: Send + 'static>(test: &str, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    if !Path::new(sys::tun::TUN_PATH).exists() {
      if std::env::var("TUNKIT_REQUIRE_DEVICE").as_deref() == Ok("1") {
        panic!(
          "{test}: {} is absent and TUNKIT_REQUIRE_DEVICE=1",
          sys::tun::TUN_PATH
        );
      }
      eprintln!("skipping {test}: {} is absent", sys::tun::TUN_PATH);
      return None;
    }
    let worker = std::thread::spawn(move || {
      sys::unshare_netns().expect("unshare(CLONE_NEWNET) for a private network namespace");
      f()
    });
    match worker.join() {
      Ok(v) => Some(v),
      Err(panic) => std::panic::resume_unwind(panic),
    }
  }

  /// An IPv4/UDP packet with a valid header checksum (and no UDP checksum, which IPv4 allows).
  pub fn ipv4_udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[
      0x45,
      0,
      (total >> 8) as u8,
      total as u8,
      0,
      1,
      0x40,
      0,
      64,
      17,
      0,
      0,
    ]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    let mut sum = 0u32;
    for w in p.chunks(2) {
      sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    while sum > 0xffff {
      sum = (sum & 0xffff) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
  }
}

#[cfg(test)]
mod tests {
  use super::test_support::in_netns;
  use super::*;
  use crate::backend::{EventSource, LinkEvent};
  use crate::config::IpCidr;
  use std::os::fd::{AsRawFd, IntoRawFd};
  use std::sync::{mpsc, Arc};
  use std::thread;
  use std::time::{Duration, Instant};

  fn named(name: &str) -> DeviceConfig {
    DeviceConfig {
      name: Some(name.to_string()),
      ..Default::default()
    }
  }

  fn cidr(s: &str) -> IpCidr {
    s.parse().unwrap()
  }

  fn exists(name: &str) -> bool {
    match Netlink::open().unwrap().link_index(name) {
      Ok(_) => true,
      Err(e) if e.kind() == ErrorKind::NotFound => false,
      Err(e) => panic!("looking up {name}: {e}"),
    }
  }

  /// Polls (bounded) until `name` is gone; device removal on close is synchronous, the bound is a safety net.
  fn gone(name: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    while exists(name) {
      if Instant::now() > deadline {
        return false;
      }
      thread::sleep(Duration::from_millis(10));
    }
    true
  }

  #[test]
  fn linux_offload_negotiation_falls_back_step_by_step() {
    use std::io;
    let einval = || io::Error::from_raw_os_error(errno::EINVAL);
    let want = |tcp, udp| Offload { tcp, udp, raw: false };
    const USO: u32 = tun::TUN_F_USO4 | tun::TUN_F_USO6;
    const ALL: u32 = tun::TUN_F_CSUM | tun::TUN_F_TSO4 | tun::TUN_F_TSO6 | USO;
    // (wanted, what the kernel refuses, expected tcp/udp/fallbacks, notice?, the flags tried in order)
    type Kernel = fn(u32) -> bool;
    type Case = (
      &'static str,
      Offload,
      Kernel,
      (bool, bool, u64),
      bool,
      &'static [u32],
    );
    let cases: [Case; 6] = [
      ("6.2+", want(true, true), |_| true, (true, true, 0), false, &[ALL]),
      (
        "before 6.2",
        want(true, true),
        |f| f & (tun::TUN_F_USO4 | tun::TUN_F_USO6) == 0,
        (true, false, 0),
        false,
        &[ALL, ALL & !USO],
      ),
      (
        "UDP only before 6.2",
        want(false, true),
        |f| f & (tun::TUN_F_USO4 | tun::TUN_F_USO6) == 0,
        (false, false, 0),
        true,
        &[tun::TUN_F_CSUM | USO, 0],
      ),
      (
        "refused",
        want(true, true),
        |_| false,
        (false, false, 1),
        true,
        &[ALL, ALL & !USO],
      ),
      (
        "TCP only, refused",
        want(true, false),
        |_| false,
        (false, false, 1),
        true,
        &[ALL & !USO],
      ),
      (
        "nothing wanted",
        want(false, false),
        |f| f == 0,
        (false, false, 0),
        false,
        &[0],
      ),
    ];
    for (name, w, accepts, (tcp, udp, fallbacks), notice, tried) in cases {
      let mut calls = Vec::new();
      let setup = negotiate_offload(w, |f| {
        calls.push(f);
        if accepts(f) {
          Ok(())
        } else {
          Err(einval())
        }
      });
      assert_eq!(
        (setup.tcp, setup.udp, setup.fallbacks),
        (tcp, udp, fallbacks),
        "{name}"
      );
      assert_eq!(setup.notice.is_some(), notice, "{name}: {:?}", setup.notice);
      assert_eq!(calls, tried, "{name}");
    }
    // Another errno than EINVAL is not "no USO": no retry.
    let setup = negotiate_offload(want(true, true), |_| {
      Err(io::Error::from_raw_os_error(errno::EPERM))
    });
    assert_eq!(setup.fallbacks, 1);
    assert!(setup.notice.unwrap().contains("refused TUNSETOFFLOAD"));
  }

  #[test]
  fn linux_create_with_kernel_assigned_names() {
    in_netns("linux_create_with_kernel_assigned_names", || {
      let tun = open(&DeviceConfig::default()).unwrap();
      let name = tun.control.name();
      assert!(name.starts_with("tun") && name.len() > 3, "{name}");
      assert_eq!(tun.queues.len(), 1);
      assert_eq!(tun.queues[0].max_frame(), 65535);
      assert_eq!(
        Netlink::open().unwrap().link_index(&name).unwrap(),
        tun.control.index()
      );
      let info = tun.control.link().unwrap();
      assert_eq!(info.name, name);
      assert!(!info.up, "no addresses: the link stays down");

      let tap = open(&DeviceConfig {
        mode: Mode::Tap,
        ..Default::default()
      })
      .unwrap();
      assert!(tap.control.name().starts_with("tap"), "{}", tap.control.name());
      assert_eq!(tap.queues[0].max_frame(), 65535 + 18);

      let templ = open(&named("tk%d")).unwrap();
      assert!(templ.control.name().starts_with("tk") && !templ.control.name().contains('%'));

      drop(tun);
      assert!(gone(&name), "{name} outlived its only descriptor");
    });
  }

  #[test]
  fn linux_create_with_a_name_applies_the_config() {
    in_netns("linux_create_with_a_name_applies_the_config", || {
      let route = crate::config::RouteSpec {
        to: cidr("10.67.0.0/16"),
        via: None,
        metric: Some(50),
        table: None,
      };
      let cfg = DeviceConfig {
        mtu: Some(1400),
        tx_queue_len: Some(77),
        addresses: vec![cidr("10.66.0.1/24"), cidr("fd66::1/64")],
        routes: vec![route.clone()],
        ..named("tk-cfg")
      };
      let dev = open(&cfg).unwrap();
      let c = &dev.control;
      assert_eq!(c.name(), "tk-cfg");
      let info = c.link().unwrap();
      assert_eq!(
        (info.name.as_str(), info.mtu, info.up, info.tx_queue_len),
        ("tk-cfg", 1400, true, 77)
      );
      let addrs = c.addresses().unwrap();
      assert!(
        addrs
          .iter()
          .any(|a| a.addr == cidr("10.66.0.1/24").addr && a.prefix == 24),
        "{addrs:?}"
      );
      assert!(
        addrs
          .iter()
          .any(|a| a.addr == cidr("fd66::1/64").addr && a.prefix == 64),
        "{addrs:?}"
      );
      assert!(
        c.routes().unwrap().iter().any(|r| r.to == route.to),
        "{:?}",
        c.routes()
      );

      // Control errors name the operation and the device.
      c.set_mtu(1300).unwrap();
      assert_eq!(c.link().unwrap().mtu, 1300);
      let e = c.set_mtu(1000).unwrap_err();
      assert_eq!(e.kind(), ErrorKind::InvalidMtu, "{e}");
      assert!(e.message().starts_with("setMtu 1000 on tk-cfg: "), "{e}");
      let e = c.add_address(&cidr("10.66.0.1/24")).unwrap_err();
      assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
      assert!(
        e.message().starts_with("addAddress 10.66.0.1/24 on tk-cfg: "),
        "{e}"
      );
      let e = c.remove_address(&cidr("10.66.9.9/24")).unwrap_err();
      assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
      c.set_up(false).unwrap();
      assert!(!c.link().unwrap().up);

      let mac = [0x02, 0, 0x5e, 0x10, 0x20, 0x30];
      let tap = open(&DeviceConfig {
        mode: Mode::Tap,
        mac: Some(mac),
        ..named("tk-tap")
      })
      .unwrap();
      assert_eq!(tap.control.link().unwrap().mac, Some(mac));
    });
  }

  #[test]
  fn linux_taken_names_are_busy() {
    in_netns("linux_taken_names_are_busy", || {
      let first = open(&named("tk-busy")).unwrap();
      let e = open(&named("tk-busy")).err().unwrap();
      assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
      assert!(
        e.message().contains("already exists") && e.message().contains("Tun.open"),
        "{e}"
      );
      assert_eq!(e.errno(), Some(errno::EBUSY));
      let e = open(&DeviceConfig {
        mode: Mode::Tap,
        ..named("tk-busy")
      })
      .err()
      .unwrap();
      assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
      // A name held by a device that is not tun/tap at all.
      assert_eq!(open(&named("lo")).err().unwrap().kind(), ErrorKind::Busy);
      let e = open(&DeviceConfig {
        open_existing: true,
        ..named("lo")
      })
      .err()
      .unwrap();
      assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
      assert!(e.message().contains("not a single-queue tun device"), "{e}");
      // A single-queue device takes one descriptor.
      let e = open(&DeviceConfig {
        open_existing: true,
        ..named("tk-busy")
      })
      .err()
      .unwrap();
      assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
      assert!(e.message().contains("in use"), "{e}");
      // The failed attempts did not disturb the first device.
      assert_eq!(first.control.link().unwrap().name, "tk-busy");
    });
  }

  #[test]
  fn linux_open_existing_attaches_to_a_persistent_device() {
    in_netns("linux_open_existing_attaches_to_a_persistent_device", || {
      let e = open(&DeviceConfig {
        open_existing: true,
        ..named("tk-none")
      })
      .err()
      .unwrap();
      assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
      assert!(e.message().contains("tk-none"), "{e}");
      let e = open(&DeviceConfig {
        open_existing: true,
        ..Default::default()
      })
      .err()
      .unwrap();
      assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");

      let made = open(&DeviceConfig {
        persist: true,
        ..named("tk-keep")
      })
      .unwrap();
      let index = made.control.index();
      drop(made);
      assert!(exists("tk-keep"), "a persistent device outlives its descriptors");
      // Creating (not attaching) must not silently attach to it.
      let e = open(&named("tk-keep")).err().unwrap();
      assert_eq!(e.kind(), ErrorKind::Busy, "{e}");

      let att = open(&DeviceConfig {
        open_existing: true,
        mtu: Some(1300),
        ..named("tk-keep")
      })
      .unwrap();
      assert_eq!(att.control.index(), index);
      assert_eq!(att.control.link().unwrap().mtu, 1300);
      att.control.set_persist(false).unwrap();
      drop(att);
      assert!(
        gone("tk-keep"),
        "clearing persist lets the device go with its last descriptor"
      );
    });
  }

  #[test]
  fn linux_multi_queue_opens_one_fd_per_queue() {
    in_netns("linux_multi_queue_opens_one_fd_per_queue", || {
      let (queues, control) = create(&DeviceConfig {
        queues: Some(4),
        ..named("tk-mq")
      })
      .unwrap();
      assert_eq!(queues.len(), 4);
      assert_eq!(control.name(), "tk-mq");
      let mut raw: Vec<i32> = queues.iter().map(|q| q.fd().as_raw_fd()).collect();
      raw.sort();
      raw.dedup();
      assert_eq!(raw.len(), 4, "distinct descriptors");
      for q in &queues {
        let (name, flags) = tun::get_iff(q.fd().as_raw_fd()).unwrap();
        assert_eq!(name, "tk-mq");
        assert_eq!(
          flags & (tun::IFF_MULTI_QUEUE | tun::IFF_TUN | tun::IFF_NO_PI),
          0x1101,
          "{flags:#x}"
        );
      }
      // Another multi-queue attach works; a single-queue attach does not match the device.
      let more = open(&DeviceConfig {
        open_existing: true,
        queues: Some(2),
        ..named("tk-mq")
      })
      .unwrap();
      assert_eq!(more.queues.len(), 2);
      let e = open(&DeviceConfig {
        open_existing: true,
        ..named("tk-mq")
      })
      .err()
      .unwrap();
      assert_eq!(e.kind(), ErrorKind::Busy, "{e}");

      let tap = open(&DeviceConfig {
        mode: Mode::Tap,
        queues: Some(2),
        ..Default::default()
      })
      .unwrap();
      assert_eq!(tap.queues.len(), 2);
    });
  }

  #[test]
  fn linux_failed_configuration_removes_the_device() {
    in_netns("linux_failed_configuration_removes_the_device", || {
      let route = crate::config::RouteSpec {
        to: cidr("10.81.0.0/16"),
        via: Some("10.99.0.1".parse().unwrap()),
        metric: None,
        table: None,
      };
      let cfg = DeviceConfig {
        persist: true,
        queues: Some(2),
        addresses: vec![cidr("10.80.0.1/24")],
        routes: vec![route],
        ..named("tk-fail")
      };
      let e = open(&cfg)
        .err()
        .expect("a gateway outside every prefix is unreachable");
      assert!(
        e.message()
          .starts_with("creating tk-fail: addRoute 10.81.0.0/16 via 10.99.0.1: "),
        "{e}"
      );
      assert!(e.errno().is_some(), "{e:?}");
      assert!(
        gone("tk-fail"),
        "the half-configured persistent device was left behind"
      );
    });
  }

  #[test]
  fn linux_from_fd_adopts_an_attached_descriptor() {
    in_netns("linux_from_fd_adopts_an_attached_descriptor", || {
      let fd = tun::open_clone_device().unwrap();
      assert_eq!(
        tun::set_iff(fd.as_fd(), "tk-fd", tun::IFF_TUN | tun::IFF_NO_PI).unwrap(),
        "tk-fd"
      );
      let raw = fd.into_raw_fd();

      let e = from_fd(raw, Mode::Tap).err().unwrap();
      assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
      assert!(
        sys::raw_fd_is_open(raw),
        "a refused descriptor stays with the caller"
      );

      let dev = from_fd(raw, Mode::Tun).unwrap();
      assert_eq!(dev.control.name(), "tk-fd");
      assert_eq!(
        dev.control.index(),
        Netlink::open().unwrap().link_index("tk-fd").unwrap()
      );
      dev.control.set_up(true).unwrap();
      assert!(dev.control.link().unwrap().up);

      let unattached = tun::open_clone_device().unwrap();
      let e = from_fd(unattached.as_raw_fd(), Mode::Tun).err().unwrap();
      assert!(
        e.kind() == ErrorKind::InvalidArgument && e.message().contains("not attached"),
        "{e}"
      );
      let file = File::open("/proc/self/status").unwrap();
      let e = from_fd(file.as_raw_fd(), Mode::Tun).err().unwrap();
      assert!(
        e.kind() == ErrorKind::InvalidArgument && e.message().contains("not a TUN/TAP"),
        "{e}"
      );
      assert_eq!(
        from_fd(-1, Mode::Tun).err().unwrap().kind(),
        ErrorKind::InvalidArgument
      );

      drop(dev);
      assert!(gone("tk-fd"), "the adopted descriptor is closed with the device");
    });
  }

  /// The `flags:` line of `/proc/self/fdinfo/<fd>` (octal): the status flags and `O_CLOEXEC`.
  fn fdinfo_flags(fd: i32) -> u32 {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
    let line = info.lines().find_map(|l| l.strip_prefix("flags:")).unwrap();
    u32::from_str_radix(line.trim(), 8).unwrap()
  }

  #[test]
  fn linux_from_fd_leaves_a_refused_descriptor_unchanged() {
    in_netns("linux_from_fd_leaves_a_refused_descriptor_unchanged", || {
      const O_NONBLOCK: u32 = 0o4000;
      // A blocking descriptor (open_clone_device makes non-blocking ones), so that a stray O_NONBLOCK shows.
      let attach_blocking = |name: &str, flags: u16| -> i32 {
        let fd: OwnedFd = std::fs::OpenOptions::new()
          .read(true)
          .write(true)
          .open(tun::TUN_PATH)
          .unwrap()
          .into();
        tun::set_iff(fd.as_fd(), name, flags).unwrap();
        fd.into_raw_fd()
      };
      let raw = attach_blocking("tk-fdk", tun::IFF_TUN | tun::IFF_NO_PI);
      let before = fdinfo_flags(raw);
      assert_eq!(before & O_NONBLOCK, 0, "{before:o}");
      let bad_rings = [
        RingConfig {
          batch_packets: 0,
          ..RingConfig::default()
        },
        RingConfig {
          memory_budget: 1,
          ..RingConfig::default()
        },
        RingConfig {
          slab_bytes: 1,
          ..RingConfig::default()
        },
      ];
      let mut refusals: Vec<(String, Error)> = vec![(
        "tap for a tun descriptor".into(),
        from_fd(raw, Mode::Tap).err().unwrap(),
      )];
      for ring in &bad_rings {
        refusals.push((
          format!("{ring:?}"),
          from_fd_with_ring(raw, Mode::Tun, ring).err().unwrap(),
        ));
      }
      for (what, e) in refusals {
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{what}: {e}");
        assert!(sys::raw_fd_is_open(raw), "{what}: the descriptor was closed");
        assert_eq!(
          fdinfo_flags(raw),
          before,
          "{what}: the descriptor's flags changed"
        );
        assert!(exists("tk-fdk"), "{what}: the device went away");
      }

      // A descriptor without IFF_NO_PI is refused alike (where the kernel reports it so: some report IFF_NO_PI
      // for every tun descriptor).
      let pi = attach_blocking("tk-fdpi", tun::IFF_TUN);
      if tun::get_iff(pi).unwrap().1 & tun::IFF_NO_PI == 0 {
        let pi_before = fdinfo_flags(pi);
        let e = from_fd(pi, Mode::Tun).err().unwrap();
        assert!(e.message().contains("IFF_NO_PI"), "{e}");
        assert!(sys::raw_fd_is_open(pi));
        assert_eq!(fdinfo_flags(pi), pi_before);
      } else {
        eprintln!(
          "this kernel reports IFF_NO_PI for a descriptor attached without it; that refusal is not tested"
        );
      }
      // `pi` is open and owned by this test alone: closing it is adopting it and dropping the owner.
      drop(sys::adopt_raw_fd(pi).unwrap());

      // After all that, the descriptor is adopted as if nothing had happened, and made non-blocking.
      let dev = from_fd_with_ring(raw, Mode::Tun, &RingConfig::default()).unwrap();
      assert_eq!(dev.control.name(), "tk-fdk");
      assert_eq!(fdinfo_flags(raw), before | O_NONBLOCK);
      drop(dev);
      assert!(gone("tk-fdk"), "the adopted descriptor is closed with the device");
    });
  }

  #[test]
  fn linux_netns_option_creates_and_controls_in_that_namespace() {
    in_netns(
      "linux_netns_option_creates_and_controls_in_that_namespace",
      || {
        // Namespace A: made by a helper thread; the open file keeps it alive after the thread ends.
        let ns_file = thread::spawn(|| {
          sys::unshare_netns().unwrap();
          File::open("/proc/thread-self/ns/net").unwrap()
        })
        .join()
        .unwrap();
        let path = format!("/proc/self/fd/{}", ns_file.as_raw_fd());
        let cfg = DeviceConfig {
          addresses: vec![cidr("10.79.0.1/24")],
          netns: Some(path),
          ..named("tk-ns")
        };
        let dev = open(&cfg).unwrap();
        assert!(
          !exists("tk-ns"),
          "the device must not appear in the caller's namespace"
        );
        let index = run_in_netns(ns_file.as_fd(), "test", || Netlink::open()?.link_index("tk-ns")).unwrap();
        assert_eq!(index, dev.control.index());
        let info = dev.control.link().unwrap();
        assert_eq!((info.name.as_str(), info.up), ("tk-ns", true));

        // Events are subscribed to in namespace A too. A watchdog wakes the source if the event never comes.
        let events: Arc<dyn EventSource> = Arc::from(dev.control.events().unwrap());
        let (stop, stopped) = mpsc::channel::<()>();
        let watchdog = {
          let events = events.clone();
          thread::spawn(move || {
            if stopped.recv_timeout(Duration::from_secs(5)).is_err() {
              events.wake();
            }
          })
        };
        dev.control.set_mtu(1280).unwrap();
        let mut seen = Vec::new();
        while !seen.contains(&LinkEvent::Mtu(1280)) {
          match events.next() {
            Ok(batch) => seen.extend(batch),
            Err(e) => panic!("no Mtu(1280) event within 5 s ({e}); saw {seen:?}"),
          }
        }
        stop.send(()).unwrap();
        watchdog.join().unwrap();
        events.wake();
        assert_eq!(events.next().unwrap_err().kind(), ErrorKind::Closed);

        let e = open(&DeviceConfig {
          netns: Some("/nonexistent/netns".into()),
          ..Default::default()
        })
        .err()
        .unwrap();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
      },
    );
  }
}
