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

/// Refuses, on a platform other than Linux, the options only Linux has (`os` names the platform in the message):
/// TAP, several queues, persistence, owner/group, network namespaces and offload.
#[cfg(any(windows, target_os = "macos", test))]
pub(crate) fn refuse_linux_only(cfg: &DeviceConfig, os: &str) -> Result<()> {
  let linux_only = [
    (cfg.mode == crate::config::Mode::Tap, "mode 'tap'"),
    (cfg.queues.unwrap_or(1) > 1, "more than one queue"),
    (cfg.persist, "persist"),
    (cfg.owner.is_some() || cfg.group.is_some(), "owner/group"),
    (cfg.netns.is_some(), "netns"),
    (cfg.offload.is_some(), "offload"),
  ];
  match linux_only.iter().find(|(set, _)| *set) {
    Some((_, what)) => Err(crate::error::Error::unsupported(&format!(
      "{what} on {os} (Linux only)"
    ))),
    None => Ok(()),
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::config::{Mode, Offload};
  use crate::error::ErrorKind;

  #[test]
  fn linux_only_options_are_refused_elsewhere() {
    assert!(refuse_linux_only(&DeviceConfig::default(), "macOS").is_ok());
    let cases = [
      DeviceConfig {
        mode: Mode::Tap,
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
        group: Some(1),
        ..Default::default()
      },
      DeviceConfig {
        netns: Some("/run/netns/x".into()),
        ..Default::default()
      },
      DeviceConfig {
        offload: Some(Offload::default()),
        ..Default::default()
      },
    ];
    for cfg in cases {
      let e = refuse_linux_only(&cfg, "Windows").unwrap_err();
      assert_eq!(e.kind(), ErrorKind::Unsupported, "{cfg:?}");
      assert!(e.message().contains("on Windows (Linux only)"), "{}", e.message());
    }
  }
}
