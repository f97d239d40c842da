#!/usr/bin/env bash
# The occupancy calculator and `greta bench --kernels`' waves in one call (session 41 landed
# them without a GPU): hiprt's runtime tests (the calculator on sm_90's limits), the op test
# that every 128-row warpgroup tile holds one block a multiprocessor, then the kernels each
# benchmark shape launches with their waves, at PROMPTS (default "512 650") rows. Carry
# target/carry's greta.xz, hiprt-gpu.xz, gpu-ops.xz and kernels.txz. Session 41's expected
# 7B figures: Q/K/V 2.00 / 3.00 waves, output and down 0.97 / 1.00, gate/up 3.00 / 3.91.
PARTS_DEFAULT="tests waves"
source "$(dirname "$0")/parts.sh"
if part tests; then
  step hiprt-gpu ./target/device/hiprt-gpu --ignored --test-threads=1 || status=1
  step gpu-ops-occupancy ./target/device/gpu-ops --ignored --test-threads=1 --nocapture launched || status=1
fi
if part waves; then
  for shape in ${SHAPES:-llama2-7b smollm2-135m}; do
    for p in ${PROMPTS:-512 650}; do
      STEP_TAIL="30 4" step "kernels-$shape-$p" $G bench -m synthetic:$shape --backend gpu \
        --prompt-len $p --gen 8 --reps 1 --kernels || status=1
      $G bench -m synthetic:$shape --backend gpu --prompt-len $p --gen 8 --reps 1 --kernels --json \
        > "$R/kernels-$shape-$p.json" 2>/dev/null || status=1
    done
  done
fi
tar czf /tmp/0-waves.tgz -C "$OUT" results && mv /tmp/0-waves.tgz "$OUT/0-waves.tgz"
echo "status $status"
exit $status
