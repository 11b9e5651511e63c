//! `RTM_NEWLINK` messages: a link's state and counters.

use super::{attr_str, attr_u32, attrs};
use crate::backend::{KernelStats, LinkInfo};
use crate::platform::linux::sys::netlink as sys;
use crate::platform::linux::sys::netlink::IfInfoMsg;

/// Parses the payload of an `RTM_NEWLINK` message.
pub(crate) fn parse_link(payload: &[u8]) -> std::result::Result<LinkInfo, String> {
  let ifi = IfInfoMsg::decode(payload).ok_or("RTM_NEWLINK shorter than ifinfomsg")?;
  let mut info = LinkInfo {
    index: ifi.index as u32,
    up: ifi.flags & sys::IFF_UP != 0,
    ..Default::default()
  };
  let mut stats32 = None;
  for (ty, p) in attrs(&payload[IfInfoMsg::SIZE..]) {
    match ty {
      sys::IFLA_IFNAME => info.name = attr_str(p),
      sys::IFLA_MTU => info.mtu = attr_u32(p).unwrap_or(0),
      sys::IFLA_TXQLEN => info.tx_queue_len = attr_u32(p).unwrap_or(0),
      sys::IFLA_ADDRESS => info.mac = <[u8; 6]>::try_from(p).ok(),
      sys::IFLA_STATS64 => {
        if let Some(s) = parse_stats(p, 8) {
          info.stats = s;
          stats32 = None;
        }
      }
      // The 32-bit counters, only used when a (very old) kernel sends no IFLA_STATS64.
      sys::IFLA_STATS if info.stats == KernelStats::default() => stats32 = parse_stats(p, 4),
      _ => {}
    }
  }
  if let Some(s) = stats32 {
    info.stats = s;
  }
  Ok(info)
}

/// Reads the leading counters of `rtnl_link_stats64` (`width` 8) or `rtnl_link_stats` (`width` 4).
fn parse_stats(p: &[u8], width: usize) -> Option<KernelStats> {
  if p.len() < sys::LINK_STATS_FIELDS * width {
    return None;
  }
  let f = |i: usize| -> u64 {
    let b = &p[i * width..(i + 1) * width];
    if width == 8 {
      u64::from_ne_bytes(b.try_into().unwrap_or_default())
    } else {
      u64::from(u32::from_ne_bytes(b.try_into().unwrap_or_default()))
    }
  };
  Some(KernelStats {
    rx_packets: f(0),
    tx_packets: f(1),
    rx_bytes: f(2),
    tx_bytes: f(3),
    rx_errors: f(4),
    tx_errors: f(5),
    rx_dropped: f(6),
    tx_dropped: f(7),
  })
}

#[cfg(test)]
mod tests {
  use super::super::super::test_support::{attr_bytes, message};
  use super::super::{messages, parse_error};
  use super::*;

  #[test]
  fn newlink_reply_parses_into_link_info() {
    let ifi = IfInfoMsg {
      index: 3,
      flags: sys::IFF_UP | 0x40,
      ..Default::default()
    };
    let mut body = ifi.encode().to_vec();
    body.extend(attr_bytes(sys::IFLA_IFNAME, b"tk0\0"));
    body.extend(attr_bytes(sys::IFLA_MTU, &1420u32.to_ne_bytes()));
    body.extend(attr_bytes(sys::IFLA_TXQLEN, &500u32.to_ne_bytes()));
    body.extend(attr_bytes(sys::IFLA_ADDRESS, &[2, 0, 0x5e, 0, 0, 1]));
    let mut stats = Vec::new();
    for v in 1..=24u64 {
      stats.extend_from_slice(&(v * 10).to_ne_bytes());
    }
    body.extend(attr_bytes(sys::IFLA_STATS, &[0xff; 96])); // the 32-bit copy must not win over STATS64
    body.extend(attr_bytes(sys::IFLA_STATS64, &stats));
    let mut datagram = message(sys::RTM_NEWLINK, 0, 9, &body);
    datagram.extend(message(sys::NLMSG_ERROR, sys::NLM_F_CAPPED, 9, &[0; 20]));
    let msgs = messages(&datagram).unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].hdr.seq, 9);
    let info = parse_link(msgs[0].payload).unwrap();
    assert_eq!(
      info,
      LinkInfo {
        name: "tk0".into(),
        index: 3,
        mtu: 1420,
        up: true,
        tx_queue_len: 500,
        mac: Some([2, 0, 0x5e, 0, 0, 1]),
        stats: KernelStats {
          rx_packets: 10,
          tx_packets: 20,
          rx_bytes: 30,
          tx_bytes: 40,
          rx_errors: 50,
          tx_errors: 60,
          rx_dropped: 70,
          tx_dropped: 80,
        },
      }
    );
    assert_eq!(
      parse_error(true, msgs[1].hdr.flags, msgs[1].payload).unwrap(),
      (0, None)
    );
    // A TUN device has no hardware address; a short stats attribute is ignored.
    let mut body = IfInfoMsg {
      index: 4,
      ..Default::default()
    }
    .encode()
    .to_vec();
    body.extend(attr_bytes(sys::IFLA_STATS64, &[1; 16]));
    let info = parse_link(&body).unwrap();
    assert_eq!(
      (info.mac, info.up, info.stats),
      (None, false, KernelStats::default())
    );
    assert!(parse_link(&[0; 8]).is_err());
  }
}
