//! Addresses: adding, removing and listing an interface's IPv4 and IPv6 addresses.

use super::wire::address::{address_flags, address_request, parse_address};
use super::wire::Request;
use super::{check_index, ifindex, Netlink};
use crate::config::IpCidr;
use crate::error::{Error, ErrorKind, Result};
use crate::platform::linux::sys::netlink as sys;
use crate::platform::linux::sys::netlink::IfAddrMsg;

/// Checks an address (and its peer) before it goes to the kernel.
pub(super) fn check_cidr(a: &IpCidr, what: &str) -> Result<()> {
  let max = if a.is_ipv4() { 32 } else { 128 };
  if a.prefix > max {
    return Err(Error::new(
      ErrorKind::InvalidAddress,
      format!("{what}: prefix /{} is too long for {}", a.prefix, a.addr),
    ));
  }
  if let Some(peer) = a.peer {
    if peer.is_ipv4() != a.is_ipv4() {
      return Err(Error::new(
        ErrorKind::InvalidAddress,
        format!("{what}: peer {peer} is not of the family of {}", a.addr),
      ));
    }
  }
  Ok(())
}

impl Netlink {
  /// Waits, for at most two seconds, until no IPv6 address of the link is tentative any more. On a link without
  /// neighbour discovery (a TUN device: `IFF_NOARP`) the kernel skips duplicate address detection, but still
  /// finishes the address's set-up asynchronously after the link comes up; until then binding to the address fails
  /// with `EADDRNOTAVAIL`. Waiting here makes `create`, `addAddress` and `up` return with addresses ready to use.
  pub(super) fn wait_ipv6_settled(&self, index: u32) -> Result<()> {
    let context = format!("list addresses on {}", ifindex(index));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
      let req = Request::new(
        sys::RTM_GETADDR,
        sys::NLM_F_DUMP,
        &IfAddrMsg {
          family: sys::AF_INET6,
          ..Default::default()
        }
        .encode(),
      );
      let tentative = self.dump(&req, &context, &[])?.iter().any(|(ty, payload)| {
        *ty == sys::RTM_NEWADDR
          && address_flags(payload).is_some_and(|(i, f)| i == index && f & sys::IFA_F_TENTATIVE != 0)
      });
      if !tentative || std::time::Instant::now() >= deadline {
        return Ok(());
      }
      std::thread::sleep(std::time::Duration::from_millis(2));
    }
  }

  fn describe_address(a: &IpCidr) -> String {
    match a.peer {
      Some(p) => format!("address {} peer {p}/{}", a.addr, a.prefix),
      None => format!("address {a}"),
    }
  }

  /// Adds an address (with its peer for point-to-point links). A duplicate is `AlreadyExists`.
  pub fn add_address(&self, index: u32, a: &IpCidr) -> Result<()> {
    let context = format!("add {} on {}", Self::describe_address(a), ifindex(index));
    check_index(index, &context)?;
    check_cidr(a, &context)?;
    // Duplicate address detection is meaningless without a link layer; say so, so the address is usable at once.
    let settle = !a.is_ipv4() && self.is_noarp(index)?;
    let ifa_flags = if settle { sys::IFA_F_NODAD } else { 0 };
    let req = address_request(
      sys::RTM_NEWADDR,
      sys::NLM_F_CREATE | sys::NLM_F_EXCL,
      index,
      a,
      ifa_flags,
    );
    self.execute(&req, &context, &[(sys::EEXIST, ErrorKind::AlreadyExists, "")])?;
    if settle {
      self.wait_ipv6_settled(index)?;
    }
    Ok(())
  }

  /// Removes an address (same address, prefix length and peer as added). An absent one is `NotFound`.
  pub fn remove_address(&self, index: u32, a: &IpCidr) -> Result<()> {
    let context = format!("remove {} on {}", Self::describe_address(a), ifindex(index));
    check_index(index, &context)?;
    check_cidr(a, &context)?;
    let req = address_request(sys::RTM_DELADDR, 0, index, a, 0);
    self.execute(
      &req,
      &context,
      &[
        (sys::EADDRNOTAVAIL, ErrorKind::NotFound, ""),
        (sys::ENOENT, ErrorKind::NotFound, ""),
      ],
    )
  }

  /// The addresses of the interface, IPv4 and IPv6 (including those the kernel adds itself, such as IPv6
  /// link-local ones), each with its peer where there is one.
  pub fn addresses(&self, index: u32) -> Result<Vec<IpCidr>> {
    let context = format!("list addresses on {}", ifindex(index));
    check_index(index, &context)?;
    let req = Request::new(sys::RTM_GETADDR, sys::NLM_F_DUMP, &IfAddrMsg::default().encode());
    let mut out = Vec::new();
    for (ty, payload) in self.dump(&req, &context, &[])? {
      if ty != sys::RTM_NEWADDR {
        continue;
      }
      match parse_address(&payload) {
        Some((i, a)) if i == index => out.push(a),
        _ => {}
      }
    }
    Ok(out)
  }
}

#[cfg(test)]
mod tests {
  use super::super::test_support::{in_netns, LO};
  use super::*;

  #[test]
  fn netns_addresses() {
    in_netns("netns_addresses", || {
      let nl = Netlink::open().unwrap();
      nl.set_up(LO, true).unwrap();
      let v4: IpCidr = "10.7.0.1/24".parse().unwrap();
      let v6: IpCidr = "fd07::1/64".parse().unwrap();
      nl.add_address(LO, &v4).unwrap();
      nl.add_address(LO, &v6).unwrap();
      let list = nl.addresses(LO).unwrap();
      assert!(list.contains(&v4) && list.contains(&v6), "{list:?}");
      assert!(list.contains(&"127.0.0.1/8".parse().unwrap()), "{list:?}");
      let e = nl.add_address(LO, &v4).unwrap_err();
      assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
      assert_eq!(
        nl.add_address(LO, &v6).unwrap_err().kind(),
        ErrorKind::AlreadyExists
      );
      // Point-to-point address with a peer.
      let p2p = "10.8.0.1/32"
        .parse::<IpCidr>()
        .unwrap()
        .with_peer("10.8.0.2".parse().unwrap())
        .unwrap();
      nl.add_address(LO, &p2p).unwrap();
      assert!(nl.addresses(LO).unwrap().contains(&p2p));
      nl.remove_address(LO, &p2p).unwrap();
      // Removing without naming the peer removes it too.
      nl.add_address(LO, &p2p).unwrap();
      nl.remove_address(LO, &"10.8.0.1/32".parse().unwrap()).unwrap();
      assert!(!nl.addresses(LO).unwrap().contains(&p2p));
      nl.remove_address(LO, &v4).unwrap();
      nl.remove_address(LO, &v6).unwrap();
      let list = nl.addresses(LO).unwrap();
      assert!(
        !list.contains(&v4) && !list.contains(&v6) && !list.contains(&p2p),
        "{list:?}"
      );
      for a in [v4, v6, "10.7.0.9/24".parse().unwrap()] {
        let e = nl.remove_address(LO, &a).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{a}: {e}");
      }
      let bad = IpCidr {
        addr: "10.0.0.1".parse().unwrap(),
        prefix: 40,
        peer: None,
      };
      assert_eq!(
        nl.add_address(LO, &bad).unwrap_err().kind(),
        ErrorKind::InvalidAddress
      );
    });
  }
}
