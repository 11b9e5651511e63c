//! Data transfer with a scripted peer: ACK policy, reassembly and SACK blocks, PAWS, zero windows held for
//! a minute, sequence wrap-around, fast retransmit, SACK-driven and timeout retransmission, keepalive, MSS,
//! GRO-sized segments, TSO output, Nagle, IPv6.

use std::time::Duration;

use super::script::*;
use super::util::*;
use crate::options::{SackBlocks, TcpOptions, Timestamps};
use crate::{Error, Keepalive, Seq, State};

fn opts_sack() -> TcpOptions {
  TcpOptions {
    mss: Some(1460),
    sack_permitted: true,
    ..Default::default()
  }
}

#[test]
fn delayed_ack_and_every_second_full_segment() {
  let (mut s, c, iss) = Script::established();
  let seg = vec![7u8; 1460];
  let r = s.send(ACK, PISS + 1, iss + 1, &seg);
  assert!(r.is_empty(), "first segment: delayed");
  let r = s.send(ACK, PISS + 1 + 1460, iss + 1, &seg);
  assert_eq!(r.len(), 1, "second full segment: ACK now");
  assert_eq!(r[0].ack, Seq(PISS + 1 + 2920));
  let r = s.send(ACK, PISS + 1 + 2920, iss + 1, b"small");
  assert!(r.is_empty());
  let t0 = s.now;
  let sent = s.advance(ms(100));
  assert_eq!(sent.len(), 1);
  assert_eq!(sent[0].0 - t0, ms(4), "delayed ACK after 4 ms");
  assert_eq!(sent[0].1.ack, Seq(PISS + 1 + 2925));
  let mut buf = vec![0u8; 4000];
  assert_eq!(s.ep.read(c, &mut buf), Ok(2925));
}

#[test]
fn out_of_order_acked_at_once_with_sack_blocks_most_recent_first() {
  let mut s = Script::new(config());
  let (c, iss) = s.passive(opts_sack());
  let p = PISS + 1;
  let d = |i: u32| vec![i as u8; 100];
  let r = s.send(ACK, p + 200, iss + 1, &d(2));
  assert_eq!(r.len(), 1);
  assert_eq!(r[0].ack, Seq(p));
  assert_eq!(r[0].opts.sack.as_slice(), &[(Seq(p + 200), Seq(p + 300))]);
  let r = s.send(ACK, p + 400, iss + 1, &d(4));
  assert_eq!(
    r[0].opts.sack.as_slice(),
    &[(Seq(p + 400), Seq(p + 500)), (Seq(p + 200), Seq(p + 300))]
  );
  let r = s.send(ACK, p + 100, iss + 1, &d(1));
  assert_eq!(
    r[0].opts.sack.as_slice(),
    &[(Seq(p + 100), Seq(p + 300)), (Seq(p + 400), Seq(p + 500))],
    "merged block first"
  );
  assert_eq!(s.ep.readable(c), 0);
  let r = s.send(ACK, p, iss + 1, &d(0));
  assert_eq!(r[0].ack, Seq(p + 300), "hole filled: ACK at once");
  assert_eq!(r[0].opts.sack.as_slice(), &[(Seq(p + 400), Seq(p + 500))]);
  let r = s.send(ACK, p + 300, iss + 1, &d(3));
  assert_eq!(r[0].ack, Seq(p + 500));
  assert!(r[0].opts.sack.is_empty());
  let mut buf = vec![0u8; 1000];
  assert_eq!(s.ep.read(c, &mut buf), Ok(500));
  for i in 0..5 {
    assert!(
      buf[i * 100..(i + 1) * 100].iter().all(|&b| b == i as u8),
      "in order"
    );
  }
  assert_eq!(s.ep.conn_stats(c).unwrap().ooo_segments, 3);
}

#[test]
fn timestamps_echo_and_paws() {
  let mut s = Script::new(config());
  let (c, iss) = s.passive(linux_syn(1000));
  s.peer_ts = Some(1001);
  let r = s.send(ACK | PSH, PISS + 1, iss + 1, b"abc");
  assert!(r.is_empty());
  s.ep.write(c, b"x").unwrap();
  let r = s.poll();
  assert_eq!(r[0].opts.timestamps.unwrap().ecr, 1001, "TS.Recent echoed");
  // An older timestamp (a wrapped old duplicate): dropped by PAWS, ACKed.
  s.peer_ts = Some(500);
  let r = s.send(ACK | PSH, PISS + 4, iss + 2, b"old");
  assert_eq!(r.len(), 1);
  assert_eq!(r[0].ack, Seq(PISS + 4));
  assert_eq!(s.ep.readable(c), 3);
  assert_eq!(s.ep.conn_stats(c).unwrap().paws_drops, 1);
  s.peer_ts = Some(1002);
  s.send(ACK | PSH, PISS + 4, iss + 2, b"new");
  assert_eq!(s.ep.readable(c), 6);
}

#[test]
fn peer_zero_window_for_a_minute_then_resumes() {
  let (mut s, c, iss) = Script::established();
  let total = 50_000usize;
  let data: Vec<u8> = (0..total).map(|i| pattern(9, i as u64)).collect();
  assert_eq!(s.ep.write(c, &data), Ok(total));
  let r = s.poll();
  let sent: usize = r.iter().map(|x| x.payload.len()).sum();
  assert_eq!(sent, 14600, "initial window");
  // The peer takes it all but its window is now closed.
  let mut una = iss + 1 + sent as u32;
  assert!(s.send_w(ACK, PISS + 1, una, &[], 0).is_empty());
  let t0 = s.now;
  let mut probes = Vec::new();
  let end = t0 + Duration::from_secs(60);
  while s.now < end {
    let step = s.advance(ms(50));
    for (t, seg) in step {
      assert!(seg.payload.is_empty(), "only probes while the window is zero");
      assert_eq!(seg.seq, Seq(una - 1), "probe below SND.UNA");
      probes.push(t - t0);
      // The peer answers each probe: still zero.
      assert!(s.send_w(ACK, PISS + 1, una, &[], 0).is_empty());
    }
  }
  let n = probes.len();
  assert!(n >= 12, "probes continue: {probes:?}");
  let gaps: Vec<Duration> = probes.windows(2).map(|w| w[1] - w[0]).collect();
  assert!(gaps.windows(2).all(|g| g[1] >= g[0]), "backoff: {gaps:?}");
  assert_eq!(
    *gaps.last().unwrap(),
    Duration::from_secs(10),
    "capped at persist_max"
  );
  assert_eq!(s.ep.conn_stats(c).unwrap().zero_window_probes, n as u64);
  assert_eq!(s.ep.state(c), Some(State::Established));
  // The window opens: the transfer resumes and completes.
  let mut got = sent;
  let r = s.send_w(ACK, PISS + 1, una, &[], 65535);
  let mut pending = r;
  while got < total {
    assert!(
      !pending.is_empty(),
      "data flows after the window opened (got {got})"
    );
    for seg in &pending {
      assert_eq!(seg.seq, Seq(iss + 1 + got as u32));
      assert_eq!(&seg.payload[..], &data[got..got + seg.payload.len()]);
      got += seg.payload.len();
    }
    una = iss + 1 + got as u32;
    pending = s.send_w(ACK, PISS + 1, una, &[], 65535);
  }
  assert_eq!(got, total);
}

#[test]
fn our_zero_window_answers_probes_and_reopens_on_read() {
  let mut cfg = config();
  cfg.recv_buffer = 8192;
  cfg.min_buffer = 8192;
  let mut s = Script::new(cfg);
  let (c, iss) = s.passive(TcpOptions {
    mss: Some(1000),
    ..Default::default()
  });
  let mut seq = PISS + 1;
  let mut last = None;
  for _ in 0..9 {
    let r = s.send(ACK, seq, iss + 1, &[1u8; 1000]);
    seq += 1000;
    last = r.last().cloned().or(last);
  }
  s.advance(ms(10));
  // 8192 accepted, the rest trimmed to the window.
  assert_eq!(s.ep.readable(c), 8192);
  let r = s.send(ACK, PISS + 1 + 8192, iss + 1, &[2u8; 10]);
  assert_eq!(r.len(), 1);
  assert_eq!(r[0].window, 0);
  assert_eq!(r[0].ack, Seq(PISS + 1 + 8192));
  // A probe below RCV.NXT is answered with the zero window.
  for _ in 0..20 {
    s.now += Duration::from_secs(3);
    let r = s.send(ACK, PISS + 8192, iss + 1, &[]);
    assert_eq!((r.len(), r[0].window), (1, 0));
  }
  let mut buf = vec![0u8; 10_000];
  assert_eq!(s.ep.read(c, &mut buf), Ok(8192));
  let r = s.poll();
  assert_eq!(r.len(), 1, "window update");
  assert_eq!(r[0].window, 8192);
  assert_eq!(s.ep.conn_stats(c).unwrap().window_updates, 1);
  let _ = last;
}

#[test]
fn sequence_numbers_wrap_both_ways() {
  let mut s = Script::new(config());
  s.ep.next_isn = Some(u32::MAX - 500);
  let peer_iss = u32::MAX - 700;
  let l = s.ep.listen(crate::ListenAddr::any(), 4).unwrap();
  let r = s.send_opts(
    SYN,
    peer_iss,
    0,
    &[],
    65535,
    TcpOptions {
      mss: Some(1000),
      ..Default::default()
    },
  );
  let iss = r[0].seq.0;
  assert_eq!(iss, u32::MAX - 500);
  s.send(ACK, peer_iss.wrapping_add(1), iss.wrapping_add(1), &[]);
  let c = s.ep.accept(l).unwrap();
  // Peer -> us: 3000 bytes across 2^32.
  let data: Vec<u8> = (0..3000u32).map(|i| pattern(3, i as u64)).collect();
  let mut seq = peer_iss.wrapping_add(1);
  for chunk in data.chunks(1000) {
    s.send(ACK, seq, iss.wrapping_add(1), chunk);
    seq = seq.wrapping_add(chunk.len() as u32);
  }
  let mut buf = vec![0u8; 4000];
  assert_eq!(s.ep.read(c, &mut buf), Ok(3000));
  assert_eq!(&buf[..3000], &data[..]);
  // Us -> peer: 3000 bytes across 2^32, the ACK wrapping too.
  s.ep.write(c, &data).unwrap();
  let r = s.poll();
  assert_eq!(r.len(), 3);
  assert_eq!(r[0].ack, Seq(seq));
  assert!(r[0].seq.0 > u32::MAX - 600 && r[2].seq.0 < 2000);
  s.send(ACK, seq, iss.wrapping_add(3001), &[]);
  let i = s.ep.info(c).unwrap();
  assert_eq!(i.in_flight, 0);
  assert!(s.ep.conn(c).snd_una.0 < 3000);
}

#[test]
fn half_close_keeps_receiving() {
  let (mut s, c, iss) = Script::established();
  s.ep.shutdown(c).unwrap();
  s.poll();
  s.send(ACK, PISS + 1, iss + 2, &[]);
  assert_eq!(s.ep.state(c), Some(State::FinWait2));
  let mut total = 0;
  let mut buf = vec![0u8; 2000];
  for i in 0..50u32 {
    s.send(ACK | PSH, PISS + 1 + i * 1000, iss + 2, &[i as u8; 1000]);
    total += s.ep.read(c, &mut buf).unwrap();
  }
  assert_eq!(total, 50_000);
  assert_eq!(s.ep.write(c, b"no"), Err(Error::Shutdown));
  s.send(FIN | ACK, PISS + 50_001, iss + 2, &[]);
  assert_eq!(s.ep.read(c, &mut buf), Ok(0));
}

fn ten_segments(s: &mut Script, c: crate::ConnId) -> Vec<Seg> {
  s.ep.write(c, &vec![5u8; 14_600]).unwrap();
  let r = s.poll();
  assert_eq!(r.len(), 10);
  r
}

#[test]
fn fast_retransmit_on_three_dup_acks_and_newreno_partial_ack() {
  let (mut s, c, iss) = Script::established();
  let segs = ten_segments(&mut s, c);
  let una = iss + 1;
  assert!(s.send(ACK, PISS + 1, una, &[]).is_empty());
  assert!(s.send(ACK, PISS + 1, una, &[]).is_empty());
  let r = s.send(ACK, PISS + 1, una, &[]);
  assert_eq!(r.len(), 1, "third duplicate ACK: fast retransmit");
  assert_eq!(r[0].seq, segs[0].seq);
  assert_eq!(r[0].payload.len(), 1460);
  let st = s.ep.conn_stats(c).unwrap();
  assert_eq!((st.fast_retransmits, st.dup_acks, st.retransmits), (1, 3, 1));
  assert_eq!(s.ep.info(c).unwrap().cwnd, 7300, "halved");
  // A partial ACK (segment 4 also lost): NewReno retransmits it at once.
  let r = s.send(ACK, PISS + 1, una + 4 * 1460, &[]);
  assert!(r.iter().any(|x| x.seq == segs[4].seq), "{r:?}");
  let r = s.send(ACK, PISS + 1, una + 14_600, &[]);
  assert!(r.is_empty());
  assert_eq!(s.ep.info(c).unwrap().in_flight, 0);
}

#[test]
fn sack_scoreboard_retransmits_only_holes() {
  let mut s = Script::new(config());
  let (c, iss) = s.passive(opts_sack());
  let segs = ten_segments(&mut s, c);
  let una = iss + 1;
  let sack = |blocks: &[(u32, u32)]| {
    let mut b = SackBlocks::default();
    for &(l, r) in blocks {
      b.push(Seq(una + l * 1460), Seq(una + r * 1460));
    }
    TcpOptions {
      sack: b,
      ..Default::default()
    }
  };
  // Segments 0 and 4 lost: SACKs for 1..4 (3 segments above 0: lost without waiting for 3 dup ACKs).
  assert!(s
    .send_opts(ACK, PISS + 1, una, &[], 65535, sack(&[(1, 2)]))
    .is_empty());
  assert!(s
    .send_opts(ACK, PISS + 1, una, &[], 65535, sack(&[(1, 3)]))
    .is_empty());
  let r = s.send_opts(ACK, PISS + 1, una, &[], 65535, sack(&[(1, 4)]));
  assert_eq!(r.len(), 1, "{r:?}");
  assert_eq!(r[0].seq, segs[0].seq);
  for k in 6..10 {
    let r = s.send_opts(ACK, PISS + 1, una, &[], 65535, sack(&[(5, k), (1, 4)]));
    for x in &r {
      assert!(
        x.seq == segs[4].seq || x.seq >= Seq(una + 14_600),
        "only hole 4 or new data: {x:?}"
      );
    }
  }
  let st = s.ep.conn_stats(c).unwrap();
  assert_eq!(st.retransmits, 2, "segments 0 and 4, nothing SACKed: {st:?}");
  assert_eq!(st.sack_recovered_bytes, 2 * 1460);
  assert_eq!(st.fast_retransmits, 1);
}

#[test]
fn rto_backoff_from_the_floor() {
  let (mut s, c, _) = Script::established();
  s.ep.write(c, b"lost").unwrap();
  let t0 = s.now;
  let r = s.poll();
  assert_eq!(r.len(), 1);
  let sent = s.advance(ms(700));
  let times: Vec<u64> = sent.iter().map(|(t, _)| (*t - t0).as_millis() as u64).collect();
  assert_eq!(times, vec![20, 60, 140, 300, 620], "20 ms floor, doubling");
  assert!(sent.iter().all(|(_, x)| x.payload == b"lost"));
  assert_eq!(s.ep.conn_stats(c).unwrap().rto_count, 5);
  assert_eq!(s.ep.info(c).unwrap().cwnd, 1460, "loss window");
}

#[test]
fn retransmissions_run_out() {
  let mut cfg = config();
  cfg.max_retransmits = 3;
  let mut s = Script::new(cfg);
  let (c, _) = s.passive(TcpOptions::default());
  s.ep.write(c, b"x").unwrap();
  s.poll();
  let sent = s.advance(ms(10_000));
  assert_eq!(sent.len(), 4, "3 retransmissions and a RST: {sent:?}");
  assert!(sent[3].1.flags.has(RST));
  assert_eq!(s.ep.info(c).unwrap().error, Some(Error::TimedOut));
}

#[test]
fn keepalive_probes_and_gives_up() {
  let mut cfg = config();
  cfg.keepalive = Some(Keepalive {
    idle: Duration::from_secs(10),
    interval: Duration::from_secs(1),
    probes: 3,
  });
  let mut s = Script::new(cfg);
  let (c, iss) = s.passive(TcpOptions::default());
  let sent = s.advance(Duration::from_secs(10));
  assert_eq!(sent.len(), 1);
  assert_eq!(sent[0].1.seq, Seq(iss), "SND.UNA - 1");
  // Answered: idle again.
  s.send(ACK, PISS + 1, iss + 1, &[]);
  let sent = s.advance(Duration::from_secs(9));
  assert!(sent.is_empty());
  let sent = s.advance(Duration::from_secs(10));
  assert_eq!(sent.len(), 4, "3 probes and a RST: {sent:?}");
  assert!(sent[3].1.flags.has(RST));
  assert_eq!(s.ep.info(c).unwrap().error, Some(Error::TimedOut));
  assert_eq!(s.ep.conn_stats(c).unwrap().keepalive_probes, 4);
}

#[test]
fn mss_from_peer_and_mtu() {
  let mut cfg = config();
  cfg.mtu = 1280;
  let mut s = Script::new(cfg);
  let l = s.ep.listen(crate::ListenAddr::any(), 4).unwrap();
  let r = s.send_opts(
    SYN,
    PISS,
    0,
    &[],
    65535,
    TcpOptions {
      mss: Some(500),
      ..Default::default()
    },
  );
  assert_eq!(r[0].opts.mss, Some(1240));
  let iss = r[0].seq.0;
  s.send(ACK, PISS + 1, iss + 1, &[]);
  let c = s.ep.accept(l).unwrap();
  s.ep.write(c, &[1u8; 2000]).unwrap();
  let r = s.poll();
  assert!(r.iter().all(|x| x.payload.len() <= 500));
  assert_eq!(r.len(), 4);
  // No MSS option: 536 for IPv4.
  let mut s = Script::new(config());
  let (c, _) = s.passive(TcpOptions::default());
  assert_eq!(s.ep.info(c).unwrap().mss, 536);
}

#[test]
fn gro_super_segment_is_one_segment() {
  let (mut s, c, iss) = Script::established();
  let big = vec![3u8; 60_000];
  let r = s.send(ACK | PSH, PISS + 1, iss + 1, &big);
  assert_eq!(r.len(), 1, "more than two segments' worth: ACK at once");
  assert_eq!(r[0].ack, Seq(PISS + 60_001));
  assert_eq!(s.ep.readable(c), 60_000);
}

#[test]
fn tso_output_carries_gso_size() {
  let mut cfg = config();
  cfg.tso_max_payload = 64_000;
  let mut s = Script::new(cfg);
  let (c, iss) = s.passive(TcpOptions {
    mss: Some(1460),
    ..Default::default()
  });
  s.ep.write(c, &vec![1u8; 100_000]).unwrap();
  let r = s.poll();
  assert_eq!(r.len(), 1, "one super-packet of the initial window");
  assert_eq!(r[0].payload.len(), 14_600);
  assert_eq!(r[0].gso_size, 1460);
  let r = s.send(ACK, PISS + 1, iss + 1 + 14_600, &[]);
  assert!(r[0].payload.len() > 14_600 && r[0].payload.len() % 1460 == 0 && r[0].gso_size == 1460);
}

#[test]
fn nagle_when_enabled_coalesces_small_writes() {
  let mut cfg = config();
  cfg.nodelay = false;
  let mut s = Script::new(cfg);
  let (c, iss) = s.passive(TcpOptions {
    mss: Some(1460),
    ..Default::default()
  });
  s.ep.write(c, b"a").unwrap();
  assert_eq!(s.poll().len(), 1);
  s.ep.write(c, b"b").unwrap();
  s.ep.write(c, b"c").unwrap();
  assert!(s.poll().is_empty(), "held while data is in flight");
  let r = s.send(ACK, PISS + 1, iss + 2, &[]);
  assert_eq!(r[0].payload, b"bc");
  // Default (Nagle off): each write goes at once.
  let (mut s, c, _) = Script::established();
  s.ep.write(c, b"a").unwrap();
  assert_eq!(s.poll().len(), 1);
  s.ep.write(c, b"b").unwrap();
  assert_eq!(s.poll().len(), 1);
}

#[test]
fn ipv6_handshake_and_data() {
  let mut s = Script::new(config()).v6();
  let (c, iss) = s.passive(TcpOptions {
    mss: Some(1440),
    ..Default::default()
  });
  assert_eq!(s.ep.info(c).unwrap().mss, 1440);
  s.send(ACK | PSH, PISS + 1, iss + 1, b"v6 data");
  let mut buf = [0u8; 16];
  assert_eq!(s.ep.read(c, &mut buf), Ok(7));
  s.ep.write(c, b"reply").unwrap();
  assert_eq!(s.poll()[0].payload, b"reply");
  let _ = Timestamps::default();
}
