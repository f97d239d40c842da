#!/usr/bin/env bash
# A/B of the prefill's split path against an earlier build carried beside this one
# (target/carry/old/{greta.xz, kernels/}): greta bench prefill on both synthetic shapes with
# each build's default policy, then Nsight Compute's durations of the split and GEMM kernels
# of SmolLM2's first prefill layer for both. Carry target/carry (tools/gpu/unpack_carry.sh).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)}
bash tools/gpu/unpack_carry.sh
mkdir -p target/old
python3 -c "import lzma, shutil; shutil.copyfileobj(lzma.open('target/carry/old/greta.xz'), open('target/old/greta', 'wb'))"
chmod +x target/old/greta
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
for build in new old; do
  if [ $build = new ]; then G=./target/device/greta K=$PWD/target/device/kernels; else G=./target/old/greta K=$PWD/target/carry/old/kernels; fi
  for s in smollm2-135m llama2-7b; do
    GRETA_KERNELS_DIR=$K $G bench -m synthetic:$s --backend gpu --prompt-len 512 --gen 8 --reps 5 --json > $OUT/ab-$build-$s.json 2>/dev/null
    python3 -c "import json; d=json.load(open('$OUT/ab-$build-$s.json')); print('$build $s prefill ms', ['%.2f' % x for x in d['all_prefill_ms']])"
  done
  if [ -n "$NCU" ]; then
    GRETA_KERNELS_DIR=$K "$NCU" --section SpeedOfLight -k regex:'split_f16|gemm_f16' -c 14 \
      $G bench -m synthetic:smollm2-135m --backend gpu --prompt-len 512 --gen 2 --reps 1 2>&1 |
      grep -E "^\s+[a-z_0-9]+ \(|Duration" | sed -E 's/\s+/ /g' | paste - - > $OUT/ncu-$build.txt
    echo "## ncu $build"; cat $OUT/ncu-$build.txt
  fi
done
