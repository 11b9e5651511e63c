//! Timers: retransmission (RFC 6298, with the RFC 5681 window reaction and Eifel undo information),
//! delayed ACK, persist (zero-window probes with backoff), keepalive, and the linger of an orphaned
//! FIN_WAIT_2. All are absolute deadlines checked lazily: a timer that fires early finds nothing due.

use super::{Conn, Ctx, Recovery, State, Undo};
use crate::error::Error;
use crate::outbox::Outbox;

impl Conn {
  /// Runs the timers due at `ctx.now`, then emits what they call for.
  pub(crate) fn on_timer(&mut self, ctx: &mut Ctx, out: &mut Outbox) {
    let now = ctx.now;
    if self.rto_at.is_some_and(|t| t <= now) {
      self.rto_at = None;
      self.on_rto(ctx, out);
      if self.state == State::Closed {
        return;
      }
    }
    if self.delack_at.is_some_and(|t| t <= now) {
      self.delack_at = None;
      self.ack_now = true;
    }
    if self.persist_at.is_some_and(|t| t <= now) {
      self.persist_at = None;
      self.probe_pending = true;
      self.persist_backoff = self.persist_backoff.saturating_add(1);
      if self.orphan && self.persist_backoff > ctx.cfg.max_retransmits {
        self.give_up(ctx, out);
        return;
      }
    }
    if self.keepalive_at.is_some_and(|t| t <= now) {
      self.keepalive_at = None;
      self.keepalive_check(ctx, out);
      if self.state == State::Closed {
        return;
      }
    }
    if self.linger_at.is_some_and(|t| t <= now) {
      self.linger_at = None;
      if self.state == State::FinWait2 && self.orphan {
        self.close_now(None);
        return;
      }
    }
    self.output(ctx, out);
  }

  /// Aborts with a RST and [`Error::TimedOut`].
  fn give_up(&mut self, ctx: &mut Ctx, out: &mut Outbox) {
    let (seq, ack) = (self.snd_nxt, self.rcv_nxt);
    self.send_rst(ctx, out, seq, Some(ack));
    ctx.stats.timeouts += 1;
    self.close_now(Some(Error::TimedOut));
  }

  /// The retransmission timer expired (RFC 6298 5.4-5.7, RFC 5681 3.1).
  fn on_rto(&mut self, ctx: &mut Ctx, out: &mut Outbox) {
    if !self.syn_acked() {
      self.retries += 1;
      self.stats.rto_count += 1;
      if self.retries > ctx.cfg.syn_retries {
        ctx.stats.timeouts += 1;
        self.close_now(Some(Error::TimedOut));
        return;
      }
      self.rtt.on_timeout();
      self.syn_pending = true;
      self.rtt_probe = None;
      return;
    }
    if self.flight() == 0 {
      return;
    }
    self.retries += 1;
    if self.retries > ctx.cfg.max_retransmits {
      self.give_up(ctx, out);
      return;
    }
    self.stats.rto_count += 1;
    let smss = self.smss();
    let flight = self.flight();
    self.undo = if self.retries == 1 && self.ts_ok {
      Some(Undo {
        cwnd: self.cc.cwnd,
        ssthresh: self.cc.ssthresh,
        tsval: self.tsval(ctx.now),
      })
    } else {
      None
    };
    self.cc.on_rto(flight, smss, self.retries == 1);
    if self.rtt.backoff >= 1 {
      // A second timeout for the same data: the receiver may have reneged on its SACKs.
      self.scoreboard.clear();
    }
    self.rtt.on_timeout();
    self.recovery = Some(Recovery {
      point: self.snd_nxt,
      high_rxt: self.snd_una,
      lost_to: self.snd_nxt,
      fast: false,
      force: true,
    });
    self.recover = self.snd_nxt;
    self.dupacks = 0;
    self.rtt_probe = None;
  }

  /// The keepalive timer (RFC 9293 3.8.4): probe after `idle` of silence, give up after `probes`.
  fn keepalive_check(&mut self, ctx: &mut Ctx, out: &mut Outbox) {
    let Some(ka) = ctx.cfg.keepalive else { return };
    if !matches!(self.state, State::Established | State::CloseWait) {
      return;
    }
    if self.flight() > 0 || self.sendbuf.end().since(self.snd_nxt) > 0 {
      // Data outstanding: the retransmission timer watches the peer.
      self.keepalive_at = Some(ctx.now + ka.idle);
      return;
    }
    let due = self.last_rx + ka.idle + ka.interval * self.ka_probes;
    if ctx.now < due {
      self.keepalive_at = Some(due);
      return;
    }
    if self.ka_probes >= ka.probes {
      self.give_up(ctx, out);
      return;
    }
    self.ka_probes += 1;
    self.ka_pending = true;
    self.keepalive_at = Some(ctx.now + ka.interval);
  }
}
