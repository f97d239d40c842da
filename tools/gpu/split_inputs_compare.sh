#!/usr/bin/env bash
# Which prefill products need their input as hi + lo (--split-inputs): for each policy, the
# backend audit of the default model's first 10 layers (GPU against the CPU reference; the
# first half of the prompt prefilled, the rest decoded, so K/V written by the prefill's
# products feed the decode steps) and the prefill time of both synthetic shapes. Carry as
# tools/gpu/verify_carried.sh describes (target/carry: greta.xz, kernels/,
# smollm2-10l.gguf.xz).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)}
bash tools/gpu/unpack_carry.sh
export GRETA_KERNELS_DIR=$PWD/target/device/kernels
G=./target/device/greta
M=target/dm10/smollm2-10l.gguf
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/gpu.txt
{
echo "| --split-inputs | default model, first 10 layers: audit | worst rms (point, layer, pos) | 7B prefill-512 ms | SmolLM2 prefill-512 ms |"
echo "|---|---|---|---|---|"
for p in ${POLICIES:-down qkv,down qkv,o,down qkv,gate_up,down all}; do
  f=$(echo $p | tr , -)
  $G audit backend --against cpu -m $M --split-inputs $p --json > $OUT/audit-$f.json 2>/dev/null
  verdict=$(python3 -c "import json; d=json.load(open('$OUT/audit-$f.json')); w=max(d['points'], key=lambda p: p['worst_error']); print(('pass' if not d['diverged'] else 'FAIL') + ' | %.2e (%s, %s, %s)' % (w['worst_error'], w['point'], w['layer'], w['worst_pos']))")
  ms=""
  for s in llama2-7b smollm2-135m; do
    $G bench -m synthetic:$s --backend gpu --prompt-len 512 --gen 8 --reps 3 --split-inputs $p --json > $OUT/bench-$s-$f.json 2>/dev/null
    ms="$ms | $(python3 -c "import json; print('%.2f' % json.load(open('$OUT/bench-$s-$f.json'))['prefill_ms'])")"
  done
  echo "| $p | $verdict$ms |"
done
} | tee $OUT/split-inputs.md
