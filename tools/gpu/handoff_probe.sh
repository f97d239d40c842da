#!/usr/bin/env bash
# Builds tools/gpu/probes/handoff_probe.cu with the GPU machine's nvcc and runs it: what a
# dependent launch costs through griddepcontrol.wait against a handoff through a counter
# (session 62). Usage (GPU machine): OUT=dir bash tools/gpu/handoff_probe.sh [N] [replays]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
NVCC=$(command -v nvcc || ls /usr/local/cuda*/bin/nvcc 2>/dev/null | head -1)
"$NVCC" -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a tools/gpu/probes/handoff_probe.cu -o /tmp/handoff_probe
/tmp/handoff_probe "$@" | tee "$OUT/handoff.md"
