#!/usr/bin/env bash
# Short prefills on the GPU (session 58): what a prompt of 1-128 tokens costs, against that
# many decode steps, on both benchmark shapes and under both numerics. A chat turn after the
# first computes only its new tokens (greta chat keeps the cache), so its prefill is short;
# session 57 left it unmeasured. Also the launches of one 16-row prefill of the 7B (which
# tile each product took, how many tiles it had for the card's SMs).
# Usage (GPU machine): OUT=dir [PARTS="tests short kernels"] [MODELS="llama2-7b smollm2-135m"]
#   [NUMERICS="default none"] [LENS=1,2,...] [KERNEL_LENS="16 64"] [BENCH_ARGS="--stream-k always"]
#   bash tools/gpu/short_prefill.sh
PARTS_DEFAULT="tests short kernels"
source "$(dirname "$0")/parts.sh"
LENS=${LENS:-1,2,4,8,16,32,64,128}
if part tests; then
  step hiprt-gpu ./target/device/hiprt-gpu --ignored --test-threads=1 || status=1
  step gpu-ops ./target/device/gpu-ops --ignored --test-threads=1 || status=1
  step gpu-model env -C crates/greta-model ../../target/device/gpu-model --ignored --test-threads=1 || status=1
fi
if part short; then
  for m in ${MODELS:-llama2-7b smollm2-135m}; do
    for si in ${NUMERICS:-default none}; do
      a=(); [ $si = default ] || a=(--split-inputs $si)
      STEP_TAIL="0 2" step short-$m-$si $G bench -m synthetic:$m --backend gpu --prompt-len $LENS \
        --gen 32 --reps 5 --json "${a[@]}" ${BENCH_ARGS:-} || status=1
    done
  done
  python3 - "$R" <<'PY' | tee "$OUT/short-prefill.md"
import json, sys, os
r = sys.argv[1]
print("model | numerics | prompt | prefill ms | host ms | ms a token | decode ms a token | prefill / (prompt x decode step)")
print("---|---|---|---|---|---|---|---")
for m in os.environ.get("MODELS", "llama2-7b smollm2-135m").split():
    for si in os.environ.get("NUMERICS", "default none").split():
        p = os.path.join(r, f"short-{m}-{si}.out")
        try:
            reps = json.load(open(p))
        except Exception as e:
            print(f"{m} | {si} | (no report: {e})"); continue
        for b in reps:
            t = b["spec"]["prompt_len"]; ms = b["prefill_ms"]; d = b["decode_ms_per_token"]
            h = b.get("prefill_host_ms"); h = f"{h:.3f}" if h is not None else "-"
            print(f'{m} | {si} | {t} | {ms:.3f} | {h} | {ms / t:.3f} | {d:.3f} | {ms / (t * d):.2f}')
PY
fi
if part kernels; then
  for t in ${KERNEL_LENS:-16 64}; do
    STEP_TAIL="0 2" step kernels-7b-$t $G bench -m synthetic:llama2-7b --backend gpu --prompt-len $t --gen 4 \
      --reps 1 --kernels --json ${BENCH_ARGS:-} || status=1
    python3 - "$R/kernels-7b-$t.out" <<'PY'
import json, sys
b = json.load(open(sys.argv[1]))
seen = {}
for k in b.get("kernels", []):
    w = k.get("waves")
    key = (k["kernel"], k["blocks"], k["tiles"], None if w is None else round(w, 3))
    seen[key] = seen.get(key, 0) + 1
for (name, blocks, tiles, waves), n in sorted(seen.items(), key=lambda x: -x[1])[:30]:
    print(f"{n:5d} x {name}: {blocks} blocks, {tiles} tiles, {waves} waves")
PY
  done
fi
exit $status
