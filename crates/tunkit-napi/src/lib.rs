//! The Node-API binding of tunkit: thin glue between JavaScript and `tunkit-core`. No networking logic lives here.
//! The JavaScript side (`src/native.ts`) sees plain functions over opaque handles; the TypeScript facade builds
//! the public classes on top.

mod convert;
mod device;
mod events;
mod relay;
mod rules;
mod stack;
mod sys;

use sys::api::{Callback, Env, JsResult, Value};

/// Every function the addon exports.
const EXPORTS: &[(&str, Callback)] = &[
  ("createDevice", device::create_device),
  ("createMemoryPair", device::create_memory_pair),
  ("fromFd", device::from_fd),
  ("deviceInfo", device::device_info),
  ("link", device::link),
  ("setMtu", device::set_mtu),
  ("setUp", device::set_up),
  ("setTxQueueLength", device::set_tx_queue_len),
  ("setMac", device::set_mac),
  ("setPersist", device::set_persist),
  ("addAddress", device::add_address),
  ("removeAddress", device::remove_address),
  ("addresses", device::addresses),
  ("addRoute", device::add_route),
  ("removeRoute", device::remove_route),
  ("routes", device::routes),
  ("addRule", rules::add_rule),
  ("removeRule", rules::remove_rule),
  ("rules", rules::rules),
  ("closeDevice", device::close_device),
  ("openQueue", device::open_queue),
  ("pull", device::pull),
  ("send", device::send),
  ("releaseBatch", device::release_batch),
  ("setRef", device::set_ref),
  ("queueStats", device::queue_stats),
  ("takeWriteError", device::take_write_error),
  ("takeNotices", device::take_notices),
  ("closeQueue", device::close_queue),
  ("detachQueue", device::detach_queue),
  ("attachQueue", device::attach_queue),
  ("subscribeEvents", events::subscribe),
  ("takeEvents", events::take),
  ("setEventsRef", events::set_ref),
  ("closeEvents", events::close),
  ("stackCreate", stack::create),
  ("stackLookup", stack::lookup),
  ("stackRelease", stack::release),
  ("stackTakeDatagrams", stack::take_datagrams),
  ("stackSendUdp", stack::send_udp),
  ("stackRefuseUdp", stack::refuse_udp),
  ("stackTakeRequests", stack::take_requests),
  ("stackDecide", stack::decide),
  ("stackCloseUdp", stack::close_udp),
  ("stackTick", stack::tick),
  ("stackStats", stack::stats),
  ("stackSetRef", stack::set_ref),
  ("stackClose", stack::close),
  ("relayCreate", relay::create),
  ("relayAdd", relay::add),
  ("relayCancel", relay::cancel),
  ("relayTake", relay::take),
  ("relaySetRef", relay::set_ref),
  ("relayClose", relay::close),
];

fn init(env: Env, exports: Value) -> JsResult<Value> {
  for (name, f) in EXPORTS {
    env.set(exports, name, env.function(name, *f)?)?;
  }
  Ok(exports)
}

/// The module entry point Node looks up when it loads the `.node` file.
#[no_mangle]
pub extern "C" fn napi_register_module_v1(env: sys::napi_env, exports: sys::napi_value) -> sys::napi_value {
  sys::api::register(env, exports, init)
}
