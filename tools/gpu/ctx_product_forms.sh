#!/usr/bin/env bash
# Session 62: forms of the split combine in the output product (`--ctx-combine`,
# kernels/decode_splits.h; patches of it under tools/gpu/variants), each a variant build
# (tools/gpu/build_variant.sh: target/carry/v/NAME with its greta and sm_90a objects),
# against one another and against the attention's own combine, interleaved in one call:
# SmolLM2's decode at one split (prompt 28) and five (540, the bench's), 64 tokens.
# Usage (GPU machine, carry target/carry/v/NAME...): OUT=dir VARIANTS="a b" [ROUNDS="1 2 3"]
#   bash tools/gpu/ctx_product_forms.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
export GRETA_REQUIRE_GPU=1
for v in $VARIANTS; do bash tools/gpu/unxz.sh "target/carry/v/$v/greta.xz" "/tmp/greta-$v"; done
for r in ${ROUNDS:-1 2 3}; do
  for p in 28 540; do
    for v in $VARIANTS; do
      for c in attention product; do
        GRETA_KERNELS_DIR=$PWD/target/carry/v/$v /tmp/greta-$v bench -m synthetic:smollm2-135m \
          --backend gpu --prompt-len $p --gen 64 --reps 3 --json --ctx-combine $c \
          > "$OUT/$v-$c-$p-$r.json" 2> "$OUT/$v-$c-$p-$r.err" || tail -n 3 "$OUT/$v-$c-$p-$r.err"
      done
    done
  done
done
python3 - "$OUT" $VARIANTS <<'PY'
import glob, json, os, sys
out, variants = sys.argv[1], sys.argv[2:]
print("| variant | combine | 1 split (28): tok/s each round | 5 splits (540): tok/s each round |")
print("|---|---|---|---|")
for v in variants:
    for c in ["attention", "product"]:
        cells = []
        for p in ["28", "540"]:
            xs = []
            for f in sorted(glob.glob(f"{out}/{v}-{c}-{p}-*.json")):
                try:
                    d = json.load(open(f)); d = d[0] if isinstance(d, list) else d
                    xs.append(f"{d['decode_tok_s']:.1f}")
                except Exception:
                    xs.append("failed")
            cells.append(" / ".join(xs))
        print(f"| {v} | {c} | {cells[0]} | {cells[1]} |")
PY
