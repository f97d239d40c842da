#!/usr/bin/env bash
# The 7B prefill across prompt lengths next to the vendor's GEMMs (session 53): greta bench
# at LENS (default 384,448,512,520,576,640,650,704,768,800,1024) under the peers' numerics
# (`--split-inputs none`) and the default, one model load each, and cuBLAS (torch.matmul of
# f16 operands, tools/gpu/cublas_gemms.py) on the same products at each length: how the cost
# a token moves off the 128-row tiles' multiples, for greta and for the GEMMs both peers
# (llama.cpp's cuBLAS path, transformers) run. SPLITS: the greta policies (default
# "none default"). Carry target/carry: greta.xz, kernels.txz.
# PARTS: greta cublas (default both).
PARTS_DEFAULT="greta cublas"
source "$(dirname "$0")/parts.sh"
LENS=${LENS:-384,448,512,520,576,640,650,704,768,800,1024}
if part greta; then
  for split in ${SPLITS:-none default}; do
    args=(); [ "$split" = default ] || args=(--split-inputs "$split")
    STEP_TAIL="0 2" step "greta-$split" $G bench -m synthetic:llama2-7b --backend gpu --prompt-len "$LENS" \
      --gen 1 --reps "${REPS:-3}" "${args[@]}" ${GPU_ARGS:-} --json || status=1
  done
fi
if part cublas; then
  for n in ${LENS//,/ }; do
    python3 tools/gpu/cublas_gemms.py "$n" --json "$R/cublas-$n.json" > "$R/cublas-$n.out" 2>&1 || status=1
  done
fi
python3 - "$R" "$LENS" <<'PY'
import json, os, sys
r, lens = sys.argv[1], [int(x) for x in sys.argv[2].split(",")]
def greta(split):
    p = f"{r}/greta-{split}.out"
    return {e["spec"]["prompt_len"]: e["prefill_ms"] for e in json.load(open(p))} if os.path.exists(p) else {}
def cublas(n):
    p = f"{r}/cublas-{n}.json"
    if not os.path.exists(p):
        return None
    return 32 * sum(x["f16_ms"] for x in json.load(open(p))["products"])
none, default = greta("none"), greta("default")
b = {k: (v[512] / 512 if 512 in v else None) for k, v in (("none", none), ("default", default))}
cb = cublas(512)
print("prompt | greta none ms (a token / 512's) | greta default ms (/ 512's) | cuBLAS f16 products ms (/ 512's) | greta none / cuBLAS")
for n in lens:
    def cell(v, base):
        return f"{v:.2f} ({v / n / base:.3f})" if v is not None and base else "-"
    c = cublas(n)
    ratio = f"{none[n] / c:.3f}" if n in none and c else "-"
    print(f"{n} | {cell(none.get(n), b['none'])} | {cell(default.get(n), b['default'])} | "
          f"{cell(c, cb / 512 if cb else None)} | {ratio}")
PY
echo "status $status"
exit $status
