//! NAT port allocation: a collision-checked pool of ports 1024..=65535 on each NAT address `B`.
//!
//! A port is taken from allocation until `PortPool::free`: the TCP table frees it only when the flow's
//! quarantine is over, so a port the kernel may still hold (an accepted socket, TIME_WAIT) is never handed to
//! a new flow. One bit per port and address (8 KiB per address); a cursor per address walks the range so a
//! freed port is reused as late as possible, and allocation rotates over the addresses.

use std::net::IpAddr;

/// Lowest NAT port (ports below are left alone: they look like services to the kernel and to firewalls).
pub const PORT_MIN: u16 = 1024;
/// Highest NAT port.
pub const PORT_MAX: u16 = 65535;
/// NAT ports per address.
pub const PORTS_PER_ADDRESS: usize = (PORT_MAX - PORT_MIN) as usize + 1;

const WORDS: usize = PORTS_PER_ADDRESS / 64;
const _: () = assert!(PORTS_PER_ADDRESS % 64 == 0);

/// The ports of one family's NAT addresses.
#[derive(Debug)]
pub(crate) struct PortPool {
  addrs: Vec<IpAddr>,
  used: Vec<Box<[u64; WORDS]>>,
  counts: Vec<usize>,
  cursors: Vec<usize>,
  next_addr: usize,
  in_use: usize,
}

impl PortPool {
  /// A pool over `addrs` with every port free.
  pub fn new(addrs: &[IpAddr]) -> PortPool {
    PortPool {
      addrs: addrs.to_vec(),
      used: addrs.iter().map(|_| Box::new([0u64; WORDS])).collect(),
      counts: vec![0; addrs.len()],
      cursors: vec![0; addrs.len()],
      next_addr: 0,
      in_use: 0,
    }
  }

  /// Ports allocated and not yet freed.
  pub fn in_use(&self) -> usize {
    self.in_use
  }

  /// All ports of all addresses.
  pub fn capacity(&self) -> usize {
    self.addrs.len() * PORTS_PER_ADDRESS
  }

  /// The address with index `idx`.
  pub fn addr(&self, idx: usize) -> IpAddr {
    self.addrs[idx]
  }

  /// Whether `port` on address `idx` is allocated.
  pub fn is_used(&self, idx: usize, port: u16) -> bool {
    if port < PORT_MIN || idx >= self.addrs.len() {
      return false;
    }
    let i = (port - PORT_MIN) as usize;
    self.used[idx][i / 64] & (1 << (i % 64)) != 0
  }

  /// Takes a free port: the address after the previous allocation's first, then the next free port after that
  /// address's cursor. `None` when every port of every address is taken.
  pub fn alloc(&mut self) -> Option<(usize, u16)> {
    let n = self.addrs.len();
    for k in 0..n {
      let a = (self.next_addr + k) % n;
      if self.counts[a] == PORTS_PER_ADDRESS {
        continue;
      }
      if let Some(i) = find_free(&self.used[a], self.cursors[a]) {
        self.used[a][i / 64] |= 1 << (i % 64);
        self.counts[a] += 1;
        self.in_use += 1;
        self.cursors[a] = (i + 1) % PORTS_PER_ADDRESS;
        self.next_addr = (a + 1) % n;
        return Some((a, PORT_MIN + i as u16));
      }
    }
    None
  }

  /// Returns `port` of address `idx` to the pool (a no-op if it was not allocated).
  pub fn free(&mut self, idx: usize, port: u16) {
    if !self.is_used(idx, port) {
      return;
    }
    let i = (port - PORT_MIN) as usize;
    self.used[idx][i / 64] &= !(1 << (i % 64));
    self.counts[idx] -= 1;
    self.in_use -= 1;
  }
}

/// The first clear bit at or after `start`, wrapping around.
fn find_free(bits: &[u64; WORDS], start: usize) -> Option<usize> {
  let w0 = start / 64;
  let first = !bits[w0] & (u64::MAX << (start % 64));
  if first != 0 {
    return Some(w0 * 64 + first.trailing_zeros() as usize);
  }
  for k in 1..=WORDS {
    let w = (w0 + k) % WORDS;
    let free = !bits[w];
    if free != 0 {
      return Some(w * 64 + free.trailing_zeros() as usize);
    }
  }
  None
}

#[cfg(test)]
mod tests {
  use super::*;
  use std::collections::HashSet;

  fn pool(n: usize) -> PortPool {
    let addrs: Vec<IpAddr> = (0..n).map(|i| IpAddr::from([10, 0, 0, 2 + i as u8])).collect();
    PortPool::new(&addrs)
  }

  #[test]
  fn allocates_every_port_once_then_refuses() {
    let mut p = pool(1);
    let mut seen = HashSet::new();
    for _ in 0..PORTS_PER_ADDRESS {
      let (a, port) = p.alloc().unwrap();
      assert_eq!(a, 0);
      assert!((PORT_MIN..=PORT_MAX).contains(&port));
      assert!(seen.insert(port), "port {port} handed out twice");
    }
    assert_eq!(p.in_use(), PORTS_PER_ADDRESS);
    assert_eq!(p.alloc(), None);
    p.free(0, 5000);
    p.free(0, 5000); // idempotent
    p.free(0, 80); // never allocated: ignored
    assert_eq!(p.in_use(), PORTS_PER_ADDRESS - 1);
    assert_eq!(p.alloc(), Some((0, 5000)));
    assert_eq!(p.alloc(), None);
  }

  #[test]
  fn rotates_addresses_and_reuses_freed_ports_late() {
    let mut p = pool(2);
    let (a0, p0) = p.alloc().unwrap();
    let (a1, p1) = p.alloc().unwrap();
    assert_eq!((a0, a1), (0, 1));
    assert_eq!((p0, p1), (PORT_MIN, PORT_MIN));
    p.free(0, p0);
    // The freed port is not the next one handed out on its address: the cursor moves on.
    let (a, port) = p.alloc().unwrap();
    assert_eq!((a, port), (0, PORT_MIN + 1));
    assert_eq!(p.capacity(), 2 * PORTS_PER_ADDRESS);
    assert!(p.is_used(1, PORT_MIN) && !p.is_used(0, PORT_MIN) && !p.is_used(7, PORT_MIN));
  }

  #[test]
  fn cursor_wraps_to_free_ports_at_the_start() {
    let mut p = pool(1);
    let all: Vec<u16> = (0..PORTS_PER_ADDRESS).map(|_| p.alloc().unwrap().1).collect();
    for &port in &all[..10] {
      p.free(0, port);
    }
    p.free(0, PORT_MAX);
    assert_eq!(
      p.alloc(),
      Some((0, PORT_MIN)),
      "after the end the cursor wraps to the start"
    );
    p.free(0, PORT_MIN + 100);
    assert_eq!(p.alloc(), Some((0, PORT_MIN + 1)));
  }
}
