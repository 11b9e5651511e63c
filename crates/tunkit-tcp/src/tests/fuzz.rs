//! Seeded fuzzers (own PRNG), run by `cargo test`; `-- --nocapture` prints their counts. The iteration
//! counts scale with `TUNKIT_FUZZ_SCALE` (default 1; e.g. 20 for a longer run), `TUNKIT_FUZZ_SEED` picks
//! another sequence (the default is fixed, so failures reproduce).
//!
//! - `fuzz_segment_parsing`: random bytes and mutated valid packets (both families, random options and
//!   flags) through the parser: never a panic; unmutated packets round-trip exactly.
//! - `fuzz_state_machine_random_segments`: an endpoint (listening on any address, with active opens too)
//!   fed random segments for a few tuples, with sequence and acknowledgment numbers near the live ones,
//!   random flags, options and window, interleaved with time passing and random application calls.
//!   Payload bytes are a function of their sequence number, so every byte the application reads is checked
//!   to be the next one of its stream (no data out of order, none invented). The endpoint's invariants
//!   (SND.UNA <= SND.NXT, buffers at SND.UNA, SACK ranges inside the flight, budget accounting, demux
//!   consistency) are checked after every step, and every packet it emits must parse.
//! - `fuzz_two_endpoints_random_ops`: two endpoints over a lossy, reordering, duplicating link with random
//!   connects, writes, reads, shutdowns, closes and aborts: every stream read is a prefix of what was
//!   written, invariants hold, and everything drains at the end.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::sim::{LinkCfg, Sim};
use super::util::*;
use crate::options::{SackBlocks, TcpOptions, Timestamps};
use crate::wire::{parse_packet, write_packet, Header};
use crate::{ConnId, Endpoint, Error, Flags, ListenAddr, Outbox, ParseError, Seq, State};

fn scale() -> u64 {
  std::env::var("TUNKIT_FUZZ_SCALE")
    .ok()
    .and_then(|s| s.parse().ok())
    .unwrap_or(1)
    .max(1)
}

fn seed() -> u64 {
  std::env::var("TUNKIT_FUZZ_SEED")
    .ok()
    .and_then(|s| s.parse().ok())
    .unwrap_or(0x7c9)
}

fn random_options(rng: &mut Rng, base: Seq) -> TcpOptions {
  let mut o = TcpOptions::default();
  if rng.below(4) == 0 {
    o.mss = Some(rng.below(70_000) as u16);
  }
  if rng.below(4) == 0 {
    o.window_scale = Some(rng.below(20) as u8);
  }
  o.sack_permitted = rng.below(3) == 0;
  if rng.below(2) == 0 {
    o.timestamps = Some(Timestamps {
      val: rng.next() as u32,
      ecr: rng.next() as u32,
    });
  }
  let mut sack = SackBlocks::default();
  for _ in 0..rng.below(5) {
    let l = base + rng.below(200_000) as u32;
    sack.push(l, l + rng.below(20_000) as u32);
  }
  o.sack = sack;
  o
}

fn random_flags(rng: &mut Rng) -> Flags {
  let common = [
    Flags::ACK,
    Flags::ACK,
    Flags::ACK | Flags::PSH,
    Flags::SYN,
    Flags::SYN | Flags::ACK,
    Flags::FIN | Flags::ACK,
    Flags::RST,
    Flags::RST | Flags::ACK,
    Flags::FIN,
  ];
  if rng.below(8) == 0 {
    Flags(rng.next() as u8 & 0x3f)
  } else {
    common[rng.below(common.len() as u64) as usize]
  }
}

#[test]
fn fuzz_segment_parsing() {
  let mut rng = Rng::new(seed());
  let n = 40_000 * scale();
  let mut counts: HashMap<Result<(), ParseError>, u64> = HashMap::new();
  let mut roundtrips = 0;
  let addrs = [
    (sa("10.1.1.1:1000"), sa("10.2.2.2:80")),
    (sa("[fd00::1]:1000"), sa("[fd00::2]:80")),
  ];
  let mut pkt = Vec::new();
  for i in 0..n {
    if i % 5 == 0 {
      let len = rng.below(120) as usize;
      let mut b = rng.bytes(len);
      if !b.is_empty() {
        b[0] = [0x45, 0x60, 0x46, rng.next() as u8][rng.below(4) as usize];
      }
      let r = parse_packet(&b, rng.below(2) == 0).map(|_| ());
      *counts.entry(r).or_default() += 1;
      continue;
    }
    let (src, dst) = addrs[rng.below(2) as usize];
    let base = Seq(rng.next() as u32);
    let opts = random_options(&mut rng, base);
    let flags = random_flags(&mut rng);
    let hdr = Header {
      seq: Seq(rng.next() as u32),
      ack: Seq(rng.next() as u32),
      flags,
      window: rng.next() as u16,
    };
    let plen = rng.below(300) as usize;
    let payload = rng.bytes(plen);
    let cut = rng.below(payload.len() as u64 + 1) as usize;
    write_packet(
      &mut pkt,
      src,
      dst,
      &hdr,
      &opts,
      (&payload[..cut], &payload[cut..]),
      false,
    );
    let p = parse_packet(&pkt, true).expect("valid packet parses");
    assert_eq!(
      (p.src, p.dst, p.seg.seq, p.seg.window, p.seg.payload),
      (src, dst, hdr.seq, hdr.window, &payload[..])
    );
    assert_eq!(p.seg.flags, flags);
    let want_ack = if flags.has(Flags::ACK) { hdr.ack } else { Seq(0) };
    assert_eq!(p.seg.ack, want_ack);
    let mut o2 = opts;
    o2.sack.truncate(p.seg.options.sack.len());
    assert_eq!(p.seg.options, o2);
    roundtrips += 1;
    // Mutations: flips, truncation, garbage appended, header length fields.
    let mut m = pkt.clone();
    for _ in 0..1 + rng.below(4) {
      match rng.below(5) {
        0 if !m.is_empty() => {
          let k = rng.below(m.len() as u64) as usize;
          m[k] ^= 1 << rng.below(8);
        }
        1 => m.truncate(rng.below(m.len() as u64 + 1) as usize),
        2 => {
          let k = rng.below(40) as usize;
          m.extend(rng.bytes(k))
        }
        3 if m.len() > 60 => {
          let l4 = if m[0] >> 4 == 4 { 20 } else { 40 };
          m[l4 + 12] = (rng.next() as u8) & 0xf0;
        }
        _ if m.len() > 60 => {
          let k = 40 + rng.below(20) as usize;
          m[k] = rng.next() as u8;
        }
        _ => {}
      }
    }
    for verify in [true, false] {
      let r = parse_packet(&m, verify).map(|_| ());
      *counts.entry(r).or_default() += 1;
    }
  }
  let mut v: Vec<_> = counts.into_iter().map(|(k, v)| (format!("{k:?}"), v)).collect();
  v.sort();
  println!("[fuzz parse] {n} inputs, {roundtrips} valid round-trips; outcomes: {v:?}");
}

/// One remote peer of the state-machine fuzzer.
struct FPeer {
  addr: SocketAddr,
  iss: u32,
  /// Highest sequence number the peer has "sent" data up to (around which it picks seq values).
  nxt: u32,
  /// What the endpoint last sent on this tuple (seq + len), to pick ACK values near.
  their_nxt: u32,
}

#[test]
fn fuzz_state_machine_random_segments() {
  let mut rng = Rng::new(seed() ^ 0xabcdef);
  let mut cfg = config();
  cfg.recv_buffer = 64 << 10;
  cfg.memory_budget = 200 << 10;
  cfg.max_half_open = 4;
  if rng.below(2) == 0 {
    cfg.keepalive = Some(crate::Keepalive {
      idle: ms(500),
      interval: ms(100),
      probes: 2,
    });
  }
  let mut ep = Endpoint::new(cfg);
  let l = ep.listen(ListenAddr::any(), 8).unwrap();
  let locals = [sa("10.0.0.1:80"), sa("10.0.0.1:443")];
  let mut peers: Vec<FPeer> = (0..4u16)
    .map(|i| FPeer {
      addr: sa(&format!("10.0.0.{}:{}", 2 + i, 30000 + i)),
      iss: rng.next() as u32,
      nxt: 0,
      their_nxt: 0,
    })
    .collect();
  for p in &mut peers {
    p.nxt = p.iss.wrapping_add(1);
  }
  let mut now = Duration::from_secs(1);
  let mut out = Outbox::new();
  let mut conns: Vec<(ConnId, usize, u64)> = Vec::new(); // handle, peer, bytes read
  let mut buf = vec![0u8; 8192];
  let steps = 30_000 * scale();
  let (mut segs, mut emitted, mut reads, mut delivered) = (0u64, 0u64, 0u64, 0u64);
  let (mut would_block, mut read_errors) = (0u64, 0u64);
  for _ in 0..steps {
    match rng.below(20) {
      0..=11 => {
        let pi = rng.below(peers.len() as u64) as usize;
        let local = locals[rng.below(2) as usize];
        let p = &peers[pi];
        let flags = random_flags(&mut rng);
        let seq = if flags.has(Flags::SYN) && rng.below(4) != 0 {
          p.iss
        } else if rng.below(2) == 0 {
          p.nxt
        } else {
          p.nxt.wrapping_add(rng.below(6000) as u32).wrapping_sub(3000)
        };
        let ack = if rng.below(2) == 0 {
          p.their_nxt
        } else {
          p.their_nxt
            .wrapping_add(rng.below(4000) as u32)
            .wrapping_sub(2000)
        };
        let len = if rng.below(3) == 0 {
          0
        } else {
          rng.below(2000) as usize
        };
        // Payload byte k sits at sequence number seq + k (seq + 1 + k after a SYN).
        let syn_off = flags.has(Flags::SYN) as u32;
        let payload: Vec<u8> = (0..len)
          .map(|k| {
            pattern(
              pi as u8,
              seq
                .wrapping_add(k as u32 + syn_off)
                .wrapping_sub(p.iss)
                .wrapping_sub(1) as u64,
            )
          })
          .collect();
        let opts = if rng.below(3) == 0 {
          random_options(&mut rng, Seq(p.their_nxt))
        } else {
          TcpOptions::default()
        };
        let hdr = Header {
          seq: Seq(seq),
          ack: Seq(ack),
          flags,
          window: rng.next() as u16,
        };
        let mut pkt = Vec::new();
        write_packet(&mut pkt, p.addr, local, &hdr, &opts, (&payload, &[]), false);
        let _ = ep.input(now, &pkt, &mut out);
        segs += 1;
        let p = &mut peers[pi];
        if !flags.has(Flags::SYN) && rng.below(8) == 0 {
          p.nxt = seq.wrapping_add(len as u32);
        }
      }
      12 | 13 => {
        now += Duration::from_micros(rng.below(300_000));
        ep.poll(now, &mut out);
      }
      14 => {
        while let Some(c) = ep.accept(l) {
          let info = ep.info(c).unwrap();
          let pi = peers.iter().position(|p| p.addr == info.remote).unwrap();
          // Stream offset 0 of this connection is the peer's sequence number irs + 1.
          let base = ep.conn(c).irs.0.wrapping_sub(peers[pi].iss) as u64;
          conns.push((c, pi, base));
        }
      }
      15 | 16 if !conns.is_empty() => {
        let k = rng.below(conns.len() as u64) as usize;
        let (c, pi, ref mut off) = conns[k];
        let dbg = format!(
          "{:?} irs {:?} peer iss {} base {}",
          ep.info(c).map(|i| i.state),
          ep.conn(c).irs,
          peers[pi].iss,
          *off
        );
        match ep.read(c, &mut buf) {
          Ok(n) => {
            for (i, &b) in buf[..n].iter().enumerate() {
              if b != pattern(pi as u8, (*off + i as u64) & 0xffff_ffff) {
                println!("mismatch at {i} of {n}: {dbg}");
              }
              assert_eq!(
                b,
                pattern(pi as u8, (*off + i as u64) & 0xffff_ffff),
                "byte {} of peer {pi} out of order",
                *off + i as u64
              );
            }
            *off += n as u64;
            delivered += n as u64;
            reads += 1;
          }
          Err(Error::WouldBlock) => would_block += 1,
          Err(Error::Reset | Error::TimedOut | Error::Refused) => read_errors += 1,
          Err(e) => panic!("read: {e}"),
        }
      }
      17 if !conns.is_empty() => {
        let k = rng.below(conns.len() as u64) as usize;
        let n = rng.below(5000) as usize;
        let data = rng.bytes(n);
        let _ = ep.write(conns[k].0, &data);
      }
      18 if !conns.is_empty() => {
        let k = rng.below(conns.len() as u64) as usize;
        let c = conns[k].0;
        match rng.below(4) {
          0 => {
            let _ = ep.shutdown(c);
          }
          1 => {
            ep.close(c).unwrap();
            conns.swap_remove(k);
          }
          2 => {
            ep.abort(c).unwrap();
            conns.swap_remove(k);
          }
          _ => {
            if matches!(ep.state(c), Some(State::Closed | State::TimeWait)) {
              ep.close(c).unwrap();
              conns.swap_remove(k);
            }
          }
        }
      }
      19 if conns.len() < 8 => {
        let pi = rng.below(peers.len() as u64) as usize;
        if let Ok(c) = ep.connect(now, locals[0], peers[pi].addr) {
          let _ = c; // Active opens are not read-checked (the peer's ISN is random there).
        }
      }
      _ => {}
    }
    for p in out.packets() {
      let pk = parse_packet(&p.data, true).expect("emitted packets parse");
      emitted += 1;
      if let Some(peer) = peers.iter_mut().find(|q| q.addr == pk.dst) {
        let end = pk.seg.seq.0.wrapping_add(pk.seg.seq_len());
        if Seq(end) > Seq(peer.their_nxt) || rng.below(8) == 0 {
          peer.their_nxt = end;
        }
        // Mostly continue where the endpoint's ACK says its receiver is.
        if pk.seg.flags.has(Flags::ACK) && !pk.seg.flags.has(Flags::RST) && rng.below(4) != 0 {
          peer.nxt = pk.seg.ack.0;
        }
      }
    }
    out.clear();
    ep.check_invariants();
    while ep.next_event().is_some() {}
  }
  let st = ep.stats();
  println!(
    "[fuzz state machine] {steps} steps, {segs} segments in, {emitted} out, {reads} reads ({would_block} \
     would block, {read_errors} errors), {delivered} bytes delivered in order; {st:?}"
  );
}

#[test]
fn fuzz_two_endpoints_random_ops() {
  let runs = 6 * scale();
  let mut total_ops = 0;
  let mut total_bytes = 0u64;
  for run in 0..runs {
    let mut rng = Rng::new(seed() ^ (run << 20));
    let link = LinkCfg {
      loss_ppm: rng.below(50_000) as u32,
      reorder_ppm: rng.below(50_000) as u32,
      dup_ppm: rng.below(20_000) as u32,
      delay: Duration::from_micros(50 + rng.below(3000)),
      bandwidth: [0, 100_000_000, 1_000_000_000][rng.below(3) as usize],
      ..Default::default()
    };
    let mut acfg = config();
    let mut bcfg = config();
    bcfg.sack = rng.below(3) != 0;
    acfg.timestamps = rng.below(3) != 0;
    bcfg.memory_budget = [64 << 10, 1 << 20, 64 << 20][rng.below(3) as usize];
    acfg.tso_max_payload = [0, 30_000][rng.below(2) as usize];
    let mut sim = Sim::new(acfg, bcfg, link, link, run);
    let l = sim.b.listen(ListenAddr::any(), 64).unwrap();
    // (a handle, b handle once accepted, written a->b, read by b, written b->a, read by a)
    struct Pair {
      a: ConnId,
      b: Option<ConnId>,
      wab: u64,
      rab: u64,
      wba: u64,
      rba: u64,
      stream: u8,
    }
    let mut pairs: Vec<Pair> = Vec::new();
    let mut orphans_b: Vec<ConnId> = Vec::new();
    let mut buf = vec![0u8; 32 << 10];
    for op in 0..400 {
      total_ops += 1;
      match rng.below(10) {
        0 if pairs.len() < 10 => {
          let to = sa(&format!("10.0.0.2:{}", 1000 + rng.below(5)));
          if let Ok(a) = sim.a.connect(sim.now, sa("10.0.0.1:0"), to) {
            pairs.push(Pair {
              a,
              b: None,
              wab: 0,
              rab: 0,
              wba: 0,
              rba: 0,
              stream: (op % 200) as u8,
            });
          }
        }
        1..=3 if !pairs.is_empty() => {
          let k = rng.below(pairs.len() as u64) as usize;
          let p = &mut pairs[k];
          let n = rng.below(20_000) as usize;
          let a_side = rng.below(2) == 0;
          let (ep, c, w) = if a_side {
            (&mut sim.a, Some(p.a), &mut p.wab)
          } else {
            (&mut sim.b, p.b, &mut p.wba)
          };
          if let Some(c) = c {
            let st = if a_side { p.stream } else { p.stream ^ 0x80 };
            let data: Vec<u8> = (0..n).map(|i| pattern(st, *w + i as u64)).collect();
            if let Ok(k) = ep.write(c, &data) {
              *w += k as u64;
            }
          }
        }
        4 if !pairs.is_empty() => {
          let k = rng.below(pairs.len() as u64) as usize;
          let p = &pairs[k];
          let c = if rng.below(2) == 0 {
            Some((true, p.a))
          } else {
            p.b.map(|b| (false, b))
          };
          if let Some((a_side, c)) = c {
            let ep = if a_side { &mut sim.a } else { &mut sim.b };
            match rng.below(4) {
              0 => {
                let _ = ep.shutdown(c);
              }
              1 => {
                let _ = ep.abort(c);
                if a_side {
                  // b's handle is released when its side sees the end (below, at the end of the run).
                  let gone = pairs.swap_remove(k);
                  orphans_b.extend(gone.b);
                } else {
                  pairs[k].b = None;
                }
              }
              _ => {}
            }
          }
        }
        _ => {
          sim.idle(Duration::from_micros(rng.below(20_000)));
        }
      }
      while let Some(c) = sim.b.accept(l) {
        let remote = sim.b.info(c).unwrap().remote;
        if let Some(p) = pairs
          .iter_mut()
          .find(|p| p.b.is_none() && sim.a.info(p.a).is_some_and(|i| i.local == remote))
        {
          p.b = Some(c);
        } else {
          sim.b.abort(c).unwrap();
        }
      }
      for p in pairs.iter_mut() {
        let Some(b) = p.b else { continue };
        for (ep, c, r, w, st) in [
          (&mut sim.b, b, &mut p.rab, p.wab, p.stream),
          (&mut sim.a, p.a, &mut p.rba, p.wba, p.stream ^ 0x80),
        ] {
          while let Ok(n) = ep.read(c, &mut buf) {
            if n == 0 {
              break;
            }
            for (i, &x) in buf[..n].iter().enumerate() {
              assert_eq!(
                x,
                pattern(st, *r + i as u64),
                "stream {st} byte {}",
                *r + i as u64
              );
            }
            *r += n as u64;
            total_bytes += n as u64;
            assert!(*r <= w, "read more than written");
          }
        }
      }
      sim.a.check_invariants();
      sim.b.check_invariants();
      while sim.a.next_event().is_some() {}
      while sim.b.next_event().is_some() {}
    }
    for b in orphans_b {
      let _ = sim.b.close(b);
    }
    // Connections still waiting to be accepted are the listener's: closing it resets them.
    sim.b.unlisten(l).unwrap();
    for p in &pairs {
      let _ = sim.a.close(p.a);
      if let Some(b) = p.b {
        let _ = sim.b.abort(b);
      }
    }
    sim.idle(Duration::from_secs(400));
    sim.a.check_invariants();
    sim.b.check_invariants();
    for d in sim.b.describe() {
      println!("left on b at {:?}: {d}", sim.now);
    }
    assert_eq!(sim.a.stats().connections, 0, "run {run}: everything ends");
    assert_eq!(sim.b.stats().connections, 0, "run {run}");
    assert_eq!(sim.a.stats().memory_used + sim.b.stats().memory_used, 0);
  }
  println!("[fuzz two endpoints] {runs} runs, {total_ops} operations, {total_bytes} bytes checked");
}
