//! Segment arrival (RFC 9293 section 3.10.7), with PAWS (RFC 7323), RFC 5961 challenge ACKs, SACK
//! scoreboard updates, duplicate-ACK counting and the entry into fast recovery (RFC 5681, 6582, 6675).

use std::time::Duration;

use super::{note, Conn, Ctx, Recovery, State, DUP_THRESH};
use crate::error::Error;
use crate::outbox::Outbox;
use crate::recvbuf::Insert;
use crate::seq::Seq;
use crate::wire::{Flags, Segment};

/// TS.Recent older than this is not used for PAWS (RFC 7323 5.5: 24 days).
const PAWS_IDLE: Duration = Duration::from_secs(24 * 24 * 3600);

impl Conn {
  /// Processes one segment of this connection. Replies are left to [`Conn::output`] (flags such as
  /// `ack_now`), except RSTs, written to `out` at once.
  pub(crate) fn on_segment(&mut self, ctx: &mut Ctx, seg: &Segment, out: &mut Outbox) {
    self.stats.segs_in += 1;
    self.last_rx = ctx.now;
    self.ka_probes = 0;
    match self.state {
      State::SynSent => return self.on_syn_sent(ctx, seg, out),
      State::Closed | State::TimeWait => return,
      _ => {}
    }
    let f = seg.flags;
    let mut seq = seg.seq;
    let mut payload = seg.payload;
    let mut syn = f.has(Flags::SYN);
    let mut fin = f.has(Flags::FIN);
    if self.state == State::SynReceived && syn && !f.has(Flags::RST) && seq == self.irs {
      if !f.has(Flags::ACK) {
        // A retransmitted SYN: our SYN-ACK was lost.
        self.syn_pending = true;
        return;
      }
      if seg.ack == self.iss + 1 {
        // Simultaneous open: the peer's SYN-ACK acknowledges our SYN. Its SYN is old news.
        seq = self.irs + 1;
        syn = false;
        payload = &[];
        fin = false;
      }
    }

    // PAWS (RFC 7323 5.3).
    let ts = seg.options.timestamps;
    if self.ts_ok && !f.has(Flags::RST) {
      if let Some(t) = ts {
        let old = (t.val.wrapping_sub(self.ts_recent) as i32) < 0;
        if old && ctx.now.saturating_sub(self.ts_recent_at) < PAWS_IDLE {
          self.stats.paws_drops += 1;
          self.ack_now = true;
          return;
        }
      }
    }

    // First: is the segment acceptable?
    let wnd = self.rcv_adv.since(self.rcv_nxt);
    let len = payload.len() as u32 + syn as u32 + fin as u32;
    let nxt = self.rcv_nxt;
    let acceptable = if len == 0 {
      if wnd == 0 {
        seq == nxt
      } else {
        seq.in_range(nxt, nxt + wnd)
      }
    } else if wnd == 0 {
      // Special allowance (RFC 9293): the ACK of a segment at RCV.NXT is processed, its text is not.
      if seq == nxt && !f.has(Flags::RST) {
        payload = &[];
        fin = false;
        syn = false;
        self.ack_now = true;
        true
      } else {
        false
      }
    } else {
      seq.in_range(nxt, nxt + wnd) || (seq + (len - 1)).in_range(nxt, nxt + wnd)
    };
    if !acceptable {
      if !f.has(Flags::RST) {
        self.ack_now = true;
      }
      return;
    }

    // Second: RST (RFC 5961 3.2: exact match resets, anything else in the window is challenged).
    if f.has(Flags::RST) {
      if seq == nxt {
        self.on_reset(ctx);
      } else {
        self.challenge_ack(ctx);
      }
      return;
    }

    // TS.Recent (RFC 7323 4.3).
    if self.ts_ok {
      if let Some(t) = ts {
        if seq <= self.last_ack_sent && (t.val.wrapping_sub(self.ts_recent) as i32) >= 0 {
          self.ts_recent = t.val;
          self.ts_recent_at = ctx.now;
        }
      }
    }

    // Fourth: a SYN, whatever its sequence number (RFC 5961 4.2; RFC 9293 3.10.7.4).
    if syn {
      self.challenge_ack(ctx);
      return;
    }

    // Trim what lies before RCV.NXT.
    if seq < nxt {
      let skip = nxt.since(seq);
      let d = (skip as usize).min(payload.len());
      payload = &payload[d..];
      seq += d as u32;
      if fin && seq < nxt {
        fin = false; // An old FIN, already consumed.
      }
      self.ack_now = true;
    }

    // Fifth: the ACK field.
    if !f.has(Flags::ACK) {
      return;
    }
    if self.state == State::SynReceived {
      if !(self.snd_una < seg.ack && seg.ack <= self.snd_nxt) {
        self.send_rst(ctx, out, seg.ack, None);
        return;
      }
      self.state = if self.fin_queued {
        State::FinWait1
      } else {
        State::Established
      };
      self.snd_wnd = (seg.window as u32) << self.snd_wscale;
      self.max_snd_wnd = self.snd_wnd;
      self.snd_wl1 = seq;
      self.snd_wl2 = seg.ack;
      ctx.stats.established += 1;
      self.notes |= note::CONNECTED | note::WRITABLE;
    }
    if !self.process_ack(
      ctx,
      seg,
      seq,
      seg.payload.is_empty() && !f.has(Flags::FIN) && !syn,
    ) {
      return;
    }
    match self.state {
      State::FinWait1 if self.fin_acked => {
        self.state = State::FinWait2;
      }
      State::Closing if self.fin_acked => {
        self.state = State::TimeWait;
        return;
      }
      State::LastAck if self.fin_acked => {
        self.close_now(None);
        return;
      }
      _ => {}
    }

    // Seventh: the text.
    if !payload.is_empty() && matches!(self.state, State::Established | State::FinWait1 | State::FinWait2) {
      if self.orphan {
        // Nobody will read it (the application closed): reset, like a kernel does.
        let nxt = self.snd_nxt;
        self.send_rst(ctx, out, nxt, None);
        self.close_now(Some(Error::Reset));
        return;
      }
      self.receive_data(ctx, seq, payload);
    }

    // Eighth: the FIN.
    if fin {
      let at = seq + payload.len() as u32;
      if at <= self.rcv_adv && self.rcv_fin_seq.is_none() {
        self.rcv_fin_seq = Some(at);
      }
      self.ack_now = true;
    }
    self.consume_fin();
  }

  /// SYN_SENT (RFC 9293 3.10.7.3).
  fn on_syn_sent(&mut self, ctx: &mut Ctx, seg: &Segment, out: &mut Outbox) {
    let f = seg.flags;
    let mut ack_ok = false;
    if f.has(Flags::ACK) {
      if seg.ack <= self.iss || seg.ack > self.snd_nxt {
        if !f.has(Flags::RST) {
          self.send_rst(ctx, out, seg.ack, None);
        }
        return;
      }
      ack_ok = true;
    }
    if f.has(Flags::RST) {
      if ack_ok {
        ctx.stats.resets_received += 1;
        self.close_now(Some(Error::Refused));
      }
      return;
    }
    if !f.has(Flags::SYN) {
      return;
    }
    self.irs = seg.seq;
    self.rcv_nxt = seg.seq + 1;
    self.rcv_adv = self.rcv_nxt + self.syn_window as u32;
    self.last_ack_sent = self.rcv_nxt;
    self.negotiate(ctx.cfg, &seg.options, ctx.now);
    self.snd_wnd = seg.window as u32;
    self.max_snd_wnd = self.snd_wnd;
    self.snd_wl1 = seg.seq;
    self.snd_wl2 = seg.ack;
    self.ack_now = true;
    if ack_ok {
      self.snd_una = seg.ack;
      self.state = if self.fin_queued {
        State::FinWait1
      } else {
        State::Established
      };
      if let Some((s, t)) = self.rtt_probe.take() {
        if seg.ack >= s {
          self.rtt.sample(ctx.now.saturating_sub(t));
        }
      }
      self.rtt.backoff = 0;
      self.retries = 0;
      self.rto_at = None;
      ctx.stats.established += 1;
      self.notes |= note::CONNECTED | note::WRITABLE;
    } else {
      // Simultaneous open: answer with SYN-ACK (same ISS), wait for the ACK of our SYN.
      self.state = State::SynReceived;
      self.syn_pending = true;
      self.ack_now = false;
    }
  }

  /// An acceptable RST.
  fn on_reset(&mut self, ctx: &mut Ctx) {
    ctx.stats.resets_received += 1;
    let err = match self.state {
      State::SynReceived if self.passive => None,
      State::SynReceived => Some(Error::Refused),
      State::Established | State::FinWait1 | State::FinWait2 | State::CloseWait => Some(Error::Reset),
      _ => None,
    };
    self.close_now(err);
  }

  /// Queues a challenge ACK (RFC 5961), within the endpoint-wide rate limit.
  pub(crate) fn challenge_ack(&mut self, ctx: &mut Ctx) {
    if ctx.challenge.take(ctx.now, ctx.cfg.challenge_ack_limit) {
      self.ack_now = true;
      self.stats.challenge_acks += 1;
      ctx.stats.challenge_acks += 1;
    } else {
      ctx.stats.challenge_acks_limited += 1;
    }
  }

  /// The ACK field of an acceptable segment (RFC 9293 "fifth"). False when the segment must be dropped.
  fn process_ack(&mut self, ctx: &mut Ctx, seg: &Segment, seq: Seq, pure: bool) -> bool {
    let ack = seg.ack;
    if ack > self.snd_nxt {
      self.ack_now = true;
      return false;
    }
    if ack < self.snd_una - self.max_snd_wnd.max(1) {
      self.challenge_ack(ctx);
      return false;
    }
    let smss = self.smss();
    let mut newly_sacked = 0;
    if self.sack_ok {
      for &(l, r) in seg.options.sack.as_slice() {
        let l = l.max(ack).max(self.snd_una);
        let r = r.min(self.snd_nxt);
        if l < r {
          newly_sacked += self.scoreboard.insert(l, r);
        }
      }
    }
    let wnd = (seg.window as u32) << self.snd_wscale;
    let old_wnd = self.snd_wnd;
    if self.snd_wl1 < seq || (self.snd_wl1 == seq && self.snd_wl2 <= ack) {
      self.snd_wnd = wnd;
      self.snd_wl1 = seq;
      self.snd_wl2 = ack;
      self.max_snd_wnd = self.max_snd_wnd.max(wnd);
    }
    let acked = ack.since(self.snd_una);
    let flight = self.flight();
    if acked > 0 {
      self.on_new_ack(ctx, seg, ack, acked, flight);
    } else if ack == self.snd_una && pure && flight > 0 && wnd == old_wnd && self.syn_acked() {
      self.dupacks += 1;
      self.stats.dup_acks += 1;
      if self.recovery.is_none() && self.dupacks == DUP_THRESH && self.snd_una > self.recover {
        self.enter_fast_recovery();
      }
    }
    let thresh = (DUP_THRESH - 1) * smss;
    if self.sack_ok
      && newly_sacked > 0
      && self.recovery.is_none()
      && self.snd_una > self.recover
      && self.scoreboard.lost_edge(self.snd_una, thresh) > self.snd_una
    {
      self.enter_fast_recovery();
    }
    let una = self.snd_una;
    if let Some(r) = self.recovery.as_mut() {
      if self.sack_ok {
        r.lost_to = r.lost_to.max(self.scoreboard.lost_edge(una, thresh));
      }
      r.lost_to = r.lost_to.max(una).min(self.snd_nxt);
      r.high_rxt = r.high_rxt.max(una);
    }
    if self.snd_wnd > old_wnd {
      self.persist_at = None;
      self.persist_backoff = 0;
    }
    true
  }

  /// An ACK of new data (or of our SYN or FIN).
  fn on_new_ack(&mut self, ctx: &mut Ctx, seg: &Segment, ack: Seq, acked: u32, flight: u32) {
    let smss = self.smss();
    if let Some(u) = self.undo.take() {
      if let Some(t) = seg.options.timestamps {
        if self.ts_ok && (t.ecr.wrapping_sub(u.tsval) as i32) < 0 && t.ecr != 0 {
          // Eifel (RFC 3522): the ACK answers the original, the timeout was spurious.
          self.cc.cwnd = self.cc.cwnd.max(u.cwnd);
          self.cc.ssthresh = u.ssthresh;
          self.recovery = None;
          self.stats.spurious_rto += 1;
        }
      }
    }
    let freed = self.sendbuf.ack(ack);
    if self.fin_sent && ack == self.fin_seq + 1 {
      self.fin_acked = true;
    }
    self.snd_una = ack;
    self.scoreboard.advance(ack);
    self.dupacks = 0;
    if let Some((s, t)) = self.rtt_probe {
      if ack >= s {
        self.rtt.sample(ctx.now.saturating_sub(t));
        self.rtt_probe = None;
      }
    }
    self.rtt.backoff = 0;
    self.retries = 0;
    match self.recovery {
      Some(r) if ack >= r.point => {
        if r.fast {
          self.cc.on_recovery_exit(self.flight(), smss);
        }
        self.recovery = None;
      }
      Some(mut r) => {
        if !self.sack_ok && r.fast {
          // NewReno partial ACK (RFC 6582 3.2 step 5): the next segment is lost too.
          r.lost_to = r.lost_to.max((ack + smss).min(self.snd_nxt));
          r.high_rxt = ack;
          r.force = true;
        }
        if !r.fast {
          self.cc.on_ack(acked, flight, smss);
        }
        self.recovery = Some(r);
      }
      None => self.cc.on_ack(acked, flight, smss),
    }
    self.rto_at = if self.flight() == 0 {
      None
    } else {
      Some(ctx.now + self.rtt.rto())
    };
    self.stats.bytes_acked += freed as u64;
    if freed > 0 {
      if self.write_blocked {
        self.write_blocked = false;
        self.notes |= note::WRITABLE;
      }
      if self.sendbuf.len() == 0 {
        self.sendbuf.trim(ctx.cfg.min_buffer.max(64 << 10));
      }
    }
  }

  /// Fast retransmit: enter recovery, halve the window, presume the first unacknowledged segment lost.
  fn enter_fast_recovery(&mut self) {
    let smss = self.smss();
    self.cc.on_fast_loss(self.flight(), smss);
    let una = self.snd_una;
    let first = (una + smss).min(self.snd_nxt);
    let lost = if self.sack_ok {
      self.scoreboard.lost_edge(una, (DUP_THRESH - 1) * smss)
    } else {
      una
    };
    self.recovery = Some(Recovery {
      point: self.snd_nxt,
      high_rxt: una,
      lost_to: first.max(lost),
      fast: true,
      force: true,
    });
    self.recover = self.snd_nxt;
    self.stats.fast_retransmits += 1;
    self.undo = None;
  }

  /// In-window payload at `seq >= RCV.NXT`.
  fn receive_data(&mut self, ctx: &mut Ctx, seq: Seq, payload: &[u8]) {
    let mut room = self.rcv_adv.since(seq) as usize;
    if let Some(f) = self.rcv_fin_seq {
      room = room.min(f.since(seq) as usize);
    }
    let payload = &payload[..payload.len().min(room)];
    if payload.is_empty() {
      self.ack_now = true;
      return;
    }
    self.rcv_mss = self.rcv_mss.max(payload.len() as u32).min(self.mss_adv as u32);
    match self.recvbuf.insert(self.rcv_nxt, seq, payload) {
      Insert::InOrder { bytes, filled } => {
        self.rcv_nxt += bytes;
        self.stats.bytes_received += bytes as u64;
        self.notes |= note::READABLE;
        self.unacked_rx += bytes;
        if filled
          || self.recvbuf.has_ooo()
          || ctx.cfg.delayed_ack.is_zero()
          || self.unacked_rx >= 2 * self.rcv_mss
        {
          self.ack_now = true;
        } else if self.delack_at.is_none() {
          self.delack_at = Some(ctx.now + ctx.cfg.delayed_ack);
        }
      }
      Insert::OutOfOrder => {
        self.stats.ooo_segments += 1;
        self.ack_now = true;
      }
      Insert::Dropped => {
        self.stats.ooo_dropped += 1;
        self.ack_now = true;
      }
    }
  }

  /// Takes the peer's FIN once everything before it arrived.
  fn consume_fin(&mut self) {
    if self.fin_rcvd || self.rcv_fin_seq != Some(self.rcv_nxt) {
      return;
    }
    self.rcv_nxt += 1;
    self.fin_rcvd = true;
    self.ack_now = true;
    self.notes |= note::READABLE;
    self.state = match self.state {
      State::SynReceived | State::Established => State::CloseWait,
      State::FinWait1 if self.fin_acked => State::TimeWait,
      State::FinWait1 => State::Closing,
      State::FinWait2 => State::TimeWait,
      s => s,
    };
  }
}
