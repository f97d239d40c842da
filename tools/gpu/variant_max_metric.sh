#!/usr/bin/env bash
# The backend audit read with the max metric (max|a − b| / rms(b) at each stage: a single
# element's error, where the default rms metric averages) for the main build and each
# kernel_variants.sh variant that carries its own greta, on one model, so that a figure
# default_model_checks.sh records "for the record" compares between builds in one call.
# The model comes xz-compressed where it would not fit the carry raw: e.g. the default
# model's first 2 layers (tools/oracle/truncate_gguf.py ... 2, 36 MB raw, 33 MB as xz), where
# session 34 first read the max metric's first divergence (layer 1, ffn_act).
# Usage (GPU machine): OUT=dir MODEL=path[.xz] [VARIANTS="a b"] [TOL=1e-2] tools/gpu/variant_max_metric.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
[ -n "${MODEL:-}" ] || { echo "MODEL=path (a GGUF, or one xz-compressed)" >&2; exit 2; }
if [ -f target/carry/greta.xz ]; then bash tools/gpu/unpack_carry.sh; fi
bash tools/gpu/fill_variants.sh
M=$MODEL
case $M in *.xz) bash tools/gpu/unxz.sh "$M" /tmp/max-metric-model.gguf && M=/tmp/max-metric-model.gguf ;; esac
sha256sum $M | tee $OUT/model-sha256.txt
audit() {
  local name=$1 g=$2 k=$3
  GRETA_KERNELS_DIR=$k $g audit backend --against cpu -m $M --metric max --tol "${TOL:-1e-2}" > $OUT/max-$name.txt 2>&1
  echo "$name, max metric: exit $?; $(grep -m1 -E '^(OK|FAIL|FIRST)' $OUT/max-$name.txt)"
  GRETA_KERNELS_DIR=$k $g audit backend --against cpu -m $M --json > $OUT/rms-$name.json 2> /dev/null
  echo "$name, rms metric: exit $?; $(python3 -c "import json; d=json.load(open('$OUT/rms-$name.json')); w=max(d['points'], key=lambda p: p['worst_error']); print('worst %.3e (%s, layer %s, position %s)' % (w['worst_error'], w['point'], w['layer'], w['worst_pos']))")"
}
audit main ./target/device/greta $PWD/target/device/kernels
for v in ${VARIANTS:-$(ls target/carry/v)}; do
  d=target/carry/v/$v
  [ -f $d/greta.xz ] || continue
  bash tools/gpu/unxz.sh $d/greta.xz /tmp/greta-$v
  audit $v /tmp/greta-$v $PWD/$d
done
