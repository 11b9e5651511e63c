//! The wire format of rtnetlink, pure (no syscalls): building requests (the `nlmsghdr`, the fixed family
//! header, then attributes), splitting received datagrams into messages and attributes, and reading error acks.
//! The encoders and decoders of each kind of message are in the submodules.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::platform::linux::sys::netlink as sys;
use crate::platform::linux::sys::netlink::{NlMsgHdr, RtAttr};

pub(super) mod address;
pub(super) mod link;
pub(super) mod route;
pub(super) mod rule;

fn align(len: usize) -> usize {
  (len + sys::NLMSG_ALIGNTO - 1) & !(sys::NLMSG_ALIGNTO - 1)
}

pub(super) fn pad(buf: &mut Vec<u8>) {
  buf.resize(align(buf.len()), 0);
}

// ---- building requests ------------------------------------------------------------------------------------

/// One netlink request under construction: the `nlmsghdr` (filled in by [`Request::finish`]), the fixed
/// family header, then attributes, each padded to 4 bytes.
#[derive(Debug, Clone)]
pub(super) struct Request {
  ty: u16,
  flags: u16,
  buf: Vec<u8>,
}

impl Request {
  /// A request of type `ty`; `NLM_F_REQUEST | NLM_F_ACK` are always added to `flags`.
  pub(super) fn new(ty: u16, flags: u16, fixed: &[u8]) -> Request {
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
  pub(super) fn attr(&mut self, ty: u16, payload: &[u8]) -> &mut Request {
    let len = RtAttr::SIZE + payload.len();
    debug_assert!(len <= usize::from(u16::MAX));
    self
      .buf
      .extend_from_slice(&RtAttr { len: len as u16, ty }.encode());
    self.buf.extend_from_slice(payload);
    pad(&mut self.buf);
    self
  }

  pub(super) fn attr_u32(&mut self, ty: u16, v: u32) -> &mut Request {
    self.attr(ty, &v.to_ne_bytes())
  }

  pub(super) fn attr_ip(&mut self, ty: u16, ip: IpAddr) -> &mut Request {
    match ip {
      IpAddr::V4(a) => self.attr(ty, &a.octets()),
      IpAddr::V6(a) => self.attr(ty, &a.octets()),
    }
  }

  /// The finished message with sequence number `seq`.
  pub(super) fn finish(&self, seq: u32) -> Vec<u8> {
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
pub(super) struct Message<'a> {
  pub(super) hdr: NlMsgHdr,
  /// Everything after the header, up to `nlmsg_len`.
  pub(super) payload: &'a [u8],
}

/// Splits a datagram into its messages (each aligned to 4 bytes). A malformed length is an error: nothing
/// after it can be trusted.
pub(super) fn messages(mut buf: &[u8]) -> std::result::Result<Vec<Message<'_>>, String> {
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
pub(super) struct Attrs<'a> {
  buf: &'a [u8],
}

pub(super) fn attrs(buf: &[u8]) -> Attrs<'_> {
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

pub(super) fn attr_u32(payload: &[u8]) -> Option<u32> {
  Some(u32::from_ne_bytes(payload.get(..4)?.try_into().ok()?))
}

/// An address attribute of `family` (4 or 16 bytes).
pub(super) fn attr_ip(family: u8, payload: &[u8]) -> Option<IpAddr> {
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
pub(super) fn attr_str(payload: &[u8]) -> String {
  let end = payload.iter().position(|&b| b == 0).unwrap_or(payload.len());
  String::from_utf8_lossy(&payload[..end]).into_owned()
}

/// Parses the payload of `NLMSG_ERROR` (`ack`) or `NLMSG_DONE` (not `ack`) into `(errno, kernel's message)`;
/// errno 0 is success. Both start with the (negative) error code; extended-ack attributes come next in
/// `NLMSG_DONE`, and after the echoed request in `NLMSG_ERROR` (only its header when `NLM_F_CAPPED`).
pub(super) fn parse_error(
  ack: bool,
  flags: u16,
  payload: &[u8],
) -> std::result::Result<(i32, Option<String>), String> {
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

pub(super) fn family_of(ip: &IpAddr) -> u8 {
  if ip.is_ipv4() {
    sys::AF_INET
  } else {
    sys::AF_INET6
  }
}

#[cfg(test)]
mod tests {
  use super::super::test_support::{attr_bytes, message};
  use super::*;
  use crate::platform::linux::sys::netlink::IfInfoMsg;

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
  fn malformed_datagrams_are_rejected() {
    let mut d = message(sys::RTM_NEWLINK, 0, 1, &[0; 16]);
    d[0] = 200; // longer than the datagram
    assert!(messages(&d).is_err());
    assert!(messages(&[0; 10]).is_err());
    let mut d = message(sys::NLMSG_DONE, 0, 1, &[0; 4]);
    d[0] = 8; // shorter than a header
    assert!(messages(&d).is_err());
  }
}
