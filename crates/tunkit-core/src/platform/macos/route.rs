//! Routing socket messages (`net/route.h`): an `rt_msghdr` followed by the sockaddrs its `rtm_addrs` bits name, in
//! bit order, each padded to a multiple of 4 bytes. Built as bytes in native byte order, so it is all safe code.

use super::sys::{SockaddrIn, SockaddrIn6, AF_INET, AF_INET6, AF_LINK, RT_MSGHDR_SIZE, SOCKADDR_DL_SIZE};
use crate::config::RouteSpec;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const RTM_ADD: u8 = 0x1;
pub const RTM_DELETE: u8 = 0x2;
const RTM_VERSION: u8 = 5;
const RTF_UP: i32 = 0x1;
const RTF_GATEWAY: i32 = 0x2;
const RTF_HOST: i32 = 0x4;
const RTF_STATIC: i32 = 0x800;
const RTA_DST: i32 = 0x1;
const RTA_GATEWAY: i32 = 0x2;
const RTA_NETMASK: i32 = 0x4;
const RTA_IFP: i32 = 0x10;

/// The IPv4 netmask of a prefix length.
pub fn mask_v4(prefix: u8) -> Ipv4Addr {
  Ipv4Addr::from(if prefix == 0 {
    0
  } else {
    u32::MAX << (32 - u32::from(prefix.min(32)))
  })
}

/// The IPv6 netmask of a prefix length.
pub fn mask_v6(prefix: u8) -> Ipv6Addr {
  Ipv6Addr::from(if prefix == 0 {
    0
  } else {
    u128::MAX << (128 - u32::from(prefix.min(128)))
  })
}

/// The netmask of a prefix length.
pub fn prefix_mask(v6: bool, prefix: u8) -> IpAddr {
  if v6 {
    IpAddr::V6(mask_v6(prefix))
  } else {
    IpAddr::V4(mask_v4(prefix))
  }
}

/// The prefix length of a netmask (its leading one bits).
pub fn mask_prefix(mask: IpAddr) -> u8 {
  match mask {
    IpAddr::V4(m) => u32::from(m).leading_ones() as u8,
    IpAddr::V6(m) => u128::from(m).leading_ones() as u8,
  }
}

/// Appends a sockaddr for `ip`, padded to 4 bytes.
fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
  match ip {
    IpAddr::V4(a) => {
      let sa = SockaddrIn::new(a);
      out.extend_from_slice(&[sa.len, sa.family]);
      out.extend_from_slice(&sa.port.to_ne_bytes());
      out.extend_from_slice(&sa.addr);
      out.extend_from_slice(&sa.zero);
    }
    IpAddr::V6(a) => {
      let sa = SockaddrIn6::new(a);
      out.extend_from_slice(&[sa.len, sa.family]);
      out.extend_from_slice(&sa.port.to_ne_bytes());
      out.extend_from_slice(&sa.flowinfo.to_ne_bytes());
      out.extend_from_slice(&sa.addr);
      out.extend_from_slice(&sa.scope_id.to_ne_bytes());
    }
  }
  debug_assert_eq!(size_of::<SockaddrIn>() % 4, 0);
  debug_assert_eq!(size_of::<SockaddrIn6>() % 4, 0);
}

/// Appends a `sockaddr_dl` naming the interface `index` (how `route add -interface` names it).
fn push_link(out: &mut Vec<u8>, index: u32) {
  let mut sdl = [0u8; SOCKADDR_DL_SIZE];
  sdl[0] = SOCKADDR_DL_SIZE as u8;
  sdl[1] = AF_LINK;
  sdl[2..4].copy_from_slice(&(index as u16).to_ne_bytes());
  out.extend_from_slice(&sdl);
}

/// An `RTM_ADD` or `RTM_DELETE` message for `route` through the interface `index`. A direct route's gateway is
/// the interface itself; a route via a gateway also names the interface (`RTA_IFP`) so that it is bound to it.
pub fn message(ty: u8, seq: i32, index: u32, route: &RouteSpec) -> Vec<u8> {
  let v6 = !route.to.is_ipv4();
  let host = route.to.prefix == if v6 { 128 } else { 32 };
  let mut flags = RTF_UP | RTF_STATIC;
  let mut addrs = RTA_DST | RTA_GATEWAY;
  if route.via.is_some() {
    flags |= RTF_GATEWAY;
    addrs |= RTA_IFP;
  }
  if host {
    flags |= RTF_HOST;
  } else {
    addrs |= RTA_NETMASK;
  }
  let mut body = Vec::with_capacity(4 * 28);
  push_ip(&mut body, route.to.network());
  match route.via {
    Some(gw) => push_ip(&mut body, gw),
    None => push_link(&mut body, index),
  }
  if !host {
    push_ip(&mut body, prefix_mask(v6, route.to.prefix));
  }
  if route.via.is_some() {
    push_link(&mut body, index);
  }

  let total = RT_MSGHDR_SIZE + body.len();
  let mut m = Vec::with_capacity(total);
  m.extend_from_slice(&(total as u16).to_ne_bytes()); // rtm_msglen
  m.push(RTM_VERSION); // rtm_version
  m.push(ty); // rtm_type
  m.extend_from_slice(&0u16.to_ne_bytes()); // rtm_index (used only with RTF_IFSCOPE)
  m.extend_from_slice(&[0, 0]); // padding before the ints
  m.extend_from_slice(&flags.to_ne_bytes()); // rtm_flags
  m.extend_from_slice(&addrs.to_ne_bytes()); // rtm_addrs
  m.extend_from_slice(&0i32.to_ne_bytes()); // rtm_pid (the kernel fills it)
  m.extend_from_slice(&seq.to_ne_bytes()); // rtm_seq
  m.extend_from_slice(&0i32.to_ne_bytes()); // rtm_errno
  m.extend_from_slice(&0i32.to_ne_bytes()); // rtm_use
  m.extend_from_slice(&0u32.to_ne_bytes()); // rtm_inits
  m.resize(RT_MSGHDR_SIZE, 0); // rtm_rmx: 14 zero u32 metrics
  m.extend_from_slice(&body);
  debug_assert_eq!(m.len(), total);
  m
}

/// The address family byte utun wants in front of a packet of IP version `version`.
pub fn family_of_version(version: u8) -> u8 {
  if version == 6 {
    AF_INET6
  } else {
    AF_INET
  }
}
