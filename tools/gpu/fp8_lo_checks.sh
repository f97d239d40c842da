#!/usr/bin/env bash
# `--split-lo fp8` (the prefill's lo products on Hopper's FP8 matrix units) checked and timed
# in one call, against the f16 low halves in the same run: the op tests (all of them: the
# FP8 kernels' own and every kernel the change touched), the backend audits of the random
# SmolLM2- and Llama-2-7B-shaped models and of the default model's first 10 layers with
# each format (the audit decides), planted faults with FP8, and greta bench's prefill on
# both shapes with each format (ROUNDS rounds, alternating; 0: none). LOS: the --split-lo values to
# compare (default: f16 fp8). Carry target/carry (greta.xz, gpu-ops.xz, smollm2-10l.gguf.xz,
# kernels/; see verify_carried.sh). OPS_FILTER: a test-name filter for the op tests.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
bash tools/gpu/unpack_carry.sh
export GRETA_KERNELS_DIR=$PWD/target/device/kernels GRETA_REQUIRE_GPU=1
G=./target/device/greta
status=0
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/0-gpu.txt
./target/device/gpu-ops --ignored --test-threads=1 --nocapture ${OPS_FILTER:-} > $OUT/0-gpu-ops.txt 2>&1 || status=1
grep -E -A2 "test result|panicked|^test .*FAILED" $OUT/0-gpu-ops.txt | cut -c1-300
grep -E "FP8 lo" $OUT/0-gpu-ops.txt | cut -c1-200 | head -n 12
python3 tools/gpu/make_random_llama.py smollm2-135m /tmp/smollm2-random > /dev/null 2>&1
python3 tools/gpu/make_random_llama.py llama2-7b-2layers /tmp/llama2-random > /dev/null 2>&1
LOS=${LOS:-f16 fp8}
tag() { echo "$1" | tr ':,' '-_'; }
for lo in $LOS; do
  for m in smollm2 llama2; do
    j=$OUT/audit-$m-$(tag $lo).json
    $G audit backend --against cpu -m /tmp/$m-random --split-lo $lo --json > $j 2> $OUT/audit-$m-$(tag $lo).err || status=1
    python3 -c "import json; d=json.load(open('$j')); w=max(d['points'], key=lambda p: p['worst_error']); print('$m-shape --split-lo $lo:', d['verdict'], 'worst %.3e at %s layer %s' % (w['worst_error'], w['point'], w['layer']))" || { status=1; tail -n 3 $OUT/audit-$m-$(tag $lo).err; }
  done
done 2>&1 | tee $OUT/0-audits.txt
# A planted fault is still named with FP8 low halves.
$G audit backend --against cpu -m /tmp/smollm2-random --split-lo fp8 --inject 1:ffn_act:scale=1.01 --json > /tmp/planted.json 2>/dev/null
python3 -c "import json; d=json.load(open('/tmp/planted.json')); print('planted 1:ffn_act:scale=1.01 with fp8:', d['verdict'], d.get('first_divergence'))" | cut -c1-200 | tee -a $OUT/0-audits.txt
if [ -f target/dm10/smollm2-10l.gguf ]; then
  for lo in $LOS; do
    OUT=$OUT TAG=-$(tag $lo) GPU_ARGS="--split-lo $lo" bash tools/gpu/default_model_layers.sh 2>&1 | grep -E "audit|worst|greedy|differ" || status=1
  done 2>&1 | tee -a $OUT/0-audits.txt
else
  echo "the default model's first 10 layers: not carried (target/carry/smollm2-10l.gguf.xz), not audited" | tee -a $OUT/0-audits.txt
fi
echo "| build | 7B prefill-512 ms | 7B decode tok/s | SmolLM2 prefill-512 ms | SmolLM2 decode tok/s |" | tee $OUT/0-bench.md
echo "|---|---|---|---|---|" | tee -a $OUT/0-bench.md
for round in $(seq ${ROUNDS:-2}); do
  for lo in $LOS; do
    row="| --split-lo $lo (round $round)"
    for s in llama2-7b smollm2-135m; do
      j=$OUT/bench-$(tag $lo)-$s-$round.json
      $G bench -m synthetic:$s --backend gpu --split-lo $lo --prompt-len 512 --gen ${GEN:-64} --reps 5 --json > $j 2> $j.err || { status=1; tail -n 2 $j.err; }
      row="$row | $(python3 -c "import json; d=json.load(open('$j')); print('%.2f | %.1f' % (d['prefill_ms'], d['decode_tok_s']))")"
    done
    echo "$row |" | tee -a $OUT/0-bench.md
  done
done
[ "${ROUNDS:-2}" -gt 0 ] && for lo in $LOS; do
  python3 -c "import json; d=json.load(open('$OUT/bench-$(tag $lo)-llama2-7b-1.json')); print('7B: device used %.2f GB, split %s' % (d['device_used_bytes']/1e9, d['split_inputs']))" | tee -a $OUT/0-bench.md
done
cd $OUT && tar czf 0-all.tgz *.json *.err *.txt 2>/dev/null
exit $status
