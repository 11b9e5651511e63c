//! `RTM_NEWROUTE`/`RTM_DELROUTE` messages: routes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{attr_ip, attr_u32, attrs, family_of, Request};
use crate::config::{IpCidr, RouteSpec};
use crate::platform::linux::sys::netlink as sys;
use crate::platform::linux::sys::netlink::RtMsg;

/// Parses the payload of an `RTM_NEWROUTE` message into `(output ifindex, route)`, or `None` for routes a
/// caller did not configure: non-unicast ones (local, broadcast, multicast, unreachable…), cloned cache
/// entries, routes without a single output interface (multipath), and the IPv6 link-local `fe80::/64` and
/// multicast `ff00::/8` routes the kernel adds to every IPv6 link.
pub(crate) fn parse_route(payload: &[u8]) -> Option<(u32, RouteSpec)> {
  let rtm = RtMsg::decode(payload)?;
  if rtm.ty != sys::RTN_UNICAST || rtm.flags & sys::RTM_F_CLONED != 0 {
    return None;
  }
  let (mut dst, mut oif, mut via, mut metric) = (None, None, None, None);
  let mut table = u32::from(rtm.table);
  for (ty, p) in attrs(&payload[RtMsg::SIZE..]) {
    match ty {
      sys::RTA_DST => dst = attr_ip(rtm.family, p),
      sys::RTA_OIF => oif = attr_u32(p),
      sys::RTA_GATEWAY => via = attr_ip(rtm.family, p),
      sys::RTA_PRIORITY => metric = attr_u32(p),
      sys::RTA_TABLE => table = attr_u32(p).unwrap_or(table),
      _ => {}
    }
  }
  let dst = match (dst, rtm.family) {
    (Some(d), _) => d,
    (None, sys::AF_INET) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    (None, sys::AF_INET6) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    _ => return None,
  };
  if let IpAddr::V6(d) = dst {
    let link_local = rtm.dst_len == 64 && d.segments()[..4] == [0xfe80, 0, 0, 0];
    let multicast = rtm.dst_len >= 8 && d.octets()[0] == 0xff;
    if link_local || multicast {
      return None;
    }
  }
  let route = RouteSpec {
    to: IpCidr {
      addr: dst,
      prefix: rtm.dst_len,
      peer: None,
    },
    via,
    metric,
    table: (table != sys::RT_TABLE_MAIN).then_some(table),
  };
  Some((oif?, route))
}

/// The `RTM_NEWROUTE`/`RTM_DELROUTE` request for `r` through `index`.
pub(crate) fn route_request(ty: u16, flags: u16, index: u32, r: &RouteSpec) -> Request {
  let table = r.table.unwrap_or(sys::RT_TABLE_MAIN);
  let adding = ty == sys::RTM_NEWROUTE;
  let rtm = RtMsg {
    family: family_of(&r.to.addr),
    dst_len: r.to.prefix,
    // Ids above 255 only fit in RTA_TABLE.
    table: u8::try_from(table).unwrap_or(sys::RT_TABLE_UNSPEC),
    // On delete, protocol, scope and type are wildcards, so a route made by any tool matches.
    protocol: if adding {
      sys::RTPROT_BOOT
    } else {
      sys::RTPROT_UNSPEC
    },
    scope: match (adding, r.via) {
      (false, _) => sys::RT_SCOPE_NOWHERE,
      (true, None) => sys::RT_SCOPE_LINK,
      (true, Some(_)) => sys::RT_SCOPE_UNIVERSE,
    },
    ty: if adding { sys::RTN_UNICAST } else { sys::RTN_UNSPEC },
    ..Default::default()
  };
  let mut req = Request::new(ty, flags, &rtm.encode());
  if r.to.prefix > 0 {
    req.attr_ip(sys::RTA_DST, r.to.addr);
  }
  req.attr_u32(sys::RTA_OIF, index);
  if let Some(via) = r.via {
    req.attr_ip(sys::RTA_GATEWAY, via);
  }
  if let Some(m) = r.metric {
    req.attr_u32(sys::RTA_PRIORITY, m);
  }
  req.attr_u32(sys::RTA_TABLE, table);
  req
}

#[cfg(test)]
mod tests {
  use super::super::super::test_support::attr_bytes;
  use super::*;

  #[test]
  fn route_requests_and_replies() {
    let r = RouteSpec {
      to: "10.9.0.0/16".parse().unwrap(),
      via: None,
      metric: Some(50),
      table: Some(1000),
    };
    let msg = route_request(sys::RTM_NEWROUTE, sys::NLM_F_CREATE | sys::NLM_F_EXCL, 3, &r).finish(1);
    let rtm = RtMsg::decode(&msg[16..]).unwrap();
    assert_eq!(
      (
        rtm.family,
        rtm.dst_len,
        rtm.table,
        rtm.protocol,
        rtm.scope,
        rtm.ty
      ),
      (
        sys::AF_INET,
        16,
        sys::RT_TABLE_UNSPEC,
        sys::RTPROT_BOOT,
        sys::RT_SCOPE_LINK,
        sys::RTN_UNICAST
      )
    );
    let a: Vec<_> = attrs(&msg[28..]).map(|(t, p)| (t, p.to_vec())).collect();
    assert_eq!(
      a,
      vec![
        (sys::RTA_DST, vec![10, 9, 0, 0]),
        (sys::RTA_OIF, 3u32.to_ne_bytes().to_vec()),
        (sys::RTA_PRIORITY, 50u32.to_ne_bytes().to_vec()),
        (sys::RTA_TABLE, 1000u32.to_ne_bytes().to_vec()),
      ]
    );
    // Parse what the kernel would send back for it (RT_TABLE_COMPAT in the header, the id in RTA_TABLE).
    let mut reply = RtMsg { table: 252, ..rtm }.encode().to_vec();
    reply.extend_from_slice(&msg[28..]);
    assert_eq!(parse_route(&reply), Some((3, r.clone())));
    // Main table → None; a gateway route has universe scope and a default route no RTA_DST.
    let d = RouteSpec {
      to: "::/0".parse().unwrap(),
      via: Some("fd00::1".parse().unwrap()),
      metric: None,
      table: None,
    };
    let msg = route_request(sys::RTM_NEWROUTE, 0, 3, &d).finish(1);
    let rtm = RtMsg::decode(&msg[16..]).unwrap();
    assert_eq!((rtm.table, rtm.scope), (254, sys::RT_SCOPE_UNIVERSE));
    assert!(attrs(&msg[28..]).all(|(t, _)| t != sys::RTA_DST));
    let mut reply = msg[16..].to_vec();
    assert_eq!(parse_route(&reply), Some((3, d)));
    // Delete requests use wildcards for protocol, scope and type.
    let del = route_request(sys::RTM_DELROUTE, 0, 3, &r).finish(1);
    let rtm = RtMsg::decode(&del[16..]).unwrap();
    assert_eq!((rtm.protocol, rtm.scope, rtm.ty), (0, sys::RT_SCOPE_NOWHERE, 0));
    // Kernel-made routes are skipped: local type, and IPv6 link-local / multicast.
    reply[7] = 2; // RTN_LOCAL
    assert_eq!(parse_route(&reply), None);
    for (dst, len) in [("fe80::", 64), ("ff00::", 8)] {
      let rtm = RtMsg {
        family: sys::AF_INET6,
        dst_len: len,
        table: 254,
        ty: sys::RTN_UNICAST,
        ..Default::default()
      };
      let mut b = rtm.encode().to_vec();
      b.extend(attr_bytes(
        sys::RTA_DST,
        &dst.parse::<Ipv6Addr>().unwrap().octets(),
      ));
      b.extend(attr_bytes(sys::RTA_OIF, &3u32.to_ne_bytes()));
      assert_eq!(parse_route(&b), None, "{dst}/{len}");
    }
  }
}
