//! The packet ring: one reader thread and one writer thread per queue, between a [`Queue`] and a consumer on
//! another thread (the JavaScript thread, through the binding).
//!
//! Read side: the reader takes a slab from the [`SlabPool`], lets the backend fill it with as many packets as are
//! pending (one batch), and publishes the batch into a bounded ring. The consumer pulls without blocking: a pull
//! either takes a batch (no cross-thread call at all) or, when the ring is empty, arms a one-shot
//! [`RingEvent::Readable`] that the reader fires after its next publish. Slabs handed out travel with a
//! [`SlabGuard`]; the slab returns to the pool only when the guard is dropped (for JavaScript: by the ArrayBuffer's
//! finalizer), so a packet view a user keeps stays intact. The pool counts every slab that is not free (being
//! filled, queued, or held by the consumer) against a memory budget; past it the reader waits instead of allocating,
//! and so does it when the ring is full: the kernel queue absorbs the burst, then the kernel drops and counts, like
//! a real NIC.
//!
//! Write side: [`PacketRing::send`] writes inline when nothing is queued (backends that never block), or copies the
//! packets into a transmit ring in one call (a memcpy is much cheaper than a syscall) for the writer thread. The
//! caller's memory is never kept past the call. Past the ring's byte budget `send` still takes the packets but says
//! so and arms a one-shot [`RingEvent::Writable`]: that is the backpressure the consumer sees. Past twice the budget
//! it refuses them with `QueueFull`, so a caller that never waits cannot grow the ring without bound.
//!
//! `Writable` is raised on the writer thread the moment the ring has drained to half, and reaches the consumer
//! later, on its own thread; meanwhile the consumer may have written on and be over budget again, with writes that
//! this event is not for. So the consumer confirms with an empty `send` before it lets its waiting writes go on:
//! [`Sent::OverBudget`] says they still wait (and `Writable` is armed for them). That keeps what a consumer with
//! `n` writes in flight can queue to the budget plus those `n` writes. Without it, each overtaken event let `n`
//! more writes through, and two or three in a row reached twice the budget, where `send` refuses (`QueueFull`).
//!
//! Failure: only a closed or vanished device ends the threads; other errors are counted and the threads go on. A
//! panic in either thread, or in an inline write, ends the whole queue with an `Internal` error that pulls and sends
//! then report, instead of leaving a consumer waiting for a thread that is gone.

use crate::backend::{Batch, Intercept, InterceptCounts, InterceptSlot, Queue, WriteReport};
use crate::error::{Error, ErrorKind, Result};
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Sizes and budgets of one ring.
#[derive(Debug, Clone, Copy)]
pub struct RingConfig {
  /// Batches that may wait for the consumer before the reader stops reading.
  pub ring_batches: usize,
  /// Most packets in one batch.
  pub batch_packets: usize,
  /// Bytes of packets one slab holds beyond the room kept for one largest frame.
  pub slab_bytes: usize,
  /// Batches smaller than this are copied into a buffer of their exact size and the slab is reused at once, so a
  /// trickle of small batches does not pin (and make the consumer's GC account for) a whole slab each. Larger
  /// batches are handed over without copying.
  pub copy_below: usize,
  /// Bytes of slabs alive at once: being filled, queued, or held by the consumer.
  pub memory_budget: usize,
  /// Bytes the transmit ring holds before `send` applies backpressure.
  pub tx_ring_bytes: usize,
  /// How long `close` waits for queued outgoing packets to be written.
  pub close_flush: Duration,
}

impl Default for RingConfig {
  fn default() -> Self {
    RingConfig {
      ring_batches: 64,
      batch_packets: 256,
      slab_bytes: 192 * 1024,
      copy_below: 16 * 1024,
      memory_budget: 256 * 1024 * 1024,
      tx_ring_bytes: 4 * 1024 * 1024,
      close_flush: Duration::from_millis(1000),
    }
  }
}

impl RingConfig {
  /// Checks the sizes are usable.
  pub fn validate(&self, max_frame: usize) -> Result<()> {
    let bad = |what: &str| Err(Error::new(ErrorKind::InvalidArgument, what.to_string()));
    if self.ring_batches == 0 || self.ring_batches > 1 << 16 {
      return bad("ringBatches must be 1..=65536");
    }
    if self.batch_packets == 0 || self.batch_packets > 4096 {
      return bad("batchPackets must be 1..=4096");
    }
    if self.slab_bytes < 2048 || self.slab_bytes > 64 << 20 {
      return bad("slabBytes must be 2048..=64 MiB");
    }
    if self.memory_budget < 2 * (self.slab_bytes + max_frame) {
      return bad("memoryBudget must hold at least two slabs");
    }
    if self.tx_ring_bytes < 65536 {
      return bad("txRingBytes must be at least 64 KiB");
    }
    Ok(())
  }
}

/// A one-shot notification for the consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingEvent {
  /// A batch was published after a pull found the ring empty.
  Readable = 1,
  /// The transmit ring has drained to half its budget after a `send` over budget ([`Sent::OverBudget`]) or
  /// refused (`QueueFull`). Raised on the writer thread; the consumer confirms with an empty [`PacketRing::send`]
  /// before its waiting writes go on.
  Writable = 2,
  /// The reader stopped (close or a fatal error) while the consumer was waiting.
  Ended = 3,
  /// The backend raised a notice ([`PacketRing::take_notices`]). Sent unarmed, once per notice.
  Notice = 4,
}

/// What [`PacketRing::send`] did with the packets. Either way they were taken (written or copied).
///
/// An empty send takes nothing and answers whether writes waiting for room may go on: `OverBudget` while a send
/// was over budget since the last [`RingEvent::Writable`] and the ring has not drained to half since (then a
/// `Writable` follows), `Done` otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
  /// Taken, and the ring is within its budget.
  Done,
  /// Taken, but the ring is now over its budget: [`RingEvent::Writable`] follows once it has drained to half.
  OverBudget,
}

/// The result of a non-blocking pull.
pub enum Pull {
  /// A batch of at least one packet.
  Batch(SlabGuard, Vec<u32>),
  /// Nothing yet: [`RingEvent::Readable`] (or `Ended`) will be sent once.
  Empty,
  /// The reader has stopped; the error is why, if it was not a close.
  Ended(Option<Error>),
}

/// Counters of one ring. All are monotonic except the `*_queued`/`*_live` gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RingStats {
  pub rx_packets: u64,
  pub rx_bytes: u64,
  pub rx_batches: u64,
  /// Times the reader had to stop reading because the ring was full or the memory budget was spent.
  pub rx_stalls: u64,
  pub rx_queued_batches: u64,
  pub rx_live_bytes: u64,
  pub tx_packets: u64,
  pub tx_bytes: u64,
  pub tx_batches: u64,
  /// Packets the device refused (counted, not retried).
  pub tx_errors: u64,
  /// Times `send` refused a batch for lack of room (backpressure).
  pub tx_backpressure: u64,
  pub tx_queued_bytes: u64,
  /// Packets an [`Intercept`] took before the consumer saw them, and packets it had written back to the device.
  pub intercepted: u64,
  pub intercept_writes: u64,
  /// With an intercept installed: packets it passed on that were dropped because the consumer did not read them.
  pub pass_dropped: u64,
  /// The backend's own counters ([`Queue::counters`]).
  pub backend: Vec<(&'static str, u64)>,
}

/// Free slabs, and the count of every slab not free, against the memory budget.
pub struct SlabPool {
  free: Mutex<Vec<Vec<u8>>>,
  returned: Condvar,
  live_bytes: AtomicUsize,
  slab_capacity: usize,
  budget: usize,
  /// Free slabs kept for reuse. Slabs come back in bursts, when the consumer's garbage collector finalizes the
  /// batches it dropped (V8 does so once some 64 MiB of external memory has piled up): freeing the burst and
  /// allocating it again at once churns the allocator and fragments its heap, which shows as RSS that creeps up
  /// (measured by benchmark/soak.ts). So the pool keeps what such a burst returns, up to a quarter of the budget
  /// (the same bound as [`PacketRing::memory_pressure`]) and at least 64 slabs; all of it counts against the budget.
  keep_free: usize,
  closing: AtomicBool,
}

impl SlabPool {
  fn new(slab_capacity: usize, budget: usize) -> SlabPool {
    SlabPool {
      free: Mutex::new(Vec::new()),
      returned: Condvar::new(),
      live_bytes: AtomicUsize::new(0),
      slab_capacity,
      budget,
      keep_free: (budget / 4 / slab_capacity).max(64),
      closing: AtomicBool::new(false),
    }
  }

  /// A cleared slab; waits while the budget is spent (counting one stall in `stalls` as the wait begins). `None`
  /// once closing.
  fn take(&self, stalls: &AtomicU64) -> Option<Vec<u8>> {
    let mut stalled = false;
    let mut free = lock(&self.free);
    loop {
      if self.closing.load(Relaxed) {
        return None;
      }
      if let Some(slab) = free.pop() {
        return Some(slab);
      }
      if self.live_bytes.load(Relaxed) + self.slab_capacity <= self.budget {
        self.live_bytes.fetch_add(self.slab_capacity, Relaxed);
        return Some(Vec::with_capacity(self.slab_capacity));
      }
      if !stalled {
        stalled = true;
        stalls.fetch_add(1, Relaxed);
      }
      free = self
        .returned
        .wait_timeout(free, Duration::from_millis(100))
        .map(|(g, _)| g)
        .unwrap_or_else(|e| e.into_inner().0);
    }
  }

  /// A buffer holding a copy of `data`, counted against the budget like a slab. Copies the consumer keeps count
  /// as much as slabs do: when the budget is spent, free slabs are released to make room, and failing that this
  /// waits like [`SlabPool::take`] (counting one stall). `None` once closing.
  fn copy_of(&self, data: &[u8], stalls: &AtomicU64) -> Option<Vec<u8>> {
    let need = data.len();
    let mut stalled = false;
    let mut free = lock(&self.free);
    loop {
      if self.closing.load(Relaxed) {
        return None;
      }
      while self.live_bytes.load(Relaxed) + need > self.budget {
        let Some(slab) = free.pop() else { break };
        self.live_bytes.fetch_sub(slab.capacity(), Relaxed);
        drop(slab);
      }
      if self.live_bytes.load(Relaxed) + need <= self.budget {
        let v = data.to_vec();
        self.live_bytes.fetch_add(v.capacity(), Relaxed);
        return Some(v);
      }
      if !stalled {
        stalled = true;
        stalls.fetch_add(1, Relaxed);
      }
      free = self
        .returned
        .wait_timeout(free, Duration::from_millis(100))
        .map(|(g, _)| g)
        .unwrap_or_else(|e| e.into_inner().0);
    }
  }

  /// Takes a buffer back: slabs go to the free list (up to [`SlabPool::keep_free`] of them; beyond, they are freed),
  /// copies are freed.
  fn give_back(&self, mut slab: Vec<u8>) {
    slab.clear();
    let mut free = lock(&self.free);
    if slab.capacity() == self.slab_capacity && !self.closing.load(Relaxed) && free.len() < self.keep_free {
      free.push(slab);
    } else {
      self.live_bytes.fetch_sub(slab.capacity(), Relaxed);
      drop(slab);
    }
    drop(free);
    self.returned.notify_one();
  }

  fn close(&self) {
    self.closing.store(true, Relaxed);
    let mut free = lock(&self.free);
    let n = free.len();
    free.clear();
    self.live_bytes.fetch_sub(n * self.slab_capacity, Relaxed);
    drop(free);
    self.returned.notify_all();
  }

  /// Capacity in bytes of every slab.
  pub fn slab_capacity(&self) -> usize {
    self.slab_capacity
  }
}

/// Ownership of one published slab. Dropping it returns the memory to its pool, whether or not the ring still
/// exists. `data` holds exactly the packets (its length is their sum).
pub struct SlabGuard {
  data: Vec<u8>,
  pool: Arc<SlabPool>,
}

impl SlabGuard {
  pub fn data(&self) -> &[u8] {
    &self.data
  }
  /// Pointer to the first byte, for handing the memory to a foreign owner that keeps this guard alive.
  pub fn as_ptr(&self) -> *const u8 {
    self.data.as_ptr()
  }
  pub fn len(&self) -> usize {
    self.data.len()
  }
  pub fn is_empty(&self) -> bool {
    self.data.is_empty()
  }
  /// Bytes of memory this guard keeps alive (its buffer's capacity).
  pub fn footprint(&self) -> usize {
    self.data.capacity()
  }
}

impl Drop for SlabGuard {
  fn drop(&mut self) {
    self.pool.give_back(std::mem::take(&mut self.data));
  }
}

type Notify = Box<dyn Fn(RingEvent) + Send + Sync>;

struct RxState {
  batches: VecDeque<(Vec<u8>, Vec<u32>)>,
  waiting: bool,
  ended: bool,
  error: Option<Error>,
}

struct TxState {
  batches: VecDeque<Batch>,
  spare: Vec<Batch>,
  /// Bytes of the packets taken and not yet written: queued, or in the batch being written (released when that
  /// whole batch is written).
  bytes: usize,
  /// A send was over budget (or refused) since the last `Writable`: the writer raises one once the ring has drained
  /// to half.
  waiting: bool,
  closing: bool,
  writer_done: bool,
  /// A batch is being written (by the writer thread or inline by `send`); the other must not start one.
  writing: bool,
  /// Why sends are refused for good (the device went away, or a panic), if not a plain close.
  failed: Option<Error>,
}

#[derive(Default)]
struct Counters {
  rx_packets: AtomicU64,
  rx_bytes: AtomicU64,
  rx_batches: AtomicU64,
  rx_stalls: AtomicU64,
  tx_packets: AtomicU64,
  tx_bytes: AtomicU64,
  tx_batches: AtomicU64,
  tx_errors: AtomicU64,
  tx_backpressure: AtomicU64,
}

struct Shared {
  cfg: RingConfig,
  max_frame: usize,
  /// The backend's writes never block, so `send` may write inline when the writer is idle.
  inline_writes: bool,
  pool: Arc<SlabPool>,
  rx: Mutex<RxState>,
  rx_space: Condvar,
  tx: Mutex<TxState>,
  tx_cv: Condvar,
  counters: Counters,
  notify: Notify,
  closing: AtomicBool,
  /// Processing that sees every batch on the reader thread before the consumer does (the forwarding stack).
  intercept: InterceptSlot,
  /// Packets intercepted (taken before the consumer saw them) and written back to the device by the reader thread.
  intercepted: AtomicU64,
  intercept_written: AtomicU64,
  /// Packets an intercept passed on that were dropped because the consumer's ring was full.
  pass_dropped: AtomicU64,
  /// Set when a thread panicked or the device went away: the error both directions end with.
  failed: Mutex<Option<Error>>,
  last_tx_error: Mutex<Option<Error>>,
  notices: Mutex<Vec<String>>,
}

/// One queue's ring and its two threads.
pub struct PacketRing {
  shared: Arc<Shared>,
  /// The queue, until close drops it (which closes the device's fd: the threads hold clones only while running).
  queue: Mutex<Option<Arc<dyn Queue>>>,
  threads: Mutex<Vec<JoinHandle<()>>>,
}

/// Packets per transmit batch before a new one is started.
const TX_BATCH_PACKETS: usize = 256;

impl PacketRing {
  /// Starts the reader and writer threads of `queue`. `notify` is called from those threads, at most once per armed
  /// wait; it must not block.
  pub fn start(queue: Box<dyn Queue>, cfg: RingConfig, notify: Notify) -> Result<PacketRing> {
    let max_frame = queue.max_frame();
    cfg.validate(max_frame)?;
    let queue: Arc<dyn Queue> = Arc::from(queue);
    let pool = Arc::new(SlabPool::new(cfg.slab_bytes + max_frame, cfg.memory_budget));
    let shared = Arc::new(Shared {
      cfg,
      max_frame,
      inline_writes: queue.writes_never_block(),
      pool,
      rx: Mutex::new(RxState {
        batches: VecDeque::new(),
        waiting: false,
        ended: false,
        error: None,
      }),
      rx_space: Condvar::new(),
      tx: Mutex::new(TxState {
        batches: VecDeque::new(),
        spare: Vec::new(),
        bytes: 0,
        waiting: false,
        closing: false,
        writer_done: false,
        writing: false,
        failed: None,
      }),
      tx_cv: Condvar::new(),
      counters: Counters::default(),
      notify,
      closing: AtomicBool::new(false),
      intercept: std::sync::RwLock::new(None),
      intercepted: AtomicU64::new(0),
      intercept_written: AtomicU64::new(0),
      pass_dropped: AtomicU64::new(0),
      failed: Mutex::new(None),
      last_tx_error: Mutex::new(None),
      notices: Mutex::new(Vec::new()),
    });
    let spawn = |name: &'static str, f: fn(&Arc<Shared>, &Arc<dyn Queue>)| {
      let (s, q) = (shared.clone(), queue.clone());
      std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
          // A panic must not leave the consumer waiting for a thread that is gone: end the queue with it.
          if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(&s, &q))) {
            fail(&s, &*q, panic_error(name, &*p));
            if name == "tunkit-rx" {
              end_reads(&s, None);
            } else {
              end_writes(&s);
            }
          }
        })
        .map_err(|e| Error::os("pthread_create", &e, "starting the tunkit packet threads"))
    };
    let reader = spawn("tunkit-rx", reader_loop)?;
    let writer = match spawn("tunkit-tx", writer_loop) {
      Ok(w) => w,
      Err(e) => {
        queue.wake();
        shared.closing.store(true, Relaxed);
        shared.pool.close();
        let _ = reader.join();
        return Err(e);
      }
    };
    Ok(PacketRing {
      shared,
      queue: Mutex::new(Some(queue)),
      threads: Mutex::new(vec![reader, writer]),
    })
  }

  /// Takes the next batch without blocking, or arms [`RingEvent::Readable`].
  pub fn pull(&self) -> Pull {
    let s = &self.shared;
    let mut rx = lock(&s.rx);
    if let Some((data, lens)) = rx.batches.pop_front() {
      let was_full = rx.batches.len() + 1 >= s.cfg.ring_batches;
      drop(rx);
      if was_full {
        s.rx_space.notify_one();
      }
      return Pull::Batch(
        SlabGuard {
          data,
          pool: s.pool.clone(),
        },
        lens,
      );
    }
    if rx.ended {
      return Pull::Ended(rx.error.clone());
    }
    rx.waiting = true;
    Pull::Empty
  }

  /// Takes `packets` (`total_bytes` in all) for the device as one unit. When nothing is queued and the backend's
  /// writes never block, they are written at once on this thread, straight from the caller's memory; otherwise they
  /// are copied into the transmit ring for the writer thread. Either way the caller's memory is free again when this
  /// returns. Over the ring's budget the packets are still taken and [`Sent::OverBudget`] arms
  /// [`RingEvent::Writable`]; past twice the budget nothing is taken and the error is `QueueFull`. An empty ring
  /// always takes, so a batch larger than the whole ring still goes through. An empty `packets` is the consumer's
  /// question on `Writable` (see [`Sent`]): it reports a closed or failed ring like any send.
  pub fn send(&self, packets: &[&[u8]], total_bytes: usize) -> Result<Sent> {
    let s = &self.shared;
    let mut tx = lock(&s.tx);
    if let Some(e) = &tx.failed {
      return Err(e.clone());
    }
    if tx.closing {
      return Err(Error::closed("write"));
    }
    let budget = s.cfg.tx_ring_bytes;
    if packets.is_empty() {
      // Asked on `Writable`: the event may have been overtaken by sends over budget, which it is not for.
      return Ok(if must_wait(&tx, budget) {
        Sent::OverBudget
      } else {
        Sent::Done
      });
    }
    if tx.bytes > 0 && tx.bytes + total_bytes > 2 * budget {
      tx.waiting = true;
      s.counters.tx_backpressure.fetch_add(1, Relaxed);
      return Err(Error::new(
        ErrorKind::QueueFull,
        format!(
          "write: {} bytes already wait for the device, past twice txRingBytes ({budget}); await earlier writes",
          tx.bytes
        ),
      ));
    }
    if tx.batches.is_empty() && !tx.writing && s.inline_writes {
      // Nothing is queued and the writer is idle: write on this thread, without a copy and without waking the
      // writer thread (a thread hop of latency). Only for backends whose writes never block.
      tx.writing = true;
      drop(tx);
      let queue = lock(&self.queue).clone();
      let mut panicked = None;
      if let Some(q) = queue {
        let write = || {
          if crate::testhooks::armed("panic-inline") {
            panic!("test hook panic-inline");
          }
          q.write_packets(packets)
        };
        match catch_unwind(AssertUnwindSafe(write)) {
          Ok(result) => {
            record_result(s, &*q, result, packets.len());
          }
          Err(p) => {
            let e = panic_error("inline write", &*p);
            fail(s, &*q, e.clone());
            panicked = Some(e);
          }
        }
      }
      let mut tx = lock(&s.tx);
      tx.writing = false;
      if !tx.batches.is_empty() || tx.closing {
        s.tx_cv.notify_all();
      }
      if let Some(e) = panicked.or_else(|| tx.failed.clone()) {
        return Err(e);
      }
      return Ok(Sent::Done);
    }
    let tx = &mut *tx;
    for pkt in packets.iter().copied() {
      let start_new = match tx.batches.back() {
        Some(b) => b.len() >= TX_BATCH_PACKETS,
        None => true,
      };
      if start_new {
        let mut b = tx.spare.pop().unwrap_or_default();
        b.clear();
        tx.batches.push_back(b);
      }
      tx.batches.back_mut().expect("a batch was just ensured").push(pkt);
    }
    tx.bytes += total_bytes;
    s.tx_cv.notify_one();
    if tx.bytes > budget {
      tx.waiting = true;
      s.counters.tx_backpressure.fetch_add(1, Relaxed);
      return Ok(Sent::OverBudget);
    }
    Ok(Sent::Done)
  }

  /// The ring's counters.
  pub fn stats(&self) -> RingStats {
    let s = &self.shared;
    let c = &s.counters;
    let queued = lock(&s.rx).batches.len() as u64;
    let tx_queued = lock(&s.tx).bytes as u64;
    let backend = lock(&self.queue)
      .as_ref()
      .map(|q| q.counters())
      .unwrap_or_default();
    RingStats {
      rx_packets: c.rx_packets.load(Relaxed),
      rx_bytes: c.rx_bytes.load(Relaxed),
      rx_batches: c.rx_batches.load(Relaxed),
      rx_stalls: c.rx_stalls.load(Relaxed),
      rx_queued_batches: queued,
      rx_live_bytes: s.pool.live_bytes.load(Relaxed) as u64,
      tx_packets: c.tx_packets.load(Relaxed),
      tx_bytes: c.tx_bytes.load(Relaxed),
      tx_batches: c.tx_batches.load(Relaxed),
      tx_errors: c.tx_errors.load(Relaxed),
      tx_backpressure: c.tx_backpressure.load(Relaxed),
      tx_queued_bytes: tx_queued,
      intercepted: s.intercepted.load(Relaxed),
      intercept_writes: s.intercept_written.load(Relaxed),
      pass_dropped: s.pass_dropped.load(Relaxed),
      backend,
    }
  }

  /// Notices the backend raised (each once), oldest first.
  pub fn take_notices(&self) -> Vec<String> {
    std::mem::take(&mut *lock(&self.shared.notices))
  }

  /// The last error the device gave for an outgoing packet, if any (taken: a second call returns `None`).
  pub fn take_tx_error(&self) -> Option<Error> {
    lock(&self.shared.last_tx_error).take()
  }

  /// Installs (or with `None` removes) processing that sees every batch on the reader thread before the consumer
  /// does. Takes effect from the next batch.
  pub fn set_intercept(&self, intercept: Option<Arc<dyn Intercept>>) {
    *self.shared.intercept.write().unwrap_or_else(|e| e.into_inner()) = intercept;
  }

  /// Whether batch buffers alive now (queued, or held by the consumer) take more than a quarter of the memory
  /// budget. A consumer that keeps packets pins the whole buffer of each; before the budget runs out and the reader
  /// stalls for good, it should copy the packets it hands on instead, so that only what it keeps stays alive.
  pub fn memory_pressure(&self) -> bool {
    let s = &self.shared;
    s.pool.live_bytes.load(Relaxed) > s.cfg.memory_budget / 4
  }

  /// Most packets one pulled batch can hold.
  pub fn batch_packets(&self) -> usize {
    self.shared.cfg.batch_packets
  }

  /// Largest frame the queue can produce.
  pub fn max_frame(&self) -> usize {
    self.shared.max_frame
  }

  /// Stops both threads: no more sends are accepted, queued outgoing packets get up to `close_flush` to be
  /// written, then the queue is woken, the threads joined and the free slabs released. Slabs still held by the
  /// consumer stay valid until their guards drop. Idempotent.
  pub fn close(&self) {
    let s = &self.shared;
    if s.closing.swap(true, Relaxed) {
      self.join();
      return;
    }
    {
      let mut tx = lock(&s.tx);
      tx.closing = true;
      s.tx_cv.notify_all();
      let deadline = Instant::now() + s.cfg.close_flush;
      while !tx.writer_done {
        let now = Instant::now();
        if now >= deadline {
          break;
        }
        tx = s
          .tx_cv
          .wait_timeout(tx, deadline - now)
          .map(|(g, _)| g)
          .unwrap_or_else(|e| e.into_inner().0);
      }
    }
    if let Some(q) = lock(&self.queue).as_ref() {
      q.wake();
    }
    s.pool.close();
    s.rx_space.notify_all();
    self.join();
    // The threads are gone and held the only other references: this closes the device's fd.
    drop(lock(&self.queue).take());
  }

  fn join(&self) {
    let threads = std::mem::take(&mut *lock(&self.threads));
    for t in threads {
      let _ = t.join();
    }
  }
}

impl Drop for PacketRing {
  fn drop(&mut self) {
    self.close();
  }
}

/// Consecutive transient read errors (anything but a closed or vanished device) the reader rides out, 10 ms
/// apart, before it ends the queue with the last one.
const READ_ERROR_RETRIES: u32 = 100;

fn reader_loop(s: &Arc<Shared>, queue: &Arc<dyn Queue>) {
  let mut transient = 0;
  // What an intercept writes back to the device, reused from batch to batch.
  let mut to_device = Batch::default();
  let end_error = loop {
    let Some(data) = s.pool.take(&s.counters.rx_stalls) else {
      break None;
    };
    let mut batch = Batch {
      data,
      lens: Vec::with_capacity(s.cfg.batch_packets),
    };
    // A queue that intercepts frames runs the intercept inside the read, frame by frame; on any other the
    // intercept sees each batch read.
    let per_frame = queue.intercepts_frames();
    let read = if per_frame {
      let mut counts = InterceptCounts::default();
      let r = queue.read_batch_with(&mut batch, s.cfg.batch_packets, &s.intercept, &mut counts);
      s.intercepted.fetch_add(counts.taken, Relaxed);
      if counts.writes.packets + counts.writes.errors > 0 {
        s.intercept_written.fetch_add(counts.writes.packets, Relaxed);
        record_write(s, counts.writes);
      }
      r
    } else {
      queue.read_batch(&mut batch, s.cfg.batch_packets)
    };
    match read {
      Ok(0) => {
        // Everything read was taken by the intercept.
        transient = 0;
        s.pool.give_back(batch.data);
        forward_notice(s, &**queue);
        continue;
      }
      Ok(_) => transient = 0,
      Err(e) => {
        s.pool.give_back(batch.data);
        match e.kind() {
          ErrorKind::Closed => break None,
          ErrorKind::Gone => break Some(e),
          _ if transient < READ_ERROR_RETRIES && !s.closing.load(Relaxed) => {
            transient += 1;
            std::thread::sleep(Duration::from_millis(10));
            continue;
          }
          _ => break Some(e),
        }
      }
    }
    if crate::testhooks::armed("panic-reader") {
      panic!("test hook panic-reader");
    }
    forward_notice(s, &**queue);
    let intercept = s.intercept.read().unwrap_or_else(|e| e.into_inner()).clone();
    let intercepting = intercept.is_some();
    if let Some(icpt) = intercept.filter(|_| !per_frame) {
      let before = batch.lens.len();
      to_device.clear();
      icpt.process(&mut batch, &mut to_device);
      s.intercepted
        .fetch_add((before - batch.lens.len()) as u64, Relaxed);
      if !to_device.is_empty() {
        s.intercept_written.fetch_add(to_device.len() as u64, Relaxed);
        let n = to_device.len();
        if !record_result(s, &**queue, queue.write_batch(&to_device), n) {
          s.pool.give_back(batch.data);
          break None;
        }
      }
      if batch.lens.is_empty() {
        s.pool.give_back(batch.data);
        continue;
      }
    }
    let c = &s.counters;
    c.rx_packets.fetch_add(batch.lens.len() as u64, Relaxed);
    c.rx_bytes.fetch_add(batch.data.len() as u64, Relaxed);
    c.rx_batches.fetch_add(1, Relaxed);
    let data = if batch.data.len() < s.cfg.copy_below {
      let small = s.pool.copy_of(&batch.data, &c.rx_stalls);
      s.pool.give_back(batch.data);
      match small {
        Some(small) => small,
        None => break None,
      }
    } else {
      batch.data
    };

    let mut rx = lock(&s.rx);
    if intercepting && rx.batches.len() >= s.cfg.ring_batches {
      // With a stack on this queue the reader must not stop for a consumer that does not read what the stack
      // passes on: the stack's own flows would stall with it. The passed packets are dropped and counted instead.
      drop(rx);
      s.pass_dropped.fetch_add(batch.lens.len() as u64, Relaxed);
      s.pool.give_back(data);
      continue;
    }
    if rx.batches.len() >= s.cfg.ring_batches {
      c.rx_stalls.fetch_add(1, Relaxed);
    }
    while rx.batches.len() >= s.cfg.ring_batches && !s.closing.load(Relaxed) {
      rx = s
        .rx_space
        .wait_timeout(rx, Duration::from_millis(100))
        .map(|(g, _)| g)
        .unwrap_or_else(|e| e.into_inner().0);
    }
    if s.closing.load(Relaxed) {
      drop(rx);
      s.pool.give_back(data);
      break None;
    }
    rx.batches.push_back((data, batch.lens));
    let wake = std::mem::take(&mut rx.waiting);
    drop(rx);
    if wake {
      (s.notify)(RingEvent::Readable);
    }
  };
  if let Some(e) = &end_error {
    if e.kind() == ErrorKind::Gone {
      // The writer gets the same error, so both directions end with one code.
      fail(s, &**queue, e.clone());
    }
  }
  end_reads(s, end_error);
}

/// Marks the read side ended, with the ring's failure or else `error` as the reason (none: a plain close), and
/// wakes a waiting consumer. Batches already queued are still handed out first.
fn end_reads(s: &Shared, error: Option<Error>) {
  let failed = lock(&s.failed).clone();
  let mut rx = lock(&s.rx);
  rx.ended = true;
  rx.error = failed.or(error);
  let wake = std::mem::take(&mut rx.waiting);
  drop(rx);
  if wake {
    (s.notify)(RingEvent::Ended);
  }
}

fn writer_loop(s: &Arc<Shared>, queue: &Arc<dyn Queue>) {
  loop {
    let mut tx = lock(&s.tx);
    while (tx.batches.is_empty() || tx.writing)
      && !(tx.closing && tx.batches.is_empty())
      && tx.failed.is_none()
    {
      tx = s.tx_cv.wait(tx).unwrap_or_else(|e| e.into_inner());
    }
    if tx.failed.is_some() {
      break;
    }
    let Some(batch) = tx.batches.pop_front() else {
      break;
    };
    tx.writing = true;
    drop(tx);

    if crate::testhooks::armed("panic-writer") {
      panic!("test hook panic-writer");
    }
    let gone = !record_result(s, &**queue, queue.write_batch(&batch), batch.len());

    let mut tx = lock(&s.tx);
    tx.writing = false;
    tx.bytes -= batch.data.len();
    if tx.spare.len() < 4 {
      tx.spare.push(batch);
    }
    let wake = tx.waiting && !must_wait(&tx, s.cfg.tx_ring_bytes);
    if wake {
      tx.waiting = false;
    }
    drop(tx);
    if wake {
      (s.notify)(RingEvent::Writable);
    }
    if gone {
      break;
    }
  }
  end_writes(s);
}

/// Whether writes that were over budget must go on waiting: one was (`waiting`, cleared as `Writable` is raised)
/// and the ring has not drained to half of `budget` since. The writer raises `Writable` when this turns false; an
/// empty send answers it.
fn must_wait(tx: &TxState, budget: usize) -> bool {
  tx.waiting && tx.bytes > budget / 2
}

/// Marks the write side ended: sends are refused from now on; after a failure what is still queued cannot be
/// written (counted as errors, not pretended); a consumer waiting for room is woken to find out.
fn end_writes(s: &Shared) {
  let failed = lock(&s.failed).clone();
  let mut tx = lock(&s.tx);
  if tx.failed.is_none() {
    tx.failed = failed;
  }
  if tx.failed.is_some() || !tx.batches.is_empty() {
    let lost: usize = tx.batches.iter().map(|b| b.len()).sum();
    s.counters.tx_errors.fetch_add(lost as u64, Relaxed);
    tx.batches.clear();
    tx.bytes = 0;
  }
  tx.writer_done = true;
  tx.closing = true;
  tx.writing = false;
  let wake = std::mem::take(&mut tx.waiting);
  drop(tx);
  s.tx_cv.notify_all();
  if wake {
    (s.notify)(RingEvent::Writable);
  }
}

/// Ends the queue for good with `e` (a panic, or the device gone): both directions report it, and the queue is
/// woken so that both threads stop.
fn fail(s: &Shared, queue: &dyn Queue, e: Error) {
  {
    let mut f = lock(&s.failed);
    if f.is_none() {
      *f = Some(e.clone());
    }
  }
  {
    let mut tx = lock(&s.tx);
    if tx.failed.is_none() {
      tx.failed = Some(e);
    }
  }
  s.tx_cv.notify_all();
  s.closing.store(true, Relaxed);
  s.pool.close();
  s.rx_space.notify_all();
  queue.wake();
}

/// The error a panic in tunkit's own code becomes.
fn panic_error(place: &str, payload: &(dyn std::any::Any + Send)) -> Error {
  let msg = payload
    .downcast_ref::<&str>()
    .map(|s| s.to_string())
    .or_else(|| payload.downcast_ref::<String>().cloned())
    .unwrap_or_else(|| "unknown panic".into());
  Error::new(
    ErrorKind::Internal,
    format!("tunkit internal error in {place} (panic: {msg}); the queue is closed"),
  )
}

/// Records what a write of `packets` packets did. Returns false when the device is gone (or the queue was closed
/// under it); any other error is counted and the writer goes on.
fn record_result(s: &Shared, queue: &dyn Queue, result: Result<WriteReport>, packets: usize) -> bool {
  forward_notice(s, queue);
  match result {
    Ok(report) => {
      record_write(s, report);
      true
    }
    Err(e) => {
      s.counters.tx_errors.fetch_add(packets as u64, Relaxed);
      let end = matches!(e.kind(), ErrorKind::Closed | ErrorKind::Gone);
      if e.kind() == ErrorKind::Gone {
        fail(s, queue, e.clone());
      }
      *lock(&s.last_tx_error) = Some(e);
      !end
    }
  }
}

fn forward_notice(s: &Shared, queue: &dyn Queue) {
  if let Some(n) = queue.take_notice() {
    lock(&s.notices).push(n);
    (s.notify)(RingEvent::Notice);
  }
}

fn record_write(s: &Shared, report: WriteReport) {
  let c = &s.counters;
  c.tx_packets.fetch_add(report.packets, Relaxed);
  c.tx_bytes.fetch_add(report.bytes, Relaxed);
  c.tx_batches.fetch_add(1, Relaxed);
  c.tx_errors.fetch_add(report.errors, Relaxed);
  if let Some(e) = report.last_error {
    *lock(&s.last_tx_error) = Some(e);
  }
}

/// Locks, ignoring poisoning: every critical section here leaves the state consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
  m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod intercept_tests;
