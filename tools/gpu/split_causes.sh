#!/usr/bin/env bash
# Why a shape's decode speed is not monotonic in the attention's split count (SmolLM2,
# session 19: 2460 tok/s at 1 split, 2140-2220 at 2-4, 2415 at 5, 1970 at 9). Four
# split_sweep.sh sweeps in one call, each against the first:
#   base     as the bench runs (overlapped launches, captured graph, prompt 128 s - 100);
#   overlap  --overlap off: if the dips go, they come from how launches overlap;
#   back70   prompt 128 s - 70: the same split counts over other buffer sizes and
#            addresses; if the dips move or go, placement;
#   noattn   the decode attention left out (--skip-kernels): every other kernel's work
#            does not depend on the position, so a dip that stays is not the attention's.
# Usage (GPU machine, after tools/gpu/unpack_carry.sh): OUT=dir [SHAPES=smollm2-135m]
#   [SPLITS="1 .. 9"] [REPS=2] tools/gpu/split_causes.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
export SHAPES=${SHAPES:-smollm2-135m}
skip=attn_decode_rope_split_hd64,attn_decode_split_hd64,attn_decode_rope_split_hd128,attn_decode_split_hd128
OUT=$OUT/base tools/gpu/split_sweep.sh > /dev/null
OUT=$OUT/overlap ARGS="--overlap off" tools/gpu/split_sweep.sh > /dev/null
OUT=$OUT/back70 BACK=70 tools/gpu/split_sweep.sh > /dev/null
OUT=$OUT/noattn ARGS="--skip-kernels $skip" tools/gpu/split_sweep.sh > /dev/null
python3 - "$OUT" $SHAPES <<'PY' | tee "$OUT/split-causes.md"
import json, os, sys
out, shapes = sys.argv[1], sys.argv[2:]
runs = ["base", "overlap", "back70", "noattn"]
print("| shape | splits | " + " | ".join(f"{r} tok/s" for r in runs) + " |")
print("|---|---|" + "---|" * len(runs))
for shape in shapes:
    for s in range(1, 17):
        cells = []
        for r in runs:
            f = os.path.join(out, r, f"sweep-{shape}-{s}.json")
            try:
                cells.append("%.1f" % json.load(open(f))["decode_tok_s"])
            except (OSError, ValueError, KeyError):
                cells.append("-")
        if any(c != "-" for c in cells):
            print(f"| {shape} | {s} | " + " | ".join(cells) + " |")
PY
