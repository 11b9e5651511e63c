//! rtnetlink (`NETLINK_ROUTE`) configuration of a Linux interface: link state, MTU, queue length, MAC,
//! addresses and routes, read back from the kernel on demand, a subscription to the link's changes
//! ([`LinkEvents`]), and the namespace's policy routing rules.
//!
//! Requests are built and replies parsed as plain byte buffers (safe code) in `wire`, which does no syscalls;
//! the socket and the message layouts live in [`super::sys::netlink`]. Every request asks for an ack
//! (`NLM_F_ACK`) and waits for the reply with its sequence number, so a failure always comes back as the
//! kernel's errno, together with the kernel's own explanation when it gives one (extended ack,
//! `NETLINK_EXT_ACK`).
//!
//! This module holds the [`Netlink`] handle: the request and reply plumbing and the mapping of failures to
//! errors. The operations are in `links`, `addresses`, `routes` and `rules` (policy routing, not per
//! device), the subscription in `events`.

use std::io;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::sys::netlink as sys;
use super::sys::netlink::NlSocket;
use crate::error::{Error, ErrorKind, Result};
use wire::{messages, parse_error, Request};

mod addresses;
mod events;
mod links;
mod routes;
mod rules;
#[cfg(test)]
mod test_support;
mod wire;

pub use events::LinkEvents;

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

fn check_index(index: u32, what: &str) -> Result<()> {
  if index == 0 || index > i32::MAX as u32 {
    return Err(Error::new(
      ErrorKind::InvalidArgument,
      format!("{what}: invalid interface index {index}"),
    ));
  }
  Ok(())
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
  fn dump(&self, req: &Request, context: &str, refine: &[Refine]) -> Result<Vec<(u16, Vec<u8>)>> {
    let mut attempt = 0;
    loop {
      let reply = self.transact(req).map_err(|f| f.into_error(context, refine))?;
      attempt += 1;
      if !reply.interrupted || attempt > DUMP_RETRIES {
        return Ok(reply.messages);
      }
    }
  }
}

#[cfg(test)]
mod tests {
  use super::test_support::attr_bytes;
  use super::*;
  use crate::platform::linux::sys::netlink::NlMsgHdr;

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
}
