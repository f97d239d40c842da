#!/usr/bin/env bash
# A new build's whole verdict in one call (session 42): waves_and_ab.sh (its op and model
# tests, hiprt's runtime tests, `greta bench --kernels`, the A/B of target/carry/v's
# variants), then h100_checks.sh less the parts waves_and_ab.sh ran (and CHECK_SKIP, default
# the planted faults, the faults in both routes and the longer 7B audit: the call's ten
# minutes), then the 7B prefill's timeline (prefill_timeline.sh: each kernel's time in
# place) where target/kernels-timeline was carried (TL_VARIANTS: the builds timed there,
# default main). Each part's results come back as one tarball; the log's summary lines are
# printed. Environment: as waves_and_ab.sh takes it.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
status=0
OUT=$OUT/ab bash tools/gpu/waves_and_ab.sh > /tmp/wab.log 2>&1 || status=1
grep -E "^=== |^== |test result|panicked|^status|^\|" /tmp/wab.log | grep -v ": exit 0" | head -n 60
grep -E "gemm_f16_wgmma" /tmp/wab.log | head -n 12
cp /tmp/wab.log "$OUT/ab/"
SKIP="hiprt-gpu gpu-ops gpu-model ${CHECK_SKIP:-planted-faults audit-faults-in-both audit-llama2-longer}" \
  OUT=/tmp/hc bash tools/gpu/h100_checks.sh > /tmp/hc.log 2>&1 || status=1
grep -E "^== .*(exit|skipped)|worst|parity|top-1" /tmp/hc.log | head -n 40
cp /tmp/hc/0-checks.tgz "$OUT/"
if [ -d target/kernels-timeline/sm_90a ]; then
  # The carried build's timeline alone unless TL_VARIANTS names more (the A/B's VARIANTS may
  # name builds without timeline objects: session 45's call 8 lost its timeline so).
  OUT=/tmp/tl VARIANTS="${TL_VARIANTS:-main}" SHAPES=llama2-7b TOP=16 timeout 120 \
    bash tools/gpu/prefill_timeline.sh 2>&1 | tail -n 20
  tar czf "$OUT/timeline.tgz" -C /tmp/tl .
fi
echo "status $status"
exit $status
