#!/usr/bin/env bash
# What 2:4-sparse FP8 low products would save in place (session 49), before any producer
# writes a compressed operand: the variant from tools/gpu/variants/sparse-lo-speed.patch runs
# the down product's and/or gate/up's low steps on `wgmma.mma_async.sp` where
# GRETA_SPARSE_LO_SPEED names them (reading the first half of each FP8 low row as the
# compressed operand under constant metadata: the values are wrong, the work and the bytes
# are the real form's but for the metadata's loads), and the bench times the prefill with
# each setting in turn, rounds interleaved, on one binary ("-": the dense low products,
# main's kernels). Carry target/carry with v/spspeed (PACK=1 tools/gpu/build_variant.sh HEAD
# spspeed tools/gpu/variants/sparse-lo-speed.patch) and kernels.txz.
# Usage (GPU machine): OUT=dir [ROUNDS=3] [SETTINGS="- gate_up,down down gate_up"]
#   [SHAPES="llama2-7b smollm2-135m"] bash tools/gpu/sparse_lo_speed.sh
PARTS_DEFAULT="speed"
source "$(dirname "$0")/parts.sh"
bash tools/gpu/fill_variants.sh
bash tools/gpu/unxz.sh target/carry/v/spspeed/greta.xz /tmp/greta-sp
K=$PWD/target/carry/v/spspeed
for round in $(seq 1 "${ROUNDS:-3}"); do
  for shape in ${SHAPES:-llama2-7b smollm2-135m}; do
    # Even rounds take the settings in reverse order: the card warms over a round (session
    # 49's first call: the later settings' prefills ran slower), so each setting is timed
    # both early and late.
    settings=(${SETTINGS:-- gate_up,down down gate_up})
    [ $((round % 2)) = 0 ] && settings=($(printf '%s\n' "${settings[@]}" | tac))
    for s in "${settings[@]}"; do
      env=(GRETA_KERNELS_DIR=$K)
      [ "$s" != - ] && env+=(GRETA_SPARSE_LO_SPEED=$s)
      name=$shape-${s//,/_}-$round
      STEP_TAIL="0 2" step "$name" env "${env[@]}" /tmp/greta-sp bench -m synthetic:$shape --backend gpu \
        --prompt-len 512 --gen 2 --reps 3 --json
      python3 -c "import json, sys; b = json.load(open(sys.argv[1])); print(f'  {sys.argv[2]:14s} sparse {sys.argv[3]:14s} prefill {b[\"prefill_ms\"]:.3f} ms {[round(x, 3) for x in b[\"all_prefill_ms\"]]}')" \
        "$R/$name.out" "$shape" "$s" || status=1
    done
  done
done
exit $status
