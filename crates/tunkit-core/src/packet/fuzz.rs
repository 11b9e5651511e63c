//! Seeded, time-bounded fuzz tests run by `cargo test`: random and mutated super-packets through
//! `gso::split`, random and mutated batches through `gro::coalesce` and back. Each test stops after
//! `MAX_INPUTS` inputs or `TIME_BUDGET`, whichever comes first (debug builds get through fewer), and prints
//! how many it tried.

use std::time::{Duration, Instant};

use super::build::{self, IpFields, TcpFields};
use super::gro::tests::{by_flow, split_all};
use super::gro::{Coalescer, GroOptions};
use super::gso::{self, tests::make_super};
use super::ip::{checksums_valid, Packet};
use super::testutil::{assert_checksums_ok, Rng};
use super::virtio::{self, Endian, VirtioNetHdr};
use super::{proto, put16};
use crate::backend::Batch;

const MAX_INPUTS: usize = 200_000;
const TIME_BUDGET: Duration = Duration::from_secs(3);

fn seed() -> u64 {
  // Fixed by default so failures reproduce; TUNKIT_FUZZ_SEED explores other sequences.
  std::env::var("TUNKIT_FUZZ_SEED")
    .ok()
    .and_then(|s| s.parse().ok())
    .unwrap_or(0x7475_6e6b_6974)
}

fn addrs(rng: &mut Rng, v6: bool) -> IpFields {
  let mut ip = if v6 {
    let a = rng.next() as u128 | (rng.next() as u128) << 64;
    let b = rng.next() as u128 | (rng.next() as u128) << 64;
    IpFields::new(
      std::net::Ipv6Addr::from(a).into(),
      std::net::Ipv6Addr::from(b).into(),
    )
  } else {
    IpFields::new(
      std::net::Ipv4Addr::from(rng.next() as u32).into(),
      std::net::Ipv4Addr::from(rng.next() as u32).into(),
    )
  };
  ip.ttl = rng.next() as u8;
  ip.tos = rng.next() as u8;
  ip.id = if rng.one_in(4) { 0 } else { rng.next() as u16 };
  ip.dont_fragment = !rng.one_in(4);
  ip.flow_label = rng.next() as u32 & 0xf_ffff;
  ip
}

/// Mostly small sizes (fast in debug builds), sometimes up to the 64 KiB limit.
fn payload_len(rng: &mut Rng, max: usize) -> usize {
  match rng.below(10) {
    0 => rng.below(max as u64 + 1) as usize,
    1..=3 => rng.below(8) as usize,
    _ => rng.below(1200.min(max as u64 + 1)) as usize,
  }
}

fn tcp_options(rng: &mut Rng) -> Vec<u8> {
  let words = if rng.one_in(2) { 0 } else { rng.below(11) as usize };
  rng.bytes(4 * words)
}

/// A valid packet the kernel could have built a super-packet from: IPv4/IPv6, TCP/UDP, sometimes an IPv6
/// hop-by-hop header.
fn random_packet(rng: &mut Rng) -> Vec<u8> {
  let v6 = rng.one_in(2);
  let ip = addrs(rng, v6);
  let tcp = rng.one_in(2);
  let hbh = v6 && rng.one_in(6);
  let max = 65535 - 40 - 60 - if hbh { 8 } else { 0 };
  let len = payload_len(rng, max);
  let payload = rng.bytes(len);
  let mut pkt = if tcp {
    let opts = tcp_options(rng);
    let t = TcpFields {
      src_port: rng.next() as u16,
      dst_port: rng.next() as u16,
      seq: rng.next() as u32,
      ack: rng.next() as u32,
      flags: rng.next() as u8,
      window: rng.next() as u16,
      urgent: 0,
      options: &opts,
    };
    build::tcp(&ip, &t, &payload).unwrap()
  } else {
    build::udp(&ip, rng.next() as u16, rng.next() as u16, &payload).unwrap()
  };
  if hbh {
    let next = pkt[6];
    pkt[6] = proto::HOPOPTS;
    pkt.splice(40..40, [next, 0, 1, 4, 0, 0, 0, 0]);
    let len = (pkt.len() - 40) as u16;
    put16(&mut pkt, 4, len);
  }
  pkt
}

fn mutate(rng: &mut Rng, hdr: &mut VirtioNetHdr, pkt: &mut Vec<u8>) {
  for _ in 0..1 + rng.below(3) {
    match rng.below(9) {
      0..=2 if !pkt.is_empty() => {
        // Mostly in the headers, where it matters.
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
      5 => {
        let n = 1 + rng.below(16) as usize;
        pkt.extend(rng.bytes(n));
      }
      6 => hdr.gso_size = if rng.one_in(3) { 0 } else { rng.next() as u16 },
      7 => {
        hdr.gso_type = [0, 1, 3, 4, 5, 0x81, 0x84, 0x85, rng.next() as u8][rng.below(9) as usize];
      }
      _ => match rng.below(4) {
        0 => hdr.hdr_len = rng.next() as u16,
        1 => hdr.csum_start = rng.below(120) as u16,
        2 => hdr.csum_offset = rng.below(24) as u16,
        _ => hdr.flags = rng.next() as u8,
      },
    }
  }
}

#[test]
fn fuzz_split() {
  let mut rng = Rng::new(seed());
  let start = Instant::now();
  let (mut n, mut ok, mut segments) = (0usize, 0usize, 0usize);
  let mut out = Batch::default();
  while n < MAX_INPUTS && start.elapsed() < TIME_BUDGET {
    n += 1;
    let pkt = random_packet(&mut rng);
    let gso_size = match rng.below(4) {
      0 => 1 + rng.below(64) as u16,
      _ => 1 + rng.below(1500) as u16,
    };
    let (mut hdr, mut sp) = make_super(&pkt, gso_size);
    let mutated = !rng.one_in(4);
    if mutated {
      mutate(&mut rng, &mut hdr, &mut sp);
    }
    if rng.one_in(8) {
      // The checksum-only path (GSO_NONE + NEEDS_CSUM), from an intact packet.
      hdr.gso_type = virtio::VIRTIO_NET_HDR_GSO_NONE;
    }
    out.clear();
    let planned = gso::plan(&hdr, &sp);
    let res = gso::split(&hdr, &sp, &mut out);
    match (&planned, &res) {
      (Ok(p), Ok(k)) => {
        assert_eq!((p.segments, p.bytes), (*k, out.data.len()), "plan matches split");
      }
      (Err(_), Err(e)) => {
        assert_eq!(e.kind(), crate::error::ErrorKind::InvalidPacket);
        assert!(out.is_empty(), "nothing appended on error");
        continue;
      }
      _ => panic!("plan and split disagree: {planned:?} vs {res:?}"),
    }
    ok += 1;
    if !mutated && hdr.gso_type == virtio::VIRTIO_NET_HDR_GSO_NONE {
      assert_checksums_ok(&out.data);
    }
    if hdr.gso_kind() == virtio::VIRTIO_NET_HDR_GSO_NONE {
      continue;
    }
    // Any segmented output is a well-formed packet with valid checksums, no bigger than headers + gso_size.
    for s in out.iter() {
      segments += 1;
      let p = Packet::parse(s).unwrap_or_else(|e| panic!("segment does not parse: {e}"));
      assert_eq!(p.ip_len, s.len());
      assert!(p.payload.len() <= hdr.gso_size as usize);
      assert!(checksums_valid(s).unwrap(), "segment checksums");
      if n % 64 == 0 {
        assert_checksums_ok(s);
      }
    }
    if !mutated {
      // Intact input: the segments' payloads concatenate to the original payload.
      let orig = Packet::parse(&pkt).unwrap();
      let mut joined = Vec::new();
      for s in out.iter() {
        joined.extend_from_slice(&s[Packet::parse(s).unwrap().payload]);
      }
      assert_eq!(joined, &pkt[orig.payload]);
    }
  }
  eprintln!(
    "fuzz split: {n} inputs ({ok} accepted, {segments} segments) in {:?}",
    start.elapsed()
  );
  assert!(
    ok > n / 10,
    "the fuzzer should mostly produce acceptable inputs, got {ok} of {n}"
  );
}

/// Parameters of one synthetic flow.
struct FlowGen {
  ip: IpFields,
  tcp: bool,
  sport: u16,
  dport: u16,
  seq: u32,
  ack: u32,
  options: Vec<u8>,
  mss: usize,
  index: u16,
}

impl FlowGen {
  fn new(rng: &mut Rng) -> FlowGen {
    let v6 = rng.one_in(2);
    let mut ip = addrs(rng, v6);
    if rng.one_in(2) {
      // Realistic ids: DF with an incrementing id, or DF with 0.
      ip.dont_fragment = true;
    }
    FlowGen {
      ip,
      tcp: !rng.one_in(3),
      sport: rng.next() as u16,
      dport: rng.next() as u16,
      seq: rng.next() as u32,
      ack: rng.next() as u32,
      options: if rng.one_in(2) {
        vec![1, 1, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8]
      } else {
        vec![]
      },
      mss: match rng.below(3) {
        0 => 1 + rng.below(16) as usize,
        _ => 1 + rng.below(1400) as usize,
      },
      index: 0,
    }
  }

  /// The flow's next packet: mostly a full segment, sometimes shorter, empty, with PSH/FIN, or out of
  /// sequence.
  fn next_packet(&mut self, rng: &mut Rng) -> Vec<u8> {
    let mut ip = self.ip.clone();
    ip.id = if ip.dont_fragment && self.ip.id == 0 {
      0
    } else {
      self.ip.id.wrapping_add(self.index)
    };
    self.index = self.index.wrapping_add(1);
    let len = match rng.below(12) {
      0 => rng.below(self.mss as u64) as usize,
      1 => 0,
      _ => self.mss,
    };
    let payload = rng.bytes(len);
    if !self.tcp {
      return build::udp(&ip, self.sport, self.dport, &payload).unwrap();
    }
    let flags = match rng.below(16) {
      0 => 0x18,
      1 => 0x11,
      2 => 0x50,
      3 => 0x90,
      _ => 0x10,
    };
    if rng.one_in(20) {
      self.seq = self.seq.wrapping_add(1);
    }
    let t = TcpFields {
      src_port: self.sport,
      dst_port: self.dport,
      seq: self.seq,
      ack: self.ack,
      flags,
      window: 4096,
      urgent: 0,
      options: &self.options,
    };
    self.seq = self.seq.wrapping_add(len as u32);
    build::tcp(&ip, &t, &payload).unwrap()
  }
}

#[test]
fn fuzz_coalesce_round_trip() {
  let mut rng = Rng::new(seed() ^ 0x5eed);
  let start = Instant::now();
  let (mut batches, mut packets, mut merged) = (0usize, 0usize, 0usize);
  let mut coalescer = Coalescer::new();
  let mut input = Batch::default();
  let mut out = Batch::default();
  while packets < MAX_INPUTS && start.elapsed() < TIME_BUDGET {
    batches += 1;
    let mut flows: Vec<FlowGen> = (0..1 + rng.below(4)).map(|_| FlowGen::new(&mut rng)).collect();
    let count = 1 + rng.below(64) as usize;
    let mut pkts: Vec<Vec<u8>> = Vec::with_capacity(count);
    // Long runs of one flow, sometimes switching: coalescible but interleaved.
    let mut cur = 0;
    for _ in 0..count {
      if rng.one_in(4) {
        cur = rng.below(flows.len() as u64) as usize;
      }
      pkts.push(flows[cur].next_packet(&mut rng));
    }
    // Damage a few: random byte flips, truncation, garbage, duplicates.
    if rng.one_in(3) {
      for _ in 0..1 + rng.below(3) {
        let i = rng.below(pkts.len() as u64) as usize;
        match rng.below(4) {
          0 if !pkts[i].is_empty() => {
            let j = rng.below(pkts[i].len() as u64) as usize;
            pkts[i][j] ^= 1 << rng.below(8);
          }
          1 => {
            let n = rng.below(pkts[i].len() as u64 + 1) as usize;
            pkts[i].truncate(n);
          }
          2 => {
            let n = rng.below(80) as usize;
            pkts.insert(i, rng.bytes(n));
          }
          _ => pkts.insert(i, pkts[i].clone()),
        }
      }
    }
    let opts = GroOptions {
      tcp: !rng.one_in(8),
      udp: !rng.one_in(3),
      max_udp_segments: 1 + rng.below(70) as usize,
      endian: if rng.one_in(2) {
        Endian::Little
      } else {
        Endian::Big
      },
    };
    input.clear();
    for p in &pkts {
      input.push(p);
    }
    out.clear();
    let stats = coalescer.coalesce(&input, &opts, &mut out).unwrap();
    packets += pkts.len();
    merged += stats.coalesced;
    assert_eq!(stats.packets_in, pkts.len());
    assert_eq!(stats.packets_out, out.len());
    let back = split_all(&out, &opts);
    assert_eq!(back.len(), pkts.len(), "packet count survives");
    assert_eq!(by_flow(&back), by_flow(&pkts), "split(coalesce(x)) == x per flow");
    if stats.super_packets == 0 {
      assert_eq!(back, pkts, "without merging nothing moves");
    }
  }
  eprintln!(
    "fuzz coalesce round trip: {packets} packets in {batches} batches ({merged} merged) in {:?}",
    start.elapsed()
  );
  assert!(
    merged > packets / 4,
    "the generator should produce coalescible traffic: {merged} of {packets}"
  );
}

#[test]
fn fuzz_coalesce_garbage() {
  // Arbitrary bytes shaped like IP: coalesce must never panic and must always be undoable.
  let mut rng = Rng::new(seed() ^ 0x6a7b);
  let start = Instant::now();
  let mut n = 0usize;
  let mut input = Batch::default();
  let mut out = Batch::default();
  let opts = GroOptions {
    udp: true,
    ..GroOptions::default()
  };
  while n < MAX_INPUTS && start.elapsed() < TIME_BUDGET / 3 {
    input.clear();
    let base = random_packet(&mut rng);
    for _ in 0..1 + rng.below(16) {
      let mut p = base.clone();
      let mut hdr = VirtioNetHdr::default();
      mutate(&mut rng, &mut hdr, &mut p);
      input.push(&p);
      n += 1;
    }
    out.clear();
    let stats = super::gro::coalesce(&input, &opts, &mut out).unwrap();
    let back = split_all(&out, &opts);
    let pkts: Vec<Vec<u8>> = input.iter().map(|p| p.to_vec()).collect();
    assert_eq!(by_flow(&back), by_flow(&pkts));
    assert_eq!(stats.packets_in, pkts.len());
  }
  eprintln!("fuzz coalesce garbage: {n} inputs in {:?}", start.elapsed());
}
