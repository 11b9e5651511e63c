//! A small safe interface over the raw Node-API declarations: values, conversions, errors, externals, zero-copy
//! ArrayBuffers and threadsafe functions. Every `unsafe` call of the binding is in this file.

use super::*;
use std::any::Any;
use std::ffi::CString;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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

  /// The data, length and ArrayBuffer of the typed array `v` of type `want`. One Node-API call on the per-packet
  /// path: a value that is not a typed array makes `napi_get_typedarray_info` return `napi_invalid_arg` without
  /// throwing. Runs no JavaScript. `what` names the value in the error, and is only called then.
  fn typed_array<W: Fn() -> String>(
    self,
    v: Value,
    want: napi_typedarray_type,
    what: W,
  ) -> JsResult<(*mut c_void, usize, Value)> {
    let wrong = || {
      let expected = if want == NAPI_UINT8_ARRAY {
        "a Buffer or Uint8Array"
      } else {
        "a Uint32Array"
      };
      type_error(format!("{} must be {expected}", what()))
    };
    let (mut kind, mut len, mut data, mut ab, mut off) = (0, 0usize, null_mut(), null_mut(), 0usize);
    // SAFETY: v is a live value; every out-pointer is valid.
    let status =
      unsafe { napi_get_typedarray_info(self.0, v.0, &mut kind, &mut len, &mut data, &mut ab, &mut off) };
    if status == NAPI_INVALID_ARG {
      return Err(wrong());
    }
    check(self.0, status, "napi_get_typedarray_info")?;
    if kind != want {
      return Err(wrong());
    }
    Ok((data, len, Value(ab)))
  }

  fn is_detached(self, ab: Value) -> JsResult<bool> {
    let mut b = false;
    // SAFETY: ab is a live ArrayBuffer value; b is a valid out-pointer.
    let status = unsafe { napi_is_detached_arraybuffer(self.0, ab.0, &mut b) };
    check(self.0, status, "napi_is_detached_arraybuffer")?;
    Ok(b)
  }

  /// The packets of a write: one `Buffer`/`Uint8Array`, or an array of at most `max` of them, borrowed for the
  /// current call. JavaScript can run while they are gathered (array getters, proxies, a patched
  /// `ArrayBuffer.prototype.resizable`) and could then detach, transfer or shrink a buffer already looked at; so
  /// every value is taken first, then every check that may run JavaScript is made, and only then are the pointers
  /// taken, with no JavaScript in between. Detached and resizable buffers are refused.
  pub fn packets(self, _ctx: &CallContext, arg: Value, max: usize) -> JsResult<Vec<&[u8]>> {
    let single = !self.is_array(arg)?;
    let values = if !single {
      let n = self.array_len(arg)? as usize;
      if n > max {
        return Err(type_error(format!(
          "a write takes at most {max} packets, got an array of {n}"
        )));
      }
      (0..n as u32)
        .map(|i| self.element(arg, i))
        .collect::<JsResult<Vec<_>>>()?
    } else {
      vec![arg]
    };
    // Only called to build an error message.
    let name = |i: usize| {
      if single {
        "packet".to_string()
      } else {
        format!("packet {i}")
      }
    };
    // Pass 1: types, and whether each buffer is resizable (a property read: JavaScript may run). Consecutive
    // packets usually share a buffer (a batch, Node's Buffer pool); it is looked at once.
    let mut ran_js = false;
    let mut last_base: *const u8 = std::ptr::null();
    let mut found = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
      let (data, len, ab) = self.typed_array(*v, NAPI_UINT8_ARRAY, || name(i))?;
      found.push((data, len));
      let base = self.arraybuffer_base(ab)?;
      if base.is_null() || base != last_base {
        ran_js = true;
        let r = self.get(ab, "resizable")?;
        if self.type_of(r)? == NAPI_BOOLEAN && self.to_bool(r, "resizable")? {
          return Err(type_error(format!(
            "{} is a view of a resizable ArrayBuffer, which tunkit does not take (copy it into a Buffer)",
            name(i)
          )));
        }
        last_base = base;
      }
    }
    // Pass 2: the pointers, with no JavaScript in between (taken again if any may have run since pass 1).
    let mut out = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
      let (data, len) = if ran_js {
        let (d, l, _) = self.typed_array(*v, NAPI_UINT8_ARRAY, || name(i))?;
        (d, l)
      } else {
        found[i]
      };
      if len == 0 {
        let (_, _, ab) = self.typed_array(*v, NAPI_UINT8_ARRAY, || name(i))?;
        if self.is_detached(ab)? {
          return Err(type_error(format!(
            "{} is a view of a detached ArrayBuffer",
            name(i)
          )));
        }
        out.push(&[][..]);
        continue;
      }
      // Node guarantees `data` points to `len` bytes of the array's backing store; it is neither moved nor freed
      // while the array is reachable (it is held by this call's arguments, directly or through the array, whose
      // values this call's handle scope keeps), and no JavaScript runs from here until the call returns.
      // SAFETY: so nothing can detach or shrink the buffer while the slice lives; the slice is only read.
      out.push(unsafe { std::slice::from_raw_parts(data as *const u8, len) });
    }
    Ok(out)
  }

  /// The address of the first byte of the ArrayBuffer `ab` (null when it has none, e.g. empty or detached).
  fn arraybuffer_base(self, ab: Value) -> JsResult<*const u8> {
    let (mut data, mut len) = (null_mut(), 0usize);
    // SAFETY: ab is a live ArrayBuffer (from napi_get_typedarray_info); both out-pointers are valid.
    let status = unsafe { napi_get_arraybuffer_info(self.0, ab.0, &mut data, &mut len) };
    check(self.0, status, "napi_get_arraybuffer_info")?;
    Ok(data as *const u8)
  }

  /// The length of the `Uint32Array` `v`.
  pub fn u32_len(self, v: Value, what: &str) -> JsResult<usize> {
    Ok(self.typed_array(v, NAPI_UINT32_ARRAY, || what.to_string())?.1)
  }

  /// Stores `first` then `rest` at the start of the `Uint32Array` `v`, which must be long enough.
  pub fn fill_u32s(self, v: Value, what: &str, first: u32, rest: &[u32]) -> JsResult<()> {
    let (data, len, _) = self.typed_array(v, NAPI_UINT32_ARRAY, || what.to_string())?;
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

  /// A JavaScript external value that owns `value`; dropped when the external is collected. It is type-tagged as
  /// tunkit's, so [`Env::unwrap_external`] can tell it from any other external.
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
    // SAFETY: out is the live external just made; the tag is a static that outlives the call.
    let status = unsafe { napi_type_tag_object(self.0, out, &HANDLE_TAG) };
    // On failure the external is dropped by its finalizer in due course.
    check(self.0, status, "napi_type_tag_object")?;
    Ok(Value(out))
  }

  /// The value behind an external made by [`Env::external`], if it holds a `T`. Any other value, a foreign external
  /// included, is a typed error.
  pub fn unwrap_external<T: Any + Send + Sync>(self, v: Value, what: &str) -> JsResult<Arc<T>> {
    let not_ours = || type_error(format!("{what} is not a tunkit handle"));
    if self.type_of(v)? != NAPI_EXTERNAL {
      return Err(not_ours());
    }
    let mut tagged = false;
    // SAFETY: v is a live external; the tag is a static; tagged is a valid out-pointer.
    let status = unsafe { napi_check_object_type_tag(self.0, v.0, &HANDLE_TAG, &mut tagged) };
    check(self.0, status, "napi_check_object_type_tag")?;
    if !tagged {
      return Err(not_ours());
    }
    let mut data = null_mut();
    // SAFETY: v is an external; data is a valid out-pointer.
    let status = unsafe { napi_get_value_external(self.0, v.0, &mut data) };
    check(self.0, status, "napi_get_value_external")?;
    if data.is_null() {
      return Err(not_ours());
    }
    // The tag says this external was made by `external` (only this addon knows the tag), so it holds a
    // `Box<Arc<dyn Any>>`, alive until the external is collected.
    // SAFETY: that cannot happen while it is an argument of this call, so the reference is valid for it.
    let any: &Arc<dyn Any + Send + Sync> = unsafe { &*(data as *const Arc<dyn Any + Send + Sync>) };
    any
      .clone()
      .downcast::<T>()
      .map_err(|_| type_error(format!("{what} is the wrong kind of tunkit handle")))
  }

  /// Runs `f` once when this environment is torn down (a worker exiting or terminated, the main thread's end),
  /// unless the returned hook is dropped first. Registered after the threadsafe function it protects, it runs
  /// before Node's own cleanup of that function (hooks run in reverse order): the place to stop native threads.
  pub fn on_teardown(self, f: Box<dyn FnOnce() + Send>) -> JsResult<EnvHook> {
    let data = Box::into_raw(Box::new(HookData {
      f: Mutex::new(Some(f)),
      ran: AtomicBool::new(false),
    }));
    // SAFETY: data is a leaked Box that stays alive until the hook is removed or has run (see EnvHook's Drop).
    let status = unsafe { napi_add_env_cleanup_hook(self.0, Some(run_hook), data.cast()) };
    if let Err(e) = check(self.0, status, "napi_add_env_cleanup_hook") {
      // SAFETY: registration failed: nothing else knows the pointer.
      drop(unsafe { Box::from_raw(data) });
      return Err(e);
    }
    Ok(EnvHook {
      env: self.0,
      data,
      thread: std::thread::current().id(),
    })
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

  /// A Node `Buffer` holding a copy of `data`.
  pub fn buffer_copy(self, data: &[u8]) -> JsResult<Value> {
    let mut out = null_mut();
    let (len, src) = (data.len(), data.as_ptr().cast());
    // SAFETY: src points to len readable bytes for the call; Node copies them; the result-data pointer may be null.
    let status = unsafe { napi_create_buffer_copy(self.0, len, src, null_mut(), &mut out) };
    check(self.0, status, "napi_create_buffer_copy")?;
    Ok(Value(out))
  }

  /// Detaches the ArrayBuffer `ab` (one made by [`Env::slab_arraybuffer`]): its views become empty and its memory
  /// goes back to the pool as soon as Node runs the finalizer, without waiting for a garbage collection. A value
  /// that is not a detachable ArrayBuffer is a typed error.
  pub fn detach(self, ab: Value, what: &str) -> JsResult<()> {
    let mut is_ab = false;
    // SAFETY: ab is a live value; is_ab is a valid out-pointer.
    let status = unsafe { napi_is_arraybuffer(self.0, ab.0, &mut is_ab) };
    check(self.0, status, "napi_is_arraybuffer")?;
    if !is_ab {
      return Err(type_error(format!("{what} must be an ArrayBuffer")));
    }
    // SAFETY: ab is a live ArrayBuffer; V8 refuses (napi_detachable_arraybuffer_expected) one it cannot detach.
    let status = unsafe { napi_detach_arraybuffer(self.0, ab.0) };
    if status != NAPI_OK {
      check(self.0, status, "napi_detach_arraybuffer")?;
    }
    Ok(())
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
  let handle = unsafe { Box::from_raw(data as *mut Arc<dyn Any + Send + Sync>) };
  // Dropping a handle closes rings and joins threads; no panic may cross into Node.
  let _ = catch_unwind(AssertUnwindSafe(move || drop(handle)));
}

unsafe extern "C" fn drop_slab(env: napi_env, _data: *mut c_void, hint: *mut c_void) {
  // SAFETY: hint is the Box leaked by `Env::slab_arraybuffer`; V8 calls this finalizer once.
  let slab = unsafe { Box::from_raw(hint as *mut SlabGuard) };
  let footprint = (slab.footprint() - slab.len()) as i64;
  let _ = catch_unwind(AssertUnwindSafe(move || drop(slab)));
  if !env.is_null() && footprint > 0 {
    let mut total = 0;
    // SAFETY: env is the live environment running this finalizer.
    unsafe { napi_adjust_external_memory(env, -footprint, &mut total) };
  }
}

/// The tag of every external this addon hands to JavaScript (`napi_type_tag_object`): a random 128-bit value.
static HANDLE_TAG: napi_type_tag = napi_type_tag {
  lower: 0x7475_6e6b_6974_b3c1,
  upper: 0x9e4d_52a7_0f61_c8d5,
};

struct HookData {
  f: Mutex<Option<Box<dyn FnOnce() + Send>>>,
  ran: AtomicBool,
}

unsafe extern "C" fn run_hook(arg: *mut c_void) {
  // SAFETY: arg is the HookData registered by `on_teardown`, kept alive until the hook ran or was removed.
  let d = unsafe { &*(arg as *const HookData) };
  d.ran.store(true, Ordering::SeqCst);
  let f = d.f.lock().unwrap_or_else(|e| e.into_inner()).take();
  if let Some(f) = f {
    // No panic may cross into Node.
    let _ = catch_unwind(AssertUnwindSafe(f));
  }
}

/// A teardown action registered by [`Env::on_teardown`]. Dropping it cancels the action.
pub struct EnvHook {
  env: napi_env,
  data: *mut HookData,
  thread: std::thread::ThreadId,
}

// SAFETY: the raw pointers are only used in Drop, which touches Node-API only on the environment's own thread
// (checked) and otherwise only the HookData's own Mutex/atomic.
unsafe impl Send for EnvHook {}
// SAFETY: as above; no method takes &self.
unsafe impl Sync for EnvHook {}

impl Drop for EnvHook {
  fn drop(&mut self) {
    // SAFETY: data stays alive until this drop frees it (or leaks it, below).
    let d = unsafe { &*self.data };
    drop(d.f.lock().unwrap_or_else(|e| e.into_inner()).take());
    if d.ran.load(Ordering::SeqCst) {
      // Node ran the hook and forgot it.
      // SAFETY: nothing refers to data any more.
      drop(unsafe { Box::from_raw(self.data) });
    } else if std::thread::current().id() == self.thread {
      // SAFETY: on the environment's thread, before its teardown: the hook is still registered with exactly this
      // function and argument; once removed nothing refers to data.
      unsafe {
        napi_remove_env_cleanup_hook(self.env, Some(run_hook), self.data.cast());
        drop(Box::from_raw(self.data));
      }
    }
    // Otherwise (another thread): leave the emptied HookData registered; the hook finds nothing to do.
  }
}

/// A JavaScript function callable from any thread with a small integer; the calls arrive in order on the
/// JavaScript thread. Created unreferenced: it does not keep the event loop alive unless [`Tsfn::set_ref`] says so.
/// Once released ([`Tsfn::release`], drop, or Node closing it at teardown) every call is a no-op: the handle is
/// never touched again, so a native thread outliving the environment cannot reach freed memory.
pub struct Tsfn(Mutex<Option<RawTsfn>>);

struct RawTsfn(napi_threadsafe_function);
// SAFETY: Node-API threadsafe functions are designed to be called from any thread; the handle is an opaque pointer.
unsafe impl Send for RawTsfn {}

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
    let t = Tsfn(Mutex::new(Some(RawTsfn(out))));
    t.set_ref(env, false);
    Ok(t)
  }

  fn raw(&self) -> std::sync::MutexGuard<'_, Option<RawTsfn>> {
    self.0.lock().unwrap_or_else(|e| e.into_inner())
  }

  /// Queues a call of the function with `code`. Never blocks; a no-op once released or closing.
  pub fn call(&self, code: u32) {
    let mut raw = self.raw();
    if let Some(t) = raw.as_ref() {
      // SAFETY: t is live: it is only released under this lock, which we hold; the data is a plain integer.
      let status =
        unsafe { napi_call_threadsafe_function(t.0, code as usize as *mut c_void, NAPI_TSFN_NONBLOCKING) };
      if status == NAPI_CLOSING {
        // Node is tearing the function down and has dropped our reference with this call: never touch it again.
        *raw = None;
      }
    }
  }

  /// Whether the function keeps the event loop alive. Call on the JavaScript thread.
  pub fn set_ref(&self, env: Env, referenced: bool) {
    if let Some(t) = self.raw().as_ref() {
      // SAFETY: env is the tsfn's own environment (callers are on its thread); t is live (held under the lock).
      unsafe {
        if referenced {
          napi_ref_threadsafe_function(env.0, t.0);
        } else {
          napi_unref_threadsafe_function(env.0, t.0);
        }
      }
    }
  }

  /// Releases the function (idempotent). Every later call is a no-op.
  pub fn release(&self) {
    if let Some(t) = self.raw().take() {
      // SAFETY: releases the one reference taken at creation, once (the handle is gone from the cell).
      unsafe { napi_release_threadsafe_function(t.0, NAPI_TSFN_RELEASE) };
    }
  }
}

impl Drop for Tsfn {
  fn drop(&mut self) {
    self.release();
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
