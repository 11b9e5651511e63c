//! `fuzz_stack_flows` (see the parent module): a model of many concurrent TCP connections and pending flows.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use tunkit_core::packet::{Family, Packet, TcpHeader, Transport};

use super::{budget, check_counts, decision, rewritable, seed, MAX_INPUTS};
use crate::testutil::{checksums_recomputed_ok, config, endpoints, gateway_of, Rng, P};
use crate::{Decision, Stack, Verdict};

/// One modelled TCP connection.
struct Conn {
  client: SocketAddr,
  dest: SocketAddr,
  nat: SocketAddr,
  released: bool,
}

/// One modelled pending flow (a held SYN).
struct Pend {
  id: u64,
  client: SocketAddr,
  dest: SocketAddr,
  /// The client's latest SYN, as sent.
  syn: Vec<u8>,
  isn: u32,
  since: Instant,
}

/// The model of one run of [`fuzz_stack_flows`].
struct Model {
  conns: Vec<Conn>,
  pend: Vec<Pend>,
  released_at: HashMap<SocketAddr, Instant>,
  quarantine: Duration,
  hold_timeout: Duration,
  decided: Vec<u64>,
}

impl Model {
  fn live(&self) -> usize {
    self.conns.iter().filter(|c| !c.released).count() + self.pend.len()
  }

  /// The kernel now sees the flow `client -> dest` from `nat`: never a live flow's endpoint, never a released
  /// one within its quarantine.
  fn admit(&mut self, client: SocketAddr, dest: SocketAddr, nat: SocketAddr, now: Instant) {
    assert_eq!(
      nat.ip(),
      if client.is_ipv4() { "10.7.0.2" } else { "fd07::2" }
        .parse::<IpAddr>()
        .unwrap()
    );
    if let Some(&t) = self.released_at.get(&nat) {
      assert!(
        now >= t + self.quarantine,
        "port {nat} reused {:?} after its release",
        now - t
      );
    }
    assert!(
      !self.conns.iter().any(|c| c.nat == nat && !c.released),
      "NAT endpoint {nat} given to two live flows"
    );
    self.conns.retain(|c| c.nat != nat);
    self.conns.push(Conn {
      client,
      dest,
      nat,
      released: false,
    });
  }

  /// A step on the pending flow `i`: its SYN again, a SYN with a new ISN, another segment (all dropped), or a
  /// random decision. Returns whether a decision was made.
  fn pending_step(&mut self, rng: &mut Rng, st: &Stack, i: usize, now: Instant, out: &mut Vec<u8>) -> bool {
    let p = &mut self.pend[i];
    let expired = now >= p.since + self.hold_timeout;
    let mut pkt = match rng.below(6) {
      // A segment of a hold that is over ends it first (then a SYN is held anew, anything else reset): the
      // expiry is checked through `decide` instead.
      _ if expired => {
        let p = self.pend.remove(i);
        self.decide(rng, st, p, now, out);
        return true;
      }
      0 => p.syn.clone(),
      1 => {
        p.isn = rng.next() as u32;
        p.syn = crate::testutil::tcp(p.client, p.dest, TcpHeader::SYN, p.isn, 0, b"");
        p.syn.clone()
      }
      2 => {
        let flags = [TcpHeader::ACK, TcpHeader::RST, TcpHeader::FIN | TcpHeader::ACK][rng.below(3) as usize];
        crate::testutil::tcp(
          p.client,
          p.dest,
          flags,
          p.isn.wrapping_add(1),
          1,
          &rng.some_bytes(20),
        )
      }
      _ => {
        let p = self.pend.remove(i);
        self.decide(rng, st, p, now, out);
        return true;
      }
    };
    let orig = pkt.clone();
    assert_eq!(st.inbound(&mut pkt, now, out), Verdict::Drop);
    assert_eq!(pkt, orig);
    false
  }

  fn decide(&mut self, rng: &mut Rng, st: &Stack, p: Pend, now: Instant, out: &mut Vec<u8>) {
    let d = decision(rng);
    let ok = st.decide(p.id, d, now, out);
    self.decided.push(p.id);
    if now >= p.since + self.hold_timeout {
      assert!(!ok && out.is_empty(), "decided an expired hold");
      return;
    }
    assert!(ok, "decide failed on a pending flow");
    checksums_recomputed_ok(out).unwrap_or_else(|w| panic!("{d:?} gave a bad {w}"));
    let o = Packet::parse(out).unwrap();
    match (d, o.transport) {
      (Decision::Accept, Transport::Tcp { seq, flags, .. }) => {
        let (nat, listener) = endpoints(out);
        assert_eq!(listener, SocketAddr::new(gateway_of(p.client), P));
        assert_eq!((seq, flags, out.len()), (p.isn, TcpHeader::SYN, p.syn.len()));
        let allowed = rewritable(&o);
        for (i, (a, b)) in p.syn.iter().zip(out.iter()).enumerate() {
          assert!(
            a == b || allowed.iter().any(|r| r.contains(&i)),
            "byte {i} changed"
          );
        }
        self.admit(p.client, p.dest, nat, now);
      }
      (Decision::Reset, Transport::Tcp { seq, ack, flags, .. }) => {
        assert_eq!(endpoints(out), (p.dest, p.client));
        let rst = TcpHeader::RST | TcpHeader::ACK;
        assert_eq!((seq, ack, flags), (0, p.isn.wrapping_add(1), rst));
      }
      (Decision::Unreachable, Transport::Icmp { .. }) => {
        assert_eq!((o.src, o.dst), (p.dest.ip(), p.client.ip()));
        let want = if o.family == Family::V4 { [3, 1] } else { [1, 3] };
        assert_eq!(out[o.l4_offset..o.l4_offset + 2], want);
        assert_eq!(
          &out[o.l4_offset + 8..],
          &p.syn[..],
          "the error quotes the client's SYN"
        );
      }
      other => panic!("{d:?} gave {other:?}"),
    }
    if rng.one_in(4) {
      let id = self.decided[rng.below(self.decided.len() as u64) as usize];
      assert!(!st.decide(id, decision(rng), now, out) && out.is_empty());
    }
  }
}

#[test]
fn fuzz_stack_flows() {
  let mut rng = Rng::new(seed() ^ 1);
  let start = Instant::now();
  let t0 = Instant::now();
  let (mut steps, mut rewritten, mut refused, mut opened) = (0usize, 0usize, 0usize, 0usize);
  let (mut held, mut decided, mut expired) = (0usize, 0usize, 0usize);
  while steps < MAX_INPUTS && start.elapsed() < budget() {
    let mut cfg = config();
    cfg.max_tcp_flows = 1 + rng.below(200) as usize;
    cfg.quarantine = Duration::from_millis(1 + rng.below(3000));
    cfg.tcp_syn_idle = Duration::from_secs(3600); // handshakes do not expire in this model
    cfg.hold_syn = rng.one_in(2);
    cfg.hold_timeout = Duration::from_millis(1 + rng.below(3000));
    let hold = cfg.hold_syn;
    let mut m = Model {
      conns: Vec::new(),
      pend: Vec::new(),
      released_at: HashMap::new(),
      quarantine: cfg.quarantine,
      hold_timeout: cfg.hold_timeout,
      decided: Vec::new(),
    };
    let st = Stack::new(cfg).unwrap();
    let mut now = t0;
    let mut out = Vec::new();
    for _ in 0..2000 {
      steps += 1;
      now += Duration::from_millis(rng.below(20));
      let live = m.live();
      let op = rng.below(13);
      match op {
        0..=2 => {
          let v6 = rng.one_in(2);
          let client = SocketAddr::new(
            if v6 {
              IpAddr::V6(Ipv6Addr::from(0xfd07u128 << 112 | 0x100 | rng.below(50) as u128))
            } else {
              IpAddr::V4(Ipv4Addr::new(10, 7, 0, 100 + rng.below(50) as u8))
            },
            1 + rng.below(60_000) as u16,
          );
          let dest_ip = if v6 {
            IpAddr::V6(Ipv6Addr::from(0x2001_0db8u128 << 96 | rng.below(10) as u128))
          } else {
            IpAddr::V4(Ipv4Addr::new(198, 51, 100, rng.below(10) as u8))
          };
          let dest = SocketAddr::new(dest_ip, 1 + rng.below(1000) as u16);
          if m.conns.iter().any(|c| c.client == client && c.dest == dest)
            || m.pend.iter().any(|p| p.client == client && p.dest == dest)
          {
            continue; // a tuple reused with another ISN is covered by the unit tests
          }
          let isn = rng.next() as u32;
          let mut pkt = crate::testutil::tcp(client, dest, TcpHeader::SYN, isn, 0, b"");
          let syn = pkt.clone();
          match st.inbound(&mut pkt, now, &mut out) {
            Verdict::WriteBack if !hold => {
              let (nat, listener) = endpoints(&pkt);
              assert_eq!(listener, SocketAddr::new(gateway_of(client), P));
              m.admit(client, dest, nat, now);
              opened += 1;
              rewritten += 1;
            }
            Verdict::Hold {
              flow,
              client: c,
              destination: d,
            } if hold => {
              assert_eq!((c, d, &pkt), (client, dest, &syn));
              assert!(!m.pend.iter().any(|p| p.id == flow) && !m.decided.contains(&flow));
              m.pend.push(Pend {
                id: flow,
                client,
                dest,
                syn,
                isn,
                since: now,
              });
              opened += 1;
              held += 1;
            }
            Verdict::Reply => {
              assert!(live >= st.config().max_tcp_flows || st.stats().refused_ports > 0);
              refused += 1;
            }
            v => panic!("SYN got {v:?}"),
          }
        }
        3..=6 if !m.conns.is_empty() => {
          let c = &m.conns[rng.below(m.conns.len() as u64) as usize];
          if c.released && st.lookup_tcp(c.nat).is_none() {
            continue; // its quarantine ended (swept when a later flow was created)
          }
          let payload = rng.some_bytes(40);
          let flags = [
            TcpHeader::ACK,
            TcpHeader::ACK | TcpHeader::PSH,
            TcpHeader::FIN | TcpHeader::ACK,
          ][rng.below(3) as usize];
          let listener = SocketAddr::new(gateway_of(c.client), P);
          let (mut pkt, want) = if rng.one_in(2) {
            (
              crate::testutil::tcp(c.client, c.dest, flags, 1, 1, &payload),
              (c.nat, listener),
            )
          } else {
            (
              crate::testutil::tcp(listener, c.nat, flags, 1, 1, &payload),
              (c.dest, c.client),
            )
          };
          assert_eq!(st.inbound(&mut pkt, now, &mut out), Verdict::WriteBack);
          assert_eq!(endpoints(&pkt), want);
          checksums_recomputed_ok(&pkt).unwrap();
          rewritten += 1;
        }
        7 if !m.conns.is_empty() => {
          let i = rng.below(m.conns.len() as u64) as usize;
          if !m.conns[i].released {
            if rng.one_in(4) {
              let c = &m.conns[i];
              let mut pkt = crate::testutil::tcp(c.client, c.dest, TcpHeader::RST, 1, 0, b"");
              assert_eq!(st.inbound(&mut pkt, now, &mut out), Verdict::WriteBack);
            }
            let c = &mut m.conns[i];
            assert_eq!(
              st.lookup_tcp(c.nat).map(|f| (f.client, f.destination)),
              Some((c.client, c.dest))
            );
            st.release_tcp(c.nat, now);
            c.released = true;
            m.released_at.insert(c.nat, now);
          }
        }
        8 => {
          st.tick(now);
          // Released flows whose quarantine is over are gone (a packet may have pushed it out: only check the
          // ones untouched since their release).
          m.conns
            .retain(|c| !(c.released && st.lookup_tcp(c.nat).is_none()));
        }
        9..=11 if !m.pend.is_empty() => {
          let i = rng.below(m.pend.len() as u64) as usize;
          decided += m.pending_step(&mut rng, &st, i, now, &mut out) as usize;
        }
        _ => {
          for c in m.conns.iter().filter(|c| !c.released) {
            let f = st.lookup_tcp(c.nat).expect("a live flow stays mapped");
            assert_eq!((f.client, f.destination), (c.client, c.dest));
          }
          assert_eq!(st.stats().tcp_flows, m.live());
        }
      }
      // Expired holds are reported once, exactly those that are over (all of them after a tick).
      for id in st.take_expired_holds() {
        let k = m
          .pend
          .iter()
          .position(|p| p.id == id)
          .expect("an expired hold was pending");
        assert!(now >= m.pend[k].since + m.hold_timeout, "hold {id} expired early");
        m.pend.remove(k);
        m.decided.push(id);
        expired += 1;
      }
      if op == 8 {
        assert!(
          m.pend.iter().all(|p| now < p.since + m.hold_timeout),
          "a hold outlived its timeout"
        );
      }
      let s = st.stats();
      check_counts(&s);
      assert_eq!(s.tcp_pending, m.pend.len());
    }
  }
  eprintln!(
    "fuzz stack flows: {steps} steps ({opened} flows opened, {rewritten} rewritten, {refused} refused at the cap, \
     {held} held, {decided} decided, {expired} expired) in {:?}",
    start.elapsed()
  );
  assert!(opened > 0 && refused > 0 && held > 0 && decided > 0 && expired > 0);
}
