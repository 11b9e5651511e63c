//! The Windows implementations of the backend contract: [`WintunQueue`], the data path of one wintun session, and
//! [`WindowsControl`], configuration through the IP Helper API.

use super::sys::iphlp::{self, AF_INET, AF_INET6, MIB_IPPROTO_NETMGMT};
use super::sys::wintun::{Adapter, Session, MAX_IP_PACKET_SIZE};
use super::sys::{self, code};
use super::{context, win_error};
use crate::backend::{Batch, Control, KernelStats, LinkInfo, Queue, WriteReport};
use crate::config::{self, IpCidr, RouteSpec, MIN_MTU_IPV6};
use crate::error::{Error, ErrorKind, Result};
use std::io;
use std::os::windows::io::{AsHandle, OwnedHandle};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// How long a writer waits for room when the send ring is full before trying again (the wait ends at once on
/// wake). Wintun has no "ring has room" event.
const FULL_RING_RETRY_MS: u32 = 1;

/// The data path of a wintun session. One thread may read while another writes; [`Queue::wake`] releases both for
/// good through a manual-reset event they also wait on.
pub struct WintunQueue {
  session: Session,
  wake_event: OwnedHandle,
  woken: AtomicBool,
  name: String,
}

impl WintunQueue {
  pub fn new(session: Session, name: &str) -> Result<WintunQueue> {
    let wake_event = sys::create_event(true).map_err(|e| {
      win_error(
        "CreateEventW",
        &e,
        format_args!("creating the wake-up event of {name}"),
      )
    })?;
    Ok(WintunQueue {
      session,
      wake_event,
      woken: AtomicBool::new(false),
      name: name.to_string(),
    })
  }

  fn closed(&self, op: &str) -> Error {
    Error::closed(&format!("{op} on {}", self.name))
  }

  fn woken(&self) -> bool {
    self.woken.load(Ordering::Acquire)
  }

  /// Receives packets into `batch` while there is room, up to `max`. Returns how many, and the error that ended
  /// the drain early, if any (the empty ring is not an error).
  fn drain(&self, batch: &mut Batch, max: usize) -> (usize, Option<io::Error>) {
    let mut n = 0;
    while n < max && batch.data.capacity() - batch.data.len() >= MAX_IP_PACKET_SIZE {
      match self.session.receive_into(&mut batch.data) {
        Ok(len) => {
          batch.lens.push(len as u32);
          n += 1;
        }
        Err(e) if sys::code_of(&e) == code::ERROR_NO_MORE_ITEMS => break,
        Err(e) => return (n, Some(e)),
      }
    }
    (n, None)
  }
}

impl Queue for WintunQueue {
  fn read_batch(&self, batch: &mut Batch, max_packets: usize) -> Result<usize> {
    let max = max_packets.max(1);
    batch.data.reserve(MAX_IP_PACKET_SIZE);
    loop {
      if self.woken() {
        return Err(self.closed("read"));
      }
      let (n, err) = self.drain(batch, max);
      // Packets already taken go out first; a persistent error shows again on the next call.
      if n > 0 {
        return Ok(n);
      }
      if let Some(e) = err {
        return Err(match sys::code_of(&e) {
          code::ERROR_HANDLE_EOF => self.closed("read"),
          _ => win_error(
            "WintunReceivePacket",
            &e,
            format_args!("reading from {}", self.name),
          ),
        });
      }
      // The ring is empty: sleep until wintun signals packets or we are woken.
      let handles = [self.session.read_event(), self.wake_event.as_handle()];
      sys::wait_any(&handles, None).map_err(|e| {
        win_error(
          "WaitForMultipleObjects",
          &e,
          format_args!("waiting for {}", self.name),
        )
      })?;
    }
  }

  fn write_batch(&self, batch: &Batch) -> Result<WriteReport> {
    let mut report = WriteReport::default();
    for (pos, pkt) in batch.iter().enumerate() {
      if let Err(e) = check_packet(pkt) {
        report.errors += 1;
        report.last_error = Some(context(e, format_args!("writing packet {pos} to {}", self.name)));
        continue;
      }
      loop {
        if self.woken() {
          return Err(self.closed("write"));
        }
        match self.session.send(pkt) {
          Ok(()) => {
            report.packets += 1;
            report.bytes += pkt.len() as u64;
            break;
          }
          // The ring is full until the OS takes packets out; wait a little (or until woken) and retry.
          Err(e) if sys::code_of(&e) == code::ERROR_BUFFER_OVERFLOW => {
            sys::wait_any(&[self.wake_event.as_handle()], Some(FULL_RING_RETRY_MS)).map_err(|e| {
              win_error(
                "WaitForMultipleObjects",
                &e,
                format_args!("waiting for {}", self.name),
              )
            })?;
          }
          Err(e) if sys::code_of(&e) == code::ERROR_HANDLE_EOF => return Err(self.closed("write")),
          Err(e) => {
            report.errors += 1;
            report.last_error = Some(win_error(
              "WintunAllocateSendPacket",
              &e,
              format_args!("writing packet {pos} ({} bytes) to {}", pkt.len(), self.name),
            ));
            break;
          }
        }
      }
    }
    Ok(report)
  }

  fn max_frame(&self) -> usize {
    MAX_IP_PACKET_SIZE
  }

  fn wake(&self) {
    self.woken.store(true, Ordering::Release);
    // Setting an event we own cannot fail short of a closed handle, which it is not while `self` lives.
    let _ = sys::set_event(self.wake_event.as_handle());
  }
}

/// Refuses what the Linux kernel refuses on a TUN device (see [`crate::packet::check_write`]).
pub(crate) fn check_packet(pkt: &[u8]) -> Result<()> {
  crate::packet::check_write(pkt, config::Mode::Tun, MAX_IP_PACKET_SIZE)
}

/// Configuration of one wintun adapter through the IP Helper API, by LUID.
pub struct WindowsControl {
  name: String,
  luid: u64,
  index: u32,
  /// Keeps the adapter (and so the interface) alive while the control is; the session holds it too.
  _adapter: Arc<Adapter>,
}

impl WindowsControl {
  pub fn new(name: String, adapter: Arc<Adapter>) -> Result<WindowsControl> {
    let luid = adapter.luid();
    let index = iphlp::luid_to_index(luid).map_err(|e| {
      win_error(
        "ConvertInterfaceLuidToIndex",
        &e,
        format_args!("looking up the index of {name}"),
      )
    })?;
    Ok(WindowsControl {
      name,
      luid,
      index,
      _adapter: adapter,
    })
  }

  /// Prefixes `op on <name>` to errors of `f`.
  fn on<T>(&self, op: impl std::fmt::Display, f: impl FnOnce() -> Result<T>) -> Result<T> {
    f().map_err(|e| context(e, format_args!("{op} on {}", self.name)))
  }

  /// The IP MTU of one family, `None` when the family is not bound to the interface.
  fn ip_mtu(&self, family: u16) -> Result<Option<u32>> {
    match iphlp::ip_interface(self.luid, family) {
      Ok(row) => Ok(Some(row.nl_mtu)),
      Err(e) if sys::code_of(&e) == code::ERROR_NOT_FOUND => Ok(None),
      Err(e) => Err(win_error("GetIpInterfaceEntry", &e, "reading the IP interface")),
    }
  }
}

impl Control for WindowsControl {
  fn name(&self) -> String {
    self.name.clone()
  }

  fn index(&self) -> u32 {
    self.index
  }

  fn link(&self) -> Result<LinkInfo> {
    self.on("reading the link state", || {
      let info = iphlp::interface(self.luid).map_err(|e| win_error("GetIfEntry2", &e, "GetIfEntry2"))?;
      // The IP MTU (what setMtu sets), not the adapter's NDIS maximum.
      let mtu = match self.ip_mtu(AF_INET)? {
        Some(m) => m,
        None => self.ip_mtu(AF_INET6)?.unwrap_or(info.mtu),
      };
      let r = &info.row;
      Ok(LinkInfo {
        name: info.alias,
        index: info.index,
        mtu,
        up: info.up,
        tx_queue_len: 0,
        mac: None,
        stats: KernelStats {
          rx_packets: r.in_ucast_pkts + r.in_n_ucast_pkts,
          tx_packets: r.out_ucast_pkts + r.out_n_ucast_pkts,
          rx_bytes: r.in_octets,
          tx_bytes: r.out_octets,
          rx_dropped: r.in_discards,
          tx_dropped: r.out_discards,
          rx_errors: r.in_errors,
          tx_errors: r.out_errors,
        },
      })
    })
  }

  fn set_mtu(&self, mtu: u32) -> Result<()> {
    self.on(format_args!("setMtu {mtu}"), || {
      config::validate_mtu(mtu, false)?;
      let has_v6 = self.addresses()?.iter().any(|a| !a.is_ipv4());
      if mtu < MIN_MTU_IPV6 && has_v6 {
        return Err(Error::new(
          ErrorKind::InvalidMtu,
          format!("mtu {mtu} is below {MIN_MTU_IPV6}, the minimum for the IPv6 addresses of the link"),
        ));
      }
      let mut set = 0;
      for family in [AF_INET, AF_INET6] {
        // IPv6 refuses an MTU below its minimum; without IPv6 addresses that family does not matter.
        if family == AF_INET6 && mtu < MIN_MTU_IPV6 {
          continue;
        }
        match iphlp::set_mtu(self.luid, family, mtu) {
          Ok(()) => set += 1,
          // The family is not bound to the adapter (IPv6 disabled, say).
          Err(e) if sys::code_of(&e) == code::ERROR_NOT_FOUND => {}
          Err(e) => {
            let err = win_error("SetIpInterfaceEntry", &e, "SetIpInterfaceEntry");
            return Err(if err.kind() == ErrorKind::InvalidArgument {
              err.with_kind(ErrorKind::InvalidMtu)
            } else {
              err
            });
          }
        }
      }
      if set == 0 {
        return Err(Error::new(
          ErrorKind::NotFound,
          "neither IPv4 nor IPv6 is bound to the adapter",
        ));
      }
      Ok(())
    })
  }

  fn set_up(&self, up: bool) -> Result<()> {
    if up {
      // A wintun adapter is connected while its session runs, which is as long as the device is open.
      return Ok(());
    }
    Err(Error::unsupported(
      "setting a wintun adapter down (it is up while the device is open)",
    ))
  }

  fn add_address(&self, addr: &IpCidr) -> Result<()> {
    self.on(format_args!("addAddress {addr}"), || {
      if addr.peer.is_some() {
        return Err(Error::unsupported(
          "a peer address (wintun adapters are not point-to-point)",
        ));
      }
      iphlp::add_unicast_address(self.luid, addr.addr, addr.prefix)
        .map_err(|e| win_error("CreateUnicastIpAddressEntry", &e, "CreateUnicastIpAddressEntry"))
    })
  }

  fn remove_address(&self, addr: &IpCidr) -> Result<()> {
    self.on(format_args!("removeAddress {addr}"), || {
      iphlp::delete_unicast_address(self.luid, addr.addr, addr.prefix)
        .map_err(|e| win_error("DeleteUnicastIpAddressEntry", &e, "DeleteUnicastIpAddressEntry"))
    })
  }

  fn addresses(&self) -> Result<Vec<IpCidr>> {
    self.on("listing addresses", || {
      // The interface's own addresses (manual origin), not the link-local ones Windows generates.
      let rows = iphlp::unicast_addresses(0)
        .map_err(|e| win_error("GetUnicastIpAddressTable", &e, "GetUnicastIpAddressTable"))?;
      Ok(
        rows
          .iter()
          .filter(|r| r.interface_luid == self.luid && r.prefix_origin == iphlp::IP_PREFIX_ORIGIN_MANUAL)
          .filter_map(|r| {
            Some(IpCidr {
              addr: r.address.ip()?,
              prefix: r.on_link_prefix_length,
              peer: None,
            })
          })
          .collect(),
      )
    })
  }

  fn add_route(&self, route: &RouteSpec) -> Result<()> {
    self.on(format_args!("addRoute {}", route_label(route)), || {
      let row = self.route_row(route)?;
      iphlp::add_route(&row).map_err(|e| win_error("CreateIpForwardEntry2", &e, "CreateIpForwardEntry2"))
    })
  }

  fn remove_route(&self, route: &RouteSpec) -> Result<()> {
    self.on(format_args!("removeRoute {}", route_label(route)), || {
      let row = self.route_row(route)?;
      iphlp::delete_route(&row).map_err(|e| win_error("DeleteIpForwardEntry2", &e, "DeleteIpForwardEntry2"))
    })
  }

  fn routes(&self) -> Result<Vec<RouteSpec>> {
    self.on("listing routes", || {
      let rows = iphlp::routes(0).map_err(|e| win_error("GetIpForwardTable2", &e, "GetIpForwardTable2"))?;
      Ok(
        rows
          .iter()
          .filter(|r| r.interface_luid == self.luid && r.protocol == MIB_IPPROTO_NETMGMT)
          .filter_map(|r| {
            let to = IpCidr {
              addr: r.destination_prefix.prefix.ip()?,
              prefix: r.destination_prefix.prefix_length,
              peer: None,
            };
            let via = r.next_hop.ip().filter(|gw| !gw.is_unspecified());
            Some(RouteSpec {
              to,
              via,
              metric: Some(r.metric),
              table: None,
            })
          })
          .collect(),
      )
    })
  }
}

impl WindowsControl {
  /// The IP Helper row of `route` on this adapter.
  fn route_row(&self, route: &RouteSpec) -> Result<iphlp::MibIpForwardRow2> {
    route.validate()?;
    if route.table.is_some() {
      return Err(Error::unsupported(
        "a routing table id (Windows has one routing table)",
      ));
    }
    Ok(iphlp::route_row(
      self.luid,
      route.to.addr,
      route.to.prefix,
      route.via,
      route.metric.unwrap_or(0),
    ))
  }
}

/// `"10.9.0.0/16 via 10.0.0.1"`, for messages.
pub(crate) fn route_label(r: &RouteSpec) -> String {
  match r.via {
    Some(via) => format!("{} via {via}", r.to),
    None => r.to.to_string(),
  }
}
