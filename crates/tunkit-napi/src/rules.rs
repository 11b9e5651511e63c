//! Policy routing rules (`addRule`, `removeRule`, `rules`; `addRoutingRule`… in TypeScript): not per device, so no
//! handle; each call works in the calling thread's network namespace. Linux only: elsewhere every call throws
//! `ERR_TUN_UNSUPPORTED` before looking at its arguments.

use crate::convert::field;
use crate::sys::api::{type_error, CallContext, Env, JsResult, Value};
use tunkit_core::config::IpCidr;
use tunkit_core::{Error, ErrorKind, RuleSpec};

/// The keys of a rule object, as `{ family?, priority, table, from?, to?, fwmark?, fwmask?, iif?, oif? }`.
const KEYS: &str = "{ priority, table, family?, from?, to?, fwmark?, fwmask?, iif?, oif? }";

fn opt_u32(env: Env, obj: Value, key: &str, min: u32) -> JsResult<Option<u32>> {
  let what = format!("rule.{key}");
  field(env, obj, key)?
    .map(|v| {
      env
        .to_int(v, &what, u64::from(min), u64::from(u32::MAX))
        .map(|n| n as u32)
    })
    .transpose()
}

fn required_u32(env: Env, obj: Value, key: &str, min: u32) -> JsResult<u32> {
  opt_u32(env, obj, key, min)?.ok_or_else(|| type_error(format!("rule.{key} is required: a rule is {KEYS}")))
}

fn opt_string(env: Env, obj: Value, key: &str) -> JsResult<Option<String>> {
  let what = format!("rule.{key}");
  field(env, obj, key)?.map(|v| env.to_string(v, &what)).transpose()
}

/// `4 | 6 | undefined` as whether it is IPv6.
fn family(env: Env, v: Option<Value>, what: &str) -> JsResult<Option<bool>> {
  match v {
    None => Ok(None),
    Some(v) => match env.to_int(v, what, 0, 255) {
      Ok(4) => Ok(Some(false)),
      Ok(6) => Ok(Some(true)),
      _ => Err(type_error(format!("{what} must be 4 or 6"))),
    },
  }
}

fn cidr(env: Env, obj: Value, key: &str) -> JsResult<Option<IpCidr>> {
  opt_string(env, obj, key)?
    .map(|s| {
      s.parse::<IpCidr>()
        .map_err(|e| Error::new(e.kind(), format!("rule.{key}: {e}")).into())
    })
    .transpose()
}

/// A rule object: `family` may be left out when `from` or `to` says it; `fwmask` (default all ones) needs
/// `fwmark`. The rest is checked by [`RuleSpec::validate`] in the core.
fn rule(env: Env, v: Value) -> JsResult<RuleSpec> {
  if !env.is_object(v)? {
    return Err(type_error(format!("a routing rule must be an object {KEYS}")));
  }
  let priority = required_u32(env, v, "priority", 0)?;
  let table = required_u32(env, v, "table", 1)?;
  let (from, to) = (cidr(env, v, "from")?, cidr(env, v, "to")?);
  let given = family(env, field(env, v, "family")?, "rule.family")?;
  let mut v6 = given;
  for c in [from, to].iter().flatten() {
    let is6 = !c.is_ipv4();
    match v6 {
      Some(f) if f != is6 => {
        let why = match given {
          Some(_) => format!("{c} is not of family {}", if f { 6 } else { 4 }),
          None => "from and to are of different families".to_string(),
        };
        return Err(Error::new(ErrorKind::InvalidAddress, format!("rule: {why}")).into());
      }
      _ => v6 = Some(is6),
    }
  }
  let v6 =
    v6.ok_or_else(|| type_error("rule.family (4 or 6) is required when there is neither from nor to"))?;
  let mark = opt_u32(env, v, "fwmark", 0)?;
  let mask = opt_u32(env, v, "fwmask", 0)?;
  let fwmark = match (mark, mask) {
    (Some(m), k) => Some((m, k.unwrap_or(u32::MAX))),
    (None, Some(_)) => return Err(type_error("rule.fwmask needs rule.fwmark")),
    (None, None) => None,
  };
  Ok(RuleSpec {
    v6,
    priority,
    table,
    from,
    to,
    fwmark,
    iif: opt_string(env, v, "iif")?,
    oif: opt_string(env, v, "oif")?,
  })
}

fn rule_to_js(env: Env, r: &RuleSpec) -> JsResult<Value> {
  let o = env.object()?;
  env.set(o, "family", env.number(if r.v6 { 6.0 } else { 4.0 })?)?;
  env.set(o, "priority", env.number(f64::from(r.priority))?)?;
  env.set(o, "table", env.number(f64::from(r.table))?)?;
  for (key, c) in [("from", &r.from), ("to", &r.to)] {
    if let Some(c) = c {
      env.set(o, key, env.string(&c.to_string())?)?;
    }
  }
  if let Some((mark, mask)) = r.fwmark {
    env.set(o, "fwmark", env.number(f64::from(mark))?)?;
    env.set(o, "fwmask", env.number(f64::from(mask))?)?;
  }
  for (key, name) in [("iif", &r.iif), ("oif", &r.oif)] {
    if let Some(name) = name {
      env.set(o, key, env.string(name)?)?;
    }
  }
  Ok(o)
}

/// Refuses at once off Linux, whatever the arguments.
fn linux_only(op: &str) -> JsResult<()> {
  if cfg!(target_os = "linux") {
    Ok(())
  } else {
    Err(Error::unsupported(&format!("{op} (policy routing rules are Linux only)")).into())
  }
}

/// `addRule(rule)`.
pub fn add_rule(cx: &CallContext) -> JsResult<Value> {
  linux_only("addRoutingRule")?;
  tunkit_core::rule::add(&rule(cx.env, cx.arg(0)?)?)?;
  cx.env.undefined()
}

/// `removeRule(rule)`.
pub fn remove_rule(cx: &CallContext) -> JsResult<Value> {
  linux_only("removeRoutingRule")?;
  tunkit_core::rule::remove(&rule(cx.env, cx.arg(0)?)?)?;
  cx.env.undefined()
}

/// `rules(family)`: `family` 4, 6, or `undefined` for both (IPv4 first).
pub fn rules(cx: &CallContext) -> JsResult<Value> {
  linux_only("routingRules")?;
  let env = cx.env;
  let arg = cx.arg(0)?;
  let only = if env.is_nullish(arg)? {
    None
  } else {
    family(env, Some(arg), "family")?
  };
  let mut items = Vec::new();
  for v6 in [false, true] {
    if only != Some(!v6) {
      for r in tunkit_core::rule::list(v6)? {
        items.push(rule_to_js(env, &r)?);
      }
    }
  }
  env.array_of(&items)
}
