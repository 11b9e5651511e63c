//! Link events: a subscription to one link's changes (state, MTU, addresses), turned from notifications that
//! carry the whole state into the changes they make.

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::wire::address::parse_address;
use super::wire::link::parse_link;
use super::wire::messages;
use super::{check_index, ifindex, lock, Netlink, RECV_BUF};
use crate::backend::{EventSource, LinkEvent};
use crate::config::IpCidr;
use crate::error::{Error, ErrorKind, Result};
use crate::platform::linux::sys::netlink as sys;
use crate::platform::linux::sys::netlink::NlSocket;
use crate::platform::linux::sys::{eventfd_new, eventfd_signal};

/// Receive buffer asked for the notification socket, so bursts do not overrun it.
const EVENTS_RCVBUF: i32 = 1 << 20;
/// Most datagrams drained per `LinkEvents::next` round, so one call cannot spin forever on a flood.
const EVENTS_DRAIN_MAX: usize = 4096;

/// What [`LinkEvents`] last knew of the link, to turn notifications (which carry the whole state) into
/// changes.
#[derive(Debug)]
struct LinkState {
  up: bool,
  mtu: u32,
  addresses: HashSet<IpCidr>,
  /// The link was deleted; `next` reports it once the pending events are out.
  gone: bool,
  buf: Vec<u8>,
}

impl LinkState {
  /// Applies one notification for the link; pushes the changes it makes.
  fn apply(&mut self, index: u32, ty: u16, payload: &[u8], events: &mut Vec<LinkEvent>) {
    match ty {
      sys::RTM_NEWLINK | sys::RTM_DELLINK => {
        let Ok(info) = parse_link(payload) else { return };
        if info.index != index {
          return;
        }
        if ty == sys::RTM_DELLINK {
          self.gone = true;
          if self.up {
            self.up = false;
            events.push(LinkEvent::Down);
          }
          return;
        }
        self.set_link(info.up, info.mtu, events);
      }
      sys::RTM_NEWADDR | sys::RTM_DELADDR => {
        let Some((i, a)) = parse_address(payload) else {
          return;
        };
        if i != index {
          return;
        }
        // Sets make repeated notifications of one address (IPv6 sends one per flag change) a single event.
        if ty == sys::RTM_NEWADDR {
          if self.addresses.insert(a) {
            events.push(LinkEvent::AddressAdded(a));
          }
        } else if self.addresses.remove(&a) {
          events.push(LinkEvent::AddressRemoved(a));
        }
      }
      _ => {}
    }
  }

  fn set_link(&mut self, up: bool, mtu: u32, events: &mut Vec<LinkEvent>) {
    if up != self.up {
      self.up = up;
      events.push(if up { LinkEvent::Up } else { LinkEvent::Down });
    }
    if mtu != 0 && mtu != self.mtu {
      self.mtu = mtu;
      events.push(LinkEvent::Mtu(mtu));
    }
  }

  /// Replaces the state with a fresh read of the link, pushing the differences as events (used after the
  /// socket overran and notifications were lost).
  fn resync(&mut self, query: &Netlink, index: u32, events: &mut Vec<LinkEvent>) -> Result<()> {
    let info = match query.link(index) {
      Ok(info) => info,
      Err(e) if e.kind() == ErrorKind::NotFound => {
        self.gone = true;
        if self.up {
          self.up = false;
          events.push(LinkEvent::Down);
        }
        return Ok(());
      }
      Err(e) => return Err(e),
    };
    self.set_link(info.up, info.mtu, events);
    let now: HashSet<IpCidr> = query.addresses(index)?.into_iter().collect();
    events.extend(
      self
        .addresses
        .difference(&now)
        .map(|a| LinkEvent::AddressRemoved(*a)),
    );
    events.extend(
      now
        .difference(&self.addresses)
        .map(|a| LinkEvent::AddressAdded(*a)),
    );
    self.addresses = now;
    Ok(())
  }
}

/// A subscription to one link's changes: a `NETLINK_ROUTE` socket in the link-state and address groups, an
/// eventfd to interrupt a blocked [`EventSource::next`], and a request socket to re-read the state after an
/// overrun.
#[derive(Debug)]
pub struct LinkEvents {
  index: u32,
  sock: NlSocket,
  wake: OwnedFd,
  closed: AtomicBool,
  query: Netlink,
  state: Mutex<LinkState>,
}

impl LinkEvents {
  /// Subscribes to changes of the link `index` in the calling thread's network namespace. The state is read
  /// right after subscribing, so every later change is reported; `NotFound` when there is no such link.
  pub fn subscribe(index: u32) -> Result<LinkEvents> {
    let context = format!("subscribe to events of {}", ifindex(index));
    check_index(index, &context)?;
    let groups = sys::RTMGRP_LINK | sys::RTMGRP_IPV4_IFADDR | sys::RTMGRP_IPV6_IFADDR;
    let sock = NlSocket::open(groups).map_err(|e| Error::os("socket", &e, &context))?;
    // Best effort: the default buffer works too, only overruns (handled by a resync) get likelier.
    let _ = sock.set_recv_buffer(EVENTS_RCVBUF);
    let wake = eventfd_new().map_err(|e| Error::os("eventfd", &e, &context))?;
    let query = Netlink::open()?;
    let info = query.link(index)?;
    let addresses = query.addresses(index)?.into_iter().collect();
    let state = LinkState {
      up: info.up,
      mtu: info.mtu,
      addresses,
      gone: false,
      buf: vec![0; RECV_BUF],
    };
    Ok(LinkEvents {
      index,
      sock,
      wake,
      closed: AtomicBool::new(false),
      query,
      state: Mutex::new(state),
    })
  }

  fn context(&self) -> String {
    format!("link events of {}", ifindex(self.index))
  }

  /// Reads every queued notification (without blocking) and applies it.
  fn drain(&self, state: &mut LinkState, events: &mut Vec<LinkEvent>) -> Result<()> {
    let mut buf = std::mem::take(&mut state.buf);
    let result = (|| {
      for _ in 0..EVENTS_DRAIN_MAX {
        match self.sock.recv(&mut buf, true) {
          Ok((n, 0)) => {
            let msgs = messages(&buf[..n])
              .map_err(|m| Error::new(ErrorKind::Os, format!("{}: {m}", self.context())))?;
            for m in msgs {
              state.apply(self.index, m.hdr.ty, m.payload, events);
            }
          }
          // Not from the kernel: ignore.
          Ok(_) => {}
          Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
          Err(e) if e.raw_os_error() == Some(sys::EINTR) => {}
          // The socket overran and notifications were dropped. The kernel reports that before the
          // notifications still queued, which are older than anything lost: discard them (applied after a
          // fresh read they would roll the state back), then re-read the state and report the difference.
          Err(e) if e.raw_os_error() == Some(sys::ENOBUFS) => {
            self.discard_queued(&mut buf);
            state.resync(&self.query, self.index, events)?
          }
          Err(e) => return Err(Error::os("recvfrom", &e, self.context())),
        }
      }
      Ok(())
    })();
    state.buf = buf;
    result
  }

  /// Throws away every queued notification (bounded, in case of a flood).
  fn discard_queued(&self, buf: &mut Vec<u8>) {
    for _ in 0..EVENTS_DRAIN_MAX {
      match self.sock.recv(buf, true) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
        // Another overrun, an interruption or a datagram: keep discarding.
        _ => {}
      }
    }
  }
}

impl EventSource for LinkEvents {
  /// Blocks until the link changed (at least one event), the link is deleted (`NotFound`, after a last
  /// `Down`) or [`EventSource::wake`] is called (`Closed`).
  fn next(&self) -> Result<Vec<LinkEvent>> {
    let mut state = lock(&self.state);
    loop {
      if self.closed.load(Ordering::Acquire) {
        return Err(Error::closed("link events"));
      }
      if state.gone {
        return Err(Error::new(
          ErrorKind::NotFound,
          format!("{}: device gone", self.context()),
        ));
      }
      match sys::poll_readable([self.sock.as_fd(), self.wake.as_fd()], -1) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(sys::EINTR) => continue,
        Err(e) => return Err(Error::os("poll", &e, self.context())),
      }
      if self.closed.load(Ordering::Acquire) {
        return Err(Error::closed("link events"));
      }
      let mut events = Vec::new();
      self.drain(&mut state, &mut events)?;
      if !events.is_empty() {
        return Ok(events);
      }
    }
  }

  fn wake(&self) {
    self.closed.store(true, Ordering::Release);
    // The only possible failure is EAGAIN on a saturated counter, which is readable anyway.
    let _ = eventfd_signal(self.wake.as_fd());
  }
}

#[cfg(test)]
mod tests {
  use std::time::{Duration, Instant};

  use super::super::test_support::{attr_bytes, in_netns, LO};
  use super::*;
  use crate::platform::linux::sys::netlink::{IfAddrMsg, IfInfoMsg};

  #[test]
  fn link_state_turns_notifications_into_changes() {
    let mut st = LinkState {
      up: false,
      mtu: 1500,
      addresses: HashSet::new(),
      gone: false,
      buf: Vec::new(),
    };
    let newlink = |index: i32, flags: u32, mtu: u32| {
      let mut b = IfInfoMsg {
        index,
        flags,
        ..Default::default()
      }
      .encode()
      .to_vec();
      b.extend(attr_bytes(sys::IFLA_MTU, &mtu.to_ne_bytes()));
      b
    };
    let mut ev = Vec::new();
    st.apply(3, sys::RTM_NEWLINK, &newlink(3, sys::IFF_UP, 1500), &mut ev);
    st.apply(3, sys::RTM_NEWLINK, &newlink(3, sys::IFF_UP, 1500), &mut ev); // no change
    st.apply(3, sys::RTM_NEWLINK, &newlink(4, 0, 9000), &mut ev); // another link
    st.apply(3, sys::RTM_NEWLINK, &newlink(3, sys::IFF_UP, 1400), &mut ev);
    let mut addr = IfAddrMsg {
      family: sys::AF_INET,
      prefixlen: 24,
      index: 3,
      ..Default::default()
    }
    .encode()
    .to_vec();
    addr.extend(attr_bytes(sys::IFA_LOCAL, &[10, 0, 0, 1]));
    st.apply(3, sys::RTM_NEWADDR, &addr, &mut ev);
    st.apply(3, sys::RTM_NEWADDR, &addr, &mut ev); // repeated notification
    st.apply(3, sys::RTM_DELADDR, &addr, &mut ev);
    st.apply(3, sys::RTM_DELLINK, &newlink(3, 0, 1400), &mut ev);
    let a: IpCidr = "10.0.0.1/24".parse().unwrap();
    assert_eq!(
      ev,
      vec![
        LinkEvent::Up,
        LinkEvent::Mtu(1400),
        LinkEvent::AddressAdded(a),
        LinkEvent::AddressRemoved(a),
        LinkEvent::Down
      ]
    );
    assert!(st.gone);
  }

  #[test]
  fn netns_link_events() {
    in_netns("netns_link_events", || {
      let nl = Netlink::open().unwrap();
      nl.set_up(LO, true).unwrap();
      nl.set_mtu(LO, 1500).unwrap();
      let events = std::sync::Arc::new(LinkEvents::subscribe(LO).unwrap());
      // Watchdog: wakes `next` if no event arrives in time, which then fails the test with `Closed`.
      let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
      let watchdog = {
        let events = events.clone();
        std::thread::spawn(move || {
          if done_rx.recv_timeout(Duration::from_secs(5)).is_err() {
            events.wake();
          }
        })
      };
      let expect = |want: LinkEvent| {
        let start = Instant::now();
        let mut seen = Vec::new();
        while !seen.contains(&want) {
          seen.extend(
            events
              .next()
              .unwrap_or_else(|e| panic!("waiting for {want:?}, saw {seen:?}: {e}")),
          );
        }
        assert!(
          start.elapsed() < Duration::from_secs(1),
          "{want:?} took {:?}",
          start.elapsed()
        );
      };
      nl.set_mtu(LO, 1300).unwrap();
      expect(LinkEvent::Mtu(1300));
      let a: IpCidr = "10.7.0.1/24".parse().unwrap();
      nl.add_address(LO, &a).unwrap();
      expect(LinkEvent::AddressAdded(a));
      nl.remove_address(LO, &a).unwrap();
      expect(LinkEvent::AddressRemoved(a));
      nl.set_up(LO, false).unwrap();
      expect(LinkEvent::Down);
      nl.set_up(LO, true).unwrap();
      expect(LinkEvent::Up);
      done_tx.send(()).unwrap();
      watchdog.join().unwrap();
      // After wake, next fails with Closed at once.
      events.wake();
      assert_eq!(events.next().unwrap_err().kind(), ErrorKind::Closed);
      assert_eq!(
        LinkEvents::subscribe(4242).unwrap_err().kind(),
        ErrorKind::NotFound
      );
    });
  }

  #[test]
  fn netns_link_events_recover_from_an_overrun() {
    in_netns("netns_link_events_recover_from_an_overrun", || {
      let nl = Netlink::open().unwrap();
      nl.set_up(LO, true).unwrap();
      let events = LinkEvents::subscribe(LO).unwrap();
      // The smallest receive buffer the kernel allows holds a handful of RTM_NEWLINK notifications at most.
      events.sock.set_recv_buffer(0).unwrap();
      let changes = 60u32;
      for mtu in 1300..1300 + changes {
        nl.set_mtu(LO, mtu).unwrap();
      }
      let last = LinkEvent::Mtu(1300 + changes - 1);
      let mut seen = Vec::new();
      while !seen.contains(&last) {
        assert!(seen.len() <= changes as usize, "{seen:?}");
        // The notifications are already queued (or lost), so `next` cannot block here.
        seen.extend(events.next().unwrap());
      }
      assert!(
        seen.len() < changes as usize,
        "the socket did not overrun, nothing tested: {seen:?}"
      );
      assert_eq!(
        seen.last(),
        Some(&last),
        "the state was rolled back after the resync: {seen:?}"
      );
    });
  }

  #[test]
  fn netns_wake_unblocks_next() {
    in_netns("netns_wake_unblocks_next", || {
      let events = std::sync::Arc::new(LinkEvents::subscribe(LO).unwrap());
      let waker = {
        let events = events.clone();
        std::thread::spawn(move || {
          std::thread::sleep(Duration::from_millis(100));
          events.wake();
        })
      };
      let start = Instant::now();
      assert_eq!(events.next().unwrap_err().kind(), ErrorKind::Closed);
      assert!(start.elapsed() < Duration::from_secs(2));
      waker.join().unwrap();
    });
  }
}
