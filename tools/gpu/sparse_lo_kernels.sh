#!/usr/bin/env bash
# Where the sparse policy's time goes, kernel by kernel (session 50; docs/sparse-lo.md): under
# each of POLICIES, Nsight Compute on layer 1's SwiGLU GEMM of the 7B prefill-512 (duration,
# throughputs and its warp-stall sites: tools/gpu/stall_sites.sh) and on layer 1's FFN norm
# (duration and traffic: tools/gpu/ncu_in_place.sh), the two kernels `+sparse:gate_up`
# changes. Carry target/carry (the build to measure as its main one).
# Usage (GPU machine): OUT=dir [POLICIES="fp8 fp8+sparse:gate_up"] bash tools/gpu/sparse_lo_kernels.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
status=0
for p in ${POLICIES:-fp8 fp8+sparse:gate_up}; do
  t=$(echo "$p" | tr '+:,' '___')
  echo "######## $p: SwiGLU GEMM, layer 1"
  OUT=$OUT/$t KERNEL='swiglu' SKIP=1 GPU_ARGS="--split-lo $p" TAG=swiglu bash tools/gpu/stall_sites.sh > "$OUT/$t-swiglu.txt" 2>&1 || status=1
  grep -E "Duration|SM Frequency|Compute \(SM\) Throughput|Memory Throughput|L2 Cache Throughput|Registers Per|Dynamic Shared|%  |samples" "$OUT/$t-swiglu.txt" | head -36
  echo "######## $p: FFN norm, layer 1"
  KERNEL='add_rmsnorm_split' SKIP=3 GPU_ARGS="--split-lo $p" bash tools/gpu/ncu_in_place.sh 2>&1 | tail -8 || status=1
done
exit $status
