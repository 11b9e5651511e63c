//! Raw macOS interfaces of the utun backend: hand-declared libc functions, constants and XNU structs (from
//! `sys/kern_control.h`, `net/if_utun.h`, `net/if.h`, `netinet6/in6_var.h`, `net/route.h`), each wrapped in a
//! function with a safe signature that returns `io::Result`. Every `unsafe` block of the macOS backend is in this
//! file; `mod.rs` and `route.rs` are safe code.
//!
//! There is no macOS SDK on the machine this was written on, so the layouts are pinned twice: `const` assertions on
//! the struct sizes, and the ioctl numbers (which encode the size of their argument) asserted against the values
//! the SDK headers produce.

use std::ffi::{c_char, c_int, c_short, c_uint, c_ulong, c_void, CStr};
use std::io;
use std::marker::PhantomData;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// The errno values the backend looks at (BSD numbering: several differ from Linux).
pub mod errno {
  pub const EPERM: i32 = 1;
  pub const ENOENT: i32 = 2;
  pub const ESRCH: i32 = 3;
  pub const EINTR: i32 = 4;
  pub const ENXIO: i32 = 6;
  pub const EBADF: i32 = 9;
  pub const EACCES: i32 = 13;
  pub const EBUSY: i32 = 16;
  pub const EEXIST: i32 = 17;
  pub const ENODEV: i32 = 19;
  pub const EINVAL: i32 = 22;
  pub const EAGAIN: i32 = 35;
  pub const EMSGSIZE: i32 = 40;
  pub const EPROTONOSUPPORT: i32 = 43;
  pub const ENOTSUP: i32 = 45;
  pub const EAFNOSUPPORT: i32 = 47;
  pub const EADDRNOTAVAIL: i32 = 49;
  pub const ENETUNREACH: i32 = 51;
  pub const ENOBUFS: i32 = 55;
  pub const EHOSTUNREACH: i32 = 65;
  pub const EOPNOTSUPP: i32 = 102;
}

pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 30;
pub const AF_LINK: u8 = 18;
const AF_SYSTEM: u8 = 32;
const PF_SYSTEM: c_int = 32;
const PF_ROUTE: c_int = 17;
const SOCK_DGRAM: c_int = 2;
const SOCK_RAW: c_int = 3;
const SYSPROTO_CONTROL: c_int = 2;
const AF_SYS_CONTROL: u16 = 2;
const UTUN_OPT_IFNAME: c_int = 2;
const UTUN_CONTROL_NAME: &CStr = c"com.apple.net.utun_control";
const MAX_KCTL_NAME: usize = 96;
pub const IFNAMSIZ: usize = 16;
const F_GETFL: c_int = 3;
const F_SETFL: c_int = 4;
const F_SETFD: c_int = 2;
const FD_CLOEXEC: c_int = 1;
const O_NONBLOCK: c_int = 0x4;
const SHUT_RD: c_int = 0;

/// Interface flags (`net/if.h`).
pub const IFF_UP: u32 = 0x1;
pub const IFF_POINTOPOINT: u32 = 0x10;
/// `ND6_INFINITE_LIFETIME`.
const ND6_INFINITE_LIFETIME: u32 = 0xffff_ffff;

/// `poll` event bits (`poll.h`; the same values as Linux).
pub const POLLIN: i16 = 0x001;
pub const POLLOUT: i16 = 0x004;
pub const POLLERR: i16 = 0x008;
pub const POLLHUP: i16 = 0x010;
pub const POLLNVAL: i16 = 0x020;

// ---- structs ------------------------------------------------------------------------------------------------------

/// `struct ctl_info`.
#[repr(C)]
struct CtlInfo {
  ctl_id: u32,
  ctl_name: [u8; MAX_KCTL_NAME],
}

/// `struct sockaddr_ctl`.
#[repr(C)]
struct SockaddrCtl {
  sc_len: u8,
  sc_family: u8,
  ss_sysaddr: u16,
  sc_id: u32,
  sc_unit: u32,
  sc_reserved: [u32; 5],
}

/// `struct sockaddr_in`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SockaddrIn {
  pub len: u8,
  pub family: u8,
  pub port: u16,
  pub addr: [u8; 4],
  pub zero: [u8; 8],
}

impl SockaddrIn {
  pub fn new(a: Ipv4Addr) -> SockaddrIn {
    SockaddrIn {
      len: size_of::<SockaddrIn>() as u8,
      family: AF_INET,
      port: 0,
      addr: a.octets(),
      zero: [0; 8],
    }
  }
}

/// `struct sockaddr_in6`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SockaddrIn6 {
  pub len: u8,
  pub family: u8,
  pub port: u16,
  pub flowinfo: u32,
  pub addr: [u8; 16],
  pub scope_id: u32,
}

impl SockaddrIn6 {
  pub fn new(a: Ipv6Addr) -> SockaddrIn6 {
    SockaddrIn6 {
      len: size_of::<SockaddrIn6>() as u8,
      family: AF_INET6,
      port: 0,
      flowinfo: 0,
      addr: a.octets(),
      scope_id: 0,
    }
  }

  /// The all-zero sockaddr (`sin6_len` 0), which in6 ioctls read as "not given".
  pub fn none() -> SockaddrIn6 {
    SockaddrIn6 {
      len: 0,
      family: 0,
      port: 0,
      flowinfo: 0,
      addr: [0; 16],
      scope_id: 0,
    }
  }
}

/// `struct ifreq`: the name and a 16-byte union holding a pointer (hence 8-byte alignment).
#[repr(C, align(8))]
struct IfReq {
  name: [u8; IFNAMSIZ],
  ifru: [u8; 16],
}

/// `struct ifaliasreq`.
#[repr(C)]
struct IfAliasReq {
  name: [u8; IFNAMSIZ],
  addr: SockaddrIn,
  broadaddr: SockaddrIn,
  mask: SockaddrIn,
}

/// `struct in6_addrlifetime`.
#[repr(C)]
struct In6AddrLifetime {
  expire: i64,
  preferred: i64,
  vltime: u32,
  pltime: u32,
}

/// `struct in6_aliasreq`.
#[repr(C)]
struct In6AliasReq {
  name: [u8; IFNAMSIZ],
  addr: SockaddrIn6,
  dstaddr: SockaddrIn6,
  prefixmask: SockaddrIn6,
  flags: c_int,
  lifetime: In6AddrLifetime,
}

/// `struct in6_ifreq`: the name and a union whose largest members are the per-interface IPv6 statistics.
#[repr(C, align(8))]
struct In6IfReq {
  name: [u8; IFNAMSIZ],
  addr: SockaddrIn6,
  _rest_of_union: [u8; 244],
}

/// `struct if_data` (`net/if_var.h`, `#pragma pack(4)`; the time stamp is a `timeval32` in 64-bit processes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IfData {
  pub ifi_type: u8,
  pub ifi_typelen: u8,
  pub ifi_physical: u8,
  pub ifi_addrlen: u8,
  pub ifi_hdrlen: u8,
  pub ifi_recvquota: u8,
  pub ifi_xmitquota: u8,
  pub ifi_unused1: u8,
  pub ifi_mtu: u32,
  pub ifi_metric: u32,
  pub ifi_baudrate: u32,
  pub ifi_ipackets: u32,
  pub ifi_ierrors: u32,
  pub ifi_opackets: u32,
  pub ifi_oerrors: u32,
  pub ifi_collisions: u32,
  pub ifi_ibytes: u32,
  pub ifi_obytes: u32,
  pub ifi_imcasts: u32,
  pub ifi_omcasts: u32,
  pub ifi_iqdrops: u32,
  pub ifi_noproto: u32,
  pub ifi_recvtiming: u32,
  pub ifi_xmittiming: u32,
  pub ifi_lastchange: [i32; 2],
  pub ifi_unused2: u32,
  pub ifi_hwassist: u32,
  pub ifi_reserved1: u32,
  pub ifi_reserved2: u32,
}

/// `struct ifaddrs`.
#[repr(C)]
struct IfAddrs {
  ifa_next: *mut IfAddrs,
  ifa_name: *const c_char,
  ifa_flags: c_uint,
  ifa_addr: *const u8,
  ifa_netmask: *const u8,
  ifa_dstaddr: *const u8,
  ifa_data: *const c_void,
}

/// `struct iovec`.
#[repr(C)]
struct IoVec {
  base: *mut c_void,
  len: usize,
}

/// Size of `struct rt_msghdr` (`net/route.h`): the header of routing socket messages, built as bytes in
/// `route.rs`.
pub const RT_MSGHDR_SIZE: usize = 92;
/// Size of `struct sockaddr_dl` without extra name or address bytes.
pub const SOCKADDR_DL_SIZE: usize = 20;

/// `_IOC` of `sys/ioccom.h`.
const fn ioc(inout: u32, group: u8, num: u8, len: usize) -> c_ulong {
  (inout | (((len as u32) & 0x1fff) << 16) | ((group as u32) << 8) | num as u32) as c_ulong
}
const IOC_OUT: u32 = 0x4000_0000;
const IOC_IN: u32 = 0x8000_0000;
const IOC_INOUT: u32 = IOC_IN | IOC_OUT;

const CTLIOCGINFO: c_ulong = ioc(IOC_INOUT, b'N', 3, size_of::<CtlInfo>());
const SIOCSIFFLAGS: c_ulong = ioc(IOC_IN, b'i', 16, size_of::<IfReq>());
const SIOCGIFFLAGS: c_ulong = ioc(IOC_INOUT, b'i', 17, size_of::<IfReq>());
const SIOCDIFADDR: c_ulong = ioc(IOC_IN, b'i', 25, size_of::<IfReq>());
const SIOCAIFADDR: c_ulong = ioc(IOC_IN, b'i', 26, size_of::<IfAliasReq>());
const SIOCGIFMTU: c_ulong = ioc(IOC_INOUT, b'i', 51, size_of::<IfReq>());
const SIOCSIFMTU: c_ulong = ioc(IOC_IN, b'i', 52, size_of::<IfReq>());
const SIOCDIFADDR_IN6: c_ulong = ioc(IOC_IN, b'i', 25, size_of::<In6IfReq>());
const SIOCAIFADDR_IN6: c_ulong = ioc(IOC_IN, b'i', 26, size_of::<In6AliasReq>());

// The values the SDK headers give (sizes as in XNU's headers for 64-bit processes).
const _: () = {
  assert!(size_of::<CtlInfo>() == 100);
  assert!(size_of::<SockaddrCtl>() == 32);
  assert!(size_of::<SockaddrIn>() == 16);
  assert!(size_of::<SockaddrIn6>() == 28);
  assert!(size_of::<IfReq>() == 32);
  assert!(size_of::<IfAliasReq>() == 64);
  assert!(size_of::<In6AliasReq>() == 128);
  assert!(std::mem::offset_of!(In6AliasReq, lifetime) == 104);
  assert!(size_of::<In6IfReq>() == 288);
  assert!(size_of::<IfData>() == 96);
  assert!(std::mem::offset_of!(IfData, ifi_ipackets) == 20);
  assert!(std::mem::offset_of!(IfData, ifi_ibytes) == 40);
  assert!(std::mem::offset_of!(IfData, ifi_iqdrops) == 56);
  assert!(CTLIOCGINFO == 0xc064_4e03);
  assert!(SIOCSIFFLAGS == 0x8020_6910);
  assert!(SIOCGIFFLAGS == 0xc020_6911);
  assert!(SIOCDIFADDR == 0x8020_6919);
  assert!(SIOCAIFADDR == 0x8040_691a);
  assert!(SIOCGIFMTU == 0xc020_6933);
  assert!(SIOCSIFMTU == 0x8020_6934);
  assert!(SIOCDIFADDR_IN6 == 0x8120_6919);
  assert!(SIOCAIFADDR_IN6 == 0x8080_691a);
};

extern "C" {
  fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int;
  fn connect(fd: c_int, addr: *const c_void, len: u32) -> c_int;
  fn getsockopt(fd: c_int, level: c_int, name: c_int, value: *mut c_void, len: *mut u32) -> c_int;
  fn shutdown(fd: c_int, how: c_int) -> c_int;
  // Variadic in C; on Apple arm64 variadic arguments travel on the stack, so the declaration must say so.
  fn ioctl(fd: c_int, request: c_ulong, ...) -> c_int;
  fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
  fn readv(fd: c_int, iov: *const IoVec, count: c_int) -> isize;
  fn writev(fd: c_int, iov: *const IoVec, count: c_int) -> isize;
  fn write(fd: c_int, buf: *const c_void, count: usize) -> isize;
  fn poll(fds: *mut c_void, nfds: c_uint, timeout: c_int) -> c_int;
  fn getifaddrs(out: *mut *mut IfAddrs) -> c_int;
  fn freeifaddrs(ifa: *mut IfAddrs);
  fn if_nametoindex(name: *const c_char) -> c_uint;
}

fn cvt(ret: c_int) -> io::Result<c_int> {
  if ret < 0 {
    Err(io::Error::last_os_error())
  } else {
    Ok(ret)
  }
}

fn cvt_size(ret: isize) -> io::Result<usize> {
  if ret < 0 {
    Err(io::Error::last_os_error())
  } else {
    Ok(ret as usize)
  }
}

/// The errno of an `io::Error`, or 0 when it has none.
pub fn errno_of(err: &io::Error) -> i32 {
  err.raw_os_error().unwrap_or(0)
}

/// A new socket, owned, close-on-exec (macOS has no `SOCK_CLOEXEC`).
fn new_socket(domain: c_int, ty: c_int, protocol: c_int) -> io::Result<OwnedFd> {
  // SAFETY: socket takes no pointers.
  let fd = cvt(unsafe { socket(domain, ty, protocol) })?;
  // SAFETY: `fd` was just returned by socket, so it is open and owned by nobody else.
  let fd = unsafe { OwnedFd::from_raw_fd(fd) };
  // SAFETY: F_SETFD takes an int argument by value; no memory is involved.
  cvt(unsafe { fcntl(fd.as_raw_fd(), F_SETFD, FD_CLOEXEC) })?;
  Ok(fd)
}

/// Sets `O_NONBLOCK` on a descriptor, keeping its other status flags.
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
  // SAFETY: F_GETFL takes no third argument and reads no memory.
  let flags = cvt(unsafe { fcntl(fd.as_raw_fd(), F_GETFL) })?;
  // SAFETY: F_SETFL takes an int argument by value; no memory is involved.
  cvt(unsafe { fcntl(fd.as_raw_fd(), F_SETFL, flags | O_NONBLOCK) })?;
  Ok(())
}

/// The step of opening a utun device that failed, for the error message and its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UtunStep {
  /// `socket(PF_SYSTEM, SOCK_DGRAM, SYSPROTO_CONTROL)`.
  Socket,
  /// `ioctl(CTLIOCGINFO)` for `com.apple.net.utun_control`.
  ControlInfo,
  /// `connect` to the control with the unit number.
  Connect,
  /// `getsockopt(UTUN_OPT_IFNAME)`.
  InterfaceName,
  /// `fcntl(O_NONBLOCK)`.
  NonBlocking,
}

/// Opens a utun device through the kernel control socket: `unit` 0 lets the kernel pick the next free one, `n + 1`
/// asks for `utun<n>`. Returns the non-blocking, close-on-exec socket (closing it destroys the interface) and the
/// interface name.
pub fn open_utun(unit: u32) -> Result<(OwnedFd, String), (UtunStep, io::Error)> {
  let fd = new_socket(PF_SYSTEM, SOCK_DGRAM, SYSPROTO_CONTROL).map_err(|e| (UtunStep::Socket, e))?;
  // SAFETY: an all-zero ctl_info is valid plain data.
  let mut info: CtlInfo = unsafe { zeroed() };
  let name = UTUN_CONTROL_NAME.to_bytes();
  info.ctl_name[..name.len()].copy_from_slice(name);
  // SAFETY: CTLIOCGINFO reads and writes one `struct ctl_info`, which `info` is, exclusively borrowed.
  cvt(unsafe { ioctl(fd.as_raw_fd(), CTLIOCGINFO, &mut info as *mut CtlInfo) })
    .map_err(|e| (UtunStep::ControlInfo, e))?;
  let addr = SockaddrCtl {
    sc_len: size_of::<SockaddrCtl>() as u8,
    sc_family: AF_SYSTEM,
    ss_sysaddr: AF_SYS_CONTROL,
    sc_id: info.ctl_id,
    sc_unit: unit,
    sc_reserved: [0; 5],
  };
  // SAFETY: `addr` is a valid sockaddr_ctl of the length passed, borrowed for the call.
  cvt(unsafe {
    connect(
      fd.as_raw_fd(),
      (&addr as *const SockaddrCtl).cast(),
      size_of::<SockaddrCtl>() as u32,
    )
  })
  .map_err(|e| (UtunStep::Connect, e))?;
  let mut buf = [0u8; IFNAMSIZ];
  let mut len = buf.len() as u32;
  // SAFETY: `buf` is writable for `len` bytes and `len` is a valid in/out length.
  cvt(unsafe {
    getsockopt(
      fd.as_raw_fd(),
      SYSPROTO_CONTROL,
      UTUN_OPT_IFNAME,
      buf.as_mut_ptr().cast(),
      &mut len,
    )
  })
  .map_err(|e| (UtunStep::InterfaceName, e))?;
  let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
  let ifname = String::from_utf8_lossy(&buf[..end]).into_owned();
  set_nonblocking(fd.as_fd()).map_err(|e| (UtunStep::NonBlocking, e))?;
  Ok((fd, ifname))
}

/// Reads one packet from a utun descriptor into the spare capacity of `out`, dropping the 4-byte address family
/// header utun puts in front. Returns the packet length (`WouldBlock` when none is pending).
pub fn utun_read(fd: BorrowedFd<'_>, out: &mut Vec<u8>) -> io::Result<usize> {
  let mut header = [0u8; 4];
  let spare = out.spare_capacity_mut();
  let iov = [
    IoVec {
      base: header.as_mut_ptr().cast(),
      len: header.len(),
    },
    IoVec {
      base: spare.as_mut_ptr().cast(),
      len: spare.len(),
    },
  ];
  // SAFETY: both iovecs describe writable memory we borrow exclusively for the call (`header`, and the spare
  // capacity of `out`); `fd` is live for the call.
  let n = cvt_size(unsafe { readv(fd.as_raw_fd(), iov.as_ptr(), iov.len() as c_int) })?;
  let len = n.saturating_sub(header.len());
  // SAFETY: readv filled the header first and then `len` bytes of the spare capacity (it never writes more than
  // the iovecs describe), so the first `out.len() + len` bytes are initialized and within capacity.
  unsafe { out.set_len(out.len() + len) };
  Ok(len)
}

/// Writes one packet to a utun descriptor with the 4-byte address family header (`AF_INET`/`AF_INET6`, in network
/// byte order) in front. Returns the packet bytes written.
pub fn utun_write(fd: BorrowedFd<'_>, family: u8, packet: &[u8]) -> io::Result<usize> {
  let header = u32::from(family).to_be_bytes();
  let iov = [
    IoVec {
      base: header.as_ptr() as *mut c_void,
      len: header.len(),
    },
    IoVec {
      base: packet.as_ptr() as *mut c_void,
      len: packet.len(),
    },
  ];
  // SAFETY: both iovecs describe readable memory borrowed for the call (writev does not write through them); `fd`
  // is live for the call.
  let n = cvt_size(unsafe { writev(fd.as_raw_fd(), iov.as_ptr(), iov.len() as c_int) })?;
  Ok(n.saturating_sub(header.len()))
}

/// Writes `data` to `fd` once.
pub fn write_fd(fd: BorrowedFd<'_>, data: &[u8]) -> io::Result<usize> {
  // SAFETY: `data` is readable for `data.len()` bytes for the call; `fd` is live for the call.
  cvt_size(unsafe { write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) })
}

/// One entry of a `poll` set (`struct pollfd`), tied to the lifetime of the descriptor it watches.
#[repr(C)]
pub struct PollFd<'fd> {
  fd: c_int,
  events: c_short,
  revents: c_short,
  _fd: PhantomData<BorrowedFd<'fd>>,
}

impl<'fd> PollFd<'fd> {
  pub fn new(fd: BorrowedFd<'fd>, events: i16) -> PollFd<'fd> {
    PollFd {
      fd: fd.as_raw_fd(),
      events,
      revents: 0,
      _fd: PhantomData,
    }
  }

  pub fn revents(&self) -> i16 {
    self.revents
  }
}

/// Waits until one of `fds` is ready or `timeout_ms` passed (`-1`: no timeout).
pub fn poll_fds(fds: &mut [PollFd<'_>], timeout_ms: i32) -> io::Result<usize> {
  // SAFETY: `fds` is an exclusively borrowed array of `struct pollfd` (int, short, short; the PhantomData is
  // zero-sized), and each descriptor outlives the borrow. `nfds_t` is `unsigned int` on macOS.
  Ok(cvt(unsafe { poll(fds.as_mut_ptr().cast(), fds.len() as c_uint, timeout_ms) })? as usize)
}

/// An `AF_INET` or `AF_INET6` datagram socket for interface ioctls.
pub fn inet_socket(v6: bool) -> io::Result<OwnedFd> {
  new_socket(c_int::from(if v6 { AF_INET6 } else { AF_INET }), SOCK_DGRAM, 0)
}

/// `name` as a NUL-padded `IFNAMSIZ` array; `InvalidInput` when it does not fit.
fn ifname(name: &str) -> io::Result<[u8; IFNAMSIZ]> {
  let mut out = [0u8; IFNAMSIZ];
  if name.len() >= IFNAMSIZ || name.as_bytes().contains(&0) {
    return Err(io::Error::new(
      io::ErrorKind::InvalidInput,
      "interface name too long",
    ));
  }
  out[..name.len()].copy_from_slice(name.as_bytes());
  Ok(out)
}

/// Runs an `ifreq` ioctl on `sock` for the interface `name`, with `init` filling the union first; returns the
/// union afterwards.
fn ifreq_ioctl(sock: BorrowedFd<'_>, name: &str, request: c_ulong, init: [u8; 16]) -> io::Result<[u8; 16]> {
  let mut req = IfReq {
    name: ifname(name)?,
    ifru: init,
  };
  // SAFETY: every request passed here takes one `struct ifreq`, which `req` is, exclusively borrowed.
  cvt(unsafe { ioctl(sock.as_raw_fd(), request, &mut req as *mut IfReq) })?;
  Ok(req.ifru)
}

/// The MTU of `name` (`SIOCGIFMTU`).
pub fn get_mtu(sock: BorrowedFd<'_>, name: &str) -> io::Result<u32> {
  let u = ifreq_ioctl(sock, name, SIOCGIFMTU, [0; 16])?;
  Ok(i32::from_ne_bytes([u[0], u[1], u[2], u[3]]) as u32)
}

/// Sets the MTU of `name` (`SIOCSIFMTU`).
pub fn set_mtu(sock: BorrowedFd<'_>, name: &str, mtu: u32) -> io::Result<()> {
  let mut u = [0u8; 16];
  u[..4].copy_from_slice(&(mtu as i32).to_ne_bytes());
  ifreq_ioctl(sock, name, SIOCSIFMTU, u).map(|_| ())
}

/// The interface flags of `name` (`SIOCGIFFLAGS`; `ifr_flags` is a short).
pub fn get_flags(sock: BorrowedFd<'_>, name: &str) -> io::Result<u32> {
  let u = ifreq_ioctl(sock, name, SIOCGIFFLAGS, [0; 16])?;
  Ok(u32::from(u16::from_ne_bytes([u[0], u[1]])))
}

/// Sets the interface flags of `name` (`SIOCSIFFLAGS`).
pub fn set_flags(sock: BorrowedFd<'_>, name: &str, flags: u32) -> io::Result<()> {
  let mut u = [0u8; 16];
  u[..2].copy_from_slice(&(flags as u16).to_ne_bytes());
  ifreq_ioctl(sock, name, SIOCSIFFLAGS, u).map(|_| ())
}

/// Adds an IPv4 address with its netmask and destination (`SIOCAIFADDR` on an `AF_INET` socket).
pub fn add_addr4(
  sock: BorrowedFd<'_>,
  name: &str,
  addr: Ipv4Addr,
  mask: Ipv4Addr,
  dst: Ipv4Addr,
) -> io::Result<()> {
  let mut req = IfAliasReq {
    name: ifname(name)?,
    addr: SockaddrIn::new(addr),
    broadaddr: SockaddrIn::new(dst),
    mask: SockaddrIn::new(mask),
  };
  // SAFETY: SIOCAIFADDR takes one `struct ifaliasreq`, which `req` is, exclusively borrowed.
  cvt(unsafe { ioctl(sock.as_raw_fd(), SIOCAIFADDR, &mut req as *mut IfAliasReq) }).map(|_| ())
}

/// Removes an IPv4 address (`SIOCDIFADDR` with the address in `ifr_addr`).
pub fn del_addr4(sock: BorrowedFd<'_>, name: &str, addr: Ipv4Addr) -> io::Result<()> {
  let sa = SockaddrIn::new(addr);
  let mut u = [0u8; 16];
  u[0] = sa.len;
  u[1] = sa.family;
  u[4..8].copy_from_slice(&sa.addr);
  ifreq_ioctl(sock, name, SIOCDIFADDR, u).map(|_| ())
}

/// Adds an IPv6 address with its prefix mask and optional destination, with infinite lifetimes
/// (`SIOCAIFADDR_IN6` on an `AF_INET6` socket).
pub fn add_addr6(
  sock: BorrowedFd<'_>,
  name: &str,
  addr: Ipv6Addr,
  mask: Ipv6Addr,
  dst: Option<Ipv6Addr>,
) -> io::Result<()> {
  let mut req = In6AliasReq {
    name: ifname(name)?,
    addr: SockaddrIn6::new(addr),
    dstaddr: dst.map(SockaddrIn6::new).unwrap_or_else(SockaddrIn6::none),
    prefixmask: SockaddrIn6::new(mask),
    flags: 0,
    lifetime: In6AddrLifetime {
      expire: 0,
      preferred: 0,
      vltime: ND6_INFINITE_LIFETIME,
      pltime: ND6_INFINITE_LIFETIME,
    },
  };
  // SAFETY: SIOCAIFADDR_IN6 takes one `struct in6_aliasreq`, which `req` is, exclusively borrowed.
  cvt(unsafe { ioctl(sock.as_raw_fd(), SIOCAIFADDR_IN6, &mut req as *mut In6AliasReq) }).map(|_| ())
}

/// Removes an IPv6 address (`SIOCDIFADDR_IN6`).
pub fn del_addr6(sock: BorrowedFd<'_>, name: &str, addr: Ipv6Addr) -> io::Result<()> {
  let mut req = In6IfReq {
    name: ifname(name)?,
    addr: SockaddrIn6::new(addr),
    _rest_of_union: [0; 244],
  };
  // SAFETY: SIOCDIFADDR_IN6 takes one `struct in6_ifreq`, which `req` is (all of its union's bytes), exclusively
  // borrowed.
  cvt(unsafe { ioctl(sock.as_raw_fd(), SIOCDIFADDR_IN6, &mut req as *mut In6IfReq) }).map(|_| ())
}

/// The index of the interface `name`, or `NotFound`.
pub fn if_index(name: &str) -> io::Result<u32> {
  let c = std::ffi::CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
  // SAFETY: `c` is a NUL-terminated string that outlives the call.
  match unsafe { if_nametoindex(c.as_ptr()) } {
    0 => Err(io::Error::from_raw_os_error(errno::ENXIO)),
    i => Ok(i),
  }
}

/// A routing socket (`PF_ROUTE`) for writing `RTM_ADD`/`RTM_DELETE`. Its read side is shut, so the replies and
/// the routing messages of the whole system do not pile up in it.
pub fn route_socket() -> io::Result<OwnedFd> {
  let fd = new_socket(PF_ROUTE, SOCK_RAW, 0)?;
  // SAFETY: shutdown takes a descriptor and a flag, no memory.
  cvt(unsafe { shutdown(fd.as_raw_fd(), SHUT_RD) })?;
  Ok(fd)
}

/// One address of an interface, as `getifaddrs` reports it.
#[derive(Debug, Clone)]
pub struct IfAddr {
  pub flags: u32,
  pub addr: IpAddr,
  pub netmask: Option<IpAddr>,
  pub dstaddr: Option<IpAddr>,
}

/// What `getifaddrs` says about one interface: its addresses and the counters of its link entry.
#[derive(Default)]
pub struct IfState {
  pub addrs: Vec<IfAddr>,
  pub link: Option<IfData>,
}

/// Reads the sockaddr at `p` as an address of `family` (`None`: the sockaddr's own family).
///
/// Netmasks come out of the kernel's radix tree shortened: `sa_len` stops after the last non-zero byte and
/// `sa_family` may be 0. So bytes past `sa_len` read as zero, and the caller passes the family of the address the
/// mask belongs to.
///
/// # Safety
/// `p` is null or points to a sockaddr that is readable for its `sa_len` bytes (at least 2).
unsafe fn sockaddr_ip(p: *const u8, family: Option<u8>) -> Option<IpAddr> {
  if p.is_null() {
    return None;
  }
  // SAFETY: per the caller's contract the first `sa_len` bytes at `p` are readable; we copy at most that many.
  let (len, own_family, bytes) = unsafe {
    let len = (*p as usize).min(size_of::<SockaddrIn6>());
    let mut bytes = [0u8; size_of::<SockaddrIn6>()];
    std::ptr::copy_nonoverlapping(p, bytes.as_mut_ptr(), len);
    (len, *p.add(1), bytes)
  };
  // A mask of /0 may have `sa_len` 0: with the family given, every missing byte is a zero.
  let complete = family.is_some() || len >= 8;
  match family.unwrap_or(own_family) {
    AF_INET if complete => Some(IpAddr::V4(Ipv4Addr::new(bytes[4], bytes[5], bytes[6], bytes[7]))),
    AF_INET6 if complete => {
      let mut a = [0u8; 16];
      a.copy_from_slice(&bytes[8..24]);
      Some(IpAddr::V6(Ipv6Addr::from(a)))
    }
    _ => None,
  }
}

/// The addresses and link counters of the interface `name` (`getifaddrs`).
pub fn interface_state(name: &str) -> io::Result<IfState> {
  let mut head: *mut IfAddrs = std::ptr::null_mut();
  // SAFETY: `head` is a valid out-pointer; on success the list is freed below with freeifaddrs.
  cvt(unsafe { getifaddrs(&mut head) })?;
  let mut state = IfState::default();
  let mut cur = head;
  // SAFETY: `cur` walks the list getifaddrs returned, which stays valid until freeifaddrs; every entry's name is a
  // C string and its sockaddrs are valid for their sa_len; ifa_data of an AF_LINK entry is a `struct if_data`.
  unsafe {
    while !cur.is_null() {
      let ifa = &*cur;
      if !ifa.ifa_name.is_null()
        && CStr::from_ptr(ifa.ifa_name).to_bytes() == name.as_bytes()
        && !ifa.ifa_addr.is_null()
      {
        let family = *ifa.ifa_addr.add(1);
        if family == AF_LINK && !ifa.ifa_data.is_null() {
          state.link = Some(std::ptr::read_unaligned(ifa.ifa_data.cast::<IfData>()));
        } else if let Some(addr) = sockaddr_ip(ifa.ifa_addr, None) {
          state.addrs.push(IfAddr {
            flags: ifa.ifa_flags,
            addr,
            netmask: sockaddr_ip(ifa.ifa_netmask, Some(family)),
            dstaddr: sockaddr_ip(ifa.ifa_dstaddr, Some(family)),
          });
        }
      }
      cur = ifa.ifa_next;
    }
    freeifaddrs(head);
  }
  Ok(state)
}
