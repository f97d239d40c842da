#!/usr/bin/env bash
# greta's default prefill numerics against the peers' (every product input rounded to one f16,
# as llama.cpp's cuBLAS path and transformers in f16 do: `--split-inputs none`), measured the
# ways the project judges numerics, in one GPU-machine call:
#   - the backend audit (every stage of every position, GPU against the CPU reference, rms
#     metric, tolerance 8e-3) on the tiny fixtures, the random SmolLM2 and Llama-2-7B shapes,
#     and the default model's first 10 layers when target/dm10/smollm2-10l.gguf is carried
#     (tools/gpu/default_model_layers.sh says how to make it);
#   - logits against Hugging Face transformers in f32 (tools/gpu/hf_gpu_parity.py), beside
#     transformers' own f16 error;
#   - what each costs: the 7B shape's prefill-512 under each of POLICIES (--split-inputs
#     values; default "qkv,o,gate_up,down qkv,o,down none": the default since session 30, the
#     one before, the peers'), first, on a quiet machine.
# Why: session 29's peer run put transformers + torch.compile's 7B prefill (12.65 ms, peers'
# numerics) ahead of greta's default (14.96 ms) and behind greta's `--split-inputs none`
# (11.45 ms); what the split buys has to be measured beside what it costs.
# Usage (GPU machine; carry target/carry, optionally target/dm10): OUT=dir bash tools/gpu/peer_numerics_checks.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
[ -f target/carry/greta.xz ] && bash tools/gpu/unpack_carry.sh
export GRETA_KERNELS_DIR=$PWD/target/device/kernels GRETA_REQUIRE_GPU=1
G=./target/device/greta
TINY=crates/greta-model/tests/fixtures/tiny
python3 tools/gpu/make_random_llama.py smollm2-135m /tmp/smollm2-random > /dev/null 2>&1
python3 tools/gpu/make_random_llama.py llama2-7b-2layers /tmp/llama2-random > /dev/null 2>&1
for s in ${POLICIES:-qkv,o,gate_up,down qkv,o,down none}; do
  $G bench -m synthetic:llama2-7b --backend gpu --split-inputs $s --prompt-len 512 --gen 4 --reps 5 --json 2>/dev/null |
    python3 -c "import json,sys; d=json.load(sys.stdin); print('7B prefill-512, --split-inputs $s: %.2f ms' % d['prefill_ms'])" |
    tee -a $OUT/0-numerics.md
done
# The default model first: it is the one whose audit decided the split.
models="/tmp/smollm2-random /tmp/llama2-random $TINY/mha-tied-theta1e4 $TINY/gqa-untied-theta5e5 $TINY/gqa4-llama3-rope"
[ -f target/dm10/smollm2-10l.gguf ] && models="target/dm10/smollm2-10l.gguf $models"
echo "| model | numerics | verdict | worst rms error | where |" | tee $OUT/0-numerics.md
echo "|---|---|---|---|---|" | tee -a $OUT/0-numerics.md
for m in $models; do
  for split in default none; do
    args=""; [ $split = none ] && args="--split-inputs none"
    $G audit backend --against cpu -m $m $args --json > /tmp/audit.json 2> /tmp/audit.err
    python3 - "$m" "$split" <<'PY' | tee -a $OUT/0-numerics.md
import json, sys
try:
    d = json.load(open("/tmp/audit.json"))
except Exception as e:
    print(f"| {sys.argv[1]} | {sys.argv[2]} | no result ({e}; see stderr) | | |")
    sys.exit(0)
w = max(d["points"], key=lambda p: p["worst_error"])
print(f"| {sys.argv[1].split('/')[-1]} | {sys.argv[2]} | {d['verdict']} | {w['worst_error']:.3e} | "
      f"layer {w['layer']} {w['point']}, position {w['worst_pos']} |")
PY
  done
done
for split in default none; do
  args=""; [ $split = none ] && args="--split-inputs none"
  echo "== Hugging Face parity, greta GPU $split" | tee -a $OUT/0-numerics.md
  mkdir -p /tmp/par-$split
  GPU_ARGS="$args" OUT=/tmp/par-$split GRETA=$G python3 tools/gpu/hf_gpu_parity.py 2>&1 | grep -E "rms_rel|PASS|FAIL" | tee -a $OUT/0-numerics.md
done
