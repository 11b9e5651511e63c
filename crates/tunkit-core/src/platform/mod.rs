//! One module per platform behind the contract of [`crate::backend`], plus the in-memory pair.

use crate::backend::Opened;
use crate::config::DeviceConfig;
use crate::error::Result;

pub mod memory;

#[cfg(target_os = "linux")]
pub mod linux;

#[cfg(windows)]
pub mod windows;

#[cfg(target_os = "macos")]
pub mod macos;

/// Creates (or, with `open_existing`, attaches to) the device `cfg` describes on this platform.
pub fn open(cfg: &DeviceConfig) -> Result<Opened> {
  cfg.validate()?;
  #[cfg(target_os = "linux")]
  {
    linux::open(cfg)
  }
  #[cfg(windows)]
  {
    windows::open(cfg)
  }
  #[cfg(target_os = "macos")]
  {
    macos::open(cfg)
  }
  #[cfg(not(any(target_os = "linux", windows, target_os = "macos")))]
  {
    Err(crate::error::Error::unsupported("creating a device"))
  }
}

/// Applies the link configuration of `cfg` through a device's control, in the order the OS needs: MTU, addresses,
/// link up, then routes (which need the link up). For backends without a faster path of their own (Linux applies
/// it through its netlink socket directly).
#[cfg(any(windows, target_os = "macos"))]
pub(crate) fn configure(cfg: &DeviceConfig, control: &dyn crate::backend::Control) -> Result<()> {
  if let Some(mtu) = cfg.mtu {
    control.set_mtu(mtu)?;
  }
  for a in &cfg.addresses {
    control.add_address(a)?;
  }
  if cfg.wants_up() {
    control.set_up(true)?;
  }
  for r in &cfg.routes {
    control.add_route(r)?;
  }
  Ok(())
}
