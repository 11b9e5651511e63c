//! Conversions between JavaScript values and core types: the options object of `createDevice`, routes, addresses,
//! link state and counters.

use crate::sys::api::{type_error, Env, JsResult, Value};
use std::time::Duration;
use tunkit_core::backend::LinkInfo;
use tunkit_core::config::{format_mac, parse_mac, DeviceConfig, IpCidr, Mode, Offload, RouteSpec};
use tunkit_core::ring::{RingConfig, RingStats};

/// `obj[key]`, or `None` when it is `undefined`/`null`.
pub fn field(env: Env, obj: Value, key: &str) -> JsResult<Option<Value>> {
  let v = env.get(obj, key)?;
  Ok(if env.is_nullish(v)? { None } else { Some(v) })
}

fn opt_u32(env: Env, obj: Value, key: &str, min: u32, max: u32) -> JsResult<Option<u32>> {
  field(env, obj, key)?
    .map(|v| env.to_int(v, key, min as u64, max as u64).map(|n| n as u32))
    .transpose()
}

fn opt_bool(env: Env, obj: Value, key: &str) -> JsResult<Option<bool>> {
  field(env, obj, key)?.map(|v| env.to_bool(v, key)).transpose()
}

fn opt_string(env: Env, obj: Value, key: &str) -> JsResult<Option<String>> {
  field(env, obj, key)?.map(|v| env.to_string(v, key)).transpose()
}

fn strings(env: Env, v: Value, what: &str) -> JsResult<Vec<String>> {
  if !env.is_array(v)? {
    return Err(type_error(format!("{what} must be an array of strings")));
  }
  (0..env.array_len(v)?)
    .map(|i| env.to_string(env.element(v, i)?, &format!("{what}[{i}]")))
    .collect()
}

/// The options object of `createDevice`.
pub fn device_config(env: Env, opts: Value) -> JsResult<DeviceConfig> {
  if env.is_nullish(opts)? {
    return Ok(DeviceConfig::default());
  }
  if !env.is_object(opts)? {
    return Err(type_error("options must be an object"));
  }
  let mut cfg = DeviceConfig {
    name: opt_string(env, opts, "name")?,
    mtu: opt_u32(env, opts, "mtu", 0, u32::MAX)?,
    up: opt_bool(env, opts, "up")?,
    tx_queue_len: opt_u32(env, opts, "txQueueLength", 0, u32::MAX)?,
    queues: opt_u32(env, opts, "queues", 0, 65535)?.map(|q| q as u16),
    persist: opt_bool(env, opts, "persist")?.unwrap_or(false),
    owner: opt_u32(env, opts, "owner", 0, u32::MAX - 1)?,
    group: opt_u32(env, opts, "group", 0, u32::MAX - 1)?,
    open_existing: opt_bool(env, opts, "openExisting")?.unwrap_or(false),
    netns: opt_string(env, opts, "netns")?,
    ..Default::default()
  };
  if let Some(mode) = opt_string(env, opts, "mode")? {
    cfg.mode = mode.parse::<Mode>()?;
  }
  if let Some(mac) = opt_string(env, opts, "mac")? {
    cfg.mac = Some(parse_mac(&mac)?);
  }
  if let Some(v) = field(env, opts, "addresses")? {
    for s in strings(env, v, "addresses")? {
      cfg.addresses.push(s.parse::<IpCidr>()?);
    }
  }
  if let Some(v) = field(env, opts, "offload")? {
    cfg.offload = offload(env, v)?;
  }
  if let Some(v) = field(env, opts, "routes")? {
    if !env.is_array(v)? {
      return Err(type_error("routes must be an array of route objects"));
    }
    for i in 0..env.array_len(v)? {
      cfg.routes.push(route(env, env.element(v, i)?)?);
    }
  }
  Ok(cfg)
}

/// `offload: true | false | { tcp?, udp?, raw? }`.
fn offload(env: Env, v: Value) -> JsResult<Option<Offload>> {
  if env.type_of(v)? == crate::sys::NAPI_BOOLEAN {
    return Ok(env.to_bool(v, "offload")?.then(Offload::default));
  }
  if !env.is_object(v)? {
    return Err(type_error("offload must be a boolean or { tcp?, udp?, raw? }"));
  }
  let d = Offload::default();
  Ok(Some(Offload {
    tcp: opt_bool(env, v, "tcp")?.unwrap_or(d.tcp),
    udp: opt_bool(env, v, "udp")?.unwrap_or(d.udp),
    raw: opt_bool(env, v, "raw")?.unwrap_or(d.raw),
  }))
}

/// `{ to, via?, metric?, table? }`.
pub fn route(env: Env, v: Value) -> JsResult<RouteSpec> {
  if !env.is_object(v)? {
    return Err(type_error("a route must be an object like { to: '10.9.0.0/16' }"));
  }
  let to = match field(env, v, "to")? {
    Some(t) => env.to_string(t, "route.to")?.parse::<IpCidr>()?,
    None => return Err(type_error("route.to is required")),
  };
  let via = match opt_string(env, v, "via")? {
    Some(s) => Some(s.parse().map_err(|_| {
      tunkit_core::Error::new(
        tunkit_core::ErrorKind::InvalidAddress,
        format!("route.via {s:?} is not an IP address"),
      )
    })?),
    None => None,
  };
  let r = RouteSpec {
    to,
    via,
    metric: opt_u32(env, v, "metric", 0, u32::MAX)?,
    table: opt_u32(env, v, "table", 1, u32::MAX)?,
  };
  r.validate()?;
  Ok(r)
}

pub fn route_to_js(env: Env, r: &RouteSpec) -> JsResult<Value> {
  let o = env.object()?;
  env.set(
    o,
    "to",
    env.string(&format!("{}/{}", r.to.network(), r.to.prefix))?,
  )?;
  if let Some(via) = r.via {
    env.set(o, "via", env.string(&via.to_string())?)?;
  }
  if let Some(m) = r.metric {
    env.set(o, "metric", env.number(m as f64)?)?;
  }
  if let Some(t) = r.table {
    env.set(o, "table", env.number(t as f64)?)?;
  }
  Ok(o)
}

pub fn cidr_to_js(env: Env, a: &IpCidr) -> JsResult<Value> {
  let o = env.object()?;
  env.set(o, "cidr", env.string(&a.to_string())?)?;
  env.set(o, "address", env.string(&a.addr.to_string())?)?;
  env.set(o, "prefix", env.number(a.prefix as f64)?)?;
  env.set(o, "family", env.number(if a.is_ipv4() { 4.0 } else { 6.0 })?)?;
  if let Some(p) = a.peer {
    env.set(o, "peer", env.string(&p.to_string())?)?;
  }
  Ok(o)
}

pub fn link_to_js(env: Env, l: &LinkInfo) -> JsResult<Value> {
  let o = env.object()?;
  env.set(o, "name", env.string(&l.name)?)?;
  env.set(o, "index", env.number(l.index as f64)?)?;
  env.set(o, "mtu", env.number(l.mtu as f64)?)?;
  env.set(o, "up", env.boolean(l.up)?)?;
  env.set(o, "txQueueLength", env.number(l.tx_queue_len as f64)?)?;
  if let Some(mac) = &l.mac {
    env.set(o, "mac", env.string(&format_mac(mac))?)?;
  }
  let s = &l.stats;
  let k = env.object()?;
  for (key, v) in [
    ("rxPackets", s.rx_packets),
    ("txPackets", s.tx_packets),
    ("rxBytes", s.rx_bytes),
    ("txBytes", s.tx_bytes),
    ("rxDropped", s.rx_dropped),
    ("txDropped", s.tx_dropped),
    ("rxErrors", s.rx_errors),
    ("txErrors", s.tx_errors),
  ] {
    env.set(k, key, env.number(v as f64)?)?;
  }
  env.set(o, "stats", k)?;
  Ok(o)
}

/// The ring options (all optional) of `openQueue`.
pub fn ring_config(env: Env, opts: Value) -> JsResult<RingConfig> {
  let mut c = RingConfig::default();
  if env.is_nullish(opts)? {
    return Ok(c);
  }
  if let Some(n) = opt_u32(env, opts, "ringBatches", 1, 1 << 16)? {
    c.ring_batches = n as usize;
  }
  if let Some(n) = opt_u32(env, opts, "batchPackets", 1, 4096)? {
    c.batch_packets = n as usize;
  }
  if let Some(n) = opt_u32(env, opts, "slabBytes", 2048, 64 << 20)? {
    c.slab_bytes = n as usize;
  }
  if let Some(n) = opt_u32(env, opts, "copyBelow", 0, 64 << 20)? {
    c.copy_below = n as usize;
  }
  if let Some(n) = opt_u32(env, opts, "memoryBudget", 1, u32::MAX)? {
    c.memory_budget = n as usize;
  }
  if let Some(n) = opt_u32(env, opts, "txRingBytes", 65536, u32::MAX)? {
    c.tx_ring_bytes = n as usize;
  }
  if let Some(n) = opt_u32(env, opts, "closeFlushMs", 0, 60_000)? {
    c.close_flush = Duration::from_millis(n as u64);
  }
  Ok(c)
}

pub fn ring_stats_to_js(env: Env, s: &RingStats) -> JsResult<Value> {
  let o = env.object()?;
  for (key, v) in [
    ("rxPackets", s.rx_packets),
    ("rxBytes", s.rx_bytes),
    ("rxBatches", s.rx_batches),
    ("rxStalls", s.rx_stalls),
    ("rxQueuedBatches", s.rx_queued_batches),
    ("rxLiveBytes", s.rx_live_bytes),
    ("txPackets", s.tx_packets),
    ("txBytes", s.tx_bytes),
    ("txBatches", s.tx_batches),
    ("txErrors", s.tx_errors),
    ("txBackpressure", s.tx_backpressure),
    ("txQueuedBytes", s.tx_queued_bytes),
    ("intercepted", s.intercepted),
    ("interceptWrites", s.intercept_writes),
    ("passDropped", s.pass_dropped),
  ] {
    env.set(o, key, env.number(v as f64)?)?;
  }
  let b = env.object()?;
  for (key, v) in &s.backend {
    env.set(b, key, env.number(*v as f64)?)?;
  }
  env.set(o, "backend", b)?;
  Ok(o)
}
