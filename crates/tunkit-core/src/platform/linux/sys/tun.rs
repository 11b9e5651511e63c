//! The tun driver's character device `/dev/net/tun` and its ioctls (`<linux/if_tun.h>`, `<linux/if.h>`).
//!
//! A descriptor of `/dev/net/tun` is attached to a device with `TUNSETIFF`; from then on each `read` returns one
//! packet (or frame, for TAP) and each `write` injects one.

use super::{cvt, O_NONBLOCK};
use std::ffi::{c_int, c_short, c_ulong};
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

/// The clone device every tun/tap descriptor is opened from.
pub const TUN_PATH: &str = "/dev/net/tun";

/// `_IOW('T', 202, int)`: attach the descriptor to a (new or existing) device.
pub const TUNSETIFF: c_ulong = 0x4004_54ca;
/// `_IOW('T', 203, int)`: keep the device after its last descriptor closes (argument: 0 or 1).
pub const TUNSETPERSIST: c_ulong = 0x4004_54cb;
/// `_IOW('T', 204, int)`: uid allowed to attach without `CAP_NET_ADMIN`.
pub const TUNSETOWNER: c_ulong = 0x4004_54cc;
/// `_IOW('T', 206, int)`: gid allowed to attach without `CAP_NET_ADMIN`.
pub const TUNSETGROUP: c_ulong = 0x4004_54ce;
/// `_IOW('T', 208, unsigned int)`: the offloads the reader accepts (`TUN_F_*`); sets the device's features.
pub const TUNSETOFFLOAD: c_ulong = 0x4004_54d0;
/// `_IOR('T', 210, unsigned int)`: name and flags of the device a descriptor is attached to.
pub const TUNGETIFF: c_ulong = 0x8004_54d2;
/// `_IOR('T', 215, int)`: size of the virtio-net header in front of every packet (`IFF_VNET_HDR`).
pub const TUNGETVNETHDRSZ: c_ulong = 0x8004_54d7;
/// `_IOW('T', 216, int)`: sets that size (at least 10; 12 adds the `num_buffers` field this crate never uses).
pub const TUNSETVNETHDRSZ: c_ulong = 0x4004_54d8;

/// `TUNSETOFFLOAD`: the reader accepts packets whose checksum is only partial (`VIRTIO_NET_HDR_F_NEEDS_CSUM`).
/// Every other offload needs it.
pub const TUN_F_CSUM: u32 = 0x01;
/// `TUNSETOFFLOAD`: the reader accepts TCP-over-IPv4 super-packets (`GSO_TCPV4`).
pub const TUN_F_TSO4: u32 = 0x02;
/// `TUNSETOFFLOAD`: the reader accepts TCP-over-IPv6 super-packets (`GSO_TCPV6`).
pub const TUN_F_TSO6: u32 = 0x04;
/// `TUNSETOFFLOAD`: the reader accepts UDP segmentation (`GSO_UDP_L4`) over IPv4; Linux 6.2 and later, and only
/// together with [`TUN_F_USO6`]. Older kernels refuse the unknown bit with `EINVAL`.
pub const TUN_F_USO4: u32 = 0x20;
/// `TUNSETOFFLOAD`: the same over IPv6.
pub const TUN_F_USO6: u32 = 0x40;

/// Layer-3 device: IP packets.
pub const IFF_TUN: u16 = 0x0001;
/// Layer-2 device: Ethernet frames.
pub const IFF_TAP: u16 = 0x0002;
/// One descriptor per queue, all attached to one device.
pub const IFF_MULTI_QUEUE: u16 = 0x0100;
/// Reported by `TUNGETIFF` for a persistent device.
pub const IFF_PERSIST: u16 = 0x0800;
/// No 4-byte packet-information header before each packet.
pub const IFF_NO_PI: u16 = 0x1000;
/// Each packet is preceded by a `virtio_net_hdr` (offload).
pub const IFF_VNET_HDR: u16 = 0x4000;
/// Fail with `EBUSY` instead of attaching when a device of that name already exists.
pub const IFF_TUN_EXCL: u16 = 0x8000;

/// Length of `ifr_name`, terminating NUL included.
pub const IFNAMSIZ: usize = 16;

/// `struct ifreq` as used by the tun ioctls: the name, then the `ifr_flags` member of the 24-byte union.
#[repr(C)]
struct IfReq {
  name: [u8; IFNAMSIZ],
  flags: c_short,
  _rest: [u8; 22],
}

// The kernel copies exactly sizeof(struct ifreq) = 40 bytes.
const _: () = assert!(std::mem::size_of::<IfReq>() == 40);

impl IfReq {
  fn new(name: &str, flags: u16) -> io::Result<IfReq> {
    let bytes = name.as_bytes();
    if bytes.len() >= IFNAMSIZ || bytes.contains(&0) {
      return Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("interface name {name:?} does not fit in IFNAMSIZ"),
      ));
    }
    let mut req = IfReq {
      name: [0; IFNAMSIZ],
      flags: flags as c_short,
      _rest: [0; 22],
    };
    req.name[..bytes.len()].copy_from_slice(bytes);
    Ok(req)
  }

  fn name(&self) -> String {
    let end = self.name.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
    String::from_utf8_lossy(&self.name[..end]).into_owned()
  }
}

extern "C" {
  fn ioctl(fd: c_int, request: c_ulong, ...) -> c_int;
}

/// Opens the clone device read-write, non-blocking and close-on-exec (std always adds `O_CLOEXEC`).
pub fn open_clone_device() -> io::Result<OwnedFd> {
  let file = OpenOptions::new()
    .read(true)
    .write(true)
    .custom_flags(O_NONBLOCK)
    .open(TUN_PATH)?;
  Ok(file.into())
}

/// `TUNSETIFF`: attaches `fd` to the device `name` (empty: a kernel-chosen `tun%d`/`tap%d`; a `%d` in the name is
/// numbered by the kernel), creating it unless it exists. Returns the device's real name.
pub fn set_iff(fd: BorrowedFd<'_>, name: &str, flags: u16) -> io::Result<String> {
  let mut req = IfReq::new(name, flags)?;
  // SAFETY: TUNSETIFF reads and writes one `struct ifreq`; `req` is a valid, exclusively borrowed 40-byte ifreq
  // that outlives the call.
  cvt(unsafe { ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) })?;
  Ok(req.name())
}

/// `TUNGETIFF` on a raw descriptor that the caller may not own (used to vet a descriptor before adopting it):
/// the attached device's name and `IFF_*` flags. Fails with `EBADFD` for a tun descriptor that is not attached,
/// `ENOTTY`/`EINVAL` for a descriptor of something else, `EBADF` for a number that is not open.
pub fn get_iff(fd: RawFd) -> io::Result<(String, u16)> {
  let mut req = IfReq::new("", 0)?;
  // SAFETY: TUNGETIFF writes one `struct ifreq` into `req`, a valid exclusively borrowed 40-byte buffer. The
  // descriptor is only queried: an unknown or closed number fails with an errno and no memory is touched.
  cvt(unsafe { ioctl(fd, TUNGETIFF, &mut req as *mut IfReq) })?;
  Ok((req.name(), req.flags as u16))
}

/// `TUNSETPERSIST`: keeps (or stops keeping) the device after its last descriptor closes.
pub fn set_persist(fd: BorrowedFd<'_>, persist: bool) -> io::Result<()> {
  // SAFETY: TUNSETPERSIST takes its argument by value; no memory is involved.
  cvt(unsafe { ioctl(fd.as_raw_fd(), TUNSETPERSIST, persist as c_ulong) }).map(|_| ())
}

/// `TUNSETOWNER`: lets the user `uid` attach without `CAP_NET_ADMIN`.
pub fn set_owner(fd: BorrowedFd<'_>, uid: u32) -> io::Result<()> {
  // SAFETY: TUNSETOWNER takes the uid by value; no memory is involved.
  cvt(unsafe { ioctl(fd.as_raw_fd(), TUNSETOWNER, uid as c_ulong) }).map(|_| ())
}

/// `TUNSETGROUP`: lets members of `gid` attach without `CAP_NET_ADMIN`.
pub fn set_group(fd: BorrowedFd<'_>, gid: u32) -> io::Result<()> {
  // SAFETY: TUNSETGROUP takes the gid by value; no memory is involved.
  cvt(unsafe { ioctl(fd.as_raw_fd(), TUNSETGROUP, gid as c_ulong) }).map(|_| ())
}

/// `TUNSETOFFLOAD`: the offloads (`TUN_F_*`) the reader of the device accepts. Fails with `EINVAL` for a bit the
/// kernel does not know.
pub fn set_offload(fd: BorrowedFd<'_>, flags: u32) -> io::Result<()> {
  // SAFETY: TUNSETOFFLOAD takes its argument by value; no memory is involved.
  cvt(unsafe { ioctl(fd.as_raw_fd(), TUNSETOFFLOAD, flags as c_ulong) }).map(|_| ())
}

/// `TUNSETVNETHDRSZ`: the size of the virtio-net header in front of every packet of a device opened with
/// `IFF_VNET_HDR`.
pub fn set_vnet_hdr_size(fd: BorrowedFd<'_>, size: usize) -> io::Result<()> {
  let size = size as c_int;
  // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer; `size` is a live local for the whole call.
  cvt(unsafe { ioctl(fd.as_raw_fd(), TUNSETVNETHDRSZ, &size as *const c_int) }).map(|_| ())
}

/// `TUNGETVNETHDRSZ`: the size of the virtio-net header of the device `fd` is attached to.
pub fn get_vnet_hdr_size(fd: RawFd) -> io::Result<usize> {
  let mut size: c_int = 0;
  // SAFETY: TUNGETVNETHDRSZ writes one int through the pointer, which points to a live, exclusively borrowed local.
  // The descriptor is only queried: one that is not a tun descriptor fails with an errno.
  cvt(unsafe { ioctl(fd, TUNGETVNETHDRSZ, &mut size as *mut c_int) })?;
  Ok(size as usize)
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn linux_tun_ifreq_names() {
    let r = IfReq::new("tun0", IFF_TUN | IFF_NO_PI).unwrap();
    assert_eq!(r.name(), "tun0");
    assert_eq!(r.flags as u16, 0x1001);
    assert_eq!(
      IfReq::new("x".repeat(15).as_str(), 0).unwrap().name(),
      "x".repeat(15)
    );
    assert!(IfReq::new("x".repeat(16).as_str(), 0).is_err());
    assert!(IfReq::new("a\0b", 0).is_err());
    // The high flag bit survives the round trip through a signed short.
    assert_eq!(IfReq::new("", IFF_TUN_EXCL).unwrap().flags as u16, IFF_TUN_EXCL);
  }

  #[test]
  fn linux_tun_getiff_on_other_descriptors() {
    let efd = super::super::eventfd_new().unwrap();
    assert!(get_iff(efd.as_raw_fd()).is_err());
    assert_eq!(
      get_iff(-1).unwrap_err().raw_os_error(),
      Some(super::super::errno::EBADF)
    );
  }
}
