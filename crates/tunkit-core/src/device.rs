//! The public device: the opened queues and the control of one TUN/TAP interface.

use crate::backend::{Control, Opened, Queue};
use crate::config::{DeviceConfig, Mode};
use crate::error::{Error, ErrorKind, Result};
use std::sync::Mutex;

/// An open device. Queues are taken out one by one, each to be driven by its own [`crate::PacketRing`] (possibly
/// from different threads or JavaScript workers); the control stays here.
pub struct Device {
  control: Box<dyn Control>,
  mode: Mode,
  queues: Mutex<Vec<Option<Box<dyn Queue>>>>,
}

impl Device {
  /// Creates or attaches to the device `cfg` describes, on this platform.
  pub fn open(cfg: &DeviceConfig) -> Result<Device> {
    Ok(Device::from_opened(crate::platform::open(cfg)?, cfg.mode))
  }

  /// Wraps queues and control a backend produced.
  pub fn from_opened(opened: Opened, mode: Mode) -> Device {
    Device {
      control: opened.control,
      mode,
      queues: Mutex::new(opened.queues.into_iter().map(Some).collect()),
    }
  }

  pub fn control(&self) -> &dyn Control {
    &*self.control
  }

  pub fn mode(&self) -> Mode {
    self.mode
  }

  pub fn queue_count(&self) -> usize {
    self.queues.lock().unwrap_or_else(|e| e.into_inner()).len()
  }

  /// Takes queue `i` out of the device, once.
  pub fn take_queue(&self, i: usize) -> Result<Box<dyn Queue>> {
    self.take_queue_if(i, |_| Ok(()))
  }

  /// Takes queue `i` out of the device if `check` accepts it (for example its [`Queue::max_frame`] against the
  /// ring it is to run); when `check` fails the queue stays in the device and its error is returned.
  pub fn take_queue_if(
    &self,
    i: usize,
    check: impl FnOnce(&dyn Queue) -> Result<()>,
  ) -> Result<Box<dyn Queue>> {
    let mut qs = self.queues.lock().unwrap_or_else(|e| e.into_inner());
    let n = qs.len();
    match qs.get_mut(i) {
      None => Err(Error::new(
        ErrorKind::InvalidArgument,
        format!("queue {i} does not exist (the device has {n})"),
      )),
      Some(slot) => {
        if let Some(q) = slot.as_deref() {
          check(q)?;
        }
        slot.take().ok_or_else(|| {
          Error::new(
            ErrorKind::Busy,
            format!("queue {i} of {} is already in use", self.control.name()),
          )
        })
      }
    }
  }
}
