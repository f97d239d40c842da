#!/usr/bin/env bash
# One call that both times variants and says where their time went (session 44): build_ab.sh's
# A/B of target/carry/v's variants (their own op and model tests first, where they carry
# them), then prefill_timeline.sh on TL_VARIANTS (default: those of VARIANTS with a
# timeline/ directory, and "main" when target/kernels-timeline was carried), so that a
# variant's whole-prefill figure and its kernels' times in place come from one card; the
# timelines are then printed side by side (timeline_compare.py: each kernel against the
# first build's).
# Environment: VARIANTS, ROUNDS, GEN, SHAPES, VARIANT_TIMEOUT as build_ab.sh (through
# kernel_variants.sh) takes them; TL_VARIANTS, TL_SHAPES (default llama2-7b), TOP (timeline
# rows, default 16), TL_TIMEOUT (the timelines' limit in seconds, default 240).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
status=0
PARTS=ab OUT=$OUT bash tools/gpu/build_ab.sh || status=1
if [ -z "${TL_VARIANTS:-}" ]; then
  TL_VARIANTS=""
  for v in ${VARIANTS:-$(ls target/carry/v)}; do
    if [ "$v" = main ]; then
      [ -d target/kernels-timeline/sm_90a ] && TL_VARIANTS="$TL_VARIANTS main"
    elif [ -d target/carry/v/$v/timeline/sm_90a ]; then
      TL_VARIANTS="$TL_VARIANTS $v"
    fi
  done
fi
if [ -n "$TL_VARIANTS" ]; then
  echo "=== timelines:$TL_VARIANTS"
  OUT=$OUT/timeline VARIANTS="$TL_VARIANTS" SHAPES="${TL_SHAPES:-llama2-7b}" TOP=${TOP:-16} \
    timeout ${TL_TIMEOUT:-240} bash tools/gpu/prefill_timeline.sh || status=1
  # The builds' kernels side by side, each against the first (timeline_compare.py).
  for s in ${TL_SHAPES:-llama2-7b}; do
    tables=$(for v in $TL_VARIANTS; do [ -f "$OUT/timeline/tl-$v-$s.md" ] && echo "$OUT/timeline/tl-$v-$s.md"; done)
    [ $(echo "$tables" | wc -w) -ge 2 ] && python3 tools/gpu/timeline_compare.py $tables | tee "$OUT/timeline/compare-$s.md"
  done
  tar czf "$OUT/timeline.tgz" -C "$OUT" timeline && rm -r "$OUT/timeline"
fi
# At most 8 files come back from a call: the A/B's results are in 0-ab.tgz, and left loose
# beside it they crowded out timeline.tgz and whatever a call wrote after (session 46).
rm -rf "$OUT/results"
echo "status $status"
exit $status
