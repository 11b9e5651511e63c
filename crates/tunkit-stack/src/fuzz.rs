//! Seeded, time-bounded fuzz tests run by `cargo test` (`cargo test -p tunkit-stack --release fuzz --
//! --show-output`; `--skip fuzz` leaves them out). Each stops after `TUNKIT_FUZZ_SECS` seconds (default 2, a
//! fraction allowed) or its input cap and prints how many inputs it tried; `TUNKIT_FUZZ_SEED` picks another
//! sequence (the default is fixed, so failures reproduce).
//!
//! - `fuzz_stack_inbound`: random and mutated packets (both families, TCP/UDP/ICMP/other, addresses biased
//!   to the gateway, the NAT addresses and the listener port) through `inbound`, with random lookups,
//!   releases, closes, replies and ticks in between. Invariants: no panic; the length never changes; `Pass`
//!   and `Drop` leave the packet alone; `WriteBack` changes only addresses, ports and checksums and keeps
//!   valid checksums valid (a partial, `NEEDS_CSUM` one stays the pseudo-header sum); `Reply` is a well-formed packet with valid checksums; a `Datagram`'s payload range
//!   is the UDP payload. Half the stacks hold SYNs: `Hold` leaves the packet alone, random decisions (on
//!   held and random ids) give well-formed packets, expired holds were held; every flow owns one NAT port
//!   and every held flow is pending or counted once as accepted, refused or expired.
//! - `fuzz_stack_flows`: a model of many concurrent TCP connections (opens, data both ways, FIN, RST,
//!   releases, time passing, a small flow cap): every translation matches the model exactly, live flows never
//!   share a NAT endpoint, a released port is not reused within its quarantine. Half the runs hold SYNs and
//!   model the pending flows too: retransmitted, replaced and other segments of pending flows are dropped,
//!   random decisions give the exact SYN, RST or ICMP error (quoting the client's SYN) or false once expired,
//!   expiry reports exactly the holds that are over, refused ports come back at once.
//! - `fuzz_stack_udp`: random datagrams, replies, closes and ticks against a model of the sessions.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use tunkit_core::packet::build::{self, IpFields, TcpFields};
use tunkit_core::packet::{Family, Packet, TcpHeader, Transport};

use crate::testutil::{
  checksums_recomputed_ok, config, endpoints, gateway_of, make_partial, partial_ok, Rng, P,
};
use crate::{Decision, Stack, StackConfig, StackStats, Verdict};

mod flows;

const MAX_INPUTS: usize = 2_000_000;

fn budget() -> Duration {
  let secs = std::env::var("TUNKIT_FUZZ_SECS")
    .ok()
    .and_then(|s| s.parse::<f64>().ok())
    .filter(|s| s.is_finite() && *s >= 0.0)
    .unwrap_or(2.0);
  Duration::from_secs_f64(secs)
}

fn seed() -> u64 {
  std::env::var("TUNKIT_FUZZ_SEED")
    .ok()
    .and_then(|s| s.parse().ok())
    .unwrap_or(0x7374_6163_6b21)
}

/// An address of the family, biased towards the interesting ones of [`config`].
fn addr(rng: &mut Rng, v6: bool) -> IpAddr {
  let r = rng.below(10);
  if v6 {
    let pick = |s: &str| s.parse::<IpAddr>().unwrap();
    match r {
      0 => pick("fd07::1"),
      1 => pick("fd07::2"),
      2 => pick("ff02::1"),
      3 => IpAddr::V6(Ipv6Addr::from(0xfd07u128 << 112 | rng.below(16) as u128)),
      _ => IpAddr::V6(Ipv6Addr::from((rng.next() as u128) << 64 | rng.next() as u128)),
    }
  } else {
    match r {
      0 => IpAddr::V4(Ipv4Addr::new(10, 7, 0, 1)),
      1 => IpAddr::V4(Ipv4Addr::new(10, 7, 0, 2)),
      2 => IpAddr::V4(Ipv4Addr::new(10, 7, 0, [255, 0, 3][rng.below(3) as usize])),
      3 => IpAddr::V4(Ipv4Addr::new(10, 7, 0, rng.below(16) as u8)),
      _ => IpAddr::V4(Ipv4Addr::from(rng.next() as u32)),
    }
  }
}

/// A random endpoint of either family.
fn endpoint(rng: &mut Rng) -> SocketAddr {
  let v6 = rng.one_in(2);
  let a = addr(rng, v6);
  SocketAddr::new(a, port(rng))
}

fn port(rng: &mut Rng) -> u16 {
  match rng.below(8) {
    0 => P,
    1 => 1024 + rng.below(8) as u16,
    2 => 0,
    _ => rng.next() as u16,
  }
}

/// A valid packet with every checksum right.
fn random_packet(rng: &mut Rng) -> Vec<u8> {
  let v6 = rng.one_in(2);
  let mut ip = IpFields::new(addr(rng, v6), addr(rng, v6));
  ip.id = rng.next() as u16;
  ip.ttl = rng.next() as u8;
  ip.flow_label = rng.next() as u32 & 0xf_ffff;
  let len = match rng.below(10) {
    0 => rng.below(9000) as usize,
    1..=4 => rng.below(4) as usize,
    _ => rng.below(300) as usize,
  };
  let payload = rng.bytes(len);
  let sport = port(rng);
  let dport = port(rng);
  let mut pkt = match rng.below(10) {
    0..=4 => {
      let opts = {
        let w = rng.below(3) as usize;
        rng.bytes(4 * w)
      };
      let flags = match rng.below(4) {
        0 => TcpHeader::SYN,
        1 => TcpHeader::ACK | TcpHeader::PSH,
        2 => TcpHeader::SYN | TcpHeader::ACK,
        _ => rng.next() as u8,
      };
      let t = TcpFields {
        src_port: sport,
        dst_port: dport,
        seq: rng.next() as u32,
        ack: rng.next() as u32,
        flags,
        window: rng.next() as u16,
        urgent: 0,
        options: &opts,
      };
      build::tcp(&ip, &t, &payload).unwrap()
    }
    5..=7 => build::udp(&ip, sport, dport, &payload).unwrap(),
    8 => build::icmp_echo(&ip, rng.one_in(4), rng.next() as u16, rng.next() as u16, &payload).unwrap(),
    _ => {
      let mut p = build::udp(&ip, sport, dport, &payload).unwrap();
      // Another protocol number (IPv4 header checksum fixed below).
      let proto = [47u8, 50, 132, 0, 59][rng.below(5) as usize];
      if v6 {
        p[6] = proto;
      } else {
        p[9] = proto;
        refresh_ipv4_checksum(&mut p);
      }
      p
    }
  };
  if v6 && rng.one_in(8) {
    // A hop-by-hop header (or a fragment header: then the stack must pass it).
    let kind = if rng.one_in(2) { 0 } else { 44 };
    let next = pkt[6];
    pkt[6] = kind;
    pkt.splice(40..40, [next, 0, 1, 4, 0, 0, 0, 0]);
    let l = (pkt.len() - 40) as u16;
    pkt[4..6].copy_from_slice(&l.to_be_bytes());
  } else if !v6 && rng.one_in(10) {
    let word: u16 = if rng.one_in(2) {
      0x2000
    } else {
      rng.below(0x2000) as u16
    };
    pkt[6..8].copy_from_slice(&word.to_be_bytes());
    refresh_ipv4_checksum(&mut pkt);
  }
  pkt
}

fn refresh_ipv4_checksum(p: &mut [u8]) {
  let ihl = (p[0] & 0x0f) as usize * 4;
  p[10..12].fill(0);
  let c = tunkit_core::packet::checksum::checksum(&p[..ihl]);
  p[10..12].copy_from_slice(&c.to_be_bytes());
}

fn mutate(rng: &mut Rng, pkt: &mut Vec<u8>) {
  for _ in 0..1 + rng.below(3) {
    match rng.below(6) {
      0..=2 if !pkt.is_empty() => {
        let span = pkt.len().min(if rng.one_in(4) { usize::MAX } else { 80 });
        let i = rng.below(span as u64) as usize;
        pkt[i] ^= 1 << rng.below(8);
      }
      3 if !pkt.is_empty() => {
        let i = rng.below(pkt.len().min(80) as u64) as usize;
        pkt[i] = rng.next() as u8;
      }
      4 => {
        let n = rng.below(pkt.len() as u64 + 1) as usize;
        pkt.truncate(n);
      }
      _ => {
        let n = 1 + rng.below(16) as usize;
        pkt.extend(rng.bytes(n));
      }
    }
  }
}

/// Byte ranges a NAT rewrite may change.
fn rewritable(p: &Packet) -> [std::ops::Range<usize>; 4] {
  let l4 = p.l4_offset;
  match p.family {
    Family::V4 => [10..12, 12..20, l4..l4 + 4, l4 + 16..l4 + 18],
    Family::V6 => [8..24, 24..40, l4..l4 + 4, l4 + 16..l4 + 18],
  }
}

fn small_config(rng: &mut Rng) -> StackConfig {
  let mut cfg = config();
  cfg.max_tcp_flows = 1 + rng.below(64) as usize;
  cfg.max_udp_sessions = 1 + rng.below(64) as usize;
  cfg.quarantine = Duration::from_millis(rng.below(5000));
  cfg.tcp_syn_idle = Duration::from_millis(rng.below(5000));
  cfg.udp_idle = Duration::from_millis(rng.below(5000));
  cfg.icmp = [
    crate::IcmpMode::Reply,
    crate::IcmpMode::Drop,
    crate::IcmpMode::Pass,
  ][rng.below(3) as usize];
  cfg.hold_syn = rng.one_in(2);
  cfg.hold_timeout = Duration::from_millis(1 + rng.below(5000));
  cfg
}

fn decision(rng: &mut Rng) -> Decision {
  [Decision::Accept, Decision::Reset, Decision::Unreachable][rng.below(3) as usize]
}

/// Invariants of the counters: every flow (live, pending or quarantined) owns exactly one NAT port, and every
/// held SYN is still pending or ended exactly once.
fn check_counts(s: &StackStats) {
  assert_eq!(
    s.nat_ports_in_use,
    s.tcp_flows + s.tcp_quarantined,
    "NAT ports in use vs flows: {s:?}"
  );
  assert!(s.tcp_pending <= s.tcp_flows);
  assert_eq!(
    s.tcp_held,
    s.tcp_accepted
      + s.tcp_refused_reset
      + s.tcp_refused_unreachable
      + s.tcp_hold_expired
      + s.tcp_pending as u64,
    "held flows unaccounted for: {s:?}"
  );
}

#[test]
fn fuzz_stack_inbound() {
  let mut rng = Rng::new(seed());
  let start = Instant::now();
  let t0 = Instant::now();
  let mut now = t0;
  let mut st = Stack::new(small_config(&mut rng)).unwrap();
  let (mut n, mut counts, mut partials, mut decided) = (0usize, [0usize; 6], 0usize, 0usize);
  let mut out = Vec::new();
  let mut nats: Vec<SocketAddr> = Vec::new();
  let mut sessions: Vec<u64> = Vec::new();
  // Held flow -> whether its SYN's checksums were right (or partial: completed when held).
  let mut held: BTreeMap<u64, bool> = BTreeMap::new();
  // Held flows a decision found gone (expired: swept already, or removed by that decision).
  let mut gone: Vec<u64> = Vec::new();
  while n < MAX_INPUTS && start.elapsed() < budget() {
    n += 1;
    if n % 5000 == 0 {
      st = Stack::new(small_config(&mut rng)).unwrap();
      nats.clear();
      sessions.clear();
      held.clear();
      gone.clear();
    }
    now += Duration::from_millis(rng.below(50));
    let mut pkt = random_packet(&mut rng);
    if rng.one_in(3) {
      mutate(&mut rng, &mut pkt);
    }
    let valid = checksums_recomputed_ok(&pkt).is_ok();
    // Now and then a NEEDS_CSUM segment (checksum field = pseudo-header sum), as offload delivers it.
    let partial = valid && rng.one_in(4) && make_partial(&mut pkt);
    let orig = pkt.clone();
    out.clear();
    let v = st.inbound_offload(&mut pkt, now, &mut out, partial);
    assert_eq!(pkt.len(), orig.len(), "length changed: {v:?}");
    match &v {
      Verdict::Pass | Verdict::Drop => assert_eq!(pkt, orig, "{v:?} changed the packet"),
      Verdict::Hold { flow, .. } => {
        assert!(st.config().hold_syn);
        assert_eq!(pkt, orig, "Hold changed the packet");
        assert!(held.insert(*flow, valid).is_none(), "flow {flow} held twice");
      }
      Verdict::WriteBack => {
        let p = Packet::parse(&pkt).expect("a rewritten packet parses");
        let po = Packet::parse(&orig).unwrap();
        assert!(matches!(p.transport, Transport::Tcp { .. }));
        assert_eq!(
          (p.ip_len, p.l4_offset, p.payload.clone()),
          (po.ip_len, po.l4_offset, po.payload)
        );
        let allowed = rewritable(&p);
        for (i, (a, b)) in orig.iter().zip(&pkt).enumerate() {
          assert!(
            a == b || allowed.iter().any(|r| r.contains(&i)),
            "byte {i} changed"
          );
        }
        if partial {
          assert!(
            partial_ok(&pkt),
            "partial checksum not updated: {orig:02x?} -> {pkt:02x?}"
          );
          partials += 1;
        } else if valid {
          if let Err(what) = checksums_recomputed_ok(&pkt) {
            panic!("rewrite broke the {what}: {orig:02x?} -> {pkt:02x?}");
          }
        }
        let (src, _) = endpoints(&pkt);
        if p.dst == gateway_of(src) {
          nats.push(src);
        }
      }
      Verdict::Reply => {
        assert_eq!(pkt, orig);
        checksums_recomputed_ok(&out).unwrap_or_else(|w| panic!("reply has a bad {w}"));
      }
      Verdict::Datagram {
        session,
        payload,
        new,
        ..
      } => {
        assert_eq!(pkt, orig);
        let po = Packet::parse(&orig).unwrap();
        assert_eq!(payload, &po.payload);
        assert!(payload.end <= pkt.len());
        if new.is_some() {
          sessions.push(*session);
        }
      }
    }
    counts[match v {
      Verdict::WriteBack => 0,
      Verdict::Reply => 1,
      Verdict::Datagram { .. } => 2,
      Verdict::Drop => 3,
      Verdict::Pass => 4,
      Verdict::Hold { .. } => 5,
    }] += 1;
    // Other calls now and then, on known and random keys.
    match rng.below(16) {
      0 if !nats.is_empty() => {
        let nat = nats[rng.below(nats.len() as u64) as usize];
        let _ = st.lookup_tcp(nat);
        if rng.one_in(2) {
          st.release_tcp(nat, now);
        }
      }
      1 => st.release_tcp(endpoint(&mut rng), now),
      2 if !sessions.is_empty() => {
        let id = sessions[rng.below(sessions.len() as u64) as usize];
        let from = endpoint(&mut rng);
        let payload = rng.some_bytes(100);
        if st.udp_reply(id, from, &payload, &mut out).is_ok() {
          checksums_recomputed_ok(&out).unwrap_or_else(|w| panic!("UDP reply has a bad {w}"));
        }
        if rng.one_in(4) {
          st.close_udp(id);
        }
      }
      3 => {
        st.tick(now);
      }
      4 => while st.take_notice().is_some() {},
      5 | 6 => {
        // A held flow (or now and then any id) decided at random.
        let id = match held.keys().nth(rng.below(held.len() as u64 + 1) as usize) {
          Some(&id) if !rng.one_in(8) => id,
          _ => rng.below(n as u64 + 2),
        };
        let d = decision(&mut rng);
        out.push(1);
        let ok = st.decide(id, d, now, &mut out);
        let known = held.remove(&id);
        assert!(ok || out.is_empty(), "a refused decision leaves out empty");
        if !ok && known.is_some() {
          gone.push(id);
        }
        if ok {
          let valid = known.expect("decide succeeded on a flow never held");
          let p = Packet::parse(&out).expect("a decision's packet parses");
          match d {
            Decision::Accept => assert!(matches!(p.transport, Transport::Tcp { .. })),
            Decision::Reset => assert!(matches!(p.transport, Transport::Tcp { .. }) && p.payload.is_empty()),
            Decision::Unreachable => assert!(matches!(p.transport, Transport::Icmp { .. })),
          }
          if valid || d != Decision::Accept {
            checksums_recomputed_ok(&out).unwrap_or_else(|w| panic!("{d:?} gave a bad {w}"));
          }
          decided += 1;
        }
        assert!(
          !st.decide(id, d, now, &mut out) && out.is_empty(),
          "decided twice"
        );
      }
      7 => {
        for id in st.take_expired_holds() {
          assert!(
            held.remove(&id).is_some() || gone.contains(&id),
            "expired hold {id} was not pending"
          );
        }
      }
      _ => {}
    }
    let s = st.stats();
    assert!(s.tcp_flows <= st.config().max_tcp_flows && s.udp_sessions <= st.config().max_udp_sessions);
    check_counts(&s);
  }
  eprintln!(
    "fuzz stack inbound: {n} inputs ({} rewritten, {partials} of them partial-checksum, {} replies, {} datagrams, \
     {} dropped, {} passed, {} held, {decided} decided) in {:?}",
    counts[0],
    counts[1],
    counts[2],
    counts[3],
    counts[4],
    counts[5],
    start.elapsed()
  );
  assert!(
    counts[0] > n / 200 && counts[2] > n / 200 && counts[5] > n / 1000 && decided > 0,
    "the fuzzer should reach the NAT, UDP and hold paths"
  );
}

#[test]
fn fuzz_stack_udp() {
  let mut rng = Rng::new(seed() ^ 2);
  let start = Instant::now();
  let t0 = Instant::now();
  let (mut steps, mut datagrams, mut replies, mut ended) = (0usize, 0usize, 0usize, 0usize);
  while steps < MAX_INPUTS && start.elapsed() < budget() {
    let mut cfg = config();
    cfg.max_udp_sessions = 1 + rng.below(100) as usize;
    cfg.udp_idle = Duration::from_millis(1 + rng.below(2000));
    let cap = cfg.max_udp_sessions;
    let st = Stack::new(cfg).unwrap();
    let mut now = t0;
    // session -> client (ordered: the fuzzer's choices must not depend on hashing)
    let mut model: BTreeMap<u64, SocketAddr> = BTreeMap::new();
    let mut out = Vec::new();
    for _ in 0..2000 {
      steps += 1;
      now += Duration::from_millis(rng.below(30));
      match rng.below(8) {
        0..=3 => {
          let v6 = rng.one_in(2);
          let client = if v6 {
            SocketAddr::new(
              IpAddr::V6(Ipv6Addr::from(0xfd07u128 << 112 | 0x100 | rng.below(20) as u128)),
              5000,
            )
          } else {
            SocketAddr::new(
              IpAddr::V4(Ipv4Addr::new(10, 7, 0, 100)),
              5000 + rng.below(150) as u16,
            )
          };
          let dest = SocketAddr::new(
            if v6 {
              IpAddr::V6(Ipv6Addr::from(0x2001_0db8u128 << 96 | rng.below(5) as u128))
            } else {
              IpAddr::V4(Ipv4Addr::new(198, 51, 100, rng.below(5) as u8))
            },
            53,
          );
          let mut pkt = crate::testutil::udp(client, dest, &rng.some_bytes(64));
          let Verdict::Datagram {
            session,
            new,
            destination,
            ..
          } = st.inbound(&mut pkt, now, &mut out)
          else {
            panic!("not a datagram")
          };
          assert_eq!(destination, dest);
          match model.get(&session) {
            Some(&c) => assert!(c == client && new.is_none()),
            None => {
              assert!(
                new.is_some_and(|i| i.client == client),
                "a session id is new only once"
              );
              assert!(
                !model.values().any(|&c| c == client),
                "one session per client endpoint"
              );
              model.insert(session, client);
            }
          }
          for id in st.take_evicted() {
            assert!(model.remove(&id).is_some());
            ended += 1;
          }
          datagrams += 1;
        }
        4 | 5 if !model.is_empty() => {
          let ids: Vec<u64> = model.keys().copied().collect();
          let id = ids[rng.below(ids.len() as u64) as usize];
          let client = model[&id];
          let from = SocketAddr::new(
            if client.is_ipv4() {
              IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9))
            } else {
              IpAddr::V6(Ipv6Addr::from(0x2001_0db8u128 << 96 | 9))
            },
            53,
          );
          st.udp_reply(id, from, &rng.some_bytes(200), &mut out).unwrap();
          checksums_recomputed_ok(&out).unwrap();
          assert_eq!(endpoints(&out), (from, client));
          replies += 1;
        }
        6 if !model.is_empty() => {
          let id = *model.keys().next().unwrap();
          st.close_udp(id);
          model.remove(&id);
        }
        _ => {
          for id in st.tick(now) {
            assert!(model.remove(&id).is_some(), "tick returned an unknown session");
            ended += 1;
          }
        }
      }
      assert!(model.len() <= cap);
      assert_eq!(st.stats().udp_sessions, model.len());
    }
  }
  eprintln!(
    "fuzz stack udp: {steps} steps ({datagrams} datagrams, {replies} replies, {ended} sessions ended) in {:?}",
    start.elapsed()
  );
  assert!(datagrams > 0 && ended > 0);
}
