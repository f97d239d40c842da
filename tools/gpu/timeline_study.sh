#!/usr/bin/env bash
# The decode step as launches on the critical path (`greta bench --timeline`, read by
# tools/gpu/timeline.py): for each shape and split count, one bench run on the timeline
# kernels, then the tables. Build them here with `cargo xtask build-kernels --timeline`
# (target/kernels-timeline) and carry target/kernels-timeline with the usual carry; the
# CSVs (~10 MB a run) stay on the machine, the tables come back.
# Usage (GPU machine, after tools/gpu/unpack_carry.sh): OUT=dir [G=greta binary]
#   [KERNELS=target/kernels-timeline] [RUNS="smollm2-135m:1 smollm2-135m:3 ..."]
#   [ARGS=more bench flags] [TAG=suffix] [LAUNCHES=14] tools/gpu/timeline_study.sh
# A run SHAPE:S decodes 16 tokens after a prompt of 128 S - 100 (every step at S splits).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
G=${G:-./target/device/greta}
K=$PWD/${KERNELS:-target/kernels-timeline}
[ -d "$K/sm_90a" ] || { echo "no $K/sm_90a: build with cargo xtask build-kernels --timeline and carry it" >&2; exit 2; }
for run in ${RUNS:-smollm2-135m:1 smollm2-135m:3 smollm2-135m:5 llama2-7b:5}; do
  shape=${run%:*} s=${run#*:} tag=${run/:/-}${TAG:-}
  GRETA_KERNELS_DIR=$K $G bench -m synthetic:$shape --backend gpu --prompt-len $((128 * s - 100)) \
    --gen 16 --reps 1 --timeline /tmp/tl-$tag.csv ${ARGS:-} --json > $OUT/tl-$tag.json 2> $OUT/tl-$tag.err \
    || tail -n 3 $OUT/tl-$tag.err
  echo "== $run ${ARGS:-}: $(python3 -c "import json; print('%.1f tok/s' % json.load(open('$OUT/tl-$tag.json'))['decode_tok_s'])" 2>/dev/null); $(grep timeline: $OUT/tl-$tag.err)"
  python3 tools/gpu/timeline.py /tmp/tl-$tag.csv --launches ${LAUNCHES:-14} > $OUT/tl-$tag.md 2>&1
  tail -n +$(( ${LAUNCHES:-14} + 3 )) $OUT/tl-$tag.md | head -n 12
done
