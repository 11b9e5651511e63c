//! The backend contract: what every platform (Linux, Windows, macOS, the in-memory pair) provides. It is
//! deliberately small. [`Queue`] is the data path of one queue (one fd on Linux, one session on Windows), driven by
//! the ring's reader and writer threads. [`Control`] is configuration; every method has a default that returns a
//! typed `Unsupported` error, so the public `Device` never `#[cfg]`s around a missing capability.

use crate::config::{IpCidr, RouteSpec};
use crate::error::{Error, Result};
use crate::packet::virtio::VirtioNetHdr;
use std::sync::{Arc, RwLock};

/// Packets packed back to back in one buffer (a slab), with their lengths.
///
/// `data.len()` is the sum of `lens`. The capacity of `data` is the slab size; readers append packets into the
/// spare capacity, so a batch handed to JavaScript is one allocation however many packets it holds.
#[derive(Debug, Default)]
pub struct Batch {
  pub data: Vec<u8>,
  pub lens: Vec<u32>,
}

impl Batch {
  pub fn with_capacity(bytes: usize, packets: usize) -> Batch {
    Batch {
      data: Vec::with_capacity(bytes),
      lens: Vec::with_capacity(packets),
    }
  }

  /// Number of packets.
  pub fn len(&self) -> usize {
    self.lens.len()
  }

  pub fn is_empty(&self) -> bool {
    self.lens.is_empty()
  }

  pub fn clear(&mut self) {
    self.data.clear();
    self.lens.clear();
  }

  /// A batch holding copies of `pkts`.
  pub fn from_packets(pkts: &[&[u8]]) -> Batch {
    let mut b = Batch::with_capacity(pkts.iter().map(|p| p.len()).sum(), pkts.len());
    for p in pkts {
      b.push(p);
    }
    b
  }

  /// Appends one packet by copying it.
  pub fn push(&mut self, pkt: &[u8]) {
    self.data.extend_from_slice(pkt);
    self.lens.push(pkt.len() as u32);
  }

  /// Keeps only the packets for which `keep` returns true, in order, compacting them in place; `keep` may change a
  /// packet's bytes (not its length). Returns how many were dropped.
  pub fn retain_mut(&mut self, mut keep: impl FnMut(&mut [u8]) -> bool) -> usize {
    let (mut read, mut write, mut kept) = (0usize, 0usize, 0usize);
    for i in 0..self.lens.len() {
      let len = self.lens[i] as usize;
      if keep(&mut self.data[read..read + len]) {
        if write != read {
          self.data.copy_within(read..read + len, write);
        }
        self.lens[kept] = len as u32;
        kept += 1;
        write += len;
      }
      read += len;
    }
    let dropped = self.lens.len() - kept;
    self.lens.truncate(kept);
    self.data.truncate(write);
    dropped
  }

  /// Iterates over the packets.
  pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
    let mut off = 0usize;
    self.lens.iter().map(move |&l| {
      let p = &self.data[off..off + l as usize];
      off += l as usize;
      p
    })
  }
}

/// Packet processing that runs on a queue's reader thread, between the device and the consumer (the forwarding
/// stack's engine): it sees every batch first, may rewrite packets in place, answer them, or take them, and hands
/// on only what is left. Implementations must be quick and must not block: they run once per batch, on the thread
/// that reads the device.
pub trait Intercept: Send + Sync {
  /// Processes `batch` in place: packets it takes are removed from it (see [`Batch::retain_mut`]), the rest go on
  /// to the consumer. Packets to write to the device (rewritten ones, replies) go into `to_device`, which the ring
  /// writes right after, from the same thread.
  fn process(&self, batch: &mut Batch, to_device: &mut Batch);

  /// On a queue with offload ([`Queue::intercepts_frames`]): one frame as read, before any splitting, with its
  /// virtio-net header decoded (`hdr`) and checked against `pkt` (what [`crate::packet::gso::plan`] accepts), so
  /// that a 64 KiB super-packet is handled as one unit. `pkt` may be rewritten in place (never resized, the
  /// header's offsets staying valid) for [`FrameVerdict::WriteBack`]; packets for the device (replies, complete
  /// checksums, no header) go into `to_device`. Such a queue calls this for every valid frame and never calls
  /// [`Intercept::process`]. The queue decodes and plans each frame once: a frame passed on
  /// ([`FrameVerdict::Pass`]) must be left unchanged, since it is split with the plan made before this call. The
  /// default passes every frame on.
  fn frame(&self, _hdr: &VirtioNetHdr, _pkt: &mut [u8], _to_device: &mut Batch) -> FrameVerdict {
    FrameVerdict::Pass
  }
}

/// Where the intercept of a queue is installed (none: packets go straight to the consumer).
pub type InterceptSlot = RwLock<Option<Arc<dyn Intercept>>>;

/// What [`Intercept::frame`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameVerdict {
  /// Not taken: it goes on to the consumer (split into packets, or as it is in raw mode). The intercept must not
  /// have changed it.
  Pass,
  /// Taken (consumed or dropped); only what went into `to_device` is written.
  Taken,
  /// Taken and rewritten: written back to the device as it is now, with its header (a super-packet stays one).
  WriteBack,
}

/// What the intercept of a frame-intercepting queue took on one read ([`Queue::read_batch_with`]), for the ring's
/// counters.
#[derive(Debug, Default)]
pub struct InterceptCounts {
  /// Frames the intercept took (written back or not).
  pub taken: u64,
  /// The writes to the device it asked for (frames written back and packets in `to_device`).
  pub writes: WriteReport,
}

/// What one `write_batch` call did. Per-packet failures (a packet the kernel refuses) are counted and the rest of
/// the batch still goes out; only a closed device stops the writer.
#[derive(Debug, Default)]
pub struct WriteReport {
  pub packets: u64,
  pub bytes: u64,
  pub errors: u64,
  pub last_error: Option<Error>,
}

/// The data path of one queue. Implementations are used from several threads at once: one reader, and writers
/// (the ring's writer thread, the consumer's thread for inline writes, and the reader thread itself for what an
/// [`Intercept`] writes back): `write_batch` and `write_packets` must be safe to call concurrently.
pub trait Queue: Send + Sync {
  /// Blocks until at least one packet can be read or [`Queue::wake`] was called, then reads packets into the spare
  /// capacity of `batch` until none is pending, `max_packets` were read, or less than
  /// [`Queue::max_frame`] bytes of capacity are left. Returns the number read (at least 1), or a `Closed` error once
  /// woken for close. A packet is never truncated: the caller guarantees room for one `max_frame`.
  fn read_batch(&self, batch: &mut Batch, max_packets: usize) -> Result<usize>;

  /// True if the queue runs an [`Intercept`] on each frame it reads ([`Queue::read_batch_with`]), before
  /// splitting super-packets, instead of the ring running it on each batch.
  fn intercepts_frames(&self) -> bool {
    false
  }

  /// [`Queue::read_batch`] on a queue that [`Queue::intercepts_frames`]: the intercept in `slot` (looked up for
  /// each frame, so one installed while the read blocks sees what it reads) runs on each frame read
  /// ([`Intercept::frame`]); what it takes never reaches `batch`. May then return 0 (everything read was taken);
  /// `counts` adds up what was taken and written.
  fn read_batch_with(
    &self,
    batch: &mut Batch,
    max_packets: usize,
    _slot: &InterceptSlot,
    _counts: &mut InterceptCounts,
  ) -> Result<usize> {
    self.read_batch(batch, max_packets)
  }

  /// Writes every packet of `batch`, waiting for the device when it is momentarily full. Returns `Closed` only when
  /// the device is gone; other per-packet errors go in the report.
  fn write_batch(&self, batch: &Batch) -> Result<WriteReport>;

  /// Largest frame a read can return; slabs always keep this much room for the next read.
  fn max_frame(&self) -> usize;

  /// Writes packets that are not packed into a batch (the ring's inline path hands over the caller's memory). The
  /// default packs them and calls `write_batch`; backends that write packet by packet override it to avoid the copy.
  fn write_packets(&self, pkts: &[&[u8]]) -> Result<WriteReport> {
    self.write_batch(&Batch::from_packets(pkts))
  }

  /// Whether `write_batch` never waits (a TUN device takes every write at once). The ring then writes on the
  /// caller's thread when nothing is queued, instead of waking its writer thread.
  fn writes_never_block(&self) -> bool {
    false
  }

  /// Unblocks `read_batch` and `write_batch` for good (they then return `Closed`). Idempotent, callable from any
  /// thread.
  fn wake(&self);

  /// Backend-specific counters (for example offload: super-packets split, segments coalesced, fallbacks), named in
  /// camelCase as JavaScript shows them. Called from the consumer's thread; must be cheap.
  fn counters(&self) -> Vec<(&'static str, u64)> {
    Vec::new()
  }

  /// A one-time notice for the user (for example "offload turned off for writes: the kernel refused"). The ring
  /// checks after every batch and forwards it; implementations return each notice once.
  fn take_notice(&self) -> Option<String> {
    None
  }
}

/// Counters the OS keeps for the interface.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelStats {
  pub rx_packets: u64,
  pub tx_packets: u64,
  pub rx_bytes: u64,
  pub tx_bytes: u64,
  pub rx_dropped: u64,
  pub tx_dropped: u64,
  pub rx_errors: u64,
  pub tx_errors: u64,
}

/// State of the link as the OS reports it now (never cached).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkInfo {
  pub name: String,
  pub index: u32,
  pub mtu: u32,
  pub up: bool,
  pub tx_queue_len: u32,
  pub mac: Option<[u8; 6]>,
  pub stats: KernelStats,
}

/// A change on the link, from the OS's notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
  Up,
  Down,
  Mtu(u32),
  AddressAdded(IpCidr),
  AddressRemoved(IpCidr),
}

/// Configuration of a device. Defaults return `Unsupported`.
pub trait Control: Send + Sync {
  fn name(&self) -> String;
  fn index(&self) -> u32 {
    0
  }
  fn link(&self) -> Result<LinkInfo> {
    Err(Error::unsupported("reading the link state"))
  }
  fn set_mtu(&self, _mtu: u32) -> Result<()> {
    Err(Error::unsupported("setMtu"))
  }
  fn set_up(&self, _up: bool) -> Result<()> {
    Err(Error::unsupported("up/down"))
  }
  fn set_tx_queue_len(&self, _len: u32) -> Result<()> {
    Err(Error::unsupported("txQueueLength"))
  }
  fn set_mac(&self, _mac: [u8; 6]) -> Result<()> {
    Err(Error::unsupported("setting the MAC address"))
  }
  fn add_address(&self, _addr: &IpCidr) -> Result<()> {
    Err(Error::unsupported("addAddress"))
  }
  fn remove_address(&self, _addr: &IpCidr) -> Result<()> {
    Err(Error::unsupported("removeAddress"))
  }
  fn addresses(&self) -> Result<Vec<IpCidr>> {
    Err(Error::unsupported("addresses"))
  }
  fn add_route(&self, _route: &RouteSpec) -> Result<()> {
    Err(Error::unsupported("addRoute"))
  }
  fn remove_route(&self, _route: &RouteSpec) -> Result<()> {
    Err(Error::unsupported("removeRoute"))
  }
  fn routes(&self) -> Result<Vec<RouteSpec>> {
    Err(Error::unsupported("routes"))
  }
  /// Opens a subscription to this link's changes. The returned source blocks in `next` until an event or `wake`.
  fn events(&self) -> Result<Box<dyn EventSource>> {
    Err(Error::unsupported("events"))
  }
  /// Removes a persistent device for good (clears `TUNSETPERSIST`).
  fn set_persist(&self, _persist: bool) -> Result<()> {
    Err(Error::unsupported("persist"))
  }
}

/// A blocking source of link events.
pub trait EventSource: Send + Sync {
  /// Blocks until the next batch of events or `wake`; returns `Closed` once woken.
  fn next(&self) -> Result<Vec<LinkEvent>>;
  fn wake(&self);
}

/// An opened device: its queues and its control.
pub struct Opened {
  pub queues: Vec<Box<dyn Queue>>,
  pub control: Box<dyn Control>,
}
