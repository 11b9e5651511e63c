//! GSO split: turns what a TUN device with `IFF_VNET_HDR` hands to a read (a [`VirtioNetHdr`] and a packet,
//! maybe a super-packet of up to 64 KiB) into ordinary packets with complete checksums, the way the kernel's
//! own `tcp_gso_segment`/`__udp_gso_segment` would have put them on the wire.
//!
//! - `GSO_NONE` without `NEEDS_CSUM`: the packet as is.
//! - `GSO_NONE` with `NEEDS_CSUM`: the packet with its checksum completed (sum from `csum_start` to the end,
//!   the field already holding the pseudo-header sum, stored at `csum_start + csum_offset`).
//! - `GSO_TCPV4`/`GSO_TCPV6`: the headers (IP, IPv6 extension headers, TCP with options) are copied in front
//!   of every `gso_size` bytes of payload. Per segment: sequence number advanced by the payload before it;
//!   FIN and PSH kept only on the last segment and CWR only on the first; IPv4 total length, identification
//!   (first id + index, or 0 throughout when the first is 0 with DF set, RFC 6864 atomic datagrams) and
//!   header checksum; IPv6 payload length; a full TCP checksum.
//! - `GSO_UDP_L4` (USO): every segment is a datagram of its own with its UDP length and checksum.
//!
//! The header's `hdr_len` is only checked to be within the packet: the kernel fills it with the length of the
//! linear part of its buffer, not always the header length, so the headers are measured from the packet
//! itself.

use super::ip::{ipv6_upper_layer, transport_checksum, Family, Ipv4Header, Ipv6Header, TcpHeader, UdpHeader};
use super::virtio::{self, Endian, VirtioNetHdr};
use super::{checksum, get16, get32, invalid, proto, put16, put32};
use crate::backend::Batch;
use crate::error::Result;

/// What [`split`] will append: number of packets and bytes. Lets a reader check the room left in its slab
/// first, then cut the packet with [`SplitPlan::split`] without validating it a second time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitPlan {
  pub segments: usize,
  pub bytes: usize,
  /// The validated job, and the length of the packet it was validated for.
  job: Job,
  len: usize,
}

impl SplitPlan {
  /// [`split`] of the packet this plan was made for, without checking it again: appends the packets to `out` and
  /// returns how many. `pkt` must be that packet, its headers unchanged since (its payload may differ); one of
  /// another length is refused (`InvalidPacket`, nothing appended), so that a mix-up cannot cut out of bounds.
  pub fn split(&self, pkt: &[u8], out: &mut Batch) -> Result<usize> {
    if pkt.len() != self.len {
      return Err(invalid(format!(
        "a {}-byte packet split with the plan of a {}-byte one",
        pkt.len(),
        self.len
      )));
    }
    match self.job {
      Job::Whole => {
        out.push(pkt);
        Ok(1)
      }
      Job::Csum { start, field } => {
        let at = out.data.len();
        out.push(pkt);
        let p = &mut out.data[at..];
        let c = checksum::finish_nonzero(checksum::sum(&p[start..], 0));
        put16(p, field, c);
        Ok(1)
      }
      Job::Segment(s) => {
        write_segments(&s, pkt, out);
        Ok(s.segments)
      }
    }
  }
}

/// A validated segmentation job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Job {
  /// Copy the packet unchanged.
  Whole,
  /// Complete the partial checksum: sum from `start`, store at `field`.
  Csum { start: usize, field: usize },
  /// Cut a TCP or UDP super-packet.
  Segment(Seg),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seg {
  family: Family,
  tcp: bool,
  /// Offset of the transport header.
  l4: usize,
  /// Bytes copied in front of every segment (IP + extension headers + transport header).
  hdr_len: usize,
  gso_size: usize,
  segments: usize,
}

/// Computes what [`split`] would produce, validating everything it would; [`SplitPlan::split`] then does it.
pub fn plan(hdr: &VirtioNetHdr, pkt: &[u8]) -> Result<SplitPlan> {
  let job = analyze(hdr, pkt)?;
  let (segments, bytes) = match job {
    Job::Whole | Job::Csum { .. } => (1, pkt.len()),
    Job::Segment(s) => (s.segments, s.segments * s.hdr_len + pkt.len() - s.hdr_len),
  };
  Ok(SplitPlan {
    segments,
    bytes,
    job,
    len: pkt.len(),
  })
}

/// Splits `pkt` as `hdr` describes and appends the resulting packets to `out`. Returns the number appended.
/// On error (`InvalidPacket`: inconsistent header or packet) nothing is appended. `out.data` grows if it must;
/// a reader filling a fixed-capacity slab checks [`plan`] first and splits with the plan.
pub fn split(hdr: &VirtioNetHdr, pkt: &[u8], out: &mut Batch) -> Result<usize> {
  plan(hdr, pkt)?.split(pkt, out)
}

/// [`split`] for a whole frame as read from the device: a 10-byte header in `endian` order, then the packet.
pub fn split_frame(frame: &[u8], endian: Endian, out: &mut Batch) -> Result<usize> {
  let hdr = VirtioNetHdr::decode_with(frame, endian)?;
  split(&hdr, &frame[VirtioNetHdr::LEN..], out)
}

fn analyze(hdr: &VirtioNetHdr, pkt: &[u8]) -> Result<Job> {
  if pkt.is_empty() {
    return Err(invalid("empty packet after the virtio header"));
  }
  if hdr.hdr_len as usize > pkt.len() {
    return Err(invalid(format!(
      "virtio hdr_len {} is beyond the {}-byte packet",
      hdr.hdr_len,
      pkt.len()
    )));
  }
  let tcp = match hdr.gso_kind() {
    virtio::VIRTIO_NET_HDR_GSO_NONE => {
      if hdr.gso_type != virtio::VIRTIO_NET_HDR_GSO_NONE {
        return Err(invalid("virtio ECN bit without segmentation"));
      }
      if !hdr.needs_csum() {
        return Ok(Job::Whole);
      }
      let start = hdr.csum_start as usize;
      let field = start + hdr.csum_offset as usize;
      if field + 2 > pkt.len() {
        return Err(invalid(format!(
          "checksum at {start}+{} is beyond the {}-byte packet",
          hdr.csum_offset,
          pkt.len()
        )));
      }
      return Ok(Job::Csum { start, field });
    }
    virtio::VIRTIO_NET_HDR_GSO_TCPV4 | virtio::VIRTIO_NET_HDR_GSO_TCPV6 => true,
    virtio::VIRTIO_NET_HDR_GSO_UDP_L4 if hdr.gso_type & virtio::VIRTIO_NET_HDR_GSO_ECN == 0 => false,
    virtio::VIRTIO_NET_HDR_GSO_UDP => {
      return Err(invalid("UDP fragmentation offload (UFO) is not supported"))
    }
    _ => return Err(invalid(format!("unknown virtio gso_type {:#04x}", hdr.gso_type))),
  };

  let family =
    Family::of(pkt).ok_or_else(|| invalid(format!("IP version {} is neither 4 nor 6", pkt[0] >> 4)))?;
  match (hdr.gso_kind(), family) {
    (virtio::VIRTIO_NET_HDR_GSO_TCPV4, Family::V6) => return Err(invalid("GSO_TCPV4 on an IPv6 packet")),
    (virtio::VIRTIO_NET_HDR_GSO_TCPV6, Family::V4) => return Err(invalid("GSO_TCPV6 on an IPv4 packet")),
    _ => {}
  }
  let (l4, protocol) = match family {
    Family::V4 => {
      let h = Ipv4Header::parse(pkt)?;
      if h.total_len() as usize != pkt.len() {
        return Err(invalid(format!(
          "IPv4 total length {} is not the {}-byte packet",
          h.total_len(),
          pkt.len()
        )));
      }
      if h.is_fragment() {
        return Err(invalid("cannot segment an IPv4 fragment"));
      }
      (h.header_len(), h.protocol())
    }
    Family::V6 => {
      let h = Ipv6Header::parse(pkt)?;
      if h.total_len() != pkt.len() {
        return Err(invalid(format!(
          "IPv6 payload length {} is not the {}-byte packet",
          h.payload_len(),
          pkt.len()
        )));
      }
      let up = ipv6_upper_layer(pkt)?;
      if up.fragment {
        return Err(invalid("cannot segment an IPv6 fragment"));
      }
      if up.routed {
        return Err(invalid(
          "cannot segment through an IPv6 routing header with segments left",
        ));
      }
      (up.offset, up.protocol)
    }
  };
  let (want, field) = if tcp {
    (proto::TCP, TcpHeader::CHECKSUM_OFFSET)
  } else {
    (proto::UDP, UdpHeader::CHECKSUM_OFFSET)
  };
  if protocol != want {
    return Err(invalid(format!(
      "gso_type {:#04x} on a packet of protocol {protocol}",
      hdr.gso_type
    )));
  }
  if hdr.needs_csum() && (hdr.csum_start as usize != l4 || hdr.csum_offset as usize != field) {
    return Err(invalid(format!(
      "csum_start/offset {}/{} do not point at the checksum of the transport header at {l4}",
      hdr.csum_start, hdr.csum_offset
    )));
  }
  let l4_hdr = if tcp {
    TcpHeader::parse(&pkt[l4..])?.header_len()
  } else {
    let u = UdpHeader::parse(&pkt[l4..])?;
    if u.length() as usize != pkt.len() - l4 {
      return Err(invalid(format!(
        "UDP length {} is not the {}-byte datagram",
        u.length(),
        pkt.len() - l4
      )));
    }
    UdpHeader::LEN
  };
  if hdr.gso_size == 0 {
    return Err(invalid("virtio gso_size is 0"));
  }
  let hdr_len = l4 + l4_hdr;
  let gso_size = hdr.gso_size as usize;
  let segments = (pkt.len() - hdr_len).div_ceil(gso_size).max(1);
  Ok(Job::Segment(Seg {
    family,
    tcp,
    l4,
    hdr_len,
    gso_size,
    segments,
  }))
}

fn write_segments(s: &Seg, pkt: &[u8], out: &mut Batch) {
  let (headers, data) = pkt.split_at(s.hdr_len);
  let v4 = s.family == Family::V4;
  let first_id = get16(pkt, 4);
  let fixed_id = v4 && get16(pkt, 6) & Ipv4Header::DF != 0 && first_id == 0;
  let (seq0, flags0) = if s.tcp {
    (get32(pkt, s.l4 + 4), pkt[s.l4 + 13])
  } else {
    (0, 0)
  };
  let protocol = if s.tcp { proto::TCP } else { proto::UDP };
  let field = s.l4
    + if s.tcp {
      TcpHeader::CHECKSUM_OFFSET
    } else {
      UdpHeader::CHECKSUM_OFFSET
    };

  out.data.reserve(s.segments * s.hdr_len + data.len());
  out.lens.reserve(s.segments);
  for i in 0..s.segments {
    let chunk = &data[(i * s.gso_size).min(data.len())..((i + 1) * s.gso_size).min(data.len())];
    let at = out.data.len();
    out.data.extend_from_slice(headers);
    out.data.extend_from_slice(chunk);
    let p = &mut out.data[at..];
    let len = p.len();
    if v4 {
      put16(p, 2, len as u16);
      put16(
        p,
        4,
        if fixed_id {
          0
        } else {
          first_id.wrapping_add(i as u16)
        },
      );
      put16(p, 10, 0);
      let c = checksum::checksum(&p[..s.l4]);
      put16(p, 10, c);
    } else {
      put16(p, 4, (len - Ipv6Header::LEN) as u16);
    }
    if s.tcp {
      put32(p, s.l4 + 4, seq0.wrapping_add((i * s.gso_size) as u32));
      let mut flags = flags0;
      if i + 1 < s.segments {
        flags &= !(TcpHeader::FIN | TcpHeader::PSH);
      }
      if i > 0 {
        flags &= !TcpHeader::CWR;
      }
      p[s.l4 + 13] = flags;
    } else {
      put16(p, s.l4 + 4, (len - s.l4) as u16);
    }
    if let Some(c) = transport_checksum(p, s.family, s.l4, protocol) {
      put16(p, field, c);
    }
    out.lens.push(len as u32);
  }
}

#[cfg(test)]
pub(crate) mod tests {
  use super::*;
  use crate::error::ErrorKind;
  use crate::packet::build::{self, IpFields, TcpFields};
  use crate::packet::ip::{addr_bytes, Packet};
  use crate::packet::testutil::{assert_checksums_ok, slow_checksum, Rng};
  use crate::packet::virtio::*;

  /// Turns a complete packet into what the kernel hands over: the transport checksum field replaced by the
  /// pseudo-header sum over the full length, and a header asking to cut it into `gso_size` segments.
  pub(crate) fn make_super(pkt: &[u8], gso_size: u16) -> (VirtioNetHdr, Vec<u8>) {
    let p = Packet::parse(pkt).unwrap();
    let tcp = p.protocol == proto::TCP;
    let field = if tcp { 16 } else { 6 };
    let mut sp = pkt.to_vec();
    let (src, dst) = addr_bytes(pkt, p.family);
    let partial = checksum::fold(checksum::pseudo_header(
      src,
      dst,
      p.protocol,
      (pkt.len() - p.l4_offset) as u32,
    ));
    put16(&mut sp, p.l4_offset + field, partial);
    let hdr_len = match p.transport {
      crate::packet::Transport::Tcp { header_len, .. } => p.l4_offset + header_len,
      _ => p.l4_offset + 8,
    };
    let gso_type = match (tcp, p.family) {
      (true, Family::V4) => VIRTIO_NET_HDR_GSO_TCPV4,
      (true, Family::V6) => VIRTIO_NET_HDR_GSO_TCPV6,
      (false, _) => VIRTIO_NET_HDR_GSO_UDP_L4,
    };
    let hdr = VirtioNetHdr {
      flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
      gso_type,
      hdr_len: hdr_len as u16,
      gso_size,
      csum_start: p.l4_offset as u16,
      csum_offset: field as u16,
    };
    (hdr, sp)
  }

  fn ip(v6: bool) -> IpFields {
    if v6 {
      IpFields::new("fd00:1::10".parse().unwrap(), "fd00:2::20".parse().unwrap())
    } else {
      IpFields::new("10.9.8.7".parse().unwrap(), "172.16.5.4".parse().unwrap())
    }
  }

  struct TcpCase {
    name: &'static str,
    v6: bool,
    payload: usize,
    gso: u16,
    flags: u8,
    options: &'static [u8],
    id: u16,
    df: bool,
    seq: u32,
    ecn: bool,
  }

  const TS: &[u8] = &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];

  fn base(name: &'static str) -> TcpCase {
    TcpCase {
      name,
      v6: false,
      payload: 3000,
      gso: 1000,
      flags: 0x10,
      options: &[],
      id: 100,
      df: true,
      seq: 1,
      ecn: false,
    }
  }

  /// The expected i-th segment, built independently with the builder.
  fn expected_tcp(c: &TcpCase, payload: &[u8], i: usize, n: usize) -> Vec<u8> {
    let mut ipf = ip(c.v6);
    ipf.dont_fragment = c.df;
    ipf.id = if c.df && c.id == 0 {
      0
    } else {
      c.id.wrapping_add(i as u16)
    };
    let mut flags = c.flags;
    if i + 1 < n {
      flags &= !(TcpHeader::FIN | TcpHeader::PSH);
    }
    if i > 0 {
      flags &= !TcpHeader::CWR;
    }
    let g = c.gso as usize;
    let chunk = &payload[(i * g).min(payload.len())..((i + 1) * g).min(payload.len())];
    let t = TcpFields {
      src_port: 40000,
      dst_port: 443,
      seq: c.seq.wrapping_add((i * g) as u32),
      ack: 0xabcd,
      flags,
      window: 512,
      urgent: 0,
      options: c.options,
    };
    build::tcp(&ipf, &t, chunk).unwrap()
  }

  #[test]
  fn tcp_segmentation_table() {
    let cases = [
      base("tcp4 even"),
      TcpCase {
        payload: 2501,
        options: TS,
        ..base("tcp4 odd last + options")
      },
      TcpCase {
        v6: true,
        payload: 4000,
        gso: 1440,
        ..base("tcp6")
      },
      TcpCase {
        v6: true,
        payload: 999,
        gso: 1440,
        options: TS,
        ..base("tcp6 single segment")
      },
      TcpCase {
        flags: 0x19,
        ..base("FIN|PSH only on last")
      },
      TcpCase {
        flags: 0xd0,
        ecn: true,
        ..base("CWR only on first, ECE on all")
      },
      TcpCase {
        payload: 0,
        ..base("no payload")
      },
      TcpCase {
        payload: 1,
        gso: 1,
        ..base("one byte")
      },
      TcpCase {
        payload: 7,
        gso: 1,
        id: 0xfffd,
        ..base("tiny segments, id wraps")
      },
      TcpCase {
        id: 0,
        ..base("DF with id 0 keeps ids 0")
      },
      TcpCase {
        id: 0,
        df: false,
        ..base("no DF, id 0 increments")
      },
      TcpCase {
        seq: 0xffff_fc00,
        ..base("seq wraps")
      },
      TcpCase {
        payload: 65535 - 20 - 32,
        gso: 1448,
        options: TS,
        ..base("64k super-packet")
      },
    ];
    let mut rng = Rng::new(42);
    for c in cases {
      let payload = rng.bytes(c.payload);
      let whole = expected_tcp(&TcpCase { gso: u16::MAX, ..c }, &payload, 0, 1);
      let (mut hdr, sp) = make_super(&whole, c.gso);
      if c.ecn {
        hdr.gso_type |= VIRTIO_NET_HDR_GSO_ECN;
      }
      let plan = plan(&hdr, &sp).unwrap();
      let mut out = Batch::default();
      out.push(b"keep"); // split appends
      let n = split(&hdr, &sp, &mut out).unwrap_or_else(|e| panic!("{}: {e}", c.name));
      let want_n = c.payload.div_ceil(c.gso as usize).max(1);
      assert_eq!((n, plan.segments), (want_n, want_n), "{}", c.name);
      assert_eq!(out.data.len(), 4 + plan.bytes, "{}", c.name);
      let segs: Vec<&[u8]> = out.iter().skip(1).collect();
      for (i, s) in segs.iter().enumerate() {
        assert_eq!(
          *s,
          &expected_tcp(&c, &payload, i, n)[..],
          "{} segment {i}",
          c.name
        );
        assert_checksums_ok(s);
      }
    }
  }

  #[test]
  fn udp_segmentation_table() {
    let mut rng = Rng::new(9);
    for (v6, payload_len, gso, id, df) in [
      (false, 3000, 1200, 5, true),
      (true, 3000, 1200, 0, true),
      (false, 1, 1200, 0, true),
      (true, 2401, 1200, 0, false),
      (false, 0, 10, 9, false),
      (false, 65_507, 1472, 7, false),
    ] {
      let payload = rng.bytes(payload_len);
      let mut ipf = ip(v6);
      ipf.id = id;
      ipf.dont_fragment = df;
      let whole = build::udp(&ipf, 4242, 53, &payload).unwrap();
      let (hdr, sp) = make_super(&whole, gso);
      let mut out = Batch::default();
      let n = split(&hdr, &sp, &mut out).unwrap();
      let g = gso as usize;
      assert_eq!(n, payload_len.div_ceil(g).max(1));
      for (i, s) in out.iter().enumerate() {
        ipf.id = if df && id == 0 {
          0
        } else {
          id.wrapping_add(i as u16)
        };
        let want = build::udp(
          &ipf,
          4242,
          53,
          &payload[(i * g).min(payload_len)..((i + 1) * g).min(payload_len)],
        )
        .unwrap();
        assert_eq!(s, &want[..], "udp v6={v6} len={payload_len} segment {i}");
        assert_checksums_ok(s);
      }
    }
  }

  #[test]
  fn segments_keep_ipv6_extension_headers_and_ipv4_options() {
    let mut rng = Rng::new(5);
    let payload = rng.bytes(2500);
    // IPv6 + hop-by-hop (8 bytes of PadN) + TCP.
    let plain = build::tcp(
      &ip(true),
      &TcpFields {
        src_port: 1,
        dst_port: 2,
        flags: 0x10,
        ..Default::default()
      },
      &payload,
    )
    .unwrap();
    let mut pkt = plain[..40].to_vec();
    pkt[6] = proto::HOPOPTS;
    put16(&mut pkt, 4, (plain.len() - 40 + 8) as u16);
    pkt.extend_from_slice(&[proto::TCP, 0, 1, 4, 0, 0, 0, 0]);
    pkt.extend_from_slice(&plain[40..]);
    // IPv4 with 4 bytes of options (NOP NOP NOP EOL) + UDP.
    let plain4 = build::udp(&ip(false), 7, 8, &payload).unwrap();
    let mut pkt4 = plain4[..20].to_vec();
    pkt4[0] = 0x46;
    put16(&mut pkt4, 2, (plain4.len() + 4) as u16);
    pkt4.extend_from_slice(&[1, 1, 1, 0]);
    pkt4.extend_from_slice(&plain4[20..]);
    put16(&mut pkt4, 10, 0);
    let c = checksum::checksum(&pkt4[..24]);
    put16(&mut pkt4, 10, c);
    // (packet, header length, byte ranges of the headers that legitimately change per segment)
    // IPv6: payload length; TCP (at 48) sequence number, checksum.
    let v6_changes = [4..6, 52..56, 64..66];
    // IPv4: total length and id; header checksum; UDP (at 24) length and checksum.
    let v4_changes = [2..6, 10..12, 28..32];
    for (pkt, hdr_len, changes) in [(pkt, 68usize, &v6_changes[..]), (pkt4, 32, &v4_changes[..])] {
      let (hdr, sp) = make_super(&pkt, 1000);
      let mut out = Batch::default();
      assert_eq!(split(&hdr, &sp, &mut out).unwrap(), 3);
      let mut rebuilt = Vec::new();
      for (i, s) in out.iter().enumerate() {
        assert_checksums_ok(s);
        for j in 0..hdr_len {
          if !changes.iter().any(|r| r.contains(&j)) {
            assert_eq!(s[j], pkt[j], "segment {i} header byte {j}");
          }
        }
        rebuilt.extend_from_slice(&s[hdr_len..]);
      }
      assert_eq!(rebuilt, payload);
    }
  }

  #[test]
  fn needs_csum_completion_matches_slow_checksum() {
    let mut rng = Rng::new(77);
    // Real packets: the completed checksum equals the one the builder computed (or its other zero).
    for len in [0usize, 1, 2, 3, 100, 1001] {
      for v6 in [false, true] {
        for tcp in [false, true] {
          let payload = rng.bytes(len);
          let full = if tcp {
            build::tcp(
              &ip(v6),
              &TcpFields {
                src_port: 1,
                dst_port: 2,
                flags: 0x18,
                options: TS,
                ..Default::default()
              },
              &payload,
            )
            .unwrap()
          } else {
            build::udp(&ip(v6), 1, 2, &payload).unwrap()
          };
          let (mut hdr, sp) = make_super(&full, 1000);
          hdr.gso_type = VIRTIO_NET_HDR_GSO_NONE;
          hdr.gso_size = 0;
          let mut out = Batch::default();
          assert_eq!(split(&hdr, &sp, &mut out).unwrap(), 1);
          assert_checksums_ok(&out.data);
          let field = hdr.csum_start as usize + hdr.csum_offset as usize;
          let mut same = out.data.clone();
          if get16(&same, field) == 0xffff && get16(&full, field) == 0 {
            put16(&mut same, field, 0);
          }
          assert_eq!(same, full);
        }
      }
    }
    // Arbitrary data: whatever the start and (even) offset, the completed range sums to all ones.
    for _ in 0..500 {
      let len = 2 + rng.below(300) as usize;
      let data = rng.bytes(len);
      let start = rng.below(len as u64 - 1) as usize;
      let offset = 2 * rng.below(((len - start) / 2) as u64) as usize;
      let hdr = VirtioNetHdr {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        csum_start: start as u16,
        csum_offset: offset as u16,
        ..Default::default()
      };
      let mut out = Batch::default();
      split(&hdr, &data, &mut out).unwrap();
      let field = start + offset;
      // The field held the partial (pseudo-header) sum; with it as the initial sum, the range now verifies.
      let partial = get16(&data, field) as u64;
      assert_eq!(
        slow_checksum(&out.data[start..], partial),
        0,
        "start {start} offset {offset}"
      );
      assert_ne!(get16(&out.data, field), 0);
      assert_eq!(&out.data[..field], &data[..field]);
      assert_eq!(&out.data[field + 2..], &data[field + 2..]);
    }
  }

  #[test]
  fn plain_packets_pass_through() {
    let pkt = build::udp(&ip(false), 1, 2, b"abc").unwrap();
    for flags in [0, VIRTIO_NET_HDR_F_DATA_VALID] {
      let mut out = Batch::default();
      let hdr = VirtioNetHdr {
        flags,
        ..Default::default()
      };
      assert_eq!(split(&hdr, &pkt, &mut out).unwrap(), 1);
      assert_eq!(out.data, pkt);
      // The frame form decodes the header first.
      let mut frame = hdr.encode_with(Endian::Big).to_vec();
      frame.extend_from_slice(&pkt);
      let mut out2 = Batch::default();
      assert_eq!(split_frame(&frame, Endian::Big, &mut out2).unwrap(), 1);
      assert_eq!(out2.data, pkt);
    }
  }

  #[test]
  fn inconsistent_input_is_a_typed_error_and_appends_nothing() {
    let mut rng = Rng::new(1);
    let payload = rng.bytes(3000);
    let tcp4 = build::tcp(
      &ip(false),
      &TcpFields {
        src_port: 1,
        dst_port: 2,
        flags: 0x10,
        ..Default::default()
      },
      &payload,
    )
    .unwrap();
    let tcp6 = build::tcp(
      &ip(true),
      &TcpFields {
        src_port: 1,
        dst_port: 2,
        flags: 0x10,
        ..Default::default()
      },
      &payload,
    )
    .unwrap();
    let udp4 = build::udp(&ip(false), 1, 2, &payload).unwrap();
    let (h4, s4) = make_super(&tcp4, 1000);
    let (h6, s6) = make_super(&tcp6, 1000);
    let (hu, su) = make_super(&udp4, 1000);
    let edit = |h: VirtioNetHdr, f: &dyn Fn(&mut VirtioNetHdr)| {
      let mut h = h;
      f(&mut h);
      h
    };
    let bytes = |p: &Vec<u8>, f: &dyn Fn(&mut Vec<u8>)| {
      let mut p = p.clone();
      f(&mut p);
      p
    };
    let cases: Vec<(&str, VirtioNetHdr, Vec<u8>)> = vec![
      ("gso_size 0", edit(h4, &|h| h.gso_size = 0), s4.clone()),
      (
        "hdr_len beyond packet",
        edit(h4, &|h| h.hdr_len = 4000),
        s4.clone(),
      ),
      ("TCPV4 on IPv6", h4, s6.clone()),
      ("TCPV6 on IPv4", h6, s4.clone()),
      (
        "TCPV4 on UDP",
        edit(hu, &|h| h.gso_type = VIRTIO_NET_HDR_GSO_TCPV4),
        su.clone(),
      ),
      (
        "UDP_L4 on TCP",
        edit(h4, &|h| h.gso_type = VIRTIO_NET_HDR_GSO_UDP_L4),
        s4.clone(),
      ),
      (
        "UDP_L4 with ECN",
        edit(hu, &|h| h.gso_type |= VIRTIO_NET_HDR_GSO_ECN),
        su.clone(),
      ),
      (
        "UFO",
        edit(hu, &|h| h.gso_type = VIRTIO_NET_HDR_GSO_UDP),
        su.clone(),
      ),
      ("unknown gso type", edit(h4, &|h| h.gso_type = 2), s4.clone()),
      (
        "ECN without GSO",
        VirtioNetHdr {
          gso_type: VIRTIO_NET_HDR_GSO_ECN,
          ..Default::default()
        },
        s4.clone(),
      ),
      ("csum_start wrong", edit(h4, &|h| h.csum_start = 21), s4.clone()),
      ("csum_offset wrong", edit(h6, &|h| h.csum_offset = 6), s6.clone()),
      (
        "csum beyond packet",
        VirtioNetHdr {
          flags: 1,
          csum_start: 2999,
          csum_offset: 60,
          ..Default::default()
        },
        s4.clone(),
      ),
      ("truncated", h4, s4[..2000].to_vec()),
      ("IPv4 total length short", h4, bytes(&s4, &|p| put16(p, 2, 2000))),
      ("IPv6 payload length long", h6, bytes(&s6, &|p| put16(p, 4, 4000))),
      ("IPv4 fragment", h4, bytes(&s4, &|p| p[6] |= 0x20)),
      ("UDP length wrong", hu, bytes(&su, &|p| put16(p, 24, 100))),
      (
        "TCP data offset past packet",
        edit(h4, &|h| h.hdr_len = 0),
        bytes(&s4, &|p| {
          p.truncate(50);
          put16(p, 2, 50);
          p[32] = 0xf0
        }),
      ),
      ("not IP", h4, bytes(&s4, &|p| p[0] = 0x75)),
      ("empty", VirtioNetHdr::default(), vec![]),
    ];
    for (name, hdr, pkt) in cases {
      let mut out = Batch::default();
      out.push(b"x");
      let err = split(&hdr, &pkt, &mut out).expect_err(name);
      assert_eq!(err.kind(), ErrorKind::InvalidPacket, "{name}: {err}");
      assert_eq!(
        plan(&hdr, &pkt).unwrap_err().kind(),
        ErrorKind::InvalidPacket,
        "{name}"
      );
      assert_eq!(
        (out.data.as_slice(), out.lens.as_slice()),
        (&b"x"[..], &[1u32][..]),
        "{name}"
      );
    }
    // The header alone is checked too.
    assert!(split_frame(&[0; 9], Endian::Little, &mut Batch::default()).is_err());
  }

  #[test]
  fn a_plan_splits_its_packet_like_split_and_refuses_another_length() {
    let mut rng = Rng::new(3);
    let payload = rng.bytes(5000);
    let tcp = build::tcp(
      &ip(true),
      &TcpFields {
        src_port: 1,
        dst_port: 2,
        flags: 0x18,
        options: TS,
        ..Default::default()
      },
      &payload,
    )
    .unwrap();
    let udp = build::udp(&ip(false), 4242, 53, &payload).unwrap();
    let (tcp_hdr, tcp_sp) = make_super(&tcp, 1200);
    let (udp_hdr, udp_sp) = make_super(&udp, 1472);
    let mut csum_hdr = udp_hdr;
    csum_hdr.gso_type = VIRTIO_NET_HDR_GSO_NONE;
    csum_hdr.gso_size = 0;
    let cases = [
      ("tcp super-packet", tcp_hdr, tcp_sp),
      ("udp super-packet", udp_hdr, udp_sp.clone()),
      ("checksum to complete", csum_hdr, udp_sp),
      ("plain", VirtioNetHdr::default(), udp),
    ];
    for (name, hdr, pkt) in cases {
      let p = plan(&hdr, &pkt).unwrap();
      let (mut want, mut got) = (Batch::default(), Batch::default());
      split(&hdr, &pkt, &mut want).unwrap();
      got.push(b"x");
      assert_eq!(p.split(&pkt, &mut got).unwrap(), want.len(), "{name}");
      assert_eq!(
        (got.len() - 1, got.data.len() - 1),
        (p.segments, p.bytes),
        "{name}"
      );
      assert_eq!(&got.data[1..], &want.data[..], "{name}");
      assert_eq!(&got.lens[1..], &want.lens[..], "{name}");
      // A plan is for its packet: one of another length is refused whole, nothing appended.
      let mut out = Batch::default();
      let err = p.split(&pkt[..pkt.len() - 1], &mut out).unwrap_err();
      assert_eq!(err.kind(), ErrorKind::InvalidPacket, "{name}: {err}");
      assert!(out.is_empty() && out.data.is_empty(), "{name}");
    }
  }
}
