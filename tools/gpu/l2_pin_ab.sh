#!/usr/bin/env bash
# Session 63: the LM head kept partly in L2 between decode steps (`--l2-pin`, on a build with
# tools/gpu/variants/l2-pin-head.patch applied: measured slower and not kept). One call: the
# op and model tests that hold a pinned head to the unpinned bits (and the op tests not yet
# run on a GPU), then the decode at the bench's 512 + 128 with several set-asides,
# interleaved over rounds (SmolLM2: its 56.6 MB head is ~5 % of a step's time; the 7B's
# 262 MB head, whose layers are bound by bandwidth, with ROUNDS_7B), and SmolLM2 after 16
# tokens (one split: the head's share of the step is larger there).
# Usage (GPU machine, carry target/carry built from the patched tree): OUT=dir
#   [ROUNDS="1 2 3"] [PINS="off head:16 ..."] [ROUNDS_7B="1"] [OPS=all|pin]
#   bash tools/gpu/l2_pin_ab.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
bash tools/gpu/unpack_carry.sh > /dev/null
export GRETA_KERNELS_DIR=$PWD/target/device/kernels GRETA_REQUIRE_GPU=1
G=./target/device/greta
status=0
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
echo "== op tests $(date +%T)"
filter=""
[ "${OPS:-all}" = pin ] && filter="kept_in_l2 decode_attention_with_rope"
./target/device/gpu-ops --ignored --test-threads=1 --nocapture $filter > "$OUT/ops.txt" 2>&1 || status=1
grep -E "test result|panicked|L2Pin" "$OUT/ops.txt" | head -12
echo "== model test: the head kept in L2 $(date +%T)"
(cd crates/greta-model && ../../target/device/gpu-model --ignored --test-threads=1 --nocapture \
  kept_in_l2 > "$OUT/model.txt" 2>&1) || status=1
grep -E "test result|panicked|L2Pin" "$OUT/model.txt" | head -6
bench() { # NAME SHAPE PROMPT PIN
  $G bench -m synthetic:$2 --backend gpu --prompt-len $3 --gen 128 --reps 3 --json --l2-pin $4 \
    > "$OUT/$1.json" 2> "$OUT/$1.err" || { status=1; tail -n 3 "$OUT/$1.err"; }
}
PINS=${PINS:-off head:8 head:16 head:24 head:32 head}
echo "== SmolLM2 decode by pin $(date +%T)"
for r in ${ROUNDS:-1 2 3}; do
  for p in $PINS; do bench "smollm2-512-${p/:/-}-$r" smollm2-135m 512 $p; done
done
for p in off head; do bench "smollm2-16-${p/:/-}-1" smollm2-135m 16 $p; done
for r in ${ROUNDS_7B:-1}; do
  for p in off head; do bench "llama2-7b-512-${p/:/-}-$r" llama2-7b 512 $p; done
done
grep -h "l2-pin" "$OUT"/*.err | sort -u
python3 - "$OUT" <<'PY'
import glob, json, os, re, sys
out = sys.argv[1]
rows = {}
for f in sorted(glob.glob(f"{out}/*.json")):
    m = re.match(r"(.+)-(\d+)-(.+)-(\d+)\.json", os.path.basename(f))
    if not m:
        continue
    shape, prompt, pin, r = m.groups()
    try:
        d = json.load(open(f))
    except ValueError:
        continue
    rows.setdefault((shape, int(prompt), pin), []).append((int(r), d["decode_tok_s"], d["prefill_ms"]))
print("| shape | prompt | --l2-pin | decode tok/s (each round) | µs/token (mean) | prefill ms |")
print("|---|---|---|---|---|---|")
for (shape, prompt, pin), v in sorted(rows.items()):
    v.sort()
    toks = [t for _, t, _ in v]
    us = sum(1e6 / t for t in toks) / len(toks)
    print(f"| {shape} | {prompt} | {pin.replace('-', ':')} | {' / '.join(f'{t:.1f}' for t in toks)} | {us:.1f} | {' / '.join(f'{p:.2f}' for _, _, p in v)} |")
PY
echo "== end $(date +%T) status $status"
exit $status
