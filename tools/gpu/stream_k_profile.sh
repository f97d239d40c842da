#!/usr/bin/env bash
# Stream-K against whole tiles under Nsight Compute (session 52): the 7B prefill's warpgroup
# GEMM launches of one layer (layer 2 of the warm-up prefill: SKIP launches passed over,
# default 8, then COUNT, default 4) at each prompt length of LENS (default "520 800") under
# each of SK (default "off auto"), with the L2 left as the kernels ahead left it and the
# clocks as the card runs them: each launch's time, grid, DRAM bytes read and L2 hit rate,
# and the SM clock. Session 52's sweep found --stream-k auto 9-21 % slower at 520-896 rows
# where only gate/up was shared; the question is whether the shared tiles' pieces, no
# longer in step along K, read the weights from DRAM several times over.
# Usage on the GPU machine (carry target/carry): bash tools/gpu/stream_k_profile.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
source tools/gpu/ncu_setup.sh
for len in ${LENS:-520 800}; do
  for sk in ${SK:-off auto}; do
    echo "## prompt $len, --stream-k $sk"
    "$NCU" --cache-control none --clock-control none -k regex:gemm_f16_wgmma \
      --launch-skip "${SKIP:-8}" -c "${COUNT:-4}" \
      --metrics gpu__time_duration.sum,launch__grid_size,dram__bytes_read.sum,lts__t_sector_hit_rate.pct,sm__cycles_elapsed.avg.per_second \
      "$G" bench -m synthetic:llama2-7b --backend gpu --prompt-len "$len" --gen 1 --reps 1 \
      --stream-k "$sk" 2>&1 |
      grep -E "^\s+[a-z_0-9]+ \(|gpu__time|launch__grid|dram__bytes|lts__|sm__cycles" | sed -E 's/\s+/ /g'
  done
done
