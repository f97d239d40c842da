#!/usr/bin/env bash
# The 2:4-sparse low halves end to end (session 50; docs/sparse-lo.md): `--split-lo
# fp8+sparse:gate_up` has the FFN norm write gate/up's input with its FP8 low half kept
# 2:4-sparse and the SwiGLU GEMM's sparse forms multiply it on the sparse FP8 units. One call:
#   tests:    the build's op tests and model tests (a changed launcher: the GEMMs' shared
#             memory, the norm's arguments);
#   speed:    `greta bench` prefill-512 under `fp8` (the dense FP8 low halves) and the sparse
#             policy, rounds interleaved and their order reversed every other round (the card
#             warms over a round), on each of SHAPES;
#   numerics: `greta calibrate --try qkv,o,gate_up,down` under each policy on the default
#             model's first 10 layers (its four prompts) and the random 7B shape: worst stage
#             as a fraction of the tolerance (the calibration's pass: <= 0.5).
# Carry target/carry holding the build to test as its main one (greta.xz, gpu-ops.xz,
# gpu-model.xz, kernels.txz) and smollm2-10l.gguf.xz.
# Usage (GPU machine): OUT=dir [PARTS="tests speed numerics"] [ROUNDS=3] [REPS=3]
#   [SHAPES="llama2-7b smollm2-135m"] [POLICIES="fp8 fp8+sparse:gate_up"] bash tools/gpu/sparse_lo_route.sh
PARTS_DEFAULT="tests speed numerics"
source "$(dirname "$0")/parts.sh"
read -r -a policies <<< "${POLICIES:-fp8 fp8+sparse:gate_up}"
tag() { local t=${1//+/_}; t=${t//:/_}; echo "${t//,/_}"; }
if part tests; then
  step gpu-ops ./target/device/gpu-ops --ignored --test-threads=1 || status=1
  # A test binary built in build_variant.sh's worktree would look for its fixtures there.
  step gpu-model env -C crates/greta-model GRETA_TEST_FIXTURES=$PWD/crates/greta-model/tests/fixtures \
    ../../target/device/gpu-model --ignored --test-threads=1 || status=1
fi
if part speed; then
  for round in $(seq 1 "${ROUNDS:-3}"); do
    for shape in ${SHAPES:-llama2-7b smollm2-135m}; do
      order=("${policies[@]}")
      [ $((round % 2)) = 0 ] && order=($(printf '%s\n' "${policies[@]}" | tac))
      for p in "${order[@]}"; do
        name=speed-$shape-$(tag "$p")-$round
        STEP_TAIL="0 2" step "$name" $G bench -m synthetic:$shape --backend gpu --prompt-len 512 --gen 2 \
          --reps "${REPS:-3}" --split-lo "$p" --json || status=1
        python3 -c "import json, sys; b = json.load(open(sys.argv[1])); print(f'  {sys.argv[2]:14s} {sys.argv[3]:22s} prefill {b[\"prefill_ms\"]:.3f} ms {[round(x, 3) for x in b[\"all_prefill_ms\"]]}')" \
          "$R/$name.out" "$shape" "$p" || status=1
      done
    done
  done
  # Every prefill of every round, by shape and policy: the card's clock moves under its power
  # cap within a run (session 50: one policy's three reps spanned 15.2-16.6 ms), so the
  # median and the least of all of them, not one run's.
  python3 - "$R" <<'PY'
import glob, json, os, re, statistics, sys
runs = {}
for f in sorted(glob.glob(os.path.join(sys.argv[1], "speed-*.out"))):
    m = re.match(r"speed-(.+)-(\d+)\.out$", os.path.basename(f))
    try:
        runs.setdefault(m.group(1), []).extend(json.load(open(f))["all_prefill_ms"])
    except Exception as e:
        print(f"  {f}: {e}")
for k, v in sorted(runs.items()):
    print(f"  {k:40s} {len(v):3d} prefills: median {statistics.median(v):.3f} ms, least {min(v):.3f}, most {max(v):.3f}")
PY
fi
if part numerics; then
  for model in target/dm10/smollm2-10l.gguf synthetic:llama2-7b; do
    for p in "${policies[@]}"; do
      name=numerics-$(basename "$model" .gguf | tr : _)-$(tag "$p")
      STEP_TAIL="0 2" step "$name" $G calibrate -m "$model" --all --no-save --try qkv,o,gate_up,down \
        --split-lo "$p" --json || status=1
      python3 - "$R/$name.out" "$p" <<'PY' || status=1
import json, sys
d = json.load(open(sys.argv[1]))
for r in d["rungs"]:
    print(f"  {sys.argv[2]:22s} {r['split_inputs']} ({r['split_lo']}): worst {r['worst_error']} at "
          f"{r['worst_at']}, {r['worst_fraction']} of the tolerance")
PY
    done
  done
fi
exit $status
