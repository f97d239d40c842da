#!/usr/bin/env bash
# Stream-K in the warpgroup GEMM (sessions 51-52, kernels/gemm.hip g_sk) in one call: the
# op tests as the model runs them (--stream-k off, the default: stream-K only in its own
# test), then with every warpgroup GEMM under auto and under always (GRETA_TEST_STREAM_K);
# the model tests; the 7B prefill across prompt lengths (LENS, default
# 512,520,576,640,650,800,896; REPS each) under --stream-k auto and off, one model load
# each; backend audits of the 2-layer 7B shape under each of AUDIT_SK (default off auto
# always). Carry target/carry: greta.xz, gpu-ops.xz, gpu-model.xz, kernels.txz.
# (Session 51's A/B of the whole-tile forms against session 50's GEMM objects is gone: a
# build's host loads every `_sk` form, which older objects lack.)
# PARTS: tests sweep audit (default all, in that order).
PARTS_DEFAULT="tests sweep audit"
source "$(dirname "$0")/parts.sh"
LENS=${LENS:-512,520,576,640,650,800,896}
if part tests; then
  STEP_TAIL="0 0" step ops ./target/device/gpu-ops --ignored --test-threads=1 --nocapture || status=1
  grep -E "test result|panicked" "$R/ops.err" "$R/ops.out" | head
  grep -E "^stream-K .* round 1, product 0" "$R/ops.err" | head -20
  for sk in auto always; do
    GRETA_TEST_STREAM_K=$sk STEP_TAIL="0 0" step "ops-$sk" ./target/device/gpu-ops --ignored --test-threads=1 --nocapture || status=1
    grep -E "test result|panicked" "$R/ops-$sk.err" "$R/ops-$sk.out" | head
  done
  (cd crates/greta-model && STEP_TAIL="0 0" step model ../../target/device/gpu-model --ignored --test-threads=1) || status=1
  grep -E "test result|panicked" "$R/model.out" "$R/model.err" | head
fi
if part sweep; then
  for sk in auto off; do
    STEP_TAIL="0 2" step "sweep-$sk" $G bench -m synthetic:llama2-7b --backend gpu --prompt-len "$LENS" --gen 1 \
      --reps "${REPS:-5}" --stream-k $sk --json || status=1
  done
  python3 - "$R/sweep-auto.out" "$R/sweep-off.out" <<'PY'
import json, sys
auto, off = (json.load(open(p)) for p in sys.argv[1:])
print("prompt  auto ms  off ms  auto/off  (auto: ms a token / 512's)")
base = auto[0]["prefill_ms"] / auto[0]["spec"]["prompt_len"]
for a, o in zip(auto, off):
    n = a["spec"]["prompt_len"]
    print(f"{n:6d} {a['prefill_ms']:8.2f} {o['prefill_ms']:7.2f} {a['prefill_ms'] / o['prefill_ms']:8.3f}"
          f"  {a['prefill_ms'] / n / base:.3f}   all auto {a['all_prefill_ms']}, off {o['all_prefill_ms']}")
PY
fi
if part audit; then
  # The 7B shape (2 layers, random) on ~650 tokens (the prefill audits the first half: ~325
  # rows, 3 row tiles): its products' tiles share under always (and under auto the
  # gate/up's 297 tiles of 128 x 224 on 132 blocks, 165 shared; Q/K/V's 198, all), checked
  # stage by stage against the CPU.
  python3 tools/gpu/make_random_llama.py llama2-7b-2layers /tmp/sk-model > /dev/null 2>&1
  LONG=$(python3 -c "print(' '.join(['The history of science is the study of how people came to understand the natural world.'] * 36))")
  for sk in ${AUDIT_SK:-off auto always}; do
    STEP_TAIL="3 2" step "audit-$sk" $G audit backend --against cpu -m /tmp/sk-model --prompt "$LONG" --stream-k $sk || status=1
  done
fi
tar czf /tmp/0-sk.tgz -C "$OUT" results && mv /tmp/0-sk.tgz "$OUT/0-sk.tgz"
echo "status $status"
exit $status
