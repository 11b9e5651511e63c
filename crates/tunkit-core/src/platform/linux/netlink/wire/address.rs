//! `RTM_NEWADDR`/`RTM_DELADDR` messages: an interface's addresses.

use std::net::IpAddr;

use super::{attr_ip, attr_u32, attrs, family_of, Request};
use crate::config::IpCidr;
use crate::platform::linux::sys::netlink as sys;
use crate::platform::linux::sys::netlink::IfAddrMsg;

/// Parses the payload of an `RTM_NEWADDR`/`RTM_DELADDR` message into `(ifindex, address)`. `IFA_LOCAL` is the
/// interface's own address; `IFA_ADDRESS` is the peer when it differs (point-to-point), and the only address
/// attribute IPv6 sends without a peer.
pub(crate) fn parse_address(payload: &[u8]) -> Option<(u32, IpCidr)> {
  let ifa = IfAddrMsg::decode(payload)?;
  let (mut local, mut address) = (None, None);
  for (ty, p) in attrs(&payload[IfAddrMsg::SIZE..]) {
    match ty {
      sys::IFA_LOCAL => local = attr_ip(ifa.family, p),
      sys::IFA_ADDRESS => address = attr_ip(ifa.family, p),
      _ => {}
    }
  }
  let addr = local.or(address)?;
  let peer = match (local, address) {
    (Some(l), Some(a)) if l != a => Some(a),
    _ => None,
  };
  Some((
    ifa.index,
    IpCidr {
      addr,
      prefix: ifa.prefixlen,
      peer,
    },
  ))
}

/// The interface index and flags (`ifa_flags`, widened by an `IFA_FLAGS` attribute when present) of an
/// `RTM_NEWADDR` payload.
pub(crate) fn address_flags(payload: &[u8]) -> Option<(u32, u32)> {
  let ifa = IfAddrMsg::decode(payload)?;
  let mut flags = u32::from(ifa.flags);
  for (ty, p) in attrs(&payload[IfAddrMsg::SIZE..]) {
    if ty == sys::IFA_FLAGS {
      flags = attr_u32(p).unwrap_or(flags);
    }
  }
  Some((ifa.index, flags))
}

/// The `RTM_NEWADDR`/`RTM_DELADDR` request for `a`: `IFA_LOCAL` is the address, `IFA_ADDRESS` the peer (or
/// the address again when adding). A delete without a peer leaves `IFA_ADDRESS` out, so it matches the address
/// whatever its peer. `ifa_flags` carries `IFA_F_NODAD` where the caller asks for it.
pub(crate) fn address_request(ty: u16, flags: u16, index: u32, a: &IpCidr, ifa_flags: u8) -> Request {
  // As iproute2 does: IPv4 loopback addresses get host scope; IPv6 scopes are derived by the kernel.
  let scope = match a.addr {
    IpAddr::V4(v4) if v4.is_loopback() => sys::RT_SCOPE_HOST,
    _ => sys::RT_SCOPE_UNIVERSE,
  };
  let ifa = IfAddrMsg {
    family: family_of(&a.addr),
    prefixlen: a.prefix,
    flags: ifa_flags,
    scope,
    index,
  };
  let mut req = Request::new(ty, flags, &ifa.encode());
  req.attr_ip(sys::IFA_LOCAL, a.addr);
  if ty == sys::RTM_NEWADDR || a.peer.is_some() {
    req.attr_ip(sys::IFA_ADDRESS, a.peer.unwrap_or(a.addr));
  }
  req
}

#[cfg(test)]
mod tests {
  use std::net::Ipv6Addr;

  use super::super::super::test_support::attr_bytes;
  use super::super::attrs;
  use super::*;
  use crate::platform::linux::sys::netlink::NlMsgHdr;

  #[test]
  fn address_messages_parse_with_peer() {
    let build = |family, prefixlen, local: Option<&[u8]>, address: &[u8]| {
      let mut b = IfAddrMsg {
        family,
        prefixlen,
        index: 5,
        ..Default::default()
      }
      .encode()
      .to_vec();
      if let Some(l) = local {
        b.extend(attr_bytes(sys::IFA_LOCAL, l));
      }
      b.extend(attr_bytes(sys::IFA_ADDRESS, address));
      b.extend(attr_bytes(3, b"tk0\0"));
      b
    };
    let a = parse_address(&build(sys::AF_INET, 24, Some(&[10, 7, 0, 1]), &[10, 7, 0, 1])).unwrap();
    assert_eq!(a, (5, "10.7.0.1/24".parse().unwrap()));
    let (_, p) = parse_address(&build(sys::AF_INET, 32, Some(&[10, 7, 0, 1]), &[10, 7, 0, 2])).unwrap();
    assert_eq!(p.peer, Some("10.7.0.2".parse().unwrap()));
    let v6: Ipv6Addr = "fd07::1".parse().unwrap();
    let (_, a6) = parse_address(&build(sys::AF_INET6, 64, None, &v6.octets())).unwrap();
    assert_eq!(a6, "fd07::1/64".parse().unwrap());
  }

  #[test]
  fn address_requests_carry_local_and_peer() {
    let a = "10.7.0.1/32"
      .parse::<IpCidr>()
      .unwrap()
      .with_peer("10.7.0.2".parse().unwrap())
      .unwrap();
    let msg = address_request(sys::RTM_NEWADDR, sys::NLM_F_CREATE | sys::NLM_F_EXCL, 5, &a, 0).finish(1);
    let hdr = NlMsgHdr::decode(&msg).unwrap();
    assert_eq!(
      hdr.flags,
      sys::NLM_F_REQUEST | sys::NLM_F_ACK | sys::NLM_F_CREATE | sys::NLM_F_EXCL
    );
    let ifa = IfAddrMsg::decode(&msg[16..]).unwrap();
    assert_eq!((ifa.family, ifa.prefixlen, ifa.index), (sys::AF_INET, 32, 5));
    let got: Vec<_> = attrs(&msg[24..]).map(|(t, p)| (t, p.to_vec())).collect();
    assert_eq!(
      got,
      vec![
        (sys::IFA_LOCAL, vec![10, 7, 0, 1]),
        (sys::IFA_ADDRESS, vec![10, 7, 0, 2])
      ]
    );
  }
}
