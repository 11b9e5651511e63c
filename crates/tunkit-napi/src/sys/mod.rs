//! Node-API, declared by hand from `node_api.h` / `js_native_api.h` (Node-API version 8, which Node 20, 22 and 24 provide).
//! Only the functions the binding calls are here. [`api`] wraps them in a small safe interface; no other module of
//! the binding touches a raw pointer.
//!
//! Linking: on Linux and macOS the symbols stay undefined in the `.node` file and resolve against the `node`
//! executable when it is loaded (macOS needs `-undefined dynamic_lookup`, see `.cargo/config.toml`). On Windows
//! they are looked up at run time in the host process (see `windows.rs`).

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_void};

pub mod api;

pub type napi_env = *mut c_void;
pub type napi_value = *mut c_void;
pub type napi_callback_info = *mut c_void;
pub type napi_threadsafe_function = *mut c_void;
pub type napi_status = i32;
pub type napi_valuetype = i32;
pub type napi_typedarray_type = i32;

pub const NAPI_OK: napi_status = 0;
pub const NAPI_INVALID_ARG: napi_status = 1;
pub const NAPI_PENDING_EXCEPTION: napi_status = 10;
pub const NAPI_CLOSING: napi_status = 16;

pub const NAPI_UNDEFINED: napi_valuetype = 0;
pub const NAPI_NULL: napi_valuetype = 1;
pub const NAPI_BOOLEAN: napi_valuetype = 2;
pub const NAPI_NUMBER: napi_valuetype = 3;
pub const NAPI_STRING: napi_valuetype = 4;
pub const NAPI_OBJECT: napi_valuetype = 6;
pub const NAPI_FUNCTION: napi_valuetype = 7;
pub const NAPI_EXTERNAL: napi_valuetype = 8;

pub const NAPI_UINT8_ARRAY: napi_typedarray_type = 1;
pub const NAPI_UINT32_ARRAY: napi_typedarray_type = 6;

pub const NAPI_TSFN_NONBLOCKING: i32 = 0;
pub const NAPI_TSFN_RELEASE: i32 = 0;

pub type napi_callback = Option<unsafe extern "C" fn(napi_env, napi_callback_info) -> napi_value>;
pub type napi_finalize = Option<unsafe extern "C" fn(napi_env, *mut c_void, *mut c_void)>;
pub type napi_cleanup_hook = Option<unsafe extern "C" fn(*mut c_void)>;
/// `napi_type_tag`: 128 bits that mark a JavaScript object or external as made by this addon.
#[repr(C)]
pub struct napi_type_tag {
  pub lower: u64,
  pub upper: u64,
}
pub type napi_threadsafe_function_call_js =
  Option<unsafe extern "C" fn(napi_env, napi_value, *mut c_void, *mut c_void)>;

/// Declares the Node-API functions once; `link.rs` (Unix) or `windows.rs` turns the list into callable items.
macro_rules! node_api {
  ($( fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> napi_status; )*) => {
    #[cfg(not(windows))]
    extern "C" {
      $( pub fn $name($($arg: $ty),*) -> napi_status; )*
    }
    #[cfg(windows)]
    windows_node_api! { $( fn $name($($arg: $ty),*) -> napi_status; )* }
  };
}

#[cfg(windows)]
#[macro_use]
mod windows;

node_api! {
  fn napi_create_function(env: napi_env, name: *const c_char, len: usize, cb: napi_callback, data: *mut c_void, result: *mut napi_value) -> napi_status;
  fn napi_get_cb_info(env: napi_env, info: napi_callback_info, argc: *mut usize, argv: *mut napi_value, this: *mut napi_value, data: *mut *mut c_void) -> napi_status;
  fn napi_set_named_property(env: napi_env, object: napi_value, name: *const c_char, value: napi_value) -> napi_status;
  fn napi_get_named_property(env: napi_env, object: napi_value, name: *const c_char, result: *mut napi_value) -> napi_status;
  fn napi_get_undefined(env: napi_env, result: *mut napi_value) -> napi_status;
  fn napi_get_null(env: napi_env, result: *mut napi_value) -> napi_status;
  fn napi_get_boolean(env: napi_env, value: bool, result: *mut napi_value) -> napi_status;
  fn napi_get_value_bool(env: napi_env, value: napi_value, result: *mut bool) -> napi_status;
  fn napi_create_double(env: napi_env, value: f64, result: *mut napi_value) -> napi_status;
  fn napi_get_value_double(env: napi_env, value: napi_value, result: *mut f64) -> napi_status;
  fn napi_create_string_utf8(env: napi_env, s: *const c_char, len: usize, result: *mut napi_value) -> napi_status;
  fn napi_get_value_string_utf8(env: napi_env, value: napi_value, buf: *mut c_char, size: usize, result: *mut usize) -> napi_status;
  fn napi_create_object(env: napi_env, result: *mut napi_value) -> napi_status;
  fn napi_create_array_with_length(env: napi_env, len: usize, result: *mut napi_value) -> napi_status;
  fn napi_set_element(env: napi_env, object: napi_value, index: u32, value: napi_value) -> napi_status;
  fn napi_get_element(env: napi_env, object: napi_value, index: u32, result: *mut napi_value) -> napi_status;
  fn napi_get_array_length(env: napi_env, value: napi_value, result: *mut u32) -> napi_status;
  fn napi_is_array(env: napi_env, value: napi_value, result: *mut bool) -> napi_status;
  fn napi_typeof(env: napi_env, value: napi_value, result: *mut napi_valuetype) -> napi_status;
  fn napi_create_error(env: napi_env, code: napi_value, msg: napi_value, result: *mut napi_value) -> napi_status;
  fn napi_throw(env: napi_env, error: napi_value) -> napi_status;
  fn napi_is_exception_pending(env: napi_env, result: *mut bool) -> napi_status;
  fn napi_create_external(env: napi_env, data: *mut c_void, fin: napi_finalize, hint: *mut c_void, result: *mut napi_value) -> napi_status;
  fn napi_get_value_external(env: napi_env, value: napi_value, result: *mut *mut c_void) -> napi_status;
  fn napi_create_external_arraybuffer(env: napi_env, data: *mut c_void, len: usize, fin: napi_finalize, hint: *mut c_void, result: *mut napi_value) -> napi_status;
  fn napi_get_typedarray_info(env: napi_env, value: napi_value, kind: *mut napi_typedarray_type, len: *mut usize, data: *mut *mut c_void, ab: *mut napi_value, offset: *mut usize) -> napi_status;
  fn napi_adjust_external_memory(env: napi_env, change: i64, result: *mut i64) -> napi_status;
  fn napi_create_threadsafe_function(env: napi_env, func: napi_value, resource: napi_value, name: napi_value, max_queue: usize, threads: usize, fin_data: *mut c_void, fin: napi_finalize, context: *mut c_void, call_js: napi_threadsafe_function_call_js, result: *mut napi_threadsafe_function) -> napi_status;
  fn napi_call_threadsafe_function(func: napi_threadsafe_function, data: *mut c_void, mode: i32) -> napi_status;
  fn napi_release_threadsafe_function(func: napi_threadsafe_function, mode: i32) -> napi_status;
  fn napi_ref_threadsafe_function(env: napi_env, func: napi_threadsafe_function) -> napi_status;
  fn napi_unref_threadsafe_function(env: napi_env, func: napi_threadsafe_function) -> napi_status;
  fn napi_add_env_cleanup_hook(env: napi_env, fun: napi_cleanup_hook, arg: *mut c_void) -> napi_status;
  fn napi_remove_env_cleanup_hook(env: napi_env, fun: napi_cleanup_hook, arg: *mut c_void) -> napi_status;
  fn napi_type_tag_object(env: napi_env, value: napi_value, tag: *const napi_type_tag) -> napi_status;
  fn napi_check_object_type_tag(env: napi_env, value: napi_value, tag: *const napi_type_tag, result: *mut bool) -> napi_status;
  fn napi_get_arraybuffer_info(env: napi_env, value: napi_value, data: *mut *mut c_void, len: *mut usize) -> napi_status;
  fn napi_create_buffer_copy(env: napi_env, len: usize, data: *const c_void, result_data: *mut *mut c_void, result: *mut napi_value) -> napi_status;
  fn napi_detach_arraybuffer(env: napi_env, value: napi_value) -> napi_status;
  fn napi_is_arraybuffer(env: napi_env, value: napi_value, result: *mut bool) -> napi_status;
  fn napi_is_detached_arraybuffer(env: napi_env, value: napi_value, result: *mut bool) -> napi_status;
  fn napi_call_function(env: napi_env, recv: napi_value, func: napi_value, argc: usize, argv: *const napi_value, result: *mut napi_value) -> napi_status;
}
