//! ICMP/ICMPv6 echo: answered locally, consumed, or passed, per [`IcmpMode`]. Other ICMP messages (errors,
//! neighbour discovery, router solicitations, echo replies) always pass.

use tunkit_core::packet::build;
use tunkit_core::packet::{IcmpHeader, Packet};

use crate::{IcmpMode, Verdict};

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
