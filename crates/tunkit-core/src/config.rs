//! Device configuration: the options object of `Tun.create`, parsed and validated in one place. Every field is
//! optional; defaults are applied by the platform backends. Validation here is the authoritative one (the
//! TypeScript types only help the caller).

use crate::error::{Error, ErrorKind, Result};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Longest interface name on Linux (`IFNAMSIZ - 1`).
pub const MAX_NAME_LEN: usize = 15;
/// Smallest MTU a TUN device accepts (IPv4's minimum).
pub const MIN_MTU: u32 = 68;
/// Smallest MTU an interface with IPv6 addresses may have; below it the kernel disables IPv6 on the link.
pub const MIN_MTU_IPV6: u32 = 1280;
/// Largest MTU of a TUN/TAP device.
pub const MAX_MTU: u32 = 65535;

/// Layer of the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
  /// Layer 3: whole IP packets.
  #[default]
  Tun,
  /// Layer 2: Ethernet frames.
  Tap,
}

impl Mode {
  pub fn as_str(self) -> &'static str {
    match self {
      Mode::Tun => "tun",
      Mode::Tap => "tap",
    }
  }
}

impl FromStr for Mode {
  type Err = Error;
  fn from_str(s: &str) -> Result<Mode> {
    match s {
      "tun" => Ok(Mode::Tun),
      "tap" => Ok(Mode::Tap),
      _ => Err(Error::new(
        ErrorKind::InvalidArgument,
        format!("mode must be 'tun' or 'tap', got {s:?}"),
      )),
    }
  }
}

/// An interface address with its prefix length, and optionally the peer of a point-to-point link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpCidr {
  pub addr: IpAddr,
  pub prefix: u8,
  pub peer: Option<IpAddr>,
}

impl IpCidr {
  pub fn new(addr: IpAddr, prefix: u8) -> Result<IpCidr> {
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
      return Err(Error::new(
        ErrorKind::InvalidAddress,
        format!("prefix /{prefix} is too long for {addr}"),
      ));
    }
    Ok(IpCidr {
      addr,
      prefix,
      peer: None,
    })
  }

  /// Adds a peer address; it must be of the same family.
  pub fn with_peer(mut self, peer: IpAddr) -> Result<IpCidr> {
    if peer.is_ipv4() != self.addr.is_ipv4() {
      return Err(Error::new(
        ErrorKind::InvalidAddress,
        format!("peer {peer} is not of the family of {}", self.addr),
      ));
    }
    self.peer = Some(peer);
    Ok(self)
  }

  pub fn is_ipv4(&self) -> bool {
    self.addr.is_ipv4()
  }

  /// Whether this is an IPv6 address that needs an MTU of at least 1280: any IPv6 address but the link-local
  /// `fe80::/10` one the kernel adds to every link by itself.
  pub fn needs_ipv6_mtu(&self) -> bool {
    match self.addr {
      IpAddr::V4(_) => false,
      IpAddr::V6(a) => a.segments()[0] & 0xffc0 != 0xfe80,
    }
  }

  /// The address with all host bits cleared (the network a route or prefix names).
  pub fn network(&self) -> IpAddr {
    match self.addr {
      IpAddr::V4(a) => {
        let mask = if self.prefix == 0 {
          0
        } else {
          u32::MAX << (32 - self.prefix as u32)
        };
        IpAddr::V4((u32::from(a) & mask).into())
      }
      IpAddr::V6(a) => {
        let mask = if self.prefix == 0 {
          0
        } else {
          u128::MAX << (128 - self.prefix as u32)
        };
        IpAddr::V6((u128::from(a) & mask).into())
      }
    }
  }

  /// Whether `ip` lies inside this prefix.
  pub fn contains(&self, ip: IpAddr) -> bool {
    ip.is_ipv4() == self.addr.is_ipv4()
      && IpCidr {
        addr: ip,
        prefix: self.prefix,
        peer: None,
      }
      .network()
        == self.network()
  }
}

impl FromStr for IpCidr {
  type Err = Error;
  /// Parses `"10.7.0.1/24"` or `"fd07::1/64"`. A bare address gets the full-length prefix (/32 or /128).
  fn from_str(s: &str) -> Result<IpCidr> {
    let bad = || {
      Error::new(
        ErrorKind::InvalidAddress,
        format!("invalid address {s:?}: expected CIDR like '10.7.0.1/24' or 'fd07::1/64'"),
      )
    };
    let (addr, prefix) = match s.split_once('/') {
      Some((a, p)) => {
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
          return Err(bad());
        }
        (a, Some(p.parse::<u8>().map_err(|_| bad())?))
      }
      None => (s, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let prefix = prefix.unwrap_or(if addr.is_ipv4() { 32 } else { 128 });
    IpCidr::new(addr, prefix)
  }
}

impl fmt::Display for IpCidr {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    write!(f, "{}/{}", self.addr, self.prefix)
  }
}

/// A route through the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
  /// Destination prefix; host bits must be zero.
  pub to: IpCidr,
  /// Gateway, if the route is not direct.
  pub via: Option<IpAddr>,
  /// Route priority (lower wins).
  pub metric: Option<u32>,
  /// Routing table; the main table when absent.
  pub table: Option<u32>,
}

impl RouteSpec {
  /// Checks the destination has no host bits and the gateway matches its family.
  pub fn validate(&self) -> Result<()> {
    if self.to.network() != self.to.addr {
      return Err(Error::new(
        ErrorKind::InvalidAddress,
        format!(
          "route destination {} has host bits set; did you mean {}/{}?",
          self.to,
          self.to.network(),
          self.to.prefix
        ),
      ));
    }
    if let Some(via) = self.via {
      if via.is_ipv4() != self.to.is_ipv4() {
        return Err(Error::new(
          ErrorKind::InvalidAddress,
          format!("gateway {via} is not of the family of {}", self.to),
        ));
      }
    }
    Ok(())
  }
}

/// Kernel offload (Linux `IFF_VNET_HDR`): the kernel hands over and accepts TCP/UDP super-packets of up to 64 KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offload {
  /// TCP segmentation offload (TSO4/TSO6) and checksum offload.
  pub tcp: bool,
  /// UDP segmentation offload (USO4/USO6, Linux 6.2 and later).
  pub udp: bool,
  /// Hand super-packets to the consumer as they are, each prefixed with its 10-byte virtio-net header, and expect
  /// the same on write, instead of splitting on read and coalescing on write.
  pub raw: bool,
}

impl Default for Offload {
  fn default() -> Self {
    Offload {
      tcp: true,
      udp: true,
      raw: false,
    }
  }
}

/// Everything `Tun.create` accepts.
#[derive(Debug, Clone, Default)]
pub struct DeviceConfig {
  /// Interface name; a kernel-assigned `tun%d`/`tap%d` when absent. A single `%d` asks the kernel to number it.
  pub name: Option<String>,
  pub mode: Mode,
  pub addresses: Vec<IpCidr>,
  pub routes: Vec<RouteSpec>,
  pub mtu: Option<u32>,
  /// Bring the link up; defaults to true when addresses or routes are given.
  pub up: Option<bool>,
  /// Kernel queue length (`txqueuelen`) of the device.
  pub tx_queue_len: Option<u32>,
  /// Number of queues (`IFF_MULTI_QUEUE` when more than one).
  pub queues: Option<u16>,
  /// Keep the device after the last fd closes (`TUNSETPERSIST`).
  pub persist: bool,
  pub owner: Option<u32>,
  pub group: Option<u32>,
  /// MAC address for TAP devices.
  pub mac: Option<[u8; 6]>,
  /// Attach to an existing (persistent) device named `name` instead of creating one; fails with `NotFound` when
  /// there is none.
  pub open_existing: bool,
  /// Network namespace to create the device in or attach from: a path such as `/run/netns/NAME` or
  /// `/proc/PID/ns/net`.
  pub netns: Option<String>,
  /// Kernel offload; `None` (the default) opens the device without virtio-net headers.
  pub offload: Option<Offload>,
}

impl DeviceConfig {
  /// Validates every field and the combination of fields.
  pub fn validate(&self) -> Result<()> {
    if let Some(name) = &self.name {
      validate_name(name)?;
    }
    if let Some(mtu) = self.mtu {
      validate_mtu(mtu, self.addresses.iter().any(IpCidr::needs_ipv6_mtu))?;
    }
    for (i, a) in self.addresses.iter().enumerate() {
      if self.addresses[..i].iter().any(|b| b.addr == a.addr) {
        return Err(Error::new(
          ErrorKind::AlreadyExists,
          format!("address {} is given twice", a.addr),
        ));
      }
    }
    for r in &self.routes {
      r.validate()?;
    }
    if let Some(q) = self.queues {
      if q == 0 || q > 256 {
        return Err(Error::new(
          ErrorKind::InvalidArgument,
          format!("queues must be 1..=256, got {q}"),
        ));
      }
    }
    if self.mac.is_some() && self.mode != Mode::Tap {
      return Err(Error::new(
        ErrorKind::InvalidArgument,
        "mac is only for mode 'tap'",
      ));
    }
    if let Some(o) = self.offload {
      if self.mode == Mode::Tap && !o.raw {
        return Err(Error::new(
          ErrorKind::Unsupported,
          "offload on TAP devices is only available with raw: true",
        ));
      }
    }
    if let Some(mac) = self.mac {
      if mac[0] & 1 == 1 {
        return Err(Error::new(
          ErrorKind::InvalidAddress,
          "mac must be a unicast address (low bit of the first octet clear)",
        ));
      }
    }
    Ok(())
  }

  /// Whether the link goes up after creation.
  pub fn wants_up(&self) -> bool {
    self
      .up
      .unwrap_or(!self.addresses.is_empty() || !self.routes.is_empty())
  }
}

/// Checks an interface name the way the kernel's `dev_valid_name` does, plus its `%d` template rule, so a bad name
/// fails before any syscall with a message that says which rule it broke.
pub fn validate_name(name: &str) -> Result<()> {
  let bad = |why: &str| {
    Err(Error::new(
      ErrorKind::InvalidName,
      format!("invalid interface name {name:?}: {why}"),
    ))
  };
  if name.is_empty() {
    return bad("it is empty");
  }
  if name.len() > MAX_NAME_LEN {
    return bad(&format!(
      "it is {} bytes long, the limit is {MAX_NAME_LEN}",
      name.len()
    ));
  }
  if name == "." || name == ".." {
    return bad("'.' and '..' are reserved");
  }
  if let Some(c) = name
    .chars()
    .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control())
  {
    return bad(&format!("it contains {c:?}"));
  }
  let percents = name.matches('%').count();
  if percents > 1 || (percents == 1 && !name.contains("%d")) {
    return bad("'%' may appear once, only as the '%d' template");
  }
  Ok(())
}

/// Checks an MTU against the device limits and, when the link carries IPv6, the IPv6 minimum.
pub fn validate_mtu(mtu: u32, has_ipv6: bool) -> Result<()> {
  if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
    return Err(Error::new(
      ErrorKind::InvalidMtu,
      format!("mtu {mtu} is out of range {MIN_MTU}..={MAX_MTU}"),
    ));
  }
  if has_ipv6 && mtu < MIN_MTU_IPV6 {
    return Err(Error::new(
      ErrorKind::InvalidMtu,
      format!("mtu {mtu} is below {MIN_MTU_IPV6}, the minimum for IPv6 addresses"),
    ));
  }
  Ok(())
}

/// Parses `"02:00:00:00:00:01"`.
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
  let bad = || {
    Error::new(
      ErrorKind::InvalidAddress,
      format!("invalid MAC address {s:?}: expected six hex octets like '02:00:5e:00:00:01'"),
    )
  };
  let mut mac = [0u8; 6];
  let mut parts = s.split(':');
  for b in mac.iter_mut() {
    let p = parts.next().ok_or_else(bad)?;
    if p.len() != 2 {
      return Err(bad());
    }
    *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
  }
  if parts.next().is_some() {
    return Err(bad());
  }
  Ok(mac)
}

/// Formats a MAC as lower-case colon-separated hex.
pub fn format_mac(mac: &[u8; 6]) -> String {
  mac
    .iter()
    .map(|b| format!("{b:02x}"))
    .collect::<Vec<_>>()
    .join(":")
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn names() {
    for ok in ["tun0", "a", "tk%d", "x".repeat(15).as_str(), "vpn-1.wg_x"] {
      assert!(validate_name(ok).is_ok(), "{ok}");
    }
    for bad in [
      "",
      "x".repeat(16).as_str(),
      "a/b",
      "a b",
      "a\tb",
      "a:b",
      ".",
      "..",
      "%d%d",
      "a%",
      "a%s",
    ] {
      let e = validate_name(bad).unwrap_err();
      assert_eq!(e.kind(), ErrorKind::InvalidName, "{bad:?}");
    }
  }

  #[test]
  fn cidrs() {
    let c: IpCidr = "10.7.0.1/24".parse().unwrap();
    assert_eq!(c.prefix, 24);
    assert_eq!(c.network().to_string(), "10.7.0.0");
    assert!(c.contains("10.7.0.200".parse().unwrap()));
    assert!(!c.contains("10.7.1.1".parse().unwrap()));
    let c6: IpCidr = "fd07::1/64".parse().unwrap();
    assert!(c6.needs_ipv6_mtu() && !c.needs_ipv6_mtu());
    assert!(!"fe80::1/64".parse::<IpCidr>().unwrap().needs_ipv6_mtu());
    assert_eq!(c6.network().to_string(), "fd07::");
    assert_eq!("10.0.0.1".parse::<IpCidr>().unwrap().prefix, 32);
    assert_eq!("::1".parse::<IpCidr>().unwrap().prefix, 128);
    assert_eq!(
      "0.0.0.0/0".parse::<IpCidr>().unwrap().network().to_string(),
      "0.0.0.0"
    );
    for bad in [
      "",
      "10.0.0.1/33",
      "fd00::1/129",
      "10.0.0/24",
      "10.0.0.1/",
      "10.0.0.1/+4",
      "x/24",
      "10.0.0.1/24/1",
    ] {
      assert_eq!(
        bad.parse::<IpCidr>().unwrap_err().kind(),
        ErrorKind::InvalidAddress,
        "{bad:?}"
      );
    }
    assert!(c.with_peer("fd00::1".parse().unwrap()).is_err());
  }

  #[test]
  fn config_validation() {
    let mut cfg = DeviceConfig {
      mtu: Some(1000),
      ..Default::default()
    };
    assert!(cfg.validate().is_ok());
    cfg.addresses.push("fd00::1/64".parse().unwrap());
    assert_eq!(cfg.validate().unwrap_err().kind(), ErrorKind::InvalidMtu);
    cfg.mtu = Some(1500);
    cfg.addresses.push("fd00::1/120".parse().unwrap());
    assert_eq!(cfg.validate().unwrap_err().kind(), ErrorKind::AlreadyExists);
    assert_eq!(validate_mtu(67, false).unwrap_err().kind(), ErrorKind::InvalidMtu);
    assert_eq!(
      validate_mtu(65536, false).unwrap_err().kind(),
      ErrorKind::InvalidMtu
    );
    let r = RouteSpec {
      to: "10.9.0.1/16".parse().unwrap(),
      via: None,
      metric: None,
      table: None,
    };
    assert_eq!(r.validate().unwrap_err().kind(), ErrorKind::InvalidAddress);
  }

  #[test]
  fn macs() {
    assert_eq!(parse_mac("02:00:5e:00:00:01").unwrap(), [2, 0, 0x5e, 0, 0, 1]);
    assert_eq!(format_mac(&[2, 0, 0x5e, 0, 0, 1]), "02:00:5e:00:00:01");
    for bad in [
      "",
      "02:00:5e:00:00",
      "02:00:5e:00:00:01:02",
      "0g:00:00:00:00:00",
      "2:0:0:0:0:1",
    ] {
      assert!(parse_mac(bad).is_err(), "{bad}");
    }
  }
}
