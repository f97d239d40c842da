#!/usr/bin/env bash
# Session 58: the short-prefill GEMVs of main against a variant of them (build_variant.sh with
# TESTS=1, e.g. tools/gpu/variants/gemv-rows-lds.patch as v/lds): the variant's op and model
# tests, then the 7B and SmolLM2 prefill of 2-8 tokens on main's GEMVs, the variant's, and
# the GEMM (--gemv-rows 1), same card, same call.
# Usage (GPU machine, carry target/carry): OUT=dir [VARIANT=lds] [LENS=2,3,4,5,6,8] [ROUNDS="1 2"]
#   bash tools/gpu/gemv_rows_ab.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
V=${VARIANT:-lds} LENS=${LENS:-2,3,4,5,6,8}
bash tools/gpu/unpack_carry.sh > /dev/null
bash tools/gpu/fill_variants.sh
d=$PWD/target/carry/v/$V
for f in greta gpu-ops gpu-model; do bash tools/gpu/unxz.sh "$d/$f.xz" "/tmp/$V-$f"; done
export GRETA_REQUIRE_GPU=1
status=0
echo "== main: the rows op test and the model tests"
GRETA_KERNELS_DIR=$PWD/target/device/kernels ./target/device/gpu-ops --ignored short_prefill > "$OUT/main-ops.txt" 2>&1 || status=1
grep -E "test result|panicked" "$OUT/main-ops.txt"
(cd crates/greta-model && GRETA_KERNELS_DIR=$PWD/../../target/device/kernels ../../target/device/gpu-model --ignored --test-threads=1 > "$OUT/main-model.txt" 2>&1) || status=1
grep -E "test result|panicked" "$OUT/main-model.txt"
echo "== $V: op test"
GRETA_KERNELS_DIR=$d "/tmp/$V-gpu-ops" --ignored short_prefill --nocapture > "$OUT/$V-ops.txt" 2>&1 || status=1
grep -E "gemv_rows|gate_up_silu_rows|test result|panicked" "$OUT/$V-ops.txt" | tail -12
echo "== $V: model tests"
# Built in a worktree that is not here: the fixtures are this tree's (session 60's call
# failed five of them for want of this).
(cd crates/greta-model && GRETA_TEST_FIXTURES=$PWD/tests/fixtures GRETA_KERNELS_DIR=$d "/tmp/$V-gpu-model" --ignored --test-threads=1 --nocapture > "$OUT/$V-model.txt" 2>&1) || status=1
grep -E "NMSE|test result|panicked" "$OUT/$V-model.txt" | grep -E "rows after|result|panicked"
run() { # NAME BINARY KERNELS ARGS...
  local name=$1 bin=$2 kdir=$3; shift 3
  for m in llama2-7b smollm2-135m; do
    GRETA_KERNELS_DIR=$kdir "$bin" bench -m synthetic:$m --backend gpu --prompt-len "$LENS" --gen 8 --reps 5 \
      --json "$@" > "$OUT/$name-$m.json" 2> "$OUT/$name-$m.err" || status=1
  done
}
for round in ${ROUNDS:-1 2}; do
  run "main-gemvs-$round" ./target/device/greta "$PWD/target/device/kernels" --gemv-rows 8
  run "$V-gemvs-$round" "/tmp/$V-greta" "$d" --gemv-rows 8
  run "gemm-$round" ./target/device/greta "$PWD/target/device/kernels" --gemv-rows 1
done
python3 - "$OUT" "$V" <<'PY'
import json, os, sys
out, v = sys.argv[1], sys.argv[2]
print("model | prompt | GEMM ms | main's GEMVs ms | " + v + " GEMVs ms (each round)")
print("---|---|---|---|---")
for m in ["llama2-7b", "smollm2-135m"]:
    runs = {}
    for name in ["gemm", "main-gemvs", v + "-gemvs"]:
        for r in [int(x) for x in os.environ.get("ROUNDS", "1 2").split()]:
            try:
                runs.setdefault(name, []).append({b["spec"]["prompt_len"]: b["prefill_ms"] for b in json.load(open(f"{out}/{name}-{r}-{m}.json"))})
            except Exception as e:
                runs.setdefault(name, []).append({})
    for t in sorted(runs["gemm"][0]):
        cell = lambda n: " / ".join(f"{x.get(t, float('nan')):.2f}" for x in runs[n])
        print(f"{m} | {t} | {cell('gemm')} | {cell('main-gemvs')} | {cell(v + '-gemvs')}")
PY
exit $status
