//! The Windows backend: layer-3 devices from the Wintun driver, configured through the IP Helper API.
//!
//! [`open`] loads and verifies `wintun.dll` (see [`driver`]), creates (or opens) an adapter with a GUID derived
//! from its name, starts a session — one ring pair, so one queue — and applies the configuration: MTU, addresses,
//! routes. The adapter is removed again when the device and its queue are dropped (wintun removes an adapter when
//! the handle of the process that created it closes). The packet ring above the backend contract is the same as
//! on Linux.
//!
//! What Windows has no equivalent for is refused with `Unsupported` at open: TAP mode, several queues,
//! persistence, owner/group and network namespaces. `txQueueLength` is a Linux kernel setting and is ignored here.

pub mod device;
pub mod driver;
pub mod sys;

pub use device::{WindowsControl, WintunQueue};

use crate::backend::{Control, Opened, Queue};
use crate::config::DeviceConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::sha256;
use std::fmt;
use std::io;
use std::sync::Arc;
use sys::wintun::{Adapter, Guid, Session, Wintun, MAX_RING_CAPACITY, MIN_RING_CAPACITY};
use sys::{code, iphlp};

/// Ring capacity of a session when none is given: 8 MiB each way, room for about 5 000 full-size packets.
pub const DEFAULT_RING_CAPACITY: u32 = 8 << 20;
/// The tunnel type wintun records for our adapters (shown in the adapter's description).
const TUNNEL_TYPE: &str = "tunkit";
/// The name of a device created without one; `%d` picks the lowest free number.
const DEFAULT_NAME: &str = "tunkit%d";
/// How many numbers a `%d` template tries.
const TEMPLATE_TRIES: u32 = 256;

/// Creates the wintun adapter `cfg` describes, or with `open_existing` opens the existing one, with rings of
/// [`DEFAULT_RING_CAPACITY`].
pub fn open(cfg: &DeviceConfig) -> Result<Opened> {
  open_with_ring(cfg, DEFAULT_RING_CAPACITY)
}

/// [`open`] with rings of `ring_capacity` bytes: a power of two from 128 KiB to 64 MiB.
///
/// Errors: `NoDriver` when `wintun.dll` is missing or not the pinned build; `Permission` without Administrator
/// rights; `Busy` when an interface of that name exists already (creating); `NotFound` when `open_existing` finds
/// no wintun adapter of that name; `Unsupported` for options Windows has no equivalent for.
pub fn open_with_ring(cfg: &DeviceConfig, ring_capacity: u32) -> Result<Opened> {
  cfg.validate()?;
  check_supported(cfg)?;
  check_ring_capacity(ring_capacity)?;
  let api = driver::wintun()?;
  let (adapter, name) = if cfg.open_existing {
    open_adapter(api, cfg)?
  } else {
    create_adapter(api, cfg)?
  };
  let adapter = Arc::new(adapter);
  let verb = if cfg.open_existing { "opening" } else { "creating" };
  // From here on an error drops the adapter, which removes it again when we created it.
  let session = Session::start(adapter.clone(), ring_capacity).map_err(|e| {
    win_error(
      "WintunStartSession",
      &e,
      format_args!("{verb} {name}: starting a session{}", logged()),
    )
  })?;
  let queue = WintunQueue::new(session, &name)?;
  let control = WindowsControl::new(name.clone(), adapter)?;
  super::configure(cfg, &control).map_err(|e| context(e, format_args!("{verb} {name}")))?;
  Ok(Opened {
    queues: vec![Box::new(queue) as Box<dyn Queue>],
    control: Box::new(control) as Box<dyn Control>,
  })
}

/// Refuses the options Windows has no equivalent for, before anything is created.
fn check_supported(cfg: &DeviceConfig) -> Result<()> {
  super::refuse_linux_only(cfg, "Windows")?;
  if cfg.up == Some(false) {
    return Err(Error::unsupported(
      "up: false on Windows (a wintun adapter is up while its session runs)",
    ));
  }
  Ok(())
}

/// Checks a ring capacity against what `WintunStartSession` accepts.
pub fn check_ring_capacity(capacity: u32) -> Result<()> {
  if !capacity.is_power_of_two() || !(MIN_RING_CAPACITY..=MAX_RING_CAPACITY).contains(&capacity) {
    return Err(Error::new(
      ErrorKind::InvalidArgument,
      format!(
        "ring capacity {capacity} must be a power of two from {} KiB to {} MiB",
        MIN_RING_CAPACITY >> 10,
        MAX_RING_CAPACITY >> 20
      ),
    ));
  }
  Ok(())
}

/// The GUID wintun gives the adapter named `name`: derived from the name (SHA-256, marked as an RFC 9562
/// version 8 UUID), so that Windows recognises the same network each time instead of creating "Network 2, 3, …".
pub fn adapter_guid(name: &str) -> Guid {
  let d = sha256::digest(format!("tunkit wintun adapter {name}").as_bytes());
  let mut data4 = [0u8; 8];
  data4.copy_from_slice(&d[8..16]);
  data4[0] = (data4[0] & 0x3f) | 0x80; // variant 10
  Guid {
    data1: u32::from_le_bytes([d[0], d[1], d[2], d[3]]),
    data2: u16::from_le_bytes([d[4], d[5]]),
    data3: (u16::from_le_bytes([d[6], d[7]]) & 0x0fff) | 0x8000, // version 8
    data4,
  }
}

/// Whether an interface (wintun or not) with the alias `name` exists.
fn alias_exists(name: &str) -> Result<bool> {
  match iphlp::alias_to_luid(name) {
    Ok(_) => Ok(true),
    Err(e)
      if matches!(
        sys::code_of(&e),
        code::ERROR_NOT_FOUND | code::ERROR_INVALID_PARAMETER
      ) =>
    {
      Ok(false)
    }
    Err(e) => Err(win_error(
      "ConvertInterfaceAliasToLuid",
      &e,
      format_args!("looking up the interface {name}"),
    )),
  }
}

/// Creates a new adapter; returns it and its name (with a `%d` template filled in).
fn create_adapter(api: &'static Wintun, cfg: &DeviceConfig) -> Result<(Adapter, String)> {
  let requested = cfg.name.as_deref().unwrap_or(DEFAULT_NAME);
  let name = if requested.contains("%d") {
    let mut free = None;
    for n in 0..TEMPLATE_TRIES {
      let candidate = requested.replace("%d", &n.to_string());
      if !alias_exists(&candidate)? {
        free = Some(candidate);
        break;
      }
    }
    free.ok_or_else(|| {
      Error::new(
        ErrorKind::Busy,
        format!("every name {requested} from 0 to {} is taken", TEMPLATE_TRIES - 1),
      )
    })?
  } else {
    if alias_exists(requested)? {
      return Err(Error::new(
        ErrorKind::Busy,
        format!(
          "the interface name {requested} already exists; use Tun.open to attach to an existing device"
        ),
      ));
    }
    requested.to_string()
  };
  let _ = sys::wintun::take_logged_error();
  let adapter = Adapter::create(api, &name, TUNNEL_TYPE, &adapter_guid(&name)).map_err(|e| {
    let err = win_error(
      "WintunCreateAdapter",
      &e,
      format_args!("creating {name}{}", logged()),
    );
    match err.kind() {
      ErrorKind::Permission => context(err, "creating a wintun adapter needs Administrator rights"),
      _ => err,
    }
  })?;
  Ok((adapter, name))
}

/// Opens an existing wintun adapter by its exact name.
fn open_adapter(api: &'static Wintun, cfg: &DeviceConfig) -> Result<(Adapter, String)> {
  let name = match cfg.name.as_deref() {
    Some(n) if !n.contains('%') => n,
    _ => {
      return Err(Error::new(
        ErrorKind::InvalidArgument,
        "attaching to an existing device needs its exact name",
      ))
    }
  };
  let _ = sys::wintun::take_logged_error();
  let adapter = Adapter::open(api, name).map_err(|e| match sys::code_of(&e) {
    code::ERROR_NOT_FOUND | code::ERROR_FILE_NOT_FOUND => Error::new(
      ErrorKind::NotFound,
      format!("there is no wintun adapter named {name} to attach to"),
    ),
    _ => win_error(
      "WintunOpenAdapter",
      &e,
      format_args!("opening {name}{}", logged()),
    ),
  })?;
  Ok((adapter, name.to_string()))
}

/// `": <what wintun logged>"` when wintun logged an error since it was last taken, else nothing.
fn logged() -> String {
  sys::wintun::take_logged_error()
    .map(|m| format!(" (wintun: {m})"))
    .unwrap_or_default()
}

/// The kind of a Win32 error code for device operations.
pub fn kind_of_win32(code: i32) -> ErrorKind {
  match code {
    code::ERROR_ACCESS_DENIED | code::ERROR_ELEVATION_REQUIRED => ErrorKind::Permission,
    code::ERROR_FILE_NOT_FOUND | code::ERROR_PATH_NOT_FOUND | code::ERROR_NOT_FOUND => ErrorKind::NotFound,
    code::ERROR_ALREADY_EXISTS | code::ERROR_OBJECT_ALREADY_EXISTS => ErrorKind::AlreadyExists,
    code::ERROR_INVALID_PARAMETER => ErrorKind::InvalidArgument,
    code::ERROR_HANDLE_EOF => ErrorKind::Closed,
    _ => ErrorKind::Os,
  }
}

/// An error from a failed Win32 call, with the kind derived from the Win32 code (the core's default mapping reads
/// errno values, which mean other things).
pub(crate) fn win_error(syscall: &'static str, err: &io::Error, ctx: impl fmt::Display) -> Error {
  let kind = err.raw_os_error().map(kind_of_win32).unwrap_or(ErrorKind::Os);
  Error::os(syscall, err, ctx).with_kind(kind)
}

/// Prefixes an error's message with `ctx`, keeping its kind, OS code and syscall.
pub(crate) fn context(e: Error, ctx: impl fmt::Display) -> Error {
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
  use crate::backend::Batch;
  use std::time::Duration;

  #[test]
  fn windows_adapter_guid_is_stable_and_marked() {
    let a = adapter_guid("tunkit0");
    assert_eq!(a, adapter_guid("tunkit0"));
    assert_ne!(a, adapter_guid("tunkit1"));
    assert_eq!(a.data3 >> 12, 8, "version 8");
    assert_eq!(a.data4[0] >> 6, 0b10, "RFC variant");
  }

  #[test]
  fn windows_ring_capacity_limits() {
    assert!(check_ring_capacity(DEFAULT_RING_CAPACITY).is_ok());
    assert!(check_ring_capacity(MIN_RING_CAPACITY).is_ok() && check_ring_capacity(MAX_RING_CAPACITY).is_ok());
    for bad in [
      0,
      MIN_RING_CAPACITY / 2,
      MAX_RING_CAPACITY * 2,
      DEFAULT_RING_CAPACITY + 1,
    ] {
      assert_eq!(
        check_ring_capacity(bad).unwrap_err().kind(),
        ErrorKind::InvalidArgument,
        "{bad}"
      );
    }
  }

  #[test]
  fn windows_packet_checks_and_error_kinds() {
    assert_eq!(
      device::check_packet(&[]).unwrap_err().kind(),
      ErrorKind::InvalidPacket
    );
    assert_eq!(
      device::check_packet(&[0x75]).unwrap_err().kind(),
      ErrorKind::InvalidPacket
    );
    assert_eq!(
      device::check_packet(&vec![0x45; 65536]).unwrap_err().kind(),
      ErrorKind::PacketTooLarge
    );
    assert!(device::check_packet(&[0x45]).is_ok() && device::check_packet(&[0x60]).is_ok());
    let e = win_error(
      "X",
      &io::Error::from_raw_os_error(code::ERROR_ACCESS_DENIED),
      "doing x",
    );
    assert_eq!((e.kind(), e.errno()), (ErrorKind::Permission, Some(5)));
    let e = context(e, "outer");
    assert!(e.message().starts_with("outer: doing x: "), "{e}");
    assert_eq!(
      kind_of_win32(code::ERROR_OBJECT_ALREADY_EXISTS),
      ErrorKind::AlreadyExists
    );
    assert_eq!(kind_of_win32(code::ERROR_NOT_FOUND), ErrorKind::NotFound);
  }

  #[test]
  fn windows_unsupported_options_fail_before_loading_wintun() {
    for cfg in [
      DeviceConfig {
        mode: crate::config::Mode::Tap,
        ..Default::default()
      },
      DeviceConfig {
        queues: Some(2),
        ..Default::default()
      },
      DeviceConfig {
        persist: true,
        ..Default::default()
      },
      DeviceConfig {
        netns: Some("x".into()),
        ..Default::default()
      },
    ] {
      assert_eq!(
        open(&cfg).err().unwrap().kind(),
        ErrorKind::Unsupported,
        "{cfg:?}"
      );
    }
  }

  /// A real adapter: needs wintun.dll next to the test executable and Administrator rights (the CI copies the DLL
  /// into `target/debug/deps`); skipped otherwise unless TUNKIT_REQUIRE_DEVICE=1.
  #[test]
  fn windows_wintun_round_trip() {
    let cfg = DeviceConfig {
      name: Some("tunkit-test%d".into()),
      addresses: vec!["10.79.0.1/24".parse().unwrap()],
      ..Default::default()
    };
    let opened = match open(&cfg) {
      Ok(o) => o,
      Err(e)
        if matches!(e.kind(), ErrorKind::NoDriver | ErrorKind::Permission)
          && std::env::var("TUNKIT_REQUIRE_DEVICE").as_deref() != Ok("1") =>
      {
        eprintln!("skipping windows_wintun_round_trip: {e}");
        return;
      }
      Err(e) => panic!("{e}"),
    };
    let name = opened.control.name();
    assert!(name.starts_with("tunkit-test"), "{name}");
    assert!(opened
      .control
      .addresses()
      .unwrap()
      .iter()
      .any(|a| a.addr.to_string() == "10.79.0.1" && a.prefix == 24));
    opened.control.set_mtu(1400).unwrap();
    assert_eq!(opened.control.link().unwrap().mtu, 1400);
    let queue: Arc<dyn Queue> = Arc::from(opened.queues.into_iter().next().unwrap());
    // Never block for good: wake the queue if the test has not finished in time.
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let watchdog = {
      let queue = queue.clone();
      std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(Duration::from_secs(20))
        {
          queue.wake();
        }
      })
    };
    // The address needs a moment to become usable for sending after the adapter comes up.
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    let mut batch = Batch::with_capacity(2 * 65535, 8);
    let mut found = false;
    for _ in 0..40 {
      let _ = sock.send_to(b"tunkit", "10.79.0.2:4242");
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
    drop(queue);
    drop(opened.control);
    // Closing removes the adapter wintun created.
    assert!(!alias_exists(&name).unwrap(), "{name} is still there after close");
  }
}
