//! TCP NAT: round trips, flow identity, resets, quarantine, expiry, caps, allocation at scale.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tunkit_core::packet::{Packet, TcpHeader, Transport};

use crate::testutil::*;
use crate::{FamilyConfig, Stack, StackConfig, TcpFlowInfo, Verdict};

const SYN: u8 = TcpHeader::SYN;
const ACK: u8 = TcpHeader::ACK;
const RST: u8 = TcpHeader::RST;
const FIN: u8 = TcpHeader::FIN;
const PSH: u8 = TcpHeader::PSH;

/// Sends `pkt` through the stack, expects WriteBack, checks the checksums and the length; returns the packet.
fn write_back(st: &Stack, mut pkt: Vec<u8>, now: Instant) -> Vec<u8> {
  let len = pkt.len();
  let before = pkt.clone();
  let mut out = Vec::new();
  assert_eq!(st.inbound(&mut pkt, now, &mut out), Verdict::WriteBack);
  assert_eq!(pkt.len(), len);
  assert_checksums(&pkt);
  let (a, b) = (Packet::parse(&before).unwrap(), Packet::parse(&pkt).unwrap());
  assert_eq!(
    &before[a.payload.clone()],
    &pkt[b.payload.clone()],
    "payload untouched"
  );
  match (a.transport, b.transport) {
    (
      Transport::Tcp { seq, ack, flags, .. },
      Transport::Tcp {
        seq: s2,
        ack: a2,
        flags: f2,
        ..
      },
    ) => assert_eq!((seq, ack, flags), (s2, a2, f2)),
    other => panic!("not TCP: {other:?}"),
  }
  pkt
}

/// A client SYN through the stack: returns the NAT endpoint `B:n`.
fn open(st: &Stack, client: SocketAddr, dest: SocketAddr, isn: u32, now: Instant) -> SocketAddr {
  let out = write_back(st, tcp(client, dest, SYN, isn, 0, b""), now);
  let (nat, listener) = endpoints(&out);
  assert_eq!(listener, SocketAddr::new(gateway_of(client), P));
  nat
}

/// The kernel's segment `A:P -> nat`, through the stack.
fn from_kernel(st: &Stack, nat: SocketAddr, flags: u8, payload: &[u8], now: Instant) -> Vec<u8> {
  let listener = SocketAddr::new(gateway_of(nat), P);
  write_back(st, tcp(listener, nat, flags, 900, 1001, payload), now)
}

#[test]
fn round_trip_restores_the_exact_endpoints() {
  let t0 = Instant::now();
  let cases = [
    ("LAN client v4", "10.7.0.50:40000", "93.184.216.34:443"),
    ("local app from A", "10.7.0.1:51000", "1.1.1.1:80"),
    ("v6", "[fd07::50]:40000", "[2606:4700::1111]:443"),
    ("v6 local app from A", "[fd07::1]:50001", "[2001:db8::5]:22"),
    ("to a NAT address", "10.7.0.50:1", "10.7.0.2:8080"),
  ];
  for (name, c, d) in cases {
    let st = Stack::new(config()).unwrap();
    let (client, dest) = (sa(c), sa(d));
    let nat = open(&st, client, dest, 1000, t0);
    assert_eq!(
      nat.ip(),
      if client.is_ipv4() {
        ip("10.7.0.2")
      } else {
        ip("fd07::2")
      },
      "{name}"
    );
    assert_eq!(
      st.lookup_tcp(nat),
      Some(TcpFlowInfo {
        client,
        destination: dest
      }),
      "{name}"
    );
    let back = from_kernel(&st, nat, SYN | ACK, b"", t0);
    assert_eq!(
      endpoints(&back),
      (dest, client),
      "{name}: SYN-ACK back to the client"
    );
    // Data both ways, odd and large sizes: same NAT port, exact endpoints.
    for len in [0usize, 1, 1023, 1460, 60_000] {
      let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
      let out = write_back(&st, tcp(client, dest, ACK | PSH, 1001, 901, &payload), t0);
      assert_eq!(
        endpoints(&out),
        (nat, SocketAddr::new(gateway_of(client), P)),
        "{name} len {len}"
      );
      let back = from_kernel(&st, nat, ACK | PSH, &payload, t0);
      assert_eq!(endpoints(&back), (dest, client), "{name} len {len}");
    }
    let s = st.stats();
    assert_eq!((s.tcp_flows, s.tcp_created, s.write_back), (1, 1, 12), "{name}");
  }
}

#[test]
fn ipv6_extension_headers_are_rewritten_but_routing_headers_pass() {
  let t0 = Instant::now();
  let st = Stack::new(config()).unwrap();
  let (client, dest) = (sa("[fd07::9]:1234"), sa("[2001:db8::1]:80"));
  let with_ext = |kind: u8, segments_left: u8| {
    let mut pkt = tcp(client, dest, SYN, 5, 0, b"");
    let next = pkt[6];
    pkt[6] = kind;
    pkt.splice(40..40, [next, 0, 1, 4, 0, 0, 0, 0]);
    if kind == 43 {
      pkt[43] = segments_left;
    }
    let len = (pkt.len() - 40) as u16;
    pkt[4..6].copy_from_slice(&len.to_be_bytes());
    pkt
  };
  let out = write_back(&st, with_ext(0, 0), t0); // hop-by-hop
  assert_eq!(endpoints(&out).1, SocketAddr::new(ip("fd07::1"), P));
  let out = write_back(&st, with_ext(43, 0), t0); // routing header, no segments left: harmless
  assert_eq!(endpoints(&out).1, SocketAddr::new(ip("fd07::1"), P));
  let mut routed = with_ext(43, 1);
  let orig = routed.clone();
  assert_eq!(st.inbound(&mut routed, t0, &mut Vec::new()), Verdict::Pass);
  assert_eq!(routed, orig);
}

#[test]
fn flows_are_keyed_by_the_whole_5_tuple() {
  let t0 = Instant::now();
  let st = Stack::new(config()).unwrap();
  let client = sa("10.7.0.50:40000");
  let n1 = open(&st, client, sa("1.1.1.1:443"), 1, t0);
  let n2 = open(&st, client, sa("8.8.8.8:443"), 2, t0);
  let n3 = open(&st, client, sa("1.1.1.1:80"), 3, t0);
  let n4 = open(&st, sa("10.7.0.51:40000"), sa("1.1.1.1:443"), 4, t0);
  let mut ports = vec![n1.port(), n2.port(), n3.port(), n4.port()];
  ports.dedup();
  assert_eq!(ports.len(), 4, "one NAT port per 5-tuple (sing-box #4224)");
  assert_eq!(st.lookup_tcp(n2).unwrap().destination, sa("8.8.8.8:443"));
  // A retransmitted SYN (same ISN) keeps its flow.
  assert_eq!(open(&st, client, sa("1.1.1.1:443"), 1, t0), n1);
  assert_eq!(st.stats().tcp_flows, 4);
}

#[test]
fn a_new_syn_on_an_ended_or_reused_tuple_is_a_new_flow() {
  let t0 = Instant::now();
  let st = Stack::new(config()).unwrap();
  let (client, dest) = (sa("10.7.0.50:40000"), sa("1.1.1.1:443"));
  let n1 = open(&st, client, dest, 100, t0);
  st.release_tcp(n1, t0);
  let n2 = open(&st, client, dest, 100, t0); // same ISN, but the old flow ended
  assert_ne!(n1, n2);
  let n3 = open(&st, client, dest, 7777, t0); // another ISN: a new connection on the same tuple
  assert_ne!(n2, n3);
  // The detached flows still translate the kernel's side.
  let back = from_kernel(&st, n2, ACK, b"", t0);
  assert_eq!(endpoints(&back), (dest, client));
  let s = st.stats();
  assert_eq!((s.tcp_flows, s.tcp_quarantined), (2, 1));
}

/// The RST the stack answers `seg` with: (src, dst, seq, ack, flags).
fn rst_of(pkt: Vec<u8>, st: &Stack) -> (SocketAddr, SocketAddr, u32, u32, u8) {
  let mut pkt = pkt;
  let mut out = Vec::new();
  assert_eq!(st.inbound(&mut pkt, Instant::now(), &mut out), Verdict::Reply);
  assert_checksums(&out);
  let p = Packet::parse(&out).unwrap();
  let Transport::Tcp { seq, ack, flags, .. } = p.transport else {
    panic!("not TCP")
  };
  assert!(p.payload.is_empty());
  let (s, d) = endpoints(&out);
  (s, d, seq, ack, flags)
}

#[test]
fn segments_of_unknown_flows_get_an_rfc793_reset() {
  let st = Stack::new(config()).unwrap();
  for (c, d) in [
    ("10.7.0.50:40000", "1.1.1.1:443"),
    ("[fd07::50]:40000", "[2001:db8::1]:443"),
  ] {
    let (client, dest) = (sa(c), sa(d));
    // With ACK: seq = SEG.ACK, no ACK flag.
    assert_eq!(
      rst_of(tcp(client, dest, ACK | PSH, 10, 555, b"data"), &st),
      (dest, client, 555, 0, RST)
    );
    // Without ACK: seq 0, ack = SEG.SEQ + SEG.LEN (payload, FIN counts one).
    assert_eq!(
      rst_of(tcp(client, dest, FIN, 10, 0, b"abc"), &st),
      (dest, client, 0, 14, RST | ACK)
    );
    assert_eq!(
      rst_of(tcp(client, dest, 0, u32::MAX, 0, b"ab"), &st),
      (dest, client, 0, 1, RST | ACK)
    );
    // A RST is never answered.
    let mut r = tcp(client, dest, RST, 10, 0, b"");
    assert_eq!(st.inbound(&mut r, Instant::now(), &mut Vec::new()), Verdict::Drop);
  }
  assert_eq!(st.stats().tcp_resets_sent, 6);
  assert_eq!(st.stats().tcp_flows, 0);
}

#[test]
fn kernel_segments_for_unknown_nat_ports_are_dropped() {
  let st = Stack::new(config()).unwrap();
  for (a, b) in [
    ("10.7.0.1:4000", "10.7.0.2:5555"),
    ("[fd07::1]:4000", "[fd07::2]:5555"),
  ] {
    let mut pkt = tcp(sa(a), sa(b), ACK, 1, 1, b"x");
    let orig = pkt.clone();
    assert_eq!(
      st.inbound(&mut pkt, Instant::now(), &mut Vec::new()),
      Verdict::Drop
    );
    assert_eq!(pkt, orig);
  }
}

#[test]
fn rst_in_either_direction_ends_the_flow_but_stragglers_still_translate() {
  let t0 = Instant::now();
  for from_client in [true, false] {
    let st = Stack::new(config()).unwrap();
    let (client, dest) = (sa("10.7.0.50:40000"), sa("1.1.1.1:443"));
    let nat = open(&st, client, dest, 1, t0);
    from_kernel(&st, nat, SYN | ACK, b"", t0);
    if from_client {
      write_back(&st, tcp(client, dest, RST | ACK, 2, 901, b""), t0);
    } else {
      from_kernel(&st, nat, RST, b"", t0);
    }
    let s = st.stats();
    assert_eq!((s.tcp_flows, s.tcp_quarantined, s.tcp_reset), (0, 1, 1));
    let back = from_kernel(&st, nat, RST | ACK, b"", t0 + Duration::from_secs(1));
    assert_eq!(endpoints(&back), (dest, client));
    st.release_tcp(nat, t0 + Duration::from_secs(2)); // JS closes the dead socket: harmless
    assert_eq!(st.stats().tcp_quarantined, 1);
    st.tick(t0 + Duration::from_secs(61));
    assert_eq!(
      st.stats().tcp_quarantined,
      1,
      "quarantine restarted by the last packet and the release"
    );
    st.tick(t0 + Duration::from_secs(62));
    assert_eq!(st.stats().tcp_quarantined, 0);
    assert_eq!(st.lookup_tcp(nat), None);
  }
}

#[test]
fn quarantine_keeps_the_port_and_translates_the_close() {
  let t0 = Instant::now();
  let q = Duration::from_secs(60);
  let st = Stack::new(config()).unwrap();
  let (client, dest) = (sa("10.7.0.50:40000"), sa("1.1.1.1:443"));
  let nat = open(&st, client, dest, 1, t0);
  from_kernel(&st, nat, SYN | ACK, b"", t0);
  write_back(&st, tcp(client, dest, ACK, 2, 901, b""), t0);
  write_back(&st, tcp(client, dest, FIN | ACK, 2, 901, b""), t0);
  st.release_tcp(nat, t0); // JS closed: the kernel's FIN follows and must still reach the client
  assert_eq!(st.stats().tcp_flows, 0);
  let t1 = t0 + Duration::from_secs(10);
  assert_eq!(
    endpoints(&from_kernel(&st, nat, FIN | ACK, b"", t1)),
    (dest, client)
  );
  write_back(&st, tcp(client, dest, ACK, 3, 902, b""), t1);
  st.tick(t0 + q + Duration::from_secs(5));
  assert_eq!(
    st.lookup_tcp(nat).map(|f| f.client),
    Some(client),
    "t1 + quarantine not reached yet"
  );
  st.tick(t1 + q);
  assert_eq!(st.lookup_tcp(nat), None);
  assert_eq!(st.stats().nat_ports_in_use, 0);
}

#[test]
fn handshakes_that_never_complete_expire_established_flows_never_do() {
  let t0 = Instant::now();
  let mut cfg = config();
  cfg.tcp_syn_idle = Duration::from_secs(5);
  let st = Stack::new(cfg).unwrap();
  let dest = sa("1.1.1.1:443");
  let stuck = open(&st, sa("10.7.0.50:1"), dest, 1, t0);
  let established = open(&st, sa("10.7.0.50:2"), dest, 1, t0);
  from_kernel(&st, established, SYN | ACK, b"", t0);
  write_back(&st, tcp(sa("10.7.0.50:2"), dest, ACK, 2, 901, b""), t0);
  let accepted = open(&st, sa("10.7.0.50:3"), dest, 1, t0);
  assert!(st.lookup_tcp(accepted).is_some()); // JS accepted it
  let retrying = open(&st, sa("10.7.0.50:4"), dest, 1, t0);
  open(&st, sa("10.7.0.50:4"), dest, 1, t0 + Duration::from_secs(4)); // SYN retransmitted
  st.tick(t0 + Duration::from_secs(6));
  let s = st.stats();
  assert_eq!((s.tcp_flows, s.tcp_quarantined, s.tcp_syn_expired), (3, 1, 1));
  // A day later the established and accepted flows are still there.
  st.tick(t0 + Duration::from_secs(86_400));
  let s = st.stats();
  assert_eq!((s.tcp_flows, s.tcp_syn_expired), (2, 2));
  assert_eq!(st.lookup_tcp(stuck), None);
  assert!(st.lookup_tcp(established).is_some());
  assert!(
    st.lookup_tcp(retrying).is_some(),
    "expired at last, still mapped during its quarantine"
  );
}

#[test]
fn a_late_packet_revives_a_flow_only_the_handshake_timer_ended() {
  let t0 = Instant::now();
  let mut cfg = config();
  cfg.tcp_syn_idle = Duration::from_secs(5);
  let st = Stack::new(cfg).unwrap();
  let (client, dest) = (sa("10.7.0.50:1"), sa("1.1.1.1:443"));
  let nat = open(&st, client, dest, 1, t0);
  st.tick(t0 + Duration::from_secs(6));
  assert_eq!(st.stats().tcp_flows, 0);
  from_kernel(&st, nat, SYN | ACK, b"", t0 + Duration::from_secs(7));
  assert_eq!((st.stats().tcp_flows, st.stats().tcp_quarantined), (1, 0));
}

#[test]
fn the_flow_cap_refuses_with_a_reset_and_one_notice_per_burst() {
  let t0 = Instant::now();
  let mut cfg = config();
  cfg.max_tcp_flows = 3;
  let st = Stack::new(cfg).unwrap();
  let dest = sa("1.1.1.1:443");
  let nats: Vec<SocketAddr> = (1..=3)
    .map(|i| open(&st, sa(&format!("10.7.0.50:{i}")), dest, 9, t0))
    .collect();
  for i in 4..=6 {
    let client = sa(&format!("10.7.0.50:{i}"));
    assert_eq!(
      rst_of(tcp(client, dest, SYN, 41, 0, b""), &st),
      (dest, client, 0, 42, RST | ACK)
    );
  }
  assert_eq!(
    st.take_notice().as_deref(),
    Some("TCP flow table full (3 flows): new connections refused")
  );
  assert_eq!(st.take_notice(), None);
  let s = st.stats();
  assert_eq!((s.tcp_flows, s.refused_full, s.refused_ports), (3, 3, 0));
  // The existing flows are untouched (no silent eviction).
  for n in &nats {
    assert!(st.lookup_tcp(*n).is_some());
  }
  st.release_tcp(nats[0], t0);
  open(&st, sa("10.7.0.50:7"), dest, 1, t0); // room again: the burst is over
  rst_of(tcp(sa("10.7.0.50:8"), dest, SYN, 1, 0, b""), &st);
  assert!(st.take_notice().is_some(), "a new burst, a new notice");
}

#[test]
fn nat_port_exhaustion_refuses_and_more_addresses_add_room() {
  let t0 = Instant::now();
  let mut cfg = config();
  cfg.max_tcp_flows = 1_000_000;
  cfg.v4.as_mut().unwrap().nat = vec![ip("10.7.0.2"), ip("10.7.0.3")];
  let st = Stack::new(cfg).unwrap();
  let dest = sa("1.1.1.1:443");
  let mut seen = std::collections::HashSet::new();
  // More than 65 000 live flows fit with two NAT addresses.
  let total = 2 * crate::nat::PORTS_PER_ADDRESS;
  for i in 0..total {
    let client = SocketAddr::new(
      IpAddr::from([10, 7, 0, 100 + (i / 60_000) as u8]),
      1 + (i % 60_000) as u16,
    );
    let mut pkt = tcp(client, dest, SYN, 1, 0, b"");
    assert_eq!(
      st.inbound(&mut pkt, t0, &mut Vec::new()),
      Verdict::WriteBack,
      "flow {i}"
    );
    assert!(seen.insert(endpoints(&pkt).0), "NAT endpoint reused at flow {i}");
  }
  assert_eq!(st.stats().tcp_flows, total);
  assert_eq!(st.stats().nat_ports_in_use, total);
  assert_eq!(
    rst_of(tcp(sa("10.7.0.99:1"), dest, SYN, 1, 0, b""), &st).4,
    RST | ACK
  );
  let notice = st.take_notice().unwrap();
  assert!(notice.starts_with("TCP NAT ports exhausted"), "{notice}");
  assert_eq!(st.stats().refused_ports, 1);
}

#[test]
fn hundred_thousand_short_flows_never_reuse_a_quarantined_port() {
  let t0 = Instant::now();
  let mut cfg = config();
  cfg.quarantine = Duration::from_secs(60);
  let st = Stack::new(cfg).unwrap();
  // One NAT address (64 512 ports) and a flow a millisecond: about 60 000 ports in quarantine at any time.
  let step = Duration::from_millis(1);
  let dest = sa("1.1.1.1:443");
  let mut released_at: HashMap<SocketAddr, Instant> = HashMap::new();
  let mut out = Vec::new();
  let mut reused = 0;
  for i in 0..100_000u32 {
    let now = t0 + step * i;
    if i % 500 == 0 {
      st.tick(now);
    }
    let client = SocketAddr::new(
      IpAddr::from([10, 7, 0, 10 + (i % 200) as u8]),
      1024 + (i / 200) as u16,
    );
    let mut syn = tcp(client, dest, SYN, i, 0, b"");
    let v = st.inbound(&mut syn, now, &mut out);
    if v != Verdict::WriteBack {
      panic!("flow {i} refused: {v:?} {:?} {:?}", st.stats(), st.take_notice());
    }
    let nat = endpoints(&syn).0;
    if let Some(&t) = released_at.get(&nat) {
      assert!(
        now >= t + Duration::from_secs(60),
        "port {nat} reused {:?} after release",
        now - t
      );
      reused += 1;
    }
    let mut synack = tcp(SocketAddr::new(ip("10.7.0.1"), P), nat, SYN | ACK, 5, i + 1, b"");
    assert_eq!(st.inbound(&mut synack, now, &mut out), Verdict::WriteBack);
    assert_eq!(endpoints(&synack), (dest, client));
    assert_eq!(st.lookup_tcp(nat).unwrap().client, client);
    st.release_tcp(nat, now);
    released_at.insert(nat, now);
  }
  let s = st.stats();
  assert_eq!(
    (s.tcp_created, s.tcp_released, s.refused_full),
    (100_000, 100_000, 0)
  );
  assert!(s.tcp_quarantined >= 59_000, "{s:?}");
  assert!(
    reused > 30_000,
    "ports were reused, each after its quarantine ({reused})"
  );
}

#[test]
fn lookup_and_release_accept_ipv4_mapped_peers() {
  let t0 = Instant::now();
  let st = Stack::new(config()).unwrap();
  let nat = open(&st, sa("10.7.0.50:1"), sa("1.1.1.1:443"), 1, t0);
  let mapped = SocketAddr::new(ip(&format!("::ffff:{}", nat.ip())), nat.port());
  assert_eq!(st.lookup_tcp(mapped).unwrap().client, sa("10.7.0.50:1"));
  st.release_tcp(mapped, t0);
  assert_eq!(st.stats().tcp_released, 1);
  st.release_tcp(sa("10.7.0.2:9"), t0); // unknown: ignored
  assert_eq!(st.lookup_tcp(sa("10.9.9.9:1")), None);
}

#[test]
fn several_threads_share_one_stack() {
  fn assert_send_sync<T: Send + Sync>() {}
  assert_send_sync::<Stack>();
  let t0 = Instant::now();
  let st = std::sync::Arc::new(Stack::new(config()).unwrap());
  let handles: Vec<_> = (0..4u16)
    .map(|t| {
      let st = st.clone();
      std::thread::spawn(move || {
        let mut nats = Vec::new();
        for i in 0..2000u16 {
          let client = SocketAddr::new(IpAddr::from([10, 7, 0, 60 + t as u8]), 1 + i);
          let mut pkt = tcp(client, sa("1.1.1.1:443"), SYN, 1, 0, b"");
          assert_eq!(st.inbound(&mut pkt, t0, &mut Vec::new()), Verdict::WriteBack);
          nats.push(endpoints(&pkt).0);
        }
        nats
      })
    })
    .collect();
  let mut all: Vec<SocketAddr> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
  all.sort();
  all.dedup();
  assert_eq!(all.len(), 8000);
  assert_eq!(st.stats().tcp_flows, 8000);
}

#[test]
fn tcp_disabled_or_family_missing_passes() {
  let mut cfg = config();
  cfg.tcp = false;
  let st = Stack::new(cfg).unwrap();
  let mut pkt = tcp(sa("10.7.0.50:1"), sa("1.1.1.1:443"), SYN, 1, 0, b"");
  assert_eq!(
    st.inbound(&mut pkt, Instant::now(), &mut Vec::new()),
    Verdict::Pass
  );
  let mut cfg = config();
  cfg.v6 = None;
  let st = Stack::new(cfg).unwrap();
  let mut pkt = tcp(sa("[fd07::5]:1"), sa("[2001:db8::1]:443"), SYN, 1, 0, b"");
  assert_eq!(
    st.inbound(&mut pkt, Instant::now(), &mut Vec::new()),
    Verdict::Pass
  );
  let _ = StackConfig::default();
  let _ = FamilyConfig::new(ip("10.0.0.1"), vec![], 8);
}

#[test]
fn a_looked_up_flow_keeps_its_port_after_a_reset_until_released() {
  let t0 = Instant::now();
  let st = Stack::new(config()).unwrap();
  let (client, dest) = (sa("10.7.0.50:40000"), sa("1.1.1.1:443"));
  let nat = open(&st, client, dest, 1, t0);
  from_kernel(&st, nat, SYN | ACK, b"", t0);
  assert!(st.lookup_tcp(nat).is_some()); // the application accepted the socket
  write_back(&st, tcp(client, dest, RST, 2, 0, b""), t0);
  st.tick(t0 + Duration::from_secs(3600));
  assert_eq!(
    st.lookup_tcp(nat).map(|f| f.client),
    Some(client),
    "held until released"
  );
  assert_eq!(st.stats().nat_ports_in_use, 1);
  let t1 = t0 + Duration::from_secs(3601);
  st.release_tcp(nat, t1);
  st.tick(t1 + Duration::from_secs(59));
  assert_eq!(st.stats().nat_ports_in_use, 1);
  st.tick(t1 + Duration::from_secs(121));
  assert_eq!(st.stats().nat_ports_in_use, 0);
}

#[test]
fn partial_checksums_of_offloaded_segments_are_updated_for_the_addresses() {
  let t0 = Instant::now();
  let st = Stack::new(config()).unwrap();
  for (c, d) in [
    ("10.7.0.50:40000", "93.184.216.34:443"),
    ("[fd07::50]:40000", "[2001:db8::1]:443"),
  ] {
    let (client, dest) = (sa(c), sa(d));
    let mut syn = tcp(client, dest, SYN, 1, 0, b"");
    assert!(make_partial(&mut syn));
    let mut out = Vec::new();
    assert_eq!(
      st.inbound_offload(&mut syn, t0, &mut out, true),
      Verdict::WriteBack
    );
    assert!(partial_ok(&syn), "{c}: the field is the new pseudo-header sum");
    let (nat, _) = endpoints(&syn);
    // A 60 000-byte super-packet from the kernel, rewritten whole.
    let mut sp = tcp(
      SocketAddr::new(gateway_of(client), P),
      nat,
      ACK,
      1,
      2,
      &vec![7u8; 60_000],
    );
    assert!(make_partial(&mut sp));
    let body = sp[sp.len() - 60_000..].to_vec();
    assert_eq!(
      st.inbound_offload(&mut sp, t0, &mut out, true),
      Verdict::WriteBack
    );
    assert!(partial_ok(&sp));
    assert_eq!(endpoints(&sp), (dest, client));
    assert_eq!(&sp[sp.len() - 60_000..], &body[..]);
    if client.is_ipv4() {
      let ihl = 20;
      assert!(
        tunkit_core::packet::checksum::verify(&sp[..ihl], 0),
        "IPv4 header checksum"
      );
    }
  }
}
