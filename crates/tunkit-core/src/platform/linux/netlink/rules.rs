//! Policy routing rules (`ip rule`): adding, removing and listing the rules of the network namespace the socket
//! belongs to, IPv4 and IPv6. Rules are not per device.

use super::wire::rule::{parse_rule, rule_family, rule_request};
use super::wire::Request;
use super::{Netlink, Refine};
use crate::error::{Error, ErrorKind, Result};
use crate::platform::linux::sys::netlink as sys;
use crate::platform::linux::sys::netlink::FibRuleHdr;
use crate::rule::RuleSpec;

/// `EAFNOSUPPORT` on a rule: the kernel has no policy routing for the family (IPv6 disabled, or a kernel built
/// without multiple tables).
const NO_FAMILY: Refine = (
  sys::EAFNOSUPPORT,
  ErrorKind::Unsupported,
  "the kernel has no policy routing for this family",
);

/// Validates `r` for operation `op`, the rule's description in the message.
fn check_rule(op: &str, r: &RuleSpec) -> Result<()> {
  r.validate()
    .map_err(|e| Error::new(e.kind(), format!("{op} {e}")))
}

impl Netlink {
  /// Adds a rule. A rule equal in every field is `AlreadyExists`; an invalid one (table 0, a prefix of the
  /// other family…) is refused before it is sent.
  pub fn add_rule(&self, r: &RuleSpec) -> Result<()> {
    check_rule("add", r)?;
    let req = rule_request(sys::RTM_NEWRULE, sys::NLM_F_CREATE | sys::NLM_F_EXCL, r);
    let refine = [
      (sys::EEXIST, ErrorKind::AlreadyExists, "the rule exists"),
      NO_FAMILY,
    ];
    self.execute(&req, &format!("add {r}"), &refine)
  }

  /// Removes the first rule, in the order the kernel tries them, with `r`'s priority, table and every selector
  /// `r` has (the selectors it leaves out match any value, as with `ip rule del`). None is `NotFound`.
  pub fn remove_rule(&self, r: &RuleSpec) -> Result<()> {
    check_rule("remove", r)?;
    let req = rule_request(sys::RTM_DELRULE, 0, r);
    let refine = [(sys::ENOENT, ErrorKind::NotFound, "no such rule"), NO_FAMILY];
    self.execute(&req, &format!("remove {r}"), &refine)
  }

  /// The rules of the family in the order the kernel tries them, the kernel's own included (`lookup local` at
  /// 0, `main` at 32766 and, for IPv4, `default` at 32767). Rules [`RuleSpec`] cannot express (see
  /// `parse_rule`: `goto`, `blackhole`, `not`, `tos`, uid ranges…) are left out.
  pub fn rules(&self, v6: bool) -> Result<Vec<RuleSpec>> {
    let context = format!("list IPv{} rules", if v6 { 6 } else { 4 });
    let hdr = FibRuleHdr {
      family: rule_family(v6),
      ..Default::default()
    };
    let req = Request::new(sys::RTM_GETRULE, sys::NLM_F_DUMP, &hdr.encode());
    Ok(
      self
        .dump(&req, &context, &[NO_FAMILY])?
        .iter()
        .filter(|(ty, _)| *ty == sys::RTM_NEWRULE)
        .filter_map(|(_, payload)| parse_rule(payload))
        .filter(|r| r.v6 == v6)
        .collect(),
    )
  }
}

#[cfg(test)]
mod tests {
  use super::super::test_support::in_netns;
  use super::*;

  #[test]
  fn netns_rules() {
    in_netns("netns_rules", || {
      let nl = Netlink::open().unwrap();
      // A new namespace has the kernel's rules only.
      assert_eq!(
        nl.rules(false).unwrap(),
        vec![
          RuleSpec::new(false, 0, 255),
          RuleSpec::new(false, 32766, 254),
          RuleSpec::new(false, 32767, 253)
        ]
      );
      assert_eq!(
        nl.rules(true).unwrap(),
        vec![RuleSpec::new(true, 0, 255), RuleSpec::new(true, 32766, 254)]
      );

      let from = RuleSpec {
        from: Some("10.7.0.1".parse().unwrap()),
        ..RuleSpec::new(false, 9000, 254)
      };
      let table = RuleSpec::new(false, 9001, 7890);
      let full = RuleSpec {
        from: Some("10.1.0.0/16".parse().unwrap()),
        to: Some("10.2.0.0/16".parse().unwrap()),
        fwmark: Some((0x10, 0xf0)),
        iif: Some("lo".into()),
        // An interface that does not exist: the rule waits for it.
        oif: Some("tknone0".into()),
        ..RuleSpec::new(false, 9002, 100)
      };
      let from6 = RuleSpec {
        from: Some("fd07::1".parse().unwrap()),
        to: Some("fd08::/64".parse().unwrap()),
        ..RuleSpec::new(true, 9000, 254)
      };
      let table6 = RuleSpec::new(true, 9001, 7890);
      let all = [&from, &table, &full, &from6, &table6];
      for r in all {
        nl.add_rule(r).unwrap();
      }
      let (v4, v6) = (nl.rules(false).unwrap(), nl.rules(true).unwrap());
      for r in all {
        let list = if r.v6 { &v6 } else { &v4 };
        assert_eq!(list.iter().filter(|x| *x == r).count(), 1, "{r} in {list:?}");
      }
      assert_eq!(v4.len(), 6, "{v4:?}");
      assert_eq!(v6.len(), 4, "{v6:?}");
      // In the order the kernel tries them.
      assert!(v4.windows(2).all(|w| w[0].priority <= w[1].priority), "{v4:?}");

      for r in all {
        let e = nl.add_rule(r).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{r}: {e}");
        assert_eq!(e.errno(), Some(sys::EEXIST));
        assert!(e.message().starts_with(&format!("add {r}")), "{e}");
      }
      for r in all {
        nl.remove_rule(r).unwrap();
      }
      assert_eq!(nl.rules(false).unwrap().len(), 3);
      assert_eq!(nl.rules(true).unwrap().len(), 2);
      for r in all {
        let e = nl.remove_rule(r).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{r}: {e}");
        assert_eq!(e.errno(), Some(sys::ENOENT));
        assert!(e.message().contains("no such rule"), "{e}");
      }

      // Refused before anything is sent (no errno).
      let e = nl.add_rule(&RuleSpec::new(true, 9003, 0)).unwrap_err();
      assert_eq!((e.kind(), e.errno()), (ErrorKind::InvalidArgument, None), "{e}");
      let mixed = RuleSpec {
        to: Some("10.0.0.0/8".parse().unwrap()),
        ..RuleSpec::new(true, 9003, 100)
      };
      assert_eq!(nl.add_rule(&mixed).unwrap_err().kind(), ErrorKind::InvalidAddress);
      assert_eq!(
        nl.remove_rule(&mixed).unwrap_err().kind(),
        ErrorKind::InvalidAddress
      );
      assert_eq!(nl.rules(true).unwrap().len(), 2);
    });
  }
}
