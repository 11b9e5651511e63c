//! Routes: adding, removing and listing the routes through an interface.

use super::addresses::check_cidr;
use super::wire::route::{parse_route, route_request};
use super::wire::Request;
use super::{check_index, ifindex, Netlink};
use crate::config::RouteSpec;
use crate::error::{Error, ErrorKind, Result};
use crate::platform::linux::sys::netlink as sys;
use crate::platform::linux::sys::netlink::RtMsg;

/// Checks a route before it goes to the kernel.
fn check_route(r: &RouteSpec, what: &str) -> Result<()> {
  check_cidr(&r.to, what)?;
  r.validate()
    .map_err(|e| Error::new(e.kind(), format!("{what}: {e}")))?;
  if r.to.peer.is_some() {
    return Err(Error::new(
      ErrorKind::InvalidAddress,
      format!("{what}: a route destination has no peer"),
    ));
  }
  if r.table == Some(0) {
    return Err(Error::new(
      ErrorKind::InvalidArgument,
      format!("{what}: table 0 is not a routing table"),
    ));
  }
  Ok(())
}

fn describe_route(r: &RouteSpec) -> String {
  let mut s = format!("route {}/{}", r.to.addr, r.to.prefix);
  if let Some(via) = r.via {
    s.push_str(&format!(" via {via}"));
  }
  if let Some(m) = r.metric {
    s.push_str(&format!(" metric {m}"));
  }
  if let Some(t) = r.table {
    s.push_str(&format!(" table {t}"));
  }
  s
}

impl Netlink {
  /// Adds a route through the interface. A duplicate is `AlreadyExists`; a gateway with no route to it is
  /// `Unreachable`.
  pub fn add_route(&self, index: u32, r: &RouteSpec) -> Result<()> {
    let context = format!("add {} on {}", describe_route(r), ifindex(index));
    check_index(index, &context)?;
    check_route(r, &context)?;
    let req = route_request(sys::RTM_NEWROUTE, sys::NLM_F_CREATE | sys::NLM_F_EXCL, index, r);
    let refine = [
      (sys::EEXIST, ErrorKind::AlreadyExists, "the route exists"),
      (
        sys::ENETUNREACH,
        ErrorKind::Unreachable,
        "no route to the gateway",
      ),
      (
        sys::EHOSTUNREACH,
        ErrorKind::Unreachable,
        "the gateway is not reachable through this interface",
      ),
    ];
    self.execute(&req, &context, &refine)
  }

  /// Removes a route through the interface; an absent one is `NotFound`. Unset metric or table match any
  /// metric and the main table.
  pub fn remove_route(&self, index: u32, r: &RouteSpec) -> Result<()> {
    let context = format!("remove {} on {}", describe_route(r), ifindex(index));
    check_index(index, &context)?;
    check_route(r, &context)?;
    let req = route_request(sys::RTM_DELROUTE, 0, index, r);
    self.execute(
      &req,
      &context,
      &[
        (sys::ESRCH, ErrorKind::NotFound, "no such route"),
        (sys::ENOENT, ErrorKind::NotFound, "no such route"),
      ],
    )
  }

  /// The unicast routes whose output interface is `index`, IPv4 then IPv6, from every table.
  pub fn routes(&self, index: u32) -> Result<Vec<RouteSpec>> {
    let context = format!("list routes on {}", ifindex(index));
    check_index(index, &context)?;
    let mut out = Vec::new();
    for family in [sys::AF_INET, sys::AF_INET6] {
      let req = Request::new(
        sys::RTM_GETROUTE,
        sys::NLM_F_DUMP,
        &RtMsg {
          family,
          ..Default::default()
        }
        .encode(),
      );
      for (ty, payload) in self.dump(&req, &context, &[])? {
        if ty != sys::RTM_NEWROUTE {
          continue;
        }
        match parse_route(&payload) {
          Some((oif, r)) if oif == index => out.push(r),
          _ => {}
        }
      }
    }
    Ok(out)
  }
}

#[cfg(test)]
mod tests {
  use super::super::test_support::{in_netns, LO};
  use super::*;
  use crate::config::IpCidr;

  #[test]
  fn inputs_are_validated_before_sending() {
    let bad_peer = IpCidr {
      addr: "10.0.0.1".parse().unwrap(),
      prefix: 24,
      peer: Some("fd00::1".parse().unwrap()),
    };
    assert_eq!(
      check_cidr(&bad_peer, "x").unwrap_err().kind(),
      ErrorKind::InvalidAddress
    );
    let long = IpCidr {
      addr: "10.0.0.1".parse().unwrap(),
      prefix: 33,
      peer: None,
    };
    assert_eq!(
      check_cidr(&long, "x").unwrap_err().kind(),
      ErrorKind::InvalidAddress
    );
    let mixed = RouteSpec {
      to: "10.0.0.0/8".parse().unwrap(),
      via: Some("fd00::1".parse().unwrap()),
      metric: None,
      table: None,
    };
    assert_eq!(
      check_route(&mixed, "x").unwrap_err().kind(),
      ErrorKind::InvalidAddress
    );
    let host_bits = RouteSpec {
      to: "10.0.0.1/8".parse().unwrap(),
      via: None,
      metric: None,
      table: None,
    };
    assert_eq!(
      check_route(&host_bits, "x").unwrap_err().kind(),
      ErrorKind::InvalidAddress
    );
    let table0 = RouteSpec {
      to: "10.0.0.0/8".parse().unwrap(),
      via: None,
      metric: None,
      table: Some(0),
    };
    assert_eq!(
      check_route(&table0, "x").unwrap_err().kind(),
      ErrorKind::InvalidArgument
    );
  }

  #[test]
  fn netns_routes() {
    in_netns("netns_routes", || {
      let nl = Netlink::open().unwrap();
      nl.set_up(LO, true).unwrap();
      nl.add_address(LO, &"fd07::1/64".parse().unwrap()).unwrap();
      nl.add_address(LO, &"10.7.0.1/24".parse().unwrap()).unwrap();
      let r = RouteSpec {
        to: "10.9.0.0/16".parse().unwrap(),
        via: None,
        metric: Some(50),
        table: None,
      };
      nl.add_route(LO, &r).unwrap();
      let e = nl.add_route(LO, &r).unwrap_err();
      assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
      let r6 = RouteSpec {
        to: "fd09::/64".parse().unwrap(),
        via: None,
        metric: Some(60),
        table: Some(1000),
      };
      nl.add_route(LO, &r6).unwrap();
      let r7 = RouteSpec {
        to: "10.11.0.0/16".parse().unwrap(),
        via: Some("10.7.0.2".parse().unwrap()),
        metric: None,
        table: None,
      };
      nl.add_route(LO, &r7).unwrap();
      let r8 = RouteSpec {
        to: "fd0b::/48".parse().unwrap(),
        via: None,
        metric: None,
        table: None,
      };
      nl.add_route(LO, &r8).unwrap();
      let list = nl.routes(LO).unwrap();
      assert!(list.contains(&r), "{list:?}");
      assert!(list.contains(&r6), "{list:?}");
      assert!(list.contains(&r7), "{list:?}");
      // IPv6 routes without a metric get the kernel's default (1024).
      assert!(
        list.contains(&RouteSpec {
          metric: Some(1024),
          ..r8.clone()
        }),
        "{list:?}"
      );
      assert!(
        list
          .iter()
          .all(|x| x.to.addr.to_string() != "fe80::" && x.to.addr.to_string() != "ff00::"),
        "{list:?}"
      );
      nl.remove_route(LO, &r).unwrap();
      nl.remove_route(LO, &r6).unwrap();
      nl.remove_route(LO, &r7).unwrap();
      nl.remove_route(LO, &r8).unwrap();
      let list = nl.routes(LO).unwrap();
      assert!(
        !list.iter().any(|x| [r.to, r6.to, r7.to, r8.to].contains(&x.to)),
        "{list:?}"
      );
      let e = nl.remove_route(LO, &r).unwrap_err();
      assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
      let e = nl.remove_route(LO, &r6).unwrap_err();
      assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
      let gw = RouteSpec {
        to: "10.10.0.0/16".parse().unwrap(),
        via: Some("192.0.2.1".parse().unwrap()),
        metric: None,
        table: None,
      };
      let e = nl.add_route(LO, &gw).unwrap_err();
      assert_eq!(e.kind(), ErrorKind::Unreachable, "{e}");
      assert!(
        e.message().contains("gateway"),
        "the kernel's explanation is included: {e}"
      );
      // IPv6 refuses a gateway it has no neighbour route for (here: any gateway through lo).
      let gw6 = RouteSpec {
        to: "fd0a::/48".parse().unwrap(),
        via: Some("fd07::2".parse().unwrap()),
        metric: None,
        table: None,
      };
      let e = nl.add_route(LO, &gw6).unwrap_err();
      assert_eq!(e.kind(), ErrorKind::Unreachable, "{e}");
      let e = nl
        .add_route(
          LO,
          &RouteSpec {
            to: "10.9.0.1/16".parse().unwrap(),
            ..r.clone()
          },
        )
        .unwrap_err();
      assert_eq!(e.kind(), ErrorKind::InvalidAddress);
    });
  }
}
