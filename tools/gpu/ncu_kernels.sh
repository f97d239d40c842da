#!/usr/bin/env bash
# Nsight Compute's speed-of-light figures (duration, DRAM and SM throughput as fractions of
# peak) for the kernels that take the time, on the Llama-2-7B shape: the prefill's GEMM and
# flash attention (layer 0's launches) and the decode step's products and attention.
# Usage on the GPU machine: bash tools/gpu/ncu_kernels.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
source tools/gpu/ncu_setup.sh
run() { # label, ncu filter args...
  local label=$1; shift
  echo "## $label"
  "$NCU" --graph-profiling node --section SpeedOfLight "$@" \
    "$G" bench -m synthetic:llama2-7b --backend gpu --prompt-len 512 --gen 8 --reps 1 2>&1 |
    grep -E "^\s+[a-z_0-9]+ \(|Duration|DRAM Throughput|Memory Throughput|L1/TEX Cache Throughput|L2 Cache Throughput|Compute \(SM\) Throughput" |
    sed -E 's/\s+/ /g'
}
run "prefill" -k regex:'gemm_f16_wgmma|attn_prefill|split_f16' -c 9
run "decode" -k regex:'gemv3_f16|gemv_gate_up_silu_f16|attn_decode|add_rmsnorm_f32|rope_qk_append_f16' --launch-skip 40 -c 12
