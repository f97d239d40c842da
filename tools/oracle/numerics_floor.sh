#!/usr/bin/env bash
# What each of the GPU route's roundings costs the default model's next-token distributions,
# emulated on the CPU reference: `greta perplexity --kl` (KL from the plain CPU model on the
# project's LICENSE, chunks of 256, 1016 positions) under the GPU's activation roundings
# (--inject probes) and its f16 weights (--kl-model: the GGUF with every quantized tensor
# dequantized to f16 by gguf-py, tools/oracle/f16_weights_gguf.py). Session 33 set these
# beside the GPU's own figures (`greta perplexity --backend gpu --kl`, H200): the default
# read 4.011e-6 on the GPU and 4.004e-6 emulated, `none` 5.67e-6 and 5.41e-6.
# Usage (here, ~3 minutes on 2 cores; needs `pip install gguf`): tools/oracle/numerics_floor.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p greta-cli
G=./target/release/greta
M=${MODEL:-${GRETA_CACHE_DIR:-$HOME/.cache/greta}/SmolLM2-135M-Instruct.Q4_1.gguf}
[ -f "$M" ] || { echo "the default model is not at $M: run cargo xtask fetch-model"; exit 1; }
W=${TMPDIR:-/tmp}/smollm2-f16-weights.gguf
python3 tools/oracle/f16_weights_gguf.py "$M" "$W"
# The GPU's default numerics: every product's input as f16 hi + FP8 lo, the lo product
# against the weights' FP8 copy; `none`: each input one f16. Both: the f16 K/V cache, the
# flash attention's f16 probabilities and the LM head's f16 input.
SPLIT=(); NONE=()
for p in q k v attn_out ffn_gate ffn_up ffn_out; do
  SPLIT+=(--inject "*:$p:f16lo8w8in"); NONE+=(--inject "*:$p:f16in")
done
REST=(--inject "*:k_rope:f16" --inject "*:v:f16" --inject "*:attn_ctx:f16p" --inject "-:final_norm:f16")
row() {
  local name=$1; shift
  "$G" perplexity -m "$M" -f LICENSE --ctx 256 --json "$@" 2> /dev/null |
    NAME=$name python3 -c "import json, os, sys; d = json.load(sys.stdin); print('| %s | %.4f | %.3e | %.3e | %.2f %% |' % (os.environ['NAME'], d['ppl_probe'], d['kld_mean'], d['kld_max'], 100 * d['same_top1']))"
}
echo "| emulated rounding (CPU; reference perplexity 17.7348) | perplexity | KL mean (nats) | KL max | same top token |"
echo "|---|---|---|---|---|"
row "f16 weights alone" --kl-model "$W"
row "the products' inputs split, FP8 lo x FP8 weights" --kl "${SPLIT[@]}"
row "cache, probabilities, head input in f16" --kl "${REST[@]}"
row "GPU default: all of the above" --kl-model "$W" "${SPLIT[@]}" "${REST[@]}"
row "GPU none: f16 weights, inputs one f16, the rest" --kl-model "$W" "${NONE[@]}" "${REST[@]}"
row "calibration: a 1 % fault at one stage" --kl --inject "2:ffn_act:scale=1.01"
