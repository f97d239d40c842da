#!/usr/bin/env bash
# Per-kernel time of one prefill and one decode step, from Nsight Compute (one pass per
# kernel: duration and DRAM bytes; kernels are serialised, caches flushed between them, so
# the sum is kernel time without launch gaps). The Nsight Systems shipped on the GPU machines
# cannot import its own traces (no QdstrmImporter), hence ncu.
# Usage on the GPU machine: OUT=dir bash tools/gpu/profile_decode.sh [shape ...]
#   (default: smollm2-135m llama2-7b). Prints tools/gpu/decode_breakdown.py's tables and
#   writes OUT/profile-SHAPE.md.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
source tools/gpu/ncu_setup.sh
status=0
for s in ${@:-smollm2-135m llama2-7b}; do
  layers=$(case $s in smollm2-135m) echo 30;; llama2-7b) echo 32;; *) echo 2;; esac)
  # The first prefill and the decode steps after it: at most 12 launches a layer in the
  # prefill (9-10 now: 4 GEMM launches, the norms that write the next product's operands,
  # RoPE + append, the attention, SwiGLU, FP8 low halves where --split-lo fp8) and 6 in a
  # decode step (5 now: the norms in the products' prologues, the residual adds in their
  # epilogues, RoPE and the KV append in the decode attention), so that the count takes in
  # the prefill and at least two whole steps whatever the launches' exact number;
  # decode_breakdown.py uses the steps that end where the next one starts. Kernels run at
  # load count too: with --split-lo fp8 (7B's default) each FP8 weight copy takes an absmax
  # and a quantize launch, 10 a layer (session 22's first run of this count lost the 7B
  # prefill's last layers to them).
  count=$(( 12 * layers + (5 + 12 * layers) + 3 * (5 + 6 * layers) ))
  "$G" bench -m synthetic:$s --backend gpu --prompt-len 512 --gen 128 --reps 1 --json > /tmp/prof-$s.json 2>/dev/null
  "$NCU" --graph-profiling node --csv --page raw -c $count \
    --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum \
    "$G" bench -m synthetic:$s --backend gpu --prompt-len 512 --gen 4 --reps 1 > /tmp/prof-$s.csv 2> /tmp/prof-$s.log ||
    { tail -n 20 /tmp/prof-$s.log; status=1; continue; }
  xz -c /tmp/prof-$s.csv > "$OUT/profile-$s.csv.xz"
  python3 tools/gpu/decode_breakdown.py /tmp/prof-$s.csv $s /tmp/prof-$s.json | tee "$OUT/profile-$s.md" || status=1
done
exit $status
