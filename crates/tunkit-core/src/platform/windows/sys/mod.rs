//! Raw Windows interfaces of the wintun backend: hand-declared `kernel32` functions and constants, each wrapped in a
//! function with a safe signature that returns `io::Result`. Every `unsafe` block of the Windows backend lives under
//! this directory; `mod.rs`, `device.rs` and `driver.rs` one level up are safe code.
//!
//! [`wintun`] is the function table of `wintun.dll` (loaded at run time, never linked), [`iphlp`] the IP Helper
//! calls that configure addresses, routes and the MTU. Handles are owned by [`OwnedHandle`] wherever this code owns
//! them, so `CloseHandle` is never called by hand.

pub mod iphlp;
pub mod wintun;

use std::ffi::{c_void, CStr, OsStr, OsString};
use std::io;
use std::os::windows::ffi::{OsStrExt, OsStringExt};
use std::os::windows::io::{AsRawHandle, BorrowedHandle, FromRawHandle, OwnedHandle, RawHandle};
use std::path::{Path, PathBuf};
use std::ptr::{self, NonNull};

/// Win32 error codes the backend looks at (`winerror.h`).
pub mod code {
  pub const ERROR_FILE_NOT_FOUND: i32 = 2;
  pub const ERROR_PATH_NOT_FOUND: i32 = 3;
  pub const ERROR_ACCESS_DENIED: i32 = 5;
  pub const ERROR_INVALID_DATA: i32 = 13;
  pub const ERROR_HANDLE_EOF: i32 = 38;
  pub const ERROR_INVALID_PARAMETER: i32 = 87;
  pub const ERROR_BUFFER_OVERFLOW: i32 = 111;
  pub const ERROR_INSUFFICIENT_BUFFER: i32 = 122;
  pub const ERROR_MOD_NOT_FOUND: i32 = 126;
  pub const ERROR_PROC_NOT_FOUND: i32 = 127;
  pub const ERROR_ALREADY_EXISTS: i32 = 183;
  pub const ERROR_BAD_EXE_FORMAT: i32 = 193;
  pub const ERROR_NO_MORE_ITEMS: i32 = 259;
  pub const ERROR_ELEVATION_REQUIRED: i32 = 740;
  pub const ERROR_NOT_FOUND: i32 = 1168;
  pub const ERROR_OBJECT_ALREADY_EXISTS: i32 = 5010;
}

type Bool = i32;
type HModule = *mut c_void;

const GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT: u32 = 0x2;
const GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS: u32 = 0x4;
/// Search the directory of the DLL being loaded (the path must be absolute) ...
const LOAD_LIBRARY_SEARCH_DLL_LOAD_DIR: u32 = 0x100;
/// ... and `System32`, for its own imports. Never the current directory or `PATH`.
const LOAD_LIBRARY_SEARCH_SYSTEM32: u32 = 0x800;
const INFINITE: u32 = 0xFFFF_FFFF;
const WAIT_OBJECT_0: u32 = 0;
const WAIT_TIMEOUT: u32 = 258;
const WAIT_FAILED: u32 = 0xFFFF_FFFF;

#[link(name = "kernel32")]
extern "system" {
  fn GetModuleHandleExW(flags: u32, module_name: *const u16, module: *mut HModule) -> Bool;
  fn GetModuleFileNameW(module: HModule, filename: *mut u16, size: u32) -> u32;
  fn LoadLibraryExW(filename: *const u16, file: RawHandle, flags: u32) -> HModule;
  fn GetProcAddress(module: HModule, name: *const u8) -> *mut c_void;
  fn CreateEventW(
    attributes: *mut c_void,
    manual_reset: Bool,
    initial_state: Bool,
    name: *const u16,
  ) -> RawHandle;
  fn SetEvent(event: RawHandle) -> Bool;
  fn WaitForMultipleObjects(count: u32, handles: *const RawHandle, wait_all: Bool, milliseconds: u32) -> u32;
}

/// The error of a Win32 call that returned failure, from `GetLastError`.
fn last_error() -> io::Error {
  io::Error::last_os_error()
}

/// The Win32 error code of an `io::Error`, or 0 when it has none.
pub fn code_of(err: &io::Error) -> i32 {
  err.raw_os_error().unwrap_or(0)
}

/// `s` as a NUL-terminated UTF-16 string; `InvalidInput` when it contains a NUL.
pub fn wide(s: &OsStr) -> io::Result<Vec<u16>> {
  let mut w: Vec<u16> = s.encode_wide().collect();
  if w.contains(&0) {
    return Err(io::Error::new(
      io::ErrorKind::InvalidInput,
      "string contains a NUL character",
    ));
  }
  w.push(0);
  Ok(w)
}

/// The UTF-16 string in `buf` up to its first NUL (or all of it).
pub fn from_wide(buf: &[u16]) -> String {
  let end = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
  String::from_utf16_lossy(&buf[..end])
}

/// Anchor whose address identifies the module this code was linked into.
static MODULE_ANCHOR: u8 = 0;

/// The full path of the module (`.node` DLL, or executable for tests) that contains this code.
pub fn this_module_path() -> io::Result<PathBuf> {
  let mut module: HModule = ptr::null_mut();
  // SAFETY: with FROM_ADDRESS the "name" is an address inside a loaded module (our own static); UNCHANGED_REFCOUNT
  // hands back the handle without a reference to release. `module` is a valid out-pointer.
  let ok = unsafe {
    GetModuleHandleExW(
      GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
      ptr::addr_of!(MODULE_ANCHOR).cast(),
      &mut module,
    )
  };
  if ok == 0 {
    return Err(last_error());
  }
  // Paths may exceed MAX_PATH; grow until the name fits (the call truncates and returns the buffer size then).
  let mut size = 260usize;
  loop {
    let mut buf = vec![0u16; size];
    // SAFETY: `buf` is writable for `size` UTF-16 units; `module` is the live handle of our own module.
    let n = unsafe { GetModuleFileNameW(module, buf.as_mut_ptr(), size as u32) } as usize;
    if n == 0 {
      return Err(last_error());
    }
    if n < size {
      buf.truncate(n);
      return Ok(PathBuf::from(OsString::from_wide(&buf)));
    }
    if size >= 1 << 16 {
      return Err(io::Error::from_raw_os_error(code::ERROR_INSUFFICIENT_BUFFER));
    }
    size *= 2;
  }
}

/// A DLL loaded into the process for good (it is never unloaded: its code may be running on other threads, and
/// function pointers into it are kept).
pub struct Library {
  module: NonNull<c_void>,
}

// SAFETY: a module handle is a process-wide base address; `GetProcAddress` on it is thread-safe.
unsafe impl Send for Library {}
// SAFETY: as above; the handle is never mutated.
unsafe impl Sync for Library {}

impl Library {
  /// Loads the DLL at the absolute `path`, resolving its own imports only from its directory and `System32`.
  pub fn load_restricted(path: &Path) -> io::Result<Library> {
    if !path.is_absolute() {
      return Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        "the DLL path must be absolute",
      ));
    }
    let name = wide(path.as_os_str())?;
    // SAFETY: `name` is a NUL-terminated UTF-16 path that outlives the call; the reserved file handle is null as
    // required; the flags restrict the search and are valid for LoadLibraryExW.
    let module = unsafe {
      LoadLibraryExW(
        name.as_ptr(),
        ptr::null_mut(),
        LOAD_LIBRARY_SEARCH_DLL_LOAD_DIR | LOAD_LIBRARY_SEARCH_SYSTEM32,
      )
    };
    NonNull::new(module)
      .map(|module| Library { module })
      .ok_or_else(last_error)
  }

  /// The address of the exported function `name`, if the DLL exports it.
  pub fn symbol(&self, name: &CStr) -> Option<NonNull<c_void>> {
    // SAFETY: `module` is a loaded module (never freed) and `name` a NUL-terminated ANSI string.
    NonNull::new(unsafe { GetProcAddress(self.module.as_ptr(), name.as_ptr().cast()) })
  }
}

/// Creates an unnamed, unsignalled event. A manual-reset event stays signalled once set, which is what a "closed
/// for good" wake-up needs.
pub fn create_event(manual_reset: bool) -> io::Result<OwnedHandle> {
  // SAFETY: no security attributes and no name (both null are allowed); the call reads no other memory.
  let h = unsafe { CreateEventW(ptr::null_mut(), manual_reset as Bool, 0, ptr::null()) };
  if h.is_null() {
    return Err(last_error());
  }
  // SAFETY: `h` was just returned by CreateEventW, so it is an open handle owned by nobody else.
  Ok(unsafe { OwnedHandle::from_raw_handle(h) })
}

/// Signals an event.
pub fn set_event(event: BorrowedHandle<'_>) -> io::Result<()> {
  // SAFETY: `event` is a live event handle for the duration of the borrow.
  if unsafe { SetEvent(event.as_raw_handle()) } == 0 {
    return Err(last_error());
  }
  Ok(())
}

/// Waits until one of `handles` (at most 64) is signalled, or `timeout_ms` passed (`None`: no timeout). Returns the
/// index of a signalled handle (the lowest when several are), or `None` on timeout.
pub fn wait_any(handles: &[BorrowedHandle<'_>], timeout_ms: Option<u32>) -> io::Result<Option<usize>> {
  assert!(
    !handles.is_empty() && handles.len() <= 64,
    "WaitForMultipleObjects takes 1..=64 handles"
  );
  let raw: Vec<RawHandle> = handles.iter().map(|h| h.as_raw_handle()).collect();
  let ms = timeout_ms.map(|t| t.min(INFINITE - 1)).unwrap_or(INFINITE);
  // SAFETY: `raw` holds `raw.len()` handles that stay open for the borrow of `handles`; wait_all is false.
  let r = unsafe { WaitForMultipleObjects(raw.len() as u32, raw.as_ptr(), 0, ms) };
  match r {
    WAIT_FAILED => Err(last_error()),
    WAIT_TIMEOUT => Ok(None),
    i if (WAIT_OBJECT_0..WAIT_OBJECT_0 + raw.len() as u32).contains(&i) => {
      Ok(Some((i - WAIT_OBJECT_0) as usize))
    }
    // WAIT_ABANDONED_0 + i applies to mutexes only, which are never waited on here.
    other => Err(io::Error::other(format!(
      "WaitForMultipleObjects returned {other:#x}"
    ))),
  }
}
