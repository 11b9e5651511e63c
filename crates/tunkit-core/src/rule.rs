//! Policy routing rules (`ip rule`): which routing table the kernel looks a packet up in, chosen by its source,
//! destination, firewall mark or interfaces. A rule belongs to the network namespace, not to a device. Only rules
//! that look up a table are modelled (not `goto`, `blackhole`, `prohibit`… nor `not`, `tos`, ports or uid
//! ranges). Linux only: [`add`], [`remove`] and [`list`] are `Unsupported` elsewhere; the kernel side is in
//! `platform::linux::netlink`.

use std::fmt;

use crate::config::{validate_name, IpCidr};
use crate::error::{Error, ErrorKind, Result};

/// The main routing table (`lookup main`).
pub const TABLE_MAIN: u32 = 254;

/// One rule: packets that match every selector given are looked up in `table`. A selector left out matches
/// every packet; when removing, it matches every rule (as `ip rule del` does).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleSpec {
  /// An IPv6 rule (`ip -6 rule`); otherwise IPv4. `from` and `to` must be of this family.
  pub v6: bool,
  /// Preference: rules are tried from the lowest; several may share one.
  pub priority: u32,
  /// The routing table to look up: 1..=4294967295 (254 is main, 255 local, 253 default).
  pub table: u32,
  /// Source prefix. A /0 is the same as none.
  pub from: Option<IpCidr>,
  /// Destination prefix. A /0 is the same as none.
  pub to: Option<IpCidr>,
  /// Firewall mark and mask: the rule matches packets whose `mark & mask == value`.
  pub fwmark: Option<(u32, u32)>,
  /// Input interface (`iif`); `lo` matches the packets this host sends.
  pub iif: Option<String>,
  /// Output interface (`oif`), for sockets bound to a device.
  pub oif: Option<String>,
}

impl RuleSpec {
  /// A rule without selectors: every packet of the family that gets to `priority` is looked up in `table`.
  pub fn new(v6: bool, priority: u32, table: u32) -> RuleSpec {
    RuleSpec {
      v6,
      priority,
      table,
      from: None,
      to: None,
      fwmark: None,
      iif: None,
      oif: None,
    }
  }

  fn family(&self) -> &'static str {
    if self.v6 {
      "IPv6"
    } else {
      "IPv4"
    }
  }

  /// Checks everything the kernel would refuse, or silently read differently, before it is sent: table 0 (the
  /// kernel makes up a new table for an IPv4 one), prefixes of the other family, too long or with a peer, a mark
  /// with bits outside its mask or an empty mask, and interface names.
  pub fn validate(&self) -> Result<()> {
    if self.table == 0 {
      return Err(Error::new(
        ErrorKind::InvalidArgument,
        format!("{self}: table 0 is not a routing table (1..=4294967295; main is 254)"),
      ));
    }
    let max = if self.v6 { 128 } else { 32 };
    for (what, c) in [("from", &self.from), ("to", &self.to)] {
      let Some(c) = c else { continue };
      if c.is_ipv4() == self.v6 {
        return Err(Error::new(
          ErrorKind::InvalidAddress,
          format!("{self}: {what} {c} is not an {} prefix", self.family()),
        ));
      }
      if c.prefix > max {
        return Err(Error::new(
          ErrorKind::InvalidAddress,
          format!(
            "{self}: prefix /{} of {what} is too long for {}",
            c.prefix, c.addr
          ),
        ));
      }
      if c.peer.is_some() {
        return Err(Error::new(
          ErrorKind::InvalidAddress,
          format!("{self}: {what} is a prefix, it has no peer"),
        ));
      }
    }
    if let Some((mark, mask)) = self.fwmark {
      if mask == 0 {
        return Err(Error::new(
          ErrorKind::InvalidArgument,
          format!("{self}: fwmask 0 matches every packet; leave the fwmark out instead"),
        ));
      }
      if mark & !mask != 0 {
        return Err(Error::new(
          ErrorKind::InvalidArgument,
          format!("{self}: fwmark {mark:#x} has bits outside its mask {mask:#x}, so it never matches"),
        ));
      }
    }
    for (what, name) in [("iif", &self.iif), ("oif", &self.oif)] {
      if let Some(name) = name {
        validate_name(name).map_err(|e| Error::new(e.kind(), format!("{self}: {what}: {e}")))?;
      }
    }
    Ok(())
  }
}

/// Adds `r` in the calling thread's network namespace; a rule equal in every field is `AlreadyExists`.
pub fn add(r: &RuleSpec) -> Result<()> {
  #[cfg(target_os = "linux")]
  {
    crate::platform::linux::netlink::Netlink::open()?.add_rule(r)
  }
  #[cfg(not(target_os = "linux"))]
  {
    let _ = r;
    Err(Error::unsupported("adding a policy routing rule"))
  }
}

/// Removes the first rule with `r`'s priority, table and selectors (those `r` leaves out match any) in the calling
/// thread's network namespace; none is `NotFound`.
pub fn remove(r: &RuleSpec) -> Result<()> {
  #[cfg(target_os = "linux")]
  {
    crate::platform::linux::netlink::Netlink::open()?.remove_rule(r)
  }
  #[cfg(not(target_os = "linux"))]
  {
    let _ = r;
    Err(Error::unsupported("removing a policy routing rule"))
  }
}

/// The IPv6 (`v6`) or IPv4 rules of the calling thread's network namespace, in the order the kernel tries them,
/// its own included; rules [`RuleSpec`] cannot express are left out.
pub fn list(v6: bool) -> Result<Vec<RuleSpec>> {
  #[cfg(target_os = "linux")]
  {
    crate::platform::linux::netlink::Netlink::open()?.rules(v6)
  }
  #[cfg(not(target_os = "linux"))]
  {
    let _ = v6;
    Err(Error::unsupported("listing policy routing rules"))
  }
}

/// `ip rule` syntax, with the family first: `IPv4 rule pref 9000 from 10.0.0.1/32 lookup 254`.
impl fmt::Display for RuleSpec {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    write!(f, "{} rule pref {} from ", self.family(), self.priority)?;
    match &self.from {
      Some(c) => write!(f, "{c}")?,
      None => f.write_str("all")?,
    }
    if let Some(c) = &self.to {
      write!(f, " to {c}")?;
    }
    if let Some((mark, mask)) = self.fwmark {
      write!(f, " fwmark {mark:#x}/{mask:#x}")?;
    }
    if let Some(i) = &self.iif {
      write!(f, " iif {i}")?;
    }
    if let Some(o) = &self.oif {
      write!(f, " oif {o}")?;
    }
    write!(f, " lookup {}", self.table)
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn rules_are_validated_and_described() {
    let mut r = RuleSpec::new(false, 9000, TABLE_MAIN);
    r.from = Some("10.0.0.1".parse().unwrap());
    r.fwmark = Some((0x10, 0xf0));
    r.iif = Some("lo".into());
    assert_eq!(r.validate(), Ok(()));
    assert_eq!(
      r.to_string(),
      "IPv4 rule pref 9000 from 10.0.0.1/32 fwmark 0x10/0xf0 iif lo lookup 254"
    );
    assert_eq!(
      RuleSpec::new(true, 1, 7890).to_string(),
      "IPv6 rule pref 1 from all lookup 7890"
    );

    let kind = |r: &RuleSpec| r.validate().unwrap_err().kind();
    assert_eq!(kind(&RuleSpec::new(false, 1, 0)), ErrorKind::InvalidArgument);
    let mixed = RuleSpec {
      to: Some("fd00::/8".parse().unwrap()),
      ..RuleSpec::new(false, 1, 100)
    };
    assert_eq!(kind(&mixed), ErrorKind::InvalidAddress);
    let mixed6 = RuleSpec {
      from: Some("10.0.0.0/8".parse().unwrap()),
      ..RuleSpec::new(true, 1, 100)
    };
    assert_eq!(kind(&mixed6), ErrorKind::InvalidAddress);
    let long = RuleSpec {
      from: Some(IpCidr {
        addr: "10.0.0.0".parse().unwrap(),
        prefix: 33,
        peer: None,
      }),
      ..RuleSpec::new(false, 1, 100)
    };
    assert_eq!(kind(&long), ErrorKind::InvalidAddress);
    let peer = RuleSpec {
      from: Some(
        "10.0.0.1/32"
          .parse::<IpCidr>()
          .unwrap()
          .with_peer("10.0.0.2".parse().unwrap())
          .unwrap(),
      ),
      ..RuleSpec::new(false, 1, 100)
    };
    assert_eq!(kind(&peer), ErrorKind::InvalidAddress);
    for fwmark in [(1, 0), (0, 0), (0x11, 0xf0)] {
      let r = RuleSpec {
        fwmark: Some(fwmark),
        ..RuleSpec::new(false, 1, 100)
      };
      assert_eq!(kind(&r), ErrorKind::InvalidArgument, "{fwmark:?}");
    }
    let name = RuleSpec {
      oif: Some("bad/name".into()),
      ..RuleSpec::new(false, 1, 100)
    };
    assert_eq!(kind(&name), ErrorKind::InvalidName);
    let e = RuleSpec::new(true, 5, 0).validate().unwrap_err();
    assert!(
      e.message()
        .starts_with("IPv6 rule pref 5 from all lookup 0: table 0"),
      "{e}"
    );
  }
}
