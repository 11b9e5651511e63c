//! Deterministic tests of the pure part: packets crafted and exchanged with a fake clock.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tunkit_core::Batch;

use crate::ip::{self, PROTO_ICMP, PROTO_ICMPV6, PROTO_UDP};
use crate::{Event, NetStack, ReassemblyConfig, StackConfig};

const A4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const B4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
const A6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1));
const B6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2));

fn stack(addrs: Vec<IpAddr>) -> NetStack {
  NetStack::new(StackConfig::new(addrs, [7; 16]))
}

fn packets(b: &Batch) -> Vec<Vec<u8>> {
  b.iter().map(|p| p.to_vec()).collect()
}

fn udp_l4(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
  let mut l4 = Vec::new();
  l4.extend_from_slice(&sport.to_be_bytes());
  l4.extend_from_slice(&dport.to_be_bytes());
  l4.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
  l4.extend_from_slice(&[0, 0]);
  l4.extend_from_slice(data);
  l4
}

#[test]
fn icmp_echo_is_answered_v4_and_v6() {
  let mut s = stack(vec![A4, A6]);
  for (src, dst, proto, req, rep) in [(B4, A4, PROTO_ICMP, 8, 0), (B6, A6, PROTO_ICMPV6, 128, 129)] {
    let mut pkt = Vec::new();
    ip::build(
      &mut pkt,
      src,
      dst,
      proto,
      64,
      1,
      &[req, 0, 0, 0, 0x12, 0x34, 0, 1, b'h', b'i'],
    );
    let mut out = Batch::default();
    s.input(Duration::ZERO, &pkt, &mut out);
    let got = packets(&out);
    assert_eq!(got.len(), 1);
    let v = ip::parse(&got[0]).unwrap();
    assert_eq!((v.src, v.dst, v.proto), (dst, src, proto));
    let l4 = &got[0][v.hdr_len..];
    assert!(ip::l4_checksum_ok(&v, l4));
    assert_eq!(l4[0], rep);
    assert_eq!(&l4[4..], &[0x12, 0x34, 0, 1, b'h', b'i']);
  }
  assert_eq!(s.stats().echo_replies, 2);
  // A corrupted request is dropped.
  let mut pkt = Vec::new();
  ip::build(&mut pkt, B4, A4, PROTO_ICMP, 64, 1, &[8, 0, 0, 0, 0, 1, 0, 1]);
  let n = pkt.len();
  pkt[n - 1] ^= 0xff;
  let mut out = Batch::default();
  s.input(Duration::ZERO, &pkt, &mut out);
  assert!(out.is_empty());
  assert_eq!(s.stats().rx_bad_checksum, 1);
}

#[test]
fn other_destinations_are_dropped_unless_tcp_proxy_mode() {
  let mut s = stack(vec![A4]);
  let other = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9));
  let mut pkt = Vec::new();
  ip::build(&mut pkt, B4, other, PROTO_ICMP, 64, 1, &[8, 0, 0, 0, 0, 1, 0, 1]);
  let mut out = Batch::default();
  s.input(Duration::ZERO, &pkt, &mut out);
  assert!(out.is_empty());
  assert_eq!(s.stats().rx_not_local, 1);

  // Proxy mode: a SYN from B to any address is accepted by a wildcard listener.
  let mut cfg = StackConfig::new(vec![A4], [1; 16]);
  cfg.any_destination = true;
  let mut proxy = NetStack::new(cfg);
  let l = proxy.tcp().listen(tunkit_tcp::ListenAddr::any(), 8).unwrap();
  let mut client = stack(vec![B4]);
  let c = client
    .tcp_connect(Duration::ZERO, SocketAddr::new(other, 443))
    .unwrap();
  let t = run_pair(&mut client, &mut proxy, Duration::ZERO, |_, _| false);
  let _ = t;
  let id = proxy
    .tcp()
    .accept(l)
    .expect("accepted a connection to a foreign address");
  assert_eq!(proxy.tcp().info(id).unwrap().local, SocketAddr::new(other, 443));
  assert_eq!(client.tcp().state(c), Some(tunkit_tcp::State::Established));
}

/// Exchanges packets between two stacks (advancing a fake clock to the next deadline when idle) until
/// `done` or nothing is left to do. Returns the time reached.
fn run_pair(
  a: &mut NetStack,
  b: &mut NetStack,
  mut now: Duration,
  mut done: impl FnMut(&mut NetStack, &mut NetStack) -> bool,
) -> Duration {
  let (mut to_b, mut to_a) = (Batch::default(), Batch::default());
  for _ in 0..1_000_000 {
    a.poll(now, &mut to_b);
    b.poll(now, &mut to_a);
    let (pa, pb) = (packets(&to_b), packets(&to_a));
    to_b.clear();
    to_a.clear();
    for p in &pa {
      b.input(now, p, &mut to_a);
    }
    for p in &pb {
      a.input(now, p, &mut to_b);
    }
    if done(a, b) {
      return now;
    }
    if pa.is_empty() && pb.is_empty() && to_a.is_empty() && to_b.is_empty() {
      let next = [a.next_deadline(), b.next_deadline()].into_iter().flatten().min();
      match next {
        Some(t) if t > now => now = t,
        Some(_) => now += Duration::from_micros(100),
        None => return now,
      }
      if now > Duration::from_secs(600) {
        return now;
      }
    }
  }
  now
}

#[test]
fn tcp_transfer_between_two_pure_stacks_v6() {
  let (mut a, mut b) = (stack(vec![A6]), stack(vec![B6]));
  let l = b.tcp_listen(80, 4).unwrap();
  let c = a.tcp_connect(Duration::ZERO, SocketAddr::new(B6, 80)).unwrap();
  let data: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 + i / 251) as u8).collect();
  let (mut sent, mut got, mut srv) = (0usize, Vec::new(), None);
  let mut buf = vec![0u8; 65536];
  run_pair(&mut a, &mut b, Duration::ZERO, |a, b| {
    if sent < data.len() {
      if let Ok(n) = a.tcp().write(c, &data[sent..]) {
        sent += n;
        if sent == data.len() {
          a.tcp().shutdown(c).unwrap();
        }
      }
    }
    if srv.is_none() {
      srv = b.tcp().accept(l);
    }
    if let Some(s) = srv {
      while let Ok(n) = b.tcp().read(s, &mut buf) {
        if n == 0 {
          return true;
        }
        got.extend_from_slice(&buf[..n]);
      }
    }
    false
  });
  assert_eq!(got.len(), data.len());
  assert!(got == data);
}

#[test]
fn udp_sockets_exchange_datagrams_and_queues_are_bounded() {
  let mut cfg = StackConfig::new(vec![A4], [2; 16]);
  cfg.udp_queue_packets = 3;
  let (mut a, mut b) = (NetStack::new(cfg), stack(vec![B4]));
  let (sa, _) = a.udp_bind(SocketAddr::new(A4, 5353)).unwrap();
  let (sb, bound) = b
    .udp_bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0))
    .unwrap();
  assert!(bound.port() >= 49152);
  assert_eq!(b.udp_bind(bound).unwrap_err(), crate::Error::AddrInUse);
  for i in 0..5u8 {
    b.udp_send_to(sb, &[i; 100], SocketAddr::new(A4, 5353)).unwrap();
  }
  run_pair(&mut a, &mut b, Duration::ZERO, |_, _| false);
  assert_eq!(a.next_event(), Some(Event::UdpReadable(sa)));
  let mut buf = [0u8; 200];
  for i in 0..3u8 {
    let (n, from) = a.udp_recv_from(sa, &mut buf).unwrap();
    assert_eq!((n, from), (100, SocketAddr::new(B4, bound.port())));
    assert_eq!(buf[0], i);
  }
  assert_eq!(
    a.udp_recv_from(sa, &mut buf).unwrap_err(),
    crate::Error::WouldBlock
  );
  assert_eq!(a.stats().udp_queue_drops, 2);
  assert_eq!(
    b.udp_send_to(sb, &[0; 1473], SocketAddr::new(A4, 5353))
      .unwrap_err(),
    crate::Error::TooLarge
  );
}

#[test]
fn udp_to_a_closed_port_gets_port_unreachable() {
  let mut s = stack(vec![A4]);
  let mut pkt = Vec::new();
  ip::build(&mut pkt, B4, A4, PROTO_UDP, 64, 9, &udp_l4(1000, 9999, b"x"));
  let mut out = Batch::default();
  s.input(Duration::ZERO, &pkt, &mut out);
  let got = packets(&out);
  assert_eq!(got.len(), 1);
  let v = ip::parse(&got[0]).unwrap();
  let l4 = &got[0][v.hdr_len..];
  assert_eq!((v.proto, l4[0], l4[1]), (PROTO_ICMP, 3, 3));
  assert!(ip::l4_checksum_ok(&v, l4));
  assert_eq!(&l4[8..8 + 28], &pkt[..28]);
}

/// Cuts an IPv4 packet into fragments of `chunk` payload bytes (a multiple of 8).
fn fragment(pkt: &[u8], chunk: usize) -> Vec<Vec<u8>> {
  let body = &pkt[20..];
  let mut out = Vec::new();
  for (i, c) in body.chunks(chunk).enumerate() {
    let mut f = pkt[..20].to_vec();
    let off = (i * chunk / 8) as u16;
    let more = (i + 1) * chunk < body.len();
    f[2..4].copy_from_slice(&((20 + c.len()) as u16).to_be_bytes());
    f[6..8].copy_from_slice(&(off | if more { 0x2000 } else { 0 }).to_be_bytes());
    f[10] = 0;
    f[11] = 0;
    let cs = tunkit_core::packet::checksum::checksum(&f[..20]);
    f[10..12].copy_from_slice(&cs.to_be_bytes());
    f.extend_from_slice(c);
    out.push(f);
  }
  out
}

#[test]
fn fragments_are_reassembled_in_any_order_within_bounds() {
  let mut cfg = StackConfig::new(vec![A4], [3; 16]);
  cfg.reassembly = ReassemblyConfig {
    max_datagrams: 2,
    max_fragments: 16,
    max_bytes: 64 << 10,
    timeout: Duration::from_secs(5),
  };
  let mut s = NetStack::new(cfg);
  let (id, _) = s.udp_bind(SocketAddr::new(A4, 7)).unwrap();
  let payload: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
  let mut pkt = Vec::new();
  ip::build(&mut pkt, B4, A4, PROTO_UDP, 64, 42, &udp_l4(1, 7, &payload));
  let mut frags = fragment(&pkt, 1480);
  frags.reverse();
  let mut out = Batch::default();
  for f in &frags {
    s.input(Duration::ZERO, f, &mut out);
  }
  let mut buf = vec![0u8; 8000];
  let (n, _) = s.udp_recv_from(id, &mut buf).unwrap();
  assert_eq!(&buf[..n], &payload[..]);
  assert_eq!(s.stats().reassembled, 1);

  // Incomplete datagrams time out and free their memory; a third concurrent one is refused.
  for ident in [100u16, 101, 102] {
    let mut p = Vec::new();
    ip::build(&mut p, B4, A4, PROTO_UDP, 64, ident, &udp_l4(1, 7, &payload));
    s.input(Duration::from_secs(1), &fragment(&p, 1480)[0], &mut out);
  }
  let st = s.stats();
  assert_eq!((st.frag_pending, st.frag_dropped), (2, 1));
  assert_eq!(s.next_deadline(), Some(Duration::from_secs(6)));
  s.poll(Duration::from_secs(6), &mut out);
  let st = s.stats();
  assert_eq!((st.frag_pending, st.frag_bytes, st.frag_timeouts), (0, 0, 2));

  // Overlapping fragments drop the datagram.
  let mut p = Vec::new();
  ip::build(&mut p, B4, A4, PROTO_UDP, 64, 200, &udp_l4(1, 7, &payload));
  let f = fragment(&p, 1480);
  s.input(Duration::from_secs(7), &f[0], &mut out);
  s.input(Duration::from_secs(7), &f[0], &mut out);
  assert_eq!(s.stats().frag_pending, 0);
  assert!(out.is_empty());
}
