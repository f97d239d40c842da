#!/usr/bin/env bash
# Session 63's next step, written then and not yet run: SmolLM2's decode on the timeline
# kernels under a slow and a fast placement of its state (the default, whose FP8 weight
# copies come before the state, and `--split-lo f16`, which makes none: placement_ab.sh),
# on one machine, two rounds each, then each launch's critical-path time side by side
# (timeline_compare.py), to see which launches lengthen where the skip study
# (placement_skip.sh) could not say. The timeline's stamps add allocations of their own
# (module globals) and slow a step ~10 %: first check that the two placements still differ
# in the runs' tok/s.
# Build: cargo xtask build-kernels --timeline; carry target/carry and target/kernels-timeline.
# Usage (GPU machine): OUT=dir [ROUNDS="1 2"] bash tools/gpu/placement_timeline.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
[ -x target/device/greta ] || bash tools/gpu/unpack_carry.sh > /dev/null
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
for r in ${ROUNDS:-1 2}; do
  OUT=$OUT RUNS=smollm2-135m:5 TAG=-default-r$r ARGS="" bash tools/gpu/timeline_study.sh | head -n 1
  OUT=$OUT RUNS=smollm2-135m:5 TAG=-lo-f16-r$r ARGS="--split-lo f16" bash tools/gpu/timeline_study.sh | head -n 1
done
python3 tools/gpu/timeline_compare.py $(for r in ${ROUNDS:-1 2}; do
  echo "$OUT/tl-smollm2-135m-5-default-r$r.md $OUT/tl-smollm2-135m-5-lo-f16-r$r.md"; done) --top 20 \
  | tee "$OUT/placement-timeline.md"
