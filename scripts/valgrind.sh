#!/usr/bin/env bash
# Once-off memory check (not part of CI; it takes a while): the unprivileged ava suites (memory pair, reliability)
# and the teardown scenarios of __test__/helpers/teardown.ts, every node process under valgrind's memcheck.
# Prints each process's error summary and leak summary; exits non-zero if any process reported an error.
#   bash scripts/valgrind.sh            logs in target/valgrind/
set -uo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind; } || exit 1
OUT=target/valgrind
rm -rf "$OUT" && mkdir -p "$OUT"
# V8's conservative stack scan reads stack words valgrind considers uninitialised: a known false positive.
cat >"$OUT/v8.supp" <<'SUPP'
{
   v8-conservative-stack-scan
   Memcheck:Cond
   fun:*IteratePointersInStack*
}
{
   v8-conservative-stack-scan-value8
   Memcheck:Value8
   fun:*IteratePointersInStack*
}
SUPP
VG=(valgrind --suppressions="$OUT/v8.supp" --smc-check=all-non-file --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=none
  --trace-children=yes --trace-children-skip='*esbuild*,*/ip,*/cc,*/gcc,*/ld,*/collect2,*/as,*/cc1'
  --num-callers=30)
run() {
  local name=$1
  shift
  echo "valgrind: $name"
  "${VG[@]}" --log-file="$OUT/$name.%p.log" "$@" >"$OUT/$name.out" 2>&1
  echo "  exit $?"
}
node scripts/build-test-native.mjs >/dev/null || exit 1
# The in-process tests; the child-process scenarios of reliability.spec.ts run on their own below.
run ava-unprivileged node node_modules/ava/entrypoints/cli.mjs --timeout=30m --tap \
  --match='!*worker*' --match='!*panic*' --match='!*process.exit*' --match='!*main thread*' \
  --match='!*dropped without*' --match='!*release addon*' __test__/memory.spec.ts __test__/reliability.spec.ts
for how in throw terminate exit; do run "workers-$how" node --import tsx __test__/helpers/teardown.ts workers memory "$how" 3; done
for p in panic-reader panic-writer; do
  TUNKIT_NATIVE_PATH=$PWD/target/test-hooks/tunkit.test.node TUNKIT_TEST_FAULTS=$p run "$p" \
    node --import tsx __test__/helpers/teardown.ts panic "$p"
done
run gc node scripts/netns.mjs node --expose-gc --import tsx __test__/helpers/teardown.ts gc
run devices-workers node scripts/netns.mjs node --import tsx __test__/helpers/teardown.ts workers device terminate 2
errors=0
for f in "$OUT"/*.log; do
  e=$(grep -h "ERROR SUMMARY" "$f" | tail -1 | sed 's/.*ERROR SUMMARY: \([0-9]*\).*/\1/')
  l=$(grep -h "definitely lost:" "$f" | tail -1 | sed 's/.*definitely lost: //')
  cmd=$(grep -h "Command:" "$f" | head -1 | sed 's/.*Command: //' | cut -c1-110)
  echo "$(basename "$f"): errors ${e:-?}, definitely lost ${l:-?}: $cmd"
  [[ ${e:-0} != 0 ]] && errors=$((errors + e))
done
grep -h "^# pass\|^# fail\|^# skip" "$OUT/ava-unprivileged.out"
echo "valgrind: $errors errors in all"
[[ $errors == 0 ]]
