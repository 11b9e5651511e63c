//! The endpoint: listen backlog, half-open cap, connection cap, the global memory budget, listener
//! matching, ephemeral ports, handles.

use std::net::SocketAddr;
use std::time::Duration;

use super::script::*;
use super::sim::{LinkCfg, Sim};
use super::util::*;
use crate::options::TcpOptions;
use crate::{ConnId, Error, ListenAddr, Seq, State};

fn syn_from(s: &mut Script, peer: SocketAddr, iss: u32) -> Vec<Seg> {
  s.peer = peer;
  s.send_opts(
    SYN,
    iss,
    0,
    &[],
    65535,
    TcpOptions {
      mss: Some(1460),
      ..Default::default()
    },
  )
}

#[test]
fn listen_backlog_full_drops_syns() {
  let mut s = Script::new(config());
  let l = s.ep.listen(ListenAddr::port(80), 2).unwrap();
  let mut isses = Vec::new();
  for i in 0..2u16 {
    let r = syn_from(&mut s, sa(&format!("10.0.0.2:{}", 1000 + i)), PISS);
    isses.push(r[0].seq.0);
    s.send(ACK, PISS + 1, r[0].seq.0 + 1, &[]);
  }
  // Two established, not accepted: the backlog is full.
  let r = syn_from(&mut s, sa("10.0.0.2:2000"), PISS);
  assert!(r.is_empty(), "dropped silently, the peer retries");
  assert_eq!(s.ep.stats().backlog_drops, 1);
  assert!(s.ep.accept(l).is_some());
  let r = syn_from(&mut s, sa("10.0.0.2:2000"), PISS);
  assert!(r[0].is(SYN | ACK), "room again after accept");
  // Half-open connections count against the backlog too.
  let r = syn_from(&mut s, sa("10.0.0.2:2001"), PISS);
  assert!(r.is_empty());
  assert_eq!(s.ep.stats().backlog_drops, 2);
}

#[test]
fn half_open_cap_drops_syns() {
  let mut cfg = config();
  cfg.max_half_open = 3;
  let mut s = Script::new(cfg);
  s.ep.listen(ListenAddr::any(), 100).unwrap();
  for i in 0..3u16 {
    let r = syn_from(&mut s, sa(&format!("10.0.0.3:{}", 1000 + i)), PISS);
    assert!(r[0].is(SYN | ACK));
  }
  assert_eq!(s.ep.stats().half_open, 3);
  let r = syn_from(&mut s, sa("10.0.0.3:5000"), PISS);
  assert!(r.is_empty());
  assert_eq!(s.ep.stats().half_open_drops, 1);
  // One completes: a slot frees.
  s.peer = sa("10.0.0.3:1000");
  let iss = syn_from(&mut s, sa("10.0.0.3:1000"), PISS)[0].seq.0;
  s.send(ACK, PISS + 1, iss + 1, &[]);
  assert_eq!(s.ep.stats().half_open, 2);
  assert!(syn_from(&mut s, sa("10.0.0.3:5000"), PISS)[0].is(SYN | ACK));
  // Half-open connections time out and free their slots.
  s.advance(Duration::from_secs(200));
  assert_eq!(s.ep.stats().half_open, 0);
}

#[test]
fn connection_cap() {
  let mut cfg = config();
  cfg.max_connections = 2;
  let mut s = Script::new(cfg);
  s.ep.listen(ListenAddr::any(), 100).unwrap();
  let c = s.ep.connect(s.now, sa("10.0.0.1:0"), sa("10.9.9.9:1")).unwrap();
  assert!(syn_from(&mut s, sa("10.0.0.4:1"), PISS)[0].is(SYN | ACK));
  assert!(syn_from(&mut s, sa("10.0.0.4:2"), PISS).is_empty());
  assert_eq!(s.ep.stats().conn_limit_drops, 1);
  assert_eq!(
    s.ep.connect(s.now, sa("10.0.0.1:0"), sa("10.9.9.9:2")),
    Err(Error::TooManyConnections)
  );
  s.ep.close(c).unwrap();
  assert!(s.ep.connect(s.now, sa("10.0.0.1:0"), sa("10.9.9.9:2")).is_ok());
}

#[test]
fn listener_specificity_and_any_destination() {
  let mut s = Script::new(config());
  let any = s.ep.listen(ListenAddr::any(), 10).unwrap();
  let p443 = s.ep.listen(ListenAddr::port(443), 10).unwrap();
  let exact = s.ep.listen(ListenAddr::addr(sa("192.0.2.1:443")), 10).unwrap();
  assert_eq!(s.ep.listen(ListenAddr::port(0), 1), Err(Error::InvalidInput));
  for (dst, want) in [
    ("198.51.100.7:8080", any),
    ("198.51.100.7:443", p443),
    ("192.0.2.1:443", exact),
  ] {
    s.us = sa(dst);
    let r = syn_from(&mut s, sa("10.0.0.2:4444"), PISS);
    assert!(r[0].is(SYN | ACK), "{dst}: any destination is accepted");
    s.send(ACK, PISS + 1, r[0].seq.0 + 1, &[]);
    let c = s.ep.accept(want).expect(dst);
    assert_eq!(
      s.ep.info(c).unwrap().local,
      sa(dst),
      "the connection is to the original destination"
    );
  }
}

#[test]
fn ephemeral_ports_and_tuple_in_use() {
  let mut s = Script::new(config());
  let a = s.ep.connect(s.now, sa("10.0.0.1:0"), sa("10.0.0.2:80")).unwrap();
  let b = s.ep.connect(s.now, sa("10.0.0.1:0"), sa("10.0.0.2:80")).unwrap();
  let (pa, pb) = (
    s.ep.info(a).unwrap().local.port(),
    s.ep.info(b).unwrap().local.port(),
  );
  assert!(pa >= 49152 && pb >= 49152 && pa != pb);
  let fixed = s
    .ep
    .connect(s.now, sa("10.0.0.1:1234"), sa("10.0.0.2:80"))
    .unwrap();
  assert_eq!(
    s.ep.connect(s.now, sa("10.0.0.1:1234"), sa("10.0.0.2:80")),
    Err(Error::AddrInUse)
  );
  assert_eq!(
    s.ep.connect(s.now, sa("10.0.0.1:1"), sa("[fd00::1]:80")),
    Err(Error::InvalidInput)
  );
  assert_eq!(
    s.ep.connect(s.now, sa("0.0.0.0:1"), sa("10.0.0.2:80")),
    Err(Error::InvalidInput)
  );
  s.ep.abort(fixed).unwrap();
  assert_eq!(
    s.ep.read(fixed, &mut [0; 1]),
    Err(Error::InvalidHandle),
    "stale handle"
  );
  let again = s
    .ep
    .connect(s.now, sa("10.0.0.1:1234"), sa("10.0.0.2:80"))
    .unwrap();
  assert_ne!(again, fixed, "a reused slot gets a new generation");
  assert_eq!(s.ep.state(fixed), None);
  assert_eq!(s.ep.connections().len(), 3);
}

#[test]
fn unlisten_resets_waiting_connections() {
  let mut s = Script::new(config());
  let l = s.ep.listen(ListenAddr::any(), 10).unwrap();
  let r = syn_from(&mut s, sa("10.0.0.2:1"), PISS);
  s.send(ACK, PISS + 1, r[0].seq.0 + 1, &[]);
  syn_from(&mut s, sa("10.0.0.2:2"), PISS);
  assert_eq!(s.ep.stats().connections, 2);
  s.ep.unlisten(l).unwrap();
  assert_eq!(s.ep.stats().connections, 0);
  assert_eq!(s.ep.stats().half_open, 0);
  let r = s.poll();
  assert_eq!(r.len(), 2);
  assert!(r.iter().all(|x| x.flags.has(RST)));
}

#[test]
fn write_is_partial_under_the_budget() {
  let mut cfg = config();
  cfg.memory_budget = 100_000;
  cfg.min_buffer = 10_000;
  let mut s = Script::new(cfg);
  let (c, _) = s.passive(TcpOptions {
    mss: Some(1460),
    ..Default::default()
  });
  let space = s.ep.send_space(c);
  assert!(space < 200_000, "{space}");
  let n = s.ep.write(c, &vec![0u8; 1 << 20]).unwrap();
  assert_eq!(n, space);
  assert_eq!(s.ep.write(c, b"more"), Err(Error::WouldBlock));
  assert!(s.ep.stats().memory_used as usize <= 100_000);
}

/// Receiver `b` with a small budget; `a` opens several connections and sends a lot while `b`'s
/// application does not read: windows shrink to the budget, nothing is lost, and everything arrives once
/// `b` reads.
#[test]
fn memory_budget_shrinks_windows_and_loses_nothing() {
  let budget = 256 << 10;
  let mut bcfg = config();
  bcfg.memory_budget = budget;
  bcfg.min_buffer = 16 << 10;
  let link = LinkCfg {
    delay: Duration::from_micros(200),
    ..Default::default()
  };
  let mut sim = Sim::new(config(), bcfg, link, link, 21);
  let l = sim.b.listen(ListenAddr::any(), 64).unwrap();
  const N: usize = 6;
  const EACH: usize = 1 << 20;
  let mut ca = Vec::new();
  for i in 0..N {
    ca.push(
      sim
        .a
        .connect(sim.now, sa("10.0.0.1:0"), sa(&format!("10.0.0.2:{}", 9000 + i)))
        .unwrap(),
    );
  }
  let mut cb: Vec<ConnId> = Vec::new();
  sim.run(Duration::from_secs(2), |s| {
    while let Some(c) = s.b.accept(l) {
      cb.push(c);
    }
    cb.len() == N
  });
  let mut sent = [0usize; N];
  let data = |i: usize, off: usize, n: usize| -> Vec<u8> {
    (off..off + n).map(|k| pattern(i as u8, k as u64)).collect()
  };
  let mut peak = 0u64;
  sim.run(Duration::from_secs(5), |s| {
    for i in 0..N {
      if sent[i] < EACH {
        let chunk = data(i, sent[i], (EACH - sent[i]).min(64 << 10));
        if let Ok(n) = s.a.write(ca[i], &chunk) {
          sent[i] += n;
        }
      }
    }
    peak = peak.max(s.b.stats().memory_used);
    false
  });
  let st = sim.b.stats();
  let held: usize = cb.iter().map(|&c| sim.b.readable(c)).sum();
  println!(
    "[budget] b holds {held} B unread, charged {} of {budget} (peak {peak}), {:?}",
    st.memory_used, st
  );
  assert!(
    peak <= budget as u64 + N as u64 * 256,
    "peak {peak} within the budget (plus window rounding)"
  );
  assert!(held >= budget, "the budget is used: {held}");
  assert!(held <= budget + N * 2 * (16 << 10), "held {held}");
  for &c in &cb {
    assert_eq!(sim.b.state(c), Some(State::Established), "nothing failed");
  }
  // The application reads: everything arrives, byte-exact.
  let mut got = [0usize; N];
  let mut buf = vec![0u8; 128 << 10];
  let done = sim.run(Duration::from_secs(30), |s| {
    for i in 0..N {
      if sent[i] < EACH {
        let chunk = data(i, sent[i], (EACH - sent[i]).min(64 << 10));
        if let Ok(n) = s.a.write(ca[i], &chunk) {
          sent[i] += n;
        }
      }
      while let Ok(n) = s.b.read(cb[i], &mut buf) {
        if n == 0 {
          break;
        }
        assert_eq!(&buf[..n], &data(i, got[i], n)[..], "connection {i} at {}", got[i]);
        got[i] += n;
      }
      peak = peak.max(s.b.stats().memory_used);
    }
    got.iter().all(|&g| g == EACH)
  });
  assert!(done, "got {got:?}");
  assert!(peak <= budget as u64 + N as u64 * 256);
  let lost: u64 = cb.iter().map(|&c| sim.b.conn_stats(c).unwrap().ooo_dropped).sum();
  assert_eq!(lost, 0);
  let _ = Seq(0);
}
