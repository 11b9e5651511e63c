//! UDP sockets: one socket per local port (on one address or all of the stack's), each with a receive
//! queue bounded in datagrams and bytes; datagrams beyond it are dropped and counted.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use crate::Error;

/// A UDP socket handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UdpId(pub(crate) u32);

/// One received datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Datagram {
  pub from: SocketAddr,
  pub data: Vec<u8>,
}

pub(crate) struct Socket {
  pub local: SocketAddr,
  pub queue: VecDeque<Datagram>,
  pub bytes: usize,
}

/// The socket table.
pub(crate) struct UdpTable {
  sockets: HashMap<u32, Socket>,
  by_port: HashMap<u16, u32>,
  next_id: u32,
  next_port: u16,
  max_packets: usize,
  max_bytes: usize,
}

/// What became of a delivered datagram.
pub(crate) enum Delivery {
  /// Queued; `true` when the queue was empty before (a readiness event is due).
  Queued(UdpId, bool),
  /// The socket's queue is full.
  QueueFull,
  /// No socket has the port.
  NoSocket,
}

impl UdpTable {
  pub fn new(max_packets: usize, max_bytes: usize) -> UdpTable {
    UdpTable {
      sockets: HashMap::new(),
      by_port: HashMap::new(),
      next_id: 1,
      next_port: 49152,
      max_packets: max_packets.max(1),
      max_bytes: max_bytes.max(1),
    }
  }

  /// Binds `local` (its address already checked by the caller; port 0 picks a free ephemeral port).
  pub fn bind(&mut self, local: SocketAddr) -> Result<(UdpId, SocketAddr), Error> {
    let mut local = local;
    if local.port() == 0 {
      let start = self.next_port;
      loop {
        let p = self.next_port;
        self.next_port = if p == u16::MAX { 49152 } else { p + 1 };
        if !self.by_port.contains_key(&p) {
          local.set_port(p);
          break;
        }
        if self.next_port == start {
          return Err(Error::AddrInUse);
        }
      }
    } else if self.by_port.contains_key(&local.port()) {
      return Err(Error::AddrInUse);
    }
    let id = self.next_id;
    self.next_id = self.next_id.wrapping_add(1).max(1);
    self.by_port.insert(local.port(), id);
    self.sockets.insert(
      id,
      Socket {
        local,
        queue: VecDeque::new(),
        bytes: 0,
      },
    );
    Ok((UdpId(id), local))
  }

  pub fn close(&mut self, id: UdpId) -> Result<(), Error> {
    let s = self.sockets.remove(&id.0).ok_or(Error::InvalidHandle)?;
    self.by_port.remove(&s.local.port());
    Ok(())
  }

  pub fn get(&self, id: UdpId) -> Result<&Socket, Error> {
    self.sockets.get(&id.0).ok_or(Error::InvalidHandle)
  }

  /// Queues a datagram for the socket of `to`.
  pub fn deliver(&mut self, from: SocketAddr, to: SocketAddr, data: &[u8]) -> Delivery {
    let Some(&id) = self.by_port.get(&to.port()) else {
      return Delivery::NoSocket;
    };
    let s = self.sockets.get_mut(&id).expect("indexed");
    if !s.local.ip().is_unspecified() && s.local.ip() != to.ip() {
      return Delivery::NoSocket;
    }
    if s.queue.len() >= self.max_packets || s.bytes + data.len() > self.max_bytes {
      return Delivery::QueueFull;
    }
    let was_empty = s.queue.is_empty();
    s.bytes += data.len();
    s.queue.push_back(Datagram {
      from,
      data: data.to_vec(),
    });
    Delivery::Queued(UdpId(id), was_empty)
  }

  /// The next datagram of a socket, copied into `buf` (truncated if longer, as `recvfrom` does): (bytes
  /// copied, the datagram's full length, sender).
  pub fn recv(&mut self, id: UdpId, buf: &mut [u8]) -> Result<(usize, usize, SocketAddr), Error> {
    let s = self.sockets.get_mut(&id.0).ok_or(Error::InvalidHandle)?;
    let d = s.queue.pop_front().ok_or(Error::WouldBlock)?;
    s.bytes -= d.data.len();
    let n = d.data.len().min(buf.len());
    buf[..n].copy_from_slice(&d.data[..n]);
    Ok((n, d.data.len(), d.from))
  }
}
