#!/usr/bin/env bash
# Backend audits (every stage of every position, GPU against the CPU reference: prefill and
# teacher-forced decode steps) for each kernel_variants.sh variant that carries its own
# greta (target/carry/v/NAME/greta.xz), so that a variant is checked in the call that
# times it. The full set of checks is h100_checks.sh, run on whichever variant is kept.
# Usage (GPU machine): OUT=dir [VARIANTS="a b"] tools/gpu/variant_audits.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
# The carry unpacked whenever there is one (a warm machine keeps the last call's
# target/device and /tmp/greta-NAME, which may be another build's), and the variants' objects.
if [ -f target/carry/greta.xz ]; then bash tools/gpu/unpack_carry.sh; fi
bash tools/gpu/fill_variants.sh
TINY=crates/greta-model/tests/fixtures/tiny
[ -d /tmp/smollm2-random ] || python3 tools/gpu/make_random_llama.py smollm2-135m /tmp/smollm2-random > /dev/null 2>&1
[ -d /tmp/llama2-random ] || python3 tools/gpu/make_random_llama.py llama2-7b-2layers /tmp/llama2-random > /dev/null 2>&1
# A ~650-token prompt (h100_checks.sh's LONG): the 7B shape's prefill at ~325 rows takes the
# 128-row tiles, where the small prompts above take 64 x 64 (session 31's one-accumulator
# variant changes only the wide SwiGLU tiles' FP8-lo form, which this prompt reaches).
LONG=$(python3 -c "print(' '.join(['The history of science is the study of how people came to understand the natural world.'] * 36))")
status=0
# VARIANTS (names, default every directory): the variants audited, as kernel_variants.sh.
for d in $(for v in ${VARIANTS:-$(ls target/carry/v)}; do echo target/carry/v/$v/; done); do
  v=$(basename $d)
  [ -f $d/greta.xz ] || continue
  bash tools/gpu/unxz.sh $d/greta.xz /tmp/greta-$v
  # The 7B shape (2 layers, random weights) on the long prompt (H200, main, session 31:
  # worst 5.008e-4 at layer 1 attn_out; ~90 s of CPU reference).
  f=$OUT/audit-$v-llama2-long.txt
  GRETA_KERNELS_DIR=$PWD/$d /tmp/greta-$v audit backend --against cpu -m /tmp/llama2-random --prompt "$LONG" > $f 2>&1
  rc=$?
  worst=$(awk '$4 ~ /^[0-9.]+e-?[0-9]+$/ && $4 + 0 > w { w = $4 + 0; at = $1 " " $2 } END { printf "%.3e at %s", w, at }' $f)
  echo "$v llama2-7b shape, long prompt: exit $rc, worst $worst; $(grep -m1 -E '^(OK|FAIL|first divergence|FIRST)' $f)"
  [ $rc -eq 0 ] || status=1
  for m in $TINY/mha-tied-theta1e4/model-f16.gguf $TINY/gqa4-llama3-rope/model-f16.gguf /tmp/smollm2-random; do
    f=$OUT/audit-$v-$(echo $(basename $(dirname $m))-$(basename $m) | tr -c 'a-zA-Z0-9.\n' '-').txt
    GRETA_KERNELS_DIR=$PWD/$d /tmp/greta-$v audit backend --against cpu -m $m > $f 2>&1
    rc=$?
    # The verdict line and the worst rms error over every stage and position.
    worst=$(awk '$4 ~ /^[0-9.]+e-?[0-9]+$/ && $4 + 0 > w { w = $4 + 0; at = $1 " " $2 } END { printf "%.3e at %s", w, at }' $f)
    echo "$v $(basename $(dirname $m))/$(basename $m): exit $rc, worst $worst; $(grep -m1 -E '^(OK|FAIL|first divergence)' $f)"
    [ $rc -eq 0 ] || status=1
  done
  # The default model's first 10 layers on split_inputs_compare.sh's two long prompts, where
  # carried (target/dm10, unpacked by unpack_carry.sh): where session 30 found the prefill's
  # numerics decide (main, H200: 3.90e-3 and 1.44e-3 under the default policy).
  M=target/dm10/smollm2-10l.gguf
  [ -f $M ] || continue
  for p in repeated prose; do
    case $p in
      repeated) pr=$(python3 -c "print(' '.join(['The history of science is the study of how people came to understand the natural world.'] * 36))") ;;
      prose) pr=$(cat crates/greta-model/src/calibrate/long-prose.txt) ;;
    esac
    f=$OUT/audit-$v-dm10-$p.json
    GRETA_KERNELS_DIR=$PWD/$d /tmp/greta-$v audit backend --against cpu -m $M --prompt "$pr" --json > $f 2> /dev/null
    rc=$?
    echo "$v dm10 $p prompt: exit $rc, $(python3 -c "import json; d=json.load(open('$f')); w=max(d['points'], key=lambda p: p['worst_error']); print('worst %.3e (%s, %s, %s)' % (w['worst_error'], w['point'], w['layer'], w['worst_pos']))")"
    [ $rc -eq 0 ] || status=1
  done
done
exit $status
