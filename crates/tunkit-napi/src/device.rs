//! The exported functions: devices (open, configure, close) and queues (pull, send, stats, close).

use crate::convert::{self, field};
use crate::sys::api::{type_error, CallContext, Env, EnvHook, JsResult, Tsfn, Value};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use tunkit_core::config::{parse_mac, IpCidr, Mode};
use tunkit_core::ring::{PacketRing, Pull, Sent};
use tunkit_core::{Device, Error, ErrorKind};

/// A device as JavaScript holds it. `device` is `None` once closed (and in a worker that attached only a queue).
pub struct DeviceHandle {
  device: Mutex<Option<Arc<Device>>>,
  name: String,
  index: u32,
  mode: Mode,
  /// Last known MTU, the write-size limit; re-read from the OS before refusing a packet.
  mtu: AtomicU32,
  /// Opened with `offload: { raw: true }`: packets are a virtio-net header followed by the packet.
  raw: bool,
}

impl DeviceHandle {
  fn new(device: Device, raw: bool) -> DeviceHandle {
    let c = device.control();
    let mtu = c.link().map(|l| l.mtu).unwrap_or(tunkit_core::config::MAX_MTU);
    DeviceHandle {
      name: c.name(),
      index: c.index(),
      mode: device.mode(),
      mtu: AtomicU32::new(mtu),
      raw,
      device: Mutex::new(Some(Arc::new(device))),
    }
  }

  pub fn get(&self, op: &str) -> Result<Arc<Device>, Error> {
    lock(&self.device)
      .clone()
      .ok_or_else(|| Error::closed(&format!("{op} on {}", self.name)))
  }

  /// Largest packet a write may carry: the MTU, plus the Ethernet and VLAN headers for TAP.
  fn write_limit(&self, refresh: bool) -> usize {
    if refresh {
      if let Ok(l) = self.get("write").and_then(|d| d.control().link()) {
        self.mtu.store(l.mtu, Relaxed);
      }
    }
    self.mtu.load(Relaxed) as usize + if self.mode == Mode::Tap { 18 } else { 0 }
  }
}

/// One queue's ring as JavaScript holds it.
struct QueueHandle {
  ring: Arc<PacketRing>,
  device: Arc<DeviceHandle>,
  /// Shared with the ring's notify callback; released on close, after the ring's threads are joined.
  tsfn: Arc<Tsfn>,
  /// Closes the ring and releases the tsfn if the environment is torn down first (a worker that exits or is
  /// terminated with the queue open): Node deletes threadsafe functions at teardown whether or not threads still
  /// hold them, so the threads must be gone by then.
  _teardown: EnvHook,
}

/// Set in `lens[0]` by `pull` when the ring is under memory pressure: JavaScript should hand out copies of the
/// packets rather than views that pin the batch (see `PacketRing::memory_pressure`).
const PULL_COPY: u32 = 1 << 31;

/// Most packets one `write()` takes.
const MAX_WRITE_PACKETS: usize = 65536;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
  m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The device handle passed as the first argument.
pub fn dev(cx: &CallContext) -> JsResult<Arc<DeviceHandle>> {
  cx.env.unwrap_external::<DeviceHandle>(cx.arg(0)?, "device")
}

/// The ring behind a queue handle (for the stack, which installs itself on it and writes through it).
pub fn ring_of(env: Env, v: Value) -> JsResult<Arc<PacketRing>> {
  Ok(env.unwrap_external::<QueueHandle>(v, "queue")?.ring.clone())
}

fn queue(cx: &CallContext) -> JsResult<Arc<QueueHandle>> {
  cx.env.unwrap_external::<QueueHandle>(cx.arg(0)?, "queue")
}

fn wrap(env: Env, device: Device, raw: bool) -> JsResult<Value> {
  env.external(Arc::new(DeviceHandle::new(device, raw)))
}

/// `createDevice(options)`: creates (or with `openExisting`, attaches to) a device.
pub fn create_device(cx: &CallContext) -> JsResult<Value> {
  let cfg = convert::device_config(cx.env, cx.arg(0)?)?;
  wrap(cx.env, Device::open(&cfg)?, cfg.offload.is_some_and(|o| o.raw))
}

/// `createMemoryPair(mtu, capacity)`: two connected in-memory devices.
pub fn create_memory_pair(cx: &CallContext) -> JsResult<Value> {
  let env = cx.env;
  let mtu = env.to_int(cx.arg(0)?, "mtu", 0, u32::MAX as u64)? as u32;
  let capacity = env.to_int(cx.arg(1)?, "capacity", 1, 1 << 20)? as usize;
  let (a, b) = tunkit_core::platform::memory::pair(mtu, capacity)?;
  let a = wrap(env, Device::from_opened(a, Mode::Tun), false)?;
  let b = wrap(env, Device::from_opened(b, Mode::Tun), false)?;
  env.array_of(&[a, b])
}

/// `fromFd(fd, mode, ringOptions)`: adopts a descriptor attached to a device. The ring options of its queue are
/// checked first, so that options `openQueue` would refuse are refused while the descriptor is still the caller's
/// (which it stays, unchanged, whatever the error).
pub fn from_fd(cx: &CallContext) -> JsResult<Value> {
  let env = cx.env;
  let fd = env.to_int(cx.arg(0)?, "fd", 0, i32::MAX as u64)? as i32;
  let mode_arg = cx.arg(1)?;
  let mode = if env.is_nullish(mode_arg)? {
    Mode::Tun
  } else {
    env.to_string(mode_arg, "mode")?.parse::<Mode>()?
  };
  let ring = convert::ring_config(env, cx.arg(2)?)?;
  #[cfg(target_os = "linux")]
  {
    wrap(
      env,
      Device::from_opened(
        tunkit_core::platform::linux::from_fd_with_ring(fd, mode, &ring)?,
        mode,
      ),
      false,
    )
  }
  #[cfg(not(target_os = "linux"))]
  {
    let _ = (fd, mode, ring);
    Err(Error::unsupported("Tun.fromFd").into())
  }
}

/// `deviceInfo(dev)`: `{ name, index, mode, queues }`.
pub fn device_info(cx: &CallContext) -> JsResult<Value> {
  let (env, h) = (cx.env, dev(cx)?);
  let o = env.object()?;
  env.set(o, "name", env.string(&h.name)?)?;
  env.set(o, "index", env.number(h.index as f64)?)?;
  env.set(o, "mode", env.string(h.mode.as_str())?)?;
  let queues = lock(&h.device).as_ref().map(|d| d.queue_count()).unwrap_or(0);
  env.set(o, "queues", env.number(queues as f64)?)?;
  Ok(o)
}

/// `link(dev)`: the link state, read from the OS now.
pub fn link(cx: &CallContext) -> JsResult<Value> {
  let h = dev(cx)?;
  let l = h.get("link")?.control().link()?;
  h.mtu.store(l.mtu, Relaxed);
  convert::link_to_js(cx.env, &l)
}

pub fn set_mtu(cx: &CallContext) -> JsResult<Value> {
  let h = dev(cx)?;
  let mtu = cx.env.to_int(cx.arg(1)?, "mtu", 0, u32::MAX as u64)? as u32;
  h.get("setMtu")?.control().set_mtu(mtu)?;
  h.mtu.store(mtu, Relaxed);
  cx.env.undefined()
}

pub fn set_up(cx: &CallContext) -> JsResult<Value> {
  let h = dev(cx)?;
  let up = cx.env.to_bool(cx.arg(1)?, "up")?;
  h.get("setUp")?.control().set_up(up)?;
  cx.env.undefined()
}

pub fn set_tx_queue_len(cx: &CallContext) -> JsResult<Value> {
  let h = dev(cx)?;
  let n = cx.env.to_int(cx.arg(1)?, "txQueueLength", 0, u32::MAX as u64)? as u32;
  h.get("setTxQueueLength")?.control().set_tx_queue_len(n)?;
  cx.env.undefined()
}

pub fn set_mac(cx: &CallContext) -> JsResult<Value> {
  let h = dev(cx)?;
  let mac = parse_mac(&cx.env.to_string(cx.arg(1)?, "mac")?)?;
  if h.mode != Mode::Tap {
    return Err(
      Error::new(
        ErrorKind::Unsupported,
        format!("setMac on {}: only TAP devices have a MAC address", h.name),
      )
      .into(),
    );
  }
  h.get("setMac")?.control().set_mac(mac)?;
  cx.env.undefined()
}

pub fn set_persist(cx: &CallContext) -> JsResult<Value> {
  let h = dev(cx)?;
  let p = cx.env.to_bool(cx.arg(1)?, "persist")?;
  h.get("setPersist")?.control().set_persist(p)?;
  cx.env.undefined()
}

fn cidr_arg(cx: &CallContext, i: usize) -> JsResult<IpCidr> {
  Ok(cx.env.to_string(cx.arg(i)?, "address")?.parse::<IpCidr>()?)
}

pub fn add_address(cx: &CallContext) -> JsResult<Value> {
  let h = dev(cx)?;
  let mut a = cidr_arg(cx, 1)?;
  let opts = cx.arg(2)?;
  if !cx.env.is_nullish(opts)? {
    if let Some(p) = field(cx.env, opts, "peer")? {
      let p = cx.env.to_string(p, "peer")?;
      let ip = p.parse().map_err(|_| {
        Error::new(
          ErrorKind::InvalidAddress,
          format!("peer {p:?} is not an IP address"),
        )
      })?;
      a = a.with_peer(ip)?;
    }
  }
  h.get("addAddress")?.control().add_address(&a)?;
  cx.env.undefined()
}

pub fn remove_address(cx: &CallContext) -> JsResult<Value> {
  let h = dev(cx)?;
  let a = cidr_arg(cx, 1)?;
  h.get("removeAddress")?.control().remove_address(&a)?;
  cx.env.undefined()
}

pub fn addresses(cx: &CallContext) -> JsResult<Value> {
  let h = dev(cx)?;
  let list = h.get("addresses")?.control().addresses()?;
  let items = list
    .iter()
    .map(|a| convert::cidr_to_js(cx.env, a))
    .collect::<JsResult<Vec<_>>>()?;
  cx.env.array_of(&items)
}

pub fn add_route(cx: &CallContext) -> JsResult<Value> {
  let h = dev(cx)?;
  let r = convert::route(cx.env, cx.arg(1)?)?;
  h.get("addRoute")?.control().add_route(&r)?;
  cx.env.undefined()
}

pub fn remove_route(cx: &CallContext) -> JsResult<Value> {
  let h = dev(cx)?;
  let r = convert::route(cx.env, cx.arg(1)?)?;
  h.get("removeRoute")?.control().remove_route(&r)?;
  cx.env.undefined()
}

pub fn routes(cx: &CallContext) -> JsResult<Value> {
  let h = dev(cx)?;
  let list = h.get("routes")?.control().routes()?;
  let items = list
    .iter()
    .map(|r| convert::route_to_js(cx.env, r))
    .collect::<JsResult<Vec<_>>>()?;
  cx.env.array_of(&items)
}

/// `closeDevice(dev)`: drops the control, the queues not opened, and the queues detached but never attached. Queues
/// already running (here or in another thread) close on their own.
pub fn close_device(cx: &CallContext) -> JsResult<Value> {
  let h = dev(cx)?;
  if let Some(device) = lock(&h.device).take() {
    let orphans: Vec<Detached> = {
      let mut list = lock(&DETACHED);
      let (gone, keep): (Vec<_>, Vec<_>) = list.drain(..).partition(|(_, d)| Arc::ptr_eq(&d.device, &device));
      *list = keep;
      gone.into_iter().map(|(_, d)| d).collect()
    };
    drop(orphans);
  }
  cx.env.undefined()
}

/// `openQueue(dev, index, ringOptions, onEvent)`: starts the ring of one queue. `onEvent(code)` receives 1
/// (readable), 2 (writable) or 3 (ended), only after a `pull` or `send` armed it, and 4 when the backend raised a
/// notice (see `takeNotices`).
pub fn open_queue(cx: &CallContext) -> JsResult<Value> {
  let env = cx.env;
  let h = dev(cx)?;
  let index = env.to_int(cx.arg(1)?, "queue index", 0, 65535)? as usize;
  let cfg = convert::ring_config(env, cx.arg(2)?)?;
  let on_event = cx.arg(3)?;
  if !env.is_function(on_event)? {
    return Err(type_error("onEvent must be a function"));
  }
  // The ring's sizes are checked against the queue before it is taken: refused options leave it in the device.
  let q = h
    .get("openQueue")?
    .take_queue_if(index, |q| cfg.validate(q.max_frame()))?;
  start_queue(env, h, q, cfg, on_event)
}

fn start_queue(
  env: Env,
  h: Arc<DeviceHandle>,
  q: Box<dyn tunkit_core::Queue>,
  cfg: tunkit_core::RingConfig,
  on_event: Value,
) -> JsResult<Value> {
  let tsfn = Arc::new(Tsfn::new(env, on_event, "tunkit-queue")?);
  let notify_tsfn = tsfn.clone();
  let ring = Arc::new(PacketRing::start(
    q,
    cfg,
    Box::new(move |ev| notify_tsfn.call(ev as u32)),
  )?);
  let (r, t) = (ring.clone(), tsfn.clone());
  let teardown = env.on_teardown(Box::new(move || {
    r.close();
    t.release();
  }))?;
  env.external(Arc::new(QueueHandle {
    ring,
    device: h,
    tsfn,
    _teardown: teardown,
  }))
}

/// Queues taken out of a device to be attached from another thread (a `worker_threads` worker): they wait here,
/// keyed by a token, until `attachQueue` takes them. The process owns them meanwhile.
struct Detached {
  queue: Box<dyn tunkit_core::Queue>,
  /// The device it came from: the attaching thread shares its control (to read the MTU back), and closing the
  /// device drops the queues nobody attached.
  device: Arc<Device>,
  name: String,
  index: u32,
  mode: Mode,
  mtu: u32,
  raw: bool,
}

static DETACHED: Mutex<Vec<(u32, Detached)>> = Mutex::new(Vec::new());
static NEXT_TOKEN: AtomicU32 = AtomicU32::new(1);

/// `detachQueue(dev, index)`: takes queue `index` out of the device for another thread; returns its token.
pub fn detach_queue(cx: &CallContext) -> JsResult<Value> {
  let h = dev(cx)?;
  let index = cx.env.to_int(cx.arg(1)?, "queue index", 0, 65535)? as usize;
  let device = h.get("detachQueue")?;
  let queue = device.take_queue(index)?;
  let token = NEXT_TOKEN.fetch_add(1, Relaxed);
  let d = Detached {
    queue,
    device,
    name: h.name.clone(),
    index: h.index,
    mode: h.mode,
    mtu: h.mtu.load(Relaxed),
    raw: h.raw,
  };
  lock(&DETACHED).push((token, d));
  cx.env.number(token as f64)
}

/// `attachQueue(token, ringOptions, onEvent)`: starts the ring of a detached queue in the calling thread; returns
/// `[deviceHandle, queueHandle]` (the device handle has no control: configuration stays with the device's owner).
pub fn attach_queue(cx: &CallContext) -> JsResult<Value> {
  let env = cx.env;
  let token = env.to_int(cx.arg(0)?, "queue token", 1, u32::MAX as u64)? as u32;
  let cfg = convert::ring_config(env, cx.arg(1)?)?;
  let on_event = cx.arg(2)?;
  if !env.is_function(on_event)? {
    return Err(type_error("onEvent must be a function"));
  }
  let d = {
    let mut list = lock(&DETACHED);
    match list.iter().position(|(t, _)| *t == token) {
      // The ring's sizes are checked before the token is spent: refused options leave it attachable.
      Some(i) => {
        cfg.validate(list[i].1.queue.max_frame())?;
        list.swap_remove(i).1
      }
      None => {
        return Err(
          Error::new(
            ErrorKind::NotFound,
            format!("queue token {token} is unknown or was attached already"),
          )
          .into(),
        )
      }
    }
  };
  let h = Arc::new(DeviceHandle {
    device: Mutex::new(Some(d.device)),
    name: d.name,
    index: d.index,
    mode: d.mode,
    mtu: AtomicU32::new(d.mtu),
    raw: d.raw,
  });
  let handle = env.external(h.clone())?;
  let q = start_queue(env, h, d.queue, cfg, on_event)?;
  env.array_of(&[handle, q])
}

/// `pull(queue, lens)`: the next batch as an ArrayBuffer of packets packed back to back, with `lens[0]` = count
/// and `lens[1..=count]` the lengths (bit 31 of `lens[0]`: copy the packets, the ring is under memory pressure);
/// `null` when the ring is empty (an event `1` or `3` follows); `undefined` once
/// the queue has ended. Throws the reader's error if it ended on one.
pub fn pull(cx: &CallContext) -> JsResult<Value> {
  let env = cx.env;
  let q = queue(cx)?;
  let lens = cx.arg(1)?;
  // Checked before taking a batch: a batch taken and then not handed over would be lost.
  if env.u32_len(lens, "lens")? < q.ring.batch_packets() + 1 {
    return Err(type_error(format!(
      "lens must hold {} entries",
      q.ring.batch_packets() + 1
    )));
  }
  match q.ring.pull() {
    Pull::Batch(slab, l) => {
      let pressure = if q.ring.memory_pressure() { PULL_COPY } else { 0 };
      env.fill_u32s(lens, "lens", l.len() as u32 | pressure, &l)?;
      env.slab_arraybuffer(slab)
    }
    Pull::Empty => env.null(),
    Pull::Ended(None) => env.undefined(),
    Pull::Ended(Some(e)) => Err(e.into()),
  }
}

fn check_packet(h: &DeviceHandle, pkt: &[u8], i: usize, limit: &mut usize) -> Result<(), Error> {
  let in_context = |e: Error| {
    Error::new(
      e.kind(),
      format!("write on {}: packet {i} {}", h.name, e.message()),
    )
  };
  if h.raw {
    return tunkit_core::packet::virtio::validate_raw(pkt, h.mode)
      .map(|_| ())
      .map_err(in_context);
  }
  // The MTU may have been raised from outside since it was last read: read it again before refusing a packet.
  if pkt.len() > *limit {
    *limit = h.write_limit(true);
  }
  tunkit_core::packet::check_write(pkt, h.mode, *limit).map_err(in_context)
}

/// `send(queue, packet | packets)`: validates every packet first (nothing is taken if one is bad), then writes
/// them or copies them into the transmit ring: the caller's buffers are free again when it returns. Returns 0, or
/// 1 when the ring is now over its budget (an event `2` follows once it has drained to half). With no packets it
/// is the question the JavaScript side asks on event `2`: 1 when writes over budget must still wait (the event was
/// overtaken by newer ones; another follows), see `tunkit_core::ring::Sent`.
pub fn send(cx: &CallContext) -> JsResult<Value> {
  let env = cx.env;
  let q = queue(cx)?;
  let h = &q.device;
  let packets = env.packets(cx, cx.arg(1)?, MAX_WRITE_PACKETS)?;
  let mut limit = h.write_limit(false);
  let mut total = 0;
  for (i, p) in packets.iter().enumerate() {
    check_packet(h, p, i, &mut limit)?;
    total += p.len();
  }
  // An empty write still reports a closed or failed queue (the JavaScript side asks that way).
  let sent = q.ring.send(&packets, total).map_err(|e| match e.kind() {
    ErrorKind::Closed => Error::closed(&format!("write on {}", h.name)),
    ErrorKind::QueueFull => {
      let why = e.message().strip_prefix("write: ").unwrap_or(e.message());
      Error::new(e.kind(), format!("write on {}: {why}", h.name))
    }
    _ => e,
  })?;
  env.number(if sent == Sent::OverBudget { 1.0 } else { 0.0 })
}

/// `releaseBatch(ab)`: gives a pulled batch's memory back at once (the JavaScript side copied every packet out of
/// it under memory pressure, so no view of it is left in use).
pub fn release_batch(cx: &CallContext) -> JsResult<Value> {
  cx.env.detach(cx.arg(0)?, "batch")?;
  cx.env.undefined()
}

/// `setRef(queue, bool)`: whether a pending event keeps the process alive.
pub fn set_ref(cx: &CallContext) -> JsResult<Value> {
  let q = queue(cx)?;
  let r = cx.env.to_bool(cx.arg(1)?, "ref")?;
  q.tsfn.set_ref(cx.env, r);
  cx.env.undefined()
}

pub fn queue_stats(cx: &CallContext) -> JsResult<Value> {
  let q = queue(cx)?;
  convert::ring_stats_to_js(cx.env, &q.ring.stats())
}

/// `takeWriteError(queue)`: the last error the device gave for an outgoing packet, as an exception-like object,
/// or `undefined`.
pub fn take_write_error(cx: &CallContext) -> JsResult<Value> {
  let q = queue(cx)?;
  match q.ring.take_tx_error() {
    None => cx.env.undefined(),
    Some(e) => {
      let env = cx.env;
      let o = env.object()?;
      env.set(o, "code", env.string(e.code())?)?;
      env.set(o, "message", env.string(e.message())?)?;
      if let Some(n) = e.errno() {
        env.set(o, "errno", env.number(n as f64)?)?;
      }
      if let Some(s) = e.syscall() {
        env.set(o, "syscall", env.string(s)?)?;
      }
      Ok(o)
    }
  }
}

/// `takeNotices(queue)`: the backend's notices since the last call (event `4` says there are some).
pub fn take_notices(cx: &CallContext) -> JsResult<Value> {
  let q = queue(cx)?;
  let items = q
    .ring
    .take_notices()
    .iter()
    .map(|n| cx.env.string(n))
    .collect::<JsResult<Vec<_>>>()?;
  cx.env.array_of(&items)
}

/// `closeQueue(queue)`: flushes queued writes (bounded), stops the threads, closes the queue's fd. Idempotent.
pub fn close_queue(cx: &CallContext) -> JsResult<Value> {
  let q = queue(cx)?;
  q.ring.close();
  q.tsfn.release();
  cx.env.undefined()
}
