//! The forwarding stack as JavaScript drives it: `tunkit_stack::Stack` installed as the [`Intercept`] of a device's
//! queues (it runs on their reader threads), UDP datagrams handed to JavaScript in batches, and the calls the
//! TypeScript `Stack` makes (flow lookup for an accepted socket, release, UDP replies, the periodic tick).

use crate::convert::field;
use crate::sys::api::{type_error, CallContext, Env, EnvHook, JsResult, Tsfn, Value};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tunkit_core::packet::virtio::{VirtioNetHdr, VIRTIO_NET_HDR_GSO_UDP_L4};
use tunkit_core::ring::PacketRing;
use tunkit_core::{Batch, Error, ErrorKind, FrameVerdict, Intercept};
use tunkit_stack::{Decision, FamilyConfig, IcmpMode, Stack, StackConfig, Verdict};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
  m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Most datagram bytes waiting for JavaScript; past it new datagrams are dropped and counted (UDP semantics).
const DATAGRAM_BYTES: usize = 8 << 20;

/// One UDP datagram on its way to JavaScript.
struct Datagram {
  session: u64,
  /// Set for the first datagram of a session: the client's endpoint.
  client: Option<SocketAddr>,
  destination: SocketAddr,
  payload: Vec<u8>,
  /// A UDP GSO super-datagram passed whole (`udpGso: 'pass'`): `payload` is datagrams of this size back to back
  /// (the last may be shorter). 0 for one datagram.
  segment_size: u16,
}

/// A SYN held for the application's decision (connect before accept).
struct Request {
  flow: u64,
  client: SocketAddr,
  destination: SocketAddr,
}

#[derive(Default)]
struct Inbox {
  items: VecDeque<Datagram>,
  /// Held SYNs waiting for JavaScript to see them (bounded by the flow cap: each is a pending flow).
  requests: Vec<Request>,
  bytes: usize,
  dropped: u64,
  /// A "datagrams waiting" call is queued and JavaScript has not taken them since.
  notified: bool,
}

/// The intercept on the reader threads: every packet goes through the stack.
struct Engine {
  stack: Arc<Stack>,
  inbox: Arc<Mutex<Inbox>>,
  tsfn: Arc<Tsfn>,
  /// `udpGso: 'pass'`: a UDP GSO super-packet reaches JavaScript as one message with its segment size, instead of
  /// one message per datagram.
  pass_udp_gso: bool,
}

/// What one batch or frame gave JavaScript.
#[derive(Default)]
struct Found {
  datagrams: Vec<Datagram>,
  requests: Vec<Request>,
}

impl Engine {
  /// Does what the stack said about `pkt` (already rewritten in place for `WriteBack`). Returns true if the packet
  /// goes on to the consumer. Replies go into `to_device`; datagrams and held SYNs into `found`.
  fn act(
    &self,
    v: Verdict,
    pkt: &[u8],
    reply: &mut Vec<u8>,
    to_device: &mut Batch,
    found: &mut Found,
  ) -> bool {
    match v {
      Verdict::Reply => {
        to_device.push(reply);
        reply.clear();
      }
      Verdict::Datagram {
        session,
        new,
        destination,
        payload,
      } => found.datagrams.push(Datagram {
        session,
        client: new.map(|n| n.client),
        destination,
        payload: pkt[payload].to_vec(),
        segment_size: 0,
      }),
      Verdict::Hold {
        flow,
        client,
        destination,
      } => found.requests.push(Request {
        flow,
        client,
        destination,
      }),
      Verdict::WriteBack | Verdict::Drop => {}
      Verdict::Pass => return true,
    }
    false
  }

  /// Queues what JavaScript must see and tells it once.
  fn deliver(&self, found: Found) {
    if found.datagrams.is_empty() && found.requests.is_empty() {
      return;
    }
    let mut inbox = lock(&self.inbox);
    inbox.requests.extend(found.requests);
    for d in found.datagrams {
      if inbox.bytes + d.payload.len() > DATAGRAM_BYTES && d.client.is_none() {
        inbox.dropped += 1;
        continue;
      }
      inbox.bytes += d.payload.len();
      inbox.items.push_back(d);
    }
    let call = !inbox.notified;
    inbox.notified = true;
    drop(inbox);
    if call {
      self.tsfn.call(1);
    }
  }
}

impl Intercept for Engine {
  fn process(&self, batch: &mut Batch, to_device: &mut Batch) {
    let now = Instant::now();
    let mut reply = Vec::new();
    let mut found = Found::default();
    batch.retain_mut(|pkt| {
      let v = self.stack.inbound(pkt, now, &mut reply);
      if matches!(v, Verdict::WriteBack) {
        to_device.push(pkt);
        return false;
      }
      self.act(v, pkt, &mut reply, to_device, &mut found)
    });
    self.deliver(found);
  }

  /// With offload: a TCP super-packet is rewritten whole (its partial checksum updated for the new addresses)
  /// and written back as it came; a UDP one becomes one message per datagram, or one in all (`pass_udp_gso`).
  fn frame(&self, hdr: &VirtioNetHdr, pkt: &mut [u8], to_device: &mut Batch) -> FrameVerdict {
    let mut reply = Vec::new();
    let v = self
      .stack
      .inbound_offload(pkt, Instant::now(), &mut reply, hdr.needs_csum());
    let mut found = Found::default();
    let verdict = match v {
      Verdict::WriteBack => FrameVerdict::WriteBack,
      Verdict::Datagram {
        session,
        new,
        destination,
        payload,
      } if hdr.gso_kind() == VIRTIO_NET_HDR_GSO_UDP_L4 => {
        let data = &pkt[payload];
        let size = (hdr.gso_size as usize).max(1);
        if self.pass_udp_gso {
          found.datagrams.push(Datagram {
            session,
            client: new.map(|n| n.client),
            destination,
            payload: data.to_vec(),
            segment_size: size as u16,
          });
        } else {
          for (i, d) in data.chunks(size).enumerate() {
            found.datagrams.push(Datagram {
              session,
              client: new.filter(|_| i == 0).map(|n| n.client),
              destination,
              payload: d.to_vec(),
              segment_size: 0,
            });
          }
        }
        FrameVerdict::Taken
      }
      v => match self.act(v, pkt, &mut reply, to_device, &mut found) {
        true => FrameVerdict::Pass,
        false => FrameVerdict::Taken,
      },
    };
    self.deliver(found);
    verdict
  }
}

/// A stack as JavaScript holds it.
struct StackHandle {
  stack: Arc<Stack>,
  inbox: Arc<Mutex<Inbox>>,
  rings: Mutex<Vec<Arc<PacketRing>>>,
  tsfn: Arc<Tsfn>,
  /// Takes the engine off the rings and releases the tsfn if the environment goes first.
  _teardown: EnvHook,
}

impl StackHandle {
  fn close(&self) {
    for r in lock(&self.rings).drain(..) {
      r.set_intercept(None);
    }
    self.tsfn.release();
  }
}

impl Drop for StackHandle {
  fn drop(&mut self) {
    self.close();
  }
}

fn handle(cx: &CallContext) -> JsResult<Arc<StackHandle>> {
  cx.env.unwrap_external::<StackHandle>(cx.arg(0)?, "stack")
}

fn ip(env: Env, v: Value, what: &str) -> JsResult<IpAddr> {
  let s = env.to_string(v, what)?;
  s.parse::<IpAddr>().map_err(|_| {
    Error::new(
      ErrorKind::InvalidAddress,
      format!("{what} {s:?} is not an IP address"),
    )
    .into()
  })
}

fn endpoint(env: Env, addr: Value, port: Value, what: &str) -> JsResult<SocketAddr> {
  let a = ip(env, addr, what)?;
  let p = env.to_int(port, &format!("{what} port"), 0, 65535)? as u16;
  Ok(SocketAddr::new(a, p))
}

fn family(env: Env, o: Value, what: &str) -> JsResult<Option<FamilyConfig>> {
  let Some(f) = field(env, o, what)? else {
    return Ok(None);
  };
  let gateway = ip(env, env.get(f, "gateway")?, &format!("{what}.gateway"))?;
  let list = env.get(f, "nat")?;
  if !env.is_array(list)? {
    return Err(type_error(format!("{what}.nat must be an array of addresses")));
  }
  let mut nat = Vec::new();
  for i in 0..env.array_len(list)?.min(64) {
    nat.push(ip(env, env.element(list, i)?, &format!("{what}.nat[{i}]"))?);
  }
  let prefix = env.to_int(env.get(f, "prefix")?, &format!("{what}.prefix"), 0, 128)? as u8;
  Ok(Some(FamilyConfig::new(gateway, nat, prefix)))
}

fn ms(env: Env, o: Value, key: &str, default: Duration) -> JsResult<Duration> {
  Ok(match field(env, o, key)? {
    Some(v) => Duration::from_millis(env.to_int(v, key, 1, 86_400_000)?),
    None => default,
  })
}

fn config(env: Env, o: Value) -> JsResult<StackConfig> {
  if !env.is_object(o)? {
    return Err(type_error("stack options must be an object"));
  }
  let port = env.to_int(env.get(o, "listenPort")?, "listenPort", 1, 65535)? as u16;
  let mut cfg = StackConfig::new(port);
  cfg.v4 = family(env, o, "v4")?;
  cfg.v6 = family(env, o, "v6")?;
  cfg.tcp = env.to_bool(env.get(o, "tcp")?, "tcp")?;
  cfg.udp = env.to_bool(env.get(o, "udp")?, "udp")?;
  cfg.icmp = match env.to_string(env.get(o, "icmp")?, "icmp")?.as_str() {
    "reply" => IcmpMode::Reply,
    "drop" => IcmpMode::Drop,
    "pass" => IcmpMode::Pass,
    other => {
      return Err(type_error(format!(
        "icmp must be 'reply', 'drop' or 'pass', got {other:?}"
      )))
    }
  };
  if let Some(v) = field(env, o, "maxTcpFlows")? {
    cfg.max_tcp_flows = env.to_int(v, "maxTcpFlows", 1, 1 << 24)? as usize;
  }
  if let Some(v) = field(env, o, "maxUdpSessions")? {
    cfg.max_udp_sessions = env.to_int(v, "maxUdpSessions", 1, 1 << 24)? as usize;
  }
  cfg.udp_idle = ms(env, o, "udpIdleMs", cfg.udp_idle)?;
  cfg.tcp_syn_idle = ms(env, o, "tcpSynIdleMs", cfg.tcp_syn_idle)?;
  cfg.quarantine = ms(env, o, "quarantineMs", cfg.quarantine)?;
  if let Some(v) = field(env, o, "holdSyn")? {
    cfg.hold_syn = env.to_bool(v, "holdSyn")?;
  }
  cfg.hold_timeout = ms(env, o, "holdTimeoutMs", cfg.hold_timeout)?;
  Ok(cfg)
}

/// `stackCreate(queues, options, onEvent)`: builds the stack and installs it on the rings of `queues`. `onEvent(1)`
/// says datagrams or held connection requests are waiting (`stackTakeDatagrams`, `stackTakeRequests`).
pub fn create(cx: &CallContext) -> JsResult<Value> {
  let env = cx.env;
  let list = cx.arg(0)?;
  if !env.is_array(list)? {
    return Err(type_error("queues must be an array of queue handles"));
  }
  let mut rings = Vec::new();
  for i in 0..env.array_len(list)?.min(1024) {
    rings.push(crate::device::ring_of(env, env.element(list, i)?)?);
  }
  let cfg = config(env, cx.arg(1)?)?;
  let on_event = cx.arg(2)?;
  if !env.is_function(on_event)? {
    return Err(type_error("onEvent must be a function"));
  }
  let stack = Arc::new(Stack::new(cfg)?);
  let tsfn = Arc::new(Tsfn::new(env, on_event, "tunkit-stack")?);
  let inbox = Arc::new(Mutex::new(Inbox::default()));
  let pass_udp_gso = match field(env, cx.arg(1)?, "udpGso")? {
    None => false,
    Some(v) => match env.to_string(v, "udpGso")?.as_str() {
      "split" => false,
      "pass" => true,
      other => {
        return Err(type_error(format!(
          "udpGso must be 'split' or 'pass', got {other:?}"
        )))
      }
    },
  };
  let engine: Arc<dyn Intercept> = Arc::new(Engine {
    stack: stack.clone(),
    inbox: inbox.clone(),
    tsfn: tsfn.clone(),
    pass_udp_gso,
  });
  for r in &rings {
    r.set_intercept(Some(engine.clone()));
  }
  let (rs, t) = (rings.clone(), tsfn.clone());
  let teardown = env.on_teardown(Box::new(move || {
    for r in &rs {
      r.set_intercept(None);
    }
    t.release();
  }))?;
  env.external(Arc::new(StackHandle {
    stack,
    inbox,
    rings: Mutex::new(rings),
    tsfn,
    _teardown: teardown,
  }))
}

fn endpoint_to_js(env: Env, a: SocketAddr) -> JsResult<Value> {
  let o = env.object()?;
  env.set(o, "address", env.string(&a.ip().to_string())?)?;
  env.set(o, "port", env.number(a.port() as f64)?)?;
  env.set(o, "family", env.number(if a.is_ipv4() { 4.0 } else { 6.0 })?)?;
  Ok(o)
}

/// `stackLookup(stack, address, port)`: the flow behind an accepted socket whose peer is `address:port`, as
/// `{ source, destination }`, or `null`.
pub fn lookup(cx: &CallContext) -> JsResult<Value> {
  let env = cx.env;
  let h = handle(cx)?;
  let peer = endpoint(env, cx.arg(1)?, cx.arg(2)?, "peer")?;
  match h.stack.lookup_tcp(peer) {
    None => env.null(),
    Some(f) => {
      let o = env.object()?;
      env.set(o, "source", endpoint_to_js(env, f.client)?)?;
      env.set(o, "destination", endpoint_to_js(env, f.destination)?)?;
      Ok(o)
    }
  }
}

/// `stackRelease(stack, address, port)`: the accepted socket for that peer closed.
pub fn release(cx: &CallContext) -> JsResult<Value> {
  let h = handle(cx)?;
  let peer = endpoint(cx.env, cx.arg(1)?, cx.arg(2)?, "peer")?;
  h.stack.release_tcp(peer, Instant::now());
  cx.env.undefined()
}

/// `stackTakeDatagrams(stack)`: `[payloads, meta]` with every waiting datagram: `payloads` one Buffer of them back
/// to back, `meta` a flat array of `[session, length, destAddress, destPort, clientAddress | null, clientPort,
/// segmentSize]` per datagram (`segmentSize` 0 but for a UDP GSO super-datagram passed whole); `null` when none wait. Datagrams dropped because JavaScript fell behind are counted in
/// `stackStats().datagramsDropped`.
pub fn take_datagrams(cx: &CallContext) -> JsResult<Value> {
  let env = cx.env;
  let h = handle(cx)?;
  let items: Vec<Datagram> = {
    let mut inbox = lock(&h.inbox);
    inbox.notified = false;
    inbox.bytes = 0;
    inbox.items.drain(..).collect()
  };
  if items.is_empty() {
    return env.null();
  }
  let mut all = Vec::with_capacity(items.iter().map(|d| d.payload.len()).sum());
  let mut meta = Vec::with_capacity(items.len() * 7);
  for d in &items {
    all.extend_from_slice(&d.payload);
    meta.push(env.number(d.session as f64)?);
    meta.push(env.number(d.payload.len() as f64)?);
    meta.push(env.string(&d.destination.ip().to_string())?);
    meta.push(env.number(d.destination.port() as f64)?);
    match d.client {
      Some(c) => {
        meta.push(env.string(&c.ip().to_string())?);
        meta.push(env.number(c.port() as f64)?);
      }
      None => {
        meta.push(env.null()?);
        meta.push(env.number(0.0)?);
      }
    }
    meta.push(env.number(d.segment_size as f64)?);
  }
  let payloads = env.buffer_copy(&all)?;
  let meta = env.array_of(&meta)?;
  env.array_of(&[payloads, meta])
}

/// `stackTakeRequests(stack)`: the held connection requests, flat: `[flow, clientAddress, clientPort, destAddress,
/// destPort, ...]`, or `null` when none wait.
pub fn take_requests(cx: &CallContext) -> JsResult<Value> {
  let env = cx.env;
  let h = handle(cx)?;
  let reqs = {
    let mut inbox = lock(&h.inbox);
    inbox.notified = false;
    std::mem::take(&mut inbox.requests)
  };
  if reqs.is_empty() {
    return env.null();
  }
  let mut out = Vec::with_capacity(reqs.len() * 5);
  for r in &reqs {
    out.push(env.number(r.flow as f64)?);
    out.push(env.string(&r.client.ip().to_string())?);
    out.push(env.number(r.client.port() as f64)?);
    out.push(env.string(&r.destination.ip().to_string())?);
    out.push(env.number(r.destination.port() as f64)?);
  }
  env.array_of(&out)
}

/// `stackDecide(stack, queue, flow, decision)`: `'accept'` lets a held SYN through to the kernel, `'reset'` answers
/// the client with a RST, `'unreachable'` with an ICMP unreachable. Returns false when the flow is no longer held
/// (expired, or decided already).
pub fn decide(cx: &CallContext) -> JsResult<Value> {
  let env = cx.env;
  let h = handle(cx)?;
  let ring = crate::device::ring_of(env, cx.arg(1)?)?;
  let flow = env.to_int(cx.arg(2)?, "flow", 0, (1u64 << 53) - 1)?;
  let decision = match env.to_string(cx.arg(3)?, "decision")?.as_str() {
    "accept" => Decision::Accept,
    "reset" => Decision::Reset,
    "unreachable" => Decision::Unreachable,
    other => {
      return Err(type_error(format!(
        "decision must be 'accept', 'reset' or 'unreachable', got {other:?}"
      )))
    }
  };
  let mut pkt = Vec::new();
  if !h.stack.decide(flow, decision, Instant::now(), &mut pkt) {
    return env.boolean(false);
  }
  let total = pkt.len();
  ring.send(&[&pkt], total)?;
  env.boolean(true)
}

/// `stackSendUdp(stack, queue, session, fromAddress, fromPort, payload)`: a reply to the client of `session`, from
/// `from` (the real remote), written to the device through `queue`.
pub fn send_udp(cx: &CallContext) -> JsResult<Value> {
  let env = cx.env;
  let h = handle(cx)?;
  let ring = crate::device::ring_of(env, cx.arg(1)?)?;
  let session = env.to_int(cx.arg(2)?, "session", 0, (1u64 << 53) - 1)?;
  let from = endpoint(env, cx.arg(3)?, cx.arg(4)?, "from")?;
  let payload = env.packets(cx, cx.arg(5)?, 1)?;
  let data = payload.first().copied().unwrap_or(&[]);
  let mut pkt = Vec::with_capacity(data.len() + 48);
  h.stack.udp_reply(session, from, data, &mut pkt)?;
  let total = pkt.len();
  let sent = ring.send(&[&pkt], total)?;
  env.boolean(sent == tunkit_core::ring::Sent::Done)
}

/// `stackRefuseUdp(stack, queue, session, destAddress, destPort, payload)`: an ICMP port unreachable to the client
/// of `session` for its datagram `payload` to `dest`, written to the device through `queue`.
pub fn refuse_udp(cx: &CallContext) -> JsResult<Value> {
  let env = cx.env;
  let h = handle(cx)?;
  let ring = crate::device::ring_of(env, cx.arg(1)?)?;
  let session = env.to_int(cx.arg(2)?, "session", 0, (1u64 << 53) - 1)?;
  let dest = endpoint(env, cx.arg(3)?, cx.arg(4)?, "destination")?;
  let payload = env.packets(cx, cx.arg(5)?, 1)?;
  let data = payload.first().copied().unwrap_or(&[]);
  let mut pkt = Vec::with_capacity(576);
  h.stack.udp_unreachable(session, dest, data, &mut pkt)?;
  let total = pkt.len();
  let sent = ring.send(&[&pkt], total)?;
  env.boolean(sent == tunkit_core::ring::Sent::Done)
}

/// `stackCloseUdp(stack, session)`.
pub fn close_udp(cx: &CallContext) -> JsResult<Value> {
  let h = handle(cx)?;
  let session = cx.env.to_int(cx.arg(1)?, "session", 0, (1u64 << 53) - 1)?;
  h.stack.close_udp(session);
  cx.env.undefined()
}

/// `stackTick(stack)`: expires idle state; returns `[endedUdpSessions, notice | undefined, expiredHolds]` (ids, the
/// stack's notice if any, and held connection requests that timed out).
pub fn tick(cx: &CallContext) -> JsResult<Value> {
  let env = cx.env;
  let h = handle(cx)?;
  let ended = h.stack.tick(Instant::now());
  let ids = ended
    .iter()
    .map(|id| env.number(*id as f64))
    .collect::<JsResult<Vec<_>>>()?;
  let notice = match h.stack.take_notice() {
    Some(n) => env.string(&n)?,
    None => env.undefined()?,
  };
  let ids = env.array_of(&ids)?;
  let expired = h
    .stack
    .take_expired_holds()
    .iter()
    .map(|id| env.number(*id as f64))
    .collect::<JsResult<Vec<_>>>()?;
  let expired = env.array_of(&expired)?;
  env.array_of(&[ids, notice, expired])
}

/// `stackStats(stack)`: the stack's counters (camelCase), plus `datagramsDropped`.
pub fn stats(cx: &CallContext) -> JsResult<Value> {
  let env = cx.env;
  let h = handle(cx)?;
  let s = h.stack.stats();
  let (dropped, queued) = {
    let inbox = lock(&h.inbox);
    (inbox.dropped, inbox.items.len() as u64)
  };
  let fields: [(&str, u64); 31] = [
    ("tcpFlows", s.tcp_flows as u64),
    ("tcpPending", s.tcp_pending as u64),
    ("tcpHeld", s.tcp_held),
    ("tcpAccepted", s.tcp_accepted),
    ("tcpRefusedReset", s.tcp_refused_reset),
    ("tcpRefusedUnreachable", s.tcp_refused_unreachable),
    ("tcpHoldExpired", s.tcp_hold_expired),
    ("tcpQuarantined", s.tcp_quarantined as u64),
    ("tcpCreated", s.tcp_created),
    ("tcpReset", s.tcp_reset),
    ("tcpReleased", s.tcp_released),
    ("tcpSynExpired", s.tcp_syn_expired),
    ("tcpResetsSent", s.tcp_resets_sent),
    ("refusedFull", s.refused_full),
    ("refusedPorts", s.refused_ports),
    ("natPortsInUse", s.nat_ports_in_use as u64),
    ("natPortsCapacity", s.nat_ports_capacity as u64),
    ("udpSessions", s.udp_sessions as u64),
    ("udpCreated", s.udp_created),
    ("udpEvicted", s.udp_evicted),
    ("udpExpired", s.udp_expired),
    ("udpClosed", s.udp_closed),
    ("udpReplies", s.udp_replies),
    ("udpRefused", s.udp_refused),
    ("writeBack", s.write_back),
    ("replies", s.reply),
    ("datagrams", s.datagram),
    ("dropped", s.drop),
    ("passed", s.pass),
    ("datagramsDropped", dropped),
    ("udpQueued", queued),
  ];
  let o = env.object()?;
  for (k, v) in fields {
    env.set(o, k, env.number(v as f64)?)?;
  }
  Ok(o)
}

/// `stackClose(stack)`: takes the stack off the rings. Idempotent.
pub fn close(cx: &CallContext) -> JsResult<Value> {
  handle(cx)?.close();
  cx.env.undefined()
}

/// `stackSetRef(stack, bool)`: whether waiting for datagrams keeps the process alive.
pub fn set_ref(cx: &CallContext) -> JsResult<Value> {
  let h = handle(cx)?;
  let r = cx.env.to_bool(cx.arg(1)?, "ref")?;
  h.tsfn.set_ref(cx.env, r);
  cx.env.undefined()
}
