# Shared by scripts/check-targets.sh and scripts/qemu-arm64-test.sh (sourced, not run).
#
# Cross builds on a Debian 12 machine without rustup targets: Debian's rustc-web (a newer compiler than rustup's
# stable, with its std source in rust-web-src) builds std from source for each target (-Zbuild-std), offline, with
# std's own vendored crates as the crates.io source. The MinGW and aarch64 GNU toolchains link; qemu-user runs
# arm64 binaries. See ../shared/design/reference/toolchain.md, section 4.

CROSS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CROSS_TARGET_DIR=$CROSS_ROOT/target/cross
CROSS_OUT=$CROSS_TARGET_DIR/out
CROSS_PACKAGES=(rustc-web rust-web-src rust-web-clippy gcc-mingw-w64-x86-64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross
  qemu-user)

# Installs the packages of CROSS_PACKAGES that are missing (apt-get update once, only when something is). The
# compiler and its std source must come from the same release, so both are (re)installed together when they differ.
cross_ensure_packages() {
  local missing=() p status
  for p in "${CROSS_PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)
    [[ $status == "install ok installed" ]] || missing+=("$p")
  done
  local rv sv
  rv=$(dpkg-query -W -f='${Version}' rustc-web 2>/dev/null)
  sv=$(dpkg-query -W -f='${Version}' rust-web-src 2>/dev/null)
  if [[ -n $rv && -n $sv && $rv != "$sv" ]]; then
    missing+=(rustc-web rust-web-src rust-web-clippy)
  fi
  ((${#missing[@]} == 0)) && return 0
  if [[ $(id -u) != 0 ]]; then
    echo "cross: missing Debian packages (run as root to install them): ${missing[*]}" >&2
    return 1
  fi
  echo "cross: installing ${missing[*]}"
  apt-get update -q >/dev/null || echo "cross: apt-get update failed; trying the install anyway" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# Exports the environment of cross builds and locates std's source for the installed rustc-web.
cross_setup_env() {
  export RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1
  if [[ ! -x $RUSTC ]]; then
    echo "cross: $RUSTC is missing (package rustc-web)" >&2
    return 1
  fi
  local version
  version=$("$RUSTC" --version | awk '{print $2}')
  CROSS_RUSTC_VERSION=$version
  # rust-web-src ships library/ (with library/vendor) under the sysroot's rustlib/src/rust.
  local sysroot
  sysroot=$("$RUSTC" --print sysroot)
  CROSS_STD_VENDOR=$(readlink -f "$sysroot/lib/rustlib/src/rust/library/vendor" 2>/dev/null)
  if [[ ! -d $CROSS_STD_VENDOR ]]; then
    CROSS_STD_VENDOR=$(dpkg -L rust-web-src 2>/dev/null | grep -m1 "/library/vendor$")
  fi
  if [[ ! -d $CROSS_STD_VENDOR || $CROSS_STD_VENDOR != *"$version"* ]]; then
    echo "cross: no std source for rustc $version (package rust-web-src; found '${CROSS_STD_VENDOR:-nothing}')" >&2
    return 1
  fi
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
  export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
  mkdir -p "$CROSS_OUT"
}

# cross_cargo <subcommand> <target> [cargo args...] [-- test args...]: cargo for a cross target with std built from
# source, offline, into target/cross (apart from the host build).
cross_cargo() {
  local sub=$1 target=$2
  shift 2
  (cd "$CROSS_ROOT" && cargo "$sub" --offline -Zbuild-std=std,panic_abort --target "$target" \
    --target-dir "$CROSS_TARGET_DIR" \
    --config 'source.crates-io.replace-with="std-vendor"' \
    --config "source.std-vendor.directory=\"$CROSS_STD_VENDOR\"" "$@")
}
