#!/usr/bin/env bash
# Decode speed against the number of 128-key splits the decode attention runs at: for each
# split count s, a prompt of 128 s - 100 tokens and 64 generated tokens keep every decode
# position within s splits (positions 128 s - 100 .. 128 s - 37), so the step's time against
# s says what each split costs, and whether the step jumps where a layer's blocks (s x
# heads) pass the device's multiprocessors (7B: 32 heads, 5 splits = 160 blocks on an
# H200's 132) rather than growing with the keys read. s = 9 launches without clusters.
# Usage (GPU machine, after tools/gpu/unpack_carry.sh): OUT=dir [SPLITS="1 2 .."] [SHAPES=..]
#   [ARGS="--overlap off"] [BACK=100] tools/gpu/split_sweep.sh   (ARGS: more greta bench
#   flags, e.g. to ask whether SmolLM2's slow split counts come from the overlapped launches
#   or the graph; BACK: the prompt is 128 s - BACK tokens, 64..127 keeping the 64 decode
#   positions within s splits, so sweeps at two BACKs time the same split counts over
#   buffers of other sizes and addresses)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
G=${G:-./target/device/greta}
SPLITS=${SPLITS:-1 2 3 4 5 6 7 8 9}
for shape in ${SHAPES:-llama2-7b smollm2-135m}; do
  for s in $SPLITS; do
    $G bench -m synthetic:$shape --backend gpu --prompt-len $((128 * s - ${BACK:-100})) --gen 64 --reps ${REPS:-2} ${ARGS:-} --json \
      > "$OUT/sweep-$shape-$s.json" 2> "$OUT/sweep-$shape-$s.err" || tail -n 3 "$OUT/sweep-$shape-$s.err"
  done
done
python3 - "$OUT" ${BACK:-100} ${SHAPES:-llama2-7b smollm2-135m} <<'PY' | tee "$OUT/split-sweep.md"
import json, os, sys
out, back, shapes = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print("| shape | splits | prompt | decode tok/s | µs/token | µs/token more than one split fewer |")
print("|---|---|---|---|---|---|")
for shape in shapes:
    prev = None
    for s in range(1, 17):
        f = os.path.join(out, f"sweep-{shape}-{s}.json")
        if not os.path.exists(f):
            continue
        try:
            tok = json.load(open(f))["decode_tok_s"]
        except ValueError:
            print(f"| {shape} | {s} | {128 * s - back} | failed | | |")
            prev = None
            continue
        us = 1e6 / tok
        step = "" if prev is None else f"{us - prev:+.1f}"
        print(f"| {shape} | {s} | {128 * s - back} | {tok:.1f} | {us:.1f} | {step} |")
        prev = us
PY
