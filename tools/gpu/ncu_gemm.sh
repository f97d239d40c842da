#!/usr/bin/env bash
# Where the prefill GEMM's time goes, under Nsight Compute: speed of light (SM, L2, DRAM
# throughput against peak), the memory and compute workload tables and the warp stall
# reasons of layer 0's four wgmma launches on the Llama-2-7B shape (Q/K/V, output, gate/up,
# down). The question it answers: is the GEMM bound by the tensor pipes, by L2 -> shared
# memory traffic (which TMA multicast within a cluster would halve), or by latency.
# Usage on the GPU machine: OUT=dir bash tools/gpu/ncu_gemm.sh (full report in
# OUT/0-ncu-gemm$TAG.txt, a summary printed). GPU_ARGS: options for greta (e.g. --split-lo
# fp8, whose lo8 kernels the regex also takes); TAG: a suffix for the report.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
source tools/gpu/ncu_setup.sh
"$NCU" --graph-profiling node -k regex:gemm_f16_wgmma -c 4 --section SpeedOfLight \
  --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section WarpStateStats \
  --section Occupancy "$G" bench -m synthetic:llama2-7b --backend gpu ${GPU_ARGS:-} --prompt-len 512 --gen 2 --reps 1 \
  > "$OUT/0-ncu-gemm${TAG:-}.txt" 2>&1
status=$?
grep -E "^\s+gemm_f16_wgmma|Duration|Throughput|Busy|Pipe|Stall|Warp Cycles|Hit Rate|Achieved Occupancy|Issued Ipc|Mem Busy|Max Bandwidth" \
  "$OUT/0-ncu-gemm${TAG:-}.txt" | sed -E 's/\s+/ /g' | head -n ${LINES_MAX:-120}
exit $status
