#!/usr/bin/env bash
# greta's prefill GEMMs against cuBLAS on the same card, shape by shape: the four wgmma
# launches of layer 0 of Llama-2-7B at 512 rows (Q/K/V, output, gate/up, down), timed by
# Nsight Compute without its clock lock (--clock-control none: the boost clocks cuBLAS's
# CUDA-event timings run at), with the default FP8 low halves and with no split inputs (hi
# products alone: cuBLAS's f16 product is the same work), then tools/gpu/cublas_gemms.py.
# Usage on the GPU machine: OUT=dir bash tools/gpu/gemm_vs_cublas.sh (carry target/carry).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
source tools/gpu/ncu_setup.sh
status=0
for form in "auto:" "none:--split-inputs none"; do
  tag=${form%%:*} args=${form#*:}
  "$NCU" --clock-control none --graph-profiling node -k regex:gemm_f16_wgmma -c 4 --section SpeedOfLight \
    "$G" bench -m synthetic:llama2-7b --backend gpu $args --prompt-len 512 --gen 2 --reps 1 \
    > "$OUT/ncu-$tag.txt" 2>&1 || status=1
  echo "== greta, layer 0, ${args:-default (--split-lo auto)}:"
  grep -E "^\s+gemm_f16_wgmma|Duration|Compute \(SM\) Throughput" "$OUT/ncu-$tag.txt" | sed -E 's/\s+/ /g'
done
python3 tools/gpu/cublas_gemms.py 512 --json "$OUT/cublas.json" 2>&1 | tee "$OUT/cublas.txt"
exit $status
