#!/usr/bin/env bash
# Host-side decode variants checked and timed against main (session 64's run:
# docs/results/2026-12-05-h100-s64-calls.md; fp8-after-state landed, 97b7ab4, its patch is
# gone, and so is the both variant's first half):
#   fp8-after-state  (tools/gpu/variants/fp8-after-state.patch): the FP8 weight copies made
#                    after the first state's buffers, where the state decoded faster on each
#                    H100 compared (placement_ab.sh): predicted +0.3 to +1.7 % SmolLM2;
#   head-final-norm  (tools/gpu/variants/head-final-norm.patch): decode's final RMSNorm in
#                    the LM head's prologue, one launch fewer a token: predicted ~+0.5 %;
#   both             the two patches together (session 64);
#   decode-two-steps (tools/gpu/variants/decode-two-steps.patch, session 64): two decode
#                    steps to a captured graph where they share a split count, so half
#                    the steps begin across a graph-to-graph boundary: predicted +0.4 to
#                    +0.6 % SmolLM2 (its model tests: graph against eager across split
#                    counts, stops inside a launch, sampled and NaN runs).
# First each variant's own op tests (the ones it touches) and model tests, and for
# head-final-norm a fault planted at final_norm (the head must read it: the audit names
# final_norm); then SmolLM2's decode by placement for main and both (placement_ab.sh, one
# process a run, interleaved), and the 7B once each.
# Build here: tools/gpu/build_for_device.sh (main), then for each variant
#   TESTS=1 PACK=1 tools/gpu/build_variant.sh main NAME tools/gpu/variants/NAME.patch
# and for both, the two patches in that order after NAME=both,
# and carry target/carry. Both patches leave every kernel as it is: the variants run on
# main's kernels.
# Usage (GPU machine): OUT=dir [ROUNDS="1 2 3"] [VARIANTS="a b .."] [PART=checks|timing]
#   bash tools/gpu/decode_variants_ab.sh
# Four variants' checks and timings together run past one call's 10 minutes: PART=checks
# (op and model tests, audits; ~4-5 min) in one call, PART=timing (decode by placement,
# the 7B; ~5 min) in the next, on the warm machine.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
bash tools/gpu/unpack_carry.sh > /dev/null
export GRETA_KERNELS_DIR=$PWD/target/device/kernels GRETA_REQUIRE_GPU=1
export GRETA_TEST_FIXTURES=$PWD/crates/greta-model/tests/fixtures
TINY=crates/greta-model/tests/fixtures/tiny
VARIANTS=${VARIANTS:-"head-final-norm decode-two-steps"}
status=0
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
PART=${PART:-all}
[ $PART = timing ] || for v in $VARIANTS; do
  d=target/carry/v/$v
  for f in greta gpu-ops gpu-model; do bash tools/gpu/unxz.sh $d/$f.xz /tmp/$f-$v; done
  echo "== $v: op tests $(date +%T)"
  filter="gemm_f16_groups"  # an FP8-lo product (the copies' reader)
  [ $v = head-final-norm ] && filter="head_with_the_final_norm decode_products_with_norm"
  [ $v = both ] && filter="head_with_the_final_norm decode_products_with_norm gemm_f16_groups"
  [ $v = decode-two-steps ] && filter="argmax"  # the pick the steps chain through
  /tmp/gpu-ops-$v --ignored --test-threads=1 --nocapture $filter > $OUT/ops-$v.txt 2>&1 || status=1
  grep -E "test result|panicked" $OUT/ops-$v.txt
  echo "== $v: model tests $(date +%T)"
  /tmp/gpu-model-$v --ignored --test-threads=1 --nocapture > $OUT/model-$v.txt 2>&1 || status=1
  grep -E "test result|panicked" $OUT/model-$v.txt
done
[ $PART = timing ] || for v in head-final-norm both; do
  case " $VARIANTS " in *" $v "*) ;; *) continue ;; esac
  echo "== $v: audits, a fault planted at final_norm"
  G=/tmp/greta-$v
  $G audit backend --against cpu -m $TINY/gqa4-llama3-rope/model-f16.gguf 2>&1 | grep -E "^(OK|FAIL)" || status=1
  $G audit backend --against cpu -m $TINY/gqa4-llama3-rope/model-f16.gguf --inject -:final_norm:add=0.5 --json \
    > $OUT/planted-final-norm-$v.json 2> /dev/null
  python3 -c "import json; d=json.load(open('$OUT/planted-final-norm-$v.json'))['first_divergence']; print('-:final_norm:add=0.5 ->', d['layer'], d['point'])" || status=1
done
if [ $PART != checks ]; then
echo "== decode by placement $(date +%T)"
mkdir -p $OUT/placement
# The default and the placement control (`--split-lo f16`, no FP8 copies): five builds
# x two configurations x three rounds fit one call.
OUT=$OUT/placement ROUNDS="${ROUNDS:-1 2 3}" BINS="main $VARIANTS" CONFIGS="${CONFIGS:-default lo-f16}" \
  bash tools/gpu/placement_ab.sh | tail -n 12 || status=1
echo "== Llama-2-7B $(date +%T)"
for b in main $VARIANTS; do
  G=./target/device/greta && [ $b = main ] || G=/tmp/greta-$b
  $G bench -m synthetic:llama2-7b --backend gpu --prompt-len 512 --gen 128 --reps 3 --json > $OUT/7b-$b.json 2>/dev/null || status=1
  python3 -c "import json; d=json.load(open('$OUT/7b-$b.json')); print('$b', 'prefill', d['all_prefill_ms'], 'decode', d['all_decode_tok_s'])"
done
fi
tar czf /tmp/0-variants.tgz -C "$OUT" . && mv /tmp/0-variants.tgz "$OUT/0-variants.tgz"
echo "== end $(date +%T) status $status"
exit $status
