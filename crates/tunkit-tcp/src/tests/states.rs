//! Every transition of RFC 9293's state diagram (figure 5), with scripted segments.
//!
//! LISTEN -> SYN_SENT on a SEND is not implemented (a listener never sends); every other edge is here.

use super::script::*;
use super::util::*;
use crate::options::TcpOptions;
use crate::{Error, Event, ListenAddr, Seq, State};

#[test]
fn closed_to_listen_to_syn_received_to_established() {
  let mut s = Script::new(config());
  let l = s.ep.listen(ListenAddr::any(), 8).unwrap();
  let r = s.send_opts(SYN, PISS, 0, &[], 65535, linux_syn(5));
  assert_eq!(r.len(), 1);
  assert!(r[0].is(SYN | ACK));
  assert_eq!(r[0].ack, Seq(PISS + 1));
  assert_eq!(r[0].opts.mss, Some(1460));
  assert!(r[0].opts.sack_permitted);
  assert_eq!(r[0].opts.window_scale, Some(7), "4 MiB buffer: shift 7");
  assert_eq!(r[0].opts.timestamps.unwrap().ecr, 5);
  assert_eq!(s.ep.stats().half_open, 1, "SYN_RECEIVED");
  assert_eq!(s.ep.accept(l), None);
  let iss = r[0].seq.0;
  s.peer_ts = Some(6);
  assert!(s.send(ACK, PISS + 1, iss + 1, &[]).is_empty());
  assert_eq!(s.ep.stats().half_open, 0);
  assert_eq!(s.events(), vec![Event::Acceptable(l)]);
  let c = s.ep.accept(l).unwrap();
  assert_eq!(s.ep.state(c), Some(State::Established));
  let info = s.ep.info(c).unwrap();
  assert!(info.sack && info.timestamps);
  assert_eq!(info.window_scale, Some((7, 7)));
  assert_eq!(info.mss, 1448);
  assert_eq!(s.ep.stats().established, 1);
}

#[test]
fn closed_to_syn_sent_to_established() {
  let mut s = Script::new(config());
  let c = s.ep.connect(s.now, s.us, s.peer).unwrap();
  assert_eq!(s.ep.state(c), Some(State::SynSent));
  let r = s.poll();
  assert_eq!(r.len(), 1);
  assert!(r[0].is(SYN));
  let iss = r[0].seq.0;
  assert_eq!(r[0].opts.mss, Some(1460));
  assert!(r[0].opts.timestamps.is_some() && r[0].opts.sack_permitted && r[0].opts.window_scale.is_some());
  let r = s.send_opts(
    SYN | ACK,
    PISS,
    iss + 1,
    &[],
    65535,
    TcpOptions {
      mss: Some(1000),
      ..Default::default()
    },
  );
  assert_eq!(r.len(), 1);
  assert!(r[0].is(ACK));
  assert_eq!((r[0].seq, r[0].ack), (Seq(iss + 1), Seq(PISS + 1)));
  assert!(
    r[0].opts.timestamps.is_none(),
    "the peer did not offer timestamps"
  );
  assert_eq!(s.ep.state(c), Some(State::Established));
  assert!(s.events().contains(&Event::Connected(c)));
  let info = s.ep.info(c).unwrap();
  assert_eq!(
    (info.mss, info.sack, info.timestamps, info.window_scale),
    (1000, false, false, None)
  );
  assert_eq!(info.snd_wnd, 65535);
}

#[test]
fn simultaneous_open_syn_sent_to_syn_received_to_established() {
  for final_synack in [true, false] {
    let mut s = Script::new(config());
    let c = s.ep.connect(s.now, s.us, s.peer).unwrap();
    let iss = s.poll()[0].seq.0;
    // The peer's SYN crosses ours.
    let r = s.send_opts(
      SYN,
      PISS,
      0,
      &[],
      65535,
      TcpOptions {
        mss: Some(1460),
        ..Default::default()
      },
    );
    assert_eq!(r.len(), 1);
    assert!(r[0].is(SYN | ACK));
    assert_eq!(
      (r[0].seq, r[0].ack),
      (Seq(iss), Seq(PISS + 1)),
      "SYN-ACK with the same ISS"
    );
    assert_eq!(s.ep.state(c), Some(State::SynReceived));
    let r = if final_synack {
      // The peer's own SYN-ACK (it got our SYN) acknowledges our SYN.
      s.send(SYN | ACK, PISS, iss + 1, &[])
    } else {
      s.send(ACK, PISS + 1, iss + 1, &[])
    };
    assert!(r.iter().all(|x| !x.flags.has(RST)), "{r:?}");
    assert_eq!(
      s.ep.state(c),
      Some(State::Established),
      "final SYN-ACK {final_synack}"
    );
    assert!(s.events().contains(&Event::Connected(c)));
    s.ep.write(c, b"hi").unwrap();
    let r = s.poll();
    assert_eq!(r[0].payload, b"hi");
    assert_eq!((r[0].seq, r[0].ack), (Seq(iss + 1), Seq(PISS + 1)));
  }
}

#[test]
fn syn_sent_to_closed_by_close_and_by_timeout() {
  let mut s = Script::new(config());
  let c = s.ep.connect(s.now, s.us, s.peer).unwrap();
  s.poll();
  s.ep.close(c).unwrap();
  assert_eq!(s.ep.state(c), None);
  assert_eq!(s.ep.stats().connections, 0);
  assert!(s.advance(ms(10_000)).is_empty(), "no retransmission after close");
  // Timeout: SYN retransmitted with exponential backoff, then TimedOut.
  let c = s.ep.connect(s.now, s.us, s.peer).unwrap();
  let t0 = s.now;
  let sent = s.advance(ms(200_000));
  let times: Vec<u64> = sent.iter().map(|(t, _)| (*t - t0).as_millis() as u64).collect();
  assert!(sent.iter().all(|(_, x)| x.is(SYN)));
  assert_eq!(times, vec![0, 1000, 3000, 7000, 15000, 31000, 63000]);
  assert_eq!(s.ep.state(c), Some(State::Closed));
  assert_eq!(s.ep.info(c).unwrap().error, Some(Error::TimedOut));
  assert_eq!(s.ep.read(c, &mut [0; 4]), Err(Error::TimedOut));
  assert!(s.events().contains(&Event::Closed(c)));
  assert_eq!(s.ep.stats().timeouts, 1);
}

#[test]
fn syn_received_to_listen_on_rst_and_by_timeout() {
  let mut s = Script::new(config());
  let l = s.ep.listen(ListenAddr::any(), 8).unwrap();
  let r = s.send(SYN, PISS, 0, &[]);
  assert!(r[0].is(SYN | ACK));
  assert!(s.send(RST, PISS + 1, 0, &[]).is_empty());
  assert_eq!(s.ep.stats().half_open, 0);
  assert_eq!(s.ep.stats().connections, 0);
  assert_eq!(s.ep.accept(l), None);
  // Back in LISTEN: a new SYN works.
  let r = s.send(SYN, PISS + 5000, 0, &[]);
  assert!(r[0].is(SYN | ACK));
  // A retransmitted SYN gets the SYN-ACK again.
  let r2 = s.send(SYN, PISS + 5000, 0, &[]);
  assert!(r2[0].is(SYN | ACK) && r2[0].seq == r[0].seq);
  // Unanswered, the SYN-ACK is retransmitted and the half-open connection dropped.
  let sent = s.advance(ms(200_000));
  assert_eq!(sent.len(), 6);
  assert!(sent.iter().all(|(_, x)| x.is(SYN | ACK)));
  assert_eq!(s.ep.stats().half_open, 0);
  assert_eq!(s.ep.stats().connections, 0);
}

#[test]
fn syn_received_to_fin_wait_1_on_close() {
  let mut s = Script::new(config());
  let c = s.ep.connect(s.now, s.us, s.peer).unwrap();
  let iss = s.poll()[0].seq.0;
  s.send(SYN, PISS, 0, &[]);
  assert_eq!(s.ep.state(c), Some(State::SynReceived));
  s.ep.shutdown(c).unwrap();
  assert_eq!(s.ep.state(c), Some(State::FinWait1));
  assert!(s.poll().is_empty(), "the FIN waits for the ACK of our SYN");
  let r = s.send(ACK, PISS + 1, iss + 1, &[]);
  assert_eq!(r.len(), 1);
  assert!(r[0].is(FIN | ACK));
  assert_eq!(r[0].seq, Seq(iss + 1));
  let r = s.send(ACK, PISS + 1, iss + 2, &[]);
  assert!(r.is_empty());
  assert_eq!(s.ep.state(c), Some(State::FinWait2));
}

#[test]
fn established_fin_wait_1_fin_wait_2_time_wait_closed() {
  let (mut s, c, iss) = Script::established();
  s.ep.write(c, b"bye").unwrap();
  s.ep.shutdown(c).unwrap();
  assert_eq!(s.ep.state(c), Some(State::FinWait1));
  let r = s.poll();
  assert_eq!(r.len(), 1);
  assert!(r[0].is(ACK | PSH | FIN));
  assert_eq!(r[0].payload, b"bye");
  assert_eq!(s.ep.write(c, b"more"), Err(Error::Shutdown));
  assert!(s.send(ACK, PISS + 1, iss + 5, &[]).is_empty());
  assert_eq!(s.ep.state(c), Some(State::FinWait2));
  // Still receiving (half-close).
  let r = s.send(ACK | PSH, PISS + 1, iss + 5, b"late data");
  assert!(r.is_empty() || r[0].is(ACK));
  let mut buf = [0u8; 64];
  assert_eq!(s.ep.read(c, &mut buf), Ok(9));
  let r = s.send(FIN | ACK, PISS + 10, iss + 5, &[]);
  assert_eq!(r.len(), 1);
  assert!(r[0].is(ACK));
  assert_eq!(r[0].ack, Seq(PISS + 11));
  assert_eq!(s.ep.state(c), Some(State::TimeWait));
  assert_eq!(s.ep.read(c, &mut buf), Ok(0));
  assert_eq!(s.ep.stats().time_wait, 1);
  s.advance(ms(1999));
  assert_eq!(s.ep.state(c), Some(State::TimeWait));
  s.advance(ms(2));
  assert_eq!(s.ep.state(c), Some(State::Closed));
  assert_eq!(s.ep.stats().time_wait, 0);
  s.ep.close(c).unwrap();
  assert_eq!(s.ep.stats().connections, 0);
}

#[test]
fn fin_wait_1_to_closing_to_time_wait() {
  let (mut s, c, iss) = Script::established();
  s.ep.shutdown(c).unwrap();
  let r = s.poll();
  assert!(r[0].is(FIN | ACK));
  // The peer's FIN crosses ours (it has not seen our FIN).
  let r = s.send(FIN | ACK, PISS + 1, iss + 1, &[]);
  assert_eq!(r.len(), 1);
  assert_eq!(r[0].ack, Seq(PISS + 2));
  assert_eq!(s.ep.state(c), Some(State::Closing));
  assert!(s.send(ACK, PISS + 2, iss + 2, &[]).is_empty());
  assert_eq!(s.ep.state(c), Some(State::TimeWait));
}

#[test]
fn fin_wait_1_to_time_wait_on_fin_ack() {
  let (mut s, c, iss) = Script::established();
  s.ep.shutdown(c).unwrap();
  s.poll();
  let r = s.send(FIN | ACK, PISS + 1, iss + 2, &[]);
  assert_eq!(r.len(), 1);
  assert!(r[0].is(ACK));
  assert_eq!(s.ep.state(c), Some(State::TimeWait));
}

#[test]
fn established_close_wait_last_ack_closed() {
  let (mut s, c, iss) = Script::established();
  let r = s.send(FIN | ACK, PISS + 1, iss + 1, &[]);
  assert_eq!(r.len(), 1);
  assert_eq!(r[0].ack, Seq(PISS + 2), "FIN acknowledged at once");
  assert_eq!(s.ep.state(c), Some(State::CloseWait));
  assert_eq!(s.ep.read(c, &mut [0; 8]), Ok(0), "end of stream");
  // Half-close the other way: we can still send.
  s.ep.write(c, b"reply").unwrap();
  let r = s.poll();
  assert_eq!(r[0].payload, b"reply");
  s.ep.close(c).unwrap();
  let r = s.poll();
  assert_eq!(r.len(), 1);
  assert!(r[0].is(FIN | ACK));
  assert_eq!(r[0].seq, Seq(iss + 6));
  assert_eq!(s.ep.stats().connections, 1, "LAST_ACK, orphaned");
  assert!(s.send(ACK, PISS + 2, iss + 7, &[]).is_empty());
  assert_eq!(s.ep.stats().connections, 0, "CLOSED and freed");
  // A late segment for the tuple gets a RST.
  let r = s.send(ACK, PISS + 2, iss + 7, &[]);
  assert!(r[0].is(RST));
}

#[test]
fn last_ack_state_visible_with_shutdown() {
  let (mut s, c, iss) = Script::established();
  s.send(FIN | ACK, PISS + 1, iss + 1, &[]);
  s.ep.shutdown(c).unwrap();
  assert_eq!(s.ep.state(c), Some(State::LastAck));
  let r = s.poll();
  assert!(r[0].is(FIN | ACK));
  s.send(ACK, PISS + 2, iss + 2, &[]);
  assert_eq!(s.ep.state(c), Some(State::Closed));
  assert!(s.events().contains(&Event::Closed(c)));
  assert_eq!(s.ep.info(c).unwrap().error, None, "a normal close");
}

#[test]
fn listen_to_closed() {
  let mut s = Script::new(config());
  let l = s.ep.listen(ListenAddr::any(), 8).unwrap();
  assert_eq!(s.ep.listen(ListenAddr::any(), 8), Err(Error::AddrInUse));
  s.ep.unlisten(l).unwrap();
  let r = s.send(SYN, PISS, 0, &[]);
  assert!(r[0].is(RST | ACK));
  assert_eq!(r[0].ack, Seq(PISS + 1));
  assert_eq!(s.ep.unlisten(l), Err(Error::InvalidHandle));
}

#[test]
fn time_wait_reacks_fin_and_reopens_on_newer_syn() {
  let (mut s, c, iss) = Script::established();
  s.ep.shutdown(c).unwrap();
  s.poll();
  s.send(FIN | ACK, PISS + 1, iss + 2, &[]);
  assert_eq!(s.ep.state(c), Some(State::TimeWait));
  s.advance(ms(1500));
  // The peer did not get our ACK: its FIN again, acknowledged, and the wait restarts.
  let r = s.send(FIN | ACK, PISS + 1, iss + 2, &[]);
  assert_eq!(r.len(), 1);
  assert_eq!((r[0].seq, r[0].ack), (Seq(iss + 2), Seq(PISS + 2)));
  s.advance(ms(1500));
  assert_eq!(s.ep.state(c), Some(State::TimeWait));
  // An old SYN is answered with an ACK; a newer one opens a new connection (the listener is still there).
  let r = s.send(SYN, PISS, 0, &[]);
  assert!(r[0].is(ACK));
  let r = s.send(SYN, PISS + 100_000, 0, &[]);
  assert!(r[0].is(SYN | ACK));
  assert_eq!(s.ep.state(c), Some(State::Closed));
  assert_eq!(s.ep.stats().time_wait_reused, 1);
}
