//! tunkit core: TUN/TAP devices per platform, the batched packet ring that moves packets between a device and its
//! consumer on dedicated threads, and pure packet logic. No Node-API here, and no dependency but `std`.

pub mod backend;
pub mod config;
pub mod device;
pub mod error;
pub mod packet;
pub mod platform;
pub mod ring;
pub mod rule;
pub mod sha256;
pub mod testhooks;

pub use backend::{
  Batch, Control, FrameVerdict, Intercept, InterceptCounts, InterceptSlot, KernelStats, LinkEvent, LinkInfo,
  Opened, Queue,
};
pub use config::{DeviceConfig, IpCidr, Mode, RouteSpec};
pub use device::Device;
pub use error::{Error, ErrorKind, Result};
pub use ring::{PacketRing, Pull, RingConfig, RingEvent, RingStats};
pub use rule::RuleSpec;
