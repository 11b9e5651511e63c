//! Segment emission: SYN and SYN-ACK, new data within the send and congestion windows (Nagle off by
//! default, sender-side silly-window avoidance, TSO super-packets), SACK-based retransmission of lost data
//! (RFC 6675's NextSeg and pipe, with NewReno's windows), the FIN, pure ACKs, zero-window and keepalive
//! probes, and RSTs.

use std::net::SocketAddr;

use super::{Conn, Ctx, State};
use crate::options::{TcpOptions, Timestamps};
use crate::outbox::Outbox;
use crate::seq::Seq;
use crate::wire::{ip_header_len, write_packet, Flags, Header, TCP_HEADER};

/// Writes a RST (with ACK when `ack` is given) from `local` to `remote`.
pub(crate) fn write_rst(
  ctx: &mut Ctx,
  out: &mut Outbox,
  local: SocketAddr,
  remote: SocketAddr,
  seq: Seq,
  ack: Option<Seq>,
) {
  let flags = if ack.is_some() {
    Flags::RST | Flags::ACK
  } else {
    Flags::RST
  };
  let hdr = Header {
    seq,
    ack: ack.unwrap_or(Seq(0)),
    flags,
    window: 0,
  };
  let pkt = out.next();
  pkt.l4_offset = write_packet(
    &mut pkt.data,
    local,
    remote,
    &hdr,
    &TcpOptions::default(),
    (&[], &[]),
    false,
  );
  ctx.stats.packets_out += 1;
  ctx.stats.rst_sent += 1;
}

impl Conn {
  /// Emits whatever is due: called after every input, timer and application operation.
  pub(crate) fn output(&mut self, ctx: &mut Ctx, out: &mut Outbox) {
    if self.state == State::Closed {
      return;
    }
    if self.state == State::TimeWait {
      // The ACK of the FIN that brought us here.
      if self.ack_now {
        self.emit_ack(ctx, out);
      }
      return;
    }
    if self.syn_pending && !self.syn_acked() {
      self.emit_syn(ctx, out);
    }
    if self.state == State::SynSent {
      return;
    }
    if self.syn_acked() {
      self.send_data(ctx, out);
    }
    if self.probe_pending {
      self.probe_pending = false;
      self.send_probe(ctx, out);
    }
    if self.ka_pending {
      self.ka_pending = false;
      self.stats.keepalive_probes += 1;
      self.emit_old_ack(ctx, out);
    }
    if self.ack_now {
      self.emit_ack(ctx, out);
    }
    self.arm_persist(ctx);
    self.arm_keepalive(ctx);
  }

  /// A pure ACK.
  fn emit_ack(&mut self, ctx: &mut Ctx, out: &mut Outbox) {
    let opts = self.data_options(ctx);
    let window = self.advertise(ctx.cfg, ctx.budget);
    let nxt = self.snd_nxt;
    self.emit(ctx, out, nxt, Flags::ACK, &opts, None, window);
  }

  /// Sends a RST for this connection.
  pub(crate) fn send_rst(&mut self, ctx: &mut Ctx, out: &mut Outbox, seq: Seq, ack: Option<Seq>) {
    write_rst(ctx, out, self.local, self.remote, seq, ack);
    self.stats.segs_out += 1;
  }

  /// Options of a non-SYN segment: timestamps, and SACK blocks while out-of-order data is held.
  fn data_options(&self, ctx: &Ctx) -> TcpOptions {
    let mut o = TcpOptions::default();
    if self.ts_ok {
      o.timestamps = Some(Timestamps {
        val: self.tsval(ctx.now),
        ecr: self.ts_recent,
      });
    }
    if self.sack_ok && self.recvbuf.has_ooo() {
      o.sack = self.recvbuf.sack_blocks();
    }
    o
  }

  /// Writes one segment into `out` and does the ACK bookkeeping.
  #[allow(clippy::too_many_arguments)]
  fn emit(
    &mut self,
    ctx: &mut Ctx,
    out: &mut Outbox,
    seq: Seq,
    flags: Flags,
    opts: &TcpOptions,
    data: Option<(Seq, usize)>,
    window: u16,
  ) {
    let payload = match data {
      Some((s, n)) if n > 0 => self.sendbuf.slices(s, n),
      _ => (&[][..], &[][..]),
    };
    let plen = payload.0.len() + payload.1.len();
    let hdr = Header {
      seq,
      ack: self.rcv_nxt,
      flags,
      window,
    };
    let partial = ctx.cfg.checksum_offload;
    let pkt = out.next();
    pkt.l4_offset = write_packet(
      &mut pkt.data,
      self.local,
      self.remote,
      &hdr,
      opts,
      payload,
      partial,
    );
    pkt.csum_partial = partial;
    let per_seg = (self.mss_send as usize).saturating_sub(opts.encoded_len()).max(1);
    if plen > per_seg {
      pkt.gso_size = per_seg as u16;
    }
    if flags.has(Flags::ACK) {
      self.last_ack_sent = self.rcv_nxt;
      self.ack_now = false;
      self.delack_at = None;
      self.unacked_rx = 0;
    }
    self.stats.segs_out += 1;
    ctx.stats.packets_out += 1;
  }

  /// SYN (active open) or SYN-ACK (passive or simultaneous open), first or retransmitted.
  fn emit_syn(&mut self, ctx: &mut Ctx, out: &mut Outbox) {
    self.syn_pending = false;
    let synack = self.state != State::SynSent;
    if self.syn_window == 0 {
      self.syn_window = self.syn_window(ctx.cfg, ctx.budget);
    }
    let tsval = self.tsval(ctx.now);
    let mut o = TcpOptions {
      mss: Some(self.mss_adv),
      ..Default::default()
    };
    if synack {
      o.window_scale = self.ws_ok.then_some(self.rcv_wscale);
      o.sack_permitted = self.sack_ok;
      o.timestamps = self.ts_ok.then_some(Timestamps {
        val: tsval,
        ecr: self.ts_recent,
      });
      self.rcv_adv = self.rcv_adv.max(self.rcv_nxt + self.syn_window as u32);
      self.recharge(ctx.cfg, ctx.budget);
    } else {
      o.window_scale = ctx.cfg.window_scaling.then_some(self.rcv_wscale);
      o.sack_permitted = ctx.cfg.sack;
      o.timestamps = ctx.cfg.timestamps.then_some(Timestamps { val: tsval, ecr: 0 });
    }
    let flags = if synack {
      Flags::SYN | Flags::ACK
    } else {
      Flags::SYN
    };
    let iss = self.iss;
    let window = self.syn_window;
    self.emit(ctx, out, iss, flags, &o, None, window);
    self.snd_nxt = self.snd_nxt.max(iss + 1);
    if self.retries == 0 {
      if self.rtt_probe.is_none() {
        self.rtt_probe = Some((iss + 1, ctx.now));
      }
    } else {
      self.rtt_probe = None;
      self.stats.retransmits += 1;
    }
    if self.rto_at.is_none() {
      self.rto_at = Some(ctx.now + self.rtt.rto());
    }
  }

  /// Bytes believed in the network (RFC 6675 `pipe`): outstanding minus SACKed minus presumed lost and not
  /// yet retransmitted; without SACK, duplicate ACKs in fast recovery stand for segments that left.
  pub(crate) fn pipe(&self) -> u32 {
    let mut p = self.flight().saturating_sub(self.scoreboard.sacked_bytes());
    if let Some(r) = &self.recovery {
      let from = r.high_rxt.max(self.snd_una);
      if from < r.lost_to {
        let lost = r.lost_to.since(from) - self.scoreboard.sacked_in(from, r.lost_to);
        p = p.saturating_sub(lost);
      }
      if !self.sack_ok && r.fast {
        p = p.saturating_sub(self.dupacks * self.smss());
      }
    }
    p
  }

  /// Retransmissions of lost data, then new data and the FIN, while the windows allow.
  fn send_data(&mut self, ctx: &mut Ctx, out: &mut Outbox) {
    if !matches!(
      self.state,
      State::Established | State::CloseWait | State::FinWait1 | State::Closing | State::LastAck
    ) {
      return;
    }
    let opts = self.data_options(ctx);
    let olen = opts.encoded_len();
    let seg_max = (self.mss_send as usize).saturating_sub(olen).max(1);
    let tso_cap = 65535 - ip_header_len(&self.local.ip()).max(20) - TCP_HEADER - olen;
    let burst = if ctx.cfg.tso_max_payload > seg_max {
      (ctx.cfg.tso_max_payload.min(tso_cap) / seg_max).max(1) * seg_max
    } else {
      seg_max
    };
    loop {
      let pipe = self.pipe() as usize;
      let cwnd = self.cc.cwnd as usize;
      if let Some(r) = self.recovery {
        let from = r.high_rxt.max(self.snd_una);
        if let Some((s, e)) = self.scoreboard.next_unsacked(from, r.lost_to) {
          let len = (e.since(s) as usize).min(seg_max);
          if pipe + len > cwnd && !r.force {
            break;
          }
          let fast = r.fast;
          self.retransmit(ctx, out, s, len, &opts, fast);
          if let Some(r) = self.recovery.as_mut() {
            r.high_rxt = s + len as u32;
            r.force = false;
          }
          continue;
        }
      }
      let unsent = self.sendbuf.end().since(self.snd_nxt) as usize;
      let fin_ready = self.fin_queued && !self.fin_sent;
      if unsent == 0 && !fin_ready {
        break;
      }
      let usable = (self.snd_una + self.snd_wnd).since(self.snd_nxt) as usize;
      let room = cwnd.saturating_sub(pipe);
      if unsent == 0 {
        if usable == 0 || room == 0 {
          break;
        }
        self.send_new(ctx, out, 0, true, &opts);
        continue;
      }
      let mut len = unsent.min(usable).min(room).min(burst);
      if len == 0 {
        break;
      }
      if len > seg_max && len < unsent {
        len -= len % seg_max;
      }
      if len < seg_max && len < unsent {
        // A partial segment with more data waiting: only when the peer's window is what limits and it is at
        // least half the largest window it offered (RFC 9293 3.8.6.2.1).
        let window_limited = len == usable;
        if !(window_limited && len >= (self.max_snd_wnd as usize / 2).max(1)) {
          break;
        }
      }
      if len == unsent && len < seg_max && !ctx.cfg.nodelay && self.flight() > 0 {
        break; // Nagle.
      }
      let fin = fin_ready && len == unsent && usable > len;
      self.send_new(ctx, out, len, fin, &opts);
    }
  }

  /// Sends `len` new bytes from `SND.NXT` (and the FIN after them).
  fn send_new(&mut self, ctx: &mut Ctx, out: &mut Outbox, len: usize, fin: bool, opts: &TcpOptions) {
    let seq = self.snd_nxt;
    let mut flags = Flags::ACK;
    if len > 0 && seq + len as u32 == self.sendbuf.end() {
      flags = flags | Flags::PSH;
    }
    if fin {
      flags = flags | Flags::FIN;
    }
    let window = self.advertise(ctx.cfg, ctx.budget);
    self.emit(ctx, out, seq, flags, opts, Some((seq, len)), window);
    self.snd_nxt = seq + len as u32 + fin as u32;
    if fin {
      self.fin_sent = true;
      self.fin_seq = seq + len as u32;
    }
    if self.rtt_probe.is_none() && self.recovery.is_none() {
      self.rtt_probe = Some((self.snd_nxt, ctx.now));
    }
    if self.rto_at.is_none() {
      self.rto_at = Some(ctx.now + self.rtt.rto());
    }
    self.stats.bytes_sent += len as u64;
  }

  /// Retransmits `len` sequence numbers from `s` (data, and the FIN if it lies there).
  fn retransmit(
    &mut self,
    ctx: &mut Ctx,
    out: &mut Outbox,
    s: Seq,
    len: usize,
    opts: &TcpOptions,
    fast: bool,
  ) {
    let end = self.sendbuf.end();
    let data_len = (end.since(s) as usize).min(len);
    let fin = self.fin_sent && s + data_len as u32 == self.fin_seq && len > data_len;
    let mut flags = Flags::ACK;
    if data_len > 0 && s + data_len as u32 == end {
      flags = flags | Flags::PSH;
    }
    if fin {
      flags = flags | Flags::FIN;
    }
    let window = self.advertise(ctx.cfg, ctx.budget);
    self.emit(ctx, out, s, flags, opts, Some((s, data_len)), window);
    self.stats.retransmits += 1;
    self.stats.retransmitted_bytes += data_len as u64;
    if fast && self.sack_ok && !self.scoreboard.is_empty() {
      self.stats.sack_recovered_bytes += data_len as u64;
    }
    self.rtt_probe = None;
    if self.rto_at.is_none() {
      self.rto_at = Some(ctx.now + self.rtt.rto());
    }
  }

  /// The persist timer fired: send what the window allows, or a zero-window probe.
  fn send_probe(&mut self, ctx: &mut Ctx, out: &mut Outbox) {
    let usable = (self.snd_una + self.snd_wnd).since(self.snd_nxt) as usize;
    let unsent = self.sendbuf.end().since(self.snd_nxt) as usize;
    let fin_ready = self.fin_queued && !self.fin_sent;
    if usable > 0 && (unsent > 0 || fin_ready) && self.syn_acked() {
      let opts = self.data_options(ctx);
      let seg_max = (self.mss_send as usize).saturating_sub(opts.encoded_len()).max(1);
      let len = usable.min(unsent).min(seg_max);
      let fin = fin_ready && len == unsent && usable > len;
      self.send_new(ctx, out, len, fin, &opts);
    } else {
      self.stats.zero_window_probes += 1;
      self.emit_old_ack(ctx, out);
    }
  }

  /// A segment with an old sequence number (`SND.UNA - 1`) and no data, which the peer must answer with
  /// an ACK: the zero-window probe and the keepalive probe.
  fn emit_old_ack(&mut self, ctx: &mut Ctx, out: &mut Outbox) {
    let opts = self.data_options(ctx);
    let window = self.advertise(ctx.cfg, ctx.budget);
    let seq = self.snd_una - 1;
    self.emit(ctx, out, seq, Flags::ACK, &opts, None, window);
  }

  /// Arms the persist timer when data (or the FIN) waits, nothing is in flight and the window keeps it back.
  fn arm_persist(&mut self, ctx: &Ctx) {
    let sending = matches!(
      self.state,
      State::Established | State::CloseWait | State::FinWait1 | State::LastAck
    );
    let pending = self.sendbuf.end().since(self.snd_nxt) > 0 || (self.fin_queued && !self.fin_sent);
    if sending && self.syn_acked() && pending && self.flight() == 0 && self.rto_at.is_none() {
      if self.persist_at.is_none() {
        let mut t = self.rtt.base_rto();
        for _ in 0..self.persist_backoff.min(40) {
          t = (t * 2).min(ctx.cfg.persist_max);
        }
        self.persist_at = Some(ctx.now + t.min(ctx.cfg.persist_max.max(ctx.cfg.rto_min)));
      }
    } else {
      self.persist_at = None;
    }
  }

  /// Arms the keepalive check when keepalive is on.
  fn arm_keepalive(&mut self, ctx: &Ctx) {
    match ctx.cfg.keepalive {
      Some(ka) if matches!(self.state, State::Established | State::CloseWait) => {
        if self.keepalive_at.is_none() {
          self.keepalive_at = Some(self.last_rx + ka.idle);
        }
      }
      _ => self.keepalive_at = None,
    }
  }
}
