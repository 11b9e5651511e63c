//! UDP sessions: endpoint-independent mapping, replies, LRU eviction, idle expiry.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tunkit_core::ErrorKind;

use crate::testutil::*;
use crate::{Stack, UdpSessionInfo, Verdict};

/// A datagram through the stack: (session, new, destination), checking the payload range.
fn send(st: &Stack, client: SocketAddr, dest: SocketAddr, payload: &[u8], now: Instant) -> (u64, bool) {
  let mut pkt = udp(client, dest, payload);
  let orig = pkt.clone();
  match st.inbound(&mut pkt, now, &mut Vec::new()) {
    Verdict::Datagram {
      session,
      new,
      payload: range,
      destination,
    } => {
      assert_eq!(pkt, orig, "datagrams are not rewritten");
      assert_eq!(&pkt[range], payload);
      assert_eq!(destination, dest);
      if let Some(info) = new {
        assert_eq!(
          info,
          UdpSessionInfo {
            client,
            first_destination: dest
          }
        );
      }
      (session, new.is_some())
    }
    v => panic!("expected a datagram, got {v:?}"),
  }
}

#[test]
fn one_session_per_client_endpoint_for_any_destination() {
  let t0 = Instant::now();
  let st = Stack::new(config()).unwrap();
  for (c, d1, d2) in [
    ("10.7.0.50:5000", "1.1.1.1:53", "8.8.8.8:53"),
    ("[fd07::50]:5000", "[2001:db8::1]:3478", "[2001:db8::2]:3479"),
    ("10.7.0.2:5000", "1.1.1.1:53", "10.7.0.3:9"), // from a NAT address: nothing special for UDP
  ] {
    let client = sa(c);
    let (s1, new1) = send(&st, client, sa(d1), b"query", t0);
    let (s2, new2) = send(&st, client, sa(d2), b"", t0);
    assert!(new1 && !new2 && s1 == s2, "{c}");
    let (s3, new3) = send(&st, SocketAddr::new(client.ip(), 5001), sa(d1), b"x", t0);
    assert!(new3 && s3 != s1);
    assert_eq!(st.udp_session(s1).unwrap().first_destination, sa(d1));
  }
  let s = st.stats();
  assert_eq!((s.udp_sessions, s.udp_created, s.datagram), (6, 6, 9));
}

#[test]
fn replies_are_built_with_correct_checksums() {
  let t0 = Instant::now();
  let st = Stack::new(config()).unwrap();
  for (c, remote) in [
    ("10.7.0.50:5000", "1.1.1.1:53"),
    ("[fd07::50]:5000", "[2001:db8::1]:53"),
  ] {
    let client = sa(c);
    let (id, _) = send(&st, client, sa(remote), b"q", t0);
    for len in [0usize, 1, 2, 511, 1472, 9000] {
      let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
      let mut out = vec![0xee; 3]; // cleared first
      st.udp_reply(id, sa(remote), &payload, &mut out).unwrap();
      assert_checksums(&out);
      assert_eq!(endpoints(&out), (sa(remote), client));
      let p = tunkit_core::packet::Packet::parse(&out).unwrap();
      assert_eq!((&out[p.payload.clone()], p.ip_len), (&payload[..], out.len()));
      // The checksum field is never 0 (that means "none" over IPv4).
      assert_ne!(&out[p.l4_offset + 6..p.l4_offset + 8], &[0, 0]);
    }
  }
  assert_eq!(st.stats().udp_replies, 12);
}

#[test]
fn reply_errors_are_typed() {
  let t0 = Instant::now();
  let st = Stack::new(config()).unwrap();
  let (v4, _) = send(&st, sa("10.7.0.50:5000"), sa("1.1.1.1:53"), b"q", t0);
  let (v6, _) = send(&st, sa("[fd07::50]:5000"), sa("[2001:db8::1]:53"), b"q", t0);
  let mut out = Vec::new();
  let kind = |r: tunkit_core::Result<()>| r.unwrap_err().kind();
  assert_eq!(
    kind(st.udp_reply(v4, sa("[2001:db8::1]:53"), b"", &mut out)),
    ErrorKind::InvalidAddress
  );
  assert_eq!(
    kind(st.udp_reply(v6, sa("1.1.1.1:53"), b"", &mut out)),
    ErrorKind::InvalidAddress
  );
  assert_eq!(
    kind(st.udp_reply(999, sa("1.1.1.1:53"), b"", &mut out)),
    ErrorKind::NotFound
  );
  let big = vec![0u8; 65_535 - 28 + 1];
  assert_eq!(
    kind(st.udp_reply(v4, sa("1.1.1.1:53"), &big, &mut out)),
    ErrorKind::PacketTooLarge
  );
  st.udp_reply(v4, sa("1.1.1.1:53"), &big[1..], &mut out).unwrap();
  assert_eq!(out.len(), 65_535);
  assert_checksums(&out);
  let big6 = vec![0u8; 65_535 - 8];
  st.udp_reply(v6, sa("[2001:db8::1]:53"), &big6, &mut out).unwrap();
  assert_eq!(out.len(), 40 + 65_535);
  assert_eq!(
    kind(st.udp_reply(v6, sa("[2001:db8::1]:53"), &[0; 65_528], &mut out)),
    ErrorKind::PacketTooLarge
  );
  // An IPv4-mapped source is taken as IPv4.
  st.udp_reply(v4, sa("[::ffff:1.1.1.1]:53"), b"m", &mut out)
    .unwrap();
  assert_eq!(endpoints(&out).0, sa("1.1.1.1:53"));
  st.close_udp(v4);
  assert_eq!(
    kind(st.udp_reply(v4, sa("1.1.1.1:53"), b"", &mut out)),
    ErrorKind::NotFound
  );
  st.close_udp(v4); // twice: harmless
  assert_eq!(st.stats().udp_closed, 1);
  // The client's next datagram opens a new session.
  assert!(send(&st, sa("10.7.0.50:5000"), sa("1.1.1.1:53"), b"q", t0).1);
}

#[test]
fn the_cap_evicts_the_least_recently_used_session() {
  let t0 = Instant::now();
  let mut cfg = config();
  cfg.max_udp_sessions = 3;
  let st = Stack::new(cfg).unwrap();
  let dest = sa("1.1.1.1:53");
  let ids: Vec<u64> = (1..=3)
    .map(|i| send(&st, sa(&format!("10.7.0.50:{i}")), dest, b"", t0).0)
    .collect();
  send(&st, sa("10.7.0.50:1"), dest, b"", t0); // 1 is fresh again: 2 is the oldest
  st.udp_reply(ids[2], dest, b"r", &mut Vec::new()).unwrap(); // a reply refreshes 3
  let (s4, new) = send(&st, sa("10.7.0.50:4"), dest, b"", t0);
  assert!(new);
  assert_eq!(st.take_evicted(), vec![ids[1]]);
  let (s5, _) = send(&st, sa("10.7.0.50:5"), dest, b"", t0);
  assert_eq!(
    st.tick(t0),
    vec![ids[0]],
    "tick hands over evictions not yet taken"
  );
  assert_eq!(st.tick(t0), Vec::<u64>::new());
  assert_eq!(
    st.take_notice().as_deref(),
    Some("UDP session table full (3 sessions): evicting the least recently used")
  );
  assert_eq!(st.take_notice(), None, "one notice per burst");
  let s = st.stats();
  assert_eq!((s.udp_sessions, s.udp_evicted, s.udp_created), (3, 2, 5));
  assert!(st.udp_session(s4).is_some() && st.udp_session(s5).is_some() && st.udp_session(ids[2]).is_some());
  // Below the cap again, the next cap hit is a new burst.
  st.close_udp(s5);
  send(&st, sa("10.7.0.50:6"), dest, b"", t0);
  send(&st, sa("10.7.0.50:7"), dest, b"", t0);
  assert!(st.take_notice().is_some());
}

#[test]
fn idle_sessions_expire_and_traffic_either_way_keeps_them() {
  let t0 = Instant::now();
  let mut cfg = config();
  cfg.udp_idle = Duration::from_secs(30);
  let st = Stack::new(cfg).unwrap();
  let dest = sa("[2001:db8::1]:53");
  let (quiet, _) = send(&st, sa("[fd07::50]:1"), dest, b"", t0);
  let (chatty, _) = send(&st, sa("[fd07::50]:2"), dest, b"", t0);
  let (replied, _) = send(&st, sa("[fd07::50]:3"), dest, b"", t0);
  send(&st, sa("[fd07::50]:2"), dest, b"", t0 + Duration::from_secs(20));
  // The reply happens at the latest time the stack has seen (t0 + 20 s).
  st.udp_reply(replied, dest, b"", &mut Vec::new()).unwrap();
  assert_eq!(st.tick(t0 + Duration::from_secs(29)), Vec::<u64>::new());
  assert_eq!(st.tick(t0 + Duration::from_secs(30)), vec![quiet]);
  let mut late = st.tick(t0 + Duration::from_secs(50));
  late.sort();
  assert_eq!(late, vec![chatty, replied]);
  assert_eq!(st.stats().udp_expired, 3);
  assert_eq!(st.stats().udp_sessions, 0);
}

#[test]
fn udp_to_the_gateway_or_multicast_and_disabled_udp_pass() {
  let t0 = Instant::now();
  let st = Stack::new(config()).unwrap();
  for (c, d) in [
    ("10.7.0.50:5000", "10.7.0.1:53"),
    ("[fd07::50]:5000", "[fd07::1]:53"),
    ("10.7.0.50:5353", "224.0.0.251:5353"),
    ("[fd07::50]:5353", "[ff02::fb]:5353"),
    ("10.7.0.50:68", "255.255.255.255:67"),
    ("10.7.0.50:137", "10.7.0.255:137"),
    ("0.0.0.0:68", "1.1.1.1:67"),
    ("10.7.0.50:0", "1.1.1.1:53"),
  ] {
    let mut pkt = udp(sa(c), sa(d), b"x");
    assert_eq!(
      st.inbound(&mut pkt, t0, &mut Vec::new()),
      Verdict::Pass,
      "{c} -> {d}"
    );
  }
  let mut cfg = config();
  cfg.udp = false;
  let st = Stack::new(cfg).unwrap();
  let mut pkt = udp(sa("10.7.0.50:5000"), sa("1.1.1.1:53"), b"x");
  assert_eq!(st.inbound(&mut pkt, t0, &mut Vec::new()), Verdict::Pass);
}

#[test]
fn a_refused_datagram_gets_a_port_unreachable_quoting_it() {
  use tunkit_core::packet::{checksum, Packet, Transport};
  let t0 = Instant::now();
  let st = Stack::new(config()).unwrap();
  for (c, d) in [
    ("10.7.0.50:5000", "1.1.1.1:53"),
    ("[fd07::50]:5000", "[2001:db8::1]:3478"),
  ] {
    let (client, dest) = (sa(c), sa(d));
    let v6 = client.is_ipv6();
    for size in [0usize, 5, 4000] {
      let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
      let (session, _) = send(&st, client, dest, &payload, t0);
      let mut out = Vec::new();
      st.udp_unreachable(session, dest, &payload, &mut out).unwrap();
      let p = Packet::parse(&out).unwrap();
      assert_eq!(
        (p.src, p.dst),
        (dest.ip(), client.ip()),
        "from the destination to the client"
      );
      let want = if v6 { (1, 4) } else { (3, 3) };
      assert!(
        matches!(p.transport, Transport::Icmp { icmp_type, code } if (icmp_type, code) == want),
        "{:?}",
        p.transport
      );
      let l4 = p.l4_offset;
      let initial = if v6 {
        checksum::pseudo_header(&out[8..24], &out[24..40], 58, (out.len() - l4) as u32)
      } else {
        0
      };
      assert!(checksum::verify(&out[l4..], initial), "{c} {size}: ICMP checksum");
      assert!(out.len() <= if v6 { 1280 } else { 576 });
      // The quote: the client's datagram (its real length in the UDP header), as far as it fits.
      let quote = &out[l4 + 8..];
      let full = udp(client, dest, &payload);
      let ql = if v6 { 40 } else { 20 };
      assert_eq!(
        &quote[..ql + 6],
        &full[..ql + 6],
        "{c} {size}: quoted IP header, ports, UDP length"
      );
      assert_eq!(&quote[ql + 8..], &payload[..quote.len() - ql - 8]);
      if size < 100 {
        assert_eq!(quote, &full[..], "a short datagram is quoted whole");
      }
    }
    // The session stays; of the other family, or gone: typed errors.
    let (session, new) = send(&st, client, dest, b"x", t0);
    assert!(!new);
    let other = if v6 {
      sa("1.1.1.1:53")
    } else {
      sa("[2001:db8::1]:53")
    };
    let e = st
      .udp_unreachable(session, other, b"x", &mut Vec::new())
      .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidAddress);
    st.close_udp(session);
    let e = st
      .udp_unreachable(session, dest, b"x", &mut Vec::new())
      .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
  }
  assert_eq!(st.stats().udp_refused, 6);
}
