//! GRO coalesce: the write side of offload. Consecutive segments of one TCP or UDP flow in a batch become one
//! super-packet with a [`VirtioNetHdr`] asking the kernel to treat it as `gso_size`-sized segments, so one
//! `write()` carries many packets. [`gso::split`](super::gso::split) is the exact inverse:
//! `split(coalesce(x)) == x`, packet for packet and byte for byte, for every flow.
//!
//! A packet joins the super-packet its flow has open when all of this holds (else it closes that super-packet
//! and starts a new one or passes through alone):
//!
//! - same flow: family, addresses, protocol, ports; no IPv4 options, no IPv6 extension headers, not a
//!   fragment, IP length equal to the packet length;
//! - same IP fields: IPv4 TOS, DF, TTL and identification equal to the first one's plus its index (or 0 for
//!   all when the first is 0 with DF set; this is what `split` reproduces); IPv6 traffic class, flow label,
//!   hop limit;
//! - TCP: sequence number right after the previous segment; same acknowledgment, window, urgent pointer,
//!   header length and options bytes; flags equal except PSH, which ends the super-packet; ACK set and none
//!   of SYN/FIN/RST/URG/CWR; a payload;
//! - UDP (only with [`GroOptions::udp`], which needs the kernel's USO): a payload and a non-zero checksum; at
//!   most [`GroOptions::max_udp_segments`] segments (the kernel refuses more than `UDP_MAX_SEGMENTS`: 64 on
//!   older kernels, 128 on recent ones);
//! - payload no longer than the first one's (`gso_size`); a shorter one ends the super-packet; at most 65535
//!   bytes in all;
//! - correct checksums in the canonical form `split` produces (a packet whose checksum is wrong is passed
//!   through alone, so the kernel still drops it rather than trusting a `NEEDS_CSUM` super-packet).
//!
//! Output, one entry per write: the encoded 10-byte header, then the packet. A super-packet gets `NEEDS_CSUM`
//! with `csum_start` at the transport header, `csum_offset` 16 (TCP) or 6 (UDP), the pseudo-header sum over
//! its full length in the checksum field, `hdr_len` = IP + transport headers, and `GSO_TCPV4`/`GSO_TCPV6`/
//! `GSO_UDP_L4`. Every other packet is passed unchanged behind an all-zero header (`GSO_NONE`).
//!
//! Order: entries come out in the order of their first packet. A packet of a flow that cannot join closes the
//! flow's open super-packet, and a fragment or malformed TCP/UDP packet closes every super-packet between the
//! same addresses, so packets of one flow never overtake each other. Packets of different flows may:
//! `A1 B1 A2` gives `A1+A2, B1`.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::ip::{
  addr_bytes, ipv6_upper_layer, transport_checksum, Family, Ipv4Header, Ipv6Header, TcpHeader, UdpHeader,
};
use super::virtio::{self, Endian, VirtioNetHdr};
use super::{checksum, get16, get32, proto, put16};
use crate::backend::Batch;
use crate::error::{Error, ErrorKind, Result};

/// What to coalesce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroOptions {
  /// Coalesce TCP (the kernel accepts `GSO_TCPV4/6` once `TUNSETOFFLOAD` enabled `TUN_F_TSO4/6`).
  pub tcp: bool,
  /// Coalesce UDP into `GSO_UDP_L4` (needs `TUN_F_USO4/6`, Linux 6.2+).
  pub udp: bool,
  /// Most datagrams in one UDP super-packet.
  pub max_udp_segments: usize,
  /// Byte order of the emitted headers.
  pub endian: Endian,
}

impl Default for GroOptions {
  /// TCP on, UDP off, 64 UDP segments, native byte order.
  fn default() -> GroOptions {
    GroOptions {
      tcp: true,
      udp: false,
      max_udp_segments: 64,
      endian: Endian::NATIVE,
    }
  }
}

/// Counters of one [`Coalescer::coalesce`] call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroStats {
  /// Packets in the input batch.
  pub packets_in: usize,
  /// Entries written (super-packets plus packets passed through).
  pub packets_out: usize,
  /// Super-packets written.
  pub super_packets: usize,
  /// Input packets that went into super-packets.
  pub coalesced: usize,
}

/// Coalesces batches. Keeps its tables between calls so a writer thread allocates only while warming up.
#[derive(Debug, Default)]
pub struct Coalescer {
  items: Vec<Item>,
  /// Next member of the same item, by input index (`NONE` at the end).
  next: Vec<u32>,
  /// The open item of each flow.
  open: HashMap<FlowKey, u32, BuildHasherDefault<FlowHasher>>,
}

const NONE: u32 = u32::MAX;
/// Largest super-packet (whole IP packet).
const MAX_LEN: usize = 65535;

/// One output entry: a packet alone or a chain of packets to merge.
#[derive(Debug, Clone, Copy)]
struct Item {
  first: u32,
  last: u32,
  count: u32,
  /// Merge state; `None` for a packet that can take no followers.
  st: Option<Open>,
}

#[derive(Debug, Clone, Copy)]
struct Open {
  seg: Cand,
  /// Payload of the first packet: every follower's is at most this.
  gso_size: usize,
  /// Bytes of the merged packet so far.
  len: usize,
  next_seq: u32,
  fixed_id: bool,
  /// The last member had PSH (the super-packet then carries it).
  psh: bool,
  /// The first packet's checksums were found canonical (checked lazily, at the first merge).
  verified: bool,
}

/// A packet that could be part of a super-packet.
#[derive(Debug, Clone, Copy)]
struct Cand {
  tcp: bool,
  family: Family,
  l4: usize,
  hdr_len: usize,
  payload: usize,
  seq: u32,
  flags: u8,
  id: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FlowKey {
  v6: bool,
  protocol: u8,
  src: [u8; 16],
  dst: [u8; 16],
  ports: u32,
}

impl FlowKey {
  fn same_hosts(&self, o: &FlowKey) -> bool {
    self.v6 == o.v6 && self.protocol == o.protocol && self.src == o.src && self.dst == o.dst
  }
}

enum Class {
  /// Not TCP/UDP, or not parseable: no flow to keep in order.
  Unrelated,
  /// TCP/UDP without a usable transport header (a fragment, a malformed header): ordered against every flow
  /// between the same addresses (`ports` is 0).
  Loose(FlowKey),
  /// A TCP/UDP packet of a flow, and whether it may be merged.
  Flow(FlowKey, Option<Cand>),
}

/// Coalesces one batch with a fresh [`Coalescer`].
pub fn coalesce(input: &Batch, opts: &GroOptions, out: &mut Batch) -> Result<GroStats> {
  Coalescer::new().coalesce(input, opts, out)
}

impl Coalescer {
  pub fn new() -> Coalescer {
    Coalescer::default()
  }

  /// Coalesces the packets of `input` and appends one entry per write to `out` (header + packet). Errors only
  /// when `input` itself is inconsistent (its lengths do not add up to its data); bad packets pass through.
  pub fn coalesce(&mut self, input: &Batch, opts: &GroOptions, out: &mut Batch) -> Result<GroStats> {
    let total: u64 = input.lens.iter().map(|&l| l as u64).sum();
    if total != input.data.len() as u64 {
      return Err(Error::new(
        ErrorKind::InvalidArgument,
        format!(
          "batch lengths add up to {total} bytes but it holds {}",
          input.data.len()
        ),
      ));
    }
    let pkts: Vec<&[u8]> = input.iter().collect();
    Ok(self.coalesce_packets(&pkts, opts, out))
  }

  /// [`Coalescer::coalesce`] over packets wherever they are (no need to pack them into a batch first).
  pub fn coalesce_packets(&mut self, pkts: &[&[u8]], opts: &GroOptions, out: &mut Batch) -> GroStats {
    self.items.clear();
    self.open.clear();
    self.next.clear();
    self.next.resize(pkts.len(), NONE);

    for (i, &pkt) in pkts.iter().enumerate() {
      match classify(pkt, opts) {
        Class::Unrelated => self.push(i, None),
        Class::Loose(key) => {
          self.open.retain(|k, _| !k.same_hosts(&key));
          self.push(i, None);
        }
        Class::Flow(key, cand) => {
          if let Some(&it) = self.open.get(&key) {
            if let Some(c) = cand {
              match self.try_merge(pkts, opts, it as usize, i, &c) {
                Merge::Open => continue,
                Merge::Closed => {
                  self.open.remove(&key);
                  continue;
                }
                Merge::No => {}
              }
            }
            self.open.remove(&key);
          }
          // PSH ends a TCP super-packet, so a packet carrying it cannot start one.
          let st = cand
            .filter(|c| !(c.tcp && c.flags & TcpHeader::PSH != 0))
            .map(|c| Open {
              seg: c,
              gso_size: c.payload,
              len: c.hdr_len + c.payload,
              next_seq: c.seq.wrapping_add(c.payload as u32),
              fixed_id: c.family == Family::V4 && c.id == 0 && get16(pkt, 6) & Ipv4Header::DF != 0,
              psh: false,
              verified: false,
            });
          if st.is_some() {
            self.open.insert(key, self.items.len() as u32);
          }
          self.push(i, st);
        }
      }
    }

    let mut stats = GroStats {
      packets_in: pkts.len(),
      ..GroStats::default()
    };
    for item in &self.items {
      match item.st {
        Some(st) if item.count > 1 => {
          write_super(pkts, &self.next, item, &st, opts.endian, out);
          stats.super_packets += 1;
          stats.coalesced += item.count as usize;
        }
        _ => {
          let pkt = pkts[item.first as usize];
          let at = out.data.len();
          out
            .data
            .extend_from_slice(&VirtioNetHdr::default().encode_with(opts.endian));
          out.data.extend_from_slice(pkt);
          out.lens.push((out.data.len() - at) as u32);
        }
      }
      stats.packets_out += 1;
    }
    stats
  }

  fn push(&mut self, i: usize, st: Option<Open>) {
    self.items.push(Item {
      first: i as u32,
      last: i as u32,
      count: 1,
      st,
    });
  }

  /// Tries to append packet `i` (candidate `c`) to item `it`.
  fn try_merge(&mut self, pkts: &[&[u8]], opts: &GroOptions, it: usize, i: usize, c: &Cand) -> Merge {
    let item = self.items[it];
    let Some(mut st) = item.st else { return Merge::No };
    let f = &st.seg;
    let first = pkts[item.first as usize];
    let pkt = pkts[i];
    let count = item.count as usize;
    // IPv4 identification that `split` would give this segment.
    let want_id = if st.fixed_id {
      0
    } else {
      f.id.wrapping_add(count as u16)
    };
    let fits = c.tcp == f.tcp
      && c.hdr_len == f.hdr_len
      && c.payload <= st.gso_size
      && st.len + c.payload <= MAX_LEN
      && (c.tcp || count < opts.max_udp_segments)
      && (!c.tcp || c.seq == st.next_seq)
      && match c.family {
        Family::V4 => first[1] == pkt[1] && first[6..9] == pkt[6..9] && c.id == want_id,
        Family::V6 => first[0..4] == pkt[0..4] && first[7] == pkt[7],
      }
      && (!c.tcp || same_tcp_fields(&first[f.l4..f.hdr_len], &pkt[f.l4..f.hdr_len]));
    if !fits {
      return Merge::No;
    }
    if !st.verified {
      if !canonical_checksums(first, f) {
        // The first packet goes out alone, unmerged; this one may start afresh.
        self.items[it].st = None;
        return Merge::No;
      }
      st.verified = true;
    }
    if !canonical_checksums(pkt, c) {
      self.items[it].st = Some(st);
      return Merge::No;
    }
    self.next[item.last as usize] = i as u32;
    st.len += c.payload;
    st.next_seq = st.next_seq.wrapping_add(c.payload as u32);
    st.psh = c.tcp && c.flags & TcpHeader::PSH != 0;
    let closed = st.psh || c.payload < st.gso_size;
    self.items[it] = Item {
      first: item.first,
      last: i as u32,
      count: item.count + 1,
      st: Some(st),
    };
    if closed {
      Merge::Closed
    } else {
      Merge::Open
    }
  }
}

enum Merge {
  /// Not merged; the flow's item is to be closed.
  No,
  /// Merged, more may follow.
  Open,
  /// Merged as the last segment.
  Closed,
}

fn classify(pkt: &[u8], opts: &GroOptions) -> Class {
  let Some(family) = Family::of(pkt) else {
    return Class::Unrelated;
  };
  let mut src = [0u8; 16];
  let mut dst = [0u8; 16];
  let (protocol, l4, total, fragment, plain_ip) = match family {
    Family::V4 => {
      let Ok(h) = Ipv4Header::parse(pkt) else {
        return Class::Unrelated;
      };
      src[..4].copy_from_slice(&pkt[12..16]);
      dst[..4].copy_from_slice(&pkt[16..20]);
      (
        h.protocol(),
        h.header_len(),
        h.total_len() as usize,
        h.is_fragment(),
        h.header_len() == Ipv4Header::MIN_LEN,
      )
    }
    Family::V6 => {
      let Ok(h) = Ipv6Header::parse(pkt) else {
        return Class::Unrelated;
      };
      let Ok(up) = ipv6_upper_layer(&pkt[..h.total_len()]) else {
        return Class::Unrelated;
      };
      src.copy_from_slice(&pkt[8..24]);
      dst.copy_from_slice(&pkt[24..40]);
      (
        up.protocol,
        up.offset,
        h.total_len(),
        up.fragment,
        up.offset == Ipv6Header::LEN,
      )
    }
  };
  if protocol != proto::TCP && protocol != proto::UDP {
    return Class::Unrelated;
  }
  let mut key = FlowKey {
    v6: family == Family::V6,
    protocol,
    src,
    dst,
    ports: 0,
  };
  if fragment {
    return Class::Loose(key);
  }
  let seg = &pkt[l4..total];
  let tcp = protocol == proto::TCP;
  let l4_hdr = if tcp {
    match TcpHeader::parse(seg) {
      Ok(t) => t.header_len(),
      Err(_) => return Class::Loose(key),
    }
  } else {
    match UdpHeader::parse(seg) {
      Ok(_) => UdpHeader::LEN,
      Err(_) => return Class::Loose(key),
    }
  };
  key.ports = get32(seg, 0);
  let enabled = if tcp { opts.tcp } else { opts.udp };
  if !enabled || !plain_ip || total != pkt.len() {
    return Class::Flow(key, None);
  }
  let cand = Cand {
    tcp,
    family,
    l4,
    hdr_len: l4 + l4_hdr,
    payload: total - l4 - l4_hdr,
    seq: if tcp { get32(seg, 4) } else { 0 },
    flags: if tcp { seg[13] } else { 0 },
    id: get16(pkt, 4),
  };
  let ok = cand.payload > 0
    && if tcp {
      let bad = TcpHeader::SYN | TcpHeader::FIN | TcpHeader::RST | TcpHeader::URG | TcpHeader::CWR;
      cand.flags & bad == 0 && cand.flags & TcpHeader::ACK != 0
    } else {
      get16(seg, 4) as usize == seg.len() && get16(seg, 6) != 0
    };
  Class::Flow(key, ok.then_some(cand))
}

/// Acknowledgment, data offset, flags but PSH, window, urgent pointer and options are equal.
fn same_tcp_fields(a: &[u8], b: &[u8]) -> bool {
  a[8..13] == b[8..13]
    && (a[13] | TcpHeader::PSH) == (b[13] | TcpHeader::PSH)
    && a[14..16] == b[14..16]
    && a[18..] == b[18..]
}

/// The IPv4 header checksum and the transport checksum hold exactly the values `gso::split` would compute, so
/// the packet comes back byte for byte (and a corrupt packet is never vouched for with `NEEDS_CSUM`).
fn canonical_checksums(pkt: &[u8], c: &Cand) -> bool {
  if c.family == Family::V4 {
    let s = checksum::sum(&pkt[12..20], checksum::sum(&pkt[..10], 0));
    if get16(pkt, 10) != checksum::finish(s) {
      return false;
    }
  }
  let (protocol, field) = if c.tcp {
    (proto::TCP, TcpHeader::CHECKSUM_OFFSET)
  } else {
    (proto::UDP, UdpHeader::CHECKSUM_OFFSET)
  };
  transport_checksum(pkt, c.family, c.l4, protocol) == Some(get16(pkt, c.l4 + field))
}

fn write_super(pkts: &[&[u8]], next: &[u32], item: &Item, st: &Open, endian: Endian, out: &mut Batch) {
  let c = &st.seg;
  let (gso_type, protocol, field) = match (c.tcp, c.family) {
    (true, Family::V4) => (
      virtio::VIRTIO_NET_HDR_GSO_TCPV4,
      proto::TCP,
      TcpHeader::CHECKSUM_OFFSET,
    ),
    (true, Family::V6) => (
      virtio::VIRTIO_NET_HDR_GSO_TCPV6,
      proto::TCP,
      TcpHeader::CHECKSUM_OFFSET,
    ),
    (false, _) => (
      virtio::VIRTIO_NET_HDR_GSO_UDP_L4,
      proto::UDP,
      UdpHeader::CHECKSUM_OFFSET,
    ),
  };
  let hdr = VirtioNetHdr {
    flags: virtio::VIRTIO_NET_HDR_F_NEEDS_CSUM,
    gso_type,
    hdr_len: c.hdr_len as u16,
    gso_size: st.gso_size as u16,
    csum_start: c.l4 as u16,
    csum_offset: field as u16,
  };
  let at = out.data.len();
  out.data.reserve(VirtioNetHdr::LEN + st.len);
  out.data.extend_from_slice(&hdr.encode_with(endian));
  out
    .data
    .extend_from_slice(&pkts[item.first as usize][..c.hdr_len]);
  let mut i = item.first;
  while i != NONE {
    out.data.extend_from_slice(&pkts[i as usize][c.hdr_len..]);
    i = next[i as usize];
  }
  let p = &mut out.data[at + VirtioNetHdr::LEN..];
  let len = p.len();
  match c.family {
    Family::V4 => {
      put16(p, 2, len as u16);
      put16(p, 10, 0);
      let s = checksum::checksum(&p[..c.l4]);
      put16(p, 10, s);
    }
    Family::V6 => put16(p, 4, (len - Ipv6Header::LEN) as u16),
  }
  if c.tcp {
    if st.psh {
      p[c.l4 + 13] |= TcpHeader::PSH;
    }
  } else {
    put16(p, c.l4 + 4, (len - c.l4) as u16);
  }
  // NEEDS_CSUM: the field holds the folded, uncomplemented pseudo-header sum over the full transport length.
  let (src, dst) = addr_bytes(p, c.family);
  let partial = checksum::fold(checksum::pseudo_header(src, dst, protocol, (len - c.l4) as u32));
  put16(p, c.l4 + field, partial);
  out.lens.push((VirtioNetHdr::LEN + len) as u32);
}

/// A small multiply-rotate hasher for flow keys (the flow table lives for one batch, so hash flooding can
/// cost at most a batch's worth of probes).
#[derive(Debug, Default)]
struct FlowHasher(u64);

impl FlowHasher {
  fn mix(&mut self, w: u64) {
    self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x517c_c1b7_2722_0a95);
  }
}

impl Hasher for FlowHasher {
  fn write(&mut self, bytes: &[u8]) {
    for chunk in bytes.chunks(8) {
      let mut w = [0u8; 8];
      w[..chunk.len()].copy_from_slice(chunk);
      self.mix(u64::from_le_bytes(w));
    }
  }
  fn write_u8(&mut self, v: u8) {
    self.mix(v as u64);
  }
  fn write_u32(&mut self, v: u32) {
    self.mix(v as u64);
  }
  fn write_usize(&mut self, v: usize) {
    self.mix(v as u64);
  }
  fn finish(&self) -> u64 {
    self.0
  }
}

#[cfg(test)]
pub(crate) mod tests {
  use super::*;
  use crate::packet::build::{self, IpFields, TcpFields};
  use crate::packet::gso;
  use crate::packet::ip::{checksums_valid, Packet, Transport};
  use crate::packet::testutil::assert_checksums_ok;
  use std::collections::HashMap as Map;

  /// Splits every entry of a coalesced batch back into packets, checking each super-packet the way the
  /// kernel's `virtio_net_hdr_to_skb` and `tun_get_user` would.
  pub(crate) fn split_all(out: &Batch, opts: &GroOptions) -> Vec<Vec<u8>> {
    let mut packets = Batch::default();
    for entry in out.iter() {
      let hdr = VirtioNetHdr::decode_with(entry, opts.endian).unwrap();
      let pkt = &entry[VirtioNetHdr::LEN..];
      if pkt.is_empty() {
        // An empty input packet passes through coalescing; split refuses empty reads, so take it as is.
        assert_eq!(hdr, VirtioNetHdr::default());
        packets.push(pkt);
        continue;
      }
      if hdr.gso_type != virtio::VIRTIO_NET_HDR_GSO_NONE {
        assert!(hdr.needs_csum());
        let (start, off) = (hdr.csum_start as usize, hdr.csum_offset as usize);
        assert!(start + off + 2 <= hdr.hdr_len as usize && hdr.hdr_len as usize <= pkt.len());
        assert!(
          pkt.len() - hdr.hdr_len as usize > hdr.gso_size as usize,
          "a super-packet has two segments or more"
        );
        assert!(pkt.len() <= MAX_LEN);
        let udp = hdr.gso_type == virtio::VIRTIO_NET_HDR_GSO_UDP_L4;
        if udp {
          let segs = (pkt.len() - hdr.hdr_len as usize).div_ceil(hdr.gso_size as usize);
          assert!(segs <= opts.max_udp_segments);
        }
        // Completing the partial checksum (what the kernel does for a local socket) gives a valid packet.
        let mut done = Batch::default();
        gso::split(
          &VirtioNetHdr {
            gso_type: 0,
            gso_size: 0,
            ..hdr
          },
          pkt,
          &mut done,
        )
        .unwrap();
        assert!(
          checksums_valid(&done.data).unwrap(),
          "completed super-packet checksum"
        );
      } else {
        assert_eq!(hdr, VirtioNetHdr::default());
      }
      gso::split(&hdr, pkt, &mut packets).unwrap();
    }
    packets.iter().map(|p| p.to_vec()).collect()
  }

  /// Groups packets the way coalescing must keep them in order: TCP/UDP packets by 5-tuple, the rest
  /// together. A TCP/UDP 5-tuple, or `None` for everything else.
  pub(crate) type FlowId = Option<(std::net::IpAddr, std::net::IpAddr, u8, u16, u16)>;

  pub(crate) fn by_flow(pkts: &[Vec<u8>]) -> Map<FlowId, Vec<Vec<u8>>> {
    let mut m: Map<_, Vec<Vec<u8>>> = Map::new();
    for p in pkts {
      let key = Packet::parse(p)
        .ok()
        .and_then(|q| Some((q.src, q.dst, q.protocol, q.src_port()?, q.dst_port()?)));
      m.entry(key).or_default().push(p.clone());
    }
    m
  }

  fn run(pkts: &[Vec<u8>], opts: &GroOptions) -> (GroStats, Vec<usize>, Vec<Vec<u8>>) {
    let mut input = Batch::default();
    for p in pkts {
      input.push(p);
    }
    let mut out = Batch::default();
    let stats = coalesce(&input, opts, &mut out).unwrap();
    let mut counts = Vec::new();
    for entry in out.iter() {
      let hdr = VirtioNetHdr::decode_with(entry, opts.endian).unwrap();
      counts.push(gso::plan(&hdr, &entry[VirtioNetHdr::LEN..]).unwrap().segments);
    }
    let back = split_all(&out, opts);
    assert_eq!(back.len(), pkts.len());
    assert_eq!(by_flow(&back), by_flow(pkts), "split(coalesce(x)) == x per flow");
    assert_eq!((stats.packets_in, stats.packets_out), (pkts.len(), counts.len()));
    (stats, counts, back)
  }

  #[derive(Clone)]
  struct Flow {
    v6: bool,
    sport: u16,
    ttl: u8,
    id: u16,
    df: bool,
    ack: u32,
    window: u16,
    options: &'static [u8],
    flow_label: u32,
  }

  fn flow(v6: bool) -> Flow {
    Flow {
      v6,
      sport: 5000,
      ttl: 64,
      id: 100,
      df: true,
      ack: 777,
      window: 1000,
      options: &[],
      flow_label: 0,
    }
  }

  impl Flow {
    fn ip(&self, index: u16) -> IpFields {
      let mut ip = if self.v6 {
        IpFields::new("fd00::a".parse().unwrap(), "fd00::b".parse().unwrap())
      } else {
        IpFields::new("10.0.0.10".parse().unwrap(), "10.0.0.11".parse().unwrap())
      };
      ip.ttl = self.ttl;
      ip.id = if self.df && self.id == 0 {
        0
      } else {
        self.id.wrapping_add(index)
      };
      ip.dont_fragment = self.df;
      ip.flow_label = self.flow_label;
      ip
    }

    /// Segment `index` carrying `len` bytes at sequence `seq`.
    fn tcp(&self, index: u16, seq: u32, len: usize, flags: u8) -> Vec<u8> {
      let t = TcpFields {
        src_port: self.sport,
        dst_port: 80,
        seq,
        ack: self.ack,
        flags,
        window: self.window,
        urgent: 0,
        options: self.options,
      };
      let payload: Vec<u8> = (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(seq) as u8)
        .collect();
      build::tcp(&self.ip(index), &t, &payload).unwrap()
    }

    fn udp(&self, index: u16, len: usize) -> Vec<u8> {
      let payload: Vec<u8> = (0..len).map(|i| (i + index as usize) as u8).collect();
      build::udp(&self.ip(index), self.sport, 53, &payload).unwrap()
    }

    /// `sizes.len()` consecutive ACK segments; `flags[i]` overrides the flags of segment i.
    fn stream(&self, sizes: &[usize], flags: &[(usize, u8)]) -> Vec<Vec<u8>> {
      let mut seq = 1000u32;
      let mut out = Vec::new();
      for (i, &len) in sizes.iter().enumerate() {
        let f = flags
          .iter()
          .find(|(j, _)| *j == i)
          .map(|&(_, f)| f)
          .unwrap_or(TcpHeader::ACK);
        out.push(self.tcp(i as u16, seq, len, f));
        seq = seq.wrapping_add(len as u32);
      }
      out
    }
  }

  /// Name, packets, options, expected segments per output entry.
  type Case = (&'static str, Vec<Vec<u8>>, GroOptions, Vec<usize>);

  const ACK: u8 = TcpHeader::ACK;
  const TS: &[u8] = &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];

  fn tcp_only() -> GroOptions {
    GroOptions::default()
  }
  fn with_udp() -> GroOptions {
    GroOptions {
      udp: true,
      ..GroOptions::default()
    }
  }

  #[test]
  fn tcp_coalescing_table() {
    let f4 = flow(false);
    let f6 = flow(true);
    let mut bad_csum = f4.stream(&[100, 100, 100], &[]);
    bad_csum[1][45] ^= 0x40; // payload byte: TCP checksum now wrong
    let mut bad_ip_csum = f4.stream(&[100, 100, 100], &[]);
    bad_ip_csum[0][8] ^= 1; // TTL without fixing the header checksum
    bad_ip_csum[0][8] ^= 1;
    bad_ip_csum[0][11] ^= 1;
    let ttl_differs = {
      let mut s = f4.stream(&[100, 100], &[]);
      s[1] = Flow {
        ttl: 63,
        ..f4.clone()
      }
      .tcp(1, 1100, 100, ACK);
      s
    };
    let opts_differ = {
      let mut s = Flow {
        options: TS,
        ..f4.clone()
      }
      .stream(&[100, 100], &[]);
      s[1] = Flow {
        options: &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 3],
        ..f4.clone()
      }
      .tcp(1, 1100, 100, ACK);
      s
    };
    let ack_differs = {
      let mut s = f4.stream(&[100, 100], &[]);
      s[1] = Flow {
        ack: 778,
        ..f4.clone()
      }
      .tcp(1, 1100, 100, ACK);
      s
    };
    let window_differs = {
      let mut s = f6.stream(&[100, 100], &[]);
      s[1] = Flow {
        window: 999,
        ..f6.clone()
      }
      .tcp(1, 1100, 100, ACK);
      s
    };
    let label_differs = {
      let mut s = f6.stream(&[100, 100], &[]);
      s[1] = Flow {
        flow_label: 9,
        ..f6.clone()
      }
      .tcp(1, 1100, 100, ACK);
      s
    };
    let ids_gap = {
      let mut s = f4.stream(&[100, 100], &[]);
      s[1] = Flow {
        id: 102,
        ..f4.clone()
      }
      .tcp(0, 1100, 100, ACK);
      s
    };
    let zero_then_one = {
      // DF + id 0 fixes ids at 0, so 0,1,2 cannot all merge; 1,2 can.
      let z = Flow {
        id: 0,
        df: false,
        ..f4.clone()
      };
      let mut s = z.stream(&[100, 100, 100], &[]);
      for p in &mut s {
        p[6] = 0x40; // set DF afterwards, keep ids 0,1,2
        p[10..12].fill(0);
        let c = checksum::checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
      }
      s
    };
    let seq_gap = {
      let mut s = f4.stream(&[100, 100], &[]);
      s[1] = f4.tcp(1, 1101, 100, ACK);
      s
    };
    let pure_ack_between = vec![
      f4.tcp(0, 1000, 100, ACK),
      f4.tcp(1, 1100, 0, ACK),
      f4.tcp(2, 1100, 100, ACK),
    ];
    let mut ipv4_options = f4.stream(&[100, 100], &[]);
    for p in &mut ipv4_options {
      p.splice(20..20, [1, 1, 1, 0]);
      p[0] = 0x46;
      let len = p.len() as u16;
      p[2..4].copy_from_slice(&len.to_be_bytes());
      p[10..12].fill(0);
      let c = checksum::checksum(&p[..24]);
      p[10..12].copy_from_slice(&c.to_be_bytes());
    }

    let big = f4.stream(&[1400; 50], &[]);
    let cases: Vec<Case> = vec![
      (
        "tcp4 equal",
        f4.stream(&[100, 100, 100], &[]),
        tcp_only(),
        vec![3],
      ),
      (
        "tcp4 shorter last",
        f4.stream(&[100, 100, 37], &[]),
        tcp_only(),
        vec![3],
      ),
      (
        "tcp4 shorter middle",
        f4.stream(&[100, 50, 100], &[]),
        tcp_only(),
        vec![2, 1],
      ),
      (
        "tcp4 larger after",
        f4.stream(&[50, 100], &[]),
        tcp_only(),
        vec![1, 1],
      ),
      (
        "tcp4 options",
        Flow {
          options: TS,
          ..f4.clone()
        }
        .stream(&[1448, 1448, 1448, 1448], &[]),
        tcp_only(),
        vec![4],
      ),
      ("tcp6", f6.stream(&[1440, 1440, 1000], &[]), tcp_only(), vec![3]),
      (
        "PSH on last",
        f4.stream(&[100, 100, 100], &[(2, ACK | TcpHeader::PSH)]),
        tcp_only(),
        vec![3],
      ),
      (
        "PSH in middle",
        f4.stream(&[100, 100, 100], &[(1, ACK | TcpHeader::PSH)]),
        tcp_only(),
        vec![2, 1],
      ),
      (
        "PSH on first",
        f4.stream(&[100, 100, 100], &[(0, ACK | TcpHeader::PSH)]),
        tcp_only(),
        vec![1, 2],
      ),
      (
        "FIN",
        f4.stream(&[100, 100, 100], &[(2, ACK | TcpHeader::FIN)]),
        tcp_only(),
        vec![2, 1],
      ),
      (
        "SYN",
        f4.stream(&[100, 100], &[(0, TcpHeader::SYN)]),
        tcp_only(),
        vec![1, 1],
      ),
      (
        "RST",
        f4.stream(&[100, 100], &[(1, ACK | TcpHeader::RST)]),
        tcp_only(),
        vec![1, 1],
      ),
      (
        "URG",
        f4.stream(&[100, 100], &[(1, ACK | TcpHeader::URG)]),
        tcp_only(),
        vec![1, 1],
      ),
      (
        "CWR",
        f4.stream(&[100, 100], &[(0, ACK | TcpHeader::CWR)]),
        tcp_only(),
        vec![1, 1],
      ),
      (
        "no ACK",
        f4.stream(&[100, 100], &[(0, 0), (1, 0)]),
        tcp_only(),
        vec![1, 1],
      ),
      (
        "ECE on all",
        f4.stream(
          &[100, 100],
          &[(0, ACK | TcpHeader::ECE), (1, ACK | TcpHeader::ECE)],
        ),
        tcp_only(),
        vec![2],
      ),
      ("bad TCP checksum", bad_csum, tcp_only(), vec![1, 1, 1]),
      ("bad IPv4 checksum first", bad_ip_csum, tcp_only(), vec![1, 2]),
      ("TTL differs", ttl_differs, tcp_only(), vec![1, 1]),
      ("options differ", opts_differ, tcp_only(), vec![1, 1]),
      ("ack differs", ack_differs, tcp_only(), vec![1, 1]),
      ("window differs", window_differs, tcp_only(), vec![1, 1]),
      ("flow label differs", label_differs, tcp_only(), vec![1, 1]),
      ("ids not consecutive", ids_gap, tcp_only(), vec![1, 1]),
      (
        "DF ids all zero",
        Flow { id: 0, ..f4.clone() }.stream(&[100, 100, 100], &[]),
        tcp_only(),
        vec![3],
      ),
      ("DF id 0 then 1", zero_then_one, tcp_only(), vec![1, 2]),
      (
        "id wraps",
        Flow {
          id: 65535,
          df: false,
          ..f4.clone()
        }
        .stream(&[100, 100, 100], &[]),
        tcp_only(),
        vec![3],
      ),
      ("seq gap", seq_gap, tcp_only(), vec![1, 1]),
      ("pure ACK between", pure_ack_between, tcp_only(), vec![1, 1, 1]),
      ("IPv4 options", ipv4_options, tcp_only(), vec![1, 1]),
      (
        "tcp disabled",
        f4.stream(&[100, 100], &[]),
        GroOptions {
          tcp: false,
          ..tcp_only()
        },
        vec![1, 1],
      ),
      ("64 KiB cap", big, tcp_only(), vec![46, 4]),
      ("single", f4.stream(&[100], &[]), tcp_only(), vec![1]),
      ("empty batch", vec![], tcp_only(), vec![]),
    ];
    for (name, pkts, opts, want) in cases {
      if !name.starts_with("bad") {
        pkts.iter().for_each(|p| assert_checksums_ok(p));
      }
      let (stats, counts, _) = run(&pkts, &opts);
      assert_eq!(counts, want, "{name}");
      assert_eq!(
        stats.super_packets,
        want.iter().filter(|&&n| n > 1).count(),
        "{name}"
      );
    }
  }

  #[test]
  fn udp_coalescing_table() {
    let f4 = flow(false);
    let f6 = flow(true);
    let zero_csum = {
      let mut s: Vec<_> = (0..3).map(|i| f4.udp(i, 100)).collect();
      for p in &mut s {
        p[26..28].fill(0);
      }
      s
    };
    let cases: Vec<Case> = vec![
      (
        "udp off by default",
        (0..3).map(|i| f4.udp(i, 100)).collect(),
        tcp_only(),
        vec![1, 1, 1],
      ),
      (
        "udp4",
        (0..3).map(|i| f4.udp(i, 100)).collect(),
        with_udp(),
        vec![3],
      ),
      (
        "udp6 shorter last",
        (0..3).map(|i| f6.udp(i, if i == 2 { 1 } else { 1200 })).collect(),
        with_udp(),
        vec![3],
      ),
      (
        "udp shorter middle",
        [100, 10, 100]
          .iter()
          .enumerate()
          .map(|(i, &n)| f4.udp(i as u16, n))
          .collect(),
        with_udp(),
        vec![2, 1],
      ),
      (
        "udp empty datagrams",
        (0..3).map(|i| f4.udp(i, 0)).collect(),
        with_udp(),
        vec![1, 1, 1],
      ),
      ("udp zero checksum", zero_csum, with_udp(), vec![1, 1, 1]),
      (
        "udp segment cap",
        (0..5).map(|i| f6.udp(i, 100)).collect(),
        GroOptions {
          max_udp_segments: 2,
          ..with_udp()
        },
        vec![2, 2, 1],
      ),
      (
        "udp 64 default cap",
        (0..70).map(|i| f4.udp(i, 10)).collect(),
        with_udp(),
        vec![64, 6],
      ),
    ];
    for (name, pkts, opts, want) in cases {
      let (_, counts, _) = run(&pkts, &opts);
      assert_eq!(counts, want, "{name}");
    }
  }

  #[test]
  fn interleaved_flows_merge_per_flow_and_keep_their_order() {
    let a = flow(false);
    let b = Flow {
      sport: 6000,
      ..flow(false)
    };
    let c = flow(true);
    let (sa, sb, sc) = (
      a.stream(&[100; 4], &[]),
      b.stream(&[200; 3], &[]),
      c.stream(&[300; 2], &[]),
    );
    let ping = build::icmp_echo(&a.ip(0), false, 1, 1, b"x").unwrap();
    let pkts = vec![
      sa[0].clone(),
      sb[0].clone(),
      ping.clone(),
      sa[1].clone(),
      sc[0].clone(),
      sb[1].clone(),
      sa[2].clone(),
      sc[1].clone(),
      sb[2].clone(),
      sa[3].clone(),
      vec![0x00, 0x01, 0x02], // not IP: passes through
    ];
    let (stats, counts, back) = run(&pkts, &tcp_only());
    assert_eq!(counts, vec![4, 3, 1, 2, 1]);
    assert_eq!(stats.coalesced, 9);
    // Entries come in the order of their first packet.
    assert_eq!(back[7], ping);
    assert_eq!(back[10], vec![0x00, 0x01, 0x02]);
  }

  #[test]
  fn fragments_close_flows_between_the_same_hosts() {
    let f = flow(false);
    let s = f.stream(&[100, 100, 100], &[]);
    let mut frag = f.udp(9, 40);
    frag[9] = proto::TCP; // a TCP fragment between the same hosts
    frag[6] = 0x20;
    frag[10..12].fill(0);
    let c = checksum::checksum(&frag[..20]);
    frag[10..12].copy_from_slice(&c.to_be_bytes());
    assert_eq!(Packet::parse(&frag).unwrap().transport, Transport::Fragment);
    let pkts = vec![s[0].clone(), s[1].clone(), frag.clone(), s[2].clone()];
    let (_, counts, back) = run(&pkts, &tcp_only());
    assert_eq!(counts, vec![2, 1, 1]);
    assert_eq!(back, pkts, "the fragment stays between the segments around it");
  }

  #[test]
  fn super_packet_header_and_bytes() {
    let f = Flow {
      options: TS,
      ..flow(false)
    };
    let pkts = f.stream(&[1000, 1000, 500], &[(2, ACK | TcpHeader::PSH)]);
    let mut input = Batch::default();
    for p in &pkts {
      input.push(p);
    }
    for endian in [Endian::Little, Endian::Big] {
      let opts = GroOptions {
        endian,
        ..GroOptions::default()
      };
      let mut out = Batch::default();
      out.push(b"prefix"); // coalesce appends
      let stats = Coalescer::new().coalesce(&input, &opts, &mut out).unwrap();
      assert_eq!(
        stats,
        GroStats {
          packets_in: 3,
          packets_out: 1,
          super_packets: 1,
          coalesced: 3
        }
      );
      let entry = out.iter().nth(1).unwrap();
      let hdr = VirtioNetHdr::decode_with(entry, endian).unwrap();
      let want = VirtioNetHdr {
        flags: virtio::VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type: virtio::VIRTIO_NET_HDR_GSO_TCPV4,
        hdr_len: 20 + 32,
        gso_size: 1000,
        csum_start: 20,
        csum_offset: 16,
      };
      assert_eq!(hdr, want);
      let sp = &entry[10..];
      assert_eq!(sp.len(), 52 + 2500);
      assert_eq!(get16(sp, 2), 2552);
      assert!(Ipv4Header::parse(sp).unwrap().checksum_valid());
      assert_eq!(
        sp[33],
        ACK | TcpHeader::PSH,
        "the super-packet carries the last segment's PSH"
      );
      assert_eq!(get32(sp, 24), 1000, "sequence of the first segment");
      let (s, d) = addr_bytes(sp, Family::V4);
      assert_eq!(
        get16(sp, 36),
        checksum::fold(checksum::pseudo_header(s, d, proto::TCP, 2532))
      );
      let mut payload = Vec::new();
      for p in &pkts {
        payload.extend_from_slice(&p[52..]);
      }
      assert_eq!(&sp[52..], &payload[..]);
    }
  }

  #[test]
  fn inconsistent_batch_is_an_error() {
    let b = Batch {
      data: vec![0; 10],
      lens: vec![4, 4],
    };
    let e = coalesce(&b, &GroOptions::default(), &mut Batch::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
  }

  #[test]
  fn coalescer_is_reusable() {
    let mut c = Coalescer::new();
    let f = flow(true);
    for round in 0..3 {
      let pkts = f.stream(&[500; 5], &[]);
      let mut input = Batch::default();
      for p in pkts.iter().take(2 + round) {
        input.push(p);
      }
      let mut out = Batch::default();
      let stats = c.coalesce(&input, &GroOptions::default(), &mut out).unwrap();
      assert_eq!((stats.packets_out, stats.coalesced), (1, 2 + round));
    }
  }
}
