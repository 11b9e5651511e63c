//! Bounded IPv4 fragment reassembly. Fragments wait per (source, destination, protocol, identification)
//! until the datagram is whole, then the datagram is rebuilt (the first fragment's header, no fragment
//! fields) and processed like any other packet. Bounds: datagrams in progress, fragments per datagram,
//! bytes held in all, and a timeout after the first fragment; overlapping fragments drop the datagram
//! (as RFC 5722 asks of IPv6; no legitimate sender overlaps).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use tunkit_core::packet::checksum;

use crate::ip::IpView;

/// The bounds of reassembly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReassemblyConfig {
  /// Datagrams being reassembled at once (0 turns reassembly off: every fragment is dropped).
  pub max_datagrams: usize,
  /// Fragments of one datagram.
  pub max_fragments: usize,
  /// Payload bytes held over all datagrams.
  pub max_bytes: usize,
  /// How long a datagram may take to complete after its first fragment arrived.
  pub timeout: Duration,
}

impl Default for ReassemblyConfig {
  fn default() -> ReassemblyConfig {
    ReassemblyConfig {
      max_datagrams: 64,
      max_fragments: 64,
      max_bytes: 1 << 20,
      timeout: Duration::from_secs(30),
    }
  }
}

type Key = (IpAddr, IpAddr, u8, u16);

struct Partial {
  started: Duration,
  header: Option<Vec<u8>>,
  total: Option<usize>,
  pieces: Vec<(usize, Vec<u8>)>,
  bytes: usize,
}

/// Why a fragment did not complete a datagram (besides waiting for more).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FragDrop {
  /// A bound was reached (datagrams, fragments, bytes).
  Full,
  /// Bad offsets or lengths, or overlap: the datagram is dropped.
  Invalid,
}

/// The reassembly table.
pub struct Reassembler {
  cfg: ReassemblyConfig,
  partial: HashMap<Key, Partial>,
  bytes: usize,
  /// Datagrams given up after the timeout.
  pub timed_out: u64,
}

impl Reassembler {
  /// An empty table.
  pub fn new(cfg: ReassemblyConfig) -> Reassembler {
    Reassembler {
      cfg,
      partial: HashMap::new(),
      bytes: 0,
      timed_out: 0,
    }
  }

  /// Datagrams in progress.
  pub fn len(&self) -> usize {
    self.partial.len()
  }

  /// True when nothing is in progress.
  pub fn is_empty(&self) -> bool {
    self.partial.is_empty()
  }

  /// Payload bytes held.
  pub fn bytes(&self) -> usize {
    self.bytes
  }

  /// Adds one fragment (`pkt` trimmed to its IP total length). `Ok(Some(datagram))` when it completed one.
  pub fn insert(&mut self, now: Duration, v: &IpView, pkt: &[u8]) -> Result<Option<Vec<u8>>, FragDrop> {
    self.expire(now);
    let data = &pkt[v.hdr_len..v.total];
    let end = v.frag_off + data.len();
    if end > 65535 - v.hdr_len || (v.more_frags && (data.is_empty() || data.len() % 8 != 0)) {
      return Err(FragDrop::Invalid);
    }
    let key = (v.src, v.dst, v.proto, v.ident);
    if !self.partial.contains_key(&key) && self.partial.len() >= self.cfg.max_datagrams {
      return Err(FragDrop::Full);
    }
    if self.bytes + data.len() > self.cfg.max_bytes {
      return Err(FragDrop::Full);
    }
    let p = self.partial.entry(key).or_insert_with(|| Partial {
      started: now,
      header: None,
      total: None,
      pieces: Vec::new(),
      bytes: 0,
    });
    let overlaps = p.pieces.iter().any(|(o, d)| v.frag_off < o + d.len() && *o < end);
    let bad_total = match p.total {
      Some(t) => end > t || (!v.more_frags && end != t),
      None => !v.more_frags && p.pieces.iter().any(|(o, d)| o + d.len() > end),
    };
    if overlaps || bad_total || p.pieces.len() >= self.cfg.max_fragments {
      let full = !overlaps && !bad_total;
      self.remove(&key);
      return Err(if full { FragDrop::Full } else { FragDrop::Invalid });
    }
    if !v.more_frags {
      p.total = Some(end);
    }
    if v.frag_off == 0 {
      p.header = Some(pkt[..v.hdr_len].to_vec());
    }
    p.pieces.push((v.frag_off, data.to_vec()));
    p.bytes += data.len();
    self.bytes += data.len();
    match (p.total, &p.header) {
      (Some(t), Some(_)) if p.bytes == t => {}
      _ => return Ok(None),
    }
    let mut p = self.partial.remove(&key).expect("present");
    self.bytes -= p.bytes;
    p.pieces.sort_unstable_by_key(|(o, _)| *o);
    let mut out = p.header.take().expect("checked");
    let hl = out.len();
    let total = (hl + p.bytes) as u16;
    out[2..4].copy_from_slice(&total.to_be_bytes());
    out[6] = 0;
    out[7] = 0;
    out[10] = 0;
    out[11] = 0;
    let c = checksum::checksum(&out[..hl]);
    out[10..12].copy_from_slice(&c.to_be_bytes());
    for (_, d) in &p.pieces {
      out.extend_from_slice(d);
    }
    Ok(Some(out))
  }

  fn remove(&mut self, key: &Key) {
    if let Some(p) = self.partial.remove(key) {
      self.bytes -= p.bytes;
    }
  }

  /// Drops the datagrams whose time ran out.
  pub fn expire(&mut self, now: Duration) {
    let timeout = self.cfg.timeout;
    let before = self.partial.len();
    let mut freed = 0;
    self.partial.retain(|_, p| {
      let keep = now < p.started + timeout;
      if !keep {
        freed += p.bytes;
      }
      keep
    });
    self.bytes -= freed;
    self.timed_out += (before - self.partial.len()) as u64;
  }

  /// When the oldest datagram times out.
  pub fn next_expiry(&self) -> Option<Duration> {
    self.partial.values().map(|p| p.started + self.cfg.timeout).min()
  }
}
