#!/usr/bin/env bash
# Everything the GPU issue asks for, in one call on a warm GPU machine that already holds the
# default model's parts in /tmp/dm and has the llama.cpp build running (see docs/gpu.md,
# "Running the checks"): the op tests, the model tests, the backend audits (tiny models,
# planted faults, a random SmolLM2-shaped model, the default model), Hugging Face parity on
# the GPU, greedy/sampled generation, then greta bench next to llama-bench.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
export GRETA_KERNELS_DIR=$PWD/target/device/kernels GRETA_REQUIRE_GPU=1
G=./target/device/greta
TINY=crates/greta-model/tests/fixtures/tiny
status=0
step() { echo "#### $1 ($(date +%T))"; }
step ops; ./target/device/gpu-ops --ignored --test-threads=1 --nocapture > $OUT/ops.txt 2>&1 || status=1
grep -E "test result|panicked|nmse .*(m=512|pos0=3584|n=4096 k=11008)" $OUT/ops.txt | head -20
step model; (cd crates/greta-model && ../../target/device/gpu-model --ignored --test-threads=1 --nocapture) > $OUT/model.txt 2>&1 || status=1
grep -E "test result|panicked|agree|identical" $OUT/model.txt
./target/device/hiprt-gpu --ignored --test-threads=1 2>&1 | grep "test result" || status=1
step audits
for v in mha-tied-theta1e4 gqa-untied-theta5e5 gqa4-llama3-rope; do
  for m in $TINY/$v/model-f16.gguf $TINY/$v; do $G audit backend --against cpu -m $m 2>&1 | tail -1; done
done
for inj in 0:q_rope:add=0.5 1:attn_out:scale=1.01 1:ffn_act:nan -:logits:add=1; do
  $G audit backend --against cpu -m $TINY/gqa4-llama3-rope/model-f16.gguf --inject $inj 2>&1 | tail -1
done
python3 tools/gpu/make_random_llama.py smollm2-135m /tmp/smollm2-random > /dev/null 2>&1
$G audit backend --against cpu -m /tmp/smollm2-random --json > $OUT/audit-smollm2-shape.json 2> /dev/null || status=1
python3 -c "import json; d=json.load(open('$OUT/audit-smollm2-shape.json')); print('smollm2-shape:', d['verdict'], 'worst', max(p['worst_error'] for p in d['points']))"
step default-model; OUT=$OUT bash tools/gpu/default_model_checks.sh > $OUT/default-model.txt 2>&1 || status=1
grep -E "^== |tok/s" $OUT/default-model.txt
python3 -c "
import json; d=json.load(open('$OUT/audit-default.json'))
print('default model:', d['verdict']); print('worst', sorted(((p['worst_error'], str(p['layer']), p['point']) for p in d['points']), reverse=True)[:5])"
step hf-parity; OUT=$OUT python3 tools/gpu/hf_gpu_parity.py 2>/dev/null || status=1
step bench; OUT=$OUT bash tools/gpu/peer_bench.sh 2>&1 | tail -n 30
step end
exit $status
