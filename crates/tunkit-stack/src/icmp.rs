//! ICMP/ICMPv6 echo: answered locally, consumed, or passed, per [`IcmpMode`]. Other ICMP messages (errors,
//! neighbour discovery, router solicitations, echo replies) always pass. And the destination-unreachable
//! errors the stack sends a client for a refused TCP flow or UDP datagram.

use std::net::IpAddr;

use tunkit_core::packet::build;
use tunkit_core::packet::{checksum, proto, IcmpHeader, Packet};

use crate::{wire, IcmpMode, Verdict};

/// How much of the offending packet an ICMP error quotes: as much as fits an IPv4 error of 576 bytes
/// (RFC 1812 4.3.2.3; at least the IP header and 8 bytes of the transport, RFC 792), an ICMPv6 error of 1280
/// (RFC 4443 2.4 (c)).
pub(crate) fn quote_len(v6: bool) -> usize {
  if v6 {
    1280 - 40 - 8
  } else {
    576 - 20 - 8
  }
}

/// Which destination-unreachable error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unreachable {
  /// IPv4 type 3 code 1 (host unreachable), ICMPv6 type 1 code 3 (address unreachable): a client's connect
  /// fails with `EHOSTUNREACH`.
  Host,
  /// IPv4 type 3 code 3, ICMPv6 type 1 code 4 (port unreachable): a connected UDP socket's next call fails
  /// with `ECONNREFUSED`.
  Port,
}

/// Builds into `out` (cleared first) the ICMP destination unreachable of kind `kind` from `from` to `to`,
/// quoting `quote` (the offending packet as the client sent it, already cut to [`quote_len`]).
///
/// `from` is the destination the client addressed. A router on the path would use its own address, but the
/// path here is the application's upstream and has no address the client knows; the client's kernel matches
/// the error to its socket by the quoted header, not by the source. `from` is unicast: multicast and
/// broadcast destinations never reach the callers.
pub(crate) fn unreachable(out: &mut Vec<u8>, from: IpAddr, to: IpAddr, kind: Unreachable, quote: &[u8]) {
  let v6 = to.is_ipv6();
  let (protocol, kind, code) = match (v6, kind) {
    (true, Unreachable::Host) => (proto::ICMPV6, 1, 3),
    (true, Unreachable::Port) => (proto::ICMPV6, 1, 4),
    (false, Unreachable::Host) => (proto::ICMP, 3, 1),
    (false, Unreachable::Port) => (proto::ICMP, 3, 3),
  };
  let l4 = wire::begin_ip(out, from, to, protocol, 8 + quote.len());
  out.extend_from_slice(&[kind, code, 0, 0, 0, 0, 0, 0]);
  out.extend_from_slice(quote);
  if v6 {
    wire::finish_l4(out, l4, 2, protocol); // with the pseudo-header
  } else {
    let c = checksum::checksum(&out[l4..]);
    wire::put16(out, l4 + 2, c);
  }
}

/// The verdict for the ICMP packet `pkt` (parsed as `p`, unfragmented, of a configured family, not to the
/// gateway nor to a multicast or broadcast address). In `Reply` mode the answer goes to `out`; a request
/// the reply builder refuses (a bad checksum) is dropped, as a kernel would.
pub(crate) fn inbound(mode: IcmpMode, pkt: &[u8], p: &Packet, out: &mut Vec<u8>) -> Verdict {
  let echo = match IcmpHeader::parse(&pkt[p.l4_offset..p.ip_len]) {
    Ok(h) => h.is_echo_request(p.family),
    Err(_) => false,
  };
  if !echo {
    return Verdict::Pass;
  }
  match mode {
    IcmpMode::Pass => Verdict::Pass,
    IcmpMode::Drop => Verdict::Drop,
    IcmpMode::Reply => match build::echo_reply(&pkt[..p.ip_len]) {
      Ok(reply) => {
        out.clear();
        out.extend_from_slice(&reply);
        Verdict::Reply
      }
      Err(_) => Verdict::Drop,
    },
  }
}
