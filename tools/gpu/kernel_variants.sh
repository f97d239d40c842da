#!/usr/bin/env bash
# Prefill and decode of both synthetic shapes for several kernel builds in one call, so that
# variants compare on one card in one run: each target/carry/v/NAME/ holds sm_90a/*.cubin
# (and greta.xz when the variant needs another binary; otherwise target/device/greta).
# Build the variants here: tools/gpu/build_variant.sh REV NAME builds a branch or commit
# (its greta.xz and cubins), tools/gpu/kernel_variant.sh NAME [PATCH ...] [-- FLAG ...] the
# kernels alone (and their resource usage against main's, regs.txt, printed below); carry
# target/carry (tools/gpu/unpack_carry.sh unpacks the main build).
# Prefill cells show the host's issue time beside the wall time where the build reports it
# (greta bench's prefill_host_ms). ROUNDS (default 2) and GEN (generated tokens, default 64)
# shorten a call whose question is the prefill.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
bash tools/gpu/unpack_carry.sh
cat target/carry/v/*/regs.txt 2>/dev/null | tee $OUT/regs.txt
echo "| variant | 7B prefill-512 ms | 7B decode tok/s | SmolLM2 prefill-512 ms | SmolLM2 decode tok/s |" | tee $OUT/variants.md
echo "|---|---|---|---|---|" | tee -a $OUT/variants.md
for round in $(seq ${ROUNDS:-2}); do
  for d in target/carry/v/*/; do
    v=$(basename $d); G=./target/device/greta
    if [ -f $d/greta.xz ]; then
      python3 -c "import lzma, shutil; shutil.copyfileobj(lzma.open('$d/greta.xz'), open('/tmp/greta-$v', 'wb'))"
      chmod +x /tmp/greta-$v; G=/tmp/greta-$v
    fi
    row="| $v (round $round)"
    for s in llama2-7b smollm2-135m; do
      j=$OUT/$v-$s-$round.json
      GRETA_KERNELS_DIR=$PWD/$d $G bench -m synthetic:$s --backend gpu --prompt-len 512 --gen ${GEN:-64} --reps 5 --json > $j 2>/dev/null
      row="$row | $(python3 -c "import json; d=json.load(open('$j')); h=d.get('prefill_host_ms'); print('%.2f%s | %.1f' % (d['prefill_ms'], ' (host %.2f)' % h if h else '', d['decode_tok_s']))")"
    done
    echo "$row |" | tee -a $OUT/variants.md
  done
done
