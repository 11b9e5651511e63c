//! rtnetlink (`NETLINK_ROUTE`) configuration of a Linux interface: link state, MTU, queue length, MAC,
//! addresses and routes, read back from the kernel on demand, and a subscription to the link's changes
//! ([`LinkEvents`]).
//!
//! Requests are built and replies parsed here as plain byte buffers (safe code); the socket and the message
//! layouts live in [`super::sys::netlink`]. Every request asks for an ack (`NLM_F_ACK`) and waits for the
//! reply with its sequence number, so a failure always comes back as the kernel's errno, together with the
//! kernel's own explanation when it gives one (extended ack, `NETLINK_EXT_ACK`).

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::sys::netlink as sys;
use super::sys::netlink::{IfAddrMsg, IfInfoMsg, NlMsgHdr, NlSocket, RtAttr, RtMsg};
use super::sys::{eventfd_new, eventfd_signal};
use crate::backend::{EventSource, KernelStats, LinkEvent, LinkInfo};
use crate::config::{validate_name, IpCidr, RouteSpec};
use crate::error::{Error, ErrorKind, Result};

/// Initial size of the receive buffer; datagrams larger than this grow it (see [`NlSocket::recv`]).
const RECV_BUF: usize = 32 * 1024;
/// How long one receive waits for the kernel before a request is declared lost.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound on a whole request, however many datagrams its reply spans.
const REQUEST_DEADLINE: Duration = Duration::from_secs(20);
/// How often a dump interrupted by a concurrent change (`NLM_F_DUMP_INTR`) is retried before its result is
/// used.
const DUMP_RETRIES: usize = 3;
/// How many times a syscall interrupted by a signal is retried.
const EINTR_RETRIES: usize = 100;
/// Receive buffer asked for the notification socket, so bursts do not overrun it.
const EVENTS_RCVBUF: i32 = 1 << 20;
/// Most datagrams drained per `LinkEvents::next` round, so one call cannot spin forever on a flood.
const EVENTS_DRAIN_MAX: usize = 4096;

fn align(len: usize) -> usize {
  (len + sys::NLMSG_ALIGNTO - 1) & !(sys::NLMSG_ALIGNTO - 1)
}

fn pad(buf: &mut Vec<u8>) {
  buf.resize(align(buf.len()), 0);
}

// ---- building requests ------------------------------------------------------------------------------------

/// One netlink request under construction: the `nlmsghdr` (filled in by [`Request::finish`]), the fixed
/// family header, then attributes, each padded to 4 bytes.
#[derive(Debug, Clone)]
struct Request {
  ty: u16,
  flags: u16,
  buf: Vec<u8>,
}

impl Request {
  /// A request of type `ty`; `NLM_F_REQUEST | NLM_F_ACK` are always added to `flags`.
  fn new(ty: u16, flags: u16, fixed: &[u8]) -> Request {
    let mut buf = Vec::with_capacity(128);
    buf.resize(NlMsgHdr::SIZE, 0);
    buf.extend_from_slice(fixed);
    pad(&mut buf);
    Request {
      ty,
      flags: flags | sys::NLM_F_REQUEST | sys::NLM_F_ACK,
      buf,
    }
  }

  /// Appends one attribute. Payloads here are a few bytes (addresses, names of at most 16 bytes, `u32`s).
  fn attr(&mut self, ty: u16, payload: &[u8]) -> &mut Request {
    let len = RtAttr::SIZE + payload.len();
    debug_assert!(len <= usize::from(u16::MAX));
    self
      .buf
      .extend_from_slice(&RtAttr { len: len as u16, ty }.encode());
    self.buf.extend_from_slice(payload);
    pad(&mut self.buf);
    self
  }

  fn attr_u32(&mut self, ty: u16, v: u32) -> &mut Request {
    self.attr(ty, &v.to_ne_bytes())
  }

  fn attr_ip(&mut self, ty: u16, ip: IpAddr) -> &mut Request {
    match ip {
      IpAddr::V4(a) => self.attr(ty, &a.octets()),
      IpAddr::V6(a) => self.attr(ty, &a.octets()),
    }
  }

  /// The finished message with sequence number `seq`.
  fn finish(&self, seq: u32) -> Vec<u8> {
    let mut out = self.buf.clone();
    let hdr = NlMsgHdr {
      len: out.len() as u32,
      ty: self.ty,
      flags: self.flags,
      seq,
      pid: 0,
    };
    out[..NlMsgHdr::SIZE].copy_from_slice(&hdr.encode());
    out
  }
}

// ---- parsing replies --------------------------------------------------------------------------------------

/// One message of a received datagram.
#[derive(Debug, Clone, Copy)]
struct Message<'a> {
  hdr: NlMsgHdr,
  /// Everything after the header, up to `nlmsg_len`.
  payload: &'a [u8],
}

/// Splits a datagram into its messages (each aligned to 4 bytes). A malformed length is an error: nothing
/// after it can be trusted.
fn messages(mut buf: &[u8]) -> std::result::Result<Vec<Message<'_>>, String> {
  let mut out = Vec::new();
  while !buf.is_empty() {
    let hdr =
      NlMsgHdr::decode(buf).ok_or_else(|| format!("{} trailing bytes after the last message", buf.len()))?;
    let len = hdr.len as usize;
    if len < NlMsgHdr::SIZE || len > buf.len() {
      return Err(format!(
        "message length {len} does not fit the {} bytes received",
        buf.len()
      ));
    }
    out.push(Message {
      hdr,
      payload: &buf[NlMsgHdr::SIZE..len],
    });
    buf = &buf[align(len).min(buf.len())..];
  }
  Ok(out)
}

/// Iterator over the attributes of a buffer: `(type without the nested/byte-order flags, payload)`. It stops
/// at the first malformed attribute (the kernel never sends one).
#[derive(Debug, Clone)]
struct Attrs<'a> {
  buf: &'a [u8],
}

fn attrs(buf: &[u8]) -> Attrs<'_> {
  Attrs { buf }
}

impl<'a> Iterator for Attrs<'a> {
  type Item = (u16, &'a [u8]);

  fn next(&mut self) -> Option<(u16, &'a [u8])> {
    let hdr = RtAttr::decode(self.buf)?;
    let len = usize::from(hdr.len);
    if len < RtAttr::SIZE || len > self.buf.len() {
      self.buf = &[];
      return None;
    }
    let payload = &self.buf[RtAttr::SIZE..len];
    self.buf = &self.buf[align(len).min(self.buf.len())..];
    Some((hdr.ty & sys::NLA_TYPE_MASK, payload))
  }
}

fn attr_u32(payload: &[u8]) -> Option<u32> {
  Some(u32::from_ne_bytes(payload.get(..4)?.try_into().ok()?))
}

/// An address attribute of `family` (4 or 16 bytes).
fn attr_ip(family: u8, payload: &[u8]) -> Option<IpAddr> {
  match family {
    sys::AF_INET => Some(IpAddr::V4(Ipv4Addr::from(
      <[u8; 4]>::try_from(payload.get(..4)?).ok()?,
    ))),
    sys::AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(
      <[u8; 16]>::try_from(payload.get(..16)?).ok()?,
    ))),
    _ => None,
  }
}

/// A NUL-terminated string attribute.
fn attr_str(payload: &[u8]) -> String {
  let end = payload.iter().position(|&b| b == 0).unwrap_or(payload.len());
  String::from_utf8_lossy(&payload[..end]).into_owned()
}

/// Parses the payload of an `RTM_NEWLINK` message.
fn parse_link(payload: &[u8]) -> std::result::Result<LinkInfo, String> {
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

/// Parses the payload of an `RTM_NEWADDR`/`RTM_DELADDR` message into `(ifindex, address)`. `IFA_LOCAL` is the
/// interface's own address; `IFA_ADDRESS` is the peer when it differs (point-to-point), and the only address
/// attribute IPv6 sends without a peer.
fn parse_address(payload: &[u8]) -> Option<(u32, IpCidr)> {
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
fn address_flags(payload: &[u8]) -> Option<(u32, u32)> {
  let ifa = IfAddrMsg::decode(payload)?;
  let mut flags = u32::from(ifa.flags);
  for (ty, p) in attrs(&payload[IfAddrMsg::SIZE..]) {
    if ty == sys::IFA_FLAGS {
      flags = attr_u32(p).unwrap_or(flags);
    }
  }
  Some((ifa.index, flags))
}

/// Parses the payload of an `RTM_NEWROUTE` message into `(output ifindex, route)`, or `None` for routes a
/// caller did not configure: non-unicast ones (local, broadcast, multicast, unreachable…), cloned cache
/// entries, routes without a single output interface (multipath), and the IPv6 link-local `fe80::/64` and
/// multicast `ff00::/8` routes the kernel adds to every IPv6 link.
fn parse_route(payload: &[u8]) -> Option<(u32, RouteSpec)> {
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

/// Parses the payload of `NLMSG_ERROR` (`ack`) or `NLMSG_DONE` (not `ack`) into `(errno, kernel's message)`;
/// errno 0 is success. Both start with the (negative) error code; extended-ack attributes come next in
/// `NLMSG_DONE`, and after the echoed request in `NLMSG_ERROR` (only its header when `NLM_F_CAPPED`).
fn parse_error(ack: bool, flags: u16, payload: &[u8]) -> std::result::Result<(i32, Option<String>), String> {
  let code = payload
    .get(..sys::NLMSGERR_ERROR_SIZE)
    .ok_or("error message without an error code")?;
  let errno = -i32::from_ne_bytes(code.try_into().unwrap_or_default());
  let mut msg = None;
  if flags & sys::NLM_F_ACK_TLVS != 0 {
    let rest = &payload[sys::NLMSGERR_ERROR_SIZE..];
    let skip = match NlMsgHdr::decode(rest) {
      _ if !ack => 0,
      Some(_) if flags & sys::NLM_F_CAPPED != 0 => NlMsgHdr::SIZE,
      Some(h) => align(h.len as usize),
      None => rest.len(),
    };
    for (ty, p) in attrs(rest.get(skip..).unwrap_or_default()) {
      if ty == sys::NLMSGERR_ATTR_MSG {
        msg = Some(attr_str(p)).filter(|m| !m.is_empty());
      }
    }
  }
  Ok((errno, msg))
}

// ---- requests and errors ----------------------------------------------------------------------------------

/// Why a request failed, before it is turned into an [`Error`] with the operation's context.
#[derive(Debug)]
enum Failure {
  /// A syscall on the socket failed.
  Sys(&'static str, io::Error),
  /// The kernel refused the request.
  Kernel { errno: i32, message: Option<String> },
  /// The reply could not be understood, or never came.
  Protocol(String),
}

/// How one errno of the kernel reads for one operation: a more precise kind than the generic one of
/// [`crate::error::kind_of_errno`], and a note for the message (empty for none).
type Refine = (i32, ErrorKind, &'static str);

/// `ENODEV` on an operation by index: the interface went away.
const GONE: Refine = (sys::ENODEV, ErrorKind::NotFound, "device gone");

impl Failure {
  /// The error for operation `context` (such as `"set mtu 1400 on ifindex 3"`). The kernel's explanation
  /// (extended ack) and the note of the matching `refine` entry are added to the message; `ENODEV` reads as
  /// "device gone" unless `refine` says otherwise.
  fn into_error(self, context: &str, refine: &[Refine]) -> Error {
    match self {
      Failure::Sys(syscall, e) => Error::os(syscall, &e, context),
      Failure::Kernel { errno, message } => {
        let mut ctx = context.to_string();
        if let Some(m) = message {
          ctx = format!("{ctx} ({m})");
        }
        let (kind, note) = match refine.iter().chain([&GONE]).find(|(e, _, _)| *e == errno) {
          Some(&(_, kind, note)) => (Some(kind), note),
          None => (None, ""),
        };
        if !note.is_empty() {
          ctx = format!("{ctx}: {note}");
        }
        let err = Error::os("netlink", &io::Error::from_raw_os_error(errno), ctx);
        match kind {
          Some(kind) => err.with_kind(kind),
          None => err,
        }
      }
      Failure::Protocol(m) => Error::new(ErrorKind::Os, format!("{context}: {m}")),
    }
  }
}

/// The messages of a reply (acks and `NLMSG_DONE` excluded), and whether a dump was interrupted.
#[derive(Debug, Default)]
struct Reply {
  messages: Vec<(u16, Vec<u8>)>,
  interrupted: bool,
}

#[derive(Debug)]
struct Inner {
  seq: u32,
  buf: Vec<u8>,
}

/// A `NETLINK_ROUTE` socket for configuration requests, bound in the network namespace of the thread that
/// opened it. Requests are serialised, so one `Netlink` can be shared between threads.
#[derive(Debug)]
pub struct Netlink {
  sock: NlSocket,
  inner: Mutex<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
  // A panic while holding the lock leaves nothing half-done that matters here (a stale reply is skipped by
  // its sequence number), so a poisoned lock is still usable.
  m.lock().unwrap_or_else(|p| p.into_inner())
}

fn retry_eintr<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
  let mut tries = 0;
  loop {
    match f() {
      Err(e) if e.raw_os_error() == Some(sys::EINTR) && tries < EINTR_RETRIES => tries += 1,
      r => return r,
    }
  }
}

fn ifindex(index: u32) -> String {
  format!("ifindex {index}")
}

fn family_of(ip: &IpAddr) -> u8 {
  if ip.is_ipv4() {
    sys::AF_INET
  } else {
    sys::AF_INET6
  }
}

fn check_index(index: u32, what: &str) -> Result<()> {
  if index == 0 || index > i32::MAX as u32 {
    return Err(Error::new(
      ErrorKind::InvalidArgument,
      format!("{what}: invalid interface index {index}"),
    ));
  }
  Ok(())
}

/// Checks an address (and its peer) before it goes to the kernel.
fn check_cidr(a: &IpCidr, what: &str) -> Result<()> {
  let max = if a.is_ipv4() { 32 } else { 128 };
  if a.prefix > max {
    return Err(Error::new(
      ErrorKind::InvalidAddress,
      format!("{what}: prefix /{} is too long for {}", a.prefix, a.addr),
    ));
  }
  if let Some(peer) = a.peer {
    if peer.is_ipv4() != a.is_ipv4() {
      return Err(Error::new(
        ErrorKind::InvalidAddress,
        format!("{what}: peer {peer} is not of the family of {}", a.addr),
      ));
    }
  }
  Ok(())
}

/// Checks a route before it goes to the kernel.
fn check_route(r: &RouteSpec, what: &str) -> Result<()> {
  check_cidr(&r.to, what)?;
  r.validate()
    .map_err(|e| Error::new(e.kind(), format!("{what}: {e}")))?;
  if r.to.peer.is_some() {
    return Err(Error::new(
      ErrorKind::InvalidAddress,
      format!("{what}: a route destination has no peer"),
    ));
  }
  if r.table == Some(0) {
    return Err(Error::new(
      ErrorKind::InvalidArgument,
      format!("{what}: table 0 is not a routing table"),
    ));
  }
  Ok(())
}

fn describe_route(r: &RouteSpec) -> String {
  let mut s = format!("route {}/{}", r.to.addr, r.to.prefix);
  if let Some(via) = r.via {
    s.push_str(&format!(" via {via}"));
  }
  if let Some(m) = r.metric {
    s.push_str(&format!(" metric {m}"));
  }
  if let Some(t) = r.table {
    s.push_str(&format!(" table {t}"));
  }
  s
}

impl Netlink {
  /// Opens a socket in the calling thread's network namespace.
  pub fn open() -> Result<Netlink> {
    let sock = NlSocket::open(0).map_err(|e| Error::os("socket", &e, "open a NETLINK_ROUTE socket"))?;
    // Both options only make errors clearer and acks smaller; kernels without them still work.
    let _ = sock.set_int_opt(sys::SOL_NETLINK, sys::NETLINK_EXT_ACK, 1);
    let _ = sock.set_int_opt(sys::SOL_NETLINK, sys::NETLINK_CAP_ACK, 1);
    sock
      .set_recv_timeout(RECV_TIMEOUT)
      .map_err(|e| Error::os("setsockopt", &e, "set the netlink receive timeout"))?;
    Ok(Netlink {
      sock,
      inner: Mutex::new(Inner {
        seq: 0,
        buf: vec![0; RECV_BUF],
      }),
    })
  }

  /// Sends `req` and collects its reply: every message up to the ack (`NLMSG_ERROR` with error 0) or the end
  /// of a dump (`NLMSG_DONE`). Datagrams not from the kernel, and messages of another sequence number (the
  /// late reply of an earlier request that timed out), are skipped.
  fn transact(&self, req: &Request) -> std::result::Result<Reply, Failure> {
    let mut inner = lock(&self.inner);
    inner.seq = inner.seq.wrapping_add(1).max(1);
    let seq = inner.seq;
    let msg = req.finish(seq);
    retry_eintr(|| self.sock.send(&msg)).map_err(|e| Failure::Sys("sendto", e))?;
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut reply = Reply::default();
    let Inner { buf, .. } = &mut *inner;
    while Instant::now() < deadline {
      let (n, from) = match retry_eintr(|| self.sock.recv(buf, false)) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
          return Err(Failure::Protocol(format!(
            "no reply from the kernel within {RECV_TIMEOUT:?}"
          )))
        }
        Err(e) => return Err(Failure::Sys("recvfrom", e)),
      };
      if from != 0 {
        continue;
      }
      for m in messages(&buf[..n]).map_err(Failure::Protocol)? {
        if m.hdr.seq != seq {
          continue;
        }
        if m.hdr.flags & sys::NLM_F_DUMP_INTR != 0 {
          reply.interrupted = true;
        }
        match m.hdr.ty {
          sys::NLMSG_NOOP => {}
          sys::NLMSG_ERROR => {
            let (errno, message) = parse_error(true, m.hdr.flags, m.payload).map_err(Failure::Protocol)?;
            return if errno == 0 {
              Ok(reply)
            } else {
              Err(Failure::Kernel { errno, message })
            };
          }
          sys::NLMSG_DONE => {
            // A dump ends with NLMSG_DONE, which may carry the dump's error (and extended ack) too.
            if m.payload.len() >= sys::NLMSGERR_ERROR_SIZE {
              let (errno, message) = parse_error(false, m.hdr.flags, m.payload).map_err(Failure::Protocol)?;
              if errno > 0 {
                return Err(Failure::Kernel { errno, message });
              }
            }
            return Ok(reply);
          }
          sys::NLMSG_OVERRUN => {
            return Err(Failure::Protocol("the kernel reported a netlink overrun".into()))
          }
          ty => reply.messages.push((ty, m.payload.to_vec())),
        }
      }
    }
    Err(Failure::Protocol(format!(
      "the reply did not complete within {REQUEST_DEADLINE:?}"
    )))
  }

  /// A request that expects nothing but the ack.
  fn execute(&self, req: &Request, context: &str, refine: &[Refine]) -> Result<()> {
    self
      .transact(req)
      .map(|_| ())
      .map_err(|f| f.into_error(context, refine))
  }

  /// A dump (`NLM_F_DUMP`), retried a few times when the kernel says it was inconsistent.
  fn dump(&self, req: &Request, context: &str) -> Result<Vec<(u16, Vec<u8>)>> {
    let mut attempt = 0;
    loop {
      let reply = self.transact(req).map_err(|f| f.into_error(context, &[]))?;
      attempt += 1;
      if !reply.interrupted || attempt > DUMP_RETRIES {
        return Ok(reply.messages);
      }
    }
  }

  /// The single `RTM_NEWLINK` a `RTM_GETLINK` request answers with.
  fn get_link(&self, req: &Request, context: &str, refine: &[Refine]) -> Result<LinkInfo> {
    let reply = self.transact(req).map_err(|f| f.into_error(context, refine))?;
    let payload = reply
      .messages
      .iter()
      .find(|(ty, _)| *ty == sys::RTM_NEWLINK)
      .map(|(_, p)| p)
      .ok_or_else(|| {
        Error::new(
          ErrorKind::Os,
          format!("{context}: the kernel sent no RTM_NEWLINK"),
        )
      })?;
    parse_link(payload).map_err(|m| Error::new(ErrorKind::Os, format!("{context}: {m}")))
  }

  /// The index of the interface called `name`; `NotFound` when there is none.
  pub fn link_index(&self, name: &str) -> Result<u32> {
    validate_name(name)?;
    let mut name_z = name.as_bytes().to_vec();
    name_z.push(0);
    let mut req = Request::new(sys::RTM_GETLINK, 0, &IfInfoMsg::default().encode());
    req.attr(sys::IFLA_IFNAME, &name_z);
    let refine = [(sys::ENODEV, ErrorKind::NotFound, "no such interface")];
    let info = self.get_link(&req, &format!("look up interface {name}"), &refine)?;
    Ok(info.index)
  }

  /// The link's current state and counters, read from the kernel now.
  pub fn link(&self, index: u32) -> Result<LinkInfo> {
    check_index(index, "read link")?;
    let req = Request::new(
      sys::RTM_GETLINK,
      0,
      &IfInfoMsg {
        index: index as i32,
        ..Default::default()
      }
      .encode(),
    );
    self.get_link(&req, &format!("read link {}", ifindex(index)), &[])
  }

  /// A `RTM_SETLINK` for `index` changing `flags` under the mask `change`.
  fn setlink(index: u32, flags: u32, change: u32) -> Request {
    Request::new(
      sys::RTM_SETLINK,
      0,
      &IfInfoMsg {
        index: index as i32,
        flags,
        change,
        ..Default::default()
      }
      .encode(),
    )
  }

  /// Sets the MTU. The kernel's `EINVAL` (out of the device's range) is `InvalidMtu`.
  pub fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
    check_index(index, "set mtu")?;
    let mut req = Self::setlink(index, 0, 0);
    req.attr_u32(sys::IFLA_MTU, mtu);
    self.execute(
      &req,
      &format!("set mtu {mtu} on {}", ifindex(index)),
      &[(sys::EINVAL, ErrorKind::InvalidMtu, "")],
    )
  }

  /// Brings the link up or down (`IFF_UP`).
  pub fn set_up(&self, index: u32, up: bool) -> Result<()> {
    check_index(index, "set link up/down")?;
    let req = Self::setlink(index, if up { sys::IFF_UP } else { 0 }, sys::IFF_UP);
    let what = if up { "up" } else { "down" };
    self.execute(&req, &format!("set link {what} on {}", ifindex(index)), &[])?;
    if up && self.is_noarp(index)? {
      self.wait_ipv6_settled(index)?;
    }
    Ok(())
  }

  /// Sets the kernel's transmit queue length (`txqueuelen`).
  pub fn set_tx_queue_len(&self, index: u32, len: u32) -> Result<()> {
    check_index(index, "set txqueuelen")?;
    let mut req = Self::setlink(index, 0, 0);
    req.attr_u32(sys::IFLA_TXQLEN, len);
    self.execute(&req, &format!("set txqueuelen {len} on {}", ifindex(index)), &[])
  }

  /// Sets the hardware address (TAP devices; a TUN device has none and the kernel answers `Unsupported`).
  pub fn set_mac(&self, index: u32, mac: [u8; 6]) -> Result<()> {
    check_index(index, "set mac")?;
    let text = crate::config::format_mac(&mac);
    if mac[0] & 1 == 1 || mac == [0; 6] {
      return Err(Error::new(
        ErrorKind::InvalidAddress,
        format!(
          "set mac {text} on {}: the address must be unicast and not all zeros",
          ifindex(index)
        ),
      ));
    }
    let mut req = Self::setlink(index, 0, 0);
    req.attr(sys::IFLA_ADDRESS, &mac);
    self.execute(&req, &format!("set mac {text} on {}", ifindex(index)), &[])
  }

  /// The `RTM_NEWADDR`/`RTM_DELADDR` request for `a`: `IFA_LOCAL` is the address, `IFA_ADDRESS` the peer (or
  /// the address again when adding). A delete without a peer leaves `IFA_ADDRESS` out, so it matches the address
  /// whatever its peer. `ifa_flags` carries `IFA_F_NODAD` where the caller asks for it.
  fn address_request(ty: u16, flags: u16, index: u32, a: &IpCidr, ifa_flags: u8) -> Request {
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

  /// The link's `IFF_*` flags.
  fn link_flags(&self, index: u32) -> Result<u32> {
    let context = format!("read link flags of {}", ifindex(index));
    let req = Request::new(
      sys::RTM_GETLINK,
      0,
      &IfInfoMsg {
        index: index as i32,
        ..Default::default()
      }
      .encode(),
    );
    let reply = self.transact(&req).map_err(|f| f.into_error(&context, &[]))?;
    reply
      .messages
      .iter()
      .find(|(ty, _)| *ty == sys::RTM_NEWLINK)
      .and_then(|(_, p)| IfInfoMsg::decode(p))
      .map(|i| i.flags)
      .ok_or_else(|| {
        Error::new(
          ErrorKind::Os,
          format!("{context}: the kernel sent no RTM_NEWLINK"),
        )
      })
  }

  /// Waits, for at most two seconds, until no IPv6 address of the link is tentative any more. On a link without
  /// neighbour discovery (a TUN device: `IFF_NOARP`) the kernel skips duplicate address detection, but still
  /// finishes the address's set-up asynchronously after the link comes up; until then binding to the address fails
  /// with `EADDRNOTAVAIL`. Waiting here makes `create`, `addAddress` and `up` return with addresses ready to use.
  fn wait_ipv6_settled(&self, index: u32) -> Result<()> {
    let context = format!("list addresses on {}", ifindex(index));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
      let req = Request::new(
        sys::RTM_GETADDR,
        sys::NLM_F_DUMP,
        &IfAddrMsg {
          family: sys::AF_INET6,
          ..Default::default()
        }
        .encode(),
      );
      let tentative = self.dump(&req, &context)?.iter().any(|(ty, payload)| {
        *ty == sys::RTM_NEWADDR
          && address_flags(payload).is_some_and(|(i, f)| i == index && f & sys::IFA_F_TENTATIVE != 0)
      });
      if !tentative || std::time::Instant::now() >= deadline {
        return Ok(());
      }
      std::thread::sleep(std::time::Duration::from_millis(2));
    }
  }

  /// Whether the link has no neighbour discovery (`IFF_NOARP`: TUN devices).
  fn is_noarp(&self, index: u32) -> Result<bool> {
    Ok(self.link_flags(index)? & sys::IFF_NOARP != 0)
  }

  fn describe_address(a: &IpCidr) -> String {
    match a.peer {
      Some(p) => format!("address {} peer {p}/{}", a.addr, a.prefix),
      None => format!("address {a}"),
    }
  }

  /// Adds an address (with its peer for point-to-point links). A duplicate is `AlreadyExists`.
  pub fn add_address(&self, index: u32, a: &IpCidr) -> Result<()> {
    let context = format!("add {} on {}", Self::describe_address(a), ifindex(index));
    check_index(index, &context)?;
    check_cidr(a, &context)?;
    // Duplicate address detection is meaningless without a link layer; say so, so the address is usable at once.
    let settle = !a.is_ipv4() && self.is_noarp(index)?;
    let ifa_flags = if settle { sys::IFA_F_NODAD } else { 0 };
    let req = Self::address_request(
      sys::RTM_NEWADDR,
      sys::NLM_F_CREATE | sys::NLM_F_EXCL,
      index,
      a,
      ifa_flags,
    );
    self.execute(&req, &context, &[(sys::EEXIST, ErrorKind::AlreadyExists, "")])?;
    if settle {
      self.wait_ipv6_settled(index)?;
    }
    Ok(())
  }

  /// Removes an address (same address, prefix length and peer as added). An absent one is `NotFound`.
  pub fn remove_address(&self, index: u32, a: &IpCidr) -> Result<()> {
    let context = format!("remove {} on {}", Self::describe_address(a), ifindex(index));
    check_index(index, &context)?;
    check_cidr(a, &context)?;
    let req = Self::address_request(sys::RTM_DELADDR, 0, index, a, 0);
    self.execute(
      &req,
      &context,
      &[
        (sys::EADDRNOTAVAIL, ErrorKind::NotFound, ""),
        (sys::ENOENT, ErrorKind::NotFound, ""),
      ],
    )
  }

  /// The addresses of the interface, IPv4 and IPv6 (including those the kernel adds itself, such as IPv6
  /// link-local ones), each with its peer where there is one.
  pub fn addresses(&self, index: u32) -> Result<Vec<IpCidr>> {
    let context = format!("list addresses on {}", ifindex(index));
    check_index(index, &context)?;
    let req = Request::new(sys::RTM_GETADDR, sys::NLM_F_DUMP, &IfAddrMsg::default().encode());
    let mut out = Vec::new();
    for (ty, payload) in self.dump(&req, &context)? {
      if ty != sys::RTM_NEWADDR {
        continue;
      }
      match parse_address(&payload) {
        Some((i, a)) if i == index => out.push(a),
        _ => {}
      }
    }
    Ok(out)
  }

  /// The `RTM_NEWROUTE`/`RTM_DELROUTE` request for `r` through `index`.
  fn route_request(ty: u16, flags: u16, index: u32, r: &RouteSpec) -> Request {
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

  /// Adds a route through the interface. A duplicate is `AlreadyExists`; a gateway with no route to it is
  /// `Unreachable`.
  pub fn add_route(&self, index: u32, r: &RouteSpec) -> Result<()> {
    let context = format!("add {} on {}", describe_route(r), ifindex(index));
    check_index(index, &context)?;
    check_route(r, &context)?;
    let req = Self::route_request(sys::RTM_NEWROUTE, sys::NLM_F_CREATE | sys::NLM_F_EXCL, index, r);
    let refine = [
      (sys::EEXIST, ErrorKind::AlreadyExists, "the route exists"),
      (
        sys::ENETUNREACH,
        ErrorKind::Unreachable,
        "no route to the gateway",
      ),
      (
        sys::EHOSTUNREACH,
        ErrorKind::Unreachable,
        "the gateway is not reachable through this interface",
      ),
    ];
    self.execute(&req, &context, &refine)
  }

  /// Removes a route through the interface; an absent one is `NotFound`. Unset metric or table match any
  /// metric and the main table.
  pub fn remove_route(&self, index: u32, r: &RouteSpec) -> Result<()> {
    let context = format!("remove {} on {}", describe_route(r), ifindex(index));
    check_index(index, &context)?;
    check_route(r, &context)?;
    let req = Self::route_request(sys::RTM_DELROUTE, 0, index, r);
    self.execute(
      &req,
      &context,
      &[
        (sys::ESRCH, ErrorKind::NotFound, "no such route"),
        (sys::ENOENT, ErrorKind::NotFound, "no such route"),
      ],
    )
  }

  /// The unicast routes whose output interface is `index`, IPv4 then IPv6, from every table.
  pub fn routes(&self, index: u32) -> Result<Vec<RouteSpec>> {
    let context = format!("list routes on {}", ifindex(index));
    check_index(index, &context)?;
    let mut out = Vec::new();
    for family in [sys::AF_INET, sys::AF_INET6] {
      let req = Request::new(
        sys::RTM_GETROUTE,
        sys::NLM_F_DUMP,
        &RtMsg {
          family,
          ..Default::default()
        }
        .encode(),
      );
      for (ty, payload) in self.dump(&req, &context)? {
        if ty != sys::RTM_NEWROUTE {
          continue;
        }
        match parse_route(&payload) {
          Some((oif, r)) if oif == index => out.push(r),
          _ => {}
        }
      }
    }
    Ok(out)
  }
}

// ---- link events ------------------------------------------------------------------------------------------

/// What [`LinkEvents`] last knew of the link, to turn notifications (which carry the whole state) into
/// changes.
#[derive(Debug)]
struct LinkState {
  up: bool,
  mtu: u32,
  addresses: HashSet<IpCidr>,
  /// The link was deleted; `next` reports it once the pending events are out.
  gone: bool,
  buf: Vec<u8>,
}

impl LinkState {
  /// Applies one notification for the link; pushes the changes it makes.
  fn apply(&mut self, index: u32, ty: u16, payload: &[u8], events: &mut Vec<LinkEvent>) {
    match ty {
      sys::RTM_NEWLINK | sys::RTM_DELLINK => {
        let Ok(info) = parse_link(payload) else { return };
        if info.index != index {
          return;
        }
        if ty == sys::RTM_DELLINK {
          self.gone = true;
          if self.up {
            self.up = false;
            events.push(LinkEvent::Down);
          }
          return;
        }
        self.set_link(info.up, info.mtu, events);
      }
      sys::RTM_NEWADDR | sys::RTM_DELADDR => {
        let Some((i, a)) = parse_address(payload) else {
          return;
        };
        if i != index {
          return;
        }
        // Sets make repeated notifications of one address (IPv6 sends one per flag change) a single event.
        if ty == sys::RTM_NEWADDR {
          if self.addresses.insert(a) {
            events.push(LinkEvent::AddressAdded(a));
          }
        } else if self.addresses.remove(&a) {
          events.push(LinkEvent::AddressRemoved(a));
        }
      }
      _ => {}
    }
  }

  fn set_link(&mut self, up: bool, mtu: u32, events: &mut Vec<LinkEvent>) {
    if up != self.up {
      self.up = up;
      events.push(if up { LinkEvent::Up } else { LinkEvent::Down });
    }
    if mtu != 0 && mtu != self.mtu {
      self.mtu = mtu;
      events.push(LinkEvent::Mtu(mtu));
    }
  }

  /// Replaces the state with a fresh read of the link, pushing the differences as events (used after the
  /// socket overran and notifications were lost).
  fn resync(&mut self, query: &Netlink, index: u32, events: &mut Vec<LinkEvent>) -> Result<()> {
    let info = match query.link(index) {
      Ok(info) => info,
      Err(e) if e.kind() == ErrorKind::NotFound => {
        self.gone = true;
        if self.up {
          self.up = false;
          events.push(LinkEvent::Down);
        }
        return Ok(());
      }
      Err(e) => return Err(e),
    };
    self.set_link(info.up, info.mtu, events);
    let now: HashSet<IpCidr> = query.addresses(index)?.into_iter().collect();
    events.extend(
      self
        .addresses
        .difference(&now)
        .map(|a| LinkEvent::AddressRemoved(*a)),
    );
    events.extend(
      now
        .difference(&self.addresses)
        .map(|a| LinkEvent::AddressAdded(*a)),
    );
    self.addresses = now;
    Ok(())
  }
}

/// A subscription to one link's changes: a `NETLINK_ROUTE` socket in the link-state and address groups, an
/// eventfd to interrupt a blocked [`EventSource::next`], and a request socket to re-read the state after an
/// overrun.
#[derive(Debug)]
pub struct LinkEvents {
  index: u32,
  sock: NlSocket,
  wake: OwnedFd,
  closed: AtomicBool,
  query: Netlink,
  state: Mutex<LinkState>,
}

impl LinkEvents {
  /// Subscribes to changes of the link `index` in the calling thread's network namespace. The state is read
  /// right after subscribing, so every later change is reported; `NotFound` when there is no such link.
  pub fn subscribe(index: u32) -> Result<LinkEvents> {
    let context = format!("subscribe to events of {}", ifindex(index));
    check_index(index, &context)?;
    let groups = sys::RTMGRP_LINK | sys::RTMGRP_IPV4_IFADDR | sys::RTMGRP_IPV6_IFADDR;
    let sock = NlSocket::open(groups).map_err(|e| Error::os("socket", &e, &context))?;
    // Best effort: the default buffer works too, only overruns (handled by a resync) get likelier.
    let _ = sock.set_recv_buffer(EVENTS_RCVBUF);
    let wake = eventfd_new().map_err(|e| Error::os("eventfd", &e, &context))?;
    let query = Netlink::open()?;
    let info = query.link(index)?;
    let addresses = query.addresses(index)?.into_iter().collect();
    let state = LinkState {
      up: info.up,
      mtu: info.mtu,
      addresses,
      gone: false,
      buf: vec![0; RECV_BUF],
    };
    Ok(LinkEvents {
      index,
      sock,
      wake,
      closed: AtomicBool::new(false),
      query,
      state: Mutex::new(state),
    })
  }

  fn context(&self) -> String {
    format!("link events of {}", ifindex(self.index))
  }

  /// Reads every queued notification (without blocking) and applies it.
  fn drain(&self, state: &mut LinkState, events: &mut Vec<LinkEvent>) -> Result<()> {
    let mut buf = std::mem::take(&mut state.buf);
    let result = (|| {
      for _ in 0..EVENTS_DRAIN_MAX {
        match self.sock.recv(&mut buf, true) {
          Ok((n, 0)) => {
            let msgs = messages(&buf[..n])
              .map_err(|m| Error::new(ErrorKind::Os, format!("{}: {m}", self.context())))?;
            for m in msgs {
              state.apply(self.index, m.hdr.ty, m.payload, events);
            }
          }
          // Not from the kernel: ignore.
          Ok(_) => {}
          Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
          Err(e) if e.raw_os_error() == Some(sys::EINTR) => {}
          // The socket overran and notifications were dropped. The kernel reports that before the
          // notifications still queued, which are older than anything lost: discard them (applied after a
          // fresh read they would roll the state back), then re-read the state and report the difference.
          Err(e) if e.raw_os_error() == Some(sys::ENOBUFS) => {
            self.discard_queued(&mut buf);
            state.resync(&self.query, self.index, events)?
          }
          Err(e) => return Err(Error::os("recvfrom", &e, self.context())),
        }
      }
      Ok(())
    })();
    state.buf = buf;
    result
  }

  /// Throws away every queued notification (bounded, in case of a flood).
  fn discard_queued(&self, buf: &mut Vec<u8>) {
    for _ in 0..EVENTS_DRAIN_MAX {
      match self.sock.recv(buf, true) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
        // Another overrun, an interruption or a datagram: keep discarding.
        _ => {}
      }
    }
  }
}

impl EventSource for LinkEvents {
  /// Blocks until the link changed (at least one event), the link is deleted (`NotFound`, after a last
  /// `Down`) or [`EventSource::wake`] is called (`Closed`).
  fn next(&self) -> Result<Vec<LinkEvent>> {
    let mut state = lock(&self.state);
    loop {
      if self.closed.load(Ordering::Acquire) {
        return Err(Error::closed("link events"));
      }
      if state.gone {
        return Err(Error::new(
          ErrorKind::NotFound,
          format!("{}: device gone", self.context()),
        ));
      }
      match sys::poll_readable([self.sock.as_fd(), self.wake.as_fd()], -1) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(sys::EINTR) => continue,
        Err(e) => return Err(Error::os("poll", &e, self.context())),
      }
      if self.closed.load(Ordering::Acquire) {
        return Err(Error::closed("link events"));
      }
      let mut events = Vec::new();
      self.drain(&mut state, &mut events)?;
      if !events.is_empty() {
        return Ok(events);
      }
    }
  }

  fn wake(&self) {
    self.closed.store(true, Ordering::Release);
    // The only possible failure is EAGAIN on a saturated counter, which is readable anyway.
    let _ = eventfd_signal(self.wake.as_fd());
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  // ---- pure tests: message building and parsing -----------------------------------------------------------

  fn attr_bytes(ty: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = RtAttr {
      len: (4 + payload.len()) as u16,
      ty,
    }
    .encode()
    .to_vec();
    v.extend_from_slice(payload);
    pad(&mut v);
    v
  }

  /// A whole message: header with `ty`, `flags`, `seq`, then `body`.
  fn message(ty: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let mut v = NlMsgHdr {
      len: (16 + body.len()) as u32,
      ty,
      flags,
      seq,
      pid: 0,
    }
    .encode()
    .to_vec();
    v.extend_from_slice(body);
    pad(&mut v);
    v
  }

  #[test]
  fn request_attributes_are_aligned() {
    let mut req = Request::new(
      sys::RTM_SETLINK,
      0,
      &IfInfoMsg {
        index: 7,
        ..Default::default()
      }
      .encode(),
    );
    req
      .attr(sys::IFLA_IFNAME, b"tun0\0")
      .attr_u32(sys::IFLA_MTU, 1400);
    let msg = req.finish(42);
    // 16 header + 16 ifinfomsg + (4 + 5 → 12 padded) + (4 + 4 = 8)
    assert_eq!(msg.len(), 16 + 16 + 12 + 8);
    let hdr = NlMsgHdr::decode(&msg).unwrap();
    assert_eq!(hdr.len as usize, msg.len());
    assert_eq!(hdr.ty, sys::RTM_SETLINK);
    assert_eq!(hdr.seq, 42);
    assert_eq!(hdr.flags, sys::NLM_F_REQUEST | sys::NLM_F_ACK);
    assert_eq!(IfInfoMsg::decode(&msg[16..]).unwrap().index, 7);
    // The name attribute's length excludes the padding; the padding bytes are zero.
    assert_eq!(&msg[32..34], &9u16.to_ne_bytes());
    assert_eq!(&msg[41..44], &[0, 0, 0]);
    let got: Vec<_> = attrs(&msg[32..]).map(|(t, p)| (t, p.to_vec())).collect();
    assert_eq!(
      got,
      vec![
        (sys::IFLA_IFNAME, b"tun0\0".to_vec()),
        (sys::IFLA_MTU, 1400u32.to_ne_bytes().to_vec())
      ]
    );
  }

  #[test]
  fn attribute_parsing_masks_flags_and_stops_at_garbage() {
    let mut buf = attr_bytes(0x8000 | 5, &[1, 2, 3]);
    buf.extend(attr_bytes(6, &[]));
    buf.extend_from_slice(&[200, 0, 1, 0]); // claims 200 bytes, only 4 present
    let got: Vec<_> = attrs(&buf).map(|(t, p)| (t, p.len())).collect();
    assert_eq!(got, vec![(5, 3), (6, 0)]);
    assert_eq!(attrs(&[1, 0]).count(), 0);
  }

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

  #[test]
  fn malformed_datagrams_are_rejected() {
    let mut d = message(sys::RTM_NEWLINK, 0, 1, &[0; 16]);
    d[0] = 200; // longer than the datagram
    assert!(messages(&d).is_err());
    assert!(messages(&[0; 10]).is_err());
    let mut d = message(sys::NLMSG_DONE, 0, 1, &[0; 4]);
    d[0] = 8; // shorter than a header
    assert!(messages(&d).is_err());
  }

  #[test]
  fn error_acks_carry_errno_and_extack_message() {
    // Capped ack with TLVs: error, the request's header, then NLMSGERR_ATTR_MSG.
    let mut body = (-22i32).to_ne_bytes().to_vec();
    body.extend(
      NlMsgHdr {
        len: 40,
        ty: sys::RTM_SETLINK,
        ..Default::default()
      }
      .encode(),
    );
    body.extend(attr_bytes(
      sys::NLMSGERR_ATTR_MSG,
      b"mtu greater than device maximum\0",
    ));
    let flags = sys::NLM_F_CAPPED | sys::NLM_F_ACK_TLVS;
    assert_eq!(
      parse_error(true, flags, &body).unwrap(),
      (22, Some("mtu greater than device maximum".into()))
    );
    // Uncapped: the whole 24-byte request is echoed before the TLVs.
    let mut body = (-17i32).to_ne_bytes().to_vec();
    body.extend(
      NlMsgHdr {
        len: 24,
        ty: sys::RTM_NEWADDR,
        ..Default::default()
      }
      .encode(),
    );
    body.extend([0xaa; 8]);
    body.extend(attr_bytes(sys::NLMSGERR_ATTR_MSG, b"exists\0"));
    assert_eq!(
      parse_error(true, sys::NLM_F_ACK_TLVS, &body).unwrap(),
      (17, Some("exists".into()))
    );
    assert!(parse_error(true, 0, &[0, 0]).is_err());
    // NLMSG_DONE of a failed dump: the error code, then the attributes directly.
    let mut body = (-95i32).to_ne_bytes().to_vec();
    body.extend(attr_bytes(sys::NLMSGERR_ATTR_MSG, b"dump not supported\0"));
    assert_eq!(
      parse_error(false, sys::NLM_F_ACK_TLVS, &body).unwrap(),
      (95, Some("dump not supported".into()))
    );
    assert_eq!(
      parse_error(false, sys::NLM_F_MULTI, &0i32.to_ne_bytes()).unwrap(),
      (0, None)
    );

    let e = Failure::Kernel {
      errno: 22,
      message: Some("too big".into()),
    }
    .into_error("set mtu 99999 on ifindex 3", &[(22, ErrorKind::InvalidMtu, "")]);
    assert_eq!(e.kind(), ErrorKind::InvalidMtu);
    assert_eq!(e.errno(), Some(22));
    assert_eq!(e.syscall(), Some("netlink"));
    assert!(
      e.message().starts_with("set mtu 99999 on ifindex 3 (too big): "),
      "{}",
      e.message()
    );
    let e = Failure::Kernel {
      errno: 19,
      message: None,
    }
    .into_error("set link up on ifindex 3", &[]);
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.message().contains("device gone"), "{}", e.message());
  }

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
    let msg =
      Netlink::address_request(sys::RTM_NEWADDR, sys::NLM_F_CREATE | sys::NLM_F_EXCL, 5, &a, 0).finish(1);
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

  #[test]
  fn route_requests_and_replies() {
    let r = RouteSpec {
      to: "10.9.0.0/16".parse().unwrap(),
      via: None,
      metric: Some(50),
      table: Some(1000),
    };
    let msg = Netlink::route_request(sys::RTM_NEWROUTE, sys::NLM_F_CREATE | sys::NLM_F_EXCL, 3, &r).finish(1);
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
    let msg = Netlink::route_request(sys::RTM_NEWROUTE, 0, 3, &d).finish(1);
    let rtm = RtMsg::decode(&msg[16..]).unwrap();
    assert_eq!((rtm.table, rtm.scope), (254, sys::RT_SCOPE_UNIVERSE));
    assert!(attrs(&msg[28..]).all(|(t, _)| t != sys::RTA_DST));
    let mut reply = msg[16..].to_vec();
    assert_eq!(parse_route(&reply), Some((3, d)));
    // Delete requests use wildcards for protocol, scope and type.
    let del = Netlink::route_request(sys::RTM_DELROUTE, 0, 3, &r).finish(1);
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

  #[test]
  fn inputs_are_validated_before_sending() {
    let bad_peer = IpCidr {
      addr: "10.0.0.1".parse().unwrap(),
      prefix: 24,
      peer: Some("fd00::1".parse().unwrap()),
    };
    assert_eq!(
      check_cidr(&bad_peer, "x").unwrap_err().kind(),
      ErrorKind::InvalidAddress
    );
    let long = IpCidr {
      addr: "10.0.0.1".parse().unwrap(),
      prefix: 33,
      peer: None,
    };
    assert_eq!(
      check_cidr(&long, "x").unwrap_err().kind(),
      ErrorKind::InvalidAddress
    );
    let mixed = RouteSpec {
      to: "10.0.0.0/8".parse().unwrap(),
      via: Some("fd00::1".parse().unwrap()),
      metric: None,
      table: None,
    };
    assert_eq!(
      check_route(&mixed, "x").unwrap_err().kind(),
      ErrorKind::InvalidAddress
    );
    let host_bits = RouteSpec {
      to: "10.0.0.1/8".parse().unwrap(),
      via: None,
      metric: None,
      table: None,
    };
    assert_eq!(
      check_route(&host_bits, "x").unwrap_err().kind(),
      ErrorKind::InvalidAddress
    );
    let table0 = RouteSpec {
      to: "10.0.0.0/8".parse().unwrap(),
      via: None,
      metric: None,
      table: Some(0),
    };
    assert_eq!(
      check_route(&table0, "x").unwrap_err().kind(),
      ErrorKind::InvalidArgument
    );
  }

  #[test]
  fn link_state_turns_notifications_into_changes() {
    let mut st = LinkState {
      up: false,
      mtu: 1500,
      addresses: HashSet::new(),
      gone: false,
      buf: Vec::new(),
    };
    let newlink = |index: i32, flags: u32, mtu: u32| {
      let mut b = IfInfoMsg {
        index,
        flags,
        ..Default::default()
      }
      .encode()
      .to_vec();
      b.extend(attr_bytes(sys::IFLA_MTU, &mtu.to_ne_bytes()));
      b
    };
    let mut ev = Vec::new();
    st.apply(3, sys::RTM_NEWLINK, &newlink(3, sys::IFF_UP, 1500), &mut ev);
    st.apply(3, sys::RTM_NEWLINK, &newlink(3, sys::IFF_UP, 1500), &mut ev); // no change
    st.apply(3, sys::RTM_NEWLINK, &newlink(4, 0, 9000), &mut ev); // another link
    st.apply(3, sys::RTM_NEWLINK, &newlink(3, sys::IFF_UP, 1400), &mut ev);
    let mut addr = IfAddrMsg {
      family: sys::AF_INET,
      prefixlen: 24,
      index: 3,
      ..Default::default()
    }
    .encode()
    .to_vec();
    addr.extend(attr_bytes(sys::IFA_LOCAL, &[10, 0, 0, 1]));
    st.apply(3, sys::RTM_NEWADDR, &addr, &mut ev);
    st.apply(3, sys::RTM_NEWADDR, &addr, &mut ev); // repeated notification
    st.apply(3, sys::RTM_DELADDR, &addr, &mut ev);
    st.apply(3, sys::RTM_DELLINK, &newlink(3, 0, 1400), &mut ev);
    let a: IpCidr = "10.0.0.1/24".parse().unwrap();
    assert_eq!(
      ev,
      vec![
        LinkEvent::Up,
        LinkEvent::Mtu(1400),
        LinkEvent::AddressAdded(a),
        LinkEvent::AddressRemoved(a),
        LinkEvent::Down
      ]
    );
    assert!(st.gone);
  }

  // ---- privileged tests: a private network namespace's `lo` -----------------------------------------------

  /// Runs `f` on a thread moved into a new network namespace (whose `lo` has index 1). Skips, with a message,
  /// when namespaces cannot be created (EPERM) unless `TUNKIT_REQUIRE_DEVICE=1`.
  fn in_netns(name: &str, f: impl FnOnce() + Send + 'static) {
    let name = name.to_string();
    let handle = std::thread::spawn(move || {
      if let Err(e) = super::super::sys::unshare_netns() {
        let required = std::env::var("TUNKIT_REQUIRE_DEVICE").is_ok_and(|v| v == "1");
        if e.raw_os_error() == Some(sys::EPERM) && !required {
          eprintln!("skipping {name}: cannot create a network namespace ({e})");
          return;
        }
        panic!("{name}: unshare(CLONE_NEWNET) failed: {e}");
      }
      f();
    });
    if let Err(p) = handle.join() {
      std::panic::resume_unwind(p);
    }
  }

  const LO: u32 = 1;

  #[test]
  fn netns_link_settings() {
    in_netns("netns_link_settings", || {
      let nl = Netlink::open().unwrap();
      assert_eq!(nl.link_index("lo").unwrap(), LO);
      let e = nl.link_index("nosuchdev0").unwrap_err();
      assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
      assert!(e.message().contains("no such interface"), "{e}");
      assert_eq!(
        nl.link_index("bad/name").unwrap_err().kind(),
        ErrorKind::InvalidName
      );
      assert!(!nl.link(LO).unwrap().up);
      nl.set_up(LO, true).unwrap();
      nl.set_mtu(LO, 1400).unwrap();
      nl.set_tx_queue_len(LO, 777).unwrap();
      let info = nl.link(LO).unwrap();
      assert_eq!(
        (
          info.name.as_str(),
          info.index,
          info.mtu,
          info.up,
          info.tx_queue_len
        ),
        ("lo", LO, 1400, true, 777)
      );
      assert_eq!(info.mac, Some([0; 6]));
      // lo accepts any MTU the kernel's `int` can hold; u32::MAX reads as -1, below every device's minimum.
      let e = nl.set_mtu(LO, u32::MAX).unwrap_err();
      assert_eq!(e.kind(), ErrorKind::InvalidMtu, "{e}");
      assert_eq!(e.errno(), Some(sys::EINVAL));
      let e = nl.link(4242).unwrap_err();
      assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
      let e = nl.set_up(4242, true).unwrap_err();
      assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
      assert!(e.message().contains("device gone"), "{e}");
      // Traffic on lo shows in the counters.
      let before = nl.link(LO).unwrap().stats;
      let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
      sock.send_to(b"ping", sock.local_addr().unwrap()).unwrap();
      let after = nl.link(LO).unwrap().stats;
      assert!(
        after.tx_packets > before.tx_packets && after.rx_bytes > before.rx_bytes,
        "{before:?} {after:?}"
      );
      nl.set_up(LO, false).unwrap();
      assert!(!nl.link(LO).unwrap().up);
    });
  }

  #[test]
  fn netns_addresses() {
    in_netns("netns_addresses", || {
      let nl = Netlink::open().unwrap();
      nl.set_up(LO, true).unwrap();
      let v4: IpCidr = "10.7.0.1/24".parse().unwrap();
      let v6: IpCidr = "fd07::1/64".parse().unwrap();
      nl.add_address(LO, &v4).unwrap();
      nl.add_address(LO, &v6).unwrap();
      let list = nl.addresses(LO).unwrap();
      assert!(list.contains(&v4) && list.contains(&v6), "{list:?}");
      assert!(list.contains(&"127.0.0.1/8".parse().unwrap()), "{list:?}");
      let e = nl.add_address(LO, &v4).unwrap_err();
      assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
      assert_eq!(
        nl.add_address(LO, &v6).unwrap_err().kind(),
        ErrorKind::AlreadyExists
      );
      // Point-to-point address with a peer.
      let p2p = "10.8.0.1/32"
        .parse::<IpCidr>()
        .unwrap()
        .with_peer("10.8.0.2".parse().unwrap())
        .unwrap();
      nl.add_address(LO, &p2p).unwrap();
      assert!(nl.addresses(LO).unwrap().contains(&p2p));
      nl.remove_address(LO, &p2p).unwrap();
      // Removing without naming the peer removes it too.
      nl.add_address(LO, &p2p).unwrap();
      nl.remove_address(LO, &"10.8.0.1/32".parse().unwrap()).unwrap();
      assert!(!nl.addresses(LO).unwrap().contains(&p2p));
      nl.remove_address(LO, &v4).unwrap();
      nl.remove_address(LO, &v6).unwrap();
      let list = nl.addresses(LO).unwrap();
      assert!(
        !list.contains(&v4) && !list.contains(&v6) && !list.contains(&p2p),
        "{list:?}"
      );
      for a in [v4, v6, "10.7.0.9/24".parse().unwrap()] {
        let e = nl.remove_address(LO, &a).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{a}: {e}");
      }
      let bad = IpCidr {
        addr: "10.0.0.1".parse().unwrap(),
        prefix: 40,
        peer: None,
      };
      assert_eq!(
        nl.add_address(LO, &bad).unwrap_err().kind(),
        ErrorKind::InvalidAddress
      );
    });
  }

  #[test]
  fn netns_routes() {
    in_netns("netns_routes", || {
      let nl = Netlink::open().unwrap();
      nl.set_up(LO, true).unwrap();
      nl.add_address(LO, &"fd07::1/64".parse().unwrap()).unwrap();
      nl.add_address(LO, &"10.7.0.1/24".parse().unwrap()).unwrap();
      let r = RouteSpec {
        to: "10.9.0.0/16".parse().unwrap(),
        via: None,
        metric: Some(50),
        table: None,
      };
      nl.add_route(LO, &r).unwrap();
      let e = nl.add_route(LO, &r).unwrap_err();
      assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
      let r6 = RouteSpec {
        to: "fd09::/64".parse().unwrap(),
        via: None,
        metric: Some(60),
        table: Some(1000),
      };
      nl.add_route(LO, &r6).unwrap();
      let r7 = RouteSpec {
        to: "10.11.0.0/16".parse().unwrap(),
        via: Some("10.7.0.2".parse().unwrap()),
        metric: None,
        table: None,
      };
      nl.add_route(LO, &r7).unwrap();
      let r8 = RouteSpec {
        to: "fd0b::/48".parse().unwrap(),
        via: None,
        metric: None,
        table: None,
      };
      nl.add_route(LO, &r8).unwrap();
      let list = nl.routes(LO).unwrap();
      assert!(list.contains(&r), "{list:?}");
      assert!(list.contains(&r6), "{list:?}");
      assert!(list.contains(&r7), "{list:?}");
      // IPv6 routes without a metric get the kernel's default (1024).
      assert!(
        list.contains(&RouteSpec {
          metric: Some(1024),
          ..r8.clone()
        }),
        "{list:?}"
      );
      assert!(
        list
          .iter()
          .all(|x| x.to.addr.to_string() != "fe80::" && x.to.addr.to_string() != "ff00::"),
        "{list:?}"
      );
      nl.remove_route(LO, &r).unwrap();
      nl.remove_route(LO, &r6).unwrap();
      nl.remove_route(LO, &r7).unwrap();
      nl.remove_route(LO, &r8).unwrap();
      let list = nl.routes(LO).unwrap();
      assert!(
        !list.iter().any(|x| [r.to, r6.to, r7.to, r8.to].contains(&x.to)),
        "{list:?}"
      );
      let e = nl.remove_route(LO, &r).unwrap_err();
      assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
      let e = nl.remove_route(LO, &r6).unwrap_err();
      assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
      let gw = RouteSpec {
        to: "10.10.0.0/16".parse().unwrap(),
        via: Some("192.0.2.1".parse().unwrap()),
        metric: None,
        table: None,
      };
      let e = nl.add_route(LO, &gw).unwrap_err();
      assert_eq!(e.kind(), ErrorKind::Unreachable, "{e}");
      assert!(
        e.message().contains("gateway"),
        "the kernel's explanation is included: {e}"
      );
      // IPv6 refuses a gateway it has no neighbour route for (here: any gateway through lo).
      let gw6 = RouteSpec {
        to: "fd0a::/48".parse().unwrap(),
        via: Some("fd07::2".parse().unwrap()),
        metric: None,
        table: None,
      };
      let e = nl.add_route(LO, &gw6).unwrap_err();
      assert_eq!(e.kind(), ErrorKind::Unreachable, "{e}");
      let e = nl
        .add_route(
          LO,
          &RouteSpec {
            to: "10.9.0.1/16".parse().unwrap(),
            ..r.clone()
          },
        )
        .unwrap_err();
      assert_eq!(e.kind(), ErrorKind::InvalidAddress);
    });
  }

  #[test]
  fn netns_link_events() {
    in_netns("netns_link_events", || {
      let nl = Netlink::open().unwrap();
      nl.set_up(LO, true).unwrap();
      nl.set_mtu(LO, 1500).unwrap();
      let events = std::sync::Arc::new(LinkEvents::subscribe(LO).unwrap());
      // Watchdog: wakes `next` if no event arrives in time, which then fails the test with `Closed`.
      let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
      let watchdog = {
        let events = events.clone();
        std::thread::spawn(move || {
          if done_rx.recv_timeout(Duration::from_secs(5)).is_err() {
            events.wake();
          }
        })
      };
      let expect = |want: LinkEvent| {
        let start = Instant::now();
        let mut seen = Vec::new();
        while !seen.contains(&want) {
          seen.extend(
            events
              .next()
              .unwrap_or_else(|e| panic!("waiting for {want:?}, saw {seen:?}: {e}")),
          );
        }
        assert!(
          start.elapsed() < Duration::from_secs(1),
          "{want:?} took {:?}",
          start.elapsed()
        );
      };
      nl.set_mtu(LO, 1300).unwrap();
      expect(LinkEvent::Mtu(1300));
      let a: IpCidr = "10.7.0.1/24".parse().unwrap();
      nl.add_address(LO, &a).unwrap();
      expect(LinkEvent::AddressAdded(a));
      nl.remove_address(LO, &a).unwrap();
      expect(LinkEvent::AddressRemoved(a));
      nl.set_up(LO, false).unwrap();
      expect(LinkEvent::Down);
      nl.set_up(LO, true).unwrap();
      expect(LinkEvent::Up);
      done_tx.send(()).unwrap();
      watchdog.join().unwrap();
      // After wake, next fails with Closed at once.
      events.wake();
      assert_eq!(events.next().unwrap_err().kind(), ErrorKind::Closed);
      assert_eq!(
        LinkEvents::subscribe(4242).unwrap_err().kind(),
        ErrorKind::NotFound
      );
    });
  }

  #[test]
  fn netns_link_events_recover_from_an_overrun() {
    in_netns("netns_link_events_recover_from_an_overrun", || {
      let nl = Netlink::open().unwrap();
      nl.set_up(LO, true).unwrap();
      let events = LinkEvents::subscribe(LO).unwrap();
      // The smallest receive buffer the kernel allows holds a handful of RTM_NEWLINK notifications at most.
      events.sock.set_recv_buffer(0).unwrap();
      let changes = 60u32;
      for mtu in 1300..1300 + changes {
        nl.set_mtu(LO, mtu).unwrap();
      }
      let last = LinkEvent::Mtu(1300 + changes - 1);
      let mut seen = Vec::new();
      while !seen.contains(&last) {
        assert!(seen.len() <= changes as usize, "{seen:?}");
        // The notifications are already queued (or lost), so `next` cannot block here.
        seen.extend(events.next().unwrap());
      }
      assert!(
        seen.len() < changes as usize,
        "the socket did not overrun, nothing tested: {seen:?}"
      );
      assert_eq!(
        seen.last(),
        Some(&last),
        "the state was rolled back after the resync: {seen:?}"
      );
    });
  }

  #[test]
  fn netns_wake_unblocks_next() {
    in_netns("netns_wake_unblocks_next", || {
      let events = std::sync::Arc::new(LinkEvents::subscribe(LO).unwrap());
      let waker = {
        let events = events.clone();
        std::thread::spawn(move || {
          std::thread::sleep(Duration::from_millis(100));
          events.wake();
        })
      };
      let start = Instant::now();
      assert_eq!(events.next().unwrap_err().kind(), ErrorKind::Closed);
      assert!(start.elapsed() < Duration::from_secs(2));
      waker.join().unwrap();
    });
  }
}
