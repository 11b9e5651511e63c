//! The driver: the threads that move packets between a device queue and a [`NetStack`], and the
//! application's handle ([`Stack`]). See the crate documentation for the design.

use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tunkit_core::{Batch, Queue};
use tunkit_tcp::{ConnId, ConnInfo, EndpointStats, ListenerId, State};

use crate::{Error, Event, NetStack, StackStats, UdpId};

/// The readiness callback: called on the driver's threads, outside its lock; it must not block.
pub type Callback = Arc<dyn Fn(Event) + Send + Sync>;

/// Driver settings.
#[derive(Clone, Copy, Debug)]
pub struct DriverConfig {
  /// Packets read from the device per batch.
  pub batch_packets: usize,
  /// Bytes of each read slab.
  pub slab_bytes: usize,
  /// Output bytes that may wait for the writer thread; beyond, packets are dropped (and counted).
  pub max_pending_bytes: usize,
}

impl Default for DriverConfig {
  fn default() -> DriverConfig {
    DriverConfig {
      batch_packets: 512,
      slab_bytes: 1 << 20,
      max_pending_bytes: 16 << 20,
    }
  }
}

/// Counters of the driver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriverStats {
  /// Batches read from the device.
  pub rx_batches: u64,
  /// Batches written to the device.
  pub tx_batches: u64,
  /// Packets the device refused (per-packet write errors).
  pub tx_errors: u64,
  /// Output packets dropped because [`DriverConfig::max_pending_bytes`] was reached.
  pub tx_dropped: u64,
  /// Times the writer/timer thread woke up.
  pub wakeups: u64,
}

struct Inner {
  stack: NetStack,
  tx: Batch,
  stopped: bool,
  stats: DriverStats,
}

struct Shared {
  inner: Mutex<Inner>,
  work: Condvar,
  ready: Condvar,
  epoch: Instant,
  queue: Arc<dyn Queue>,
  callback: RwLock<Option<Callback>>,
  cfg: DriverConfig,
}

impl Shared {
  fn lock(&self) -> MutexGuard<'_, Inner> {
    self.inner.lock().unwrap_or_else(|e| e.into_inner())
  }

  fn now(&self) -> Duration {
    self.epoch.elapsed()
  }

  /// Hands events to the callback and wakes blocked callers.
  fn dispatch(&self, events: &mut Vec<Event>) {
    if !events.is_empty() {
      let cb = self.callback.read().unwrap_or_else(|e| e.into_inner()).clone();
      if let Some(cb) = cb {
        for e in events.iter() {
          cb(*e);
        }
      }
      events.clear();
    }
    self.ready.notify_all();
  }

  fn stop(&self) {
    self.lock().stopped = true;
    self.queue.wake();
    self.work.notify_all();
    self.ready.notify_all();
  }
}

fn drain_events(inner: &mut Inner, into: &mut Vec<Event>) {
  while let Some(e) = inner.stack.next_event() {
    into.push(e);
  }
}

fn reader(sh: Arc<Shared>) {
  let max_frame = sh.queue.max_frame();
  let mut batch = Batch::with_capacity(sh.cfg.slab_bytes.max(2 * max_frame), sh.cfg.batch_packets);
  let mut events = Vec::new();
  loop {
    batch.clear();
    if sh
      .queue
      .read_batch(&mut batch, sh.cfg.batch_packets.max(1))
      .is_err()
    {
      sh.stop();
      return;
    }
    let mut g = sh.lock();
    if g.stopped {
      return;
    }
    let now = sh.now();
    let inner = &mut *g;
    inner.stats.rx_batches += 1;
    for p in batch.iter() {
      let (n, bytes) = (inner.tx.lens.len(), inner.tx.data.len());
      inner.stack.input(now, p, &mut inner.tx);
      if inner.tx.data.len() > sh.cfg.max_pending_bytes {
        inner.stats.tx_dropped += (inner.tx.lens.len() - n) as u64;
        inner.tx.lens.truncate(n);
        inner.tx.data.truncate(bytes);
      }
    }
    drain_events(inner, &mut events);
    let wake = !inner.tx.is_empty() || inner.stack.next_deadline().is_some_and(|t| t <= now);
    drop(g);
    if wake {
      sh.work.notify_one();
    }
    sh.dispatch(&mut events);
  }
}

fn writer(sh: Arc<Shared>) {
  let mut out = Batch::default();
  let mut events = Vec::new();
  let mut g = sh.lock();
  loop {
    if g.stopped {
      return;
    }
    g.stats.wakeups += 1;
    let now = sh.now();
    let inner = &mut *g;
    if inner.stack.next_deadline().is_some_and(|t| t <= now) {
      inner.stack.poll(now, &mut inner.tx);
    }
    drain_events(inner, &mut events);
    if !inner.tx.is_empty() || !events.is_empty() {
      std::mem::swap(&mut out, &mut inner.tx);
      drop(g);
      sh.dispatch(&mut events);
      let mut failed = false;
      let mut report = None;
      if !out.is_empty() {
        match sh.queue.write_batch(&out) {
          Ok(r) => report = Some(r),
          Err(_) => failed = true,
        }
      }
      out.clear();
      if failed {
        sh.stop();
        return;
      }
      g = sh.lock();
      if let Some(r) = report {
        g.stats.tx_batches += 1;
        g.stats.tx_errors += r.errors;
      }
      continue;
    }
    let wait = match inner.stack.next_deadline() {
      Some(t) => t.saturating_sub(now).max(Duration::from_micros(50)),
      None => Duration::from_secs(3600),
    };
    g = sh.work.wait_timeout(g, wait).unwrap_or_else(|e| e.into_inner()).0;
  }
}

/// The application's handle on a running stack (share it with `Arc`). Dropping it (or
/// [`Stack::stop`]) stops the threads and closes the device queue for good.
pub struct Stack {
  sh: Arc<Shared>,
  threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Stack {
  /// Starts the driver threads for `stack` on the device queue `queue`.
  pub fn start(stack: NetStack, queue: Box<dyn Queue>, cfg: DriverConfig) -> std::io::Result<Arc<Stack>> {
    let sh = Arc::new(Shared {
      inner: Mutex::new(Inner {
        stack,
        tx: Batch::default(),
        stopped: false,
        stats: DriverStats::default(),
      }),
      work: Condvar::new(),
      ready: Condvar::new(),
      epoch: Instant::now(),
      queue: Arc::from(queue),
      callback: RwLock::new(None),
      cfg,
    });
    let mut threads = Vec::new();
    let s = sh.clone();
    threads.push(
      std::thread::Builder::new()
        .name("netstack-rx".into())
        .spawn(move || reader(s))?,
    );
    let s = sh.clone();
    match std::thread::Builder::new()
      .name("netstack-tx".into())
      .spawn(move || writer(s))
    {
      Ok(t) => threads.push(t),
      Err(e) => {
        sh.stop();
        for t in threads {
          let _ = t.join();
        }
        return Err(e);
      }
    }
    Ok(Arc::new(Stack {
      sh,
      threads: Mutex::new(threads),
    }))
  }

  /// Sets (or clears) the readiness callback.
  pub fn set_callback(&self, cb: Option<Callback>) {
    *self.sh.callback.write().unwrap_or_else(|e| e.into_inner()) = cb;
  }

  /// Stops the threads (idempotent); calls fail with [`Error::Stopped`] afterwards.
  pub fn stop(&self) {
    self.sh.stop();
    let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
    let me = std::thread::current().id();
    for t in threads {
      if t.thread().id() != me {
        let _ = t.join();
      }
    }
  }

  /// Runs `f` on the stack under its lock, then wakes the writer (which polls if output is pending).
  pub fn with<T>(&self, f: impl FnOnce(&mut NetStack, Duration) -> T) -> Result<T, Error> {
    let mut g = self.sh.lock();
    if g.stopped {
      return Err(Error::Stopped);
    }
    let r = f(&mut g.stack, self.sh.now());
    drop(g);
    self.sh.work.notify_one();
    Ok(r)
  }

  /// Retries `op` until it does not say `WouldBlock`, waiting for readiness: `timeout` `None` waits
  /// forever, `Some(Duration::ZERO)` does not wait (`WouldBlock`), otherwise [`Error::Timeout`].
  fn wait<T>(
    &self,
    timeout: Option<Duration>,
    mut op: impl FnMut(&mut NetStack, Duration) -> Result<T, Error>,
  ) -> Result<T, Error> {
    let until = timeout.map(|t| Instant::now() + t);
    let mut g = self.sh.lock();
    loop {
      if g.stopped {
        return Err(Error::Stopped);
      }
      match op(&mut g.stack, self.sh.now()) {
        Err(Error::WouldBlock) => {}
        r => {
          drop(g);
          self.sh.work.notify_one();
          return r;
        }
      }
      self.sh.work.notify_one();
      g = match until {
        None => self.sh.ready.wait(g).unwrap_or_else(|e| e.into_inner()),
        Some(u) => {
          let left = u.saturating_duration_since(Instant::now());
          if left.is_zero() {
            return Err(if timeout == Some(Duration::ZERO) {
              Error::WouldBlock
            } else {
              Error::Timeout
            });
          }
          self
            .sh
            .ready
            .wait_timeout(g, left)
            .unwrap_or_else(|e| e.into_inner())
            .0
        }
      };
    }
  }

  /// Starts a TCP connection (non-blocking): [`crate::Event`] `Tcp(Connected)` follows.
  pub fn tcp_connect(&self, remote: SocketAddr) -> Result<ConnId, Error> {
    self.with(|s, now| s.tcp_connect(now, remote))?
  }

  /// Connects and waits for the handshake. On failure (refused: `Error::Tcp(Refused)`, timed out) the
  /// handle is released.
  pub fn tcp_connect_wait(&self, remote: SocketAddr, timeout: Option<Duration>) -> Result<ConnId, Error> {
    let id = self.tcp_connect(remote)?;
    let r = self.wait(timeout, |s, _| match s.tcp().state(id) {
      Some(State::SynSent) | Some(State::SynReceived) => Err(Error::WouldBlock),
      Some(State::Closed) | None => {
        let e = s
          .tcp()
          .info(id)
          .and_then(|i| i.error)
          .unwrap_or(tunkit_tcp::Error::NotConnected);
        Err(Error::from(e))
      }
      Some(_) => Ok(id),
    });
    if r.is_err() {
      let _ = self.with(|s, _| s.tcp().abort(id));
    }
    r
  }

  /// Listens on a port of all the stack's addresses.
  pub fn tcp_listen(&self, port: u16, backlog: usize) -> Result<ListenerId, Error> {
    self.with(|s, _| s.tcp_listen(port, backlog))?
  }

  /// Listens for connections to any address and port (proxy mode; needs
  /// [`crate::StackConfig::any_destination`] for addresses that are not the stack's).
  pub fn tcp_listen_any(&self, backlog: usize) -> Result<ListenerId, Error> {
    self.with(|s, _| {
      s.tcp()
        .listen(tunkit_tcp::ListenAddr::any(), backlog)
        .map_err(Error::from)
    })?
  }

  /// The next established connection of a listener.
  pub fn tcp_accept(&self, l: ListenerId, timeout: Option<Duration>) -> Result<ConnId, Error> {
    self.wait(timeout, |s, _| s.tcp().accept(l).ok_or(Error::WouldBlock))
  }

  /// Reads; `Ok(0)` is the end of the stream.
  pub fn tcp_read(&self, id: ConnId, buf: &mut [u8], timeout: Option<Duration>) -> Result<usize, Error> {
    self.wait(timeout, |s, _| Ok(s.tcp().read(id, buf)?))
  }

  /// Writes at least one byte (waiting for send space) and returns how many were taken.
  pub fn tcp_write(&self, id: ConnId, data: &[u8], timeout: Option<Duration>) -> Result<usize, Error> {
    if data.is_empty() {
      return Ok(0);
    }
    self.wait(timeout, |s, _| match s.tcp().write(id, data)? {
      0 => Err(Error::WouldBlock),
      n => Ok(n),
    })
  }

  /// Writes everything, waiting as needed (each wait bounded by `timeout`).
  pub fn tcp_write_all(&self, id: ConnId, mut data: &[u8], timeout: Option<Duration>) -> Result<(), Error> {
    while !data.is_empty() {
      let n = self.tcp_write(id, data, timeout)?;
      data = &data[n..];
    }
    Ok(())
  }

  /// Closes the sending side (FIN after the buffered data).
  pub fn tcp_shutdown(&self, id: ConnId) -> Result<(), Error> {
    Ok(self.with(|s, _| s.tcp().shutdown(id))??)
  }

  /// Releases the handle and closes gracefully.
  pub fn tcp_close(&self, id: ConnId) -> Result<(), Error> {
    Ok(self.with(|s, _| s.tcp().close(id))??)
  }

  /// Resets the connection and releases the handle.
  pub fn tcp_abort(&self, id: ConnId) -> Result<(), Error> {
    Ok(self.with(|s, _| s.tcp().abort(id))??)
  }

  /// A snapshot of a connection.
  pub fn tcp_info(&self, id: ConnId) -> Result<ConnInfo, Error> {
    self.with(|s, _| s.tcp().info(id).ok_or(Error::InvalidHandle))?
  }

  /// Binds a UDP socket (see [`NetStack::udp_bind`]).
  pub fn udp_bind(&self, local: SocketAddr) -> Result<(UdpId, SocketAddr), Error> {
    self.with(|s, _| s.udp_bind(local))?
  }

  /// Sends a datagram.
  pub fn udp_send_to(&self, id: UdpId, data: &[u8], to: SocketAddr) -> Result<usize, Error> {
    self.with(|s, _| s.udp_send_to(id, data, to))?
  }

  /// Receives a datagram: (bytes copied, sender).
  pub fn udp_recv_from(
    &self,
    id: UdpId,
    buf: &mut [u8],
    timeout: Option<Duration>,
  ) -> Result<(usize, SocketAddr), Error> {
    self.wait(timeout, |s, _| s.udp_recv_from(id, buf))
  }

  /// Closes a UDP socket.
  pub fn udp_close(&self, id: UdpId) -> Result<(), Error> {
    self.with(|s, _| s.udp_close(id))?
  }

  /// Counters: the stack's, the TCP endpoint's and the driver's.
  pub fn stats(&self) -> (StackStats, EndpointStats, DriverStats) {
    let mut g = self.sh.lock();
    let st = g.stats;
    (g.stack.stats(), g.stack.tcp().stats(), st)
  }
}

impl Drop for Stack {
  fn drop(&mut self) {
    self.stop();
  }
}
