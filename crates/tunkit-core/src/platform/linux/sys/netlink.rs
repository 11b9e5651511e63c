//! Raw rtnetlink plumbing: the `NETLINK_ROUTE` socket (`socket`, `bind`, `setsockopt`, `sendto`, `recvfrom`)
//! with safe wrappers returning `io::Result`, plus the kernel's message layouts and constants
//! (`<linux/netlink.h>`, `<linux/rtnetlink.h>`, `<linux/if_link.h>`, `<linux/if_addr.h>`,
//! `<linux/fib_rules.h>`). `poll`, `eventfd` and `unshare` are shared with the tun code in the parent module.
//!
//! The layouts are declared as `#[repr(C)]` structs whose sizes are checked at compile time against the
//! kernel's, and are encoded to and decoded from byte buffers field by field (netlink is host-endian), so
//! building and parsing messages above this module needs no `unsafe`.

use std::ffi::{c_int, c_void};
use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use super::{poll_fds, PollFd, POLLIN};

// ---- errno values (asm-generic) ---------------------------------------------------------------------------

pub const EPERM: i32 = 1;
pub const ENOENT: i32 = 2;
pub const ESRCH: i32 = 3;
pub const EINTR: i32 = 4;
pub const EEXIST: i32 = 17;
pub const ENODEV: i32 = 19;
pub const EINVAL: i32 = 22;
pub const EADDRNOTAVAIL: i32 = 99;
pub const EAFNOSUPPORT: i32 = 97;
pub const ENETUNREACH: i32 = 101;
pub const ENOBUFS: i32 = 105;
pub const EHOSTUNREACH: i32 = 113;

// ---- sockets ----------------------------------------------------------------------------------------------

const AF_NETLINK: c_int = 16;
const SOCK_RAW: c_int = 3;
const SOCK_CLOEXEC: c_int = 0o2000000;
const NETLINK_ROUTE: c_int = 0;
const SOL_SOCKET: c_int = 1;
const SO_RCVBUF: c_int = 8;
const SO_RCVTIMEO: c_int = 20;
/// `setsockopt` level of the netlink options below.
pub const SOL_NETLINK: c_int = 270;
/// Acks carry only the request's header instead of the whole request.
pub const NETLINK_CAP_ACK: c_int = 10;
/// Error acks carry the kernel's explanation (`NLMSGERR_ATTR_MSG`).
pub const NETLINK_EXT_ACK: c_int = 11;

const MSG_PEEK: c_int = 0x2;
const MSG_TRUNC: c_int = 0x20;
const MSG_DONTWAIT: c_int = 0x40;

pub const AF_UNSPEC: u8 = 0;
pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;

/// Multicast groups (the legacy bit mask of `sockaddr_nl.nl_groups`).
pub const RTMGRP_LINK: u32 = 0x1;
pub const RTMGRP_IPV4_IFADDR: u32 = 0x10;
pub const RTMGRP_IPV6_IFADDR: u32 = 0x100;

// ---- netlink messages -------------------------------------------------------------------------------------

pub const NLMSG_NOOP: u16 = 1;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLMSG_OVERRUN: u16 = 4;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
/// The dump changed while it was being taken; its content may be inconsistent.
pub const NLM_F_DUMP_INTR: u16 = 0x10;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
/// On `NLMSG_ERROR`: the echoed request was cut to its header (`NETLINK_CAP_ACK`).
pub const NLM_F_CAPPED: u16 = 0x100;
/// On `NLMSG_ERROR`: extended-ack attributes follow the echoed request.
pub const NLM_F_ACK_TLVS: u16 = 0x200;

/// Extended-ack attribute: the kernel's error text, NUL-terminated.
pub const NLMSGERR_ATTR_MSG: u16 = 1;

/// Attribute type bits that are flags, not type.
pub const NLA_TYPE_MASK: u16 = !(0x8000 | 0x4000);

// ---- rtnetlink --------------------------------------------------------------------------------------------

pub const RTM_NEWLINK: u16 = 16;
pub const RTM_DELLINK: u16 = 17;
pub const RTM_GETLINK: u16 = 18;
pub const RTM_SETLINK: u16 = 19;
pub const RTM_NEWADDR: u16 = 20;
pub const RTM_DELADDR: u16 = 21;
pub const RTM_GETADDR: u16 = 22;
pub const RTM_NEWROUTE: u16 = 24;
pub const RTM_DELROUTE: u16 = 25;
pub const RTM_GETROUTE: u16 = 26;
pub const RTM_NEWRULE: u16 = 32;
pub const RTM_DELRULE: u16 = 33;
pub const RTM_GETRULE: u16 = 34;

pub const IFF_UP: u32 = 0x1;
/// The link has no address resolution (TUN devices).
pub const IFF_NOARP: u32 = 0x80;

pub const IFLA_ADDRESS: u16 = 1;
pub const IFLA_IFNAME: u16 = 3;
pub const IFLA_MTU: u16 = 4;
pub const IFLA_STATS: u16 = 7;
pub const IFLA_TXQLEN: u16 = 13;
pub const IFLA_STATS64: u16 = 23;

pub const IFA_ADDRESS: u16 = 1;
pub const IFA_LOCAL: u16 = 2;
/// `u32` flags attribute (supersedes the 8-bit `ifa_flags`).
pub const IFA_FLAGS: u16 = 8;
/// Skip duplicate address detection.
pub const IFA_F_NODAD: u8 = 0x02;
/// The address is still being set up (duplicate address detection pending).
pub const IFA_F_TENTATIVE: u32 = 0x40;

pub const RTA_DST: u16 = 1;
pub const RTA_OIF: u16 = 4;
pub const RTA_GATEWAY: u16 = 5;
pub const RTA_PRIORITY: u16 = 6;
pub const RTA_TABLE: u16 = 15;

pub const RT_TABLE_UNSPEC: u8 = 0;
pub const RT_TABLE_MAIN: u32 = 254;
pub const RTPROT_UNSPEC: u8 = 0;
pub const RTPROT_BOOT: u8 = 3;
pub const RT_SCOPE_UNIVERSE: u8 = 0;
pub const RT_SCOPE_LINK: u8 = 253;
pub const RT_SCOPE_HOST: u8 = 254;
/// In a delete request: match any scope.
pub const RT_SCOPE_NOWHERE: u8 = 255;
pub const RTN_UNSPEC: u8 = 0;
pub const RTN_UNICAST: u8 = 1;
/// `rtm_flags`: a cloned (cached) route, not a configured one.
pub const RTM_F_CLONED: u32 = 0x200;

// ---- policy routing rules (`<linux/fib_rules.h>`) ---------------------------------------------------------

/// Destination prefix (its length is `fib_rule_hdr.dst_len`).
pub const FRA_DST: u16 = 1;
/// Source prefix (its length is `fib_rule_hdr.src_len`).
pub const FRA_SRC: u16 = 2;
/// Input interface name, NUL-terminated.
pub const FRA_IIFNAME: u16 = 3;
/// Target rule of a `goto` rule.
pub const FRA_GOTO: u16 = 4;
/// Preference: rules are tried from the lowest. Absent in a dump when 0.
pub const FRA_PRIORITY: u16 = 6;
pub const FRA_FWMARK: u16 = 10;
/// Routing realm (IPv4).
pub const FRA_FLOW: u16 = 11;
pub const FRA_TUN_ID: u16 = 12;
/// `u32`; -1 (all ones) when unset, and then dumped anyway.
pub const FRA_SUPPRESS_IFGROUP: u16 = 13;
/// `u32`; -1 (all ones) when unset, and then dumped anyway.
pub const FRA_SUPPRESS_PREFIXLEN: u16 = 14;
/// The table id as a `u32` (`fib_rule_hdr.table` holds only ids below 256).
pub const FRA_TABLE: u16 = 15;
pub const FRA_FWMASK: u16 = 16;
/// Output interface name, NUL-terminated.
pub const FRA_OIFNAME: u16 = 17;
/// Padding of 64-bit attributes.
pub const FRA_PAD: u16 = 18;
/// `u8`: who made the rule (an `RTPROT_*`); informational, it selects nothing.
pub const FRA_PROTOCOL: u16 = 21;

/// `fib_rule_hdr.action`: look the packet up in the rule's table.
pub const FR_ACT_TO_TBL: u8 = 1;
/// `fib_rule_hdr.flags`: the selectors are negated (`ip rule add not …`).
pub const FIB_RULE_INVERT: u32 = 0x2;
/// `fib_rule_hdr.flags`: the rule's input interface does not exist (now).
pub const FIB_RULE_IIF_DETACHED: u32 = 0x8;
/// `fib_rule_hdr.flags`: the rule's output interface does not exist (now).
pub const FIB_RULE_OIF_DETACHED: u32 = 0x10;

// ---- layouts ----------------------------------------------------------------------------------------------

fn u16_at(b: &[u8], off: usize) -> u16 {
  u16::from_ne_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
  u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// `struct nlmsghdr`: every netlink message starts with it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NlMsgHdr {
  /// Length of the message including this header.
  pub len: u32,
  pub ty: u16,
  pub flags: u16,
  pub seq: u32,
  /// Port id of the sender (0 for the kernel).
  pub pid: u32,
}

impl NlMsgHdr {
  pub const SIZE: usize = 16;

  pub fn encode(&self) -> [u8; Self::SIZE] {
    let mut b = [0u8; Self::SIZE];
    b[0..4].copy_from_slice(&self.len.to_ne_bytes());
    b[4..6].copy_from_slice(&self.ty.to_ne_bytes());
    b[6..8].copy_from_slice(&self.flags.to_ne_bytes());
    b[8..12].copy_from_slice(&self.seq.to_ne_bytes());
    b[12..16].copy_from_slice(&self.pid.to_ne_bytes());
    b
  }

  /// Reads the header at the start of `b`, or `None` when `b` is too short.
  pub fn decode(b: &[u8]) -> Option<NlMsgHdr> {
    (b.len() >= Self::SIZE).then(|| NlMsgHdr {
      len: u32_at(b, 0),
      ty: u16_at(b, 4),
      flags: u16_at(b, 6),
      seq: u32_at(b, 8),
      pid: u32_at(b, 12),
    })
  }
}

/// `struct ifinfomsg`: the fixed part of `RTM_*LINK` messages.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IfInfoMsg {
  pub family: u8,
  pub pad: u8,
  /// `ARPHRD_*` device type.
  pub ty: u16,
  pub index: i32,
  /// `IFF_*` flags.
  pub flags: u32,
  /// Which of `flags` a `RTM_SETLINK` changes.
  pub change: u32,
}

impl IfInfoMsg {
  pub const SIZE: usize = 16;

  pub fn encode(&self) -> [u8; Self::SIZE] {
    let mut b = [0u8; Self::SIZE];
    b[0] = self.family;
    b[1] = self.pad;
    b[2..4].copy_from_slice(&self.ty.to_ne_bytes());
    b[4..8].copy_from_slice(&self.index.to_ne_bytes());
    b[8..12].copy_from_slice(&self.flags.to_ne_bytes());
    b[12..16].copy_from_slice(&self.change.to_ne_bytes());
    b
  }

  pub fn decode(b: &[u8]) -> Option<IfInfoMsg> {
    (b.len() >= Self::SIZE).then(|| IfInfoMsg {
      family: b[0],
      pad: b[1],
      ty: u16_at(b, 2),
      index: u32_at(b, 4) as i32,
      flags: u32_at(b, 8),
      change: u32_at(b, 12),
    })
  }
}

/// `struct ifaddrmsg`: the fixed part of `RTM_*ADDR` messages.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IfAddrMsg {
  pub family: u8,
  pub prefixlen: u8,
  pub flags: u8,
  pub scope: u8,
  pub index: u32,
}

impl IfAddrMsg {
  pub const SIZE: usize = 8;

  pub fn encode(&self) -> [u8; Self::SIZE] {
    let mut b = [0u8; Self::SIZE];
    b[0] = self.family;
    b[1] = self.prefixlen;
    b[2] = self.flags;
    b[3] = self.scope;
    b[4..8].copy_from_slice(&self.index.to_ne_bytes());
    b
  }

  pub fn decode(b: &[u8]) -> Option<IfAddrMsg> {
    (b.len() >= Self::SIZE).then(|| IfAddrMsg {
      family: b[0],
      prefixlen: b[1],
      flags: b[2],
      scope: b[3],
      index: u32_at(b, 4),
    })
  }
}

/// `struct rtmsg`: the fixed part of `RTM_*ROUTE` messages.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtMsg {
  pub family: u8,
  pub dst_len: u8,
  pub src_len: u8,
  pub tos: u8,
  /// Table id when it fits in a byte; `RTA_TABLE` carries the full id.
  pub table: u8,
  pub protocol: u8,
  pub scope: u8,
  /// `RTN_*` route type.
  pub ty: u8,
  pub flags: u32,
}

impl RtMsg {
  pub const SIZE: usize = 12;

  pub fn encode(&self) -> [u8; Self::SIZE] {
    let mut b = [0u8; Self::SIZE];
    b[..8].copy_from_slice(&[
      self.family,
      self.dst_len,
      self.src_len,
      self.tos,
      self.table,
      self.protocol,
      self.scope,
      self.ty,
    ]);
    b[8..12].copy_from_slice(&self.flags.to_ne_bytes());
    b
  }

  pub fn decode(b: &[u8]) -> Option<RtMsg> {
    (b.len() >= Self::SIZE).then(|| RtMsg {
      family: b[0],
      dst_len: b[1],
      src_len: b[2],
      tos: b[3],
      table: b[4],
      protocol: b[5],
      scope: b[6],
      ty: b[7],
      flags: u32_at(b, 8),
    })
  }
}

/// `struct fib_rule_hdr`: the fixed part of `RTM_*RULE` messages.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FibRuleHdr {
  pub family: u8,
  pub dst_len: u8,
  pub src_len: u8,
  pub tos: u8,
  /// Table id when it fits in a byte; `FRA_TABLE` carries the full id.
  pub table: u8,
  pub res1: u8,
  pub res2: u8,
  /// `FR_ACT_*`.
  pub action: u8,
  /// `FIB_RULE_*`.
  pub flags: u32,
}

impl FibRuleHdr {
  pub const SIZE: usize = 12;

  pub fn encode(&self) -> [u8; Self::SIZE] {
    let mut b = [0u8; Self::SIZE];
    b[..8].copy_from_slice(&[
      self.family,
      self.dst_len,
      self.src_len,
      self.tos,
      self.table,
      self.res1,
      self.res2,
      self.action,
    ]);
    b[8..12].copy_from_slice(&self.flags.to_ne_bytes());
    b
  }

  pub fn decode(b: &[u8]) -> Option<FibRuleHdr> {
    (b.len() >= Self::SIZE).then(|| FibRuleHdr {
      family: b[0],
      dst_len: b[1],
      src_len: b[2],
      tos: b[3],
      table: b[4],
      res1: b[5],
      res2: b[6],
      action: b[7],
      flags: u32_at(b, 8),
    })
  }
}

/// `struct rtattr` (same layout as `struct nlattr`): the header of one attribute.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtAttr {
  /// Length including this header, excluding trailing padding.
  pub len: u16,
  pub ty: u16,
}

impl RtAttr {
  pub const SIZE: usize = 4;

  pub fn encode(&self) -> [u8; Self::SIZE] {
    let mut b = [0u8; Self::SIZE];
    b[0..2].copy_from_slice(&self.len.to_ne_bytes());
    b[2..4].copy_from_slice(&self.ty.to_ne_bytes());
    b
  }

  pub fn decode(b: &[u8]) -> Option<RtAttr> {
    (b.len() >= Self::SIZE).then(|| RtAttr {
      len: u16_at(b, 0),
      ty: u16_at(b, 2),
    })
  }
}

/// Size of the `int error` that starts the payload of `NLMSG_ERROR` (and, optionally, `NLMSG_DONE`).
pub const NLMSGERR_ERROR_SIZE: usize = 4;

/// Number of leading `u64` counters of `struct rtnl_link_stats64` (and `u32` ones of `rtnl_link_stats`) we
/// read: rx/tx packets, rx/tx bytes, rx/tx errors, rx/tx dropped, in that order.
pub const LINK_STATS_FIELDS: usize = 8;

/// Netlink alignment of messages and attributes.
pub const NLMSG_ALIGNTO: usize = 4;

#[repr(C)]
struct SockaddrNl {
  family: u16,
  pad: u16,
  pid: u32,
  groups: u32,
}

#[repr(C)]
struct Timeval {
  sec: i64,
  usec: i64,
}

const _: () = {
  assert!(size_of::<NlMsgHdr>() == NlMsgHdr::SIZE);
  assert!(size_of::<IfInfoMsg>() == IfInfoMsg::SIZE);
  assert!(size_of::<IfAddrMsg>() == IfAddrMsg::SIZE);
  assert!(size_of::<RtMsg>() == RtMsg::SIZE);
  assert!(size_of::<FibRuleHdr>() == FibRuleHdr::SIZE);
  assert!(size_of::<RtAttr>() == RtAttr::SIZE);
  assert!(size_of::<SockaddrNl>() == 12);
  assert!(size_of::<Timeval>() == 16);
};

extern "C" {
  fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int;
  fn bind(fd: c_int, addr: *const c_void, len: u32) -> c_int;
  fn setsockopt(fd: c_int, level: c_int, name: c_int, value: *const c_void, len: u32) -> c_int;
  fn sendto(
    fd: c_int,
    buf: *const c_void,
    len: usize,
    flags: c_int,
    addr: *const c_void,
    addr_len: u32,
  ) -> isize;
  fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    len: usize,
    flags: c_int,
    addr: *mut c_void,
    addr_len: *mut u32,
  ) -> isize;
}

/// Turns a `-1` return into the thread's `errno`.
fn check(ret: c_int) -> io::Result<c_int> {
  if ret < 0 {
    Err(io::Error::last_os_error())
  } else {
    Ok(ret)
  }
}

fn check_size(ret: isize) -> io::Result<usize> {
  if ret < 0 {
    Err(io::Error::last_os_error())
  } else {
    Ok(ret as usize)
  }
}

/// A `NETLINK_ROUTE` socket (`SOCK_CLOEXEC`), bound with a kernel-chosen port id. It belongs to the network
/// namespace of the thread that opened it, whatever thread uses it later.
#[derive(Debug)]
pub struct NlSocket {
  fd: OwnedFd,
}

impl NlSocket {
  /// Opens and binds a socket; `groups` is the `RTMGRP_*` mask of notifications to receive (0 for none).
  pub fn open(groups: u32) -> io::Result<NlSocket> {
    // SAFETY: plain syscall with constant arguments; no memory is passed.
    let raw = check(unsafe { socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE) })?;
    // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let addr = SockaddrNl {
      family: AF_NETLINK as u16,
      pad: 0,
      pid: 0,
      groups,
    };
    // SAFETY: `addr` is a valid `sockaddr_nl` that lives across the call, and the length passed is its size.
    check(unsafe {
      bind(
        fd.as_raw_fd(),
        (&addr as *const SockaddrNl).cast(),
        size_of::<SockaddrNl>() as u32,
      )
    })?;
    Ok(NlSocket { fd })
  }

  fn set_opt<T>(&self, level: c_int, name: c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live `T` of `size_of::<T>()` bytes, which the kernel only reads.
    check(unsafe {
      setsockopt(
        self.fd.as_raw_fd(),
        level,
        name,
        (value as *const T).cast(),
        size_of::<T>() as u32,
      )
    })?;
    Ok(())
  }

  /// Sets an integer socket option (`SOL_NETLINK` options such as [`NETLINK_EXT_ACK`]).
  pub fn set_int_opt(&self, level: c_int, name: c_int, value: i32) -> io::Result<()> {
    self.set_opt(level, name, &value)
  }

  /// Bounds how long a blocking receive waits (`SO_RCVTIMEO`); a receive that times out fails with `EAGAIN`.
  pub fn set_recv_timeout(&self, timeout: Duration) -> io::Result<()> {
    let tv = Timeval {
      sec: timeout.as_secs() as i64,
      usec: i64::from(timeout.subsec_micros()),
    };
    self.set_opt(SOL_SOCKET, SO_RCVTIMEO, &tv)
  }

  /// Asks for a larger receive buffer (`SO_RCVBUF`, capped by `net.core.rmem_max`), so bursts of
  /// notifications do not overrun the socket.
  pub fn set_recv_buffer(&self, bytes: i32) -> io::Result<()> {
    self.set_opt(SOL_SOCKET, SO_RCVBUF, &bytes)
  }

  /// Sends one datagram (a netlink message or several back to back) to the kernel.
  pub fn send(&self, msg: &[u8]) -> io::Result<()> {
    let kernel = SockaddrNl {
      family: AF_NETLINK as u16,
      pad: 0,
      pid: 0,
      groups: 0,
    };
    // SAFETY: `msg` is a live slice of `msg.len()` bytes and `kernel` a valid `sockaddr_nl` of the size
    // passed; the kernel only reads both during the call.
    let sent = check_size(unsafe {
      sendto(
        self.fd.as_raw_fd(),
        msg.as_ptr().cast(),
        msg.len(),
        0,
        (&kernel as *const SockaddrNl).cast(),
        size_of::<SockaddrNl>() as u32,
      )
    })?;
    if sent != msg.len() {
      return Err(io::Error::new(
        io::ErrorKind::WriteZero,
        format!("sent {sent} of {} bytes", msg.len()),
      ));
    }
    Ok(())
  }

  /// Receives one datagram whole into `buf`, growing `buf` first when the datagram is larger (it is peeked
  /// with `MSG_PEEK | MSG_TRUNC` to learn its size, so nothing is ever cut off). Returns the datagram's
  /// length and the sender's port id (0 for the kernel). With `nonblocking`, fails with `WouldBlock` when
  /// nothing is queued.
  pub fn recv(&self, buf: &mut Vec<u8>, nonblocking: bool) -> io::Result<(usize, u32)> {
    let base = if nonblocking { MSG_DONTWAIT } else { 0 };
    // SAFETY: a zero-length receive into a valid pointer; the kernel writes nothing and reports the size of
    // the next datagram (MSG_TRUNC) without dequeuing it (MSG_PEEK).
    let size = check_size(unsafe {
      recvfrom(
        self.fd.as_raw_fd(),
        buf.as_mut_ptr().cast(),
        0,
        base | MSG_PEEK | MSG_TRUNC,
        std::ptr::null_mut(),
        std::ptr::null_mut(),
      )
    })?;
    if size > buf.len() {
      buf.resize(size, 0);
    }
    let mut from = SockaddrNl {
      family: 0,
      pad: 0,
      pid: 0,
      groups: 0,
    };
    let mut from_len = size_of::<SockaddrNl>() as u32;
    // SAFETY: `buf` is initialised memory of `buf.len()` bytes the kernel may write; `from`/`from_len`
    // describe a writable `sockaddr_nl` of the size given. All outlive the call.
    let got = check_size(unsafe {
      recvfrom(
        self.fd.as_raw_fd(),
        buf.as_mut_ptr().cast(),
        buf.len(),
        base | MSG_TRUNC,
        (&mut from as *mut SockaddrNl).cast(),
        &mut from_len,
      )
    })?;
    if got > buf.len() {
      // Only possible if another thread raced us between the peek and the read; callers serialise receives.
      return Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("netlink datagram of {got} bytes truncated"),
      ));
    }
    Ok((got, from.pid))
  }
}

impl AsFd for NlSocket {
  fn as_fd(&self) -> BorrowedFd<'_> {
    self.fd.as_fd()
  }
}

/// Waits until one of `fds` is readable (or in error), `timeout_ms` passes (`-1`: no limit) or a signal
/// interrupts (`EINTR` is returned as is). Returns, per fd, whether it has something to report.
pub fn poll_readable<const N: usize>(fds: [BorrowedFd<'_>; N], timeout_ms: i32) -> io::Result<[bool; N]> {
  let mut pfds = fds.map(|fd| PollFd::new(fd, POLLIN));
  poll_fds(&mut pfds, timeout_ms)?;
  Ok(pfds.map(|p| p.revents() != 0))
}
