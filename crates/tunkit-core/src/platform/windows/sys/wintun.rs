//! The API of `wintun.dll` (`wintun.h`, Wintun 0.14), resolved from a [`Library`] at run time, and safe owners of
//! its adapter and session handles.
//!
//! Every wintun function is `WINAPI` (`extern "system"`) and documented as thread-safe, so an [`Adapter`] and a
//! [`Session`] may be shared between threads; one thread receives while another sends.

use super::{wide, Library};
use std::ffi::{c_void, CStr, OsStr};
use std::io;
use std::os::windows::io::{BorrowedHandle, RawHandle};
use std::ptr::{self, NonNull};
use std::sync::{Arc, Mutex};

/// Smallest ring capacity `WintunStartSession` accepts (128 KiB).
pub const MIN_RING_CAPACITY: u32 = 0x2_0000;
/// Largest ring capacity (64 MiB).
pub const MAX_RING_CAPACITY: u32 = 0x400_0000;
/// Largest IP packet a session carries.
pub const MAX_IP_PACKET_SIZE: usize = 0xFFFF;

/// `GUID` (`guiddef.h`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Guid {
  pub data1: u32,
  pub data2: u16,
  pub data3: u16,
  pub data4: [u8; 8],
}

type AdapterHandle = *mut c_void;
type SessionHandle = *mut c_void;
/// `WINTUN_LOGGER_CALLBACK`: level, timestamp (100 ns since 1601), message.
type LoggerCallback = unsafe extern "system" fn(level: i32, timestamp: u64, message: *const u16);

type CreateAdapterFn = unsafe extern "system" fn(*const u16, *const u16, *const Guid) -> AdapterHandle;
type OpenAdapterFn = unsafe extern "system" fn(*const u16) -> AdapterHandle;
type CloseAdapterFn = unsafe extern "system" fn(AdapterHandle);
type GetAdapterLuidFn = unsafe extern "system" fn(AdapterHandle, *mut u64);
type GetRunningDriverVersionFn = unsafe extern "system" fn() -> u32;
type SetLoggerFn = unsafe extern "system" fn(Option<LoggerCallback>);
type StartSessionFn = unsafe extern "system" fn(AdapterHandle, u32) -> SessionHandle;
type EndSessionFn = unsafe extern "system" fn(SessionHandle);
type GetReadWaitEventFn = unsafe extern "system" fn(SessionHandle) -> RawHandle;
type ReceivePacketFn = unsafe extern "system" fn(SessionHandle, *mut u32) -> *mut u8;
type ReleaseReceivePacketFn = unsafe extern "system" fn(SessionHandle, *const u8);
type AllocateSendPacketFn = unsafe extern "system" fn(SessionHandle, u32) -> *mut u8;
type SendPacketFn = unsafe extern "system" fn(SessionHandle, *const u8);

/// The functions of a loaded `wintun.dll`.
pub struct Wintun {
  _lib: Library,
  create_adapter: CreateAdapterFn,
  open_adapter: OpenAdapterFn,
  close_adapter: CloseAdapterFn,
  get_adapter_luid: GetAdapterLuidFn,
  get_running_driver_version: GetRunningDriverVersionFn,
  start_session: StartSessionFn,
  end_session: EndSessionFn,
  get_read_wait_event: GetReadWaitEventFn,
  receive_packet: ReceivePacketFn,
  release_receive_packet: ReleaseReceivePacketFn,
  allocate_send_packet: AllocateSendPacketFn,
  send_packet: SendPacketFn,
}

/// The last error message wintun logged (it explains failures far better than `GetLastError`). Process-wide, so
/// with concurrent failures it may belong to another call; it is only ever used as extra context in a message.
static LAST_LOGGED_ERROR: Mutex<Option<String>> = Mutex::new(None);
const WINTUN_LOG_ERR: i32 = 2;

unsafe extern "system" fn logger(level: i32, _timestamp: u64, message: *const u16) {
  if level != WINTUN_LOG_ERR || message.is_null() {
    return;
  }
  let mut len = 0usize;
  // SAFETY: wintun passes a NUL-terminated UTF-16 string valid for the duration of the callback; we stop at the
  // NUL (and, defensively, after 4096 units).
  let text = unsafe {
    while len < 4096 && *message.add(len) != 0 {
      len += 1;
    }
    std::slice::from_raw_parts(message, len)
  };
  let text = String::from_utf16_lossy(text);
  *LAST_LOGGED_ERROR.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
}

/// Takes the last error message wintun logged, if any.
pub fn take_logged_error() -> Option<String> {
  LAST_LOGGED_ERROR.lock().unwrap_or_else(|e| e.into_inner()).take()
}

impl Wintun {
  /// Resolves every function from `lib` and installs the error logger. Fails with the name of the first missing
  /// export (the file is not a wintun 0.14 DLL then).
  pub fn from_library(lib: Library) -> Result<Wintun, &'static str> {
    macro_rules! resolve {
      ($name:literal as $ty:ty) => {{
        let name: &CStr = $name;
        let sym = lib.symbol(name).ok_or(match name.to_str() {
          Ok(s) => s,
          Err(_) => "?",
        })?;
        // SAFETY: the symbol is the export of that name from wintun.dll, whose C type (wintun.h) is exactly the
        // function pointer type this is assigned to; function and data pointers have the same size on Windows.
        unsafe { std::mem::transmute::<*mut c_void, $ty>(sym.as_ptr()) }
      }};
    }
    let set_logger = resolve!(c"WintunSetLogger" as SetLoggerFn);
    let api = Wintun {
      create_adapter: resolve!(c"WintunCreateAdapter" as CreateAdapterFn),
      open_adapter: resolve!(c"WintunOpenAdapter" as OpenAdapterFn),
      close_adapter: resolve!(c"WintunCloseAdapter" as CloseAdapterFn),
      get_adapter_luid: resolve!(c"WintunGetAdapterLUID" as GetAdapterLuidFn),
      get_running_driver_version: resolve!(c"WintunGetRunningDriverVersion" as GetRunningDriverVersionFn),
      start_session: resolve!(c"WintunStartSession" as StartSessionFn),
      end_session: resolve!(c"WintunEndSession" as EndSessionFn),
      get_read_wait_event: resolve!(c"WintunGetReadWaitEvent" as GetReadWaitEventFn),
      receive_packet: resolve!(c"WintunReceivePacket" as ReceivePacketFn),
      release_receive_packet: resolve!(c"WintunReleaseReceivePacket" as ReleaseReceivePacketFn),
      allocate_send_packet: resolve!(c"WintunAllocateSendPacket" as AllocateSendPacketFn),
      send_packet: resolve!(c"WintunSendPacket" as SendPacketFn),
      _lib: lib,
    };
    // SAFETY: `logger` matches WINTUN_LOGGER_CALLBACK and, being a plain function, lives as long as the process.
    unsafe { set_logger(Some(logger)) };
    Ok(api)
  }

  /// The version of the running wintun driver (major in the high 16 bits), or 0 when none is loaded yet.
  pub fn driver_version(&self) -> u32 {
    // SAFETY: takes no arguments; returns 0 with a last error when no driver runs.
    unsafe { (self.get_running_driver_version)() }
  }
}

/// An open wintun adapter. Dropping it closes the handle, which removes the adapter when this process created it.
pub struct Adapter {
  api: &'static Wintun,
  handle: NonNull<c_void>,
}

// SAFETY: wintun adapter handles may be used from any thread (wintun.h documents its functions as thread-safe).
unsafe impl Send for Adapter {}
// SAFETY: as above; the handle itself is never mutated.
unsafe impl Sync for Adapter {}

impl Adapter {
  /// Creates an adapter named `name` (its interface alias) of the tunnel type `tunnel_type`, with the GUID `guid`.
  pub fn create(api: &'static Wintun, name: &str, tunnel_type: &str, guid: &Guid) -> io::Result<Adapter> {
    let (n, t) = (wide(OsStr::new(name))?, wide(OsStr::new(tunnel_type))?);
    // SAFETY: both strings are NUL-terminated UTF-16 that outlive the call; `guid` points to a valid GUID.
    let h = unsafe { (api.create_adapter)(n.as_ptr(), t.as_ptr(), guid) };
    NonNull::new(h)
      .map(|handle| Adapter { api, handle })
      .ok_or_else(io::Error::last_os_error)
  }

  /// Opens the existing adapter named `name`.
  pub fn open(api: &'static Wintun, name: &str) -> io::Result<Adapter> {
    let n = wide(OsStr::new(name))?;
    // SAFETY: `n` is a NUL-terminated UTF-16 string that outlives the call.
    let h = unsafe { (api.open_adapter)(n.as_ptr()) };
    NonNull::new(h)
      .map(|handle| Adapter { api, handle })
      .ok_or_else(io::Error::last_os_error)
  }

  /// The adapter's LUID, which the IP Helper API takes.
  pub fn luid(&self) -> u64 {
    let mut luid = 0u64;
    // SAFETY: the handle is open; `luid` is a valid out-pointer for a NET_LUID (a 64-bit union).
    unsafe { (self.api.get_adapter_luid)(self.handle.as_ptr(), &mut luid) };
    luid
  }
}

impl Drop for Adapter {
  fn drop(&mut self) {
    // SAFETY: the handle is open and no session of it is running (a Session keeps its Adapter alive).
    unsafe { (self.api.close_adapter)(self.handle.as_ptr()) }
  }
}

/// A running session: the packet rings of an adapter. Dropping it ends the session.
pub struct Session {
  api: &'static Wintun,
  handle: NonNull<c_void>,
  read_event: RawHandle,
  // Dropped after the session has ended (field order and `Drop` below).
  _adapter: Arc<Adapter>,
}

// SAFETY: wintun's session functions are thread-safe; one thread may receive while another sends.
unsafe impl Send for Session {}
// SAFETY: as above; the handles are never mutated after creation.
unsafe impl Sync for Session {}

impl Session {
  /// Starts a session with rings of `capacity` bytes (a power of two in `MIN_RING_CAPACITY..=MAX_RING_CAPACITY`).
  pub fn start(adapter: Arc<Adapter>, capacity: u32) -> io::Result<Session> {
    let api = adapter.api;
    // SAFETY: the adapter handle is open (kept alive by the Arc the session will hold).
    let h = unsafe { (api.start_session)(adapter.handle.as_ptr(), capacity) };
    let handle = NonNull::new(h).ok_or_else(io::Error::last_os_error)?;
    // SAFETY: the session handle was just returned; the event is owned by the session (never closed by us).
    let read_event = unsafe { (api.get_read_wait_event)(handle.as_ptr()) };
    Ok(Session {
      api,
      handle,
      read_event,
      _adapter: adapter,
    })
  }

  /// The event wintun signals when packets are ready to receive. Valid as long as the session.
  pub fn read_event(&self) -> BorrowedHandle<'_> {
    // SAFETY: the event handle belongs to the session and stays open until `WintunEndSession`, which only runs in
    // `drop`, after every borrow of `self` ended.
    unsafe { BorrowedHandle::borrow_raw(self.read_event) }
  }

  /// Receives one packet and appends it to `out`. Errors carry wintun's last error: `ERROR_NO_MORE_ITEMS` when the
  /// ring is empty, `ERROR_HANDLE_EOF` when the adapter is going away, `ERROR_INVALID_DATA` for a corrupt ring.
  pub fn receive_into(&self, out: &mut Vec<u8>) -> io::Result<usize> {
    let mut size = 0u32;
    // SAFETY: the session is running; `size` is a valid out-pointer.
    let p = unsafe { (self.api.receive_packet)(self.handle.as_ptr(), &mut size) };
    if p.is_null() {
      return Err(io::Error::last_os_error());
    }
    // SAFETY: on success wintun returns `size` readable bytes at `p`, valid until they are released below.
    let packet = unsafe { std::slice::from_raw_parts(p, size as usize) };
    out.extend_from_slice(packet);
    // SAFETY: `p` came from WintunReceivePacket on this session and is released exactly once; `packet` is not
    // used afterwards.
    unsafe { (self.api.release_receive_packet)(self.handle.as_ptr(), p) };
    Ok(size as usize)
  }

  /// Queues `packet` for the adapter. Errors: `ERROR_BUFFER_OVERFLOW` when the ring is full (retry later),
  /// `ERROR_HANDLE_EOF` when the adapter is going away, `ERROR_INVALID_PARAMETER` for a size over the maximum.
  pub fn send(&self, packet: &[u8]) -> io::Result<()> {
    if packet.is_empty() || packet.len() > MAX_IP_PACKET_SIZE {
      return Err(io::Error::from_raw_os_error(super::code::ERROR_INVALID_PARAMETER));
    }
    // SAFETY: the session is running and the size is in 1..=WINTUN_MAX_IP_PACKET_SIZE.
    let p = unsafe { (self.api.allocate_send_packet)(self.handle.as_ptr(), packet.len() as u32) };
    if p.is_null() {
      return Err(io::Error::last_os_error());
    }
    // SAFETY: wintun returned `packet.len()` writable bytes at `p`, which cannot overlap our slice; the buffer is
    // handed back exactly once with WintunSendPacket.
    unsafe {
      ptr::copy_nonoverlapping(packet.as_ptr(), p, packet.len());
      (self.api.send_packet)(self.handle.as_ptr(), p);
    }
    Ok(())
  }
}

impl Drop for Session {
  fn drop(&mut self) {
    // SAFETY: the session is running and, since we are dropping it, no other thread is inside a call on it.
    unsafe { (self.api.end_session)(self.handle.as_ptr()) }
  }
}
