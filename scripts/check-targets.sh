#!/usr/bin/env bash
# `npm run check:targets`: proves from this Linux machine that the other platforms still compile.
#
#   - type-checks the workspace (with its tests) for x86_64/aarch64 Windows (MSVC) and x86_64/aarch64 macOS, where
#     there is no SDK to link with, and lints it with clippy (-D warnings) for x86_64 Windows and aarch64 macOS;
#   - builds the addon for x86_64-pc-windows-gnu (MinGW) and checks the DLL: it exports napi_register_module_v1 and
#     imports nothing from node.exe (Node-API is resolved at run time);
#   - builds the addon for aarch64-unknown-linux-gnu (target/cross/out/tunkit.linux-arm64-gnu.node, which
#     scripts/qemu-arm64-test.sh runs);
#   - checks the hand-declared IP Helper layouts of the Windows backend against the MinGW headers.
#
# Installs what it needs itself (Debian packages; apt-get update only when something is missing). Builds go to
# target/cross, apart from the host build. Ends with a summary table; exits non-zero when any step failed.
# Usage: scripts/check-targets.sh [step-name-filter]
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/targets/cross-env.sh

filter=${1:-}
cross_ensure_packages || exit 1
cross_setup_env || exit 1
LOGS=$CROSS_TARGET_DIR/logs
mkdir -p "$LOGS"

names=()
results=()
times=()
failed=0

# step <name> <command...>: runs a step with its output in target/cross/logs/<name>.log.
step() {
  local name=$1
  shift
  [[ -n $filter && $name != *"$filter"* ]] && return 0
  local log=$LOGS/$name.log start=$SECONDS
  printf 'check-targets: %-40s ' "$name"
  if "$@" >"$log" 2>&1; then
    results+=(ok)
    echo "ok ($((SECONDS - start)) s)"
  else
    results+=(FAIL)
    failed=1
    echo "FAIL ($((SECONDS - start)) s)"
    tail -n 40 "$log" | sed 's/^/    /'
  fi
  names+=("$name")
  times+=($((SECONDS - start)))
}

check_target() {
  cross_cargo check "$1" --workspace --all-targets
}

# Clippy for a target whose platform code (the core's backend, the binding's Node-API loader) only it compiles.
clippy_target() {
  # What `cargo clippy -- -D warnings` does, with the clippy of rustc-web (rustup's clippy cannot read this std).
  RUSTC_WORKSPACE_WRAPPER=/usr/bin/clippy-driver CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__" \
    cross_cargo check "$1" --workspace --all-targets
}

build_windows_gnu() {
  local t=x86_64-pc-windows-gnu dll
  cross_cargo build "$t" --release -p tunkit-napi || return 1
  dll=$CROSS_TARGET_DIR/$t/release/tunkit_napi.dll
  local dump
  dump=$(x86_64-w64-mingw32-objdump -p "$dll") || return 1
  grep -E 'DLL Name|^\s+\[ *[0-9]+\] [a-z_]+' <<<"$dump"
  if ! grep -qE '^\s+\[ *0\] napi_register_module_v1$' <<<"$dump"; then
    echo "the DLL does not export napi_register_module_v1" >&2
    return 1
  fi
  if grep -iE 'DLL Name: .*(node|electron)' <<<"$dump"; then
    echo "the DLL imports from the host executable; Node-API must be resolved at run time" >&2
    return 1
  fi
  cp "$dll" "$CROSS_OUT/tunkit.win32-x64-gnu.node"
}

build_linux_arm64() {
  local t=aarch64-unknown-linux-gnu so
  cross_cargo build "$t" --release -p tunkit-napi || return 1
  so=$CROSS_TARGET_DIR/$t/release/libtunkit_napi.so
  local header
  header=$(aarch64-linux-gnu-readelf -h "$so") || return 1
  grep -E 'Type:|Machine:' <<<"$header"
  grep -q 'Machine: *AArch64' <<<"$header" || return 1
  # Node-API stays undefined and resolves against node when loaded; the entry point is exported.
  grep -q ' T napi_register_module_v1$' <<<"$(aarch64-linux-gnu-nm -D --defined-only "$so")" || return 1
  cp "$so" "$CROSS_OUT/tunkit.linux-arm64-gnu.node"
}

windows_layouts() {
  x86_64-w64-mingw32-gcc -fsyntax-only -D_WIN32_WINNT=0x0A00 scripts/targets/win-layout.c
}

echo "check-targets: rustc $CROSS_RUSTC_VERSION (rustc-web), std from $CROSS_STD_VENDOR"
for t in x86_64-pc-windows-msvc aarch64-pc-windows-msvc x86_64-apple-darwin aarch64-apple-darwin; do
  step "check $t" check_target "$t"
done
for t in x86_64-pc-windows-msvc aarch64-apple-darwin; do
  step "clippy $t" clippy_target "$t"
done
step "windows layouts (MinGW headers)" windows_layouts
step "build x86_64-pc-windows-gnu" build_windows_gnu
step "build aarch64-unknown-linux-gnu" build_linux_arm64

echo
printf '%-44s %-6s %s\n' "step" "result" "seconds"
for i in "${!names[@]}"; do
  printf '%-44s %-6s %s\n' "${names[$i]}" "${results[$i]}" "${times[$i]}"
done
if ((${#names[@]} == 0)); then
  echo "check-targets: no step matches '$filter'" >&2
  exit 1
fi
if ((failed)); then
  echo "check-targets: FAILED (logs in ${LOGS#"$PWD"/})"
  exit 1
fi
echo "check-targets: all ${#names[@]} steps passed"
