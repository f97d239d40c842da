#!/usr/bin/env bash
# One short call that re-verifies a kernel change and measures greta, for the end of a
# session with little device time: the op tests, the backend audits (tiny models, random
# SmolLM2- and Llama-2-7B-shaped models), greta bench on both shapes (graph and eager) and
# the default model's first 10 layers (tools/gpu/default_model_layers.sh). Everything rides
# in one carry of target/carry, xz-compressed to fit 64 MiB with the tree:
#   target/carry/{greta.xz, gpu-ops.xz, smollm2-10l.gguf.xz, kernels/}
# (xz -c target/device/greta > target/carry/greta.xz, and so on). No peers: those need
# llama.cpp's 5.5-minute build (tools/gpu/peer_bench.sh).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
bash tools/gpu/unpack_carry.sh
export GRETA_KERNELS_DIR=$PWD/target/device/kernels GRETA_REQUIRE_GPU=1
G=./target/device/greta
TINY=crates/greta-model/tests/fixtures/tiny
status=0
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/gpu.txt
./target/device/gpu-ops --ignored --test-threads=1 --nocapture > $OUT/gpu-ops.txt 2>&1 || status=1
grep -E "test result|panicked" $OUT/gpu-ops.txt
for v in mha-tied-theta1e4 gqa-untied-theta5e5 gqa4-llama3-rope; do
  for m in $TINY/$v/model-f16.gguf $TINY/$v; do
    $G audit backend --against cpu -m $m 2>&1 | grep -E "^(OK|FAIL)" || status=1
  done
done > $OUT/audit-tiny.txt
cut -c1-90 $OUT/audit-tiny.txt
python3 tools/gpu/make_random_llama.py smollm2-135m /tmp/smollm2-random > /dev/null 2>&1
python3 tools/gpu/make_random_llama.py llama2-7b-2layers /tmp/llama2-random > /dev/null 2>&1
for m in smollm2 llama2; do
  $G audit backend --against cpu -m /tmp/$m-random --json > $OUT/audit-$m-shape.json 2>/dev/null || status=1
  python3 -c "import json; d=json.load(open('$OUT/audit-$m-shape.json')); print('$m-shape:', d['verdict'], 'worst', max(p['worst_error'] for p in d['points']))"
done
for s in smollm2-135m llama2-7b; do
  $G bench -m synthetic:$s --backend gpu --prompt-len 512 --gen 128 --reps 3 --json > $OUT/bench-$s.json 2>/dev/null || status=1
  $G bench -m synthetic:$s --backend gpu --prompt-len 512 --gen 128 --reps 3 --no-graph --json > $OUT/bench-eager-$s.json 2>/dev/null || status=1
  python3 -c "import json; d=json.load(open('$OUT/bench-$s.json')); e=json.load(open('$OUT/bench-eager-$s.json')); print('$s', 'prefill ms', d['all_prefill_ms'], 'decode', d['all_decode_tok_s'], 'eager decode', e['decode_tok_s'], 'copy', d['copy_gb_s'])"
done
OUT=$OUT bash tools/gpu/default_model_layers.sh 2>&1 | tail -8 || status=1
exit $status
