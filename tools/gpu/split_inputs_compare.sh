#!/usr/bin/env bash
# Which prefill products need their input as hi + lo (--split-inputs): for each policy, the
# backend audit of the default model's first 10 layers (GPU against the CPU reference; the
# first half of the prompt prefilled, the rest decoded, so K/V written by the prefill's
# products feed the decode steps), the same with a second prompt, with a ~650-token one (36
# repetitions of a sentence: session 30 found the old default qkv,o,down failing there) and
# with ~570 tokens of prose (crates/greta-model/src/calibrate/long-prose.txt, session 30), and the prefill
# time of both synthetic shapes and of the 10-layer default model (its own weights). The
# policy "default" passes no --split-inputs (the binary's default). Carry as
# tools/gpu/verify_carried.sh describes (target/carry: greta.xz, kernels/,
# smollm2-10l.gguf.xz).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
bash tools/gpu/unpack_carry.sh
export GRETA_KERNELS_DIR=$PWD/target/device/kernels
G=./target/device/greta
# MODEL: the model audited and timed (default: the default model's first 10 layers; the
# whole model where default_model_checks.sh has joined it: /tmp/SmolLM2-135M-Instruct.Q4_1.gguf).
M=${MODEL:-target/dm10/smollm2-10l.gguf}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/gpu.txt
# A second prompt (chat-formatted text of another kind) beside the audit's default one.
P2="<|im_start|>user
Write a short poem about the sea, then list three facts about octopuses.<|im_end|>
<|im_start|>assistant
"
# The ~650-token prompt of h100_checks.sh's long audits (36 sentences).
P3=$(python3 -c "print(' '.join(['The history of science is the study of how people came to understand the natural world.'] * 36))")
P4=$(cat crates/greta-model/src/calibrate/long-prose.txt)
verdict() { # audit json -> "pass | worst (point, layer, pos)"
  python3 -c "import json; d=json.load(open('$1')); w=max(d['points'], key=lambda p: p['worst_error']); print(('pass' if not d['diverged'] else 'FAIL') + ' | %.2e (%s, %s, %s)' % (w['worst_error'], w['point'], w['layer'], w['worst_pos']))"
}
{
echo "| --split-inputs | $(basename $M): audit | worst rms (point, layer, pos) | second prompt: audit | worst rms | ~650-token prompt: audit | worst rms | ~570 tokens of prose: audit | worst rms | 7B prefill-512 ms | SmolLM2 prefill-512 ms | $(basename $M) prefill-512 ms |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for p in ${POLICIES:-default qkv,o,down kv,o,gate_up,down none}; do
  f=$(echo $p | tr , -)
  flag=(--split-inputs $p); [ "$p" = default ] && flag=()
  $G audit backend --against cpu -m $M "${flag[@]}" --json > $OUT/audit-$f.json 2>/dev/null
  $G audit backend --against cpu -m $M "${flag[@]}" --prompt "$P2" --json > $OUT/audit2-$f.json 2>/dev/null
  $G audit backend --against cpu -m $M "${flag[@]}" --prompt "$P3" --json > $OUT/audit3-$f.json 2>/dev/null
  $G audit backend --against cpu -m $M "${flag[@]}" --prompt "$P4" --json > $OUT/audit4-$f.json 2>/dev/null
  ms=""
  for s in synthetic:llama2-7b synthetic:smollm2-135m $M; do
    j=$OUT/bench-$(basename $s | tr : -)-$f.json
    $G bench -m $s --backend gpu --prompt-len 512 --gen 8 --reps 3 "${flag[@]}" --json > $j 2>/dev/null
    ms="$ms | $(python3 -c "import json; print('%.2f' % json.load(open('$j'))['prefill_ms'])")"
  done
  echo "| $p | $(verdict $OUT/audit-$f.json) | $(verdict $OUT/audit2-$f.json) | $(verdict $OUT/audit3-$f.json) | $(verdict $OUT/audit4-$f.json)$ms |"
done
} | tee $OUT/split-inputs.md
# A device call returns only 8 files: everything in one bundle whose name sorts first.
tar czf /tmp/0-split.tgz -C "$OUT" . && mv /tmp/0-split.tgz "$OUT/0-split.tgz"
