//! The stack's relay fast path as JavaScript drives it (`stack.relay(conn, up)`): a `tunkit_core` relay thread
//! per stack that moves the bytes of socket pairs with `splice(2)`. JavaScript hands over the descriptors of two
//! paused, drained sockets (`relayAdd`), is told when pairs end (`onEvent(1)`, then `relayTake`), and can end a
//! pair synchronously before it destroys a socket (`relayCancel`). Linux only; elsewhere `relayCreate` throws
//! `ERR_TUN_UNSUPPORTED` and the TypeScript side falls back to `pipeline`.

use crate::sys::api::{CallContext, JsResult, Value};

#[cfg(target_os = "linux")]
mod imp {
  use super::*;
  use crate::convert::field;
  use crate::sys::api::{type_error, Env, EnvHook, Tsfn};
  use std::sync::Arc;
  use std::time::Duration;
  use tunkit_core::platform::linux::relay::{PairOptions, Relay, RelayEnd};

  /// A relay as JavaScript holds it.
  struct RelayHandle {
    relay: Arc<Relay>,
    tsfn: Arc<Tsfn>,
    /// Stops the relay thread and releases the tsfn if the environment goes first.
    _teardown: EnvHook,
  }

  impl Drop for RelayHandle {
    fn drop(&mut self) {
      self.relay.stop();
      self.tsfn.release();
    }
  }

  fn handle(cx: &CallContext) -> JsResult<Arc<RelayHandle>> {
    cx.env.unwrap_external::<RelayHandle>(cx.arg(0)?, "relay")
  }

  fn id_of(env: Env, v: Value) -> JsResult<u64> {
    env.to_int(v, "relay id", 1, (1u64 << 53) - 1)
  }

  /// `relayCreate(onEvent, maxPairs)`: a relay thread; `onEvent(1)` says ended pairs wait for `relayTake`.
  pub fn create(cx: &CallContext) -> JsResult<Value> {
    let env = cx.env;
    let on_event = cx.arg(0)?;
    if !env.is_function(on_event)? {
      return Err(type_error("onEvent must be a function"));
    }
    let max = env.to_int(cx.arg(1)?, "maxPairs", 1, 1 << 20)? as usize;
    let tsfn = Arc::new(Tsfn::new(env, on_event, "tunkit-relay")?);
    let t = tsfn.clone();
    let relay = Arc::new(Relay::new(max, Box::new(move || t.call(1)))?);
    let (r, t) = (relay.clone(), tsfn.clone());
    let teardown = env.on_teardown(Box::new(move || {
      r.stop();
      t.release();
    }))?;
    env.external(Arc::new(RelayHandle {
      relay,
      tsfn,
      _teardown: teardown,
    }))
  }

  /// `relayAdd(relay, fdA, fdB, options)`: starts relaying between the sockets of descriptors `fdA` (the client's
  /// connection) and `fdB` (the upstream); `options`: `{ idleMs?, aWriteClosed?, bWriteClosed? }`. Returns the
  /// pair's id.
  pub fn add(cx: &CallContext) -> JsResult<Value> {
    let env = cx.env;
    let h = handle(cx)?;
    let a = env.to_int(cx.arg(1)?, "fd", 0, i32::MAX as u64)? as i32;
    let b = env.to_int(cx.arg(2)?, "fd", 0, i32::MAX as u64)? as i32;
    let o = cx.arg(3)?;
    let mut opts = PairOptions::default();
    if !env.is_nullish(o)? {
      if !env.is_object(o)? {
        return Err(type_error("relay options must be an object"));
      }
      if let Some(v) = field(env, o, "idleMs")? {
        opts.idle = Some(Duration::from_millis(env.to_int(v, "idleMs", 1, 86_400_000)?));
      }
      if let Some(v) = field(env, o, "aWriteClosed")? {
        opts.a_write_closed = env.to_bool(v, "aWriteClosed")?;
      }
      if let Some(v) = field(env, o, "bWriteClosed")? {
        opts.b_write_closed = env.to_bool(v, "bWriteClosed")?;
      }
    }
    let id = h.relay.add(a, b, opts)?;
    env.number(id as f64)
  }

  /// `relayCancel(relay, id)`: ends the pair now (the relay no longer touches its sockets when this returns) and
  /// returns `[sent, received]`, or `null` when it had ended already (its record comes from `relayTake`).
  pub fn cancel(cx: &CallContext) -> JsResult<Value> {
    let env = cx.env;
    let h = handle(cx)?;
    match h.relay.cancel(id_of(env, cx.arg(1)?)?) {
      None => env.null(),
      Some(e) => env.array_of(&[env.number(e.sent as f64)?, env.number(e.received as f64)?]),
    }
  }

  fn push_end(env: Env, out: &mut Vec<Value>, e: &RelayEnd) -> JsResult<()> {
    out.push(env.number(e.id as f64)?);
    out.push(env.number(e.sent as f64)?);
    out.push(env.number(e.received as f64)?);
    out.push(env.string(e.reason.as_str())?);
    out.push(env.number(e.errno as f64)?);
    Ok(())
  }

  /// `relayTake(relay)`: the pairs that ended, flat: `[id, sent, received, reason, errno, ...]`, or `null`.
  pub fn take(cx: &CallContext) -> JsResult<Value> {
    let env = cx.env;
    let h = handle(cx)?;
    let ended = h.relay.take_ended();
    if ended.is_empty() {
      return env.null();
    }
    let mut out = Vec::with_capacity(ended.len() * 5);
    for e in &ended {
      push_end(env, &mut out, e)?;
    }
    env.array_of(&out)
  }

  /// `relaySetRef(relay, bool)`: whether pairs in flight keep the process alive.
  pub fn set_ref(cx: &CallContext) -> JsResult<Value> {
    let h = handle(cx)?;
    let r = cx.env.to_bool(cx.arg(1)?, "ref")?;
    h.tsfn.set_ref(cx.env, r);
    cx.env.undefined()
  }

  /// `relayClose(relay)`: stops the thread; pairs still relayed end `'cancelled'` (see `relayTake`). Idempotent.
  pub fn close(cx: &CallContext) -> JsResult<Value> {
    let h = handle(cx)?;
    h.relay.stop();
    h.tsfn.set_ref(cx.env, false);
    cx.env.undefined()
  }
}

#[cfg(not(target_os = "linux"))]
mod imp {
  use super::*;
  macro_rules! unsupported {
    ($($name:ident),*) => {$(
      pub fn $name(_cx: &CallContext) -> JsResult<Value> {
        Err(tunkit_core::Error::unsupported("relaying sockets natively (splice)").into())
      }
    )*};
  }
  unsupported!(add, cancel, close, create, set_ref, take);
}

pub use imp::{add, cancel, close, create, set_ref, take};
