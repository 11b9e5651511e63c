//! RST (and stray SYN) handling in each state, RFC 5961 challenge ACKs, RSTs for unknown flows.

use super::script::*;
use super::util::*;
use crate::options::TcpOptions;
use crate::{ConnId, Error, Event, ListenAddr, Seq, State};

/// An established connection moved to `target` by the scripted peer; returns it with the endpoint's ISS
/// and the peer's next sequence number.
fn in_state(target: State) -> (Script, ConnId, u32, u32) {
  let (mut s, c, iss) = Script::established();
  let mut pseq = PISS + 1;
  match target {
    State::Established => {}
    State::FinWait1 => {
      s.ep.shutdown(c).unwrap();
      s.poll();
    }
    State::FinWait2 => {
      s.ep.shutdown(c).unwrap();
      s.poll();
      s.send(ACK, pseq, iss + 2, &[]);
    }
    State::CloseWait => {
      s.send(FIN | ACK, pseq, iss + 1, &[]);
      pseq += 1;
    }
    State::Closing => {
      s.ep.shutdown(c).unwrap();
      s.poll();
      s.send(FIN | ACK, pseq, iss + 1, &[]);
      pseq += 1;
    }
    State::LastAck => {
      s.send(FIN | ACK, pseq, iss + 1, &[]);
      pseq += 1;
      s.ep.shutdown(c).unwrap();
      s.poll();
    }
    State::TimeWait => {
      s.ep.shutdown(c).unwrap();
      s.poll();
      s.send(FIN | ACK, pseq, iss + 2, &[]);
      pseq += 1;
    }
    _ => unreachable!(),
  }
  assert_eq!(s.ep.state(c), Some(target));
  s.events();
  (s, c, iss, pseq)
}

const SYNCHRONIZED: [State; 7] = [
  State::Established,
  State::FinWait1,
  State::FinWait2,
  State::CloseWait,
  State::Closing,
  State::LastAck,
  State::TimeWait,
];

#[test]
fn rst_exact_sequence_closes_each_synchronized_state() {
  for st in SYNCHRONIZED {
    let (mut s, c, _, pseq) = in_state(st);
    assert!(s.send(RST, pseq, 0, &[]).is_empty(), "{st:?}");
    let want_err = matches!(
      st,
      State::Established | State::FinWait1 | State::FinWait2 | State::CloseWait
    );
    if st == State::TimeWait {
      assert_eq!(s.ep.state(c), Some(State::Closed));
      assert_eq!(s.ep.stats().time_wait, 0, "the TIME_WAIT entry is gone");
    } else {
      assert_eq!(s.ep.state(c), Some(State::Closed), "{st:?}");
      assert_eq!(
        s.ep.info(c).unwrap().error,
        want_err.then_some(Error::Reset),
        "{st:?}"
      );
      assert!(s.events().contains(&Event::Closed(c)), "{st:?}");
      if want_err {
        assert_eq!(s.ep.read(c, &mut [0; 4]), Err(Error::Reset));
        assert_eq!(s.ep.write(c, b"x"), Err(Error::Reset));
      }
    }
    // Nothing more for the tuple: a segment now gets a RST.
    let r = s.send(ACK, pseq, 12345, &[]);
    assert!(r[0].is(RST), "{st:?}: {r:?}");
  }
}

#[test]
fn rst_in_window_but_not_exact_gets_challenge_ack() {
  for st in SYNCHRONIZED.into_iter().filter(|s| *s != State::TimeWait) {
    let (mut s, c, _, pseq) = in_state(st);
    let r = s.send(RST, pseq + 100, 0, &[]);
    assert_eq!(r.len(), 1, "{st:?}");
    assert!(r[0].is(ACK), "challenge ACK in {st:?}");
    assert_eq!(r[0].ack, Seq(pseq));
    assert_eq!(s.ep.state(c), Some(st), "unchanged");
    // Outside the window: silently ignored.
    assert!(s.send(RST, pseq.wrapping_sub(100_000), 0, &[]).is_empty());
    assert!(s.send(RST, pseq + 10_000_000, 0, &[]).is_empty());
    assert_eq!(s.ep.state(c), Some(st));
    assert_eq!(s.ep.conn_stats(c).unwrap().challenge_acks, 1);
  }
}

#[test]
fn syn_in_synchronized_state_gets_challenge_ack() {
  for st in SYNCHRONIZED.into_iter().filter(|s| *s != State::TimeWait) {
    let (mut s, c, iss, pseq) = in_state(st);
    let r = s.send(SYN, pseq + 10, 0, &[]);
    assert_eq!(r.len(), 1);
    assert!(r[0].is(ACK), "{st:?}");
    assert_eq!(s.ep.state(c), Some(st));
    // An ACK beyond SND.NXT is answered and dropped; a too-old one is challenged.
    let r = s.send(ACK, pseq, iss + 1_000_000, &[]);
    assert!(r[0].is(ACK));
    assert_eq!(s.ep.state(c), Some(st));
  }
}

#[test]
fn rst_in_syn_sent() {
  let mut s = Script::new(config());
  let c = s.ep.connect(s.now, s.us, s.peer).unwrap();
  let iss = s.poll()[0].seq.0;
  // Without ACK, or with a wrong one: ignored.
  assert!(s.send(RST, 5, 0, &[]).is_empty());
  assert!(s.send(RST | ACK, 5, iss + 7, &[]).is_empty());
  assert_eq!(s.ep.state(c), Some(State::SynSent));
  // A SYN-ACK with a bad ACK gets a RST with that sequence number.
  let r = s.send(SYN | ACK, PISS, iss + 9, &[]);
  assert!(r[0].is(RST));
  assert_eq!(r[0].seq, Seq(iss + 9));
  assert_eq!(s.ep.state(c), Some(State::SynSent));
  // RST with an acceptable ACK: refused.
  assert!(s.send(RST | ACK, 0, iss + 1, &[]).is_empty());
  assert_eq!(s.ep.state(c), Some(State::Closed));
  assert_eq!(s.ep.info(c).unwrap().error, Some(Error::Refused));
  assert!(s.events().contains(&Event::Closed(c)));
  assert_eq!(s.ep.read(c, &mut [0; 1]), Err(Error::Refused));
}

#[test]
fn rst_in_syn_received_active_is_refused() {
  let mut s = Script::new(config());
  let c = s.ep.connect(s.now, s.us, s.peer).unwrap();
  s.poll();
  s.send(SYN, PISS, 0, &[]);
  assert_eq!(s.ep.state(c), Some(State::SynReceived));
  s.send(RST, PISS + 1, 0, &[]);
  assert_eq!(s.ep.state(c), Some(State::Closed));
  assert_eq!(s.ep.info(c).unwrap().error, Some(Error::Refused));
}

#[test]
fn syn_received_bad_ack_gets_rst() {
  let mut s = Script::new(config());
  let _l = s.ep.listen(ListenAddr::any(), 8).unwrap();
  let r = s.send(SYN, PISS, 0, &[]);
  let iss = r[0].seq.0;
  let r = s.send(ACK, PISS + 1, iss + 50, &[]);
  assert!(r[0].is(RST));
  assert_eq!(r[0].seq, Seq(iss + 50));
  assert_eq!(s.ep.stats().half_open, 1, "still waiting for the right ACK");
}

#[test]
fn unknown_flows_get_rst() {
  let mut s = Script::new(config());
  let r = s.send(ACK, 100, 777, b"data");
  assert_eq!(r.len(), 1);
  assert!(r[0].is(RST));
  assert_eq!(r[0].seq, Seq(777));
  let r = s.send(FIN, 100, 0, b"data");
  assert!(r[0].is(RST | ACK));
  assert_eq!((r[0].seq, r[0].ack), (Seq(0), Seq(105)));
  let r = s.send(SYN, 100, 0, &[]);
  assert!(r[0].is(RST | ACK), "no listener");
  assert_eq!(r[0].ack, Seq(101));
  assert!(s.send(RST, 100, 0, &[]).is_empty(), "never a RST for a RST");
  assert!(s.send(RST | ACK, 100, 5, &[]).is_empty());
  let st = s.ep.stats();
  assert_eq!(st.rst_unknown, 3);
  assert_eq!(st.rst_sent, 3);
}

#[test]
fn challenge_acks_are_rate_limited() {
  let mut cfg = config();
  cfg.challenge_ack_limit = 3;
  let mut s = Script::new(cfg);
  let (c, _) = s.passive(TcpOptions::default());
  let mut answered = 0;
  for i in 0..10 {
    answered += s.send(RST, PISS + 10 + i, 0, &[]).len();
  }
  assert_eq!(answered, 3);
  assert_eq!(s.ep.stats().challenge_acks_limited, 7);
  s.now += ms(1000);
  assert_eq!(s.send(RST, PISS + 10, 0, &[]).len(), 1, "a new second");
  assert_eq!(s.ep.state(c), Some(State::Established));
}

#[test]
fn abort_sends_rst_and_releases() {
  let (mut s, c, iss) = Script::established();
  s.ep.write(c, b"unsent?").unwrap();
  s.ep.abort(c).unwrap();
  assert_eq!(s.ep.state(c), None);
  assert_eq!(s.ep.write(c, b"x"), Err(Error::InvalidHandle));
  let r = s.poll();
  assert_eq!(r.len(), 1);
  assert!(r[0].is(RST | ACK));
  assert_eq!(r[0].seq, Seq(iss + 1));
  assert_eq!(s.ep.stats().connections, 0);
}

#[test]
fn close_with_unread_data_resets() {
  let (mut s, c, iss) = Script::established();
  s.send(ACK | PSH, PISS + 1, iss + 1, b"unread");
  s.poll();
  s.ep.close(c).unwrap();
  let r = s.poll();
  assert!(r[0].flags.has(RST), "{r:?}");
}

#[test]
fn data_to_orphaned_connection_resets() {
  let (mut s, c, iss) = Script::established();
  s.ep.close(c).unwrap();
  let r = s.poll();
  assert!(r[0].is(FIN | ACK));
  s.send(ACK, PISS + 1, iss + 2, &[]);
  // FIN_WAIT_2, nobody reading: more data resets.
  let r = s.send(ACK | PSH, PISS + 1, iss + 2, b"more");
  assert!(r[0].flags.has(RST), "{r:?}");
  assert_eq!(s.ep.stats().connections, 0);
}
