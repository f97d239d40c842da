#!/usr/bin/env bash
# Session 61: where decode combines the attention's splits (`--ctx-combine`): in the attention
# (a cluster a head on Hopper) or in the output product's prologue (every split leaves its
# partial; gemv_add_splits). One call: the op and model tests that hold the two to the same
# bits, then SmolLM2 (and with ROUNDS_7B the 7B) at the bench's 512 + 128 both ways,
# interleaved, and SmolLM2's decode over 1-8 splits both ways (split_sweep.sh).
# Usage (GPU machine, carry target/carry): OUT=dir [ROUNDS="1 2 3"] [ROUNDS_7B="1 2"]
#   [SPLITS="1 .. 8"] [SWEEPS="1 2": the sweep's rounds, each both ways]
#   bash tools/gpu/ctx_combine_ab.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
bash tools/gpu/unpack_carry.sh > /dev/null
export GRETA_KERNELS_DIR=$PWD/target/device/kernels GRETA_REQUIRE_GPU=1
G=./target/device/greta
status=0
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
echo "== op tests: the attention's partials combined by the product, bitwise"
./target/device/gpu-ops --ignored --test-threads=1 --nocapture decode_attention_with_rope decode_products_with_norm \
  > "$OUT/ops.txt" 2>&1 || status=1
grep -E "test result|panicked|assert" "$OUT/ops.txt" | head -8
echo "== model tests: logits of the two combines, graph replay"
(cd crates/greta-model && ../../target/device/gpu-model --ignored --test-threads=1 --nocapture \
  the_splits_combined graph_replay > "$OUT/model.txt" 2>&1) || status=1
grep -E "NMSE|test result|panicked|agree" "$OUT/model.txt" | head -20
bench() { # NAME SHAPE ARGS...
  local name=$1 shape=$2; shift 2
  $G bench -m synthetic:$shape --backend gpu --prompt-len 512 --gen 128 --reps 3 --json "$@" \
    > "$OUT/$name.json" 2> "$OUT/$name.err" || { status=1; tail -n 3 "$OUT/$name.err"; }
}
for r in ${ROUNDS:-1 2 3}; do
  for c in attention product; do bench "smollm2-$c-$r" smollm2-135m --ctx-combine $c; done
done
# The 7B's rows (32 x 128) are past what a product combines (CTX_PRODUCT_MAX_K): its
# --ctx-combine product is the attention's combine, so it is timed only where asked.
for r in ${ROUNDS_7B:-}; do
  for c in attention product; do bench "llama2-7b-$c-$r" llama2-7b --ctx-combine $c; done
done
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
print("| shape | combine | decode tok/s (each round) | prefill ms |")
print("|---|---|---|---|")
for shape in ["smollm2", "llama2-7b"]:
    for c in ["attention", "product"]:
        rs = []
        for r in range(1, 4):
            f = f"{out}/{shape}-{c}-{r}.json"
            if os.path.exists(f):
                try:
                    d = json.load(open(f)); d = d[0] if isinstance(d, list) else d
                    rs.append((d["decode_tok_s"], d["prefill_ms"]))
                except Exception:
                    rs.append((float("nan"), float("nan")))
        print(f"| {shape} | {c} | {' / '.join(f'{x[0]:.1f}' for x in rs)} | {' / '.join(f'{x[1]:.2f}' for x in rs)} |")
PY
for r in ${SWEEPS:-1}; do
  for c in attention product; do
    echo "== SmolLM2 split sweep $r, --ctx-combine $c"
    mkdir -p "$OUT/sweep-$c-$r"
    OUT=$OUT/sweep-$c-$r SHAPES=smollm2-135m SPLITS="${SPLITS:-1 2 3 4 5 6 7 8}" ARGS="--ctx-combine $c" \
      bash tools/gpu/split_sweep.sh | tail -n 9
  done
done
# At most 8 files come back from a call: everything in one bundle whose name sorts first.
tar czf /tmp/0-ctx.tgz -C "$OUT" . && mv /tmp/0-ctx.tgz "$OUT/0-ctx.tgz"
exit $status
