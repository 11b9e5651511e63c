//! Links: an interface's index by name, its state and counters, and the changes of `RTM_SETLINK` (up or
//! down, MTU, transmit queue length, MAC).

use super::wire::link::parse_link;
use super::wire::Request;
use super::{check_index, ifindex, Netlink, Refine};
use crate::backend::LinkInfo;
use crate::config::validate_name;
use crate::error::{Error, ErrorKind, Result};
use crate::platform::linux::sys::netlink as sys;
use crate::platform::linux::sys::netlink::IfInfoMsg;

impl Netlink {
  /// The single `RTM_NEWLINK` a `RTM_GETLINK` request answers with.
  fn get_link(&self, req: &Request, context: &str, refine: &[Refine]) -> Result<LinkInfo> {
    let reply = self.transact(req).map_err(|f| f.into_error(context, refine))?;
    let payload = reply
      .messages
      .iter()
      .find(|(ty, _)| *ty == sys::RTM_NEWLINK)
      .map(|(_, p)| p)
      .ok_or_else(|| {
        Error::new(
          ErrorKind::Os,
          format!("{context}: the kernel sent no RTM_NEWLINK"),
        )
      })?;
    parse_link(payload).map_err(|m| Error::new(ErrorKind::Os, format!("{context}: {m}")))
  }

  /// The index of the interface called `name`; `NotFound` when there is none.
  pub fn link_index(&self, name: &str) -> Result<u32> {
    validate_name(name)?;
    let mut name_z = name.as_bytes().to_vec();
    name_z.push(0);
    let mut req = Request::new(sys::RTM_GETLINK, 0, &IfInfoMsg::default().encode());
    req.attr(sys::IFLA_IFNAME, &name_z);
    let refine = [(sys::ENODEV, ErrorKind::NotFound, "no such interface")];
    let info = self.get_link(&req, &format!("look up interface {name}"), &refine)?;
    Ok(info.index)
  }

  /// The link's current state and counters, read from the kernel now.
  pub fn link(&self, index: u32) -> Result<LinkInfo> {
    check_index(index, "read link")?;
    let req = Request::new(
      sys::RTM_GETLINK,
      0,
      &IfInfoMsg {
        index: index as i32,
        ..Default::default()
      }
      .encode(),
    );
    self.get_link(&req, &format!("read link {}", ifindex(index)), &[])
  }

  /// A `RTM_SETLINK` for `index` changing `flags` under the mask `change`.
  fn setlink(index: u32, flags: u32, change: u32) -> Request {
    Request::new(
      sys::RTM_SETLINK,
      0,
      &IfInfoMsg {
        index: index as i32,
        flags,
        change,
        ..Default::default()
      }
      .encode(),
    )
  }

  /// Sets the MTU. The kernel's `EINVAL` (out of the device's range) is `InvalidMtu`.
  pub fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
    check_index(index, "set mtu")?;
    let mut req = Self::setlink(index, 0, 0);
    req.attr_u32(sys::IFLA_MTU, mtu);
    self.execute(
      &req,
      &format!("set mtu {mtu} on {}", ifindex(index)),
      &[(sys::EINVAL, ErrorKind::InvalidMtu, "")],
    )
  }

  /// Brings the link up or down (`IFF_UP`).
  pub fn set_up(&self, index: u32, up: bool) -> Result<()> {
    check_index(index, "set link up/down")?;
    let req = Self::setlink(index, if up { sys::IFF_UP } else { 0 }, sys::IFF_UP);
    let what = if up { "up" } else { "down" };
    self.execute(&req, &format!("set link {what} on {}", ifindex(index)), &[])?;
    if up && self.is_noarp(index)? {
      self.wait_ipv6_settled(index)?;
    }
    Ok(())
  }

  /// Sets the kernel's transmit queue length (`txqueuelen`).
  pub fn set_tx_queue_len(&self, index: u32, len: u32) -> Result<()> {
    check_index(index, "set txqueuelen")?;
    let mut req = Self::setlink(index, 0, 0);
    req.attr_u32(sys::IFLA_TXQLEN, len);
    self.execute(&req, &format!("set txqueuelen {len} on {}", ifindex(index)), &[])
  }

  /// Sets the hardware address (TAP devices; a TUN device has none and the kernel answers `Unsupported`).
  pub fn set_mac(&self, index: u32, mac: [u8; 6]) -> Result<()> {
    check_index(index, "set mac")?;
    let text = crate::config::format_mac(&mac);
    if mac[0] & 1 == 1 || mac == [0; 6] {
      return Err(Error::new(
        ErrorKind::InvalidAddress,
        format!(
          "set mac {text} on {}: the address must be unicast and not all zeros",
          ifindex(index)
        ),
      ));
    }
    let mut req = Self::setlink(index, 0, 0);
    req.attr(sys::IFLA_ADDRESS, &mac);
    self.execute(&req, &format!("set mac {text} on {}", ifindex(index)), &[])
  }

  /// The link's `IFF_*` flags.
  fn link_flags(&self, index: u32) -> Result<u32> {
    let context = format!("read link flags of {}", ifindex(index));
    let req = Request::new(
      sys::RTM_GETLINK,
      0,
      &IfInfoMsg {
        index: index as i32,
        ..Default::default()
      }
      .encode(),
    );
    let reply = self.transact(&req).map_err(|f| f.into_error(&context, &[]))?;
    reply
      .messages
      .iter()
      .find(|(ty, _)| *ty == sys::RTM_NEWLINK)
      .and_then(|(_, p)| IfInfoMsg::decode(p))
      .map(|i| i.flags)
      .ok_or_else(|| {
        Error::new(
          ErrorKind::Os,
          format!("{context}: the kernel sent no RTM_NEWLINK"),
        )
      })
  }

  /// Whether the link has no neighbour discovery (`IFF_NOARP`: TUN devices).
  pub(super) fn is_noarp(&self, index: u32) -> Result<bool> {
    Ok(self.link_flags(index)? & sys::IFF_NOARP != 0)
  }
}

#[cfg(test)]
mod tests {
  use super::super::test_support::{in_netns, LO};
  use super::*;

  #[test]
  fn netns_link_settings() {
    in_netns("netns_link_settings", || {
      let nl = Netlink::open().unwrap();
      assert_eq!(nl.link_index("lo").unwrap(), LO);
      let e = nl.link_index("nosuchdev0").unwrap_err();
      assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
      assert!(e.message().contains("no such interface"), "{e}");
      assert_eq!(
        nl.link_index("bad/name").unwrap_err().kind(),
        ErrorKind::InvalidName
      );
      assert!(!nl.link(LO).unwrap().up);
      nl.set_up(LO, true).unwrap();
      nl.set_mtu(LO, 1400).unwrap();
      nl.set_tx_queue_len(LO, 777).unwrap();
      let info = nl.link(LO).unwrap();
      assert_eq!(
        (
          info.name.as_str(),
          info.index,
          info.mtu,
          info.up,
          info.tx_queue_len
        ),
        ("lo", LO, 1400, true, 777)
      );
      assert_eq!(info.mac, Some([0; 6]));
      // lo accepts any MTU the kernel's `int` can hold; u32::MAX reads as -1, below every device's minimum.
      let e = nl.set_mtu(LO, u32::MAX).unwrap_err();
      assert_eq!(e.kind(), ErrorKind::InvalidMtu, "{e}");
      assert_eq!(e.errno(), Some(sys::EINVAL));
      let e = nl.link(4242).unwrap_err();
      assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
      let e = nl.set_up(4242, true).unwrap_err();
      assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
      assert!(e.message().contains("device gone"), "{e}");
      // Traffic on lo shows in the counters.
      let before = nl.link(LO).unwrap().stats;
      let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
      sock.send_to(b"ping", sock.local_addr().unwrap()).unwrap();
      let after = nl.link(LO).unwrap().stats;
      assert!(
        after.tx_packets > before.tx_packets && after.rx_bytes > before.rx_bytes,
        "{before:?} {after:?}"
      );
      nl.set_up(LO, false).unwrap();
      assert!(!nl.link(LO).unwrap().up);
    });
  }
}
