//! Link events: a thread per subscription blocks in the backend's `EventSource::next` and hands batches of events
//! to JavaScript, which drains them with `takeEvents`.
//!
//! Nothing grows without bound while JavaScript does not take the events: the queue keeps the newest
//! [`EVENTS_CAP`] events (older ones are dropped and counted, and `takeEvents` reports the count first, as an
//! `overflow` event), and the thread queues at most one "events are waiting" call on the threadsafe function until
//! JavaScript takes them.

use crate::convert;
use crate::sys::api::{type_error, CallContext, EnvHook, JsResult, Tsfn, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use tunkit_core::backend::{EventSource, LinkEvent};
use tunkit_core::{Error, ErrorKind};

/// How many events a subscription keeps for JavaScript; beyond that the oldest are dropped and counted.
pub const EVENTS_CAP: usize = 1024;

struct State {
  events: VecDeque<LinkEvent>,
  /// Events dropped from the front of `events` since the last `takeEvents`.
  lost: u64,
  /// An `EVENTS_READY` call is queued or delivered and `takeEvents` has not run since: no need for another.
  notified: bool,
  ended: bool,
  error: Option<Error>,
}

/// The thread of a subscription and what it calls; shared with the teardown hook.
struct Watcher {
  source: Arc<dyn EventSource>,
  thread: Mutex<Option<JoinHandle<()>>>,
  tsfn: Arc<Tsfn>,
}

impl Watcher {
  /// Stops the thread and releases the threadsafe function. Idempotent.
  fn close(&self) {
    self.source.wake();
    if let Some(t) = lock(&self.thread).take() {
      let _ = t.join();
    }
    self.tsfn.release();
  }
}

struct Subscription {
  state: Arc<Mutex<State>>,
  watcher: Arc<Watcher>,
  /// Stops the thread if the environment is torn down with the subscription open (see `device::QueueHandle`).
  _teardown: EnvHook,
}

impl Subscription {
  fn close(&self) {
    self.watcher.close();
  }
}

impl Drop for Subscription {
  fn drop(&mut self) {
    self.close();
  }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
  m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Event codes sent to `onEvent`: events are waiting, or the subscription ended.
const EVENTS_READY: u32 = 1;
const EVENTS_ENDED: u32 = 3;

/// `subscribeEvents(dev, onEvent)`: starts watching the device's link.
pub fn subscribe(cx: &CallContext) -> JsResult<Value> {
  let env = cx.env;
  let dev = crate::device::dev(cx)?;
  let on_event = cx.arg(1)?;
  if !env.is_function(on_event)? {
    return Err(type_error("onEvent must be a function"));
  }
  let source: Arc<dyn EventSource> = Arc::from(dev.get("events")?.control().events()?);
  let tsfn = Arc::new(Tsfn::new(env, on_event, "tunkit-events")?);
  let state = Arc::new(Mutex::new(State {
    events: VecDeque::new(),
    lost: 0,
    notified: false,
    ended: false,
    error: None,
  }));
  let (src, st, t) = (source.clone(), state.clone(), tsfn.clone());
  let thread = std::thread::Builder::new()
    .name("tunkit-events".into())
    .spawn(move || loop {
      let r = src.next();
      let mut s = lock(&st);
      let code = match r {
        Ok(evs) => {
          for ev in evs {
            if s.events.len() == EVENTS_CAP {
              s.events.pop_front();
              s.lost += 1;
            }
            s.events.push_back(ev);
          }
          if s.notified {
            continue; // JavaScript has not taken the last batch yet: it will find these with it
          }
          s.notified = true;
          EVENTS_READY
        }
        Err(e) => {
          s.ended = true;
          if e.kind() != ErrorKind::Closed {
            s.error = Some(e);
          }
          EVENTS_ENDED
        }
      };
      drop(s);
      t.call(code);
      if code == EVENTS_ENDED {
        break;
      }
    })
    .map_err(|e| Error::os("pthread_create", &e, "starting the tunkit event thread"))?;
  let watcher = Arc::new(Watcher {
    source,
    thread: Mutex::new(Some(thread)),
    tsfn,
  });
  let w = watcher.clone();
  let teardown = env.on_teardown(Box::new(move || w.close()))?;
  env.external(Arc::new(Subscription {
    state,
    watcher,
    _teardown: teardown,
  }))
}

fn subscription(cx: &CallContext) -> JsResult<Arc<Subscription>> {
  cx.env
    .unwrap_external::<Subscription>(cx.arg(0)?, "event subscription")
}

/// `takeEvents(sub)`: the events since the last call (possibly none), at most [`EVENTS_CAP`] of them, preceded by
/// `{ type: 'overflow', lost }` when older ones were dropped; `undefined` once ended and drained. Throws the error
/// the subscription ended with, if any.
pub fn take(cx: &CallContext) -> JsResult<Value> {
  let env = cx.env;
  let sub = subscription(cx)?;
  let mut s = lock(&sub.state);
  s.notified = false;
  let lost = std::mem::take(&mut s.lost);
  if s.events.is_empty() && s.ended && lost == 0 {
    return match s.error.take() {
      Some(e) => Err(e.into()),
      None => env.undefined(),
    };
  }
  let events: Vec<LinkEvent> = s.events.drain(..).collect();
  drop(s);
  let overflow = if lost > 0 {
    let o = env.object()?;
    env.set(o, "type", env.string("overflow")?)?;
    env.set(o, "lost", env.number(lost as f64)?)?;
    Some(o)
  } else {
    None
  };
  let items = overflow
    .into_iter()
    .map(Ok)
    .chain(events.iter().map(|ev| {
      let o = env.object()?;
      let (ty, extra) = match ev {
        LinkEvent::Up => ("up", None),
        LinkEvent::Down => ("down", None),
        LinkEvent::Mtu(m) => {
          env.set(o, "mtu", env.number(*m as f64)?)?;
          ("mtu", None)
        }
        LinkEvent::AddressAdded(a) => ("address-added", Some(a)),
        LinkEvent::AddressRemoved(a) => ("address-removed", Some(a)),
      };
      env.set(o, "type", env.string(ty)?)?;
      if let Some(a) = extra {
        env.set(o, "address", convert::cidr_to_js(env, a)?)?;
      }
      Ok(o)
    }))
    .collect::<JsResult<Vec<_>>>()?;
  env.array_of(&items)
}

/// `setEventsRef(sub, bool)`: whether the subscription keeps the process alive.
pub fn set_ref(cx: &CallContext) -> JsResult<Value> {
  let sub = subscription(cx)?;
  let r = cx.env.to_bool(cx.arg(1)?, "ref")?;
  sub.watcher.tsfn.set_ref(cx.env, r);
  cx.env.undefined()
}

/// `closeEvents(sub)`: stops the thread. Idempotent.
pub fn close(cx: &CallContext) -> JsResult<Value> {
  subscription(cx)?.close();
  cx.env.undefined()
}
