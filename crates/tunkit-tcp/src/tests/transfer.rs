//! Bulk transfers between two endpoints over the simulated link: byte-exact in both directions, under
//! loss, reordering and duplication, across the 2^32 sequence wrap, with TSO, without SACK, over IPv6.
//! Each prints simulated throughput and the recovery counters (`-- --nocapture`).

use std::net::SocketAddr;
use std::time::Duration;

use super::sim::{LinkCfg, Sim};
use super::util::*;
use crate::{Config, ConnId, ConnStats, Error, Event, ListenAddr, State};

/// One direction of a transfer: the writer's side and the reader's.
#[derive(Debug, Default)]
struct Dir {
  sent: u64,
  received: u64,
  shut: bool,
  eof: bool,
}

pub struct Outcome {
  pub a: ConnId,
  pub b: ConnId,
  pub elapsed: Duration,
}

fn pump_write(sim: &mut Sim, on_a: bool, c: ConnId, d: &mut Dir, total: u64, stream: u8, scratch: &mut [u8]) {
  let ep = if on_a { &mut sim.a } else { &mut sim.b };
  while d.sent < total {
    let n = (total - d.sent).min(scratch.len() as u64) as usize;
    for (i, b) in scratch[..n].iter_mut().enumerate() {
      *b = pattern(stream, d.sent + i as u64);
    }
    match ep.write(c, &scratch[..n]) {
      Ok(k) => {
        d.sent += k as u64;
        if k < n {
          break;
        }
      }
      Err(Error::WouldBlock) => break,
      Err(e) => panic!("write: {e}"),
    }
  }
  if d.sent == total && !d.shut {
    ep.shutdown(c).unwrap();
    d.shut = true;
  }
}

fn pump_read(sim: &mut Sim, on_a: bool, c: ConnId, d: &mut Dir, stream: u8, scratch: &mut [u8]) {
  let ep = if on_a { &mut sim.a } else { &mut sim.b };
  loop {
    match ep.read(c, scratch) {
      Ok(0) => {
        d.eof = true;
        return;
      }
      Ok(n) => {
        for (i, &b) in scratch[..n].iter().enumerate() {
          let want = pattern(stream, d.received + i as u64);
          assert_eq!(b, want, "stream {stream} byte {} differs", d.received + i as u64);
        }
        d.received += n as u64;
      }
      Err(Error::WouldBlock) => return,
      Err(e) => panic!("read: {e}"),
    }
  }
}

/// Connects `a` (`from`) to `b` (`to`), sends `ab` bytes a->b and `ba` bytes b->a at once, shuts both down
/// and checks every byte. Panics unless both streams end within `limit` of simulated time.
pub fn transfer(
  sim: &mut Sim,
  from: SocketAddr,
  to: SocketAddr,
  ab: u64,
  ba: u64,
  limit: Duration,
) -> Outcome {
  let l = sim.b.listen(ListenAddr::any(), 16).unwrap();
  let start = sim.now;
  let ca = sim.a.connect(sim.now, from, to).unwrap();
  let mut cb = None;
  let ok = sim.run(Duration::from_secs(5), |s| {
    cb = cb.or_else(|| s.b.accept(l));
    cb.is_some() && s.a.state(ca) == Some(State::Established)
  });
  assert!(ok, "handshake");
  let cb = cb.unwrap();
  let (mut dab, mut dba) = (Dir::default(), Dir::default());
  let mut scratch = vec![0u8; 256 << 10];
  let done = sim.run(limit, |s| {
    while s.a.next_event().is_some() {}
    while s.b.next_event().is_some() {}
    pump_write(s, true, ca, &mut dab, ab, 1, &mut scratch);
    pump_write(s, false, cb, &mut dba, ba, 2, &mut scratch);
    pump_read(s, false, cb, &mut dab, 1, &mut scratch);
    pump_read(s, true, ca, &mut dba, 2, &mut scratch);
    dab.eof && dba.eof
  });
  assert!(
    done,
    "transfer incomplete after {limit:?}: a->b {dab:?}, b->a {dba:?}"
  );
  assert_eq!((dab.received, dba.received), (ab, ba));
  Outcome {
    a: ca,
    b: cb,
    elapsed: sim.now - start,
  }
}

fn report(name: &str, sim: &Sim, o: &Outcome, bytes: u64) {
  let secs = o.elapsed.as_secs_f64();
  println!(
    "[{name}] {} MiB in {:.3} s simulated: {:.1} Mbit/s per direction, {} steps",
    bytes >> 20,
    secs,
    bytes as f64 * 8.0 / secs / 1e6,
    sim.steps
  );
  for (side, c, ep) in [("a", o.a, &sim.a), ("b", o.b, &sim.b)] {
    let s: ConnStats = ep.conn_stats(c).unwrap();
    let i = ep.info(c).unwrap();
    println!(
      "  {side}: segs out {} retransmits {} ({} B) fast retransmits {} sack-recovered {} B rto {} spurious {} \
       dupacks {} ooo {} | cwnd {} ssthresh {} srtt {:?} rto {:?}",
      s.segs_out,
      s.retransmits,
      s.retransmitted_bytes,
      s.fast_retransmits,
      s.sack_recovered_bytes,
      s.rto_count,
      s.spurious_rto,
      s.dup_acks,
      s.ooo_segments,
      i.cwnd,
      i.ssthresh,
      i.srtt,
      i.rto
    );
  }
  println!("  link a->b {:?}\n  link b->a {:?}", sim.ab.stats, sim.ba.stats);
}

fn gbit() -> LinkCfg {
  LinkCfg {
    delay: Duration::from_micros(500),
    bandwidth: 1_000_000_000,
    queue_bytes: 512 << 10,
    ..Default::default()
  }
}

fn close_both(sim: &mut Sim, o: &Outcome) {
  sim.idle(Duration::from_secs(3));
  for (ep, c) in [(&mut sim.a, o.a), (&mut sim.b, o.b)] {
    let st = ep.state(c).unwrap();
    assert!(matches!(st, State::Closed | State::TimeWait), "{st:?}");
    ep.close(c).unwrap();
  }
  sim.idle(Duration::from_secs(3));
  assert_eq!(sim.a.stats().connections + sim.b.stats().connections, 0);
  assert_eq!(sim.a.stats().memory_used + sim.b.stats().memory_used, 0);
  assert_eq!(sim.a.stats().time_wait + sim.b.stats().time_wait, 0);
}

const MIB4: u64 = 4 << 20;

#[test]
fn transfer_clean_both_directions() {
  // 10 Gbit/s with a queue deeper than any window: nothing is lost.
  let fast = LinkCfg {
    bandwidth: 10_000_000_000,
    queue_bytes: 64 << 20,
    ..gbit()
  };
  let mut sim = Sim::new(config(), config(), fast, fast, 1);
  let o = transfer(
    &mut sim,
    sa("10.0.0.1:0"),
    sa("10.0.0.2:443"),
    MIB4,
    MIB4,
    Duration::from_secs(10),
  );
  report("clean 10 Gbit/s", &sim, &o, MIB4);
  assert_eq!(sim.ab.stats.queue_drops, 0);
  sim.idle(Duration::from_secs(1));
  let s = sim.a.conn_stats(o.a).unwrap();
  assert_eq!((s.rto_count, s.retransmits), (0, 0));
  assert_eq!(s.bytes_acked, MIB4);
  assert_eq!(sim.a.info(o.a).unwrap().window_scale, Some((7, 7)));
  close_both(&mut sim, &o);
}

#[test]
fn transfer_lossy_one_percent_loss_and_reorder_both_directions() {
  let lossy = LinkCfg {
    loss_ppm: 10_000,
    reorder_ppm: 10_000,
    dup_ppm: 2_000,
    ..gbit()
  };
  let mut sim = Sim::new(config(), config(), lossy, lossy, 7);
  let o = transfer(
    &mut sim,
    sa("10.0.0.1:0"),
    sa("10.0.0.2:443"),
    MIB4,
    MIB4,
    Duration::from_secs(60),
  );
  report("lossy 1% loss 1% reorder 0.2% dup", &sim, &o, MIB4);
  for (ep, c) in [(&sim.a, o.a), (&sim.b, o.b)] {
    let s = ep.conn_stats(c).unwrap();
    assert!(s.retransmits > 0 && s.fast_retransmits > 0, "{s:?}");
    assert!(s.sack_recovered_bytes > 0, "SACK drove recovery: {s:?}");
    assert!(s.ooo_segments > 0 && s.dup_acks > 0, "{s:?}");
  }
  assert!(sim.ab.stats.lost > 20 && sim.ab.stats.reordered > 20);
  close_both(&mut sim, &o);
}

#[test]
fn transfer_across_sequence_wrap() {
  let mut sim = Sim::new(config(), config(), gbit(), gbit(), 3);
  sim.a.next_isn = Some(u32::MAX - 1_000_000);
  sim.b.next_isn = Some(u32::MAX - 3_000);
  let lossy = LinkCfg {
    loss_ppm: 5_000,
    ..gbit()
  };
  sim.ab.cfg = lossy;
  let o = transfer(
    &mut sim,
    sa("10.0.0.1:0"),
    sa("10.0.0.2:443"),
    MIB4,
    MIB4,
    Duration::from_secs(30),
  );
  report("wrap", &sim, &o, MIB4);
  let ia = sim.a.conn(o.a);
  assert!(
    ia.snd_una.0 < 4 << 20,
    "a's sequence numbers wrapped: {:?}",
    ia.snd_una
  );
  assert!(ia.rcv_nxt.0 < 4 << 20, "b's too");
  close_both(&mut sim, &o);
}

#[test]
fn transfer_tso_super_packets() {
  let mut a = config();
  a.tso_max_payload = 65_000;
  a.mtu = 9000;
  let mut b = config();
  b.mtu = 9000;
  let mut sim = Sim::new(a, b, gbit(), gbit(), 5);
  let o = transfer(
    &mut sim,
    sa("10.0.0.1:0"),
    sa("10.0.0.2:443"),
    MIB4,
    1 << 20,
    Duration::from_secs(10),
  );
  report("tso", &sim, &o, MIB4);
  let s = sim.a.conn_stats(o.a).unwrap();
  assert!(
    s.segs_out < 1000,
    "super-packets: {} segments for 4 MiB",
    s.segs_out
  );
  assert_eq!(sim.a.info(o.a).unwrap().mss, 9000 - 40 - 12);
  close_both(&mut sim, &o);
}

#[test]
fn transfer_without_sack_uses_newreno() {
  let mut b = config();
  b.sack = false;
  let lossy = LinkCfg {
    loss_ppm: 10_000,
    ..gbit()
  };
  let mut sim = Sim::new(config(), b, lossy, gbit(), 11);
  let o = transfer(
    &mut sim,
    sa("10.0.0.1:0"),
    sa("10.0.0.2:443"),
    2 << 20,
    0,
    Duration::from_secs(120),
  );
  report("no sack", &sim, &o, 2 << 20);
  let s = sim.a.conn_stats(o.a).unwrap();
  assert!(!sim.a.info(o.a).unwrap().sack);
  assert!(s.fast_retransmits > 0 && s.sack_recovered_bytes == 0, "{s:?}");
  close_both(&mut sim, &o);
}

#[test]
fn transfer_ipv6_with_queue_drops() {
  // A 100 Mbit/s bottleneck with a small queue: congestion control keeps the transfer going.
  let slow = LinkCfg {
    bandwidth: 100_000_000,
    queue_bytes: 64 << 10,
    delay: Duration::from_millis(2),
    ..Default::default()
  };
  let mut sim = Sim::new(config(), config(), slow, slow, 13);
  let o = transfer(
    &mut sim,
    sa("[fd00::1]:0"),
    sa("[fd00::2]:443"),
    2 << 20,
    2 << 20,
    Duration::from_secs(60),
  );
  report("ipv6 100 Mbit/s bottleneck", &sim, &o, 2 << 20);
  assert!(
    sim.ab.stats.queue_drops > 0,
    "the queue overflowed: {:?}",
    sim.ab.stats
  );
  close_both(&mut sim, &o);
}

#[test]
fn transfer_events_flow() {
  let mut sim = Sim::new(config(), config(), gbit(), gbit(), 2);
  let l = sim.b.listen(ListenAddr::port(443), 4).unwrap();
  let ca = sim
    .a
    .connect(sim.now, sa("10.0.0.1:0"), sa("10.0.0.2:443"))
    .unwrap();
  let mut evs_a = Vec::new();
  let mut evs_b = Vec::new();
  sim.run(Duration::from_secs(1), |s| {
    while let Some(e) = s.a.next_event() {
      evs_a.push(e);
    }
    while let Some(e) = s.b.next_event() {
      evs_b.push(e);
    }
    evs_b.contains(&Event::Acceptable(l))
  });
  assert!(evs_a.contains(&Event::Connected(ca)), "{evs_a:?}");
  let cb = sim.b.accept(l).unwrap();
  sim.a.write(ca, b"hello").unwrap();
  sim.run(Duration::from_secs(1), |s| s.b.readable(cb) == 5);
  assert_eq!(sim.b.next_event(), Some(Event::Readable(cb)));
  assert_eq!(sim.b.next_event(), None, "one event per kind until taken");
  let _ = Config::new([0; 16]);
}

#[test]
fn simultaneous_close_two_endpoints() {
  let mut sim = Sim::new(config(), config(), gbit(), gbit(), 4);
  let o = transfer(
    &mut sim,
    sa("10.0.0.1:0"),
    sa("10.0.0.2:443"),
    0,
    0,
    Duration::from_secs(1),
  );
  let _ = o;
  // A fresh pair: both shut down in the same instant, FINs cross.
  let l = sim.b.listen(ListenAddr::port(80), 4).unwrap();
  let ca = sim
    .a
    .connect(sim.now, sa("10.0.0.1:0"), sa("10.0.0.2:80"))
    .unwrap();
  let mut cb = None;
  sim.run(Duration::from_secs(1), |s| {
    cb = cb.or_else(|| s.b.accept(l));
    cb.is_some() && s.a.state(ca) == Some(State::Established)
  });
  let cb = cb.unwrap();
  sim.a.shutdown(ca).unwrap();
  sim.b.shutdown(cb).unwrap();
  let mut seen = Vec::new();
  sim.run(Duration::from_secs(1), |s| {
    let st = (s.a.state(ca).unwrap(), s.b.state(cb).unwrap());
    if seen.last() != Some(&st) {
      seen.push(st);
    }
    st == (State::TimeWait, State::TimeWait)
  });
  assert!(seen.contains(&(State::Closing, State::Closing)), "{seen:?}");
  assert_eq!(
    seen.last(),
    Some(&(State::TimeWait, State::TimeWait)),
    "both wait: {seen:?}"
  );
  sim.idle(Duration::from_secs(3));
  assert_eq!(
    (sim.a.state(ca), sim.b.state(cb)),
    (Some(State::Closed), Some(State::Closed))
  );
}
