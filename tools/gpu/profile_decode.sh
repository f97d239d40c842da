#!/usr/bin/env bash
# Per-kernel time of one decode step, from an Nsight Systems trace of `greta bench` (decode
# as a captured graph, traced node by node): which stage takes the time, and at what
# fraction of the copy bandwidth its bytes move. Usage on the GPU machine:
#   OUT=dir bash tools/gpu/profile_decode.sh [shape ...]   (default: smollm2-135m llama2-7b)
# Prints one table per shape (tools/gpu/decode_breakdown.py) and writes OUT/profile-SHAPE.md.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)}
export GRETA_KERNELS_DIR=$PWD/target/device/kernels
G=$PWD/target/device/greta
NSYS=$(command -v nsys || ls /usr/local/cuda*/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -1)
[ -n "$NSYS" ] || { echo "no nsys on this machine"; exit 1; }
status=0
for shape in "${@:-smollm2-135m llama2-7b}"; do
  for s in $shape; do
    rm -f /tmp/prof-$s.*
    "$NSYS" profile -o /tmp/prof-$s --force-overwrite true --trace cuda --cuda-graph-trace node \
      "$G" bench -m synthetic:$s --backend gpu --prompt-len 512 --gen 64 --reps 1 --json \
      > /tmp/prof-$s.json 2> /tmp/prof-$s.log || { tail -n 20 /tmp/prof-$s.log; status=1; continue; }
    "$NSYS" stats --quiet --report cuda_gpu_trace --format csv --output /tmp/prof-$s /tmp/prof-$s.nsys-rep > /dev/null 2>&1
    csv=$(ls /tmp/prof-$s*cuda_gpu_trace*.csv 2>/dev/null | head -1)
    [ -n "$csv" ] || { echo "$s: no cuda_gpu_trace csv"; status=1; continue; }
    python3 tools/gpu/decode_breakdown.py "$csv" "$s" /tmp/prof-$s.json | tee "$OUT/profile-$s.md" || status=1
  done
done
exit $status
