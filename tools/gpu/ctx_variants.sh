#!/usr/bin/env bash
# Decode of both synthetic shapes with the KV cache sized to CTX positions (default 4096,
# `greta generate`'s default) for each kernel_variants.sh variant, one round: the decode
# attention's grid follows the cache's capacity, which the default bench (cache = prompt +
# gen) does not show. Run after kernel_variants.sh (it unpacks the variants' binaries; a
# variant without greta.xz runs target/device/greta).
# Usage (GPU machine): OUT=dir CTX=4096 [VARIANTS='main active'] tools/gpu/ctx_variants.sh
# (VARIANTS: a subset of target/carry/v/ by name; default all)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} CTX=${CTX:-4096} && mkdir -p "$OUT"
echo "| variant | 7B decode tok/s (ctx $CTX) | SmolLM2 decode tok/s (ctx $CTX) |" | tee $OUT/ctx-variants.md
echo "|---|---|---|" | tee -a $OUT/ctx-variants.md
for d in target/carry/v/*/; do
  v=$(basename $d); G=/tmp/greta-$v
  [ -z "${VARIANTS:-}" ] || [[ " $VARIANTS " == *" $v "* ]] || continue
  # A variant of kernels alone (no greta.xz) runs the main build's binary, as in kernel_variants.sh.
  if [ ! -f $d/greta.xz ]; then G=./target/device/greta
  elif [ ! -x $G ]; then bash tools/gpu/unxz.sh $d/greta.xz $G; fi
  row="| $v"
  for s in llama2-7b smollm2-135m; do
    j=$OUT/ctx-$v-$s.json
    GRETA_KERNELS_DIR=$PWD/$d $G bench -m synthetic:$s --backend gpu --prompt-len 512 --gen 64 --reps 3 --ctx $CTX --json > $j 2>/dev/null
    row="$row | $(python3 -c "import json; print('%.1f' % json.load(open('$j'))['decode_tok_s'])" 2>/dev/null || echo failed)"
  done
  echo "$row |" | tee -a $OUT/ctx-variants.md
done
