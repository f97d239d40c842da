#!/usr/bin/env bash
# A session's first GPU call (session 49): the carried build's own tests first (hiprt's
# runtime tests, the op tests, the model tests: host code changed since the last GPU run has
# run nowhere else), the launch-path bench where a build of it was carried
# (target/carry/bench/NAME.xz, tools/gpu/launch_bench.sh), the 7B shape's device memory at a
# full 4096-position cache, and the warp-stall sites of one kernel under Nsight Compute
# (default: layer 0's prefill attention of the 7B under the default numerics; KERNEL, SKIP,
# GPU_ARGS as tools/gpu/stall_sites.sh takes them). Carry target/carry.
# Usage (GPU machine): OUT=dir [PARTS="tests launch memory stalls"] bash tools/gpu/session_start_checks.sh
PARTS_DEFAULT="tests launch memory stalls"
source "$(dirname "$0")/parts.sh"
if part tests; then
  step hiprt-gpu ./target/device/hiprt-gpu --ignored --test-threads=1 || status=1
  step gpu-ops ./target/device/gpu-ops --ignored --test-threads=1 || status=1
  step gpu-model env -C crates/greta-model ../../target/device/gpu-model --ignored --test-threads=1 || status=1
fi
if part launch && [ -d target/carry/bench ]; then
  STEP_TAIL="40 4" step launch-bench env OUT=$OUT/launch ROUNDS=${ROUNDS:-2} bash tools/gpu/launch_bench.sh || status=1
fi
if part memory; then
  # A prompt filling the cache but for the generated tokens: the most state a 4096 run holds.
  STEP_TAIL="0 3" step memory-7b-4096 $G bench -m synthetic:llama2-7b --backend gpu --ctx 4096 --prompt-len 4064 \
    --gen 16 --reps 1 --json || status=1
  python3 -c "import json, sys; b = json.load(open(sys.argv[1])); print({k: v for k, v in b.items() if 'byte' in k or k.endswith('_ms')})" \
    "$R/memory-7b-4096.out"
fi
if part stalls; then
  STEP_TAIL="60 6" step stalls env OUT=$OUT/stalls KERNEL="${KERNEL:-^attn_prefill_fa_128\$}" SKIP="${SKIP:-0}" \
    GPU_ARGS="${GPU_ARGS:-}" TAG=attention bash tools/gpu/stall_sites.sh || status=1
fi
exit $status
