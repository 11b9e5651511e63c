//! The few libuv functions the idle poll uses, declared by hand from `uv.h` (libuv 1.x, which every supported Node
//! embeds and exports). Linux only: the symbols resolve against the `node` executable like Node-API's.

use std::ffi::{c_int, c_void};

/// `UV_POLL` of `uv_handle_type`.
pub const UV_POLL: c_int = 8;
/// `UV_READABLE` of `uv_poll_event`.
pub const UV_READABLE: c_int = 1;

/// `uv_poll_cb`: the handle, a status (negative: an error), the events seen.
pub type UvPollCb = Option<unsafe extern "C" fn(handle: *mut c_void, status: c_int, events: c_int)>;
/// `uv_close_cb`.
pub type UvCloseCb = Option<unsafe extern "C" fn(handle: *mut c_void)>;

extern "C" {
  pub fn uv_handle_size(kind: c_int) -> usize;
  pub fn uv_poll_init(uv_loop: *mut c_void, handle: *mut c_void, fd: c_int) -> c_int;
  pub fn uv_poll_start(handle: *mut c_void, events: c_int, cb: UvPollCb) -> c_int;
  pub fn uv_poll_stop(handle: *mut c_void) -> c_int;
  pub fn uv_close(handle: *mut c_void, cb: UvCloseCb);
  pub fn uv_unref(handle: *mut c_void);
}
