//! Link events: a thread per subscription blocks in the backend's `EventSource::next` and hands batches of events
//! to JavaScript, which drains them with `takeEvents`.

use crate::convert;
use crate::sys::api::{type_error, CallContext, JsResult, Tsfn, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use tunkit_core::backend::{EventSource, LinkEvent};
use tunkit_core::{Error, ErrorKind};

struct State {
  events: VecDeque<LinkEvent>,
  ended: bool,
  error: Option<Error>,
}

struct Subscription {
  source: Arc<dyn EventSource>,
  state: Arc<Mutex<State>>,
  thread: Mutex<Option<JoinHandle<()>>>,
  tsfn: Arc<Mutex<Option<Tsfn>>>,
}

impl Subscription {
  fn close(&self) {
    self.source.wake();
    if let Some(t) = lock(&self.thread).take() {
      let _ = t.join();
    }
    drop(lock(&self.tsfn).take());
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
  let tsfn = Arc::new(Mutex::new(Some(Tsfn::new(env, on_event, "tunkit-events")?)));
  let state = Arc::new(Mutex::new(State {
    events: VecDeque::new(),
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
          s.events.extend(evs);
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
      if let Some(t) = lock(&t).as_ref() {
        t.call(code);
      }
      if code == EVENTS_ENDED {
        break;
      }
    })
    .map_err(|e| Error::os("pthread_create", &e, "starting the tunkit event thread"))?;
  env.external(Arc::new(Subscription {
    source,
    state,
    thread: Mutex::new(Some(thread)),
    tsfn,
  }))
}

fn subscription(cx: &CallContext) -> JsResult<Arc<Subscription>> {
  cx.env
    .unwrap_external::<Subscription>(cx.arg(0)?, "event subscription")
}

/// `takeEvents(sub)`: the events since the last call (possibly none); `undefined` once ended and drained. Throws
/// the error the subscription ended with, if any.
pub fn take(cx: &CallContext) -> JsResult<Value> {
  let env = cx.env;
  let sub = subscription(cx)?;
  let mut s = lock(&sub.state);
  if s.events.is_empty() && s.ended {
    return match s.error.take() {
      Some(e) => Err(e.into()),
      None => env.undefined(),
    };
  }
  let events: Vec<LinkEvent> = s.events.drain(..).collect();
  drop(s);
  let items = events
    .iter()
    .map(|ev| {
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
    })
    .collect::<JsResult<Vec<_>>>()?;
  env.array_of(&items)
}

/// `setEventsRef(sub, bool)`: whether the subscription keeps the process alive.
pub fn set_ref(cx: &CallContext) -> JsResult<Value> {
  let sub = subscription(cx)?;
  let r = cx.env.to_bool(cx.arg(1)?, "ref")?;
  if let Some(t) = lock(&sub.tsfn).as_ref() {
    t.set_ref(cx.env, r);
  }
  cx.env.undefined()
}

/// `closeEvents(sub)`: stops the thread. Idempotent.
pub fn close(cx: &CallContext) -> JsResult<Value> {
  subscription(cx)?.close();
  cx.env.undefined()
}
