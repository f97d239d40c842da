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
export GRETA_KERNELS_DIR=$PWD/target/device/kernels
G=$PWD/target/device/greta
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
[ -n "$NCU" ] || { echo "no ncu on this machine"; exit 1; }
status=0
for s in ${@:-smollm2-135m llama2-7b}; do
  layers=$(case $s in smollm2-135m) echo 30;; llama2-7b) echo 32;; *) echo 2;; esac)
  # The first prefill (2 + 9 per layer + 3 launches on Hopper: 4 GEMM launches (Q/K/V and
  # gate/up grouped), 2 add + norm that also write the next product's f16 operands, RoPE +
  # append, the attention that also writes the output product's operands, SwiGLU with
  # down's operands)
  # and the first two decode steps (2 + 5 per layer + 3 each: the norms ride in the
  # products' prologues, the residual adds in their epilogues, RoPE and the KV append in the
  # decode attention).
  count=$(( (2 + 9 * layers + 3) + 2 * (2 + 5 * layers + 3) ))
  "$G" bench -m synthetic:$s --backend gpu --prompt-len 512 --gen 128 --reps 1 --json > /tmp/prof-$s.json 2>/dev/null
  "$NCU" --graph-profiling node --csv --page raw -c $count \
    --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum \
    "$G" bench -m synthetic:$s --backend gpu --prompt-len 512 --gen 4 --reps 1 > /tmp/prof-$s.csv 2> /tmp/prof-$s.log ||
    { tail -n 20 /tmp/prof-$s.log; status=1; continue; }
  python3 tools/gpu/decode_breakdown.py /tmp/prof-$s.csv $s /tmp/prof-$s.json | tee "$OUT/profile-$s.md" || status=1
done
exit $status
