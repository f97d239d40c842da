#!/usr/bin/env bash
# Which products' inputs the audit needs split, product by product, and what each policy
# costs (session 39): `greta calibrate --all` with a ladder of one's own (--try each of
# RUNGS) on the random Llama-2-7B shape at its 32 layers and on the default model's first
# 10 layers, then `greta bench` prefill-512 under each policy on both benchmark shapes,
# ROUNDS rounds alternating. The calibration's verdicts are the audit's (worst stage / the
# 8e-3 rms tolerance; chosen at 0.5 or under); session 30 measured the per-product verdicts
# of the default model's first 10 layers (only every product split passed), nobody the 7B's
# at full depth.
# Carry target/carry with greta.xz, gpu-model.xz, kernels.txz and smollm2-10l.gguf.xz.
# PARTS (default: tests cal7b caldm10 bench); RUNGS (space-separated policies); ROUNDS (2);
# DEADLINE: seconds after which the benches left are skipped (said in the summary), so that
# what ran comes back within a call's limit (default 500); LENS: the 7B calibration's prompt
# lengths in random ids (default 512, the bench's; session 40: how the verdicts move with
# the prompt, the margin's question).
PARTS_DEFAULT="tests cal7b caldm10 bench"
STEP_TAIL="4 16"
source "$(dirname "$0")/parts.sh"
RUNGS=${RUNGS:-none o qkv down kv q o,down qkv,o qkv,o,down gate_up qkv,o,gate_up,down}
ROUNDS=${ROUNDS:-2}
DEADLINE=${DEADLINE:-500}
TRY=(); for r in $RUNGS; do TRY+=(--try "$r"); done
if part tests; then
  step gpu-model env -C crates/greta-model ../../target/device/gpu-model --ignored --test-threads=1 calibrat || status=1
fi
if part cal7b; then
  TIME=""; [ -x /usr/bin/time ] && TIME="/usr/bin/time -v"
  # exit 1 (no rung chosen) is a finding, not a failure of the script
  for len in ${LENS:-512}; do
    name=calibrate-7b; [ "$len" = 512 ] || name=calibrate-7b-$len
    step $name $TIME $G calibrate -m synthetic:llama2-7b --prompt-len $len --all --no-save --json "${TRY[@]}"
    [ $? -le 1 ] || status=1
  done
fi
if part caldm10; then
  step calibrate-dm10 $G calibrate -m target/dm10/smollm2-10l.gguf --all --no-save --json "${TRY[@]}"
  [ $? -le 1 ] || status=1
fi
part bench && for round in $(seq 1 $ROUNDS); do
  for shape in llama2-7b smollm2-135m; do
    for r in $RUNGS; do
      [ $SECONDS -lt $DEADLINE ] || { echo "skipped: bench $shape $r round $round (past ${DEADLINE} s)" | tee -a $R/skipped.txt; continue; }
      step bench-$shape-$r-$round $G bench -m synthetic:$shape --backend gpu --split-inputs $r --json || status=1
    done
  done
done
python3 tools/gpu/calibrate_summary.py $R | tee $R/summary.md
python3 - $R <<'PY' | tee -a $R/summary.md
import json, sys, glob, os, re, collections
r = sys.argv[1]
ms = collections.defaultdict(list)
for f in sorted(glob.glob(r + "/bench-*.out")):
    m = re.match(r"bench-(llama2-7b|smollm2-135m)-(.+)-(\d+)\.out", os.path.basename(f))
    try:
        d = json.load(open(f))
        ms[(m.group(1), m.group(2))].append(d["prefill_ms"])
    except Exception as e:
        ms[(m.group(1), m.group(2))].append(float("nan"))
print("\n| policy | 7B prefill-512 ms (rounds) | SmolLM2 prefill-512 ms (rounds) |\n|---|---|---|")
for p in dict.fromkeys(k[1] for k in ms):
    f = lambda s: " / ".join(f"{x:.2f}" for x in ms.get((s, p), []))
    print(f"| {p} | {f('llama2-7b')} | {f('smollm2-135m')} |")
PY
[ -f $R/skipped.txt ] && cat $R/skipped.txt | tee -a $R/summary.md
tar czf /tmp/0-ladder.tgz -C "$OUT" results && mv /tmp/0-ladder.tgz "$OUT/0-ladder.tgz"
echo "status $status"
exit $status
