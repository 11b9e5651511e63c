//! Raw header access, the in-place NAT rewrite with incremental checksums (RFC 1624), and small builders that
//! write a whole IPv4/IPv6 packet into a caller's buffer.

use std::net::{IpAddr, SocketAddr};

use tunkit_core::packet::{checksum, proto};

#[inline]
pub(crate) fn get16(b: &[u8], off: usize) -> u16 {
  u16::from_be_bytes([b[off], b[off + 1]])
}

#[inline]
pub(crate) fn put16(b: &mut [u8], off: usize, v: u16) {
  b[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

/// Offset and length of the source address in the IP header; the destination follows it.
#[inline]
fn addr_field(v6: bool) -> (usize, usize) {
  if v6 {
    (8, 16)
  } else {
    (12, 4)
  }
}

/// Writes `ip` (of the packet's family) as raw bytes into `dst`.
#[inline]
fn put_ip(dst: &mut [u8], ip: IpAddr) {
  match ip {
    IpAddr::V4(a) => dst.copy_from_slice(&a.octets()),
    IpAddr::V6(a) => dst.copy_from_slice(&a.octets()),
  }
}

/// Rewrites the addresses and ports of the TCP or UDP packet `pkt` (a validated, unfragmented IPv4/IPv6 packet
/// whose transport header starts at `l4` and whose checksum field is at `l4 + csum_off`) to `src -> dst`, both
/// of the packet's family. The IPv4 header checksum and the transport checksum (whose pseudo-header covers
/// the addresses) are updated incrementally, so the cost does not depend on the payload size; a packet whose
/// checksums were right stays right, a wrong one stays wrong. The length never changes.
///
/// With `partial` the transport checksum field holds only the folded, uncomplemented pseudo-header sum (a
/// virtio `NEEDS_CSUM` packet, completed later by the kernel or [`tunkit_core::packet::gso::split`]): it is
/// updated for the addresses only, since the ports are not part of it.
pub(crate) fn rewrite(
  pkt: &mut [u8],
  l4: usize,
  csum_off: usize,
  src: SocketAddr,
  dst: SocketAddr,
  partial: bool,
) {
  let v6 = pkt[0] >> 4 == 6;
  let (off, alen) = addr_field(v6);
  let mut new_addrs = [0u8; 32];
  put_ip(&mut new_addrs[..alen], src.ip());
  put_ip(&mut new_addrs[alen..2 * alen], dst.ip());
  let new_addrs = &new_addrs[..2 * alen];
  let mut new_ports = [0u8; 4];
  new_ports[..2].copy_from_slice(&src.port().to_be_bytes());
  new_ports[2..].copy_from_slice(&dst.port().to_be_bytes());

  let old_addrs = &pkt[off..off + 2 * alen];
  let old_ports = &pkt[l4..l4 + 4];
  let field = get16(pkt, l4 + csum_off);
  let c = if partial {
    // The field is a sum S, not a checksum ~S: update ~S and complement back.
    !checksum::update_bytes(!field, old_addrs, new_addrs)
  } else {
    let c = checksum::update_bytes(field, old_addrs, new_addrs);
    checksum::update_bytes(c, old_ports, &new_ports)
  };
  if !v6 {
    let ipc = checksum::update_bytes(get16(pkt, 10), old_addrs, new_addrs);
    put16(pkt, 10, ipc);
  }
  pkt[off..off + 2 * alen].copy_from_slice(new_addrs);
  pkt[l4..l4 + 4].copy_from_slice(&new_ports);
  put16(pkt, l4 + csum_off, c);
}

/// Clears `out` and writes an IP header from `src` to `dst` (same family) for a transport part of `l4_len`
/// bytes: IPv4 with DF, TTL 64 and its header checksum; IPv6 with hop limit 64. Returns the transport
/// offset. The caller checked that the length fits.
pub(crate) fn begin_ip(out: &mut Vec<u8>, src: IpAddr, dst: IpAddr, protocol: u8, l4_len: usize) -> usize {
  out.clear();
  match (src, dst) {
    (IpAddr::V4(s), IpAddr::V4(d)) => {
      let total = (20 + l4_len) as u16;
      out.extend_from_slice(&[0x45, 0]);
      out.extend_from_slice(&total.to_be_bytes());
      out.extend_from_slice(&[0, 0, 0x40, 0, 64, protocol, 0, 0]);
      out.extend_from_slice(&s.octets());
      out.extend_from_slice(&d.octets());
      let c = checksum::checksum(&out[..20]);
      put16(out, 10, c);
      20
    }
    (IpAddr::V6(s), IpAddr::V6(d)) => {
      out.extend_from_slice(&[0x60, 0, 0, 0]);
      out.extend_from_slice(&(l4_len as u16).to_be_bytes());
      out.extend_from_slice(&[protocol, 64]);
      out.extend_from_slice(&s.octets());
      out.extend_from_slice(&d.octets());
      40
    }
    _ => unreachable!("begin_ip with mixed families (callers check)"),
  }
}

/// Fills the transport checksum (at `l4 + csum_off`, currently zero) of the packet built in `out`.
pub(crate) fn finish_l4(out: &mut [u8], l4: usize, csum_off: usize, protocol: u8) {
  let v6 = out[0] >> 4 == 6;
  let (off, alen) = addr_field(v6);
  let ph = checksum::pseudo_header(
    &out[off..off + alen],
    &out[off + alen..off + 2 * alen],
    protocol,
    (out.len() - l4) as u32,
  );
  let s = checksum::sum(&out[l4..], ph);
  let c = if protocol == proto::UDP {
    checksum::finish_nonzero(s)
  } else {
    checksum::finish(s)
  };
  put16(out, l4 + csum_off, c);
}

/// Builds a TCP segment with no options and no payload (a RST) from `src` to `dst` into `out`.
pub(crate) fn tcp_segment(
  out: &mut Vec<u8>,
  src: SocketAddr,
  dst: SocketAddr,
  seq: u32,
  ack: u32,
  flags: u8,
) {
  let l4 = begin_ip(out, src.ip(), dst.ip(), proto::TCP, 20);
  out.extend_from_slice(&src.port().to_be_bytes());
  out.extend_from_slice(&dst.port().to_be_bytes());
  out.extend_from_slice(&seq.to_be_bytes());
  out.extend_from_slice(&ack.to_be_bytes());
  out.extend_from_slice(&[5 << 4, flags, 0, 0, 0, 0, 0, 0]);
  finish_l4(out, l4, 16, proto::TCP);
}

/// Builds a UDP datagram from `src` to `dst` carrying `payload` into `out`. The caller checked that it fits.
pub(crate) fn udp_datagram(out: &mut Vec<u8>, src: SocketAddr, dst: SocketAddr, payload: &[u8]) {
  let l4 = begin_ip(out, src.ip(), dst.ip(), proto::UDP, 8 + payload.len());
  out.extend_from_slice(&src.port().to_be_bytes());
  out.extend_from_slice(&dst.port().to_be_bytes());
  out.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
  out.extend_from_slice(&[0, 0]);
  out.extend_from_slice(payload);
  finish_l4(out, l4, 6, proto::UDP);
}

/// An IPv4-mapped IPv6 socket address (`[::ffff:a.b.c.d]:n`, as a dual-stack socket reports IPv4 peers) as
/// the IPv4 one; any other address with flow info and scope dropped, so it compares equal to the NAT key.
pub(crate) fn normalize(sa: SocketAddr) -> SocketAddr {
  match sa {
    SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
      Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
      None => SocketAddr::new(IpAddr::V6(*v6.ip()), v6.port()),
    },
    v4 => v4,
  }
}
