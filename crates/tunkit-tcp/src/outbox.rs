//! Output packets, in reused buffers: the endpoint writes whole IP packets into an [`Outbox`] the caller
//! drains and clears; the buffers stay allocated, so the steady state allocates nothing per segment.

/// One packet to write to the device.
#[derive(Clone, Debug, Default)]
pub struct OutPacket {
  /// The IP packet (IPv4 or IPv6 header, TCP header, payload).
  pub data: Vec<u8>,
  /// For a TSO super-packet (payload above one segment): the payload size of each segment the device
  /// must cut it into (virtio `gso_size`); 0 for an ordinary packet.
  pub gso_size: u16,
  /// Offset of the TCP header (virtio `csum_start`; the checksum field is at `l4_offset + 16`).
  pub l4_offset: usize,
  /// The TCP checksum field holds only the pseudo-header sum (virtio `NEEDS_CSUM`): see
  /// [`crate::Config::checksum_offload`].
  pub csum_partial: bool,
}

/// A reusable list of output packets.
#[derive(Debug, Default)]
pub struct Outbox {
  pkts: Vec<OutPacket>,
  len: usize,
}

impl Outbox {
  /// An empty outbox.
  pub fn new() -> Outbox {
    Outbox::default()
  }

  /// Packets queued.
  pub fn len(&self) -> usize {
    self.len
  }

  /// True when no packet is queued.
  pub fn is_empty(&self) -> bool {
    self.len == 0
  }

  /// The queued packets, in order.
  pub fn packets(&self) -> &[OutPacket] {
    &self.pkts[..self.len]
  }

  /// Forgets the queued packets, keeping their buffers for reuse.
  pub fn clear(&mut self) {
    self.len = 0;
  }

  /// The next buffer to fill (reused when possible).
  pub(crate) fn next(&mut self) -> &mut OutPacket {
    if self.len == self.pkts.len() {
      self.pkts.push(OutPacket::default());
    }
    self.len += 1;
    let p = &mut self.pkts[self.len - 1];
    p.gso_size = 0;
    p.csum_partial = false;
    p
  }
}
