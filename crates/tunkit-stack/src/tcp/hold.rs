//! Pending flows ("connect before accept", `hold_syn`): a new flow's SYN is kept, rewritten and as it
//! arrived, until the application has tried the destination itself and decides. Accepting writes the stored
//! SYN to the kernel; refusing answers the client (RST, or ICMP unreachable quoting its SYN) and frees the NAT
//! port at once, since the kernel never saw the flow.

use std::net::SocketAddr;
use std::time::Instant;

use tunkit_core::packet::{checksum, TcpHeader};

use super::{reset_for, Segment, TcpTable};
use crate::{icmp, wire, Verdict};

/// What the application decided for a held SYN ([`crate::Stack::decide`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
  /// The destination answered: the stored SYN goes to the kernel, the flow goes on as any other.
  Accept,
  /// The destination refused the connection: the client gets a RST for its SYN ("connection refused").
  Reset,
  /// The destination could not be reached: the client gets an ICMP host unreachable (ICMPv6 address
  /// unreachable), which fails its connect at once with `EHOSTUNREACH`.
  Unreachable,
}

/// The state of a pending flow.
#[derive(Debug)]
pub(super) struct Held {
  /// The SYN rewritten to `B:n -> A:P`, checksums complete: written on `Accept`.
  rewritten: Vec<u8>,
  /// The client's SYN as it arrived (checksums complete), cut to what an ICMP error quotes.
  quote: Vec<u8>,
  /// The client's SYN, for the RST.
  seg: Segment,
  /// When the flow was held; the hold expires `hold_timeout` later.
  since: Instant,
}

impl Held {
  fn new(pkt: &[u8], seg: &Segment, nat: SocketAddr, listener: SocketAddr, since: Instant) -> Box<Held> {
    let mut original = pkt[..seg.ip_len].to_vec();
    let csum = seg.l4 + TcpHeader::CHECKSUM_OFFSET;
    if seg.partial {
      // NEEDS_CSUM: the field holds the pseudo-header sum, so the segment's plain sum is the checksum. The
      // stored packets are complete: the decision writes them without a virtio header.
      let c = checksum::checksum(&original[seg.l4..]);
      wire::put16(&mut original, csum, c);
    }
    let mut rewritten = original.clone();
    wire::rewrite(
      &mut rewritten,
      seg.l4,
      TcpHeader::CHECKSUM_OFFSET,
      nat,
      listener,
      false,
    );
    original.truncate(icmp::quote_len(seg.src.is_ipv6()));
    original.shrink_to_fit();
    Box::new(Held {
      rewritten,
      quote: original,
      seg: Segment {
        partial: false,
        ..*seg
      },
      since,
    })
  }
}

impl TcpTable {
  /// Holds the SYN of the flow `fid` just created instead of writing it back.
  pub(super) fn hold(
    &mut self,
    fid: u64,
    pkt: &[u8],
    seg: &Segment,
    listener: SocketAddr,
    now: Instant,
  ) -> Verdict {
    let Some(f) = self.flows.get_mut(&fid) else {
      return Verdict::Drop;
    };
    f.held = Some(Held::new(pkt, seg, f.nat, listener, now));
    self.pending += 1;
    self.counters.held += 1;
    self.holds.push_back((now + self.hold.unwrap_or_default(), fid));
    Verdict::Hold {
      flow: fid,
      client: seg.src,
      destination: seg.dst,
    }
  }

  /// A SYN on the 5-tuple of the pending flow `fid`. The same initial sequence number is a retransmission:
  /// nothing changes (the decision sends the stored SYN). Another one is a new attempt from the same client
  /// endpoint to the same destination: its SYN replaces the stored one (the flow, its id and its hold timer
  /// stay: the application is deciding for that destination already).
  pub(super) fn rehold(&mut self, fid: u64, pkt: &[u8], seg: &Segment, listener: SocketAddr, now: Instant) {
    let Some(f) = self.flows.get_mut(&fid) else { return };
    if now > f.last_seen {
      f.last_seen = now;
    }
    let Some(h) = f.held.as_mut() else { return };
    if f.isn != seg.seq {
      f.isn = seg.seq;
      *h = Held::new(pkt, seg, f.nat, listener, h.since);
    }
  }

  /// The application's decision for the pending flow `fid` (see [`crate::Stack::decide`]).
  pub fn decide(&mut self, fid: u64, decision: Decision, now: Instant, out: &mut Vec<u8>) -> bool {
    out.clear();
    let now = self.advance(now);
    let timeout = self.hold.unwrap_or_default();
    let Some(f) = self.flows.get_mut(&fid) else {
      return false;
    };
    let Some(h) = f.held.take() else {
      return false;
    };
    let info = f.info;
    if now > f.last_seen {
      f.last_seen = now;
    }
    self.pending -= 1;
    if now.saturating_duration_since(h.since) >= timeout {
      // Expired, not swept yet: removed now (and not reported by `take_expired_holds`: the caller knows).
      self.counters.hold_expired += 1;
      self.remove(fid);
      return false;
    }
    match decision {
      Decision::Accept => {
        out.extend_from_slice(&h.rewritten);
        // From here on an ordinary flow whose SYN was just written: its handshake timer starts now.
        self.handshakes.push_back((now + self.syn_idle, fid));
        self.counters.accepted += 1;
      }
      Decision::Reset => {
        reset_for(&h.seg, out);
        self.counters.refused_reset += 1;
        self.counters.resets_sent += 1;
        self.remove(fid);
      }
      Decision::Unreachable => {
        // From `D`, the destination the client dialled: the path is the application's upstream and has no
        // address the client knows. Linux `tcp_v4_err`/`tcp_v6_err` fail a `SYN_SENT` socket at once with
        // `EHOSTUNREACH`, matched by the quoted header, not by the source.
        icmp::unreachable(
          out,
          info.destination.ip(),
          info.client.ip(),
          icmp::Unreachable::Host,
          &h.quote,
        );
        self.counters.refused_unreachable += 1;
        self.remove(fid);
      }
    }
    true
  }

  /// Removes pending flows whose hold is over (their ports are freed, nothing is sent).
  pub(super) fn sweep_holds(&mut self, now: Instant) {
    let timeout = self.hold.unwrap_or_default();
    while let Some(&(t, fid)) = self.holds.front() {
      if t > now {
        break;
      }
      self.holds.pop_front();
      let Some(since) = self
        .flows
        .get(&fid)
        .and_then(|f| f.held.as_ref())
        .map(|h| h.since)
      else {
        continue; // decided (or removed) meanwhile
      };
      if since + timeout > now {
        self.holds.push_back((since + timeout, fid));
        continue;
      }
      self.counters.hold_expired += 1;
      self.expired_holds.push(fid);
      self.remove(fid);
    }
  }

  /// Pending flows removed by expiry since the last call.
  pub fn take_expired_holds(&mut self) -> Vec<u64> {
    std::mem::take(&mut self.expired_holds)
  }
}
