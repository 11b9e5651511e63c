//! Finding, verifying and loading `wintun.dll`.
//!
//! The DLL is loaded only from the directory of the module that contains this code (the `.node` file of the
//! platform package, which ships `wintun.dll` next to it), never through the DLL search path, and only after its
//! SHA-256 matched the digest pinned for this architecture in `wintun.sha256` (the official, signed Wintun build).
//! The file stays open without write or delete sharing from the digest until the load, so it cannot be swapped in
//! between.

use super::sys::{self, code, wintun::Wintun, Library};
use crate::error::{Error, ErrorKind, Result};
use crate::sha256;
use std::fs::OpenOptions;
use std::os::windows::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

/// The pinned digests (`sha256sum` format), shared with the release workflow.
const PINNED: &str = include_str!("../../../../../wintun.sha256");

/// `FILE_SHARE_READ`: others may read the file while we hold it, not write, rename or delete it.
const FILE_SHARE_READ: u32 = 0x1;

/// The name of this architecture in the Wintun distribution (`wintun/bin/<arch>/wintun.dll`).
pub fn wintun_arch() -> &'static str {
  if cfg!(target_arch = "x86_64") {
    "amd64"
  } else if cfg!(target_arch = "aarch64") {
    "arm64"
  } else if cfg!(target_arch = "x86") {
    "x86"
  } else {
    "arm"
  }
}

/// The loaded API, once loading succeeded (a failure is not remembered: installing the DLL fixes it).
static LOADED: Mutex<Option<&'static Wintun>> = Mutex::new(None);

/// The wintun API, loading and verifying `wintun.dll` on first use. Errors are `NoDriver` and name the path and
/// the architecture.
pub fn wintun() -> Result<&'static Wintun> {
  let mut slot = LOADED.lock().unwrap_or_else(|e| e.into_inner());
  if let Some(api) = *slot {
    return Ok(api);
  }
  let module = sys::this_module_path().map_err(|e| {
    Error::os(
      "GetModuleFileNameW",
      &e,
      "locating the tunkit module to find wintun.dll next to it",
    )
    .with_kind(ErrorKind::NoDriver)
  })?;
  let dir = module.parent().unwrap_or(Path::new(""));
  let api: &'static Wintun = Box::leak(Box::new(load(&dir.join("wintun.dll"))?));
  *slot = Some(api);
  Ok(api)
}

/// Verifies and loads the DLL at `path`.
fn load(path: &Path) -> Result<Wintun> {
  let arch = wintun_arch();
  let no_driver = |why: String| {
    Error::new(
      ErrorKind::NoDriver,
      format!("wintun.dll ({arch}) at {}: {why}", path.display()),
    )
  };
  let expected = pinned_digest(arch).map_err(&no_driver)?;

  let file = OpenOptions::new()
    .read(true)
    .share_mode(FILE_SHARE_READ)
    .open(path)
    .map_err(|e| match sys::code_of(&e) {
      code::ERROR_FILE_NOT_FOUND | code::ERROR_PATH_NOT_FOUND => no_driver(format!(
        "not found; the tunkit-win32-* platform package ships it next to the .node file ({e})"
      )),
      _ => no_driver(format!("cannot be opened ({e})")),
    })?;
  let digest = sha256::digest_reader(&file).map_err(|e| no_driver(format!("cannot be read ({e})")))?;
  if digest != expected {
    return Err(no_driver(format!(
      "SHA-256 is {}, not {} (the pinned official Wintun build); refusing to load it",
      sha256::to_hex(&digest),
      sha256::to_hex(&expected)
    )));
  }
  let lib = Library::load_restricted(path).map_err(|e| match sys::code_of(&e) {
    code::ERROR_BAD_EXE_FORMAT => no_driver(format!("is not a DLL for this architecture ({e})")),
    code::ERROR_MOD_NOT_FOUND => no_driver(format!("a DLL it needs is missing ({e})")),
    _ => no_driver(format!("LoadLibraryExW failed ({e})")),
  })?;
  // The file may be shared again once the loader has mapped it.
  drop(file);
  Wintun::from_library(lib).map_err(|missing| no_driver(format!("does not export {missing}")))
}

/// The pinned digest of `wintun/bin/<arch>/wintun.dll`.
fn pinned_digest(arch: &str) -> std::result::Result<sha256::Digest, String> {
  let sums = sha256::parse_sums(PINNED).map_err(|e| format!("the pinned digest list is malformed: {e}"))?;
  sha256::lookup(&sums, &format!("wintun/bin/{arch}/wintun.dll"))
    .ok_or_else(|| format!("no digest is pinned for the {arch} build, so none can be trusted"))
}
