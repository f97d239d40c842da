#!/usr/bin/env bash
# Would a 2:4-sparse FP8 low product pass greta's audit (session 49)? Hopper's sparse FP8
# wgmma runs at twice the dense FP8 rate, so a low half kept as its 2 largest of every 4
# values along K would halve the default numerics' lo products (~4.1 ms of the 7B's 12.5 ms
# floor at the issue's limits). This measures only the numerics, with the dense kernels:
# the variant built from tools/gpu/variants/sparse-lo-emulation.patch zeroes, in place, the
# 2 smallest of each 4 FP8 low halves of the products GRETA_SPARSE_LO names before they read
# them; `greta calibrate --all --no-save --try qkv,o,gate_up,down` then audits the default
# policy under each setting on the default model's first 10 layers (its four prompts) and on
# the random 7B shape (32 layers, 512 ids): worst stage as a fraction of the tolerance, the
# calibration's pass being <= 0.5. "-" is the emulation off (the variant is main's numerics).
# Carry target/carry with v/sparse (PACK=1 tools/gpu/build_variant.sh HEAD sparse
# tools/gpu/variants/sparse-lo-emulation.patch), kernels.txz and smollm2-10l.gguf.xz.
# Usage (GPU machine): OUT=dir [DM10="- all gate_up,down qkv,o"] [SEVEN="all gate_up,down"]
#   bash tools/gpu/sparse_lo_numerics.sh
PARTS_DEFAULT="dm10 7b"
source "$(dirname "$0")/parts.sh"
bash tools/gpu/fill_variants.sh
bash tools/gpu/unxz.sh target/carry/v/sparse/greta.xz /tmp/greta-sparse
K=$PWD/target/carry/v/sparse
calibrate() { # NAME SETTING MODEL
  local env=(GRETA_KERNELS_DIR=$K)
  [ "$2" != - ] && env+=(GRETA_SPARSE_LO=$2)
  STEP_TAIL="0 2" step "$1" env "${env[@]}" /tmp/greta-sparse calibrate -m "$3" --all --no-save \
    --try qkv,o,gate_up,down --json
  python3 - "$R/$1.out" "$2" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception as e:
    sys.exit(f"  no profile: {e}")
for r in d["rungs"]:
    print(f"  sparse lo on {sys.argv[2]}: {r['split_inputs']} ({r['split_lo']}): worst {r['worst_error']} at "
          f"{r['worst_at']}, {r['worst_fraction']} of the tolerance; {d.get('seconds', 0):.0f} s")
PY
}
if part dm10; then
  for s in ${DM10:-- all gate_up,down qkv,o}; do calibrate "dm10-${s//,/_}" "$s" target/dm10/smollm2-10l.gguf; done
fi
if part 7b; then
  for s in ${SEVEN:-all gate_up,down}; do calibrate "7b-${s//,/_}" "$s" synthetic:llama2-7b; done
fi
exit $status
