//! Node-API on Windows. A DLL must resolve every import at link time, and `node.exe` (or `electron.exe`, or any
//! other host) has no import library we could link against. So instead of importing them, each Node-API function
//! is looked up at run time in the executable that loaded us (`GetModuleHandleW(NULL)` + `GetProcAddress`), once,
//! and cached. [`windows_node_api!`] turns the declaration list of `mod.rs` into `pub unsafe fn`s with the very
//! signatures of the `extern "C"` declarations used elsewhere, so the rest of the binding is the same on every OS.

use std::ffi::c_void;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, Ordering};

/// `napi_generic_failure`: what a call returns when the host does not export the function.
pub const NAPI_GENERIC_FAILURE: super::napi_status = 9;

#[link(name = "kernel32")]
extern "system" {
  fn GetModuleHandleW(module_name: *const u16) -> *mut c_void;
  fn GetProcAddress(module: *mut c_void, proc_name: *const u8) -> *mut c_void;
}

/// The cached address of one Node-API function; null until first resolved.
pub struct Slot(AtomicPtr<c_void>);

impl Slot {
  pub const fn new() -> Slot {
    Slot(AtomicPtr::new(ptr::null_mut()))
  }

  /// The address of the host's export `name` (given with a trailing NUL), resolved on first use. Two threads may
  /// both resolve it; they store the same address.
  pub fn get(&self, name: &'static str) -> Option<NonNull<c_void>> {
    if let Some(p) = NonNull::new(self.0.load(Ordering::Acquire)) {
      return Some(p);
    }
    let p = resolve(name)?;
    self.0.store(p.as_ptr(), Ordering::Release);
    Some(p)
  }
}

/// Looks up the export `name` (NUL-terminated) in the host executable.
fn resolve(name: &'static str) -> Option<NonNull<c_void>> {
  assert!(name.ends_with('\0'), "export names are passed NUL-terminated");
  // SAFETY: a null module name asks for the handle of the executable, which needs no reference counting.
  let host = unsafe { GetModuleHandleW(ptr::null()) };
  if host.is_null() {
    return None;
  }
  // SAFETY: `host` is a loaded module and `name` a NUL-terminated ASCII string that lives for the whole program.
  NonNull::new(unsafe { GetProcAddress(host, name.as_ptr()) })
}

/// Defines, for each declared Node-API function, a `pub unsafe fn` of the same name and signature that calls the
/// host's export through a cached pointer (or returns `napi_generic_failure` when the host lacks it).
macro_rules! windows_node_api {
  ($( fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> napi_status; )*) => {
    $(
      /// Calls the Node-API function of the same name in the host process.
      ///
      /// # Safety
      /// The contract of the Node-API function of the same name.
      #[allow(clippy::too_many_arguments)]
      pub unsafe fn $name($($arg: $ty),*) -> napi_status {
        static SLOT: windows::Slot = windows::Slot::new();
        type Export = unsafe extern "C" fn($($ty),*) -> napi_status;
        match SLOT.get(concat!(stringify!($name), "\0")) {
          // SAFETY: the address is the host's export of this name, a Node-API function whose C signature
          // (node_api.h, NAPI_CDECL) is exactly `Export`; the caller upholds that function's contract.
          Some(f) => unsafe { std::mem::transmute::<*mut std::ffi::c_void, Export>(f.as_ptr())($($arg),*) },
          None => windows::NAPI_GENERIC_FAILURE,
        }
      }
    )*
  };
}
