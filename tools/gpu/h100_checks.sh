#!/usr/bin/env bash
# Every GPU check of the project, in one run on the GPU machine (it keeps nothing: results go
# to $OUT). Build first, here: tools/gpu/build_for_device.sh; carry target/device, or the
# compressed target/carry (unpacked here first: session 13 lost a call's checks to a carry
# that no script unpacked).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
if [ -f target/carry/greta.xz ]; then bash tools/gpu/unpack_carry.sh; fi
[ -x target/device/greta ] || { echo "no target/device/greta: carry target/device or target/carry" >&2; exit 2; }
export GRETA_KERNELS_DIR=$PWD/target/device/kernels GRETA_REQUIRE_GPU=1
# The llama.cpp peer builds in the background (its own session, so it outlives this call on a
# warm machine) while the checks below run; tools/gpu/peer_bench.sh waits for it.
if [ -f target/peer/llama-cpp-src.tar.xz ]; then
  setsid nohup bash tools/gpu/build_llama_cpp.sh > /dev/null 2>&1 < /dev/null &
fi
# Parts of the default model carried with this call (tools/gpu/default_model_checks.sh).
mkdir -p /tmp/dm && for p in target/dm*/dmpart* target/dm*/dmx*; do [ -f "$p" ] && cp "$p" /tmp/dm/; done
G=./target/device/greta
TINY=crates/greta-model/tests/fixtures/tiny
status=0
# SKIP: names of parts to leave out (a short call), each reported as skipped.
run() { local name=$1; shift; if [[ " ${SKIP:-} " == *" $name "* ]]; then echo "== $name: skipped (SKIP)"; return; fi; echo "== $name"; "$@" > "$OUT/$name.txt" 2>&1; local rc=$?; tail -n 25 "$OUT/$name.txt"; echo "== $name: exit $rc"; [ $rc -eq 0 ] || status=1; }
run gpu nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
run greta-info $G info
run hiprt-gpu ./target/device/hiprt-gpu --ignored --test-threads=1 --nocapture
run gpu-ops ./target/device/gpu-ops --ignored --test-threads=1 --nocapture
# The model test binary reads its fixtures relative to the source tree it was built in.
run gpu-model env -C crates/greta-model ../../target/device/gpu-model --ignored --test-threads=1 --nocapture
# Backend audits: every stage of every position, GPU against the CPU reference.
audits() {
  for v in mha-tied-theta1e4 gqa-untied-theta5e5 gqa4-llama3-rope; do
    for m in $TINY/$v/model-f16.gguf $TINY/$v; do
      echo "## $m"; $G audit backend --against cpu -m "$m" ${TOL:+--tol $TOL} | tail -n 3
    done
  done
}
run audit-tiny audits
# A fault planted in the GPU route is named first, at its layer and point.
planted() {
  # decode@: at decode positions only, through the fused routes' reruns (k_rope: the
  # one-launch RoPE + attention's; attn_ctx: the output product with the residual add).
  for inj in 0:q_rope:add=0.5 1:attn_out:scale=1.01 1:ffn_act:nan -:logits:add=1 \
    decode@1:attn_ctx:add=0.5 decode@0:k_rope:add=0.5; do
    $G audit backend --against cpu -m $TINY/gqa4-llama3-rope/model-f16.gguf --inject "$inj" --json > /tmp/planted.json
    rc=$?
    python3 - "$inj" "$rc" <<'PY' || return 1
import json, sys
inj, rc = sys.argv[1], int(sys.argv[2])
d = json.load(open("/tmp/planted.json"))["first_divergence"]
layer, point, _ = inj.split("@")[-1].split(":")
got = (d["layer"], d["point"])
want = (None if layer == "-" else int(layer), point)
print(f"{inj}: exit {rc}, first divergence {got}")
sys.exit(0 if rc == 1 and got == want else 1)
PY
  done
}
run planted-faults planted
python3 tools/gpu/make_random_llama.py smollm2-135m /tmp/smollm2-random > /dev/null 2>&1
python3 tools/gpu/make_random_llama.py llama2-7b-2layers /tmp/llama2-random > /dev/null 2>&1
run audit-smollm2-shape $G audit backend --against cpu -m /tmp/smollm2-random ${TOL:+--tol $TOL} --json
run audit-llama2-shape $G audit backend --against cpu -m /tmp/llama2-random ${TOL:+--tol $TOL} --json
# N repetitions of one sentence (~18 tokens each).
sentences() { python3 -c "print(' '.join(['The history of science is the study of how people came to understand the natural world.'] * $1))"; }
# A prompt long enough (~650 tokens; the audit decodes its second half) that every decode
# position runs at 3-6 splits of context, combined in a cluster: the audits above stay within
# one split (their prompts are under 128 tokens).
LONG=$(sentences 36)
run audit-smollm2-long $G audit backend --against cpu -m /tmp/smollm2-random --prompt "$LONG" ${TOL:+--tol $TOL}
# The 7B shape's prefill at that length (~325 tokens) takes the 128-row wgmma tiles (the
# short audits' prompts take the 64 x 64 one; the op tests check every tile): under the
# default's FP8 low halves (session 30: every product split) the LO8 128 x 128 forms, and
# under `--split-inputs none` or `--split-lo f16` the wide ones, gate/up's SwiGLU tile
# 128 x 256 there and 128 x 224 at ~450 tokens (a ~900-token prompt; wgmma_tile and
# wgmma_swiglu_tile in gpu/gemm/tiles.rs).
run audit-llama2-long $G audit backend --against cpu -m /tmp/llama2-random --prompt "$LONG" ${TOL:+--tol $TOL}
LONGER=$(sentences 50)
run audit-llama2-longer $G audit backend --against cpu -m /tmp/llama2-random --prompt "$LONGER" ${TOL:+--tol $TOL}
# The same faults in the GPU route and the reference (--inject-reference): passes only if
# every launch that consumed a stage an observer changed (the f16 operands made by the norm,
# the prefill attention and SwiGLU ahead of the products) is rerun from the change.
faults_both() {
  for m in /tmp/smollm2-random /tmp/llama2-random; do
    echo "## $m"
    $G audit backend --against cpu -m $m --inject-reference --inject 1:attn_norm:add=0.5 \
      --inject 1:attn_ctx:add=0.5 --inject 1:ffn_norm:add=0.5 --inject 1:ffn_act:add=0.5 | tail -n 2 || return 1
  done
}
run audit-faults-in-both faults_both
# The default-like shape end to end: greedy and sampled generation on the GPU, graph and eager.
run generate-smollm2-shape sh -c "$G generate --backend gpu -m /tmp/smollm2-random --no-chat --temperature 0 -n 128 'The quick brown fox' && $G generate --backend gpu --no-graph -m /tmp/smollm2-random --no-chat --temperature 0 -n 128 'The quick brown fox' && $G generate --backend gpu -m /tmp/smollm2-random --no-chat --seed 3 -n 64 'The quick brown fox' && $G generate --backend gpu --no-graph -m /tmp/smollm2-random --no-chat --seed 3 -n 64 'The quick brown fox'"
# Logits against Hugging Face transformers on this GPU (random MHA/GQA, tied/untied checkpoints).
run hf-gpu-parity env OUT=$OUT GRETA=$G python3 tools/gpu/hf_gpu_parity.py
# Its state: done (what build_llama_cpp.sh wrote), running, or never started (session 34's
# call printed "running" for a build whose source was not carried).
if [ -f /tmp/llama-cpp/done ]; then lc=$(cat /tmp/llama-cpp/done)
elif [ -f target/peer/llama-cpp-src.tar.xz ]; then lc=running
else lc="not started (target/peer/llama-cpp-src.tar.xz not carried)"; fi
echo "== llama.cpp build: $lc"
# At most 8 files come back from a device call, first by name: every output in one bundle
# whose name sorts first (session 15 lost call 1's failing test message to that limit).
tar czf /tmp/0-checks.tgz -C "$OUT" . && mv /tmp/0-checks.tgz "$OUT/0-checks.tgz"
exit $status
