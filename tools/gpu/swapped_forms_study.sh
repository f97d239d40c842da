#!/usr/bin/env bash
# Which swapped forms pay (session 53): the 7B prefill at LENS (default 520,576,640,650,800)
# under the default numerics, ROUNDS rounds (default 2) of: A, every swapped tile off
# (`--swapped-tiles off`); B, output and down only; C, B and Q/K/V into the caches; D, B and
# gate/up with SwiGLU; E, all (this build). B, C and D are study builds of greta
# (target/carry/v/greta-{B,C,D}.xz: the fused choosers given no swapped tile) on this build's
# kernels. Carry target/carry.
PARTS_DEFAULT="study"
source "$(dirname "$0")/parts.sh"
LENS=${LENS:-520,576,640,650,800}
for v in B C D; do
  python3 -c "
import lzma, shutil, os
with lzma.open('target/carry/v/greta-$v.xz') as f, open('/tmp/greta-$v', 'wb') as o: shutil.copyfileobj(f, o)
os.chmod('/tmp/greta-$v', 0o755)"
done
for round in $(seq 1 "${ROUNDS:-2}"); do
  for v in A B C D E; do
    bin=$G sw=()
    case $v in A) sw=(--swapped-tiles off);; B|C|D) bin=/tmp/greta-$v;; esac
    STEP_TAIL="0 2" step "study-$v-$round" $bin bench -m synthetic:llama2-7b --backend gpu --prompt-len "$LENS" \
      --gen 1 --reps "${REPS:-3}" "${sw[@]}" --json || status=1
  done
done
python3 - "$R" "${ROUNDS:-2}" <<'PY'
import json, sys
r, rounds = sys.argv[1], int(sys.argv[2])
runs = {(v, i): json.load(open(f"{r}/study-{v}-{i}.out")) for v in "ABCDE" for i in range(1, rounds + 1)}
print("prompt  " + "  ".join(f"{v}: ms each round" for v in "ABCDE"))
for j, a in enumerate(runs[("A", 1)]):
    n = a["spec"]["prompt_len"]
    print(f"{n:6d}  " + "  ".join(v + " " + " ".join(f"{runs[(v, i)][j]['prefill_ms']:6.2f}" for i in range(1, rounds + 1)) for v in "ABCDE"))
PY
echo "status $status"
exit $status
