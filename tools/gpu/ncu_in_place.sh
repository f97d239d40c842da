#!/usr/bin/env bash
# One kernel's DRAM and L2 traffic as it runs in the prefill, with Nsight Compute's cache
# control off (`--cache-control none`: the L2 holds what the kernels ahead left in it, not
# flushed as ncu does by default): does a kernel read its input from L2, where the kernel
# ahead just wrote it, or from DRAM. Session 28 asked it of the flash attention after the
# Q/K/V GEMM with RoPE in its epilogue (qkv-rope-epilogue.patch) against after `rope_qk_append`.
# Usage on the GPU machine (carry target/carry): KERNEL=regex [SKIP=launches to pass over, 2]
#   [VARIANT=name] [MODEL=synthetic shape, llama2-7b] [GPU_ARGS=bench flags] bash tools/gpu/ncu_in_place.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
source tools/gpu/ncu_setup.sh
[ -n "${KERNEL:-}" ] || { echo "KERNEL (a regex of kernel names) is required" >&2; exit 2; }
"$NCU" --cache-control none --clock-control none --graph-profiling node -k "regex:$KERNEL" \
  --launch-skip "${SKIP:-2}" -c 1 \
  --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,lts__t_sector_hit_rate.pct,lts__t_sectors_srcunit_tex_op_read.sum,lts__t_sectors_srcunit_tex_op_read_lookup_hit.sum \
  "$G" bench -m synthetic:${MODEL:-llama2-7b} --backend gpu ${GPU_ARGS:-} --prompt-len 512 --gen 2 --reps 1 2>&1 |
  grep -E "^\s+[a-z_0-9]+ \(|gpu__time|dram__bytes|lts__" | sed -E 's/\s+/ /g'
