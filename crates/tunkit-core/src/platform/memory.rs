//! An in-memory device pair behind the backend contract: what one side writes, the other side reads. It lets the
//! ring, the binding and the TypeScript facade be tested and benchmarked without privileges or a kernel.
//!
//! Unlike a real device it is lossless: a writer waits while the peer's inbox is full, so backpressure travels back
//! to the sender's transmit ring. A packet larger than the MTU is refused like a device would refuse it.

use crate::backend::{Batch, Control, LinkInfo, Opened, Queue, WriteReport};
use crate::error::{Error, ErrorKind, Result};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

struct Inbox {
  packets: Mutex<VecDeque<Vec<u8>>>,
  changed: Condvar,
  capacity: usize,
  closed: AtomicBool,
}

impl Inbox {
  fn new(capacity: usize) -> Arc<Inbox> {
    Arc::new(Inbox {
      packets: Mutex::new(VecDeque::new()),
      changed: Condvar::new(),
      capacity,
      closed: AtomicBool::new(false),
    })
  }
}

struct MemoryQueue {
  name: String,
  inbox: Arc<Inbox>,
  peer: Arc<Inbox>,
  mtu: Arc<AtomicU32>,
}

impl Queue for MemoryQueue {
  fn read_batch(&self, batch: &mut Batch, max_packets: usize) -> Result<usize> {
    let mut q = self.inbox.packets.lock().unwrap_or_else(|e| e.into_inner());
    loop {
      if self.inbox.closed.load(Relaxed) {
        return Err(Error::closed(&format!("read on {}", self.name)));
      }
      if !q.is_empty() {
        break;
      }
      q = self
        .inbox
        .changed
        .wait_timeout(q, Duration::from_millis(200))
        .map(|(g, _)| g)
        .unwrap_or_else(|e| e.into_inner().0);
    }
    let mut n = 0;
    while n < max_packets && batch.data.capacity() - batch.data.len() >= self.max_frame() {
      let Some(p) = q.pop_front() else { break };
      batch.push(&p);
      n += 1;
    }
    drop(q);
    self.inbox.changed.notify_all();
    Ok(n)
  }

  fn write_batch(&self, batch: &Batch) -> Result<WriteReport> {
    let mut report = WriteReport::default();
    let mtu = self.mtu.load(Relaxed) as usize;
    let mut q = self.peer.packets.lock().unwrap_or_else(|e| e.into_inner());
    for pkt in batch.iter() {
      if pkt.len() > mtu {
        report.errors += 1;
        report.last_error = Some(Error::new(
          ErrorKind::PacketTooLarge,
          format!("write on {}: {} bytes exceed mtu {mtu}", self.name, pkt.len()),
        ));
        continue;
      }
      while q.len() >= self.peer.capacity {
        if self.inbox.closed.load(Relaxed) || self.peer.closed.load(Relaxed) {
          return Err(Error::closed(&format!("write on {}", self.name)));
        }
        q = self
          .peer
          .changed
          .wait_timeout(q, Duration::from_millis(200))
          .map(|(g, _)| g)
          .unwrap_or_else(|e| e.into_inner().0);
      }
      q.push_back(pkt.to_vec());
      report.packets += 1;
      report.bytes += pkt.len() as u64;
      self.peer.changed.notify_all();
    }
    Ok(report)
  }

  fn max_frame(&self) -> usize {
    crate::config::MAX_MTU as usize
  }

  fn wake(&self) {
    self.inbox.closed.store(true, Relaxed);
    let _guard = self.inbox.packets.lock().unwrap_or_else(|e| e.into_inner());
    self.inbox.changed.notify_all();
    self.peer.changed.notify_all();
  }
}

struct MemoryControl {
  name: String,
  mtu: Arc<AtomicU32>,
}

impl Control for MemoryControl {
  fn name(&self) -> String {
    self.name.clone()
  }
  fn link(&self) -> Result<LinkInfo> {
    Ok(LinkInfo {
      name: self.name.clone(),
      mtu: self.mtu.load(Relaxed),
      up: true,
      ..Default::default()
    })
  }
  fn set_mtu(&self, mtu: u32) -> Result<()> {
    crate::config::validate_mtu(mtu, false)?;
    self.mtu.store(mtu, Relaxed);
    Ok(())
  }
  fn events(&self) -> Result<Box<dyn crate::backend::EventSource>> {
    Err(Error::new(
      ErrorKind::Unsupported,
      format!("events on {}: the in-memory device has no link events", self.name),
    ))
  }
}

/// Two connected in-memory devices named `mem0`/`mem1`, each with an inbox of `capacity` packets. They share one
/// MTU, changeable through either side's control.
pub fn pair(mtu: u32, capacity: usize) -> Result<(Opened, Opened)> {
  crate::config::validate_mtu(mtu, false)?;
  if capacity == 0 {
    return Err(Error::new(
      ErrorKind::InvalidArgument,
      "capacity must be at least 1",
    ));
  }
  let (a, b) = (Inbox::new(capacity), Inbox::new(capacity));
  let mtu = Arc::new(AtomicU32::new(mtu));
  let side = |name: &str, inbox: &Arc<Inbox>, peer: &Arc<Inbox>| Opened {
    queues: vec![Box::new(MemoryQueue {
      name: name.into(),
      inbox: inbox.clone(),
      peer: peer.clone(),
      mtu: mtu.clone(),
    })],
    control: Box::new(MemoryControl {
      name: name.into(),
      mtu: mtu.clone(),
    }),
  };
  Ok((side("mem0", &a, &b), side("mem1", &b, &a)))
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::ring::{PacketRing, Pull, RingConfig, RingEvent, Sent};
  use std::sync::mpsc;
  use std::time::Instant;

  fn ring(q: Box<dyn Queue>) -> (PacketRing, mpsc::Receiver<RingEvent>) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let cfg = RingConfig {
      memory_budget: 8 << 20,
      slab_bytes: 64 << 10,
      close_flush: Duration::from_millis(300),
      ..RingConfig::default()
    };
    let r = PacketRing::start(
      q,
      cfg,
      Box::new(move |e| {
        let _ = tx.lock().unwrap().send(e);
      }),
    )
    .unwrap();
    (r, rx)
  }

  fn pull_all(r: &PacketRing, ev: &mpsc::Receiver<RingEvent>, want: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while out.len() < want && Instant::now() < deadline {
      match r.pull() {
        Pull::Batch(slab, lens) => {
          let mut off = 0;
          for l in lens {
            out.push(slab.data()[off..off + l as usize].to_vec());
            off += l as usize;
          }
        }
        Pull::Empty => {
          let _ = ev.recv_timeout(Duration::from_millis(500));
        }
        Pull::Ended(e) => panic!("ended: {e:?}"),
      }
    }
    out
  }

  #[test]
  fn packets_cross_in_order_through_two_rings() {
    let (a, b) = pair(1500, 64).unwrap();
    let (ra, _ea) = ring(a.queues.into_iter().next().unwrap());
    let (rb, eb) = ring(b.queues.into_iter().next().unwrap());
    let pkts: Vec<Vec<u8>> = (0..5000u32)
      .map(|i| i.to_be_bytes().repeat(1 + (i % 300) as usize))
      .collect();
    let mut sent = 0;
    while sent < pkts.len() {
      let chunk = &pkts[sent..(sent + 100).min(pkts.len())];
      let total = chunk.iter().map(|p| p.len()).sum();
      match ra.send(&chunk.iter().map(|p| p.as_slice()).collect::<Vec<_>>(), total) {
        Ok(Sent::Done) => sent += chunk.len(),
        // Taken, but wait for the ring to drain before more.
        Ok(Sent::OverBudget) => {
          sent += chunk.len();
          std::thread::sleep(Duration::from_millis(1));
        }
        Err(e) if e.kind() == ErrorKind::QueueFull => std::thread::sleep(Duration::from_millis(1)),
        Err(e) => panic!("{e}"),
      }
    }
    let got = pull_all(&rb, &eb, pkts.len());
    assert_eq!(got.len(), pkts.len());
    assert!(got == pkts, "packets differ or are out of order");
    // The writer counts a batch after write_batch returns, which can be after the peer has read it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while ra.stats().tx_packets < 5000 && Instant::now() < deadline {
      std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(ra.stats().tx_packets, 5000);
    assert_eq!(rb.stats().rx_packets, 5000);
    ra.close();
    rb.close();
  }

  #[test]
  fn held_slabs_stay_intact_and_budget_bounds_memory() {
    let (a, b) = pair(1500, 1024).unwrap();
    let (ra, _ea) = ring(a.queues.into_iter().next().unwrap());
    let (rb, eb) = ring(b.queues.into_iter().next().unwrap());
    let pkt = vec![7u8; 1400];
    // Send until the reader has stalled on the budget while we hold every slab.
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while rb.stats().rx_stalls == 0 && Instant::now() < deadline {
      let _ = ra.send(&[pkt.as_slice(); 64], 64 * 1400);
      if let Pull::Batch(slab, lens) = rb.pull() {
        held.push((slab, lens));
      } else {
        let _ = eb.recv_timeout(Duration::from_millis(5));
      }
    }
    let st = rb.stats();
    assert!(st.rx_stalls > 0, "reader never stalled");
    assert!(
      st.rx_live_bytes <= 8 << 20,
      "live bytes {} above budget",
      st.rx_live_bytes
    );
    for (slab, _) in &held {
      assert!(slab.data().iter().all(|&b| b == 7));
    }
    drop(held);
    // Once slabs return, reading resumes: the reader takes more from the inbox.
    let before = rb.stats().rx_packets;
    let deadline = Instant::now() + Duration::from_secs(10);
    while rb.stats().rx_packets == before && Instant::now() < deadline {
      let _ = ra.send(&[pkt.as_slice(); 64], 64 * 1400);
      drop(pull_all(&rb, &eb, 1));
    }
    assert!(
      rb.stats().rx_packets > before,
      "reading did not resume after the slabs came back"
    );
    ra.close();
    rb.close();
  }

  #[test]
  fn copies_the_consumer_holds_count_against_the_budget() {
    let (a, b) = pair(1500, 1024).unwrap();
    let (ra, _ea) = ring(a.queues.into_iter().next().unwrap());
    let (tx, ev) = mpsc::channel();
    let tx = Mutex::new(tx);
    let budget = 2 << 20;
    let cfg = RingConfig {
      slab_bytes: 64 << 10,
      copy_below: 1 << 30, // every batch is copied
      memory_budget: budget,
      close_flush: Duration::from_millis(300),
      ..RingConfig::default()
    };
    let notify = Box::new(move |e| {
      let _ = tx.lock().unwrap().send(e);
    });
    let rb = PacketRing::start(b.queues.into_iter().next().unwrap(), cfg, notify).unwrap();
    let pkt = vec![9u8; 1400];
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while rb.stats().rx_stalls == 0 && Instant::now() < deadline {
      let _ = ra.send(&[pkt.as_slice(); 16], 16 * 1400);
      match rb.pull() {
        Pull::Batch(g, _) => held.push(g),
        _ => {
          let _ = ev.recv_timeout(Duration::from_millis(5));
        }
      }
    }
    let st = rb.stats();
    assert!(
      st.rx_stalls > 0,
      "the reader never stalled while every copy was held"
    );
    assert!(
      st.rx_live_bytes <= budget as u64,
      "{} live past the budget {budget}",
      st.rx_live_bytes
    );
    drop(held);
    ra.close();
    rb.close();
  }

  #[test]
  fn small_batches_are_copied_to_their_size_and_large_ones_are_not() {
    let (a, b) = pair(1500, 1024).unwrap();
    let (ra, _ea) = ring(a.queues.into_iter().next().unwrap());
    let (rb, eb) = ring(b.queues.into_iter().next().unwrap());
    let small = vec![4u8; 100];
    assert_eq!(ra.send(&[small.as_slice()], 100).unwrap(), Sent::Done);
    let deadline = Instant::now() + Duration::from_secs(5);
    let guard = loop {
      match rb.pull() {
        Pull::Batch(g, _) => break g,
        _ => {
          assert!(Instant::now() < deadline);
          let _ = eb.recv_timeout(Duration::from_millis(50));
        }
      }
    };
    assert_eq!(guard.len(), 100);
    assert_eq!(
      guard.footprint(),
      100,
      "a 100-byte batch should not pin a whole slab"
    );
    drop(guard);
    // 64 KiB slabs in this ring; a 40 KiB batch is above copy_below (16 KiB) and is handed over as is.
    let big = vec![5u8; 1000];
    assert_eq!(ra.send(&[big.as_slice(); 40], 40_000).unwrap(), Sent::Done);
    let mut got = 0;
    while got < 40_000 {
      assert!(Instant::now() < deadline);
      match rb.pull() {
        Pull::Batch(g, _) => {
          if g.len() >= 16 * 1024 {
            assert!(g.footprint() > g.len(), "a large batch should be the slab itself");
          }
          got += g.len();
        }
        _ => {
          let _ = eb.recv_timeout(Duration::from_millis(50));
        }
      }
    }
    ra.close();
    rb.close();
  }

  #[test]
  fn close_wakes_a_waiting_consumer() {
    let (_a, b) = pair(1500, 4).unwrap();
    let (rb, eb) = ring(b.queues.into_iter().next().unwrap());
    assert!(matches!(rb.pull(), Pull::Empty));
    let t = Instant::now();
    rb.close();
    assert_eq!(eb.recv_timeout(Duration::from_secs(1)).unwrap(), RingEvent::Ended);
    assert!(t.elapsed() < Duration::from_millis(500));
    assert!(matches!(rb.pull(), Pull::Ended(None)));
  }

  #[test]
  fn backpressure_when_nobody_reads_and_close_still_returns() {
    let (a, b) = pair(1500, 4).unwrap();
    let (ra, ea) = ring(a.queues.into_iter().next().unwrap());
    let (rb, _eb) = ring(b.queues.into_iter().next().unwrap());
    // Nobody pulls from b: its ring fills, then its inbox, then a's writer waits and a's tx ring fills: past the
    // budget send still takes the packets but says so, past twice the budget it refuses them.
    let big = vec![1u8; 1400];
    let (mut over, mut full) = (false, false);
    for _ in 0..20_000 {
      match ra.send(&[big.as_slice(); 16], 16 * 1400) {
        Ok(Sent::Done) => assert!(!over, "back under budget while nobody reads"),
        Ok(Sent::OverBudget) => over = true,
        Err(e) => {
          assert_eq!(e.kind(), ErrorKind::QueueFull, "{e}");
          full = true;
          break;
        }
      }
    }
    assert!(
      over && full,
      "backpressure never applied (over budget {over}, full {full})"
    );
    let st = ra.stats();
    assert!(st.tx_backpressure >= 1);
    let cap = 2 * RingConfig::default().tx_ring_bytes as u64;
    assert!(
      st.tx_queued_bytes <= cap,
      "{} queued past the cap {cap}",
      st.tx_queued_bytes
    );
    // Draining b lets a's writer go on, and the armed Writable event comes.
    let t = Instant::now();
    let mut writable = false;
    while !writable && t.elapsed() < Duration::from_secs(10) {
      while let Pull::Batch(..) = rb.pull() {}
      writable = ea.recv_timeout(Duration::from_millis(10)) == Ok(RingEvent::Writable);
    }
    assert!(writable, "no Writable event after the peer drained");
    // With the peer stuck again, close gives up flushing after close_flush and still returns.
    while ra.send(&[big.as_slice(); 16], 16 * 1400).is_ok() {}
    let t = Instant::now();
    ra.close();
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(ra.send(&[big.as_slice()], 1400).is_err());
    rb.close();
  }
}
