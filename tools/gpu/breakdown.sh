#!/usr/bin/env bash
# Where the time goes on the current build, both benchmark shapes at 512 rows (session 55):
# Nsight Compute's per-kernel table of one prefill and one decode step (profile_decode.sh:
# each kernel alone, caches flushed, its DRAM bytes against the copy bandwidth) and the
# prefill in place (prefill_timeline.sh: each kernel's time on the critical path, from the
# timeline kernels). The two views differ for memory-bound kernels whose input the kernel
# ahead just wrote (in L2: session 27), so both are kept.
# Build here: tools/gpu/build_for_device.sh and cargo xtask build-kernels --timeline; carry
# target/carry and target/kernels-timeline. PARTS: ncu timeline (default both).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
PARTS=" ${PARTS:-ncu timeline} "
status=0
if [[ "$PARTS" == *" ncu "* ]]; then
  OUT=$OUT/ncu bash tools/gpu/profile_decode.sh ${SHAPES:-llama2-7b smollm2-135m} || status=1
fi
if [[ "$PARTS" == *" timeline "* ]]; then
  OUT=$OUT/timeline TOP=${TOP:-30} bash tools/gpu/prefill_timeline.sh || status=1
fi
# One archive first: the run tool brings back 8 files.
D=$OUT; tar czf /tmp/0-bd.tgz -C "$D" . && mv /tmp/0-bd.tgz "$D/0-bd.tgz"
echo "status $status"
exit $status
