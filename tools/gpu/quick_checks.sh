#!/usr/bin/env bash
# The checks and greta's own speed in one short call, for a change to the kernels when
# little device time is left: the op tests (first: they decide), greta bench on both
# synthetic shapes, the model tests, the backend audits (tiny models, planted faults, a
# random SmolLM2-shaped model) and Hugging Face parity. No peers (tools/gpu/peer_bench.sh).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
export GRETA_KERNELS_DIR=$PWD/target/device/kernels GRETA_REQUIRE_GPU=1
G=./target/device/greta
TINY=crates/greta-model/tests/fixtures/tiny
status=0
echo "#### ops $(date +%T)"
./target/device/gpu-ops --ignored --test-threads=1 --nocapture > $OUT/ops.txt 2>&1 || status=1
grep -E "test result|panicked|reused scratch" $OUT/ops.txt | head -20
echo "#### bench $(date +%T)"
for shape in smollm2-135m llama2-7b; do
  $G bench -m synthetic:$shape --backend gpu --prompt-len 512 --gen 128 --reps 3 --json > $OUT/bench-$shape.json 2>/dev/null || status=1
  python3 -c "import json; d=json.load(open('$OUT/bench-$shape.json')); print('$shape', 'prefill', d['all_prefill_ms'], 'decode', d['all_decode_tok_s'])"
done
echo "#### model tests $(date +%T)"
(cd crates/greta-model && ../../target/device/gpu-model --ignored --test-threads=1 2>&1 | grep -E "test result|panicked") || status=1
echo "#### audits $(date +%T)"
for v in mha-tied-theta1e4 gqa-untied-theta5e5 gqa4-llama3-rope; do
  for m in $TINY/$v/model-f16.gguf $TINY/$v; do $G audit backend --against cpu -m $m 2>&1 | grep -E "^(OK|FAIL)" || status=1; done
done
for inj in 0:q_rope:add=0.5 1:attn_out:scale=1.01 1:ffn_act:nan -:logits:add=1; do
  $G audit backend --against cpu -m $TINY/gqa4-llama3-rope/model-f16.gguf --inject $inj --json > /tmp/planted.json 2>/dev/null
  python3 -c "import json; d=json.load(open('/tmp/planted.json'))['first_divergence']; print('$inj ->', d['layer'], d['point'])"
done
python3 tools/gpu/make_random_llama.py smollm2-135m /tmp/smollm2-random > /dev/null 2>&1
$G audit backend --against cpu -m /tmp/smollm2-random --json > $OUT/audit-smollm2.json 2>/dev/null || status=1
python3 -c "import json; d=json.load(open('$OUT/audit-smollm2.json')); print('smollm2-shape:', d['verdict'], 'worst', max(p['worst_error'] for p in d['points']))"
echo "#### hf parity $(date +%T)"
OUT=$OUT GRETA=$G python3 tools/gpu/hf_gpu_parity.py 2>/dev/null | grep -E "PASS|FAIL" || status=1
echo "#### end $(date +%T) status $status"
exit $status
