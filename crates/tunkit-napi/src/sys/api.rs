//! A small safe interface over the raw Node-API declarations: values, conversions, errors, externals, zero-copy
//! ArrayBuffers and threadsafe functions. Every `unsafe` call of the binding is in this file.

use super::*;
use std::any::Any;
use std::ffi::CString;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::null_mut;
use std::sync::Arc;
use tunkit_core::ring::SlabGuard;

/// The JavaScript environment of the current call. Valid only on the thread and during the call it came from.
#[derive(Clone, Copy)]
pub struct Env(napi_env);

/// A JavaScript value handle, valid during the current call.
#[derive(Clone, Copy)]
pub struct Value(napi_value);

/// Why a binding function did not return a value.
#[derive(Debug)]
pub enum JsError {
  /// A core error: thrown as an `Error` with `code`, `errno` and `syscall`.
  Tun(tunkit_core::Error),
  /// A JavaScript exception is already pending; nothing more to throw.
  Pending,
  /// A Node-API call failed unexpectedly.
  Internal(String),
}

impl From<tunkit_core::Error> for JsError {
  fn from(e: tunkit_core::Error) -> Self {
    JsError::Tun(e)
  }
}

pub type JsResult<T> = Result<T, JsError>;

/// A wrong-type argument.
pub fn type_error(msg: impl Into<String>) -> JsError {
  JsError::Tun(tunkit_core::Error::new(
    tunkit_core::ErrorKind::InvalidArgument,
    msg,
  ))
}

fn check(env: napi_env, status: napi_status, what: &str) -> JsResult<()> {
  if status == NAPI_OK {
    return Ok(());
  }
  let mut pending = false;
  // SAFETY: env is the live environment of this call; `pending` is a valid out-pointer.
  unsafe { napi_is_exception_pending(env, &mut pending) };
  if pending || status == NAPI_PENDING_EXCEPTION {
    Err(JsError::Pending)
  } else {
    Err(JsError::Internal(format!(
      "{what} failed with napi_status {status}"
    )))
  }
}

/// The arguments of one call.
pub struct CallContext {
  pub env: Env,
  args: [napi_value; 8],
  argc: usize,
}

impl CallContext {
  /// Argument `i`, or `undefined` when it was not passed.
  pub fn arg(&self, i: usize) -> JsResult<Value> {
    if i < self.argc.min(8) {
      Ok(Value(self.args[i]))
    } else {
      self.env.undefined()
    }
  }
}

/// A binding function: gets the call's arguments, returns a value or throws.
pub type Callback = fn(&CallContext) -> JsResult<Value>;

extern "C" fn trampoline(env: napi_env, info: napi_callback_info) -> napi_value {
  let mut ctx = CallContext {
    env: Env(env),
    args: [null_mut(); 8],
    argc: 8,
  };
  let mut data: *mut c_void = null_mut();
  // SAFETY: env/info come from Node for this call; argv has room for `argc` (8) values.
  let status = unsafe {
    napi_get_cb_info(
      env,
      info,
      &mut ctx.argc,
      ctx.args.as_mut_ptr(),
      null_mut(),
      &mut data,
    )
  };
  if status != NAPI_OK {
    return null_mut();
  }
  // SAFETY: `data` is the `Callback` fn pointer `Env::function` registered for exactly this trampoline.
  let f: Callback = unsafe { std::mem::transmute::<*mut c_void, Callback>(data) };
  let result = catch_unwind(AssertUnwindSafe(|| f(&ctx)));
  let err = match result {
    Ok(Ok(v)) => return v.0,
    Ok(Err(e)) => e,
    Err(panic) => {
      let msg = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
      JsError::Internal(format!("tunkit internal error (panic): {msg}"))
    }
  };
  ctx.env.throw(err);
  null_mut()
}

impl Env {
  /// Throws `err` as a JavaScript exception (unless one is pending already).
  pub fn throw(self, err: JsError) {
    let (code, message, errno, syscall) = match err {
      JsError::Pending => return,
      JsError::Tun(e) => (e.code(), e.message().to_string(), e.errno(), e.syscall()),
      JsError::Internal(m) => ("ERR_TUN_INTERNAL", m, None, None),
    };
    let build = || -> JsResult<Value> {
      let mut out = null_mut();
      let (c, m) = (self.string(code)?, self.string(&message)?);
      // SAFETY: c and m are live string values of this env; out is a valid out-pointer.
      let status = unsafe { napi_create_error(self.0, c.0, m.0, &mut out) };
      check(self.0, status, "napi_create_error")?;
      let e = Value(out);
      if let Some(n) = errno {
        self.set(e, "errno", self.number(n as f64)?)?;
      }
      if let Some(s) = syscall {
        self.set(e, "syscall", self.string(s)?)?;
      }
      Ok(e)
    };
    if let Ok(e) = build() {
      // SAFETY: e is a live error value of this env.
      unsafe { napi_throw(self.0, e.0) };
    }
  }

  /// A JavaScript function that calls `f`.
  pub fn function(self, name: &str, f: Callback) -> JsResult<Value> {
    let mut out = null_mut();
    // SAFETY: name points to name.len() UTF-8 bytes; the data pointer is a plain fn pointer read back only by
    // `trampoline`, which is the callback registered here.
    let status = unsafe {
      napi_create_function(
        self.0,
        name.as_ptr().cast(),
        name.len(),
        Some(trampoline),
        f as *mut c_void,
        &mut out,
      )
    };
    check(self.0, status, "napi_create_function")?;
    Ok(Value(out))
  }

  pub fn undefined(self) -> JsResult<Value> {
    let mut out = null_mut();
    // SAFETY: valid env and out-pointer.
    let status = unsafe { napi_get_undefined(self.0, &mut out) };
    check(self.0, status, "napi_get_undefined")?;
    Ok(Value(out))
  }

  pub fn null(self) -> JsResult<Value> {
    let mut out = null_mut();
    // SAFETY: valid env and out-pointer.
    let status = unsafe { napi_get_null(self.0, &mut out) };
    check(self.0, status, "napi_get_null")?;
    Ok(Value(out))
  }

  pub fn boolean(self, b: bool) -> JsResult<Value> {
    let mut out = null_mut();
    // SAFETY: valid env and out-pointer.
    let status = unsafe { napi_get_boolean(self.0, b, &mut out) };
    check(self.0, status, "napi_get_boolean")?;
    Ok(Value(out))
  }

  pub fn number(self, n: f64) -> JsResult<Value> {
    let mut out = null_mut();
    // SAFETY: valid env and out-pointer.
    let status = unsafe { napi_create_double(self.0, n, &mut out) };
    check(self.0, status, "napi_create_double")?;
    Ok(Value(out))
  }

  pub fn string(self, s: &str) -> JsResult<Value> {
    let mut out = null_mut();
    // SAFETY: s points to s.len() valid UTF-8 bytes.
    let status = unsafe { napi_create_string_utf8(self.0, s.as_ptr().cast(), s.len(), &mut out) };
    check(self.0, status, "napi_create_string_utf8")?;
    Ok(Value(out))
  }

  pub fn object(self) -> JsResult<Value> {
    let mut out = null_mut();
    // SAFETY: valid env and out-pointer.
    let status = unsafe { napi_create_object(self.0, &mut out) };
    check(self.0, status, "napi_create_object")?;
    Ok(Value(out))
  }

  pub fn array(self, len: usize) -> JsResult<Value> {
    let mut out = null_mut();
    // SAFETY: valid env and out-pointer.
    let status = unsafe { napi_create_array_with_length(self.0, len, &mut out) };
    check(self.0, status, "napi_create_array_with_length")?;
    Ok(Value(out))
  }

  /// An array of the given values.
  pub fn array_of(self, items: &[Value]) -> JsResult<Value> {
    let arr = self.array(items.len())?;
    for (i, v) in items.iter().enumerate() {
      // SAFETY: arr and v are live values of this env.
      let status = unsafe { napi_set_element(self.0, arr.0, i as u32, v.0) };
      check(self.0, status, "napi_set_element")?;
    }
    Ok(arr)
  }

  pub fn set(self, obj: Value, key: &str, v: Value) -> JsResult<()> {
    let key = CString::new(key).map_err(|_| JsError::Internal("property name with NUL".into()))?;
    // SAFETY: obj and v are live values; key is NUL-terminated.
    let status = unsafe { napi_set_named_property(self.0, obj.0, key.as_ptr(), v.0) };
    check(self.0, status, "napi_set_named_property")
  }

  pub fn get(self, obj: Value, key: &str) -> JsResult<Value> {
    let key = CString::new(key).map_err(|_| JsError::Internal("property name with NUL".into()))?;
    let mut out = null_mut();
    // SAFETY: obj is a live value; key is NUL-terminated; out is a valid out-pointer.
    let status = unsafe { napi_get_named_property(self.0, obj.0, key.as_ptr(), &mut out) };
    check(self.0, status, "napi_get_named_property")?;
    Ok(Value(out))
  }

  pub fn type_of(self, v: Value) -> JsResult<napi_valuetype> {
    let mut t = 0;
    // SAFETY: v is a live value; t is a valid out-pointer.
    check(self.0, unsafe { napi_typeof(self.0, v.0, &mut t) }, "napi_typeof")?;
    Ok(t)
  }

  /// Whether `v` is `undefined` or `null`.
  pub fn is_nullish(self, v: Value) -> JsResult<bool> {
    Ok(matches!(self.type_of(v)?, NAPI_UNDEFINED | NAPI_NULL))
  }

  pub fn is_function(self, v: Value) -> JsResult<bool> {
    Ok(self.type_of(v)? == NAPI_FUNCTION)
  }

  pub fn is_object(self, v: Value) -> JsResult<bool> {
    Ok(self.type_of(v)? == NAPI_OBJECT)
  }

  pub fn to_string(self, v: Value, what: &str) -> JsResult<String> {
    if self.type_of(v)? != NAPI_STRING {
      return Err(type_error(format!("{what} must be a string")));
    }
    let mut len = 0usize;
    // SAFETY: v is a string; a null buffer asks for the length only.
    let status = unsafe { napi_get_value_string_utf8(self.0, v.0, null_mut(), 0, &mut len) };
    check(self.0, status, "napi_get_value_string_utf8")?;
    let mut buf = vec![0u8; len + 1];
    // SAFETY: buf has len + 1 bytes, room for the string and its NUL.
    let status =
      unsafe { napi_get_value_string_utf8(self.0, v.0, buf.as_mut_ptr().cast(), buf.len(), &mut len) };
    check(self.0, status, "napi_get_value_string_utf8")?;
    buf.truncate(len);
    String::from_utf8(buf).map_err(|_| type_error(format!("{what} is not valid UTF-8")))
  }

  pub fn to_f64(self, v: Value, what: &str) -> JsResult<f64> {
    if self.type_of(v)? != NAPI_NUMBER {
      return Err(type_error(format!("{what} must be a number")));
    }
    let mut n = 0.0;
    // SAFETY: v is a number; n is a valid out-pointer.
    let status = unsafe { napi_get_value_double(self.0, v.0, &mut n) };
    check(self.0, status, "napi_get_value_double")?;
    Ok(n)
  }

  /// A whole number in `min..=max`.
  pub fn to_int(self, v: Value, what: &str, min: u64, max: u64) -> JsResult<u64> {
    let n = self.to_f64(v, what)?;
    if n.fract() != 0.0 || n < min as f64 || n > max as f64 {
      return Err(type_error(format!(
        "{what} must be an integer in {min}..={max}, got {n}"
      )));
    }
    Ok(n as u64)
  }

  pub fn to_bool(self, v: Value, what: &str) -> JsResult<bool> {
    if self.type_of(v)? != NAPI_BOOLEAN {
      return Err(type_error(format!("{what} must be a boolean")));
    }
    let mut b = false;
    // SAFETY: v is a boolean; b is a valid out-pointer.
    let status = unsafe { napi_get_value_bool(self.0, v.0, &mut b) };
    check(self.0, status, "napi_get_value_bool")?;
    Ok(b)
  }

  pub fn is_array(self, v: Value) -> JsResult<bool> {
    let mut b = false;
    // SAFETY: v is a live value; b is a valid out-pointer.
    let status = unsafe { napi_is_array(self.0, v.0, &mut b) };
    check(self.0, status, "napi_is_array")?;
    Ok(b)
  }

  pub fn array_len(self, v: Value) -> JsResult<u32> {
    let mut n = 0;
    // SAFETY: v is an array (callers check); n is a valid out-pointer.
    let status = unsafe { napi_get_array_length(self.0, v.0, &mut n) };
    check(self.0, status, "napi_get_array_length")?;
    Ok(n)
  }

  pub fn element(self, v: Value, i: u32) -> JsResult<Value> {
    let mut out = null_mut();
    // SAFETY: v is a live object; out is a valid out-pointer.
    let status = unsafe { napi_get_element(self.0, v.0, i, &mut out) };
    check(self.0, status, "napi_get_element")?;
    Ok(Value(out))
  }

  /// The data and length of the typed array `v` of type `want`. One Node-API call on the per-packet path: a value
  /// that is not a typed array makes `napi_get_typedarray_info` return `napi_invalid_arg` without throwing.
  fn typed_array(self, v: Value, want: napi_typedarray_type, what: &str) -> JsResult<(*mut c_void, usize)> {
    let wrong = || {
      let expected = if want == NAPI_UINT8_ARRAY {
        "a Buffer or Uint8Array"
      } else {
        "a Uint32Array"
      };
      type_error(format!("{what} must be {expected}"))
    };
    let (mut kind, mut len, mut data, mut off) = (0, 0usize, null_mut(), 0usize);
    // SAFETY: v is a live value; every out-pointer is valid; the array buffer out-pointer may be null.
    let status =
      unsafe { napi_get_typedarray_info(self.0, v.0, &mut kind, &mut len, &mut data, null_mut(), &mut off) };
    if status == NAPI_INVALID_ARG {
      return Err(wrong());
    }
    check(self.0, status, "napi_get_typedarray_info")?;
    if kind != want {
      return Err(wrong());
    }
    Ok((data, len))
  }

  /// The bytes of a `Buffer`/`Uint8Array`, borrowed for the current call.
  pub fn bytes<'c>(self, _ctx: &'c CallContext, v: Value, what: &str) -> JsResult<&'c [u8]> {
    let (data, len) = self.typed_array(v, NAPI_UINT8_ARRAY, what)?;
    if len == 0 {
      return Ok(&[]);
    }
    // SAFETY: Node guarantees `data` points to `len` bytes of the array's backing store, which is not moved or freed
    // while the array is reachable; the array is an argument of the current call, which outlives 'c.
    Ok(unsafe { std::slice::from_raw_parts(data as *const u8, len) })
  }

  /// The length of the `Uint32Array` `v`.
  pub fn u32_len(self, v: Value, what: &str) -> JsResult<usize> {
    Ok(self.typed_array(v, NAPI_UINT32_ARRAY, what)?.1)
  }

  /// Stores `first` then `rest` at the start of the `Uint32Array` `v`, which must be long enough.
  pub fn fill_u32s(self, v: Value, what: &str, first: u32, rest: &[u32]) -> JsResult<()> {
    let (data, len) = self.typed_array(v, NAPI_UINT32_ARRAY, what)?;
    if len < rest.len() + 1 {
      return Err(type_error(format!("{what} must hold {} entries", rest.len() + 1)));
    }
    // Node guarantees `data` points to `len` 4-byte-aligned u32 elements of the array's backing store, alive while
    // the array (an argument of the current call) is.
    // SAFETY: we write `rest.len() + 1 <= len` elements there and keep no reference afterwards.
    unsafe {
      let out = data as *mut u32;
      out.write(first);
      std::ptr::copy_nonoverlapping(rest.as_ptr(), out.add(1), rest.len());
    }
    Ok(())
  }

  /// A JavaScript external value that owns `value`; dropped when the external is collected.
  pub fn external<T: Any + Send + Sync>(self, value: Arc<T>) -> JsResult<Value> {
    let boxed: Box<Arc<dyn Any + Send + Sync>> = Box::new(value);
    let raw = Box::into_raw(boxed);
    let mut out = null_mut();
    // SAFETY: raw is a leaked Box that `drop_external` takes back exactly once, when V8 collects the external.
    let status =
      unsafe { napi_create_external(self.0, raw.cast(), Some(drop_external), null_mut(), &mut out) };
    if let Err(e) = check(self.0, status, "napi_create_external") {
      // SAFETY: creation failed, so the finalizer will never run: take the box back here.
      drop(unsafe { Box::from_raw(raw) });
      return Err(e);
    }
    Ok(Value(out))
  }

  /// The value behind an external made by [`Env::external`], if it holds a `T`.
  pub fn unwrap_external<T: Any + Send + Sync>(self, v: Value, what: &str) -> JsResult<Arc<T>> {
    if self.type_of(v)? != NAPI_EXTERNAL {
      return Err(type_error(format!("{what} is not a tunkit handle")));
    }
    let mut data = null_mut();
    // SAFETY: v is an external; data is a valid out-pointer.
    let status = unsafe { napi_get_value_external(self.0, v.0, &mut data) };
    check(self.0, status, "napi_get_value_external")?;
    if data.is_null() {
      return Err(type_error(format!("{what} is not a tunkit handle")));
    }
    // SAFETY: every external this addon creates holds a `Box<Arc<dyn Any>>` (see `external`), alive until the
    // external is collected, which cannot happen while it is an argument of this call.
    let any: &Arc<dyn Any + Send + Sync> = unsafe { &*(data as *const Arc<dyn Any + Send + Sync>) };
    any
      .clone()
      .downcast::<T>()
      .map_err(|_| type_error(format!("{what} is the wrong kind of tunkit handle")))
  }

  /// An ArrayBuffer over the packets of `slab`, without copying. The slab returns to its pool when the
  /// ArrayBuffer is collected. V8 counts the ArrayBuffer's length as external memory by itself; the rest of the
  /// slab it keeps alive is reported with `napi_adjust_external_memory`, so collection comes in time.
  pub fn slab_arraybuffer(self, slab: SlabGuard) -> JsResult<Value> {
    let len = slab.len();
    let footprint = (slab.footprint() - len) as i64;
    let ptr = slab.as_ptr() as *mut c_void;
    let hint = Box::into_raw(Box::new(slab));
    let mut out = null_mut();
    let fin = Some(drop_slab as unsafe extern "C" fn(napi_env, *mut c_void, *mut c_void));
    // The slab in `hint` stays alive and unmoved (only the Box moves, not the Vec's heap buffer) until `drop_slab`.
    // SAFETY: ptr points to `len` bytes owned by that slab, freed only when V8 collects the ArrayBuffer.
    let status = unsafe { napi_create_external_arraybuffer(self.0, ptr, len, fin, hint.cast(), &mut out) };
    if let Err(e) = check(self.0, status, "napi_create_external_arraybuffer") {
      // SAFETY: creation failed, so the finalizer will never run.
      drop(unsafe { Box::from_raw(hint) });
      return Err(e);
    }
    if footprint > 0 {
      let mut total = 0;
      // SAFETY: valid env and out-pointer.
      unsafe { napi_adjust_external_memory(self.0, footprint, &mut total) };
    }
    Ok(Value(out))
  }

  /// Calls `f` with `args` and `this` undefined.
  pub fn call(self, f: Value, args: &[Value]) -> JsResult<Value> {
    let recv = self.undefined()?;
    let argv: Vec<napi_value> = args.iter().map(|a| a.0).collect();
    let mut out = null_mut();
    // SAFETY: f, recv and argv are live values of this env.
    let status = unsafe { napi_call_function(self.0, recv.0, f.0, argv.len(), argv.as_ptr(), &mut out) };
    check(self.0, status, "napi_call_function")?;
    Ok(Value(out))
  }
}

unsafe extern "C" fn drop_external(_env: napi_env, data: *mut c_void, _hint: *mut c_void) {
  // SAFETY: data is the Box leaked by `Env::external`; V8 calls this finalizer once.
  drop(unsafe { Box::from_raw(data as *mut Arc<dyn Any + Send + Sync>) });
}

unsafe extern "C" fn drop_slab(env: napi_env, _data: *mut c_void, hint: *mut c_void) {
  // SAFETY: hint is the Box leaked by `Env::slab_arraybuffer`; V8 calls this finalizer once.
  let slab = unsafe { Box::from_raw(hint as *mut SlabGuard) };
  let footprint = (slab.footprint() - slab.len()) as i64;
  drop(slab);
  if !env.is_null() && footprint > 0 {
    let mut total = 0;
    // SAFETY: env is the live environment running this finalizer.
    unsafe { napi_adjust_external_memory(env, -footprint, &mut total) };
  }
}

/// A JavaScript function callable from any thread with a small integer; the calls arrive in order on the
/// JavaScript thread. Created unreferenced: it does not keep the event loop alive unless [`Tsfn::set_ref`] says so.
pub struct Tsfn(napi_threadsafe_function);

// SAFETY: Node-API threadsafe functions are designed to be called from any thread; the handle is an opaque pointer.
unsafe impl Send for Tsfn {}
// SAFETY: as above; napi_call_threadsafe_function is thread-safe.
unsafe impl Sync for Tsfn {}

unsafe extern "C" fn tsfn_call_js(env: napi_env, func: napi_value, _ctx: *mut c_void, data: *mut c_void) {
  if env.is_null() || func.is_null() {
    return; // the environment is being torn down
  }
  let env = Env(env);
  let code = data as usize as f64;
  let _ = catch_unwind(AssertUnwindSafe(|| {
    if let Ok(n) = env.number(code) {
      if let Err(e) = env.call(Value(func), &[n]) {
        env.throw(e);
      }
    }
  }));
}

impl Tsfn {
  pub fn new(env: Env, func: Value, name: &str) -> JsResult<Tsfn> {
    let name = env.string(name)?;
    let mut out = null_mut();
    // SAFETY: func and name are live values; unlimited queue (0), one owning thread (the ring's owner); no finalizer.
    let status = unsafe {
      napi_create_threadsafe_function(
        env.0,
        func.0,
        null_mut(),
        name.0,
        0,
        1,
        null_mut(),
        None,
        null_mut(),
        Some(tsfn_call_js),
        &mut out,
      )
    };
    check(env.0, status, "napi_create_threadsafe_function")?;
    let t = Tsfn(out);
    t.set_ref(env, false);
    Ok(t)
  }

  /// Queues a call of the function with `code`. Never blocks; a call after teardown is dropped.
  pub fn call(&self, code: u32) {
    // SAFETY: self.0 is a live tsfn until `Drop` releases it; the data is a plain integer, not a pointer.
    unsafe { napi_call_threadsafe_function(self.0, code as usize as *mut c_void, NAPI_TSFN_NONBLOCKING) };
  }

  /// Whether the function keeps the event loop alive. Call on the JavaScript thread.
  pub fn set_ref(&self, env: Env, referenced: bool) {
    // SAFETY: env is the tsfn's own environment (callers are on its thread); self.0 is live.
    unsafe {
      if referenced {
        napi_ref_threadsafe_function(env.0, self.0);
      } else {
        napi_unref_threadsafe_function(env.0, self.0);
      }
    }
  }
}

impl Drop for Tsfn {
  fn drop(&mut self) {
    // SAFETY: releases the one reference taken at creation; no call follows (the owner drops it last).
    unsafe { napi_release_threadsafe_function(self.0, NAPI_TSFN_RELEASE) };
  }
}

/// Runs the module's `init` for `napi_register_module_v1`, throwing instead of unwinding on failure.
pub fn register(env: napi_env, exports: napi_value, init: fn(Env, Value) -> JsResult<Value>) -> napi_value {
  let env = Env(env);
  match catch_unwind(AssertUnwindSafe(|| init(env, Value(exports)))) {
    Ok(Ok(v)) => v.0,
    Ok(Err(e)) => {
      env.throw(e);
      null_mut()
    }
    Err(_) => {
      env.throw(JsError::Internal(
        "tunkit internal error (panic) while loading the addon".into(),
      ));
      null_mut()
    }
  }
}
