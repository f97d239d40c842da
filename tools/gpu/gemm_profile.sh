#!/usr/bin/env bash
# The prefill GEMM under Nsight Compute, beside cuBLAS's, for the question of where greta's
# 0.82x of cuBLAS goes: each kernel's launch shape (grid, block, cluster, registers, shared
# memory: cuBLAS's tile choice), its speed of light, the tensor pipe's active cycles,
# shared-memory and L2 traffic and the warp stall reasons.
# Profiles cuBLAS's four 7B products at 512 rows (tools/gpu/cublas_gemms.py --once) and times
# them with CUDA events (cublas_gemms.py: the products' sum over 32 layers, the bound session
# 23 put on the 7B prefill), then layer 0's four wgmma launches of greta's 7B prefill for
# main's build (target/device) and each variant in target/carry/v that holds kernels
# (VARIANTS: names, default every one), in each numerics form of FORMS (default "none auto":
# `--split-inputs none`, the hi products alone, cuBLAS's work; and the default, FP8 low
# halves for qkv, o, down). Metrics this ncu lacks are left out, and the list used is printed.
# Knobs: BASELINE=0 skips cuBLAS and main's build (the variants alone), CUBLAS=0 cuBLAS alone;
# COUNT (default 4) the wgmma launches profiled from layer 0's first (5: a build that fuses
# gate/up with SwiGLU has four products a layer, main's FP8-lo gate/up five); SECTIONS adds ncu
# sections (e.g. "MemoryWorkloadAnalysis ComputeWorkloadAnalysis WarpStateStats": what the
# former ncu_gemm.sh printed); CLOCKS (default none: the boost clocks cuBLAS's event timings
# run at; "base" locks them as ncu does by default); GPU_ARGS adds greta options to every
# form (e.g. --split-lo f16).
# Usage on the GPU machine: OUT=dir bash tools/gpu/gemm_profile.sh (carry target/carry);
# the reports go to OUT/gemm-profile.tar.xz, a summary to stdout. It replaces ncu_gemm.sh and
# gemm_vs_cublas.sh (sessions 16-23), which profiled the same four launches.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
source tools/gpu/ncu_setup.sh
bash tools/gpu/fill_variants.sh
R=$(mktemp -d)/gemm-profile && mkdir -p "$R"
"$NCU" --query-metrics > "$R/metrics.txt" 2>&1
have() { grep -qE "^$1\b" "$R/metrics.txt"; }
M=""
add() { have "$1" && M="$M${M:+,}$1$2"; }
add sm__pipe_tensor_op_gmma_cycles_active .avg.pct_of_peak_sustained_active
add sm__pipe_tensor_op_hmma_cycles_active .avg.pct_of_peak_sustained_active
add l1tex__data_pipe_lsu_wavefronts_mem_shared .sum.pct_of_peak_sustained_elapsed
add l1tex__data_bank_reads .avg.pct_of_peak_sustained_elapsed
add l1tex__data_bank_writes .avg.pct_of_peak_sustained_elapsed
add lts__t_sectors .avg.pct_of_peak_sustained_elapsed
add sm__cycles_active .avg
for s in $(grep -oE "^smsp__average_warps_issue_stalled_[a-z_]+_per_issue_active" "$R/metrics.txt" | sort -u); do
  M="$M,$s.ratio"
done
echo "metrics: $M"
NC=("$NCU" --clock-control "${CLOCKS:-none}" --section LaunchStats --section SpeedOfLight --section Occupancy --metrics "$M")
for sec in ${SECTIONS:-}; do NC+=(--section "$sec"); done
summary() {
  grep -E "^\s+[a-z_0-9]+.*\(|Duration|Compute \(SM\) Throughput|Memory Throughput|Grid Size|Block Size|Cluster Size|Registers Per|Dynamic Shared|gmma_cycles|hmma_cycles|wavefronts_mem_shared|bank_(reads|writes)|lts__t_sectors|cycles_active.avg |stalled_(barrier|long_scoreboard|wait|math_pipe|sleeping|mio|lg_throttle|short_scoreboard|dispatch|no_instruction|selected|not_selected|membar|branch|misc|drain|tex|imc)" "$1" |
    sed -E 's/\s+/ /g; s/_per_issue_active.ratio//; s/smsp__average_warps_issue_//'
  # The added sections' rows (those ncu_gemm.sh printed).
  [ -z "${SECTIONS:-}" ] || grep -E "Busy|Pipe|Warp Cycles|Hit Rate|Achieved Occupancy|Issued Ipc|Max Bandwidth" "$1" | sed -E 's/\s+/ /g'
}
status=0
if [ "${BASELINE:-1}" = 1 ] && [ "${CUBLAS:-1}" = 1 ]; then
  echo "== cuBLAS (torch $(python3 -c 'import torch; print(torch.__version__)'))"
  "${NC[@]}" -k regex:'nvjet|gemm|xmma|cutlass|sm90' python3 tools/gpu/cublas_gemms.py 512 --once > "$R/cublas.txt" 2>&1 || status=1
  summary "$R/cublas.txt"
  echo "== cuBLAS products timed (CUDA events, boost clocks)"
  python3 tools/gpu/cublas_gemms.py 512 --json "$R/cublas.json" 2>&1 | tee "$R/cublas-times.txt" || status=1
fi
run_greta() { # name kernels-dir [greta args]
  local name=$1 dir=$2 bin=$G
  shift 2
  [ -f "$dir/greta.xz" ] && bin=/tmp/greta-$name && bash tools/gpu/unxz.sh "$dir/greta.xz" "$bin"
  GRETA_KERNELS_DIR=$dir "${NC[@]}" --graph-profiling node -k regex:gemm_f16_wgmma -c "${COUNT:-4}" \
    "$bin" bench -m synthetic:llama2-7b --backend gpu ${GPU_ARGS:-} "$@" --prompt-len 512 --gen 2 --reps 1 > "$R/$name.txt" 2>&1 || status=1
  echo "== greta $name: $*"
  summary "$R/$name.txt"
}
forms() { # name kernels-dir: one profile per numerics form
  for f in ${FORMS:-none auto}; do
    case $f in
      none) run_greta "$1-none" "$2" --split-inputs none ;;
      auto) run_greta "$1-auto" "$2" ;;
      *) echo "FORMS: unknown form '$f' (accepted: none, auto)"; status=1 ;;
    esac
  done
}
[ "${BASELINE:-1}" = 1 ] && forms main $PWD/target/device/kernels
for v in ${VARIANTS:-$(ls target/carry/v 2> /dev/null)}; do
  d=$PWD/target/carry/v/$v
  [ -d "$d/sm_90a" ] || continue
  forms "$v" "$d"
done
tar -C "$(dirname "$R")" -cJf "$OUT/gemm-profile.tar.xz" gemm-profile
exit $status
