//! Two stacks, each with its driver threads, over the in-memory device pair (no privileges).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tunkit_core::backend::WriteReport;
use tunkit_core::platform::memory;
use tunkit_core::{Batch, Queue};
use tunkit_netstack::{DriverConfig, Error, NetStack, Stack, StackConfig};

const A4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 9, 0, 1));
const B4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 9, 0, 2));
const A6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 9, 0, 0, 0, 0, 0, 1));
const B6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 9, 0, 0, 0, 0, 0, 2));
const T: Option<Duration> = Some(Duration::from_secs(20));

/// A link that drops and reorders packets written to it (seeded, deterministic per write order).
struct Lossy {
  inner: Box<dyn Queue>,
  state: Mutex<(u64, Option<Vec<u8>>)>,
  permille: u64,
}

impl Queue for Lossy {
  fn read_batch(&self, batch: &mut Batch, max: usize) -> tunkit_core::Result<usize> {
    self.inner.read_batch(batch, max)
  }
  fn write_batch(&self, batch: &Batch) -> tunkit_core::Result<WriteReport> {
    let mut out = Batch::default();
    {
      let mut st = self.state.lock().unwrap();
      for p in batch.iter() {
        st.0 ^= st.0 << 13;
        st.0 ^= st.0 >> 7;
        st.0 ^= st.0 << 17;
        let r = st.0 % 1000;
        if r < self.permille {
          continue; // dropped
        }
        if r < 2 * self.permille && st.1.is_none() {
          st.1 = Some(p.to_vec()); // held back: goes out after the next packet
          continue;
        }
        out.push(p);
        if let Some(h) = st.1.take() {
          out.push(&h);
        }
      }
    }
    self.inner.write_batch(&out)
  }
  fn max_frame(&self) -> usize {
    self.inner.max_frame()
  }
  fn wake(&self) {
    self.inner.wake()
  }
}

fn cfg(addrs: Vec<IpAddr>, seed: u8) -> StackConfig {
  let mut c = StackConfig::new(addrs, [seed; 16]);
  c.tcp.rto_initial = Duration::from_millis(200);
  c
}

fn pair(mtu: u32, loss_permille: u64) -> (Arc<Stack>, Arc<Stack>) {
  pair_with(mtu, loss_permille, |_| {})
}

/// Stacks A (10.9.0.1, fd00:9::1) and B (10.9.0.2, fd00:9::2); `tweak_b` adjusts B's configuration.
fn pair_with(mtu: u32, loss_permille: u64, tweak_b: impl Fn(&mut StackConfig)) -> (Arc<Stack>, Arc<Stack>) {
  let (a, b) = memory::pair(mtu, 4096).unwrap();
  let (mut qa, mut qb) = (
    a.queues.into_iter().next().unwrap(),
    b.queues.into_iter().next().unwrap(),
  );
  if loss_permille > 0 {
    qa = Box::new(Lossy {
      inner: qa,
      state: Mutex::new((0x9e3779b97f4a7c15, None)),
      permille: loss_permille,
    });
    qb = Box::new(Lossy {
      inner: qb,
      state: Mutex::new((0x2545f4914f6cdd1d, None)),
      permille: loss_permille,
    });
  }
  let mut ca = cfg(vec![A4, A6], 1);
  let mut cb = cfg(vec![B4, B6], 2);
  ca.tcp.mtu = mtu as usize;
  cb.tcp.mtu = mtu as usize;
  tweak_b(&mut cb);
  let sa = Stack::start(NetStack::new(ca), qa, DriverConfig::default()).unwrap();
  let sb = Stack::start(NetStack::new(cb), qb, DriverConfig::default()).unwrap();
  (sa, sb)
}

/// The byte at `pos` of stream `seed` (a splitmix64 of the 8-byte word index).
fn fill(seed: u64, pos: u64, buf: &mut [u8]) {
  for (i, b) in buf.iter_mut().enumerate() {
    let p = pos + i as u64;
    let mut z = (p >> 3).wrapping_add(seed).wrapping_mul(0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z ^= z >> 31;
    *b = (z >> ((p & 7) * 8)) as u8;
  }
}

fn send_stream(s: &Stack, id: tunkit_netstack::ConnId, seed: u64, len: u64) {
  let mut buf = vec![0u8; 256 << 10];
  let mut pos = 0u64;
  while pos < len {
    let n = (len - pos).min(buf.len() as u64) as usize;
    fill(seed, pos, &mut buf[..n]);
    s.tcp_write_all(id, &buf[..n], T).unwrap();
    pos += n as u64;
  }
  s.tcp_shutdown(id).unwrap();
}

/// Reads to the end of the stream, checking every byte; returns the length.
fn check_stream(s: &Stack, id: tunkit_netstack::ConnId, seed: u64) -> u64 {
  let mut buf = vec![0u8; 256 << 10];
  let mut want = vec![0u8; 256 << 10];
  let mut pos = 0u64;
  loop {
    let n = s.tcp_read(id, &mut buf, T).unwrap();
    if n == 0 {
      return pos;
    }
    fill(seed, pos, &mut want[..n]);
    assert!(buf[..n] == want[..n], "stream {seed} differs near byte {pos}");
    pos += n as u64;
  }
}

/// `len` bytes each way on one connection, both directions at once; returns MB/s (both directions) and
/// the segments retransmitted (both sides).
fn both_ways(a: &Arc<Stack>, b: &Arc<Stack>, remote: SocketAddr, len: u64) -> (f64, u64) {
  let l = b.tcp_listen(remote.port(), 8).unwrap();
  let start = Instant::now();
  let c = a.tcp_connect_wait(remote, T).unwrap();
  let s = b.tcp_accept(l, T).unwrap();
  let (a2, b2) = (a.clone(), b.clone());
  let t1 = thread::spawn(move || send_stream(&a2, c, 11, len));
  let t2 = thread::spawn(move || send_stream(&b2, s, 22, len));
  let (a3, b3) = (a.clone(), b.clone());
  let r1 = thread::spawn(move || check_stream(&b3, s, 11));
  assert_eq!(check_stream(&a3, c, 22), len);
  assert_eq!(r1.join().unwrap(), len);
  t1.join().unwrap();
  t2.join().unwrap();
  let mbs = (2 * len) as f64 / 1e6 / start.elapsed().as_secs_f64();
  let rtx = a.tcp_info(c).unwrap().stats.retransmits + b.tcp_info(s).unwrap().stats.retransmits;
  a.tcp_close(c).unwrap();
  b.tcp_close(s).unwrap();
  (mbs, rtx)
}

#[test]
fn tcp_64_mib_each_way_byte_exact() {
  let (a, b) = pair(9000, 0);
  let (mbs, _) = both_ways(&a, &b, SocketAddr::new(B4, 5001), 64 << 20);
  println!("tcp 64 MiB each way over the memory pair (mtu 9000): {mbs:.0} MB/s total");
  let (sa, ta, da) = a.stats();
  println!("a: {sa:?}\n{ta:?}\n{da:?}");
}

#[test]
fn tcp_32_mib_each_way_at_mtu_1500() {
  let (a, b) = pair(1500, 0);
  let (mbs, _) = both_ways(&a, &b, SocketAddr::new(B4, 5003), 32 << 20);
  println!("tcp 32 MiB each way over the memory pair (mtu 1500): {mbs:.0} MB/s total");
}

#[test]
fn memory_budget_reached_shrinks_windows_and_loses_nothing() {
  let budget = 512 << 10;
  let (a, b) = pair_with(1500, 0, |c| c.tcp.memory_budget = budget);
  let l = b.tcp_listen(6000, 64).unwrap();
  let n = 16u64;
  let len = 1u64 << 20;
  let mut senders = Vec::new();
  let mut conns = Vec::new();
  for i in 0..n {
    let c = a.tcp_connect_wait(SocketAddr::new(B4, 6000), T).unwrap();
    conns.push(b.tcp_accept(l, T).unwrap());
    let a2 = a.clone();
    senders.push(thread::spawn(move || send_stream(&a2, c, 100 + i, len)));
  }
  // Nobody reads for a while: the receiver's buffers fill up to the budget, then windows close.
  thread::sleep(Duration::from_millis(300));
  let (_, tb, _) = b.stats();
  println!(
    "receiver memory with nobody reading: {} of {} bytes",
    tb.memory_used, tb.memory_budget
  );
  assert!(
    tb.memory_used <= budget as u64 + n * (64 << 10),
    "memory {} far above the budget",
    tb.memory_used
  );
  for (i, &s) in conns.iter().enumerate() {
    assert_eq!(check_stream(&b, s, 100 + i as u64), len);
  }
  for t in senders {
    t.join().unwrap();
  }
}

#[test]
fn an_idle_stack_sleeps() {
  let (a, b) = pair(1500, 0);
  let before = a.stats().2.wakeups + b.stats().2.wakeups;
  thread::sleep(Duration::from_millis(300));
  let after = a.stats().2.wakeups + b.stats().2.wakeups;
  assert!(after - before <= 2, "{} wake-ups while idle", after - before);
}

#[test]
fn tcp_byte_exact_over_a_lossy_reordering_link_v6() {
  let (a, b) = pair(1500, 10);
  let (mbs, rtx) = both_ways(&a, &b, SocketAddr::new(B6, 5002), 16 << 20);
  println!("tcp 16 MiB each way, 1 % loss + 1 % reorder, ipv6, mtu 1500: {mbs:.1} MB/s, {rtx} retransmits");
  assert!(rtx > 0, "the lossy link dropped nothing");
}

#[test]
fn two_hundred_concurrent_connections() {
  let (a, b) = pair(1500, 0);
  let l = b.tcp_listen(7000, 256).unwrap();
  let n = 200;
  let conns: Vec<_> = (0..n)
    .map(|_| a.tcp_connect(SocketAddr::new(B4, 7000)).unwrap())
    .collect();
  let servers: Vec<_> = (0..n).map(|_| b.tcp_accept(l, T).unwrap()).collect();
  // Every connection open at once: each side sends 32 KiB on each, then closes its sending side.
  for (i, &c) in conns.iter().enumerate() {
    let mut buf = vec![0u8; 32 << 10];
    fill(i as u64, 0, &mut buf);
    a.tcp_write_all(c, &buf, T).unwrap();
    a.tcp_shutdown(c).unwrap();
  }
  let b2 = b.clone();
  let srv = thread::spawn(move || {
    let mut seeds = Vec::new();
    for &s in &servers {
      let mut buf = vec![0u8; 32 << 10];
      let mut got = Vec::new();
      loop {
        let k = b2.tcp_read(s, &mut buf, T).unwrap();
        if k == 0 {
          break;
        }
        got.extend_from_slice(&buf[..k]);
      }
      assert_eq!(got.len(), 32 << 10);
      let seed = (0..200u64).find(|&i| {
        let mut w = vec![0u8; 32 << 10];
        fill(i, 0, &mut w);
        w == got
      });
      let seed = seed.expect("a stream matches one client");
      b2.tcp_write_all(s, &seed.to_be_bytes(), T).unwrap();
      b2.tcp_close(s).unwrap();
      seeds.push(seed);
    }
    seeds.sort_unstable();
    assert_eq!(seeds, (0..200u64).collect::<Vec<_>>());
  });
  for (i, &c) in conns.iter().enumerate() {
    let mut buf = [0u8; 16];
    let k = a.tcp_read(c, &mut buf, T).unwrap();
    assert_eq!(&buf[..k], &(i as u64).to_be_bytes());
    assert_eq!(a.tcp_read(c, &mut buf, T).unwrap(), 0);
    a.tcp_close(c).unwrap();
  }
  srv.join().unwrap();
}

#[test]
fn half_close_keeps_the_other_direction_open() {
  let (a, b) = pair(1500, 0);
  let l = b.tcp_listen(80, 4).unwrap();
  let c = a.tcp_connect_wait(SocketAddr::new(B4, 80), T).unwrap();
  let s = b.tcp_accept(l, T).unwrap();
  a.tcp_write_all(c, b"GET / HTTP/1.0\r\n\r\n", T).unwrap();
  a.tcp_shutdown(c).unwrap();
  assert_eq!(
    a.tcp_write(c, b"more", T).unwrap_err(),
    Error::Tcp(tunkit_tcp::Error::Shutdown)
  );
  let mut buf = [0u8; 64];
  let mut req = Vec::new();
  loop {
    match b.tcp_read(s, &mut buf, T).unwrap() {
      0 => break,
      n => req.extend_from_slice(&buf[..n]),
    }
  }
  assert_eq!(req, b"GET / HTTP/1.0\r\n\r\n");
  // The server still writes after the client's FIN.
  let body = vec![b'x'; 100_000];
  b.tcp_write_all(s, &body, T).unwrap();
  b.tcp_close(s).unwrap();
  let mut got = Vec::new();
  let mut buf = vec![0u8; 8192];
  loop {
    match a.tcp_read(c, &mut buf, T).unwrap() {
      0 => break,
      n => got.extend_from_slice(&buf[..n]),
    }
  }
  assert_eq!(got, body);
  a.tcp_close(c).unwrap();
}

#[test]
fn connecting_to_a_closed_port_is_refused() {
  let (a, _b) = pair(1500, 0);
  let t = Instant::now();
  let e = a.tcp_connect_wait(SocketAddr::new(B4, 9), T).unwrap_err();
  assert_eq!(e, Error::Tcp(tunkit_tcp::Error::Refused));
  assert!(t.elapsed() < Duration::from_secs(2));
  let e = a.tcp_connect_wait(SocketAddr::new(B6, 9), T).unwrap_err();
  assert_eq!(e, Error::Tcp(tunkit_tcp::Error::Refused));
}

#[test]
fn a_full_backlog_holds_further_syns_until_accept() {
  let (a, b) = pair(1500, 0);
  let l = b.tcp_listen(8080, 2).unwrap();
  let c1 = a.tcp_connect_wait(SocketAddr::new(B4, 8080), T).unwrap();
  let c2 = a.tcp_connect_wait(SocketAddr::new(B4, 8080), T).unwrap();
  // The third SYN finds the backlog full and is dropped: no handshake while nobody accepts.
  let e = a
    .tcp_connect_wait(SocketAddr::new(B4, 8080), Some(Duration::from_millis(500)))
    .unwrap_err();
  assert_eq!(e, Error::Timeout);
  let c3 = a.tcp_connect(SocketAddr::new(B4, 8080)).unwrap();
  thread::sleep(Duration::from_millis(100));
  assert_eq!(a.tcp_info(c3).unwrap().state, tunkit_netstack::State::SynSent);
  let s1 = b.tcp_accept(l, T).unwrap();
  // Room again: the retransmitted SYN completes.
  let t = Instant::now();
  while a.tcp_info(c3).unwrap().state == tunkit_netstack::State::SynSent {
    assert!(
      t.elapsed() < Duration::from_secs(10),
      "retried SYN never completed"
    );
    thread::sleep(Duration::from_millis(10));
  }
  let s2 = b.tcp_accept(l, T).unwrap();
  let s3 = b.tcp_accept(l, T).unwrap();
  for (c, s) in [(c1, s1), (c2, s2), (c3, s3)] {
    a.tcp_write_all(c, b"ping", T).unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(b.tcp_read(s, &mut buf, T).unwrap(), 4);
  }
  assert_eq!(
    b.tcp_accept(l, Some(Duration::ZERO)).unwrap_err(),
    Error::WouldBlock
  );
}

#[test]
fn udp_echo_with_readiness_callback() {
  let (a, b) = pair(1500, 0);
  let (sb, bound) = b.udp_bind(SocketAddr::new(B4, 53)).unwrap();
  let (events_tx, events_rx) = std::sync::mpsc::channel();
  let events_tx = Mutex::new(events_tx);
  b.set_callback(Some(Arc::new(move |e| {
    let _ = events_tx.lock().unwrap().send(e);
  })));
  let b2 = b.clone();
  let echo = thread::spawn(move || {
    let mut buf = [0u8; 2048];
    for _ in 0..100 {
      let (n, from) = b2.udp_recv_from(sb, &mut buf, T).unwrap();
      b2.udp_send_to(sb, &buf[..n], from).unwrap();
    }
  });
  let (sa, _) = a
    .udp_bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0))
    .unwrap();
  let mut buf = [0u8; 2048];
  for i in 0..100u32 {
    let msg = format!("datagram {i}").repeat(1 + (i as usize % 50));
    a.udp_send_to(sa, msg.as_bytes(), bound).unwrap();
    let (n, from) = a.udp_recv_from(sa, &mut buf, T).unwrap();
    assert_eq!((&buf[..n], from), (msg.as_bytes(), bound));
  }
  echo.join().unwrap();
  let ev = events_rx.recv_timeout(Duration::from_secs(5)).unwrap();
  assert_eq!(ev, tunkit_netstack::Event::UdpReadable(sb));
  assert_eq!(
    a.udp_recv_from(sa, &mut buf, Some(Duration::ZERO)).unwrap_err(),
    Error::WouldBlock
  );
}

#[test]
fn icmp_echo_request_from_the_device_is_answered() {
  // One stack on one side; the test writes raw packets on the other side of the pair.
  let (a, b) = memory::pair(1500, 64).unwrap();
  let qa = a.queues.into_iter().next().unwrap();
  let raw = b.queues.into_iter().next().unwrap();
  let stack = Stack::start(NetStack::new(cfg(vec![A4, A6], 3)), qa, DriverConfig::default()).unwrap();
  for (src, dst, proto, req, rep) in [(B4, A4, 1u8, 8u8, 0u8), (B6, A6, 58, 128, 129)] {
    let mut pkt = Vec::new();
    let body = [req, 0, 0, 0, 0xbe, 0xef, 0, 7, 1, 2, 3, 4, 5, 6, 7, 8];
    tunkit_netstack::ip::build(&mut pkt, src, dst, proto, 64, 77, &body);
    raw.write_batch(&Batch::from_packets(&[&pkt])).unwrap();
    let mut got = Batch::with_capacity(1 << 17, 8);
    raw.read_batch(&mut got, 8).unwrap();
    let reply = got.iter().next().unwrap().to_vec();
    let v = tunkit_netstack::ip::parse(&reply).unwrap();
    assert_eq!((v.src, v.dst, v.proto), (dst, src, proto));
    let l4 = &reply[v.hdr_len..];
    assert!(tunkit_netstack::ip::l4_checksum_ok(&v, l4));
    assert_eq!(l4[0], rep);
    assert_eq!(&l4[4..], &body[4..]);
  }
  assert_eq!(stack.stats().0.echo_replies, 2);
  stack.stop();
}
