//! A scripted peer: hand-built segments into one endpoint, its output parsed back.

use std::net::SocketAddr;
use std::time::Duration;

use super::util::{config, sa};
use crate::options::{TcpOptions, Timestamps};
use crate::wire::{parse_packet, write_packet, Header};
use crate::{Config, ConnId, Endpoint, Flags, ListenAddr, Outbox, Seq, State};

pub const SYN: Flags = Flags::SYN;
pub const ACK: Flags = Flags::ACK;
pub const FIN: Flags = Flags::FIN;
pub const RST: Flags = Flags::RST;
pub const PSH: Flags = Flags::PSH;

/// A segment the endpoint sent.
#[derive(Clone, Debug)]
pub struct Seg {
  pub flags: Flags,
  pub seq: Seq,
  pub ack: Seq,
  pub window: u16,
  pub payload: Vec<u8>,
  pub opts: TcpOptions,
  pub gso_size: u16,
}

impl Seg {
  pub fn is(&self, f: Flags) -> bool {
    self.flags == f
  }
}

pub struct Script {
  pub ep: Endpoint,
  pub now: Duration,
  /// The endpoint's address.
  pub us: SocketAddr,
  /// The scripted peer's address.
  pub peer: SocketAddr,
  pub out: Outbox,
  /// Timestamp the peer puts in its segments (None: no option).
  pub peer_ts: Option<u32>,
  /// The endpoint's last TSval, echoed by the peer.
  pub echo: u32,
}

/// The peer's ISN in scripts.
pub const PISS: u32 = 1_000_000;

impl Script {
  pub fn new(cfg: Config) -> Script {
    Script {
      ep: Endpoint::new(cfg),
      now: Duration::from_secs(10),
      us: sa("10.0.0.1:80"),
      peer: sa("10.0.0.2:40000"),
      out: Outbox::new(),
      peer_ts: None,
      echo: 0,
    }
  }

  pub fn v6(mut self) -> Script {
    self.us = sa("[fd00::1]:80");
    self.peer = sa("[fd00::2]:40000");
    self
  }

  fn collect(&mut self) -> Vec<Seg> {
    let mut v = Vec::new();
    for p in self.out.packets() {
      let pk = parse_packet(&p.data, !p.csum_partial).expect("endpoint output parses");
      if let Some(t) = pk.seg.options.timestamps {
        self.echo = t.val;
      }
      v.push(Seg {
        flags: pk.seg.flags,
        seq: pk.seg.seq,
        ack: pk.seg.ack,
        window: pk.seg.window,
        payload: pk.seg.payload.to_vec(),
        opts: pk.seg.options,
        gso_size: p.gso_size,
      });
    }
    self.out.clear();
    v
  }

  /// Sends a segment from the peer with explicit options; returns what the endpoint answered.
  pub fn send_opts(
    &mut self,
    flags: Flags,
    seq: u32,
    ack: u32,
    payload: &[u8],
    window: u16,
    opts: TcpOptions,
  ) -> Vec<Seg> {
    let mut pkt = Vec::new();
    let hdr = Header {
      seq: Seq(seq),
      ack: Seq(ack),
      flags,
      window,
    };
    write_packet(&mut pkt, self.peer, self.us, &hdr, &opts, (payload, &[]), false);
    self
      .ep
      .input(self.now, &pkt, &mut self.out)
      .expect("scripted segment parses");
    self.collect()
  }

  /// Sends a segment (with the peer's timestamp if it has one) and returns the answer.
  pub fn send(&mut self, flags: Flags, seq: u32, ack: u32, payload: &[u8]) -> Vec<Seg> {
    self.send_w(flags, seq, ack, payload, 65535)
  }

  pub fn send_w(&mut self, flags: Flags, seq: u32, ack: u32, payload: &[u8], window: u16) -> Vec<Seg> {
    let mut o = TcpOptions::default();
    if let Some(v) = self.peer_ts {
      o.timestamps = Some(Timestamps {
        val: v,
        ecr: self.echo,
      });
    }
    self.send_opts(flags, seq, ack, payload, window, o)
  }

  pub fn poll(&mut self) -> Vec<Seg> {
    self.ep.poll(self.now, &mut self.out);
    self.collect()
  }

  /// Advances the clock by `d`, polling at every deadline on the way; returns everything sent (with the
  /// time it was sent).
  pub fn advance(&mut self, d: Duration) -> Vec<(Duration, Seg)> {
    let end = self.now + d;
    let mut v = Vec::new();
    loop {
      match self.ep.next_deadline() {
        Some(t) if t <= end => {
          self.now = self.now.max(t);
          for s in self.poll() {
            v.push((self.now, s));
          }
        }
        _ => break,
      }
    }
    self.now = end;
    v
  }

  /// A listener on any address; the peer opens with a plain SYN (MSS 1460 only, window 65535: no scaling,
  /// SACK or timestamps unless `opts` says so). Returns the accepted connection and the endpoint's ISS.
  pub fn passive(&mut self, opts: TcpOptions) -> (ConnId, u32) {
    let l = self.ep.listen(ListenAddr::any(), 16).unwrap();
    let r = self.send_opts(SYN, PISS, 0, &[], 65535, opts);
    assert_eq!(r.len(), 1, "{r:?}");
    assert!(r[0].is(SYN | ACK), "{r:?}");
    assert_eq!(r[0].ack, Seq(PISS + 1));
    if let Some(t) = r[0].opts.timestamps {
      self.echo = t.val;
    }
    let iss = r[0].seq.0;
    let r = self.send(ACK, PISS + 1, iss + 1, &[]);
    assert!(r.is_empty(), "{r:?}");
    let c = self.ep.accept(l).expect("accepted");
    assert_eq!(self.ep.state(c), Some(State::Established));
    (c, iss)
  }

  /// An established connection with a basic peer (MSS 1460, no options).
  pub fn established() -> (Script, ConnId, u32) {
    let mut s = Script::new(config());
    let (c, iss) = s.passive(TcpOptions {
      mss: Some(1460),
      ..Default::default()
    });
    (s, c, iss)
  }

  /// Drains the endpoint's events.
  pub fn events(&mut self) -> Vec<crate::Event> {
    let mut v = Vec::new();
    while let Some(e) = self.ep.next_event() {
      v.push(e);
    }
    v
  }
}

/// SYN options like Linux's.
pub fn linux_syn(ts: u32) -> TcpOptions {
  TcpOptions {
    mss: Some(1460),
    window_scale: Some(7),
    sack_permitted: true,
    timestamps: Some(Timestamps { val: ts, ecr: 0 }),
    ..Default::default()
  }
}
