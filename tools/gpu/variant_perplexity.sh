#!/usr/bin/env bash
# On the GPU machine: `greta perplexity --backend gpu --kl` (the GPU route's next-token
# distributions against the CPU reference, over the repository's LICENSE) for main and each
# variant, on the random SmolLM2 shape (head_dim 64) and the 7B shape's first 2 layers
# (head_dim 128). It runs the untraced path, where `audit backend` (every stage observed)
# runs the traced one: a variant that changes only the untraced prefill (session 35's RoPE
# in the attention) is checked end to end against the reference here.
# Usage (GPU machine, after kernel_variants.sh or fill_variants.sh):
#   OUT=dir [VARIANTS="main a b"] [CTX=256] tools/gpu/variant_perplexity.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
[ -d target/device/kernels ] || bash tools/gpu/unpack_carry.sh
bash tools/gpu/fill_variants.sh
[ -d /tmp/smollm2-random ] || python3 tools/gpu/make_random_llama.py smollm2-135m /tmp/smollm2-random > /dev/null 2>&1
[ -d /tmp/llama2-random ] || python3 tools/gpu/make_random_llama.py llama2-7b-2layers /tmp/llama2-random > /dev/null 2>&1
for v in ${VARIANTS:-main $(ls target/carry/v | grep -vx main)}; do
  d=target/carry/v/$v G=./target/device/greta K=$PWD/target/device/kernels
  [ -f $d/greta.xz ] && { bash tools/gpu/unxz.sh $d/greta.xz /tmp/greta-$v; G=/tmp/greta-$v; }
  [ -d $d/sm_90a ] && K=$PWD/$d
  for m in smollm2-random llama2-random; do
    f=$OUT/ppl-$v-$m.json
    GRETA_KERNELS_DIR=$K $G perplexity --backend gpu --kl -m /tmp/$m -f LICENSE --ctx ${CTX:-256} --json > $f 2> $f.log
    echo "$v $m: exit $? $(cat $f)"
  done
done
