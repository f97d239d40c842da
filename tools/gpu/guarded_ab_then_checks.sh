#!/usr/bin/env bash
# ab_then_checks.sh behind a guard (session 43): a kernel change that can hang (a pipeline
# whose barriers wait on another block, as the paired GEMM's do) first runs the op tests
# that launch it under a timeout, GUARD (default "launched gemm_f16_groups_match_cpu"), each
# at most GUARD_S seconds (default 120); only if they pass does the whole verdict run
# (ab_then_checks.sh, with the call's remaining minutes as its limit, TOTAL_S default 570).
# A hang then costs two minutes of the call, not all ten, and says which test hung.
# Environment: as ab_then_checks.sh takes it.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
t0=$(date +%s)
bash tools/gpu/unpack_carry.sh
export GRETA_KERNELS_DIR=$PWD/target/device/kernels GRETA_REQUIRE_GPU=1
for t in ${GUARD:-launched gemm_f16_groups_match_cpu}; do
  echo "== guard $t"
  timeout "${GUARD_S:-120}" ./target/device/gpu-ops --ignored --test-threads=1 --nocapture "$t" \
    > "$OUT/guard-$t.log" 2>&1
  rc=$?
  grep -E "test result|panicked|pairs|FAILED" "$OUT/guard-$t.log" | head -n 20
  echo "== guard $t: exit $rc, $(( $(date +%s) - t0 )) s into the call"
  if [ $rc -ne 0 ]; then
    [ $rc -eq 124 ] && echo "guard $t: timed out (a hang?)"
    tail -n 30 "$OUT/guard-$t.log"
    echo "status 1"
    exit 1
  fi
done
left=$(( ${TOTAL_S:-570} - ($(date +%s) - t0) ))
timeout "$left" bash tools/gpu/ab_then_checks.sh
rc=$?
[ $rc -eq 124 ] && echo "ab_then_checks.sh: cut at the call's limit ($left s)"
exit $rc
