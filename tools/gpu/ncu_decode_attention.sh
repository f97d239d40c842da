#!/usr/bin/env bash
# Nsight Compute's detail sections for one decode step's attention (the one-launch RoPE +
# append + split attention) and its neighbours on both synthetic shapes: where the
# attention's time goes (memory throughput, occupancy, warp stalls), which the in-place
# skip study cannot say. The 41st launch of each kernel (a decode step's: prefill uses other
# kernels; for the output/down products, a layer's output product). Kernels are serialised
# and caches flushed by ncu: cold-cache figures.
# Usage on the GPU machine: OUT=dir [G=greta KDIR=kernels] bash tools/gpu/ncu_decode_attention.sh
# (default: target/device's build; G and KDIR name another, e.g. a kernel_variants.sh variant)
# K: the kernels (regexes), default the attention, the output/down and the Q/K/V products;
# SHAPES the synthetic shapes; PROMPT the prompt length (default 512: 5 splits of 128 keys;
# e.g. 284 for 3, where SmolLM2 decodes ~10 % slower: docs/performance.md, session 19).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
G_ARG=${G:-}
source tools/gpu/ncu_setup.sh
export GRETA_KERNELS_DIR=${KDIR:-$GRETA_KERNELS_DIR}
G=${G_ARG:-$G}
status=0
for s in ${SHAPES:-smollm2-135m llama2-7b}; do
  for k in ${K:-attn_decode_rope_split gemv_add_f16 gemv3_norm_f16}; do
    "$NCU" --graph-profiling node -k regex:"$k" --launch-skip 40 -c 1 \
      --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy \
      --section LaunchStats --section WarpStateStats --section SchedulerStats \
      "$G" bench -m synthetic:$s --backend gpu --prompt-len ${PROMPT:-512} --gen 8 --reps 1 \
      > "$OUT/ncu-$s-$k-${PROMPT:-512}.txt" 2>&1 || status=1
    grep -E "^\s+[a-z_0-9]+ \(|Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Registers Per|Stall|Warp Cycles Per Issued|Eligible Warps|No Eligible|Block Limit" "$OUT/ncu-$s-$k-${PROMPT:-512}.txt" |
      sed -E 's/\s+/ /g' | head -30
  done
done
exit $status
