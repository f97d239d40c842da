#!/usr/bin/env bash
# A GEMM-only kernel change against main's GEMM objects, as session 52 ran
# tools/gpu/variants/gemm-idle-rows.patch (a 128-row tile's second warpgroup multiplying
# nothing where its 64 rows lie past the last: prompt lengths within 64 rows past a multiple
# of 128). One call: the op tests (their m 77, 100 and 130 run idle warpgroups) and the model
# tests on the changed build; the 7B prefill at LENS (default 512,520,576,650,800; REPS each,
# default 3) with target/carry/base-gemm.cubin (main's) against the changed build's, ROUNDS
# rounds (default 2) in turn; the backend audit of the 2-layer 7B shape on a prompt whose
# audited prefill runs idle warpgroups (~270 rows: the third row tile's rows 320-383 past it).
# Carry target/carry (greta.xz, gpu-ops.xz, gpu-model.xz, kernels.txz of the changed build;
# base-gemm.cubin: main's target/device/kernels/sm_90a/gemm.cubin, copied before the patch
# is applied and tools/gpu/build_for_device.sh run).
# PARTS: tests ab audit (default all, in that order).
PARTS_DEFAULT="tests ab audit"
source "$(dirname "$0")/parts.sh"
LENS=${LENS:-512,520,576,650,800}
if part tests; then
  STEP_TAIL="0 0" step ops ./target/device/gpu-ops --ignored --test-threads=1 || status=1
  grep -E "test result|panicked" "$R/ops.err" "$R/ops.out" | head
  (cd crates/greta-model && STEP_TAIL="0 0" step model ../../target/device/gpu-model --ignored --test-threads=1) || status=1
  grep -E "test result|panicked" "$R/model.out" "$R/model.err" | head
fi
if part ab && [ -f target/carry/base-gemm.cubin ]; then
  rm -rf /tmp/base-kernels && cp -r target/device/kernels /tmp/base-kernels
  cp target/carry/base-gemm.cubin /tmp/base-kernels/sm_90a/gemm.cubin
  for round in $(seq 1 "${ROUNDS:-2}"); do
    for v in base new; do
      K=$PWD/target/device/kernels
      [ $v = base ] && K=/tmp/base-kernels
      STEP_TAIL="0 2" step "ab-$v-$round" env GRETA_KERNELS_DIR=$K $G bench -m synthetic:llama2-7b --backend gpu \
        --prompt-len "$LENS" --gen 1 --reps "${REPS:-3}" --json || status=1
    done
  done
  python3 - "$R" "${ROUNDS:-2}" <<'PY'
import json, sys
r, rounds = sys.argv[1], int(sys.argv[2])
runs = {(v, i): json.load(open(f"{r}/ab-{v}-{i}.out")) for v in ("base", "new") for i in range(1, rounds + 1)}
print("prompt  " + "  ".join(f"base{i} new{i}" for i in range(1, rounds + 1)) + "   new/base (each round)")
for j, b in enumerate(runs[("base", 1)]):
    n = b["spec"]["prompt_len"]
    cells = "  ".join(f"{runs[('base', i)][j]['prefill_ms']:5.2f} {runs[('new', i)][j]['prefill_ms']:5.2f}" for i in range(1, rounds + 1))
    ratios = " ".join(f"{runs[('new', i)][j]['prefill_ms'] / runs[('base', i)][j]['prefill_ms']:.3f}" for i in range(1, rounds + 1))
    print(f"{n:6d}  {cells}   {ratios}")
PY
fi
if part audit; then
  python3 tools/gpu/make_random_llama.py llama2-7b-2layers /tmp/idle-model > /dev/null 2>&1
  LONG=$(python3 -c "print(' '.join(['The history of science is the study of how people came to understand the natural world.'] * ${REPEATS:-30}))")
  STEP_TAIL="4 2" step audit $G audit backend --against cpu -m /tmp/idle-model --prompt "$LONG" || status=1
  grep -iE "prefill.*rows|tokens|positions" "$R/audit.err" "$R/audit.out" | head -3
fi
tar czf /tmp/0-idle.tgz -C "$OUT" results && mv /tmp/0-idle.tgz "$OUT/0-idle.tgz"
echo "status $status"
exit $status
