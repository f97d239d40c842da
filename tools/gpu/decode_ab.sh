#!/usr/bin/env bash
# A/B of the launch mode on one card, same binary, same run: greta bench with overlapped
# launches (the default: programmatic dependent launch on sm_90) and with --overlap off, for
# each shape, decode as a graph and eager. Usage on the GPU machine:
#   OUT=dir bash tools/gpu/decode_ab.sh [shape ...]   (default: smollm2-135m llama2-7b)
# Prints one table and writes OUT/decode-ab.md.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
export GRETA_KERNELS_DIR=$PWD/target/device/kernels
G=./target/device/greta
status=0
{
  echo "| shape | decode | launches | prefill-512 ms | decode tok/s | of copy |"
  echo "|---|---|---|---|---|---|"
  for s in ${@:-smollm2-135m llama2-7b}; do
    for graph in graph eager; do
      for ov in on off; do
        flags="--overlap $ov"
        [ $graph = eager ] && flags="$flags --no-graph"
        $G bench -m synthetic:$s --backend gpu --prompt-len 512 --gen 128 --reps 3 --json $flags \
          > /tmp/ab.json 2> /tmp/ab.log || { tail -n 5 /tmp/ab.log; status=1; continue; }
        python3 -c "
import json; d = json.load(open('/tmp/ab.json'))
print(f\"| $s | $graph | $ov | {d['prefill_ms']:.2f} | {d['decode_tok_s']:.1f} | {d['fraction_of_copy']:.3f} |\")"
      done
    done
  done
} | tee "$OUT/decode-ab.md"
exit $status
