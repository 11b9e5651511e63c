//! The offload half of [`TunQueue`]: with a virtio-net header on every read and write, super-packets read from
//! the device are split into ordinary packets ([`gso::split`]) or handed to an [`Intercept`] whole, and packets
//! written are coalesced into super-packets ([`Coalescer`]); raw mode passes frames through as they are.

use super::{lock, Ready, TunQueue};
use crate::backend::{Batch, FrameVerdict, InterceptCounts, InterceptSlot, WriteReport};
use crate::error::{Error, ErrorKind, Result};
use crate::packet::gro::{Coalescer, GroOptions};
use crate::packet::gso::{self, SplitPlan};
use crate::packet::virtio::{self, VirtioNetHdr};
use crate::platform::linux::sys::{self, errno, POLLIN};
use std::collections::VecDeque;
use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// Size of the virtio-net header in front of every packet of a device opened with offload (`TUNSETVNETHDRSZ`):
/// the plain 10-byte `struct virtio_net_hdr`.
pub const VNET_HDR_LEN: usize = virtio::VIRTIO_NET_HDR_LEN;

/// The header of a plain packet: no segmentation, checksums complete.
pub(super) const PLAIN_HDR: [u8; VNET_HDR_LEN] = [0; VNET_HDR_LEN];

/// Size of the buffer one offload read goes into: the header and the largest packet the kernel can hand over (an
/// IPv6 packet is at most 40 + 65535 bytes), plus one byte, so that a read filling it all is known to be truncated.
const SCRATCH_LEN: usize = VNET_HDR_LEN + 40 + 65535 + 1;

/// Below this much room left in the slab, the split reader stops reading: nothing more would fit.
const MIN_SPLIT_ROOM: usize = 2048;

/// What `open` settled on for a device opened with `IFF_VNET_HDR`, handed to each of its queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffloadSetup {
  /// Pass frames through with their header instead of splitting on read and coalescing on write.
  pub raw: bool,
  /// TCP offload: the kernel accepted TSO (reads bring TCP super-packets) and writes coalesce TCP segments.
  pub tcp: bool,
  /// UDP offload: the kernel accepted USO (Linux 6.2+) and writes coalesce equal-size UDP datagrams.
  pub udp: bool,
  /// Times offload was turned off at open because the kernel refused it (counted in `offloadFallbacks`).
  pub fallbacks: u64,
  /// What the kernel refused at open, said once by the queue that gets this setup.
  pub notice: Option<String>,
}

/// Room left in a slab without reallocating it.
fn spare(batch: &Batch) -> usize {
  batch.data.capacity() - batch.data.len()
}

/// The data path of an offload queue: its switches, scratch buffers and counters.
pub(super) struct Offloaded {
  pub(super) raw: bool,
  pub(super) tcp: bool,
  pub(super) udp: bool,
  /// Set for good once the kernel refused a super-packet write: from then on every packet goes out alone.
  writes_off: AtomicBool,
  /// Test hook (the `offload-write` point of [`crate::testhooks`], checked when the queue is created): the next
  /// super-packet write fails with a synthetic `EINVAL`.
  pub(super) fail_next_write: AtomicBool,
  /// A dropped read was already reported in a notice.
  read_drop_told: AtomicBool,
  rx: Mutex<RxScratch>,
  tx: Mutex<TxScratch>,
  pub(super) stats: OffloadStats,
  pub(super) notices: Mutex<VecDeque<String>>,
}

#[derive(Default)]
pub(super) struct OffloadStats {
  pub(super) super_read: AtomicU64,
  pub(super) segments_read: AtomicU64,
  pub(super) super_written: AtomicU64,
  pub(super) segments_coalesced: AtomicU64,
  pub(super) fallbacks: AtomicU64,
  pub(super) read_errors: AtomicU64,
}

/// Reader-side buffers (only the reader thread locks them).
struct RxScratch {
  /// One frame as read: header and packet.
  frame: Vec<u8>,
  /// The frame in `frame` waiting to be split: it did not fit in the last batch and goes first into the next.
  pending: Option<Pending>,
  /// The segments of a super-packet too large for one batch (more segments than a batch takes, or more bytes than
  /// a slab holds), handed out over the following calls.
  overflow: Batch,
  /// Index and byte offset of the next segment of `overflow` to hand out.
  overflow_next: usize,
  overflow_off: usize,
  /// What an intercept answers a frame with (packets for the device), reused from frame to frame.
  replies: Batch,
}

/// A frame of [`RxScratch::frame`] read and validated: its length, header and split plan. A frame is decoded and
/// planned once, as it is read; the intercept and the split (now or, if it waits for room, later) both use that.
#[derive(Clone, Copy)]
struct Pending {
  len: usize,
  hdr: VirtioNetHdr,
  plan: SplitPlan,
}

/// Decodes a frame's header and plans its split (what the splitter accepts is what may be offered and split).
fn plan_frame(frame: &[u8]) -> Result<(VirtioNetHdr, SplitPlan)> {
  let hdr = VirtioNetHdr::decode(frame)?;
  let plan = gso::plan(&hdr, &frame[VNET_HDR_LEN..])?;
  Ok((hdr, plan))
}

/// The intercept a read runs on each frame ([`crate::backend::Queue::read_batch_with`]), and its tally.
pub(super) struct Hook<'a> {
  pub(super) slot: &'a InterceptSlot,
  pub(super) counts: &'a mut InterceptCounts,
}

/// Most frames one read hands to the intercept before it returns (so that a queue whose every frame is taken
/// still sees a close promptly).
const MAX_TAKEN_PER_READ: usize = 256;

/// Writer-side buffers (only the writer thread locks them).
#[derive(Default)]
struct TxScratch {
  coalescer: Coalescer,
  /// The coalesced batch: header and packet per write.
  out: Batch,
  /// The segments of a super-packet the kernel refused, to be written one by one.
  segments: Batch,
}

/// What became of the frame waiting in [`RxScratch::frame`].
enum Split {
  /// Its packets are in the batch.
  Done(usize),
  /// It does not fit; it stays for the next batch.
  NoRoom,
  /// It went into the overflow batch.
  Overflow,
  /// It was malformed and dropped.
  Dropped,
}

impl Offloaded {
  pub(super) fn new(setup: &OffloadSetup) -> Offloaded {
    let fail = crate::testhooks::armed("offload-write");
    let stats = OffloadStats::default();
    stats.fallbacks.store(setup.fallbacks, Ordering::Relaxed);
    Offloaded {
      raw: setup.raw,
      tcp: setup.tcp,
      udp: setup.udp,
      writes_off: AtomicBool::new(false),
      fail_next_write: AtomicBool::new(fail),
      read_drop_told: AtomicBool::new(false),
      rx: Mutex::new(RxScratch {
        frame: if setup.raw {
          Vec::new()
        } else {
          vec![0; SCRATCH_LEN]
        },
        pending: None,
        overflow: Batch::default(),
        overflow_next: 0,
        overflow_off: 0,
        replies: Batch::default(),
      }),
      tx: Mutex::new(TxScratch::default()),
      stats,
      notices: Mutex::new(setup.notice.iter().cloned().collect()),
    }
  }

  fn notice(&self, msg: String) {
    lock(&self.notices).push_back(msg);
  }
}

/// Number of segments of a super-packet and the bytes they add up to once split (each carries the headers).
fn segments_of(hdr: &VirtioNetHdr, pkt_len: usize) -> (u64, u64) {
  let hdr_len = (hdr.hdr_len as usize).min(pkt_len);
  let gso = (hdr.gso_size as usize).max(1);
  let n = (pkt_len - hdr_len).div_ceil(gso).max(1);
  (n as u64, (pkt_len + (n - 1) * hdr_len) as u64)
}

impl TunQueue {
  // ---- Offload, read side ----

  /// `read_batch` of a split (default) offload queue: every read brings a header and a packet, maybe a
  /// super-packet, which goes into the batch as ordinary packets, unless `hook`'s intercept takes it first.
  /// Returns 0 only when the intercept took everything read.
  pub(super) fn read_split(
    &self,
    off: &Offloaded,
    batch: &mut Batch,
    max: usize,
    mut hook: Option<Hook<'_>>,
  ) -> Result<usize> {
    // Only the reader thread takes this lock, so holding it while blocked in poll costs nothing.
    let mut rx = lock(&off.rx);
    let mut ready = Ready::Io;
    loop {
      if self.woken.load(Ordering::Acquire) {
        return Err(self.closed("read"));
      }
      // A frame left over from the last call goes out before anything is read (and before any wait).
      let (n, taken) = self.drain_split(off, &mut rx, batch, max, hook.as_mut())?;
      if n > 0 || taken > 0 {
        return Ok(n);
      }
      if let Ready::Error = ready {
        return Err(self.gone("read", None));
      }
      ready = self.wait(POLLIN, "read")?;
    }
  }

  /// Hands out left-over segments and frames, then reads and splits until nothing is pending, `max` packets are
  /// in, or the next frame does not fit (it then waits in the scratch buffer for the next call). Never blocks.
  /// Each frame read goes to `hook`'s intercept first. Returns the packets put in `batch` and the frames taken.
  fn drain_split(
    &self,
    off: &Offloaded,
    rx: &mut RxScratch,
    batch: &mut Batch,
    max: usize,
    mut hook: Option<&mut Hook<'_>>,
  ) -> Result<(usize, usize)> {
    let mut count = take_overflow(rx, batch, max);
    if rx.overflow_next < rx.overflow.len() {
      return Ok((count, 0));
    }
    let mut taken = 0;
    while count < max && spare(batch) >= MIN_SPLIT_ROOM && taken < MAX_TAKEN_PER_READ {
      // A frame left pending has been through the intercept already; otherwise read a fresh one.
      let pending = match rx.pending.take() {
        Some(p) => p,
        None => {
          let len = match sys::read_fd(self.fd.as_fd(), &mut rx.frame) {
            // With a virtio-net header a read is never empty; treat 0 like "nothing pending".
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(_) if count + taken > 0 => break,
            Err(e) => return Err(Error::os("read", &e, format_args!("reading from {}", self.name))),
          };
          let Some(p) = self.check_read(off, &rx.frame, len) else {
            continue;
          };
          if let Some(h) = hook.as_deref_mut() {
            let RxScratch { frame, replies, .. } = &mut *rx;
            if self.intercept(off, h, &mut frame[..len], Some((&p.hdr, &p.plan)), replies)? {
              taken += 1;
              continue;
            }
          }
          p
        }
      };
      match self.split_pending(off, rx, pending, batch, max - count, count == 0) {
        Split::Done(n) => count += n,
        Split::NoRoom => break,
        Split::Overflow => {
          count += take_overflow(rx, batch, max - count);
          break;
        }
        Split::Dropped => {}
      }
    }
    Ok((count, taken))
  }

  /// Decodes and plans the `len`-byte frame just read into `buf`, once for the intercept and the split. A frame
  /// that may be truncated (it filled the whole buffer) or that the splitter rejects is dropped here, counted and
  /// told once; `None` then.
  fn check_read(&self, off: &Offloaded, buf: &[u8], len: usize) -> Option<Pending> {
    if len == buf.len() {
      self.drop_read(
        off,
        &Error::new(
          ErrorKind::InvalidPacket,
          format!("a {len}-byte read filled the whole buffer and may be truncated"),
        ),
      );
      return None;
    }
    match plan_frame(&buf[..len]) {
      Ok((hdr, plan)) => Some(Pending { len, hdr, plan }),
      Err(e) => {
        self.drop_read(off, &e);
        None
      }
    }
  }

  /// Offers one frame (header and packet) to `hook`'s intercept, and does what it answers: writes the frame
  /// back (a super-packet as one write), writes its replies. `planned` is the frame's header and split plan when
  /// the caller has them already (the split reader, which made them as it read the frame); without, they are made
  /// here, only if an intercept is installed. Frames whose header contradicts the packet are not offered (the
  /// caller drops or passes them as it would without an intercept). Returns true if it was taken; a frame passed
  /// on is unchanged, so that its plan still holds for the split.
  fn intercept(
    &self,
    off: &Offloaded,
    hook: &mut Hook<'_>,
    frame: &mut [u8],
    planned: Option<(&VirtioNetHdr, &SplitPlan)>,
    replies: &mut Batch,
  ) -> Result<bool> {
    let installed = hook.slot.read().unwrap_or_else(|e| e.into_inner());
    let Some(intercept) = installed.as_deref() else {
      return Ok(false);
    };
    let (hdr, segments) = match planned {
      Some((hdr, plan)) => (*hdr, plan.segments),
      None => match plan_frame(frame) {
        Ok((hdr, plan)) => (hdr, plan.segments),
        Err(_) => return Ok(false),
      },
    };
    replies.clear();
    let verdict = intercept.frame(&hdr, &mut frame[VNET_HDR_LEN..], replies);
    drop(installed);
    let writes = &mut hook.counts.writes;
    if verdict == FrameVerdict::WriteBack {
      if hdr.gso_kind() == virtio::VIRTIO_NET_HDR_GSO_NONE {
        let r = self.write_with(|| sys::write_fd(self.fd.as_fd(), frame))?;
        self.account(r, 1, frame.len() - VNET_HDR_LEN, None, writes);
      } else {
        let mut tx = lock(&off.tx);
        self.write_super(off, frame, Some(0), &mut tx.segments, writes)?;
      }
    }
    for pkt in replies.iter() {
      let r = self.write_with(|| sys::write2_fd(self.fd.as_fd(), &PLAIN_HDR, pkt))?;
      self.account(r, 1, pkt.len(), None, writes);
    }
    if verdict == FrameVerdict::Pass {
      return Ok(false);
    }
    hook.counts.taken += 1;
    if hdr.gso_kind() != virtio::VIRTIO_NET_HDR_GSO_NONE {
      off.stats.super_read.fetch_add(1, Ordering::Relaxed);
      off
        .stats
        .segments_read
        .fetch_add(segments as u64, Ordering::Relaxed);
    }
    Ok(true)
  }

  /// Splits `frame`, the frame waiting in the scratch buffer, with its plan into `batch` if its packets fit
  /// (`room` more packets and the slab's spare bytes); if they do not and the batch got nothing yet (`alone`),
  /// into the overflow batch; otherwise it is left pending for the next batch.
  fn split_pending(
    &self,
    off: &Offloaded,
    rx: &mut RxScratch,
    frame: Pending,
    batch: &mut Batch,
    room: usize,
    alone: bool,
  ) -> Split {
    let RxScratch {
      frame: buf,
      pending,
      overflow,
      overflow_next,
      overflow_off,
      ..
    } = rx;
    let Pending { len, hdr, plan } = frame;
    let pkt = &buf[VNET_HDR_LEN..len];
    let fits = plan.segments <= room && plan.bytes <= spare(batch);
    let result = if fits {
      plan.split(pkt, batch).map(Split::Done)
    } else if alone {
      overflow.clear();
      *overflow_next = 0;
      *overflow_off = 0;
      plan.split(pkt, overflow).map(|_| Split::Overflow)
    } else {
      *pending = Some(frame);
      return Split::NoRoom;
    };
    match result {
      Ok(r) => {
        if hdr.gso_kind() != virtio::VIRTIO_NET_HDR_GSO_NONE {
          off.stats.super_read.fetch_add(1, Ordering::Relaxed);
          off
            .stats
            .segments_read
            .fetch_add(plan.segments as u64, Ordering::Relaxed);
        }
        r
      }
      // The plan is the frame's own, so this does not happen; should it, the frame is dropped like any other
      // the splitter rejects.
      Err(e) => {
        self.drop_read(off, &e);
        Split::Dropped
      }
    }
  }

  /// Drops a frame the splitter rejected, counts it, and says so once.
  ///
  /// Such a frame has a header that contradicts its packet (a segment size of 0, a checksum offset past the end,
  /// an IP length that is not the packet's, a fragment to segment...). Handing it over as it is would put a
  /// header-prefixed frame among plain packets, and the packet behind it is malformed for any IP consumer anyway;
  /// the kernel never produces one, so a drop is the honest answer, and `offloadReadErrors` shows it.
  fn drop_read(&self, off: &Offloaded, e: &Error) {
    off.stats.read_errors.fetch_add(1, Ordering::Relaxed);
    if !off.read_drop_told.swap(true, Ordering::Relaxed) {
      off.notice(format!(
        "offload: dropped a frame read from the device that could not be split into packets ({}); further drops are \
         only counted in stats().backend.offloadReadErrors",
        e.message()
      ));
    }
  }

  /// `read_batch` of a raw offload queue: frames go into the batch as read, header included.
  /// Frames `hook`'s intercept takes are removed from the batch (0 is returned when it took them all).
  pub(super) fn read_raw(
    &self,
    off: &Offloaded,
    batch: &mut Batch,
    max: usize,
    hook: Option<Hook<'_>>,
  ) -> Result<usize> {
    let first = batch.lens.len();
    let n = self.read_plain(batch, max)?;
    let Some(mut hook) = hook else {
      let mut at = batch.data.len() - batch.lens[first..].iter().map(|&l| l as usize).sum::<usize>();
      for &len in &batch.lens[first..] {
        if is_super(&batch.data[at..at + len as usize]) {
          off.stats.super_read.fetch_add(1, Ordering::Relaxed);
        }
        at += len as usize;
      }
      return Ok(n);
    };
    let mut rx = lock(&off.rx);
    let (mut index, mut failed) = (0usize, None);
    batch.retain_mut(|frame| {
      index += 1;
      if index <= first || failed.is_some() {
        return true;
      }
      let sup = is_super(frame);
      match self.intercept(off, &mut hook, frame, None, &mut rx.replies) {
        Ok(true) => false,
        Ok(false) => {
          if sup {
            off.stats.super_read.fetch_add(1, Ordering::Relaxed);
          }
          true
        }
        Err(e) => {
          failed = Some(e);
          true
        }
      }
    });
    match failed {
      Some(e) => Err(e),
      None => Ok(batch.lens.len() - first),
    }
  }

  // ---- Offload, write side ----

  /// `write_batch` of an offload queue.
  /// Raw mode: each frame is a virtio-net header and a packet, written as it is.
  pub(super) fn write_raw<'a>(
    &self,
    off: &Offloaded,
    frames: impl Iterator<Item = &'a [u8]>,
  ) -> Result<WriteReport> {
    let mut report = WriteReport::default();
    let mut tx = lock(&off.tx);
    for (pos, frame) in frames.enumerate() {
      if is_super(frame) {
        self.write_super(off, frame, Some(pos), &mut tx.segments, &mut report)?;
      } else {
        let r = self.write_with(|| sys::write_fd(self.fd.as_fd(), frame))?;
        self.account(r, 1, frame.len(), Some(pos), &mut report);
      }
    }
    Ok(report)
  }

  /// Split-mode offload writes: consecutive segments of a flow are coalesced into super-packets (straight from
  /// the packets' memory), everything else goes out with a plain header.
  pub(super) fn write_offloaded(&self, off: &Offloaded, pkts: &[&[u8]]) -> Result<WriteReport> {
    let mut report = WriteReport::default();
    let mut tx = lock(&off.tx);
    let TxScratch {
      coalescer,
      out,
      segments,
    } = &mut *tx;
    out.clear();
    let coalescing = (off.tcp || off.udp) && !off.writes_off.load(Ordering::Relaxed);
    if !coalescing {
      for (pos, pkt) in pkts.iter().enumerate() {
        let r = self.write_with(|| sys::write2_fd(self.fd.as_fd(), &PLAIN_HDR, pkt))?;
        self.account(r, 1, pkt.len(), Some(pos), &mut report);
      }
      return Ok(report);
    }
    let opts = GroOptions {
      tcp: off.tcp,
      udp: off.udp,
      ..GroOptions::default()
    };
    coalescer.coalesce_packets(pkts, &opts, out);
    for entry in out.iter() {
      if entry[1] == virtio::VIRTIO_NET_HDR_GSO_NONE {
        let r = self.write_with(|| sys::write_fd(self.fd.as_fd(), entry))?;
        self.account(r, 1, entry.len() - VNET_HDR_LEN, None, &mut report);
      } else {
        self.write_super(off, entry, None, segments, &mut report)?;
      }
    }
    Ok(report)
  }

  /// Writes one super-packet (header and packet): coalesced by the writer, or a raw frame (`pos` is then its
  /// index in the batch). If the kernel refuses it with `EINVAL`, super-packet writes are turned off for good and
  /// its segments go out one by one; so they do when that already happened.
  fn write_super(
    &self,
    off: &Offloaded,
    frame: &[u8],
    pos: Option<usize>,
    segments: &mut Batch,
    report: &mut WriteReport,
  ) -> Result<()> {
    let raw = pos.is_some();
    let parsed = VirtioNetHdr::decode(frame);
    let (hdr, pkt) = match &parsed {
      Ok(h) => (*h, &frame[VNET_HDR_LEN..]),
      Err(e) => {
        report.errors += 1;
        report.last_error = Some(e.clone());
        return Ok(());
      }
    };
    let (segs, bytes) = segments_of(&hdr, pkt.len());
    // Raw frames are counted as the consumer wrote them; coalesced ones as the packets that went into them.
    let (packets, size) = if raw {
      (1, frame.len())
    } else {
      (segs, bytes as usize)
    };
    if !off.writes_off.load(Ordering::Relaxed) {
      let r = if off.fail_next_write.swap(false, Ordering::Relaxed) {
        Err(io::Error::from_raw_os_error(errno::EINVAL))
      } else {
        self.write_with(|| sys::write_fd(self.fd.as_fd(), frame))?
      };
      match r {
        Ok(_) => {
          off.stats.super_written.fetch_add(1, Ordering::Relaxed);
          if !raw {
            off.stats.segments_coalesced.fetch_add(segs, Ordering::Relaxed);
          }
          self.account(Ok(0), packets, size, pos, report);
          return Ok(());
        }
        // EINVAL for a super-packet the splitter accepts (coalesced ones always are) is the kernel refusing
        // segmentation offload on writes, a known failure of some kernels that accept IFF_VNET_HDR. A raw frame
        // the splitter rejects is just a bad frame.
        Err(e) if sys::errno_of(&e) == errno::EINVAL && (!raw || gso::plan(&hdr, pkt).is_ok()) => {
          self.turn_off_writes(off, &e);
        }
        Err(e) => {
          self.account(Err(e), packets, size, pos, report);
          return Ok(());
        }
      }
    }
    segments.clear();
    if let Err(e) = gso::split(&hdr, pkt, segments) {
      report.errors += packets;
      report.last_error = Some(e);
      return Ok(());
    }
    let mut failed: Option<io::Error> = None;
    for seg in segments.iter() {
      let r = self.write_with(|| sys::write2_fd(self.fd.as_fd(), &PLAIN_HDR, seg))?;
      match r {
        Err(e) if raw => {
          failed.get_or_insert(e);
        }
        Ok(_) if raw => {}
        r => self.account(r, 1, seg.len(), None, report),
      }
    }
    if raw {
      // The consumer wrote one frame: it went out whole or it did not.
      self.account(failed.map_or(Ok(0), Err), 1, frame.len(), pos, report);
    }
    Ok(())
  }

  /// Turns super-packet writes off for good after the kernel refused one, counts it and says so once.
  fn turn_off_writes(&self, off: &Offloaded, e: &io::Error) {
    if !off.writes_off.swap(true, Ordering::Relaxed) {
      off.stats.fallbacks.fetch_add(1, Ordering::Relaxed);
      off.notice(format!(
        "offload: the kernel refused a super-packet write ({e}); from now on every packet is written on its own \
         (reads still use offload). No packet was lost: the refused write was re-sent as its segments"
      ));
    }
  }
}

/// Whether a raw frame's header says it is a super-packet (any segmentation type).
fn is_super(frame: &[u8]) -> bool {
  frame.len() > 1 && frame[1] & !virtio::VIRTIO_NET_HDR_GSO_ECN != virtio::VIRTIO_NET_HDR_GSO_NONE
}

/// Moves segments from the overflow batch into `batch`: at most `max`, and only while they fit in its spare
/// capacity, except that the first always goes in (a slab always has room for one largest packet).
fn take_overflow(rx: &mut RxScratch, batch: &mut Batch, max: usize) -> usize {
  let mut count = 0;
  while rx.overflow_next < rx.overflow.len() && count < max {
    let len = rx.overflow.lens[rx.overflow_next] as usize;
    if count > 0 && len > spare(batch) {
      break;
    }
    batch.push(&rx.overflow.data[rx.overflow_off..rx.overflow_off + len]);
    rx.overflow_next += 1;
    rx.overflow_off += len;
    count += 1;
  }
  if rx.overflow_next >= rx.overflow.len() && !rx.overflow.is_empty() {
    rx.overflow.clear();
    rx.overflow_next = 0;
    rx.overflow_off = 0;
  }
  count
}
