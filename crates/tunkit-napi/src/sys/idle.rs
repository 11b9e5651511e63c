//! The idle poll: a libuv poll handle on a queue's device descriptor, so that while the ring's reader thread is
//! parked (the device is idle) the JavaScript thread's own event loop waits for the next packet, and a packet
//! reaches JavaScript after one thread wake-up instead of two (see `tunkit_core::ring::PacketRing::read_inline`).
//!
//! Everything here runs on the JavaScript thread of one environment: the handle is made, started, stopped and
//! closed there, and libuv calls back there.

use super::api::{self, Env, JsResult, Value};
use super::idle_api::*;
use super::uv::{
  uv_close, uv_handle_size, uv_poll_init, uv_poll_start, uv_poll_stop, uv_unref, UV_POLL, UV_READABLE,
};
use super::{napi_create_double, napi_env, NAPI_OK, NAPI_PENDING_EXCEPTION};
use std::ffi::c_int;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::null_mut;
use std::thread::ThreadId;

/// What the handler of a readable descriptor asks for: keep waiting on it, and the code to call the JavaScript
/// function with (if any).
pub struct Ready {
  pub keep: bool,
  pub call: Option<u32>,
}

type Handler = Box<dyn Fn() -> Ready>;

/// What the libuv handle's `data` points to.
struct Ctx {
  env: napi_env,
  func: napi_ref,
  handler: Handler,
  active: bool,
}

/// A poll handle on one descriptor (see the module). Unreferenced: it never keeps the event loop alive by itself.
/// Dropping it stops and closes the handle; its memory is freed by libuv's close callback.
pub struct IdlePoll {
  handle: *mut c_void,
  ctx: *mut Ctx,
  thread: ThreadId,
}

// SAFETY: the raw pointers are only used on the environment's own thread: every method checks `thread` and does
// nothing elsewhere; the queue handle holding this is shared with other threads only to reach its ring.
unsafe impl Send for IdlePoll {}
// SAFETY: as above.
unsafe impl Sync for IdlePoll {}

/// Words (8 bytes, for alignment) that hold one `uv_poll_t`.
fn handle_words() -> usize {
  // SAFETY: a pure function of the handle type.
  unsafe { uv_handle_size(UV_POLL) }.div_ceil(8)
}

unsafe extern "C" fn on_readable(handle: *mut c_void, status: c_int, _events: c_int) {
  // SAFETY: `data`, the first field of every libuv handle, holds the Ctx set in `IdlePoll::new`, alive until the
  // handle is closed (after which libuv makes no more callbacks).
  let ctx = unsafe { &mut **(handle as *mut *mut Ctx) };
  let ready = catch_unwind(AssertUnwindSafe(|| (ctx.handler)())).unwrap_or(Ready {
    keep: false,
    call: None,
  });
  if status < 0 || !ready.keep {
    // SAFETY: handle is a live, initialized poll handle.
    unsafe { uv_poll_stop(handle) };
    ctx.active = false;
  }
  if let Some(code) = ready.call {
    call_js(ctx, code);
  }
}

/// Calls the function with `code` from libuv's callback: in a handle scope of its own, through
/// `napi_make_callback` so that the microtasks it queues (the promise a waiting read resolves) run at once.
fn call_js(ctx: &Ctx, code: u32) {
  let env = ctx.env;
  let mut scope = null_mut();
  // SAFETY: env is the live environment whose loop runs this callback; scope is a valid out-pointer.
  if unsafe { napi_open_handle_scope(env, &mut scope) } != NAPI_OK {
    return;
  }
  let (mut func, mut recv, mut arg, mut out) = (null_mut(), null_mut(), null_mut(), null_mut());
  // SAFETY: all out-pointers are valid; func is the reference made in `IdlePoll::new`, alive until it is dropped;
  // a null async context is accepted by `napi_make_callback`, whose receiver must be an object (the global).
  unsafe {
    if napi_get_reference_value(env, ctx.func, &mut func) == NAPI_OK
      && !func.is_null()
      && napi_get_global(env, &mut recv) == NAPI_OK
      && napi_create_double(env, code as f64, &mut arg) == NAPI_OK
      && napi_make_callback(env, null_mut(), recv, func, 1, &arg, &mut out) == NAPI_PENDING_EXCEPTION
    {
      // Nothing on the stack catches it: report it as uncaught, like a throw in any event callback.
      let mut err = null_mut();
      if napi_get_and_clear_last_exception(env, &mut err) == NAPI_OK {
        napi_fatal_exception(env, err);
      }
    }
    napi_close_handle_scope(env, scope);
  }
}

unsafe extern "C" fn on_closed(handle: *mut c_void) {
  // SAFETY: the Ctx and the handle memory were leaked by `IdlePoll::new` for this handle; libuv calls this once,
  // after which nothing refers to either.
  unsafe {
    let ctx = *(handle as *mut *mut Ctx);
    drop(Box::from_raw(ctx));
    drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
      handle as *mut u64,
      handle_words(),
    )));
  }
}

impl IdlePoll {
  /// A poll handle on `fd` in `env`'s event loop, stopped. When the descriptor is readable, `handler` runs and
  /// says whether to keep waiting and what to call `func` with.
  pub fn new(env: Env, fd: i32, func: Value, handler: Handler) -> JsResult<IdlePoll> {
    let raw = env.0;
    let mut uv_loop = null_mut();
    // SAFETY: a live env on its own thread; uv_loop is a valid out-pointer.
    api::check(
      raw,
      unsafe { napi_get_uv_event_loop(raw, &mut uv_loop) },
      "napi_get_uv_event_loop",
    )?;
    let mut func_ref = null_mut();
    // SAFETY: func is a live value of env; one strong reference, deleted when this is dropped.
    api::check(
      raw,
      unsafe { napi_create_reference(raw, func.0, 1, &mut func_ref) },
      "napi_create_reference",
    )?;
    let handle = Box::into_raw(vec![0u64; handle_words()].into_boxed_slice()) as *mut c_void;
    let ctx = Box::into_raw(Box::new(Ctx {
      env: raw,
      func: func_ref,
      handler,
      active: false,
    }));
    // SAFETY: handle points to zeroed memory of at least uv_handle_size(UV_POLL) bytes, 8-aligned; the loop is
    // this thread's.
    let r = unsafe { uv_poll_init(uv_loop, handle, fd) };
    if r != 0 {
      // SAFETY: not initialized, so libuv holds nothing: free both here, and the reference.
      unsafe {
        drop(Box::from_raw(ctx));
        drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
          handle as *mut u64,
          handle_words(),
        )));
        napi_delete_reference(raw, func_ref);
      }
      return Err(api::JsError::Internal(format!(
        "uv_poll_init on the device descriptor failed ({r})"
      )));
    }
    // SAFETY: handle is initialized; `data` is its first field; unref so that it never keeps the loop alive.
    unsafe {
      *(handle as *mut *mut Ctx) = ctx;
      uv_unref(handle);
    }
    Ok(IdlePoll {
      handle,
      ctx,
      thread: std::thread::current().id(),
    })
  }

  fn on_own_thread(&self) -> bool {
    std::thread::current().id() == self.thread
  }

  /// Starts waiting for the descriptor to be readable (no-op if already waiting).
  pub fn start(&self) {
    if !self.on_own_thread() {
      return;
    }
    // SAFETY: on the loop's thread; ctx lives until the handle is closed, which only drop does.
    let ctx = unsafe { &mut *self.ctx };
    if !ctx.active {
      // SAFETY: handle is a live, initialized poll handle.
      ctx.active = unsafe { uv_poll_start(self.handle, UV_READABLE, Some(on_readable)) } == 0;
    }
  }
}

impl Drop for IdlePoll {
  fn drop(&mut self) {
    if !self.on_own_thread() {
      // Cannot touch the loop from here: leak the handle (it stays stopped or fires into a parked-off ring).
      return;
    }
    // SAFETY: on the loop's thread: stop, drop the function reference, and close; on_closed frees the memory.
    unsafe {
      uv_poll_stop(self.handle);
      let ctx = &mut *self.ctx;
      ctx.active = false;
      napi_delete_reference(ctx.env, ctx.func);
      ctx.func = null_mut();
      uv_close(self.handle, Some(on_closed));
    }
  }
}
