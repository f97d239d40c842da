#!/usr/bin/env bash
# One cold call that first answers a numerics question and then re-checks the GPU host code:
# tools/gpu/split_inputs_compare.sh (the default model's first 10 layers audited per
# --split-inputs policy on three prompts, one of ~650 tokens, with the prefill times; POLICIES
# as there, default here "default qkv,o,down"), then tools/gpu/h100_checks.sh (SKIP as there),
# each under its own time limit so that one running long still leaves the other's results,
# and every output bundled in $OUT/0-all.tgz (a device call returns only 8 files).
# Carry target/carry: greta.xz, gpu-model.xz (and gpu-ops.xz / hiprt-gpu.xz if not skipped),
# kernels/, smollm2-10l.gguf.xz (tools/gpu/unpack_carry.sh).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
mkdir -p "$OUT/split" "$OUT/checks"
status=0
echo "#### split_inputs_compare $(date +%T)"
OUT=$OUT/split POLICIES=${POLICIES:-default qkv,o,down} timeout ${SPLIT_S:-260} \
  bash tools/gpu/split_inputs_compare.sh || { echo "split_inputs_compare: exit $?"; status=1; }
echo "#### h100_checks (SKIP: ${SKIP:-none}) $(date +%T)"
OUT=$OUT/checks timeout ${CHECKS_S:-300} bash tools/gpu/h100_checks.sh > "$OUT/checks.log" 2>&1 \
  || { echo "h100_checks: exit $?"; status=1; }
grep -E "^== .*exit|test result|first divergence|^(OK|FAIL)|PASS|FAIL" "$OUT/checks.log" | cut -c1-160
echo "#### end $(date +%T)"
tar czf /tmp/0-all.tgz -C "$OUT" . && mv /tmp/0-all.tgz "$OUT/0-all.tgz"
exit $status
