#!/usr/bin/env bash
# The swapped warpgroup GEMM tiles (session 53: the weights as wgmma's A, the prompt's rows as
# its N, 72-256 a tile; output and down choose them off the 128-row multiples) in one call:
# the op tests (every swapped tile forced at the edge shapes, plain, f16-lo and FP8-lo) and
# the model tests on this build; the 7B prefill at LENS (default
# 384,448,512,520,576,640,650,704,768,800,1024; REPS each, default 3) under SPLITS (default
# "default none": the audited split and the peers' numerics) with main's build
# (target/carry/base: greta.xz and kernels.txz) against this one, ROUNDS rounds (default 2)
# in turn; the backend audit of the 2-layer 7B shape on ~650 tokens (its audited prefill of
# ~325 rows takes 88 x 128 swapped tiles for the output and down products).
# SHAPE: the synthetic model of the A/B (default llama2-7b).
# SWITCH=1: "base" is this build under --swapped-tiles off (the same objects and host, so
# that nothing but the tile choice differs; no target/carry/base needed).
# Carry target/carry (greta.xz, gpu-ops.xz, gpu-model.xz, kernels.txz; base/).
# PARTS: tests ab audit kernels (default all, in that order).
PARTS_DEFAULT="tests ab audit kernels"
source "$(dirname "$0")/parts.sh"
LENS=${LENS:-384,448,512,520,576,640,650,704,768,800,1024}
if part tests; then
  STEP_TAIL="0 0" step ops ./target/device/gpu-ops --ignored --test-threads=1 --nocapture || status=1
  grep -E "test result|panicked" "$R/ops.err" "$R/ops.out" | head
  grep -E "WgmmaTile\(WgmmaTile \{ m: (136|256|72)," "$R/ops.err" | head -6
  (cd crates/greta-model && STEP_TAIL="0 0" step model ../../target/device/gpu-model --ignored --test-threads=1) || status=1
  grep -E "test result|panicked" "$R/model.out" "$R/model.err" | head
fi
if part ab && { [ -n "${SWITCH:-}" ] || [ -f target/carry/base/greta.xz ]; }; then
  [ -n "${SWITCH:-}" ] || { mkdir -p /tmp/base && python3 -c "
import lzma, shutil, os
with lzma.open('target/carry/base/greta.xz') as f, open('/tmp/base/greta', 'wb') as o: shutil.copyfileobj(f, o)
os.chmod('/tmp/base/greta', 0o755)"
  tar -C /tmp/base -xJf target/carry/base/kernels.txz; }
  for round in $(seq 1 "${ROUNDS:-2}"); do
    for split in ${SPLITS:-default none}; do
      args=(); [ "$split" = default ] || args=(--split-inputs "$split")
      for v in base new; do
        bin=$G K=$PWD/target/device/kernels sw=()
        if [ $v = base ]; then
          if [ -n "${SWITCH:-}" ]; then sw=(--swapped-tiles off); else bin=/tmp/base/greta K=/tmp/base/kernels; fi
        fi
        STEP_TAIL="0 2" step "ab-$v-$split-$round" env GRETA_KERNELS_DIR=$K $bin bench -m synthetic:${SHAPE:-llama2-7b} \
          --backend gpu --prompt-len "$LENS" --gen 1 --reps "${REPS:-3}" "${args[@]}" "${sw[@]}" --json || status=1
      done
    done
  done
  python3 - "$R" "${ROUNDS:-2}" "${SPLITS:-default none}" <<'PY'
import json, os, sys
r, rounds, splits = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
for split in splits:
    # One length's report is an object, several lengths' a list.
    runs = {(v, i): json.load(open(f"{r}/ab-{v}-{split}-{i}.out")) for v in ("base", "new") for i in range(1, rounds + 1)}
    runs = {key: run if isinstance(run, list) else [run] for key, run in runs.items()}
    print(f"--split-inputs {split}: prefill ms, base and new each round; new/base; new ms a token / 512's")
    b512 = [e for e in runs[("new", 1)] if e["spec"]["prompt_len"] == 512]
    for j, b in enumerate(runs[("base", 1)]):
        n = b["spec"]["prompt_len"]
        cells = "  ".join(f"{runs[('base', i)][j]['prefill_ms']:6.2f} {runs[('new', i)][j]['prefill_ms']:6.2f}" for i in range(1, rounds + 1))
        ratios = " ".join(f"{runs[('new', i)][j]['prefill_ms'] / runs[('base', i)][j]['prefill_ms']:.3f}" for i in range(1, rounds + 1))
        tok = f"{runs[('new', 1)][j]['prefill_ms'] / n / (b512[0]['prefill_ms'] / 512):.3f}" if b512 else "-"
        print(f"{n:6d}  {cells}   {ratios}   {tok}")
PY
fi
if part audit; then
  python3 tools/gpu/make_random_llama.py llama2-7b-2layers /tmp/sw-model > /dev/null 2>&1
  LONG=$(python3 -c "print(' '.join(['The history of science is the study of how people came to understand the natural world.'] * 36))")
  STEP_TAIL="4 2" step audit $G audit backend --against cpu -m /tmp/sw-model --prompt "$LONG" || status=1
fi
if part kernels; then
  # Which tile each product took (greta bench --kernels), one prompt length a run.
  for n in 325 520 650; do
    STEP_TAIL="0 0" step "kernels-$n" $G bench -m synthetic:llama2-7b --backend gpu --prompt-len $n --gen 1 --reps 1 --kernels || status=1
    grep -E "gemm" "$R/kernels-$n.out" | head -12
  done
fi
tar czf /tmp/0-sw.tgz -C "$OUT" results && mv /tmp/0-sw.tgz "$OUT/0-sw.tgz"
echo "status $status"
exit $status
