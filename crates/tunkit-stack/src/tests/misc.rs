//! Configuration validation, ICMP echo, what passes untouched, and garbage input.

use std::time::Instant;

use tunkit_core::packet::{Family, IcmpHeader, Packet, Transport};
use tunkit_core::ErrorKind;

use crate::testutil::*;
use crate::{FamilyConfig, IcmpMode, Stack, StackConfig, Verdict};

#[test]
fn invalid_configurations_are_refused_with_typed_errors() {
  type Edit = fn(&mut StackConfig);
  type Case = (&'static str, Box<dyn Fn(&mut StackConfig)>, ErrorKind);
  let fam =
    |a: &str, nat: &[&str], len: u8| Some(FamilyConfig::new(ip(a), nat.iter().map(|s| ip(s)).collect(), len));
  let cases: Vec<Case> = vec![
    (
      "no family",
      Box::new(|c| (c.v4, c.v6) = (None, None)),
      ErrorKind::InvalidArgument,
    ),
    (
      "port 0",
      Box::new(|c| c.listen_port = 0),
      ErrorKind::InvalidArgument,
    ),
    (
      "tcp cap 0",
      Box::new(|c| c.max_tcp_flows = 0),
      ErrorKind::InvalidArgument,
    ),
    (
      "udp cap 0",
      Box::new(|c| c.max_udp_sessions = 0),
      ErrorKind::InvalidArgument,
    ),
    (
      "no NAT address",
      Box::new(move |c| c.v4 = fam("10.7.0.1", &[], 24)),
      ErrorKind::InvalidArgument,
    ),
    (
      "B is A",
      Box::new(move |c| c.v4 = fam("10.7.0.1", &["10.7.0.1"], 24)),
      ErrorKind::InvalidAddress,
    ),
    (
      "B outside",
      Box::new(move |c| c.v4 = fam("10.7.0.1", &["10.8.0.2"], 24)),
      ErrorKind::InvalidAddress,
    ),
    (
      "B twice",
      Box::new(move |c| c.v4 = fam("10.7.0.1", &["10.7.0.2", "10.7.0.2"], 24)),
      ErrorKind::InvalidAddress,
    ),
    (
      "B broadcast",
      Box::new(move |c| c.v4 = fam("10.7.0.1", &["10.7.0.255"], 24)),
      ErrorKind::InvalidAddress,
    ),
    (
      "B network",
      Box::new(move |c| c.v4 = fam("10.7.0.1", &["10.7.0.0"], 24)),
      ErrorKind::InvalidAddress,
    ),
    (
      "B v6 in v4",
      Box::new(move |c| c.v4 = fam("10.7.0.1", &["fd07::2"], 24)),
      ErrorKind::InvalidAddress,
    ),
    (
      "A v6 in v4",
      Box::new(move |c| c.v4 = fam("fd07::1", &["fd07::2"], 64)),
      ErrorKind::InvalidAddress,
    ),
    (
      "A v4 in v6",
      Box::new(move |c| c.v6 = fam("10.7.0.1", &["10.7.0.2"], 24)),
      ErrorKind::InvalidAddress,
    ),
    (
      "prefix too long",
      Box::new(move |c| c.v4 = fam("10.7.0.1", &["10.7.0.2"], 33)),
      ErrorKind::InvalidAddress,
    ),
    (
      "A multicast",
      Box::new(move |c| c.v6 = fam("ff02::1", &["ff02::2"], 64)),
      ErrorKind::InvalidAddress,
    ),
    (
      "v6 B outside",
      Box::new(move |c| c.v6 = fam("fd07::1", &["fd08::2"], 64)),
      ErrorKind::InvalidAddress,
    ),
    (
      "/32 has no room",
      Box::new(move |c| c.v4 = fam("10.7.0.1", &["10.7.0.2"], 32)),
      ErrorKind::InvalidAddress,
    ),
  ];
  for (name, edit, kind) in cases {
    let mut c = config();
    edit(&mut c);
    let err = Stack::new(c).expect_err(name);
    assert_eq!(err.kind(), kind, "{name}: {}", err.message());
  }
  let ok: [Edit; 4] = [
    |c| c.v6 = None,
    |c| c.v4 = None,
    |c| c.v4 = Some(FamilyConfig::new(ip("10.7.0.0"), vec![ip("10.7.0.1")], 31)), // /31: both usable
    |c| c.v6.as_mut().unwrap().nat.push("fd07::ffff".parse().unwrap()),
  ];
  for edit in ok {
    let mut c = config();
    edit(&mut c);
    Stack::new(c).unwrap();
  }
}

#[test]
fn echo_requests_per_mode_for_both_families() {
  let t0 = Instant::now();
  for (src, dst) in [
    ("10.7.0.50", "93.184.216.34"),
    ("fd07::50", "2606:4700::1111"),
    ("10.7.0.50", "10.7.0.2"),
  ] {
    let (src, dst) = (ip(src), ip(dst));
    for mode in [IcmpMode::Reply, IcmpMode::Drop, IcmpMode::Pass] {
      let mut cfg = config();
      cfg.icmp = mode;
      let st = Stack::new(cfg).unwrap();
      let mut pkt = ping(src, dst, b"abcdefghijklmnopq");
      let orig = pkt.clone();
      let mut out = Vec::new();
      let v = st.inbound(&mut pkt, t0, &mut out);
      assert_eq!(pkt, orig);
      match mode {
        IcmpMode::Reply => {
          assert_eq!(v, Verdict::Reply);
          assert_checksums(&out);
          let p = Packet::parse(&out).unwrap();
          assert_eq!((p.src, p.dst), (dst, src));
          let want = if p.family == Family::V4 { 0 } else { 129 };
          assert_eq!(
            p.transport,
            Transport::Icmp {
              icmp_type: want,
              code: 0
            }
          );
          let h = IcmpHeader::parse(&out[p.l4_offset..]).unwrap();
          assert_eq!((h.echo_id(), h.echo_seq()), (0x77, 3));
          assert_eq!(&out[p.payload], b"abcdefghijklmnopq");
        }
        IcmpMode::Drop => assert_eq!(v, Verdict::Drop),
        IcmpMode::Pass => assert_eq!(v, Verdict::Pass),
      }
    }
  }
}

#[test]
fn other_icmp_bad_pings_and_pings_to_the_gateway() {
  let t0 = Instant::now();
  let st = Stack::new(config()).unwrap();
  let reply = tunkit_core::packet::build::icmp_echo(
    &tunkit_core::packet::build::IpFields::new(ip("10.7.0.50"), ip("1.1.1.1")),
    true,
    1,
    1,
    b"",
  )
  .unwrap();
  let mut bad = ping(ip("10.7.0.50"), ip("1.1.1.1"), b"x");
  let n = bad.len();
  bad[n - 1] ^= 0xff;
  let cases: [(&str, Vec<u8>, Verdict); 6] = [
    ("echo reply", reply, Verdict::Pass),
    ("bad checksum", bad, Verdict::Drop),
    (
      "to A v4",
      ping(ip("10.7.0.50"), ip("10.7.0.1"), b""),
      Verdict::Pass,
    ),
    ("to A v6", ping(ip("fd07::50"), ip("fd07::1"), b""), Verdict::Pass),
    (
      "to multicast",
      ping(ip("fd07::50"), ip("ff02::1"), b""),
      Verdict::Pass,
    ),
    (
      "to broadcast",
      ping(ip("10.7.0.50"), ip("10.7.0.255"), b""),
      Verdict::Pass,
    ),
  ];
  for (name, mut pkt, want) in cases {
    let orig = pkt.clone();
    assert_eq!(st.inbound(&mut pkt, t0, &mut Vec::new()), want, "{name}");
    assert_eq!(pkt, orig, "{name}");
  }
}

/// Sets IPv4 flags/fragment offset and fixes the header checksum.
fn fragment_v4(mut pkt: Vec<u8>, word: u16) -> Vec<u8> {
  pkt[6..8].copy_from_slice(&word.to_be_bytes());
  pkt[10..12].fill(0);
  let c = tunkit_core::packet::checksum::checksum(&pkt[..20]);
  pkt[10..12].copy_from_slice(&c.to_be_bytes());
  pkt
}

/// Puts an IPv6 fragment header in front of the transport header.
fn fragment_v6(mut pkt: Vec<u8>) -> Vec<u8> {
  let next = pkt[6];
  pkt[6] = 44;
  pkt.splice(40..40, [next, 0, 0, 1, 0, 0, 0, 7]); // offset 0, M set
  let len = (pkt.len() - 40) as u16;
  pkt[4..6].copy_from_slice(&len.to_be_bytes());
  pkt
}

#[test]
fn fragments_other_protocols_and_foreign_traffic_pass_unchanged() {
  let t0 = Instant::now();
  let st = Stack::new(config()).unwrap();
  let syn = |c: &str, d: &str| tcp(sa(c), sa(d), 0x02, 1, 0, b"");
  let mut gre = udp(sa("10.7.0.50:1"), sa("1.1.1.1:2"), b"xxxx");
  gre[9] = 47;
  let cases: Vec<(&str, Vec<u8>)> = vec![
    (
      "v4 first fragment",
      fragment_v4(syn("10.7.0.50:1", "1.1.1.1:80"), 0x2000),
    ),
    (
      "v4 later fragment",
      fragment_v4(udp(sa("10.7.0.50:1"), sa("1.1.1.1:53"), b"x"), 0x0010),
    ),
    (
      "v4 ping fragment",
      fragment_v4(ping(ip("10.7.0.50"), ip("1.1.1.1"), b"x"), 0x2000),
    ),
    (
      "v6 fragment",
      fragment_v6(syn("[fd07::50]:1", "[2001:db8::1]:80")),
    ),
    (
      "v6 udp fragment",
      fragment_v6(udp(sa("[fd07::50]:1"), sa("[2001:db8::1]:53"), b"x")),
    ),
    ("GRE", gre),
    ("TCP to A", syn("10.7.0.50:1", "10.7.0.1:22")),
    ("TCP to A v6", syn("[fd07::50]:1", "[fd07::1]:22")),
    ("TCP from B", syn("10.7.0.2:1", "1.1.1.1:80")),
    ("TCP from B v6", syn("[fd07::2]:1", "[2001:db8::1]:80")),
    ("TCP to multicast", syn("10.7.0.50:1", "224.0.0.1:80")),
    ("TCP port 0", syn("10.7.0.50:1", "1.1.1.1:0")),
    ("TCP from unspecified", syn("0.0.0.0:1", "1.1.1.1:80")),
    ("empty", vec![]),
    ("one byte", vec![0x45]),
    ("IPv5", vec![0x55; 40]),
    ("truncated", syn("10.7.0.50:1", "1.1.1.1:80")[..30].to_vec()),
  ];
  for (name, mut pkt) in cases {
    let orig = pkt.clone();
    let mut out = Vec::new();
    assert_eq!(st.inbound(&mut pkt, t0, &mut out), Verdict::Pass, "{name}");
    assert_eq!(pkt, orig, "{name}");
    assert!(out.is_empty(), "{name}");
  }
  assert_eq!(st.stats().pass, 17);
  assert_eq!(st.stats().tcp_flows, 0);
}

#[test]
fn trailing_bytes_past_the_ip_length_are_left_alone() {
  let t0 = Instant::now();
  let st = Stack::new(config()).unwrap();
  let mut pkt = tcp(sa("10.7.0.50:1"), sa("1.1.1.1:80"), 0x02, 1, 0, b"hi");
  let ip_len = pkt.len();
  pkt.extend_from_slice(&[0xab; 7]);
  assert_eq!(st.inbound(&mut pkt, t0, &mut Vec::new()), Verdict::WriteBack);
  assert_checksums(&pkt[..ip_len]);
  assert_eq!(&pkt[ip_len..], &[0xab; 7]);
}

#[test]
fn garbage_and_truncations_never_panic() {
  let t0 = Instant::now();
  let st = Stack::new(config()).unwrap();
  let mut rng = Rng::new(99);
  let mut out = Vec::new();
  for len in 0..256 {
    for first in [0x45u8, 0x46, 0x4f, 0x60, 0x00, 0xff] {
      let mut pkt = rng.bytes(len);
      if let Some(b) = pkt.first_mut() {
        *b = first;
      }
      let orig = pkt.clone();
      let v = st.inbound(&mut pkt, t0, &mut out);
      if matches!(v, Verdict::Pass | Verdict::Drop) {
        assert_eq!(pkt, orig);
      }
      assert_eq!(pkt.len(), len);
    }
  }
  let valid = [
    tcp(sa("10.7.0.50:1"), sa("1.1.1.1:80"), 0x02, 1, 0, b"payload!"),
    tcp(
      sa("[fd07::50]:1"),
      sa("[2001:db8::1]:80"),
      0x10,
      1,
      0,
      b"payload!",
    ),
    udp(sa("10.7.0.50:1"), sa("1.1.1.1:53"), b"payload!"),
    ping(ip("fd07::50"), ip("2001:db8::1"), b"payload!"),
  ];
  for pkt in &valid {
    for cut in 0..pkt.len() {
      let mut p = pkt[..cut].to_vec();
      let orig = p.clone();
      assert_eq!(st.inbound(&mut p, t0, &mut out), Verdict::Pass, "cut at {cut}");
      assert_eq!(p, orig);
    }
  }
}
