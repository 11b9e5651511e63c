//! [`LinuxControl`]: configuration of a Linux device through rtnetlink, and the tun ioctls that need one of its
//! descriptors.

use super::{in_context, run_in_netns};
use crate::backend::{Control, EventSource, LinkInfo};
use crate::config::{self, format_mac, IpCidr, RouteSpec, MIN_MTU_IPV6};
use crate::error::{Error, ErrorKind, Result};
use crate::platform::linux::netlink::{LinkEvents, Netlink};
use crate::platform::linux::sys::tun;
use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Mutex, MutexGuard, Weak};

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
