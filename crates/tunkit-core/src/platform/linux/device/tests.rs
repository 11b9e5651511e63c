use super::super::test_support::{in_netns, ipv4_udp};
use super::*;
use crate::backend::Control;
use crate::config::DeviceConfig;
use crate::platform::linux::sys::tun;
use std::net::UdpSocket;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Opens a TUN device named `name` with `addr` (so it is up) and returns its single queue, shareable.
fn device(name: &str, addr: Option<&str>) -> (Arc<dyn Queue>, Box<dyn Control>) {
  let cfg = DeviceConfig {
    name: Some(name.into()),
    addresses: addr.map(|a| vec![a.parse().unwrap()]).unwrap_or_default(),
    ..Default::default()
  };
  let opened = super::super::open(&cfg).unwrap();
  let queue = opened.queues.into_iter().next().unwrap();
  (Arc::from(queue), opened.control)
}

/// Wakes `queue` unless `stop` is signalled within `limit`, so that a test never blocks forever in a read.
fn watchdog(queue: &Arc<dyn Queue>, limit: Duration) -> mpsc::Sender<()> {
  let (tx, rx) = mpsc::channel::<()>();
  let queue = queue.clone();
  thread::spawn(move || {
    if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
      queue.wake();
    }
  });
  tx
}

/// The UDP payload of an IPv4 packet to `dst`, if it is one.
fn udp_payload_to(pkt: &[u8], dst: [u8; 4]) -> Option<&[u8]> {
  (pkt.len() >= 28 && pkt[0] >> 4 == 4 && pkt[9] == 17 && pkt[16..20] == dst).then(|| &pkt[28..])
}

#[test]
fn linux_read_batch_returns_what_the_kernel_sends() {
  in_netns("linux_read_batch_returns_what_the_kernel_sends", || {
    let (queue, _control) = device("tk-rd", Some("10.77.0.1/24"));
    let _stop = watchdog(&queue, Duration::from_secs(10));
    let frame = queue.max_frame();
    assert_eq!(frame, TUN_MAX_FRAME);
    let sock = UdpSocket::bind("10.77.0.1:0").unwrap();
    for i in 0..5u8 {
      sock.send_to(&[b'p', i], "10.77.0.2:4242").unwrap();
    }
    // Room for exactly one frame: one packet per call, never a truncated one.
    let mut small = Batch::with_capacity(frame + 10, 8);
    let mut got = Vec::new();
    for _ in 0..20 {
      if got.len() == 2 {
        break;
      }
      small.clear();
      assert_eq!(queue.read_batch(&mut small, 8).unwrap(), 1);
      assert_eq!(small.len(), 1);
      assert_eq!(small.data.len(), small.lens[0] as usize);
      if let Some(p) = udp_payload_to(small.iter().next().unwrap(), [10, 77, 0, 2]) {
        got.push(p.to_vec());
      }
    }
    // The other three are already queued: a roomy batch takes them in one call, bounded by max_packets.
    let mut batch = Batch::with_capacity(8 * frame, 8);
    let n = queue.read_batch(&mut batch, 2).unwrap();
    assert_eq!((n, batch.len()), (2, 2));
    for _ in 0..20 {
      if got.len()
        + batch
          .iter()
          .filter(|p| udp_payload_to(p, [10, 77, 0, 2]).is_some())
          .count()
        >= 5
      {
        break;
      }
      queue.read_batch(&mut batch, 64).unwrap();
    }
    assert_eq!(
      batch.data.len(),
      batch.lens.iter().map(|&l| l as usize).sum::<usize>()
    );
    got.extend(
      batch
        .iter()
        .filter_map(|p| udp_payload_to(p, [10, 77, 0, 2]))
        .map(|p| p.to_vec()),
    );
    assert_eq!(got, (0..5u8).map(|i| vec![b'p', i]).collect::<Vec<_>>());
  });
}

#[test]
fn linux_wake_unblocks_a_blocked_read_within_100ms() {
  in_netns("linux_wake_unblocks_a_blocked_read_within_100ms", || {
    // Down and without addresses: nothing ever arrives, so the reader blocks in poll.
    let (queue, _control) = device("tk-wake", None);
    let (done_tx, done_rx) = mpsc::channel();
    let reader = {
      let queue = queue.clone();
      thread::spawn(move || {
        let mut batch = Batch::with_capacity(2 * TUN_MAX_FRAME, 8);
        let r = queue.read_batch(&mut batch, 8);
        done_tx.send(Instant::now()).unwrap();
        r
      })
    };
    thread::sleep(Duration::from_millis(50));
    assert!(
      done_rx.try_recv().is_err(),
      "read_batch returned with nothing to read"
    );
    let woke = Instant::now();
    queue.wake();
    let returned = done_rx
      .recv_timeout(Duration::from_secs(5))
      .expect("read_batch still blocked after wake");
    assert!(
      returned.duration_since(woke) < Duration::from_millis(100),
      "{:?}",
      returned.duration_since(woke)
    );
    let e = reader.join().unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
    assert!(e.message().contains("tk-wake"), "{e}");
    // Woken for good: both directions fail at once from now on.
    let mut batch = Batch::with_capacity(2 * TUN_MAX_FRAME, 8);
    assert_eq!(
      queue.read_batch(&mut batch, 8).unwrap_err().kind(),
      ErrorKind::Closed
    );
    let mut out = Batch::default();
    out.push(&ipv4_udp([10, 0, 0, 2], [10, 0, 0, 1], 1, 2, b"x"));
    assert_eq!(queue.write_batch(&out).unwrap_err().kind(), ErrorKind::Closed);
    queue.wake();
  });
}

#[test]
fn linux_write_batch_delivers_and_reports_bad_packets() {
  in_netns("linux_write_batch_delivers_and_reports_bad_packets", || {
    let (queue, _control) = device("tk-wr", Some("10.78.0.1/24"));
    let sock = UdpSocket::bind("10.78.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let port = sock.local_addr().unwrap().port();
    let one = ipv4_udp([10, 78, 0, 2], [10, 78, 0, 1], 5555, port, b"one");
    let mut bad = ipv4_udp([10, 78, 0, 2], [10, 78, 0, 1], 5555, port, b"bad");
    bad[0] = 0x75; // IP version 7
    let two = ipv4_udp([10, 78, 0, 2], [10, 78, 0, 1], 5555, port, b"two");
    let mut batch = Batch::default();
    for p in [&one, &bad, &two] {
      batch.push(p);
    }
    let report = queue.write_batch(&batch).unwrap();
    assert_eq!((report.packets, report.errors), (2, 1), "{report:?}");
    assert_eq!(report.bytes, (one.len() + two.len()) as u64);
    let e = report.last_error.unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidPacket, "{e}");
    assert_eq!(e.errno(), Some(errno::EINVAL));
    assert!(
      e.message().contains("packet 1") && e.message().contains("tk-wr"),
      "{e}"
    );
    let mut buf = [0u8; 64];
    for want in [&b"one"[..], b"two"] {
      let (n, from) = sock
        .recv_from(&mut buf)
        .expect("datagram written to the device did not arrive");
      assert_eq!(&buf[..n], want);
      assert_eq!(from, "10.78.0.2:5555".parse().unwrap());
    }
  });
}

// ---- Offload: two namespaces joined by a forwarder, the way the benchmark and ava tests run ----

use crate::config::{Offload, RouteSpec as Route};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

/// Two TUN devices in two namespaces: `a` (10.50.0.1/24) in the caller's, `b` (10.60.0.1/24) in a fresh one,
/// each with a route to the other's network, and the threads that forward between them.
struct Link {
  a: Arc<TunQueue>,
  b: Arc<TunQueue>,
  ns_b: File,
  forwarders: Vec<thread::JoinHandle<()>>,
  _controls: (LinuxControl, LinuxControl),
}

/// A device with the given addresses and a direct route to each of `routes`.
fn offload_cfg(name: &str, addrs: &[&str], routes: &[&str], offload: Option<Offload>) -> DeviceConfig {
  DeviceConfig {
    name: Some(name.into()),
    addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
    routes: routes
      .iter()
      .map(|r| Route {
        to: r.parse().unwrap(),
        via: None,
        metric: None,
        table: None,
      })
      .collect(),
    offload,
    ..Default::default()
  }
}

type Side = (&'static [&'static str], &'static [&'static str]);
const A_SIDE: Side = (&["10.50.0.1/24", "fd50::1/64"], &["10.60.0.0/24", "fd60::/64"]);
const B_SIDE: Side = (&["10.60.0.1/24", "fd60::1/64"], &["10.50.0.0/24", "fd50::/64"]);

impl Link {
  /// Opens both devices (`tweak` runs on the queues before forwarding starts) and forwards with batches of at
  /// most `batch_packets` packets in slabs of `slab_bytes` plus one frame.
  fn open(
    offload: Option<Offload>,
    batch_packets: usize,
    slab_bytes: usize,
    tweak: impl FnOnce(&TunQueue, &TunQueue),
  ) -> Link {
    let ns_b = thread::spawn(|| {
      sys::unshare_netns().unwrap();
      File::open("/proc/thread-self/ns/net").unwrap()
    })
    .join()
    .unwrap();
    let (mut qa, ca) = super::super::create(&offload_cfg("tkoa", A_SIDE.0, A_SIDE.1, offload)).unwrap();
    let (mut qb, cb) = run_in_netns(ns_b.as_fd(), "test", || {
      super::super::create(&offload_cfg("tkob", B_SIDE.0, B_SIDE.1, offload))
    })
    .unwrap();
    let (a, b) = (qa.remove(0), qb.remove(0));
    tweak(&a, &b);
    let (a, b) = (Arc::new(a), Arc::new(b));
    let forward = |from: Arc<TunQueue>, to: Arc<TunQueue>| {
      thread::spawn(move || {
        let mut batch = Batch::with_capacity(slab_bytes + from.max_frame(), batch_packets);
        loop {
          batch.clear();
          if from.read_batch(&mut batch, batch_packets).is_err() {
            break;
          }
          assert!(batch.len() <= batch_packets, "{} > {batch_packets}", batch.len());
          match to.write_batch(&batch) {
            Ok(r) => assert_eq!(r.errors, 0, "{:?}", r.last_error),
            Err(_) => break,
          }
        }
      })
    };
    let forwarders = vec![forward(a.clone(), b.clone()), forward(b.clone(), a.clone())];
    Link {
      a,
      b,
      ns_b,
      forwarders,
      _controls: (ca, cb),
    }
  }

  fn stop(mut self) {
    self.a.wake();
    self.b.wake();
    for t in self.forwarders.drain(..) {
      t.join().expect("a forwarder panicked");
    }
  }
}

fn counter(q: &TunQueue, name: &str) -> u64 {
  q.counters()
    .iter()
    .find(|(n, _)| *n == name)
    .unwrap_or_else(|| panic!("no counter {name}"))
    .1
}

/// Deterministic test data.
fn fill(buf: &mut [u8], state: &mut u64) {
  for b in buf {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *b = *state as u8;
  }
}

/// Sends `total` bytes of deterministic data over TCP (IPv4 or IPv6) from namespace A to a receiver in B through
/// `link`. The receiver generates the same stream and compares every byte; returns how many arrived, all equal.
fn tcp_transfer_to(link: &Link, total: usize, v6: bool) -> usize {
  const SEED: u64 = 0x9e37_79b9_7f4a_7c15;
  let listener = run_in_netns(link.ns_b.as_fd(), "test", || {
    TcpListener::bind(if v6 { "[fd60::1]:0" } else { "10.60.0.1:0" })
      .map_err(|e| Error::os("bind", &e, "test listener"))
  })
  .unwrap();
  let addr = listener.local_addr().unwrap();
  let receiver = thread::spawn(move || {
    let (mut conn, _) = listener.accept().unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut want = vec![0u8; 256 * 1024];
    let mut state = SEED;
    let mut n = 0;
    loop {
      match conn.read(&mut buf) {
        Ok(0) => break,
        Ok(k) => {
          fill(&mut want[..k], &mut state);
          if let Some(i) = (0..k).find(|&i| buf[i] != want[i]) {
            panic!(
              "byte {} differs: got {:#04x}, sent {:#04x}",
              n + i,
              buf[i],
              want[i]
            );
          }
          n += k;
        }
        Err(e) => panic!("receiver after {n} bytes: {e}"),
      }
    }
    n
  });
  let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
  conn.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
  let mut chunk = vec![0u8; 1 << 20];
  let mut state = SEED;
  let mut sent = 0;
  while sent < total {
    let k = chunk.len().min(total - sent);
    fill(&mut chunk[..k], &mut state);
    conn.write_all(&chunk[..k]).unwrap();
    sent += k;
  }
  conn.shutdown(std::net::Shutdown::Write).unwrap();
  receiver
    .join()
    .expect("the receiver found a difference or timed out")
}

fn tcp_transfer(link: &Link, total: usize) -> usize {
  tcp_transfer_to(link, total, false)
}

const TCP_OFFLOAD: Offload = Offload {
  tcp: true,
  udp: true,
  raw: false,
};

#[test]
fn linux_offload_tcp_through_a_splitting_and_coalescing_forwarder_is_byte_exact() {
  in_netns("linux_offload_tcp_split_coalesce", || {
    let link = Link::open(Some(TCP_OFFLOAD), 256, 256 * 1024, |_, _| {});
    assert_eq!(link.a.max_frame(), TUN_MAX_FRAME);
    assert_eq!(tcp_transfer(&link, 16 << 20), 16 << 20);
    let v4 = counter(&link.a, "offloadSuperPacketsRead");
    assert_eq!(tcp_transfer_to(&link, 8 << 20, true), 8 << 20);
    assert!(
      counter(&link.a, "offloadSuperPacketsRead") > v4,
      "no TCPv6 super-packet"
    );
    let (a, b) = (link.a.clone(), link.b.clone());
    link.stop();
    eprintln!("a: {:?}\nb: {:?}", a.counters(), b.counters());
    assert_eq!((counter(&a, "offloadTcp"), counter(&b, "offloadTcp")), (1, 1));
    // The sender's kernel handed super-packets to a; they were split, forwarded, and coalesced again into b.
    let read = counter(&a, "offloadSuperPacketsRead");
    assert!(read > 0, "{:?}", a.counters());
    assert!(counter(&a, "offloadSegmentsRead") > read);
    assert!(
      counter(&b, "offloadSuperPacketsWritten") > 0,
      "{:?}",
      b.counters()
    );
    assert!(counter(&b, "offloadSegmentsCoalesced") > counter(&b, "offloadSuperPacketsWritten"));
    for q in [&a, &b] {
      assert_eq!(counter(q, "offloadFallbacks"), 0);
      assert_eq!(counter(q, "offloadReadErrors"), 0);
      assert_eq!(q.take_notice(), None);
    }
  });
}

#[test]
fn linux_offload_write_fallback_loses_nothing_and_says_so_once() {
  in_netns("linux_offload_write_fallback", || {
    // Small batches in small slabs: super-packets also go through the overflow and left-over paths.
    let link = Link::open(Some(TCP_OFFLOAD), 16, 16 * 1024, |_, b| {
      b.fail_next_offload_write()
    });
    assert_eq!(tcp_transfer(&link, 8 << 20), 8 << 20);
    let (a, b) = (link.a.clone(), link.b.clone());
    link.stop();
    assert!(counter(&a, "offloadSuperPacketsRead") > 0, "{:?}", a.counters());
    eprintln!("a: {:?}\nb: {:?}", a.counters(), b.counters());
    assert_eq!(counter(&b, "offloadFallbacks"), 1);
    // The refused write was the first; after it nothing is coalesced any more.
    assert_eq!(counter(&b, "offloadSuperPacketsWritten"), 0, "{:?}", b.counters());
    let notice = b.take_notice().expect("a notice about the fallback");
    assert!(
      notice.starts_with("offload: ") && notice.contains("refused") && notice.contains("os error 22"),
      "{notice}"
    );
    assert_eq!(b.take_notice(), None, "the notice comes once");
    assert_eq!((counter(&a, "offloadFallbacks"), a.take_notice()), (0, None));
  });
}

#[test]
fn linux_offload_raw_frames_pass_through_a_forwarder() {
  in_netns("linux_offload_raw", || {
    let raw = Offload {
      raw: true,
      ..TCP_OFFLOAD
    };
    let link = Link::open(Some(raw), 256, 256 * 1024, |a, _| {
      assert_eq!(a.max_frame(), TUN_MAX_FRAME + VNET_HDR_LEN);
    });
    assert_eq!(tcp_transfer(&link, 8 << 20), 8 << 20);
    let (a, b) = (link.a.clone(), link.b.clone());
    link.stop();
    assert!(counter(&a, "offloadSuperPacketsRead") > 0, "{:?}", a.counters());
    assert!(
      counter(&b, "offloadSuperPacketsWritten") > 0,
      "{:?}",
      b.counters()
    );
    // Raw mode neither splits nor coalesces.
    assert_eq!(counter(&a, "offloadSegmentsRead"), 0);
    assert_eq!(counter(&b, "offloadSegmentsCoalesced"), 0);
  });
}

#[test]
fn linux_offload_raw_write_fallback_resends_the_segments() {
  in_netns("linux_offload_raw_fallback", || {
    let raw = Offload {
      raw: true,
      ..TCP_OFFLOAD
    };
    let link = Link::open(Some(raw), 64, 128 * 1024, |_, b| b.fail_next_offload_write());
    assert_eq!(tcp_transfer(&link, 4 << 20), 4 << 20);
    let b = link.b.clone();
    link.stop();
    assert_eq!(counter(&b, "offloadFallbacks"), 1);
    assert!(b.take_notice().is_some());
  });
}

#[test]
fn linux_offload_uso_datagrams_are_split_and_coalesced() {
  in_netns("linux_offload_uso", || {
    let link = Link::open(Some(TCP_OFFLOAD), 256, 256 * 1024, |_, _| {});
    if counter(&link.a, "offloadUdp") == 0 {
      eprintln!("skipping the USO part: this kernel has no UDP segmentation offload (Linux 6.2+)");
      link.stop();
      return;
    }
    let rx = run_in_netns(link.ns_b.as_fd(), "test", || {
      UdpSocket::bind("10.60.0.1:0").map_err(|e| Error::os("bind", &e, "test socket"))
    })
    .unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let tx = UdpSocket::bind("10.50.0.1:0").unwrap();
    sys::set_udp_segment(tx.as_fd(), 1200).unwrap();
    let mut state = 7u64;
    let mut want = Vec::new();
    for _ in 0..8 {
      // 10 datagrams of 1200 bytes and one of 500 per send.
      let mut buf = vec![0u8; 12_500];
      fill(&mut buf, &mut state);
      tx.send_to(&buf, rx.local_addr().unwrap()).unwrap();
      want.extend(buf.chunks(1200).map(|c| c.to_vec()));
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while got.len() < want.len() {
      let (n, _) = rx
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("after {} of {} datagrams: {e}", got.len(), want.len()));
      got.push(buf[..n].to_vec());
    }
    assert_eq!(got, want);
    let (a, b) = (link.a.clone(), link.b.clone());
    link.stop();
    assert!(counter(&a, "offloadSuperPacketsRead") >= 8, "{:?}", a.counters());
    assert!(counter(&a, "offloadSegmentsRead") >= 88, "{:?}", a.counters());
    assert!(
      counter(&b, "offloadSuperPacketsWritten") > 0,
      "{:?}",
      b.counters()
    );
  });
}

#[test]
fn linux_offload_plain_packets_both_ways_and_adopted_vnet_descriptors() {
  in_netns("linux_offload_plain_and_adopted", || {
    // An adopted descriptor with virtio-net headers runs in split mode: plain packets in and out.
    let fd = tun::open_clone_device().unwrap();
    tun::set_iff(
      fd.as_fd(),
      "tk-vfd",
      tun::IFF_TUN | tun::IFF_NO_PI | tun::IFF_VNET_HDR,
    )
    .unwrap();
    tun::set_vnet_hdr_size(fd.as_fd(), 12).unwrap();
    let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
    let e = super::super::from_fd(raw, Mode::Tun).err().unwrap();
    assert!(e.message().contains("12-byte virtio-net header"), "{e}");
    // Refused: the descriptor is still the caller's.
    let fd = sys::adopt_raw_fd(raw).unwrap();
    tun::set_vnet_hdr_size(fd.as_fd(), 10).unwrap();
    // TUNSETOFFLOAD with checksum offload: locally sent packets arrive with NEEDS_CSUM, which the reader completes.
    tun::set_offload(fd.as_fd(), tun::TUN_F_CSUM).unwrap();
    let opened = super::super::from_fd(std::os::fd::IntoRawFd::into_raw_fd(fd), Mode::Tun).unwrap();
    opened
      .control
      .add_address(&"10.79.0.1/24".parse().unwrap())
      .unwrap();
    opened.control.set_up(true).unwrap();
    let queue: Arc<dyn Queue> = Arc::from(opened.queues.into_iter().next().unwrap());
    let _stop = watchdog(&queue, Duration::from_secs(10));
    assert!(queue.counters().contains(&("offloadTcp", 1)));

    let sock = UdpSocket::bind("10.79.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let port = sock.local_addr().unwrap().port();
    let mut out = Batch::default();
    out.push(&ipv4_udp([10, 79, 0, 2], [10, 79, 0, 1], 5555, port, b"in"));
    let report = queue.write_batch(&out).unwrap();
    assert_eq!((report.packets, report.errors), (1, 0), "{report:?}");
    assert_eq!(report.bytes, out.data.len() as u64);
    let mut buf = [0u8; 64];
    let (n, _) = sock
      .recv_from(&mut buf)
      .expect("the written packet did not arrive");
    assert_eq!(&buf[..n], b"in");

    sock.send_to(b"out", "10.79.0.2:4242").unwrap();
    let mut batch = Batch::with_capacity(2 * TUN_MAX_FRAME, 8);
    let mut found = None;
    for _ in 0..20 {
      batch.clear();
      queue.read_batch(&mut batch, 8).unwrap();
      if let Some(p) = batch.iter().find(|p| udp_payload_to(p, [10, 79, 0, 2]).is_some()) {
        found = Some(p.to_vec());
        break;
      }
    }
    let p = found.expect("the UDP datagram was not read");
    assert_eq!(udp_payload_to(&p, [10, 79, 0, 2]), Some(&b"out"[..]));
    // A complete, valid UDP checksum, though with TUN_F_CSUM the kernel left it partial.
    assert_ne!(&p[26..28], &[0, 0], "no UDP checksum: {p:02x?}");
    assert!(crate::packet::ip::checksums_valid(&p).unwrap(), "{p:02x?}");
  });
}

#[test]
fn linux_offload_multi_queue_descriptors_all_carry_headers() {
  in_netns("linux_offload_multi_queue", || {
    let (queues, _control) = super::super::create(&DeviceConfig {
      queues: Some(3),
      offload: Some(TCP_OFFLOAD),
      ..offload_cfg("tk-omq", &["10.81.0.1/24"], &["10.82.0.0/24"], None)
    })
    .unwrap();
    for q in &queues {
      let (_, flags) = tun::get_iff(q.fd().as_raw_fd()).unwrap();
      assert_ne!(flags & tun::IFF_VNET_HDR, 0, "{flags:#x}");
      assert_eq!(tun::get_vnet_hdr_size(q.fd().as_raw_fd()).unwrap(), VNET_HDR_LEN);
      assert!(q.counters().contains(&("offloadTcp", 1)));
      assert_eq!(q.take_notice(), None);
    }
    // TAP devices take offload in raw mode only; frames then carry the header too.
    let (taps, _control) = super::super::create(&DeviceConfig {
      name: Some("tk-otap".into()),
      mode: Mode::Tap,
      offload: Some(Offload {
        raw: true,
        ..TCP_OFFLOAD
      }),
      ..Default::default()
    })
    .unwrap();
    let (_, flags) = tun::get_iff(taps[0].fd().as_raw_fd()).unwrap();
    assert_eq!(
      flags & (tun::IFF_TAP | tun::IFF_VNET_HDR),
      tun::IFF_TAP | tun::IFF_VNET_HDR
    );
    assert_eq!(taps[0].max_frame(), TAP_MAX_FRAME + VNET_HDR_LEN);
    // Without offload nothing changes: no header, no counters.
    let (plain, _control) = super::super::create(&offload_cfg("tk-onone", &[], &[], None)).unwrap();
    let (_, flags) = tun::get_iff(plain[0].fd().as_raw_fd()).unwrap();
    assert_eq!(flags & tun::IFF_VNET_HDR, 0);
    assert!(plain[0].counters().is_empty());
    assert_eq!(plain[0].max_frame(), TUN_MAX_FRAME);
  });
}
