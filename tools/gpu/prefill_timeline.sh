#!/usr/bin/env bash
# The prefill's kernels as they run in place (not one by one with cold caches, as Nsight
# Compute runs them): `greta bench --timeline` on the timeline kernels, then
# tools/gpu/timeline.py's per-kernel table (each kernel's time on the critical path: from
# its blocks' release to the next kernel's). Session 27 found the two views far apart for
# memory-bound kernels whose input the kernel ahead just wrote (in L2). The decode's
# kernels (few: GEN 2) appear in the same table under their own names.
# Build here: cargo xtask build-kernels --timeline; carry target/kernels-timeline and
# target/carry. Usage (GPU machine): OUT=dir [SHAPES="llama2-7b smollm2-135m"]
#   [ARGS=more bench flags] [VARIANTS="main NAME ..."] [TOP=rows] [AFTER=1: a row per kernel and
#   predecessor, timeline.py --after] tools/gpu/prefill_timeline.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
[ -f target/carry/greta.xz ] && bash tools/gpu/unpack_carry.sh
# VARIANTS (names of target/carry/v/NAME built with TIMELINE=1 by build_variant.sh): each
# variant's binary on its own timeline kernels (v/NAME/timeline) instead of main's, one
# table each, in the order given ("main" is the carried build).
for v in ${VARIANTS:-main}; do
  K=$PWD/target/kernels-timeline G=./target/device/greta
  if [ "$v" != main ]; then
    K=$PWD/target/carry/v/$v/timeline
    if [ -f target/carry/v/$v/greta.xz ]; then bash tools/gpu/unxz.sh target/carry/v/$v/greta.xz /tmp/greta-$v; G=/tmp/greta-$v; fi
  fi
  [ -d "$K/sm_90a" ] || { echo "no $K/sm_90a: build with cargo xtask build-kernels --timeline (a variant: TIMELINE=1 build_variant.sh) and carry it" >&2; exit 2; }
  for shape in ${SHAPES:-llama2-7b smollm2-135m}; do
    n=$v-$shape
    GRETA_KERNELS_DIR=$K $G bench -m synthetic:$shape --backend gpu --prompt-len 512 \
      --gen 2 --reps 1 --timeline /tmp/tl-$n.csv ${ARGS:-} --json > $OUT/tl-$n.json 2> $OUT/tl-$n.err ||
      { tail -n 5 $OUT/tl-$n.err; continue; }
    echo "== $v $shape: $(python3 -c "import json; print('prefill %.2f ms' % json.load(open('$OUT/tl-$n.json'))['prefill_ms'])"); $(grep timeline: $OUT/tl-$n.err)"
    # The prefill's GEMMs hold the path 40-150 µs each: timeline.py's default 50 µs cut (meant
    # for the host's breaks between steps) left the 7B's Q/K/V, gate/up and down out until
    # session 28.
    # The flash attention's work per SM under its block order (timeline.py --fa-heads):
    # whether its blocks were placed as the order assumes (session 28's open question).
    case $shape in llama2-7b | llama3.2-1b) heads=32 ;; smollm2-135m) heads=9 ;; *) heads=0 ;; esac
    python3 tools/gpu/timeline.py --max-gap ${MAX_GAP:-400} --fa-heads $heads ${AFTER:+--after} /tmp/tl-$n.csv > $OUT/tl-$n.md 2>&1
    grep -E "^[|(]" $OUT/tl-$n.md | grep -v "^| #" | head -n ${TOP:-24}
  done
done
