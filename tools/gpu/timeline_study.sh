#!/usr/bin/env bash
# The decode step as launches on the critical path, from a timeline study build
# (tools/gpu/variants/decode-timeline.patch built as variant NAME, default tl:
# tools/gpu/build_variant.sh HEAD tl tools/gpu/variants/decode-timeline.patch): for each
# shape and split count, greta bench with GRETA_TIMELINE, then tools/gpu/timeline.py on the
# rings (the rings are ~60 MB a run and stay on the machine; the tables come back).
# Usage (GPU machine, after tools/gpu/unpack_carry.sh): OUT=dir [NAME=tl]
#   [RUNS="smollm2-135m:1 smollm2-135m:3 ..."] [ARGS=more bench flags] tools/gpu/timeline_study.sh
# A run SHAPE:S decodes 16 tokens after a prompt of 128 S - 100 (every step at S splits).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
d=target/carry/v/${NAME:-tl}
python3 -c "import lzma, shutil; shutil.copyfileobj(lzma.open('$d/greta.xz'), open('/tmp/greta-tl', 'wb'))"
chmod +x /tmp/greta-tl
for run in ${RUNS:-smollm2-135m:1 smollm2-135m:3 smollm2-135m:5 llama2-7b:5}; do
  shape=${run%:*} s=${run#*:} tag=${run/:/-}${TAG:-}
  GRETA_TIMELINE=/tmp/tl-$tag.bin GRETA_KERNELS_DIR=$PWD/$d /tmp/greta-tl bench -m synthetic:$shape \
    --backend gpu --prompt-len $((128 * s - 100)) --gen 16 --reps 1 ${ARGS:-} --json > $OUT/tl-$tag.json 2> $OUT/tl-$tag.err \
    || tail -n 3 $OUT/tl-$tag.err
  echo "== $run ${ARGS:-}: $(python3 -c "import json; print('%.1f tok/s' % json.load(open('$OUT/tl-$tag.json'))['decode_tok_s'])" 2>/dev/null)"
  python3 tools/gpu/timeline.py /tmp/tl-$tag.bin --launches ${LAUNCHES:-14} > $OUT/tl-$tag.md 2>&1
  tail -n +$(( ${LAUNCHES:-14} + 3 )) $OUT/tl-$tag.md | head -n 12
done
