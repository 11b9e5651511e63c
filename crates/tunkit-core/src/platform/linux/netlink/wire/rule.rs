//! `RTM_NEWRULE`/`RTM_DELRULE` messages: policy routing rules (`struct fib_rule_hdr`, then `FRA_*` attributes).

use std::net::IpAddr;

use super::{attr_ip, attr_str, attr_u32, attrs, Request};
use crate::config::IpCidr;
use crate::platform::linux::sys::netlink as sys;
use crate::platform::linux::sys::netlink::FibRuleHdr;
use crate::rule::RuleSpec;

/// The address family of `fib_rule_hdr` for an IPv6 rule or not.
pub(crate) fn rule_family(v6: bool) -> u8 {
  if v6 {
    sys::AF_INET6
  } else {
    sys::AF_INET
  }
}

/// The `RTM_NEWRULE`/`RTM_DELRULE` request for `r` (already validated). The action is always a table lookup.
/// The table id goes in `FRA_TABLE`, and in the header too when it fits in a byte (as iproute2 sends it); a /0
/// prefix is sent as none. For a delete, what `r` leaves out matches any value.
pub(crate) fn rule_request(ty: u16, flags: u16, r: &RuleSpec) -> Request {
  let prefix = |c: &Option<IpCidr>| c.map_or(0, |c| c.prefix);
  let hdr = FibRuleHdr {
    family: rule_family(r.v6),
    dst_len: prefix(&r.to),
    src_len: prefix(&r.from),
    table: u8::try_from(r.table).unwrap_or(sys::RT_TABLE_UNSPEC),
    action: sys::FR_ACT_TO_TBL,
    ..Default::default()
  };
  let mut req = Request::new(ty, flags, &hdr.encode());
  req.attr_u32(sys::FRA_PRIORITY, r.priority);
  req.attr_u32(sys::FRA_TABLE, r.table);
  for (ty, c) in [(sys::FRA_SRC, &r.from), (sys::FRA_DST, &r.to)] {
    if let Some(c) = c.filter(|c| c.prefix > 0) {
      req.attr_ip(ty, c.addr);
    }
  }
  if let Some((mark, mask)) = r.fwmark {
    req.attr_u32(sys::FRA_FWMARK, mark);
    req.attr_u32(sys::FRA_FWMASK, mask);
  }
  for (ty, name) in [(sys::FRA_IIFNAME, &r.iif), (sys::FRA_OIFNAME, &r.oif)] {
    if let Some(name) = name {
      let mut z = name.as_bytes().to_vec();
      z.push(0);
      req.attr(ty, &z);
    }
  }
  req
}

/// Parses the payload of an `RTM_NEWRULE` message. `None` for a malformed message, and for a rule that
/// [`RuleSpec`] cannot express as it is, so that what is listed can be removed as listed: another action than a
/// table lookup (`goto`, `blackhole`…), `not`, a `tos`, a selector tunkit does not model (realms, uid ranges,
/// ports, `suppress_prefixlength`…), a mark with bits outside its mask, table 0 (`l3mdev`).
pub(crate) fn parse_rule(payload: &[u8]) -> Option<RuleSpec> {
  let hdr = FibRuleHdr::decode(payload)?;
  let v6 = match hdr.family {
    sys::AF_INET => false,
    sys::AF_INET6 => true,
    _ => return None,
  };
  let detached = sys::FIB_RULE_IIF_DETACHED | sys::FIB_RULE_OIF_DETACHED;
  if hdr.action != sys::FR_ACT_TO_TBL || hdr.tos != 0 || hdr.flags & !detached != 0 {
    return None;
  }
  let mut r = RuleSpec::new(v6, 0, u32::from(hdr.table));
  let (mut src, mut dst, mut mark, mut mask) = (None, None, None, None);
  for (ty, p) in attrs(&payload[FibRuleHdr::SIZE..]) {
    match ty {
      // Absent when 0.
      sys::FRA_PRIORITY => r.priority = attr_u32(p)?,
      sys::FRA_TABLE => r.table = attr_u32(p)?,
      sys::FRA_SRC => src = Some(attr_ip(hdr.family, p)?),
      sys::FRA_DST => dst = Some(attr_ip(hdr.family, p)?),
      sys::FRA_FWMARK => mark = Some(attr_u32(p)?),
      sys::FRA_FWMASK => mask = Some(attr_u32(p)?),
      sys::FRA_IIFNAME => r.iif = Some(attr_str(p)).filter(|n| !n.is_empty()),
      sys::FRA_OIFNAME => r.oif = Some(attr_str(p)).filter(|n| !n.is_empty()),
      // Who made the rule selects nothing; padding is padding.
      sys::FRA_PROTOCOL | sys::FRA_PAD => {}
      // Dumped even when unset, as -1.
      sys::FRA_SUPPRESS_PREFIXLEN | sys::FRA_SUPPRESS_IFGROUP if attr_u32(p) == Some(u32::MAX) => {}
      _ => return None,
    }
  }
  let max = if v6 { 128 } else { 32 };
  let cidr = |addr: Option<IpAddr>, prefix: u8| -> Option<Option<IpCidr>> {
    match (addr, prefix) {
      (_, 0) => Some(None),
      _ if prefix > max => None,
      (Some(addr), prefix) => Some(Some(IpCidr {
        addr,
        prefix,
        peer: None,
      })),
      (None, _) => None,
    }
  };
  r.from = cidr(src, hdr.src_len)?;
  r.to = cidr(dst, hdr.dst_len)?;
  // The kernel sends the mark only when not 0, and the mask when either is not 0. A mask of 0 matches every
  // packet: no selector.
  r.fwmark = match (mark.unwrap_or(0), mask) {
    (_, Some(0)) | (0, None) => None,
    (m, Some(k)) if m & !k != 0 => return None,
    (m, Some(k)) => Some((m, k)),
    (m, None) => Some((m, u32::MAX)),
  };
  (r.table != 0).then_some(r)
}

#[cfg(test)]
mod tests {
  use super::super::super::test_support::attr_bytes;
  use super::super::attrs;
  use super::*;
  use crate::platform::linux::sys::netlink::NlMsgHdr;

  fn full_v4() -> RuleSpec {
    RuleSpec {
      from: Some("10.1.0.0/16".parse().unwrap()),
      to: Some("10.2.3.4/32".parse().unwrap()),
      fwmark: Some((0x10, 0xf0)),
      iif: Some("lo".into()),
      oif: Some("tk0".into()),
      ..RuleSpec::new(false, 9002, 7890)
    }
  }

  #[test]
  fn rule_requests_round_trip() {
    let r = full_v4();
    let msg = rule_request(sys::RTM_NEWRULE, sys::NLM_F_CREATE | sys::NLM_F_EXCL, &r).finish(3);
    let nl = NlMsgHdr::decode(&msg).unwrap();
    assert_eq!((nl.ty, nl.len as usize), (sys::RTM_NEWRULE, msg.len()));
    assert_eq!(
      nl.flags,
      sys::NLM_F_REQUEST | sys::NLM_F_ACK | sys::NLM_F_CREATE | sys::NLM_F_EXCL
    );
    let hdr = FibRuleHdr::decode(&msg[16..]).unwrap();
    assert_eq!(
      hdr,
      FibRuleHdr {
        family: sys::AF_INET,
        dst_len: 32,
        src_len: 16,
        // 7890 does not fit in the header.
        table: sys::RT_TABLE_UNSPEC,
        action: sys::FR_ACT_TO_TBL,
        ..Default::default()
      }
    );
    let got: Vec<_> = attrs(&msg[28..]).map(|(t, p)| (t, p.to_vec())).collect();
    assert_eq!(
      got,
      vec![
        (sys::FRA_PRIORITY, 9002u32.to_ne_bytes().to_vec()),
        (sys::FRA_TABLE, 7890u32.to_ne_bytes().to_vec()),
        (sys::FRA_SRC, vec![10, 1, 0, 0]),
        (sys::FRA_DST, vec![10, 2, 3, 4]),
        (sys::FRA_FWMARK, 0x10u32.to_ne_bytes().to_vec()),
        (sys::FRA_FWMASK, 0xf0u32.to_ne_bytes().to_vec()),
        (sys::FRA_IIFNAME, b"lo\0".to_vec()),
        (sys::FRA_OIFNAME, b"tk0\0".to_vec()),
      ]
    );
    assert_eq!(parse_rule(&msg[16..]), Some(r));

    let v6 = RuleSpec {
      from: Some("fd00::1".parse().unwrap()),
      ..RuleSpec::new(true, 9000, 254)
    };
    let msg = rule_request(sys::RTM_DELRULE, 0, &v6).finish(4);
    assert_eq!(
      NlMsgHdr::decode(&msg).unwrap().flags,
      sys::NLM_F_REQUEST | sys::NLM_F_ACK
    );
    let hdr = FibRuleHdr::decode(&msg[16..]).unwrap();
    assert_eq!(
      (hdr.family, hdr.src_len, hdr.dst_len, hdr.table),
      (sys::AF_INET6, 128, 0, 254)
    );
    assert_eq!(parse_rule(&msg[16..]), Some(v6));

    // A /0 prefix is no selector at all, and is sent as none.
    let all = RuleSpec {
      to: Some("0.0.0.0/0".parse().unwrap()),
      ..RuleSpec::new(false, 1, 100)
    };
    let msg = rule_request(sys::RTM_NEWRULE, 0, &all).finish(5);
    assert!(attrs(&msg[28..]).all(|(t, _)| t != sys::FRA_DST));
    assert_eq!(parse_rule(&msg[16..]), Some(RuleSpec::new(false, 1, 100)));

    // A mark of 0 under a mask: the kernel sends the mask alone.
    let zero = RuleSpec {
      fwmark: Some((0, 0xff)),
      ..RuleSpec::new(true, 7, 100)
    };
    let mut reply = rule_request(sys::RTM_NEWRULE, 0, &zero).finish(6)[16..].to_vec();
    assert_eq!(parse_rule(&reply), Some(zero.clone()));
    reply.truncate(FibRuleHdr::SIZE);
    reply.extend(attr_bytes(sys::FRA_PRIORITY, &7u32.to_ne_bytes()));
    reply.extend(attr_bytes(sys::FRA_TABLE, &100u32.to_ne_bytes()));
    reply.extend(attr_bytes(sys::FRA_FWMASK, &0xffu32.to_ne_bytes()));
    assert_eq!(parse_rule(&reply), Some(zero));
  }

  #[test]
  fn rule_replies_parse_as_the_kernel_sends_them() {
    // `0: from all lookup local`: no FRA_PRIORITY (it is 0), the table in the header and FRA_TABLE, the
    // protocol, and suppress_prefixlength unset (-1).
    let kernel = |hdr: FibRuleHdr, extra: &[(u16, Vec<u8>)]| {
      let mut b = hdr.encode().to_vec();
      b.extend(attr_bytes(sys::FRA_TABLE, &u32::from(hdr.table).to_ne_bytes()));
      b.extend(attr_bytes(sys::FRA_SUPPRESS_PREFIXLEN, &u32::MAX.to_ne_bytes()));
      b.extend(attr_bytes(sys::FRA_PROTOCOL, &[2]));
      for (t, p) in extra {
        b.extend(attr_bytes(*t, p));
      }
      b
    };
    let local = FibRuleHdr {
      family: sys::AF_INET,
      table: 255,
      action: sys::FR_ACT_TO_TBL,
      ..Default::default()
    };
    assert_eq!(
      parse_rule(&kernel(local, &[])),
      Some(RuleSpec::new(false, 0, 255))
    );
    let main6 = FibRuleHdr {
      family: sys::AF_INET6,
      table: 254,
      ..local
    };
    let prio = (sys::FRA_PRIORITY, 32766u32.to_ne_bytes().to_vec());
    assert_eq!(
      parse_rule(&kernel(main6, std::slice::from_ref(&prio))),
      Some(RuleSpec::new(true, 32766, 254))
    );
    // A table above 255: RT_TABLE_COMPAT (252) in the header, the id in FRA_TABLE (which comes later here).
    let mut b = kernel(
      FibRuleHdr { table: 252, ..local },
      &[prio.clone(), (sys::FRA_TABLE, 7890u32.to_ne_bytes().to_vec())],
    );
    assert_eq!(parse_rule(&b), Some(RuleSpec::new(false, 32766, 7890)));
    // An interface that does not exist (now) is still the rule's.
    b[8..12].copy_from_slice(&sys::FIB_RULE_OIF_DETACHED.to_ne_bytes());
    b.extend(attr_bytes(sys::FRA_OIFNAME, b"gone0\0"));
    assert_eq!(parse_rule(&b).and_then(|r| r.oif), Some("gone0".to_string()));

    // Rules the model cannot express are left out.
    let skipped: Vec<(&str, Vec<u8>)> = vec![
      ("blackhole", kernel(FibRuleHdr { action: 6, ..local }, &[])),
      (
        "not",
        kernel(
          FibRuleHdr {
            flags: sys::FIB_RULE_INVERT,
            ..local
          },
          &[],
        ),
      ),
      ("tos", kernel(FibRuleHdr { tos: 0x10, ..local }, &[])),
      (
        "suppress_prefixlength 0",
        kernel(
          local,
          &[(sys::FRA_SUPPRESS_PREFIXLEN, 0u32.to_ne_bytes().to_vec())],
        ),
      ),
      (
        "realms",
        kernel(local, &[(sys::FRA_FLOW, 1u32.to_ne_bytes().to_vec())]),
      ),
      (
        "goto",
        kernel(local, &[(sys::FRA_GOTO, 100u32.to_ne_bytes().to_vec())]),
      ),
      (
        "mark outside its mask",
        kernel(
          local,
          &[
            (sys::FRA_FWMARK, 0x11u32.to_ne_bytes().to_vec()),
            (sys::FRA_FWMASK, 0xf0u32.to_ne_bytes().to_vec()),
          ],
        ),
      ),
      ("table 0", kernel(FibRuleHdr { table: 0, ..local }, &[])),
      ("another family", kernel(FibRuleHdr { family: 7, ..local }, &[])),
    ];
    for (what, b) in skipped {
      assert_eq!(parse_rule(&b), None, "{what}");
    }
    // A mask of 0 is no mark selector; a mark without a mask (old kernels) has a full one.
    let unmasked = kernel(
      local,
      &[
        (sys::FRA_FWMARK, 5u32.to_ne_bytes().to_vec()),
        (sys::FRA_FWMASK, 0u32.to_ne_bytes().to_vec()),
      ],
    );
    assert_eq!(parse_rule(&unmasked).unwrap().fwmark, None);
    let old = kernel(local, &[(sys::FRA_FWMARK, 5u32.to_ne_bytes().to_vec())]);
    assert_eq!(parse_rule(&old).unwrap().fwmark, Some((5, u32::MAX)));
  }

  #[test]
  fn malformed_rule_messages_never_panic() {
    let valid = rule_request(sys::RTM_NEWRULE, 0, &full_v4()).finish(1)[16..].to_vec();
    // Every truncation: a cut header or attribute never yields a rule with a field missing or made up.
    for n in 0..valid.len() {
      if let Some(r) = parse_rule(&valid[..n]) {
        assert!(n >= FibRuleHdr::SIZE, "{n}");
        assert_ne!(r, full_v4(), "{n} bytes parsed into the whole rule");
      }
    }
    let hdr = |src_len| FibRuleHdr {
      family: sys::AF_INET,
      src_len,
      table: 100,
      action: sys::FR_ACT_TO_TBL,
      ..Default::default()
    };
    let with = |h: FibRuleHdr, t: u16, p: &[u8]| {
      let mut b = h.encode().to_vec();
      b.extend(attr_bytes(t, p));
      b
    };
    for (what, b) in [
      ("short priority", with(hdr(0), sys::FRA_PRIORITY, &[1, 2])),
      ("short table", with(hdr(0), sys::FRA_TABLE, &[1])),
      ("short source", with(hdr(8), sys::FRA_SRC, &[10, 0])),
      (
        "prefix longer than the family",
        with(hdr(33), sys::FRA_SRC, &[10, 0, 0, 0]),
      ),
      ("prefix without its address", hdr(8).encode().to_vec()),
    ] {
      assert_eq!(parse_rule(&b), None, "{what}");
    }
    // Random bytes, and the valid message with random bytes changed: never a panic. (xorshift, fixed seed)
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
      seed ^= seed << 13;
      seed ^= seed >> 7;
      seed ^= seed << 17;
      seed
    };
    for i in 0..20_000 {
      let mut b = if i % 2 == 0 {
        let len = (next() % 96) as usize;
        let mut b: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if let Some(f) = b.first_mut() {
          *f = if next() % 2 == 0 {
            sys::AF_INET
          } else {
            sys::AF_INET6
          };
        }
        if let Some(a) = b.get_mut(7) {
          *a = sys::FR_ACT_TO_TBL;
        }
        b
      } else {
        valid.clone()
      };
      for _ in 0..(next() % 4) {
        if !b.is_empty() {
          let at = (next() as usize) % b.len();
          b[at] = next() as u8;
        }
      }
      if let Some(r) = parse_rule(&b) {
        // Whatever parses is a rule the kernel could have made, and encodes back.
        let back = rule_request(sys::RTM_NEWRULE, 0, &r).finish(1);
        assert_eq!(parse_rule(&back[16..]).map(|x| x.priority), Some(r.priority));
      }
    }
  }
}
