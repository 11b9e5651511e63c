//! "Connect before accept" (`hold_syn`): held SYNs, decisions, expiry, and the flow cap and ports they use.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tunkit_core::packet::{Packet, TcpHeader, Transport};
use tunkit_core::ErrorKind;

use crate::testutil::*;
use crate::{Decision, Stack, StackConfig, TcpFlowInfo, Verdict};

const SYN: u8 = TcpHeader::SYN;
const ACK: u8 = TcpHeader::ACK;
const RST: u8 = TcpHeader::RST;
const FIN: u8 = TcpHeader::FIN;
const PSH: u8 = TcpHeader::PSH;

const V4: (&str, &str) = ("10.7.0.50:40000", "93.184.216.34:443");
const V6: (&str, &str) = ("[fd07::50]:40000", "[2606:4700::1111]:443");

fn held_config() -> StackConfig {
  let mut c = config();
  c.hold_syn = true;
  c
}

fn held_stack() -> Stack {
  Stack::new(held_config()).unwrap()
}

/// Sends a SYN `client -> dest` (ISN `isn`), expects it held and unchanged; returns the flow id.
fn hold(st: &Stack, client: SocketAddr, dest: SocketAddr, isn: u32, now: Instant) -> u64 {
  let mut pkt = tcp(client, dest, SYN, isn, 0, b"");
  let orig = pkt.clone();
  let mut out = Vec::new();
  let v = st.inbound(&mut pkt, now, &mut out);
  let Verdict::Hold {
    flow,
    client: c,
    destination: d,
  } = v
  else {
    panic!("SYN {client} -> {dest} got {v:?}");
  };
  assert_eq!((c, d), (client, dest));
  assert_eq!(pkt, orig, "a held SYN is left alone");
  assert!(out.is_empty());
  flow
}

fn decide(st: &Stack, flow: u64, d: Decision, now: Instant) -> Vec<u8> {
  let mut out = vec![0xee; 3];
  assert!(st.decide(flow, d, now, &mut out), "decide {flow} {d:?}");
  assert_checksums(&out);
  out
}

fn verdict(st: &Stack, mut pkt: Vec<u8>, now: Instant) -> (Verdict, Vec<u8>) {
  let v = st.inbound(&mut pkt, now, &mut Vec::new());
  (v, pkt)
}

fn listener(client: SocketAddr) -> SocketAddr {
  SocketAddr::new(gateway_of(client), P)
}

#[test]
fn defaults_keep_syns_unheld_and_a_zero_hold_timeout_is_refused() {
  let c = StackConfig::new(P);
  assert!(!c.hold_syn);
  assert_eq!(c.hold_timeout, Duration::from_secs(10));
  let mut c = held_config();
  c.hold_timeout = Duration::ZERO;
  assert_eq!(
    Stack::new(c.clone()).unwrap_err().kind(),
    ErrorKind::InvalidArgument
  );
  c.hold_syn = false;
  assert!(
    Stack::new(c).is_ok(),
    "the timeout only matters when SYNs are held"
  );
}

#[test]
fn accept_writes_the_exact_rewritten_syn_then_the_flow_round_trips() {
  let t0 = Instant::now();
  for (c, d) in [V4, V6] {
    let (client, dest) = (sa(c), sa(d));
    // What a stack that does not hold SYNs writes back for the same SYN.
    let plain = Stack::new(config()).unwrap();
    let (v, want) = verdict(&plain, tcp(client, dest, SYN, 1000, 0, b""), t0);
    assert_eq!(v, Verdict::WriteBack);

    let st = held_stack();
    let flow = hold(&st, client, dest, 1000, t0);
    let s = st.stats();
    assert_eq!(
      (s.tcp_flows, s.tcp_pending, s.tcp_held, s.nat_ports_in_use),
      (1, 1, 1, 1),
      "{c}"
    );
    assert_eq!((s.write_back, s.drop, s.tcp_created), (0, 0, 1));
    let syn = decide(&st, flow, Decision::Accept, t0 + Duration::from_secs(1));
    assert_eq!(syn, want, "{c}: Accept gives the rewritten SYN, byte for byte");
    let (nat, to) = endpoints(&syn);
    assert_eq!(to, listener(client));
    let s = st.stats();
    assert_eq!((s.tcp_flows, s.tcp_pending, s.tcp_accepted), (1, 0, 1), "{c}");

    // From here an ordinary flow: retransmitted SYN, SYN-ACK, lookup, data both ways, release.
    let (v, again) = verdict(&st, tcp(client, dest, SYN, 1000, 0, b""), t0);
    assert_eq!((v, endpoints(&again).0), (Verdict::WriteBack, nat));
    let (v, back) = verdict(&st, tcp(to, nat, SYN | ACK, 9, 1001, b""), t0);
    assert_eq!((v, endpoints(&back)), (Verdict::WriteBack, (dest, client)));
    assert_checksums(&back);
    let (v, out) = verdict(&st, tcp(client, dest, ACK | PSH, 1001, 10, b"hello"), t0);
    assert_eq!((v, endpoints(&out)), (Verdict::WriteBack, (nat, to)));
    assert_checksums(&out);
    assert_eq!(
      st.lookup_tcp(nat),
      Some(TcpFlowInfo {
        client,
        destination: dest
      })
    );
    let (v, back) = verdict(&st, tcp(to, nat, ACK | PSH, 10, 1006, b"world"), t0);
    assert_eq!((v, endpoints(&back)), (Verdict::WriteBack, (dest, client)));
    st.release_tcp(nat, t0);
    assert_eq!((st.stats().tcp_flows, st.stats().tcp_quarantined), (0, 1));
  }
}

#[test]
fn an_accepted_flows_handshake_timer_starts_at_the_decision() {
  let t0 = Instant::now();
  let mut cfg = held_config();
  cfg.tcp_syn_idle = Duration::from_secs(5);
  cfg.hold_timeout = Duration::from_secs(8);
  let st = Stack::new(cfg).unwrap();
  let flow = hold(&st, sa(V4.0), sa(V4.1), 1, t0);
  st.tick(t0 + Duration::from_secs(6)); // past tcp_syn_idle: a pending flow does not expire by it
  assert_eq!(st.stats().tcp_pending, 1);
  decide(&st, flow, Decision::Accept, t0 + Duration::from_secs(7));
  st.tick(t0 + Duration::from_secs(11));
  assert_eq!(st.stats().tcp_flows, 1, "5 s from the decision, not from the SYN");
  st.tick(t0 + Duration::from_secs(12));
  let s = st.stats();
  assert_eq!((s.tcp_flows, s.tcp_syn_expired, s.tcp_hold_expired), (0, 1, 0));
  assert!(st.take_expired_holds().is_empty());
}

#[test]
fn a_held_offloaded_syn_is_stored_with_complete_checksums() {
  let t0 = Instant::now();
  for (c, d) in [V4, V6] {
    let (client, dest) = (sa(c), sa(d));
    let st = held_stack();
    let mut syn = tcp(client, dest, SYN, 77, 0, b"");
    let full = syn.clone();
    assert!(make_partial(&mut syn));
    let v = st.inbound_offload(&mut syn, t0, &mut Vec::new(), true);
    let Verdict::Hold { flow, .. } = v else {
      panic!("{v:?}")
    };
    let out = decide(&st, flow, Decision::Accept, t0);
    assert_eq!(endpoints(&out).1, listener(client));
    let plain = Stack::new(config()).unwrap();
    assert_eq!(
      verdict(&plain, full, t0).1,
      out,
      "{c}: as if it had come with full checksums"
    );
    // The quote of an unreachable is the SYN with its checksum completed, too.
    let client2 = SocketAddr::new(client.ip(), client.port() + 1);
    let mut syn2 = tcp(client2, dest, SYN, 77, 0, b"");
    let full2 = syn2.clone();
    assert!(make_partial(&mut syn2));
    let Verdict::Hold { flow, .. } = st.inbound_offload(&mut syn2, t0, &mut Vec::new(), true) else {
      panic!()
    };
    let icmp = decide(&st, flow, Decision::Unreachable, t0);
    let l4 = Packet::parse(&icmp).unwrap().l4_offset;
    assert_eq!(&icmp[l4 + 8..], &full2[..], "{c}");
  }
}

#[test]
fn reset_answers_the_syn_with_a_correct_rst_and_frees_the_port_at_once() {
  let t0 = Instant::now();
  for (c, d) in [V4, V6] {
    let (client, dest) = (sa(c), sa(d));
    let st = held_stack();
    let flow = hold(&st, client, dest, 0xffff_fff0, t0);
    let rst = decide(&st, flow, Decision::Reset, t0);
    let p = Packet::parse(&rst).unwrap();
    let Transport::Tcp { seq, ack, flags, .. } = p.transport else {
      panic!("not TCP")
    };
    assert_eq!(endpoints(&rst), (dest, client), "{c}: from D:d to S:s");
    assert_eq!((seq, ack, flags), (0, 0xffff_fff1, RST | ACK), "{c}");
    assert!(p.payload.is_empty());
    assert_eq!(rst.len(), p.l4_offset + 20);
    let s = st.stats();
    assert_eq!(
      (s.tcp_flows, s.tcp_pending, s.tcp_quarantined, s.nat_ports_in_use),
      (0, 0, 0, 0),
      "{c}: no quarantine"
    );
    assert_eq!((s.tcp_refused_reset, s.tcp_resets_sent), (1, 1));
    // The same tuple connects again at once: a new flow.
    let again = hold(&st, client, dest, 5, t0);
    assert_ne!(again, flow);
  }
}

#[test]
fn a_refused_port_is_reused_immediately_when_ports_run_out() {
  let t0 = Instant::now();
  let mut cfg = held_config();
  cfg.max_tcp_flows = 1_000_000;
  cfg.v6 = None;
  let st = Stack::new(cfg).unwrap();
  let dest = sa("1.1.1.1:443");
  let client_of = |i: usize| {
    SocketAddr::new(
      IpAddr::from([10, 7, 0, 100 + (i / 60_000) as u8]),
      1 + (i % 60_000) as u16,
    )
  };
  let total = crate::nat::PORTS_PER_ADDRESS;
  let flows: Vec<u64> = (0..total).map(|i| hold(&st, client_of(i), dest, 1, t0)).collect();
  let s = st.stats();
  assert_eq!((s.tcp_pending, s.nat_ports_in_use), (total, total));
  // Every port is held: the next SYN is refused, as without holding.
  let (v, _) = verdict(&st, tcp(sa("10.7.0.99:1"), dest, SYN, 1, 0, b""), t0);
  assert_eq!((v, st.stats().refused_ports), (Verdict::Reply, 1));
  // Accept the first and refuse the second: the second's port is the only free one, and the next flow gets it.
  let first = endpoints(&decide(&st, flows[0], Decision::Accept, t0)).0;
  let mut out = Vec::new();
  assert!(st.decide(flows[1], Decision::Unreachable, t0, &mut out));
  assert_eq!(st.stats().nat_ports_in_use, total - 1);
  let next = hold(&st, sa("10.7.0.99:1"), dest, 1, t0);
  let nat = endpoints(&decide(&st, next, Decision::Accept, t0)).0;
  assert_eq!(nat.ip(), ip("10.7.0.2"));
  assert_ne!(nat, first);
  assert_eq!(
    nat.port(),
    crate::nat::PORT_MIN + 1,
    "the refused flow's port, with no quarantine"
  );
}

/// Checks an ICMP/ICMPv6 destination unreachable for the SYN `syn` from `client` to `dest`.
fn check_unreachable(icmp: &[u8], client: SocketAddr, dest: SocketAddr, syn: &[u8]) {
  let p = Packet::parse(icmp).unwrap();
  assert_eq!((p.src, p.dst), (dest.ip(), client.ip()), "from D to S");
  let want = if client.is_ipv4() { (3, 1) } else { (1, 3) };
  assert!(
    matches!(p.transport, Transport::Icmp { icmp_type, code } if (icmp_type, code) == want),
    "{:?}",
    p.transport
  );
  let l4 = p.l4_offset;
  assert_eq!(&icmp[l4 + 4..l4 + 8], &[0; 4], "unused");
  let quote = &icmp[l4 + 8..];
  let limit = if client.is_ipv4() { 576 } else { 1280 };
  assert_eq!(quote, &syn[..syn.len().min(limit - l4 - 8)]);
  assert!(icmp.len() <= limit);
  // The quote names the original endpoints, as the client's stack matches it to its socket.
  let q = Packet::parse(syn).unwrap();
  assert_eq!(
    (q.src, q.dst, q.src_port(), q.dst_port()),
    (client.ip(), dest.ip(), Some(client.port()), Some(dest.port()))
  );
  if client.is_ipv4() {
    assert_eq!(&quote[..20], &syn[..20], "the whole original IPv4 header");
    assert_eq!(icmp[9], 1);
  } else {
    assert_eq!(icmp[6], 58);
  }
}

#[test]
fn unreachable_sends_an_icmp_error_quoting_the_original_syn() {
  let t0 = Instant::now();
  for (c, d) in [V4, V6] {
    let (client, dest) = (sa(c), sa(d));
    let st = held_stack();
    let flow = hold(&st, client, dest, 4242, t0);
    let icmp = decide(&st, flow, Decision::Unreachable, t0);
    check_unreachable(&icmp, client, dest, &tcp(client, dest, SYN, 4242, 0, b""));
    let s = st.stats();
    assert_eq!(
      (s.tcp_flows, s.nat_ports_in_use, s.tcp_refused_unreachable),
      (0, 0, 1)
    );
    assert_eq!(s.tcp_resets_sent, 0);
    // A SYN with data (TCP Fast Open) is quoted as far as the minimum MTU allows.
    let big = tcp(client, dest, SYN, 9, 0, &[0x5a; 2000]);
    let flow = hold_pkt(&st, big.clone(), t0);
    let icmp = decide(&st, flow, Decision::Unreachable, t0);
    assert_eq!(icmp.len(), if client.is_ipv4() { 576 } else { 1280 });
    check_unreachable(&icmp, client, dest, &big);
    // ... and its RST acknowledges the data too.
    let flow = hold_pkt(&st, tcp(client, dest, SYN, 9, 0, &[1; 10]), t0);
    let rst = decide(&st, flow, Decision::Reset, t0);
    let Transport::Tcp { ack, .. } = Packet::parse(&rst).unwrap().transport else {
      panic!()
    };
    assert_eq!(ack, 20);
  }
}

fn hold_pkt(st: &Stack, mut pkt: Vec<u8>, now: Instant) -> u64 {
  match st.inbound(&mut pkt, now, &mut Vec::new()) {
    Verdict::Hold { flow, .. } => flow,
    v => panic!("{v:?}"),
  }
}

#[test]
fn segments_of_a_pending_flow_are_dropped_and_a_new_isn_replaces_the_syn() {
  let t0 = Instant::now();
  for (c, d) in [V4, V6] {
    let (client, dest) = (sa(c), sa(d));
    let st = held_stack();
    let flow = hold(&st, client, dest, 100, t0);
    let nat = SocketAddr::new(
      if client.is_ipv4() {
        ip("10.7.0.2")
      } else {
        ip("fd07::2")
      },
      1024,
    );
    for pkt in [
      tcp(client, dest, SYN, 100, 0, b""),            // retransmission
      tcp(client, dest, ACK | PSH, 101, 1, b"early"), // data before the handshake
      tcp(client, dest, FIN | ACK, 101, 1, b""),
      tcp(client, dest, RST, 101, 0, b""),
      tcp(listener(client), nat, SYN | ACK, 1, 101, b""), // the kernel never saw it: stray
    ] {
      let (v, after) = verdict(&st, pkt.clone(), t0);
      assert_eq!((v, &after), (Verdict::Drop, &pkt), "{c}");
    }
    assert_eq!(st.lookup_tcp(nat), None, "no accepted socket for a pending flow");
    st.release_tcp(nat, t0); // ignored
                             // A new ISN: dropped too, and its SYN is the one the decision sends.
    let (v, _) = verdict(&st, tcp(client, dest, SYN, 555, 0, b""), t0);
    assert_eq!(v, Verdict::Drop);
    let s = st.stats();
    assert_eq!(
      (s.tcp_flows, s.tcp_pending, s.tcp_held, s.drop),
      (1, 1, 1, 6),
      "{c}"
    );
    let syn = decide(&st, flow, Decision::Accept, t0);
    assert_eq!(endpoints(&syn), (nat, listener(client)));
    let Transport::Tcp { seq, flags, .. } = Packet::parse(&syn).unwrap().transport else {
      panic!()
    };
    assert_eq!((seq, flags), (555, SYN));
    // The flow's ISN is the new one: a SYN with it is a retransmission now.
    let (v, again) = verdict(&st, tcp(client, dest, SYN, 555, 0, b""), t0);
    assert_eq!((v, endpoints(&again).0), (Verdict::WriteBack, nat));
  }
}

#[test]
fn undecided_holds_expire_free_their_port_and_are_reported_once() {
  let t0 = Instant::now();
  let st = held_stack();
  let a = hold(&st, sa(V4.0), sa(V4.1), 1, t0);
  let b = hold(&st, sa(V6.0), sa(V6.1), 1, t0 + Duration::from_secs(2));
  let c = hold(&st, sa("10.7.0.51:1"), sa(V4.1), 1, t0 + Duration::from_secs(3));
  st.tick(t0 + Duration::from_millis(9_999));
  assert!(st.take_expired_holds().is_empty());
  assert_eq!(st.stats().tcp_pending, 3);
  assert!(
    st.tick(t0 + Duration::from_secs(10)).is_empty(),
    "tick still returns UDP sessions only"
  );
  assert_eq!(st.take_expired_holds(), vec![a]);
  assert!(st.take_expired_holds().is_empty(), "reported once");
  let mut out = vec![1];
  assert!(!st.decide(a, Decision::Accept, t0 + Duration::from_secs(10), &mut out));
  assert!(out.is_empty());
  let s = st.stats();
  assert_eq!(
    (s.tcp_flows, s.tcp_pending, s.nat_ports_in_use, s.tcp_hold_expired),
    (2, 2, 2, 1)
  );
  // Expired but not swept yet: decide refuses it and removes it (the caller knows; not reported again).
  assert!(!st.decide(b, Decision::Reset, t0 + Duration::from_secs(12), &mut out));
  assert!(out.is_empty());
  assert_eq!(st.stats().tcp_pending, 1);
  st.tick(t0 + Duration::from_secs(13));
  assert_eq!(st.take_expired_holds(), vec![c]);
  let s = st.stats();
  assert_eq!(
    (
      s.tcp_flows,
      s.nat_ports_in_use,
      s.tcp_quarantined,
      s.tcp_hold_expired
    ),
    (0, 0, 0, 3)
  );
  assert_eq!(s.tcp_held, 3);
  // The client's retransmitted SYN after expiry opens a new pending flow.
  let a2 = hold(&st, sa(V4.0), sa(V4.1), 1, t0 + Duration::from_secs(14));
  assert_ne!(a2, a);
  // Even before a tick: the SYN ends the hold that is over (reported) and is held anew.
  let a3 = hold(&st, sa(V4.0), sa(V4.1), 1, t0 + Duration::from_secs(24));
  assert_ne!(a3, a2);
  assert_eq!(st.take_expired_holds(), vec![a2]);
  assert_eq!((st.stats().tcp_pending, st.stats().tcp_hold_expired), (1, 4));
}

#[test]
fn decide_on_unknown_or_decided_flows_returns_false() {
  let t0 = Instant::now();
  let st = held_stack();
  let mut out = vec![9; 4];
  assert!(!st.decide(12345, Decision::Accept, t0, &mut out));
  assert!(out.is_empty());
  for d in [Decision::Accept, Decision::Reset, Decision::Unreachable] {
    let flow = hold(&st, sa(V4.0), sa(V4.1), d as u32 + 10, t0);
    decide(&st, flow, d, t0);
    for again in [Decision::Accept, Decision::Reset, Decision::Unreachable] {
      out.push(1);
      assert!(!st.decide(flow, again, t0, &mut out), "{d:?} then {again:?}");
      assert!(out.is_empty());
    }
  }
  let s = st.stats();
  assert_eq!(
    (
      s.tcp_accepted,
      s.tcp_refused_reset,
      s.tcp_refused_unreachable,
      s.tcp_held
    ),
    (1, 1, 1, 3)
  );
  // Without hold_syn nothing is ever pending.
  let plain = Stack::new(config()).unwrap();
  let (v, _) = verdict(&plain, tcp(sa(V4.0), sa(V4.1), SYN, 1, 0, b""), t0);
  assert_eq!(v, Verdict::WriteBack);
  for id in 0..4 {
    assert!(!plain.decide(id, Decision::Accept, t0, &mut out));
  }
  assert_eq!(plain.stats().tcp_held, 0);
}

#[test]
fn pending_flows_count_against_the_flow_cap() {
  let t0 = Instant::now();
  let mut cfg = held_config();
  cfg.max_tcp_flows = 2;
  let st = Stack::new(cfg).unwrap();
  let dest = sa(V4.1);
  let a = hold(&st, sa("10.7.0.50:1"), dest, 1, t0);
  hold(&st, sa("10.7.0.50:2"), dest, 1, t0);
  let (v, _) = verdict(&st, tcp(sa("10.7.0.50:3"), dest, SYN, 1, 0, b""), t0);
  assert_eq!(v, Verdict::Reply, "full: refused with a RST as before");
  assert_eq!(st.stats().refused_full, 1);
  decide(&st, a, Decision::Reset, t0);
  hold(&st, sa("10.7.0.50:3"), dest, 1, t0);
  assert_eq!(st.stats().tcp_flows, 2);
}
