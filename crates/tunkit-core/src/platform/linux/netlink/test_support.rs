//! Helpers of the netlink tests: attributes and whole messages as the kernel sends them, for the parsers, and a
//! private network namespace for the tests that talk to the kernel.

use super::wire::pad;
use crate::platform::linux::sys::netlink as sys;
use crate::platform::linux::sys::netlink::{NlMsgHdr, RtAttr};

pub(super) fn attr_bytes(ty: u16, payload: &[u8]) -> Vec<u8> {
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
pub(super) fn message(ty: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
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

/// Runs `f` on a thread moved into a new network namespace (whose `lo` has index 1). Skips, with a message,
/// when namespaces cannot be created (EPERM) unless `TUNKIT_REQUIRE_DEVICE=1`.
pub(super) fn in_netns(name: &str, f: impl FnOnce() + Send + 'static) {
  let name = name.to_string();
  let handle = std::thread::spawn(move || {
    if let Err(e) = crate::platform::linux::sys::unshare_netns() {
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

/// The index of `lo` in a new network namespace.
pub(super) const LO: u32 = 1;
