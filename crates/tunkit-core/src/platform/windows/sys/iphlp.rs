//! The IP Helper calls (`netioapi.h`, `iphlpapi.dll`) that configure an adapter by LUID: unicast addresses, routes,
//! the IP interface (MTU) and the interface row (state and counters).
//!
//! The row structs are declared field for field as in the Windows SDK; the `const` assertions at the bottom pin
//! their sizes and field offsets, and `scripts/targets/win-layout.c` asserts the same numbers against the MinGW
//! headers (`npm run check:targets` compiles it), so a mistake here fails the build on both sides.

use std::ffi::c_void;
use std::io;
use std::mem::{offset_of, size_of};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ptr;

/// `AF_INET` on Windows.
pub const AF_INET: u16 = 2;
/// `AF_INET6` on Windows (not Linux's 10).
pub const AF_INET6: u16 = 23;
const NO_ERROR: u32 = 0;
/// `IpDadStatePreferred`: an address usable at once, without duplicate address detection delay.
const IP_DAD_STATE_PREFERRED: i32 = 4;
/// `MIB_IPPROTO_NETMGMT`: a static route added by management (what `InitializeIpForwardEntry` sets too).
pub const MIB_IPPROTO_NETMGMT: i32 = 3;
/// `IpPrefixOriginManual`: an address configured by hand; the ones Windows generates (link-local) have others.
pub const IP_PREFIX_ORIGIN_MANUAL: i32 = 1;
/// `IpSuffixOriginManual`.
const IP_SUFFIX_ORIGIN_MANUAL: i32 = 1;
/// `IfOperStatusUp`.
const IF_OPER_STATUS_UP: i32 = 1;

/// `SOCKADDR_INET`: a union of `SOCKADDR_IN` (16 bytes) and `SOCKADDR_IN6` (28 bytes), kept as bytes and converted
/// in safe code. Family at 0 (little-endian), port at 2; IPv4 address at 4..8; IPv6 flow info at 4..8, address at
/// 8..24, scope id at 24..28.
#[repr(C, align(4))]
#[derive(Clone, Copy)]
pub struct SockaddrInet {
  bytes: [u8; 28],
}

impl SockaddrInet {
  pub fn from_ip(ip: IpAddr) -> SockaddrInet {
    let mut bytes = [0u8; 28];
    match ip {
      IpAddr::V4(a) => {
        bytes[0..2].copy_from_slice(&AF_INET.to_le_bytes());
        bytes[4..8].copy_from_slice(&a.octets());
      }
      IpAddr::V6(a) => {
        bytes[0..2].copy_from_slice(&AF_INET6.to_le_bytes());
        bytes[8..24].copy_from_slice(&a.octets());
      }
    }
    SockaddrInet { bytes }
  }

  /// The unspecified address of the family of `ip` (the "no gateway" next hop).
  pub fn unspecified_like(ip: IpAddr) -> SockaddrInet {
    SockaddrInet::from_ip(match ip {
      IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
      IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    })
  }

  pub fn family(&self) -> u16 {
    u16::from_le_bytes([self.bytes[0], self.bytes[1]])
  }

  pub fn ip(&self) -> Option<IpAddr> {
    match self.family() {
      AF_INET => Some(IpAddr::V4(Ipv4Addr::new(
        self.bytes[4],
        self.bytes[5],
        self.bytes[6],
        self.bytes[7],
      ))),
      AF_INET6 => {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.bytes[8..24]);
        Some(IpAddr::V6(Ipv6Addr::from(a)))
      }
      _ => None,
    }
  }
}

/// `MIB_UNICASTIPADDRESS_ROW`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MibUnicastIpAddressRow {
  pub address: SockaddrInet,
  pub interface_luid: u64,
  pub interface_index: u32,
  pub prefix_origin: i32,
  pub suffix_origin: i32,
  pub valid_lifetime: u32,
  pub preferred_lifetime: u32,
  pub on_link_prefix_length: u8,
  pub skip_as_source: u8,
  pub dad_state: i32,
  pub scope_id: u32,
  pub creation_time_stamp: i64,
}

/// `MIB_UNICASTIPADDRESS_TABLE` (`Table` is `ANY_SIZE` rows long).
#[repr(C)]
struct MibUnicastIpAddressTable {
  num_entries: u32,
  table: [MibUnicastIpAddressRow; 1],
}

/// `IP_ADDRESS_PREFIX`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IpAddressPrefix {
  pub prefix: SockaddrInet,
  pub prefix_length: u8,
}

/// `MIB_IPFORWARD_ROW2`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MibIpForwardRow2 {
  pub interface_luid: u64,
  pub interface_index: u32,
  pub destination_prefix: IpAddressPrefix,
  pub next_hop: SockaddrInet,
  pub site_prefix_length: u8,
  pub valid_lifetime: u32,
  pub preferred_lifetime: u32,
  pub metric: u32,
  pub protocol: i32,
  pub loopback: u8,
  pub autoconfigure_address: u8,
  pub publish: u8,
  pub immortal: u8,
  pub age: u32,
  pub origin: i32,
}

/// `MIB_IPFORWARD_TABLE2`.
#[repr(C)]
struct MibIpForwardTable2 {
  num_entries: u32,
  table: [MibIpForwardRow2; 1],
}

/// `MIB_IPINTERFACE_ROW`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MibIpInterfaceRow {
  pub family: u16,
  pub interface_luid: u64,
  pub interface_index: u32,
  pub max_reassembly_size: u32,
  pub interface_identifier: u64,
  pub min_router_advertisement_interval: u32,
  pub max_router_advertisement_interval: u32,
  pub advertising_enabled: u8,
  pub forwarding_enabled: u8,
  pub weak_host_send: u8,
  pub weak_host_receive: u8,
  pub use_automatic_metric: u8,
  pub use_neighbor_unreachability_detection: u8,
  pub managed_address_configuration_supported: u8,
  pub other_stateful_configuration_supported: u8,
  pub advertise_default_route: u8,
  pub router_discovery_behavior: i32,
  pub dad_transmits: u32,
  pub base_reachable_time: u32,
  pub retransmit_time: u32,
  pub path_mtu_discovery_timeout: u32,
  pub link_local_address_behavior: i32,
  pub link_local_address_timeout: u32,
  pub zone_indices: [u32; 16],
  pub site_prefix_length: u32,
  pub metric: u32,
  pub nl_mtu: u32,
  pub connected: u8,
  pub supports_wake_up_patterns: u8,
  pub supports_neighbor_discovery: u8,
  pub supports_router_discovery: u8,
  pub reachable_time: u32,
  /// `NL_INTERFACE_OFFLOAD_ROD`: eight 1-bit flags in one byte.
  pub transmit_offload: u8,
  pub receive_offload: u8,
  pub disable_default_routes: u8,
}

/// `MIB_IF_ROW2`: the interface as the OS sees it, with its 64-bit counters.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MibIfRow2 {
  pub interface_luid: u64,
  pub interface_index: u32,
  pub interface_guid: [u8; 16],
  pub alias: [u16; 257],
  pub description: [u16; 257],
  pub physical_address_length: u32,
  pub physical_address: [u8; 32],
  pub permanent_physical_address: [u8; 32],
  pub mtu: u32,
  pub if_type: u32,
  pub tunnel_type: i32,
  pub media_type: i32,
  pub physical_medium_type: i32,
  pub access_type: i32,
  pub direction_type: i32,
  /// `InterfaceAndOperStatusFlags`: eight 1-bit flags in one byte.
  pub interface_and_oper_status_flags: u8,
  pub oper_status: i32,
  pub admin_status: i32,
  pub media_connect_state: i32,
  pub network_guid: [u8; 16],
  pub connection_type: i32,
  pub transmit_link_speed: u64,
  pub receive_link_speed: u64,
  pub in_octets: u64,
  pub in_ucast_pkts: u64,
  pub in_n_ucast_pkts: u64,
  pub in_discards: u64,
  pub in_errors: u64,
  pub in_unknown_protos: u64,
  pub in_ucast_octets: u64,
  pub in_multicast_octets: u64,
  pub in_broadcast_octets: u64,
  pub out_octets: u64,
  pub out_ucast_pkts: u64,
  pub out_n_ucast_pkts: u64,
  pub out_discards: u64,
  pub out_errors: u64,
  pub out_ucast_octets: u64,
  pub out_multicast_octets: u64,
  pub out_broadcast_octets: u64,
  pub out_q_len: u64,
}

// GUIDs are declared as bytes above; a GUID has 4-byte alignment, which the fields before them already give.
const _: () =
  assert!(offset_of!(MibIfRow2, interface_guid) % 4 == 0 && offset_of!(MibIfRow2, network_guid) % 4 == 0);

#[link(name = "iphlpapi")]
extern "system" {
  fn InitializeUnicastIpAddressEntry(row: *mut MibUnicastIpAddressRow);
  fn CreateUnicastIpAddressEntry(row: *const MibUnicastIpAddressRow) -> u32;
  fn DeleteUnicastIpAddressEntry(row: *const MibUnicastIpAddressRow) -> u32;
  fn GetUnicastIpAddressTable(family: u16, table: *mut *mut MibUnicastIpAddressTable) -> u32;
  fn InitializeIpForwardEntry(row: *mut MibIpForwardRow2);
  fn CreateIpForwardEntry2(row: *const MibIpForwardRow2) -> u32;
  fn DeleteIpForwardEntry2(row: *const MibIpForwardRow2) -> u32;
  fn GetIpForwardTable2(family: u16, table: *mut *mut MibIpForwardTable2) -> u32;
  fn InitializeIpInterfaceEntry(row: *mut MibIpInterfaceRow);
  fn GetIpInterfaceEntry(row: *mut MibIpInterfaceRow) -> u32;
  fn SetIpInterfaceEntry(row: *mut MibIpInterfaceRow) -> u32;
  fn GetIfEntry2(row: *mut MibIfRow2) -> u32;
  fn ConvertInterfaceLuidToIndex(luid: *const u64, index: *mut u32) -> u32;
  fn ConvertInterfaceAliasToLuid(alias: *const u16, luid: *mut u64) -> u32;
  fn FreeMibTable(memory: *mut c_void);
}

/// Turns a `NETIO_STATUS` (a Win32 error code) into a result.
fn check(status: u32) -> io::Result<()> {
  if status == NO_ERROR {
    Ok(())
  } else {
    Err(io::Error::from_raw_os_error(status as i32))
  }
}

/// A unicast address row for `ip/prefix` on the interface `luid`, as `InitializeUnicastIpAddressEntry` makes it
/// (infinite lifetimes, manual origins), marked preferred so it is usable at once.
fn unicast_row(luid: u64, ip: IpAddr, prefix: u8) -> MibUnicastIpAddressRow {
  // SAFETY: an all-zero row is a valid value of this plain-data struct.
  let mut row: MibUnicastIpAddressRow = unsafe { std::mem::zeroed() };
  // SAFETY: `row` is a valid, exclusively borrowed row.
  unsafe { InitializeUnicastIpAddressEntry(&mut row) };
  row.address = SockaddrInet::from_ip(ip);
  row.interface_luid = luid;
  row.on_link_prefix_length = prefix;
  // Configured by hand (what `addresses()` lists), not learned from DHCP or router advertisements.
  row.prefix_origin = IP_PREFIX_ORIGIN_MANUAL;
  row.suffix_origin = IP_SUFFIX_ORIGIN_MANUAL;
  row.dad_state = IP_DAD_STATE_PREFERRED;
  row
}

/// Adds `ip/prefix` to the interface `luid`.
pub fn add_unicast_address(luid: u64, ip: IpAddr, prefix: u8) -> io::Result<()> {
  let row = unicast_row(luid, ip, prefix);
  // SAFETY: `row` is an initialized row that outlives the call.
  check(unsafe { CreateUnicastIpAddressEntry(&row) })
}

/// Removes `ip` from the interface `luid` (the prefix length does not identify the entry; the address does).
pub fn delete_unicast_address(luid: u64, ip: IpAddr, prefix: u8) -> io::Result<()> {
  let row = unicast_row(luid, ip, prefix);
  // SAFETY: `row` is an initialized row that outlives the call.
  check(unsafe { DeleteUnicastIpAddressEntry(&row) })
}

/// Every unicast address row of `family` on the system (`AF_INET`, `AF_INET6`, or 0 for both).
pub fn unicast_addresses(family: u16) -> io::Result<Vec<MibUnicastIpAddressRow>> {
  let mut table: *mut MibUnicastIpAddressTable = ptr::null_mut();
  // SAFETY: `table` is a valid out-pointer; on success it points to a table we free below.
  check(unsafe { GetUnicastIpAddressTable(family, &mut table) })?;
  // SAFETY: on success `table` holds `num_entries` rows starting at `table.table`, valid until FreeMibTable; the
  // rows are plain data and are copied out before the table is freed.
  let rows = unsafe {
    let n = (*table).num_entries as usize;
    let first = ptr::addr_of!((*table).table).cast::<MibUnicastIpAddressRow>();
    let rows = std::slice::from_raw_parts(first, n).to_vec();
    FreeMibTable(table.cast());
    rows
  };
  Ok(rows)
}

/// A route row for `dest/prefix` via `next_hop` (unspecified: on-link) on `luid`, as `InitializeIpForwardEntry`
/// makes it (infinite lifetimes, `MIB_IPPROTO_NETMGMT`).
pub fn route_row(
  luid: u64,
  dest: IpAddr,
  prefix: u8,
  next_hop: Option<IpAddr>,
  metric: u32,
) -> MibIpForwardRow2 {
  // SAFETY: an all-zero row is a valid value of this plain-data struct.
  let mut row: MibIpForwardRow2 = unsafe { std::mem::zeroed() };
  // SAFETY: `row` is a valid, exclusively borrowed row.
  unsafe { InitializeIpForwardEntry(&mut row) };
  row.interface_luid = luid;
  row.destination_prefix = IpAddressPrefix {
    prefix: SockaddrInet::from_ip(dest),
    prefix_length: prefix,
  };
  row.next_hop = match next_hop {
    Some(gw) => SockaddrInet::from_ip(gw),
    None => SockaddrInet::unspecified_like(dest),
  };
  row.metric = metric;
  row.protocol = MIB_IPPROTO_NETMGMT;
  row
}

/// Adds a route.
pub fn add_route(row: &MibIpForwardRow2) -> io::Result<()> {
  // SAFETY: `row` is an initialized row borrowed for the call.
  check(unsafe { CreateIpForwardEntry2(row) })
}

/// Deletes a route (matched by interface, destination prefix and next hop).
pub fn delete_route(row: &MibIpForwardRow2) -> io::Result<()> {
  // SAFETY: `row` is an initialized row borrowed for the call.
  check(unsafe { DeleteIpForwardEntry2(row) })
}

/// Every route row of `family` on the system (0 for both families).
pub fn routes(family: u16) -> io::Result<Vec<MibIpForwardRow2>> {
  let mut table: *mut MibIpForwardTable2 = ptr::null_mut();
  // SAFETY: `table` is a valid out-pointer; on success it points to a table we free below.
  check(unsafe { GetIpForwardTable2(family, &mut table) })?;
  // SAFETY: on success `table` holds `num_entries` rows starting at `table.table`, valid until FreeMibTable; the
  // rows are plain data and are copied out before the table is freed.
  let rows = unsafe {
    let n = (*table).num_entries as usize;
    let first = ptr::addr_of!((*table).table).cast::<MibIpForwardRow2>();
    let rows = std::slice::from_raw_parts(first, n).to_vec();
    FreeMibTable(table.cast());
    rows
  };
  Ok(rows)
}

/// The IP interface row of `luid` for one family. `ERROR_NOT_FOUND` when that family is not bound to the
/// interface (IPv6 disabled, for example).
pub fn ip_interface(luid: u64, family: u16) -> io::Result<MibIpInterfaceRow> {
  // SAFETY: an all-zero row is a valid value of this plain-data struct.
  let mut row: MibIpInterfaceRow = unsafe { std::mem::zeroed() };
  // SAFETY: `row` is a valid, exclusively borrowed row.
  unsafe { InitializeIpInterfaceEntry(&mut row) };
  row.family = family;
  row.interface_luid = luid;
  // SAFETY: `row` is initialized with the family and LUID that identify the entry to read into it.
  check(unsafe { GetIpInterfaceEntry(&mut row) })?;
  Ok(row)
}

/// Sets the IP MTU of the interface `luid` for one family (`ERROR_NOT_FOUND` as for [`ip_interface`]).
pub fn set_mtu(luid: u64, family: u16, mtu: u32) -> io::Result<()> {
  let mut row = ip_interface(luid, family)?;
  row.nl_mtu = mtu;
  // SetIpInterfaceEntry refuses an IPv4 row whose SitePrefixLength is not 0, and Get fills it in.
  if family == AF_INET {
    row.site_prefix_length = 0;
  }
  // SAFETY: `row` is the entry just read, changed only in documented settable fields.
  check(unsafe { SetIpInterfaceEntry(&mut row) })
}

/// The interface state the backend reports: alias, index, MTU, whether it is operationally up, and counters.
pub struct IfInfo {
  pub alias: String,
  pub index: u32,
  pub mtu: u32,
  pub up: bool,
  pub row: MibIfRow2,
}

/// Reads the interface row of `luid`.
pub fn interface(luid: u64) -> io::Result<IfInfo> {
  // SAFETY: an all-zero row is a valid value of this plain-data struct.
  let mut row: MibIfRow2 = unsafe { std::mem::zeroed() };
  row.interface_luid = luid;
  // SAFETY: `row` is exclusively borrowed and names the interface by LUID (index 0), as GetIfEntry2 expects.
  check(unsafe { GetIfEntry2(&mut row) })?;
  Ok(IfInfo {
    alias: super::from_wide(&row.alias),
    index: row.interface_index,
    mtu: row.mtu,
    up: row.oper_status == IF_OPER_STATUS_UP,
    row,
  })
}

/// The interface index of `luid`.
pub fn luid_to_index(luid: u64) -> io::Result<u32> {
  let mut index = 0u32;
  // SAFETY: both pointers are valid for the call.
  check(unsafe { ConvertInterfaceLuidToIndex(&luid, &mut index) })?;
  Ok(index)
}

/// The LUID of the interface whose alias (the name shown by `Get-NetAdapter`) is `alias`; `ERROR_NOT_FOUND` or
/// `ERROR_INVALID_PARAMETER` when there is none.
pub fn alias_to_luid(alias: &str) -> io::Result<u64> {
  let name = super::wide(std::ffi::OsStr::new(alias))?;
  let mut luid = 0u64;
  // SAFETY: `name` is NUL-terminated UTF-16; `luid` is a valid out-pointer.
  check(unsafe { ConvertInterfaceAliasToLuid(name.as_ptr(), &mut luid) })?;
  Ok(luid)
}

// Layouts of the Windows SDK (identical on x86_64 and aarch64). `scripts/targets/win-layout.c` asserts the same
// numbers against the MinGW headers.
const _: () = {
  assert!(size_of::<SockaddrInet>() == 28);
  assert!(size_of::<MibUnicastIpAddressRow>() == 80);
  assert!(offset_of!(MibUnicastIpAddressRow, interface_luid) == 32);
  assert!(offset_of!(MibUnicastIpAddressRow, interface_index) == 40);
  assert!(offset_of!(MibUnicastIpAddressRow, on_link_prefix_length) == 60);
  assert!(offset_of!(MibUnicastIpAddressRow, dad_state) == 64);
  assert!(offset_of!(MibUnicastIpAddressRow, creation_time_stamp) == 72);
  assert!(offset_of!(MibUnicastIpAddressTable, table) == 8);
  assert!(size_of::<IpAddressPrefix>() == 32);
  assert!(size_of::<MibIpForwardRow2>() == 104);
  assert!(offset_of!(MibIpForwardRow2, destination_prefix) == 12);
  assert!(offset_of!(MibIpForwardRow2, next_hop) == 44);
  assert!(offset_of!(MibIpForwardRow2, site_prefix_length) == 72);
  assert!(offset_of!(MibIpForwardRow2, metric) == 84);
  assert!(offset_of!(MibIpForwardRow2, protocol) == 88);
  assert!(offset_of!(MibIpForwardRow2, origin) == 100);
  assert!(offset_of!(MibIpForwardTable2, table) == 8);
  assert!(size_of::<MibIpInterfaceRow>() == 168);
  assert!(offset_of!(MibIpInterfaceRow, interface_luid) == 8);
  assert!(offset_of!(MibIpInterfaceRow, router_discovery_behavior) == 52);
  assert!(offset_of!(MibIpInterfaceRow, zone_indices) == 80);
  assert!(offset_of!(MibIpInterfaceRow, site_prefix_length) == 144);
  assert!(offset_of!(MibIpInterfaceRow, nl_mtu) == 152);
  assert!(offset_of!(MibIpInterfaceRow, reachable_time) == 160);
  assert!(offset_of!(MibIpInterfaceRow, disable_default_routes) == 166);
  assert!(size_of::<MibIfRow2>() == 1352);
  assert!(offset_of!(MibIfRow2, alias) == 28);
  assert!(offset_of!(MibIfRow2, physical_address_length) == 1056);
  assert!(offset_of!(MibIfRow2, mtu) == 1124);
  assert!(offset_of!(MibIfRow2, interface_and_oper_status_flags) == 1152);
  assert!(offset_of!(MibIfRow2, oper_status) == 1156);
  assert!(offset_of!(MibIfRow2, transmit_link_speed) == 1192);
  assert!(offset_of!(MibIfRow2, in_octets) == 1208);
  assert!(offset_of!(MibIfRow2, out_octets) == 1280);
  assert!(offset_of!(MibIfRow2, out_q_len) == 1344);
};
