use super::*;
use std::sync::mpsc;

/// What the scripted queue does on its next read or write.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Act {
  Normal,
  Panic,
  /// A transient error (`ErrorKind::Os`), once, then normal.
  Transient,
  /// The device vanished (`ErrorKind::Gone`), for good.
  Gone,
}

/// A queue whose reads hand out one 20-byte packet per call (when `feed` allows), and whose reads and writes
/// misbehave as scripted.
struct Scripted {
  read: Mutex<Act>,
  write: Mutex<Act>,
  feed: Mutex<u32>,
  fed: Condvar,
  woken: AtomicBool,
  written: AtomicU64,
  inline: bool,
  /// While true, writes wait (a device that is momentarily full).
  hold: Mutex<bool>,
}

impl Scripted {
  fn new(inline: bool) -> Arc<Scripted> {
    Arc::new(Scripted {
      read: Mutex::new(Act::Normal),
      write: Mutex::new(Act::Normal),
      feed: Mutex::new(0),
      fed: Condvar::new(),
      woken: AtomicBool::new(false),
      written: AtomicU64::new(0),
      inline,
      hold: Mutex::new(false),
    })
  }
  fn feed(&self, n: u32) {
    *lock(&self.feed) += n;
    self.fed.notify_all();
  }
  fn act(m: &Mutex<Act>) -> Act {
    let mut a = lock(m);
    let now = *a;
    if now == Act::Transient {
      *a = Act::Normal;
    }
    now
  }
}

struct Handle(Arc<Scripted>);

impl Queue for Handle {
  fn read_batch(&self, batch: &mut Batch, _max: usize) -> Result<usize> {
    let q = &self.0;
    let mut feed = lock(&q.feed);
    loop {
      if q.woken.load(Relaxed) {
        return Err(Error::closed("read"));
      }
      if *feed > 0 {
        break;
      }
      feed = q.fed.wait_timeout(feed, Duration::from_millis(20)).unwrap().0;
    }
    *feed -= 1;
    drop(feed);
    match Scripted::act(&q.read) {
      Act::Normal => {}
      Act::Panic => panic!("scripted read panic"),
      Act::Transient => return Err(Error::new(ErrorKind::Os, "scripted ENOMEM")),
      Act::Gone => return Err(Error::new(ErrorKind::Gone, "scripted: device removed")),
    }
    batch.push(&[0x45; 20]);
    Ok(1)
  }
  fn write_batch(&self, batch: &Batch) -> Result<WriteReport> {
    let q = &self.0;
    let mut hold = lock(&q.hold);
    while *hold && !q.woken.load(Relaxed) {
      hold = q.fed.wait_timeout(hold, Duration::from_millis(20)).unwrap().0;
    }
    drop(hold);
    if q.woken.load(Relaxed) {
      return Err(Error::closed("write"));
    }
    match Scripted::act(&q.write) {
      Act::Normal => {}
      Act::Panic => panic!("scripted write panic"),
      Act::Transient => return Err(Error::new(ErrorKind::Os, "scripted ENOBUFS")),
      Act::Gone => return Err(Error::new(ErrorKind::Gone, "scripted: device removed")),
    }
    q.written.fetch_add(batch.len() as u64, Relaxed);
    Ok(WriteReport {
      packets: batch.len() as u64,
      bytes: batch.data.len() as u64,
      ..WriteReport::default()
    })
  }
  fn max_frame(&self) -> usize {
    1500
  }
  fn writes_never_block(&self) -> bool {
    self.0.inline
  }
  fn wake(&self) {
    self.0.woken.store(true, Relaxed);
    self.0.fed.notify_all();
  }
}

fn start(q: &Arc<Scripted>) -> (PacketRing, mpsc::Receiver<RingEvent>) {
  let (tx, rx) = mpsc::channel();
  let tx = Mutex::new(tx);
  let cfg = RingConfig {
    slab_bytes: 4096,
    memory_budget: 1 << 20,
    tx_ring_bytes: 65536,
    close_flush: Duration::from_millis(200),
    ..RingConfig::default()
  };
  let notify = Box::new(move |e| {
    let _ = lock(&tx).send(e);
  });
  (
    PacketRing::start(Box::new(Handle(q.clone())), cfg, notify).unwrap(),
    rx,
  )
}

/// Pulls until the ring ends (returning its error) or `deadline` passes (panics).
fn until_end(r: &PacketRing, ev: &mpsc::Receiver<RingEvent>) -> Option<Error> {
  let deadline = Instant::now() + Duration::from_secs(5);
  loop {
    assert!(Instant::now() < deadline, "the ring never ended");
    match r.pull() {
      Pull::Batch(..) => {}
      Pull::Empty => {
        let _ = ev.recv_timeout(Duration::from_millis(50));
      }
      Pull::Ended(e) => return e,
    }
  }
}

fn wait_for(mut cond: impl FnMut() -> bool) {
  let deadline = Instant::now() + Duration::from_secs(5);
  while !cond() {
    assert!(Instant::now() < deadline, "condition never held");
    std::thread::sleep(Duration::from_millis(2));
  }
}

const PKT: &[u8] = &[0x45; 20];

#[test]
fn a_reader_panic_ends_both_directions_with_internal() {
  let q = Scripted::new(false);
  let (r, ev) = start(&q);
  assert!(matches!(r.pull(), Pull::Empty));
  *lock(&q.read) = Act::Panic;
  q.feed(1);
  // The waiting consumer is woken (Ended), and the pull says why.
  assert_eq!(ev.recv_timeout(Duration::from_secs(5)).unwrap(), RingEvent::Ended);
  let e = until_end(&r, &ev).expect("an error");
  assert_eq!(e.kind(), ErrorKind::Internal, "{e}");
  assert!(e.message().contains("scripted read panic"), "{e}");
  assert_eq!(r.send(&[PKT], 20).unwrap_err().kind(), ErrorKind::Internal);
  r.close();
}

#[test]
fn a_writer_panic_ends_the_queue_and_wakes_a_waiting_writer() {
  let q = Scripted::new(false);
  let (r, ev) = start(&q);
  *lock(&q.write) = Act::Panic;
  // Over budget at once: one send larger than the budget is taken and arms Writable.
  let big = vec![0x45u8; 1400];
  let batch: Vec<&[u8]> = vec![&big; 60];
  assert_eq!(r.send(&batch, 60 * 1400).unwrap(), Sent::OverBudget);
  wait_for(|| r.send(&[PKT], 20).is_err_and(|e| e.kind() == ErrorKind::Internal));
  let mut woke = false;
  while let Ok(e) = ev.recv_timeout(Duration::from_millis(200)) {
    woke |= e == RingEvent::Writable;
  }
  assert!(woke, "the waiting writer was not told");
  let e = until_end(&r, &ev).expect("an error");
  assert_eq!(e.kind(), ErrorKind::Internal, "{e}");
  let t = Instant::now();
  r.close();
  assert!(t.elapsed() < Duration::from_secs(1));
}

#[test]
fn an_inline_write_panic_is_an_internal_error_not_an_unwind() {
  let q = Scripted::new(true);
  let (r, ev) = start(&q);
  assert_eq!(r.send(&[PKT], 20).unwrap(), Sent::Done);
  assert_eq!(q.written.load(Relaxed), 1, "the inline path wrote on this thread");
  *lock(&q.write) = Act::Panic;
  let e = r.send(&[PKT], 20).unwrap_err();
  assert_eq!(e.kind(), ErrorKind::Internal, "{e}");
  assert_eq!(until_end(&r, &ev).unwrap().kind(), ErrorKind::Internal);
  assert_eq!(r.send(&[PKT], 20).unwrap_err().kind(), ErrorKind::Internal);
  r.close();
}

#[test]
fn transient_errors_do_not_stop_the_threads() {
  let q = Scripted::new(false);
  let (r, ev) = start(&q);
  *lock(&q.write) = Act::Transient;
  *lock(&q.read) = Act::Transient;
  r.send(&[PKT], 20).unwrap();
  wait_for(|| r.stats().tx_errors == 1);
  r.send(&[PKT, PKT], 40).unwrap();
  wait_for(|| q.written.load(Relaxed) == 2);
  q.feed(2);
  let deadline = Instant::now() + Duration::from_secs(5);
  let mut got = 0;
  while got < 1 {
    assert!(
      Instant::now() < deadline,
      "no packet after a transient read error"
    );
    match r.pull() {
      Pull::Batch(_, lens) => got += lens.len(),
      Pull::Empty => {
        let _ = ev.recv_timeout(Duration::from_millis(50));
      }
      Pull::Ended(e) => panic!("ended on a transient error: {e:?}"),
    }
  }
  assert!(r.take_tx_error().is_some_and(|e| e.message().contains("ENOBUFS")));
  r.close();
  assert!(matches!(r.pull(), Pull::Ended(None)));
}

#[test]
fn a_vanished_device_ends_reads_and_writes_with_one_code() {
  let q = Scripted::new(false);
  let (r, ev) = start(&q);
  *lock(&q.write) = Act::Gone;
  r.send(&[PKT], 20).unwrap();
  let e = until_end(&r, &ev).expect("an error");
  assert_eq!(e.kind(), ErrorKind::Gone, "{e}");
  assert_eq!(r.send(&[PKT], 20).unwrap_err().kind(), ErrorKind::Gone);
  r.close();

  let q = Scripted::new(false);
  let (r, ev) = start(&q);
  *lock(&q.read) = Act::Gone;
  q.feed(1);
  assert_eq!(until_end(&r, &ev).unwrap().kind(), ErrorKind::Gone);
  assert_eq!(r.send(&[PKT], 20).unwrap_err().kind(), ErrorKind::Gone);
  r.close();
}

#[test]
fn sends_past_twice_the_budget_are_refused_whole() {
  let q = Scripted::new(false);
  *lock(&q.hold) = true;
  let (r, ev) = start(&q);
  let big = vec![0x45u8; 1400];
  // An empty ring takes any batch, even one larger than twice the budget (64 KiB here).
  let huge: Vec<&[u8]> = vec![&big; 200];
  assert_eq!(r.send(&huge, 200 * 1400).unwrap(), Sent::OverBudget);
  let e = r.send(&[&big], 1400).unwrap_err();
  assert_eq!(e.kind(), ErrorKind::QueueFull, "{e}");
  // Let the writer drain that one, then fill again with the writer held.
  *lock(&q.hold) = false;
  q.fed.notify_all();
  wait_for(|| r.stats().tx_queued_bytes == 0);
  while ev.try_recv().is_ok() {}
  *lock(&q.hold) = true;
  let ten: Vec<&[u8]> = vec![&big; 10];
  let mut outcomes = Vec::new();
  loop {
    match r.send(&ten, 14_000) {
      Ok(s) => outcomes.push(s),
      Err(e) => {
        assert_eq!(e.kind(), ErrorKind::QueueFull, "{e}");
        break;
      }
    }
    assert!(outcomes.len() < 100, "never refused");
  }
  let queued = r.stats().tx_queued_bytes;
  assert!(queued <= 2 * 65536, "{queued} queued past twice the budget");
  assert!(
    outcomes.contains(&Sent::Done) && outcomes.contains(&Sent::OverBudget),
    "{outcomes:?}"
  );
  // The refused send took nothing; everything taken is written once the device has room.
  assert_eq!(r.send(&ten, 14_000).unwrap_err().kind(), ErrorKind::QueueFull);
  assert_eq!(r.stats().tx_queued_bytes, queued);
  *lock(&q.hold) = false;
  q.fed.notify_all();
  let want = 200 + 10 * outcomes.len() as u64;
  wait_for(|| q.written.load(Relaxed) == want);
  assert_eq!(
    ev.recv_timeout(Duration::from_secs(5)).unwrap(),
    RingEvent::Writable
  );
  r.close();
}

/// A device whose `write_batch` calls each wait for a permit (or for the gate to be opened), and that counts the
/// calls begun: a test knows which packets the writer took in each batch and when each batch is written.
#[derive(Default)]
struct Gate {
  permits: Mutex<u32>,
  changed: Condvar,
  begun: AtomicU64,
  open: AtomicBool,
  woken: AtomicBool,
}

impl Gate {
  fn permit(&self) {
    *lock(&self.permits) += 1;
    self.changed.notify_all();
  }
  fn open(&self) {
    self.open.store(true, Relaxed);
    let _guard = lock(&self.permits);
    self.changed.notify_all();
  }
}

struct Gated(Arc<Gate>);

impl Queue for Gated {
  fn read_batch(&self, _batch: &mut Batch, _max: usize) -> Result<usize> {
    let mut permits = lock(&self.0.permits);
    while !self.0.woken.load(Relaxed) {
      permits = self.0.changed.wait(permits).unwrap();
    }
    Err(Error::closed("read"))
  }
  fn write_batch(&self, batch: &Batch) -> Result<WriteReport> {
    let g = &self.0;
    g.begun.fetch_add(1, Relaxed);
    let mut permits = lock(&g.permits);
    while *permits == 0 && !g.open.load(Relaxed) && !g.woken.load(Relaxed) {
      permits = g.changed.wait(permits).unwrap();
    }
    if g.woken.load(Relaxed) {
      return Err(Error::closed("write"));
    }
    if !g.open.load(Relaxed) {
      *permits -= 1;
    }
    Ok(WriteReport {
      packets: batch.len() as u64,
      bytes: batch.data.len() as u64,
      ..WriteReport::default()
    })
  }
  fn max_frame(&self) -> usize {
    1500
  }
  fn wake(&self) {
    self.0.woken.store(true, Relaxed);
    let _guard = lock(&self.0.permits);
    self.0.changed.notify_all();
  }
}

/// A consumer that writes one packet per write and keeps `window` writes in flight, the way JavaScript does
/// (`src/queue.ts` and the window of `__test__/reliability.spec.ts`): a write over budget waits for `Writable`;
/// the event, handled only while the consumer is blocked (it runs on the consumer's own thread, later), lets every
/// waiting write go on unless the confirming empty send says they still wait.
struct Windowed<'a> {
  ring: &'a PacketRing,
  window: usize,
  settled: Vec<bool>,
  in_flight: VecDeque<usize>,
  awaited: Option<usize>,
  waiters: Vec<usize>,
  most_queued: u64,
}

impl Windowed<'_> {
  const PKT: [u8; 1400] = [0x45; 1400];

  fn blocked(&self) -> bool {
    self.awaited.is_some_and(|w| !self.settled[w])
  }
  /// `pending.push(write(p)); if (pending.length >= window) await pending.shift()`.
  fn write(&mut self) -> Result<()> {
    assert!(!self.blocked());
    let n = self.settled.len();
    let sent = self.ring.send(&[&Self::PKT], Self::PKT.len())?;
    self.settled.push(sent == Sent::Done);
    if sent == Sent::OverBudget {
      self.waiters.push(n);
    }
    self.in_flight.push_back(n);
    self.awaited = None;
    if self.in_flight.len() >= self.window {
      self.awaited = self.in_flight.pop_front();
    }
    self.most_queued = self.most_queued.max(self.ring.stats().tx_queued_bytes);
    Ok(())
  }
  fn write_until_blocked(&mut self) -> Result<usize> {
    let mut n = 0;
    while !self.blocked() {
      self.write()?;
      n += 1;
    }
    Ok(n)
  }
  /// What `Writable` does: confirm, then settle every waiting write.
  fn writable(&mut self) -> Result<()> {
    if self.waiters.is_empty() || self.ring.send(&[], 0)? == Sent::OverBudget {
      return Ok(());
    }
    for w in self.waiters.drain(..) {
      self.settled[w] = true;
    }
    Ok(())
  }
}

/// The reliability test's numbers: a 64 KiB budget, 1400-byte packets, 40 writes in flight. What the consumer can
/// queue is the budget (46 packets) plus its 40 writes (86 packets, 120 400 bytes), under twice the budget (93
/// packets). A `Writable` raised while the consumer still writes, and handled once it has gone over budget again,
/// must not let its newer writes go on: before the consumer confirmed, it did, and the next 40 writes hit
/// `QueueFull` at 130 200 bytes (93 packets), as a loaded CI run did.
#[test]
fn a_writable_event_overtaken_by_newer_writes_does_not_let_them_go_on() {
  let gate = Arc::new(Gate::default());
  let (tx, ev) = mpsc::channel();
  let tx = Mutex::new(tx);
  let cfg = RingConfig {
    slab_bytes: 4096,
    memory_budget: 1 << 20,
    tx_ring_bytes: 65536,
    close_flush: Duration::from_millis(200),
    ..RingConfig::default()
  };
  let notify = Box::new(move |e| {
    let _ = lock(&tx).send(e);
  });
  let r = PacketRing::start(Box::new(Gated(gate.clone())), cfg, notify).unwrap();
  const PKT: usize = 1400;
  const WINDOW: usize = 40;
  let mut c = Windowed {
    ring: &r,
    window: WINDOW,
    settled: Vec::new(),
    in_flight: VecDeque::new(),
    awaited: None,
    waiters: Vec::new(),
    most_queued: 0,
  };
  let queued = |r: &PacketRing| r.stats().tx_queued_bytes as usize / PKT;

  // 24 packets in one send: the writer takes them as one batch and waits for the device.
  let first = [&Windowed::PKT[..]; 24];
  assert_eq!(r.send(&first, 24 * PKT).unwrap(), Sent::Done);
  wait_for(|| gate.begun.load(Relaxed) == 1);
  // 22 writes within the budget (46 packets queued), the 23rd over it: it waits for `Writable`.
  for _ in 0..23 {
    c.write().unwrap();
  }
  assert_eq!((queued(&r), c.waiters.len(), c.blocked()), (47, 1, false));
  // The device takes the first batch: 23 packets are left, under half the budget, so `Writable` is raised. The
  // writer takes those 23 as its next batch.
  gate.permit();
  wait_for(|| gate.begun.load(Relaxed) == 2);
  assert_eq!(
    ev.recv_timeout(Duration::from_secs(5)).unwrap(),
    RingEvent::Writable
  );
  // The consumer did not wait yet: it writes on, 39 more (23 within the budget, 16 over it), until it must wait
  // for its write over budget. Only then is the event handled, with 62 packets queued.
  assert_eq!(c.write_until_blocked().unwrap(), WINDOW - 1);
  assert_eq!((queued(&r), c.waiters.len()), (62, 17));
  c.writable().unwrap();
  // The writes must go on waiting, the device still holding the ring at 62 packets. Had they gone on, the
  // consumer's next writes would have been refused at 93 packets (`QueueFull`, 130 200 bytes).
  match c.write_until_blocked() {
    Ok(0) => {}
    other => panic!("a Writable raised at 23 packets queued let the writes go on at 62: {other:?}"),
  }
  assert!(
    c.blocked(),
    "a Writable raised at 23 packets queued let the writes go on at 62"
  );

  // From here on the device takes everything; the consumer writes 500 packets in all, handling each event once
  // it waits. It never queues more than the budget and its window, and is never refused.
  gate.open();
  while c.settled.len() < 500 {
    if c.blocked() {
      let e = ev
        .recv_timeout(Duration::from_secs(5))
        .expect("a waiting consumer was never told");
      assert_eq!(e, RingEvent::Writable);
      c.writable().unwrap();
    } else {
      c.write()
        .unwrap_or_else(|e| panic!("write {} refused: {e}", c.settled.len()));
    }
  }
  let bound = (65536 + WINDOW * PKT) as u64;
  assert!(
    c.most_queued <= bound,
    "{} bytes queued, past {bound}",
    c.most_queued
  );
  wait_for(|| r.stats().tx_packets == 24 + 500);
  r.close();
}
