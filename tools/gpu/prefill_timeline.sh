#!/usr/bin/env bash
# The prefill's kernels as they run in place (not one by one with cold caches, as Nsight
# Compute runs them): `greta bench --timeline` on the timeline kernels, then
# tools/gpu/timeline.py's per-kernel table (each kernel's time on the critical path: from
# its blocks' release to the next kernel's). Session 27 found the two views far apart for
# memory-bound kernels whose input the kernel ahead just wrote (in L2). The decode's
# kernels (few: GEN 2) appear in the same table under their own names.
# Build here: cargo xtask build-kernels --timeline; carry target/kernels-timeline and
# target/carry. Usage (GPU machine): OUT=dir [SHAPES="llama2-7b smollm2-135m"]
#   [ARGS=more bench flags] tools/gpu/prefill_timeline.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
[ -f target/carry/greta.xz ] && bash tools/gpu/unpack_carry.sh
K=$PWD/target/kernels-timeline
[ -d "$K/sm_90a" ] || { echo "no $K/sm_90a: build with cargo xtask build-kernels --timeline and carry it" >&2; exit 2; }
for shape in ${SHAPES:-llama2-7b smollm2-135m}; do
  GRETA_KERNELS_DIR=$K ./target/device/greta bench -m synthetic:$shape --backend gpu --prompt-len 512 \
    --gen 2 --reps 1 --timeline /tmp/tl-$shape.csv ${ARGS:-} --json > $OUT/tl-$shape.json 2> $OUT/tl-$shape.err ||
    { tail -n 5 $OUT/tl-$shape.err; continue; }
  echo "== $shape: $(python3 -c "import json; print('prefill %.2f ms' % json.load(open('$OUT/tl-$shape.json'))['prefill_ms'])"); $(grep timeline: $OUT/tl-$shape.err)"
  python3 tools/gpu/timeline.py /tmp/tl-$shape.csv > $OUT/tl-$shape.md 2>&1
  grep -E "^\| (kernel|---|[a-z_0-9]+ \|)" $OUT/tl-$shape.md | grep -v "^| #" | head -n 24
done
