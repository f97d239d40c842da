#!/usr/bin/env bash
# The prefill flash attention's pipes under Nsight Compute, for main and variants: layer 0's
# attn_prefill_fa_128 of the 7B prefill (default numerics), its duration, issue and IPC
# figures and every pipe's utilisation (the raw page's *pipe*pct_of_peak* metrics), so that
# a per-SM limit the warp-state averages do not show (session 37: two blocks an SM ran the
# key tiles only ~20 % faster than one) can be named.
# Usage on the GPU machine: OUT=dir [VARIANTS="main split"] bash tools/gpu/ncu_fa_pipes.sh
# (carry target/carry; a variant is target/carry/v/NAME, tools/gpu/build_variant.sh).
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
for v in ${VARIANTS:-main}; do
  (
    [ "$v" != main ] && export VARIANT=$v
    source tools/gpu/ncu_setup.sh
    "$NCU" --clock-control none -k 'regex:^attn_prefill_fa_128$' --launch-skip 0 -c 1 \
      --section ComputeWorkloadAnalysis --section InstructionStats --section SpeedOfLight \
      --section MemoryWorkloadAnalysis --metrics regex:.*pipe.*pct_of_peak.* \
      -o "$OUT/pipes-$v" -f "$G" bench -m synthetic:llama2-7b --backend gpu --prompt-len 512 \
      --gen 2 --reps 1 > "$OUT/pipes-$v-run.txt" 2>&1 || { tail -5 "$OUT/pipes-$v-run.txt"; exit 1; }
    "$NCU" -i "$OUT/pipes-$v.ncu-rep" --page details 2>&1 | grep -vE "^\s*-+\s*$|^\s*$|^\s*(INF|OPT|WRN)" |
      sed -E 's/\s+/ /g' > "$OUT/pipes-$v.txt"
    "$NCU" -i "$OUT/pipes-$v.ncu-rep" --page raw --csv 2> /dev/null | python3 -c "
import csv, sys
r = list(csv.reader(sys.stdin))
h, v = r[0], r[2]
for i, k in enumerate(h):
    if 'pipe' in k and 'pct_of_peak' in k:
        print(k, v[i])
" > "$OUT/pipes-$v-raw.txt"
    echo "== $v"
    grep -iE "Duration|Issue Slots Busy|Executed Ipc|Issued Ipc|Shared Memory|Bank" "$OUT/pipes-$v.txt" | head -20
    sort -k2 -g -r "$OUT/pipes-$v-raw.txt" | head -14
  )
done
