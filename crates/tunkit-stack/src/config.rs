//! The stack's configuration and its validation.

use std::net::IpAddr;
use std::time::Duration;

use tunkit_core::{Error, ErrorKind, IpCidr, Result};

/// What the stack does with ICMP/ICMPv6 echo requests (pings). Other ICMP messages always pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IcmpMode {
  /// Answer every echo request locally (any destination but the gateway itself): `Verdict::Reply`.
  #[default]
  Reply,
  /// Consume echo requests without answering: `Verdict::Drop`.
  Drop,
  /// Leave echo requests to the application: `Verdict::Pass`.
  Pass,
}

/// One address family of the TUN: its own address `A`, the NAT addresses `B` and the prefix they share.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FamilyConfig {
  /// `A`: the TUN's own address, where the kernel TCP listener is bound.
  pub gateway: IpAddr,
  /// `B`: one or more other host addresses of the prefix (not `A`), the sources rewritten client segments
  /// appear from. Each gives 64 512 NAT ports (1024..=65535); live and quarantined flows share them.
  pub nat: Vec<IpAddr>,
  /// The prefix length of the TUN's address (`/24`, `/64`, …); `A` and every `B` must lie inside it.
  pub prefix_len: u8,
}

impl FamilyConfig {
  /// A family with gateway `A`, NAT addresses `B` and prefix length `prefix_len` (validated by [`crate::Stack::new`]).
  pub fn new(gateway: IpAddr, nat: Vec<IpAddr>, prefix_len: u8) -> FamilyConfig {
    FamilyConfig {
      gateway,
      nat,
      prefix_len,
    }
  }
}

/// The configuration of a [`crate::Stack`]. Start from [`StackConfig::new`] (or `Default`, whose `listen_port` 0
/// must be replaced) and set at least one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackConfig {
  /// The IPv4 side, if the TUN has an IPv4 address; IPv4 packets pass untouched when `None`.
  pub v4: Option<FamilyConfig>,
  /// The IPv6 side, if the TUN has an IPv6 address; IPv6 packets pass untouched when `None`.
  pub v6: Option<FamilyConfig>,
  /// `P`: the port of the kernel TCP listener on `A` (the same for both families). Must not be 0.
  pub listen_port: u16,
  /// Terminate TCP through the kernel NAT (otherwise TCP passes).
  pub tcp: bool,
  /// Turn UDP into sessions for the application (otherwise UDP passes).
  pub udp: bool,
  /// What to do with echo requests.
  pub icmp: IcmpMode,
  /// Most live TCP flows (not counting quarantined ones); a SYN beyond it is refused with a RST.
  pub max_tcp_flows: usize,
  /// Most UDP sessions; a new session beyond it evicts the least recently used one.
  pub max_udp_sessions: usize,
  /// A UDP session with no datagram either way for this long expires.
  pub udp_idle: Duration,
  /// A TCP flow that never got established (and was never looked up or released) expires after this long with
  /// no packets.
  pub tcp_syn_idle: Duration,
  /// How long a NAT port stays unused after its flow ended (the kernel's TIME_WAIT is 60 s); every packet
  /// still seen on the ended flow restarts it.
  pub quarantine: Duration,
  /// "Connect before accept": a SYN that creates a flow is not written back but held
  /// ([`crate::Verdict::Hold`]) until the application decides with [`crate::Stack::decide`] (after dialling
  /// the destination itself), so a refused or unreachable destination gives the client a RST or an ICMP
  /// unreachable at connect time. Off by default (every SYN is written back at once).
  pub hold_syn: bool,
  /// How long a held SYN waits for [`crate::Stack::decide`]; then [`crate::Stack::tick`] drops the flow
  /// silently (the client retransmits its SYN or times out) and [`crate::Stack::take_expired_holds`] reports
  /// it. Must not be zero when `hold_syn` is set.
  pub hold_timeout: Duration,
}

impl StackConfig {
  /// Defaults: TCP, UDP, ICMP `Reply`; 65 536 TCP flows, 16 384 UDP sessions; UDP idle 120 s, TCP handshake
  /// idle 75 s, quarantine 60 s; SYNs not held (hold timeout 10 s); no family set yet.
  pub fn new(listen_port: u16) -> StackConfig {
    StackConfig {
      v4: None,
      v6: None,
      listen_port,
      tcp: true,
      udp: true,
      icmp: IcmpMode::Reply,
      max_tcp_flows: 65_536,
      max_udp_sessions: 16_384,
      udp_idle: Duration::from_secs(120),
      tcp_syn_idle: Duration::from_secs(75),
      quarantine: Duration::from_secs(60),
      hold_syn: false,
      hold_timeout: Duration::from_secs(10),
    }
  }
}

impl Default for StackConfig {
  /// [`StackConfig::new`] with `listen_port` 0 (which [`crate::Stack::new`] refuses: set it).
  fn default() -> StackConfig {
    StackConfig::new(0)
  }
}

/// A validated family: the gateway, the NAT addresses and the prefix.
#[derive(Debug, Clone)]
pub(crate) struct Family {
  pub gateway: IpAddr,
  pub nat: Vec<IpAddr>,
  pub prefix: IpCidr,
}

impl Family {
  /// The index of `ip` among the NAT addresses.
  #[inline]
  pub fn nat_index(&self, ip: IpAddr) -> Option<usize> {
    self.nat.iter().position(|&b| b == ip)
  }

  /// A destination the stack never terminates: multicast, broadcast (limited, or the prefix's directed
  /// broadcast), unspecified.
  pub fn special_destination(&self, ip: IpAddr) -> bool {
    match ip {
      IpAddr::V4(a) => {
        a.is_multicast()
          || a.is_broadcast()
          || a.is_unspecified()
          || (self.prefix.prefix <= 30
            && self.prefix.contains(ip)
            && host_bits_all_ones(ip, self.prefix.prefix))
      }
      IpAddr::V6(a) => a.is_multicast() || a.is_unspecified(),
    }
  }

  /// A source the stack never terminates: unspecified (DHCP, DAD) or multicast (invalid).
  pub fn special_source(ip: IpAddr) -> bool {
    ip.is_unspecified() || ip.is_multicast()
  }
}

fn host_bits(ip: IpAddr, prefix: u8) -> u128 {
  match ip {
    IpAddr::V4(a) => {
      let mask = if prefix >= 32 { 0 } else { u32::MAX >> prefix };
      (u32::from(a) & mask) as u128
    }
    IpAddr::V6(a) => {
      let mask = if prefix >= 128 { 0 } else { u128::MAX >> prefix };
      u128::from(a) & mask
    }
  }
}

fn host_bits_all_ones(ip: IpAddr, prefix: u8) -> bool {
  let width = if ip.is_ipv4() { 32 } else { 128 };
  let ones = if prefix >= width {
    0
  } else {
    u128::MAX >> (128 - (width - prefix) as u32)
  };
  host_bits(ip, prefix) == ones
}

fn bad_addr(msg: String) -> Error {
  Error::new(ErrorKind::InvalidAddress, msg)
}

fn bad_arg(msg: String) -> Error {
  Error::new(ErrorKind::InvalidArgument, msg)
}

/// Validates one family: `A` and every `B` of the family, `B` inside `A`'s prefix, distinct, not `A`, usable
/// host addresses.
pub(crate) fn validate_family(fc: &FamilyConfig, v6: bool) -> Result<Family> {
  let (name, width) = if v6 { ("v6", 128) } else { ("v4", 32) };
  let a = fc.gateway;
  if a.is_ipv6() != v6 {
    return Err(bad_addr(format!("{name} gateway {a} is not an IP{name} address")));
  }
  if fc.prefix_len > width {
    return Err(bad_addr(format!("prefix /{} is too long for {a}", fc.prefix_len)));
  }
  if a.is_unspecified() || a.is_multicast() || a.is_loopback() {
    return Err(bad_addr(format!("gateway {a} is not a unicast host address")));
  }
  let prefix = IpCidr::new(a, fc.prefix_len)?;
  if fc.nat.is_empty() {
    return Err(bad_arg(format!(
      "{name} needs at least one NAT address (another address of {}/{})",
      prefix.network(),
      fc.prefix_len
    )));
  }
  if fc.nat.len() > 1024 {
    return Err(bad_arg(format!(
      "{} NAT addresses are more than the 1024 allowed",
      fc.nat.len()
    )));
  }
  for (i, &b) in fc.nat.iter().enumerate() {
    if b.is_ipv6() != v6 {
      return Err(bad_addr(format!(
        "NAT address {b} is not of the family of the gateway {a}"
      )));
    }
    if b == a {
      return Err(bad_addr(format!("NAT address {b} is the gateway itself")));
    }
    if !prefix.contains(b) {
      return Err(bad_addr(format!(
        "NAT address {b} is outside the gateway's prefix {}/{}",
        prefix.network(),
        fc.prefix_len
      )));
    }
    if b.is_unspecified() || b.is_multicast() || b.is_loopback() {
      return Err(bad_addr(format!("NAT address {b} is not a unicast host address")));
    }
    if !v6
      && fc.prefix_len <= 30
      && (host_bits(b, fc.prefix_len) == 0 || host_bits_all_ones(b, fc.prefix_len))
    {
      return Err(bad_addr(format!(
        "NAT address {b} is the network or broadcast address of /{}",
        fc.prefix_len
      )));
    }
    if fc.nat[..i].contains(&b) {
      return Err(bad_addr(format!("NAT address {b} is listed twice")));
    }
  }
  Ok(Family {
    gateway: a,
    nat: fc.nat.clone(),
    prefix,
  })
}

/// Validates the whole configuration.
pub(crate) fn validate(cfg: &StackConfig) -> Result<(Option<Family>, Option<Family>)> {
  if cfg.v4.is_none() && cfg.v6.is_none() {
    return Err(bad_arg(
      "the stack needs an IPv4 or an IPv6 family (or both)".into(),
    ));
  }
  if cfg.listen_port == 0 {
    return Err(bad_arg(
      "listen_port must be the kernel listener's port, not 0".into(),
    ));
  }
  if cfg.max_tcp_flows == 0 || cfg.max_udp_sessions == 0 {
    return Err(bad_arg(
      "max_tcp_flows and max_udp_sessions must be at least 1".into(),
    ));
  }
  if cfg.hold_syn && cfg.hold_timeout.is_zero() {
    return Err(bad_arg(
      "hold_timeout must not be zero when hold_syn is set".into(),
    ));
  }
  let v4 = cfg.v4.as_ref().map(|f| validate_family(f, false)).transpose()?;
  let v6 = cfg.v6.as_ref().map(|f| validate_family(f, true)).transpose()?;
  Ok((v4, v6))
}
