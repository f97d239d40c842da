#!/usr/bin/env bash
# What each warpgroup GEMM tile costs in place (session 54): the 7B prefill at LEN rows
# (default 520) with one product's tile forced (`greta bench --gemm-tiles PRODUCT=TILE`),
# one process a run, against the chooser's own (`auto`, run again after every product's set
# so that drift under the power cap shows). The difference from auto is that product's cost
# on the forced tile against the chosen one: the data for a cost model of tiles' rates
# (the swapped tiles of 72-104 rows read more operand bytes a multiply-add than 128 x 224).
# The last lines: each run's fastest prefill against the fastest auto run's, and the auto
# runs' own spread (the noise floor). A tile without the launch's form is refused by the run
# (its line says so). PARTS: check
# (one run's launched GEMM kernels under forced tiles, by --kernels) tiles (default both).
# QKV, O, DOWN, GATE_UP: the tiles to try (defaults below); SPLIT: --split-inputs (default:
# the default numerics; "none" for the peers'); REPS (default 3).
# Carry target/carry (greta.xz, kernels.txz).
PARTS_DEFAULT="check tiles"
source "$(dirname "$0")/parts.sh"
LEN=${LEN:-520}
QKV=${QKV:-"128x192 128 t104 t136 t176"}
O=${O:-"128 t104 t136 t176 t256"}
DOWN=${DOWN:-"128 t104 t136 t176 t256"}
GATE_UP=${GATE_UP:-"128x224 128x256 t88 t104 t120"}
args=(bench -m synthetic:llama2-7b --backend gpu --prompt-len "$LEN" --gen 1 --reps "${REPS:-3}" --json)
[ -n "${SPLIT:-}" ] && args+=(--split-inputs "$SPLIT")
run() { # NAME [--gemm-tiles ...]: prints NAME and the prefill ms (its three prefills)
  local name=$1; shift
  if $G "${args[@]}" "$@" > "$R/$name.out" 2> "$R/$name.err"; then
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(f\"{sys.argv[2]:24s} {d['prefill_ms']:7.2f} ms  {' '.join('%.2f' % x for x in d['all_prefill_ms'])}\")" "$R/$name.out" "$name"
  else
    echo "$name: refused or failed: $(grep -m1 -i error "$R/$name.err" | cut -c1-200)"; status=1
  fi
}
if part check; then
  # The forced tiles are the ones launched: one run's GEMM kernels by `--kernels`.
  forced="qkv=t104,o=t176,down=128,gate_up=t120"
  $G bench -m synthetic:llama2-7b --backend gpu --prompt-len "$LEN" --gen 1 --reps 1 --kernels \
    --gemm-tiles "$forced" > "$R/check.out" 2> "$R/check.err" || { echo "check failed"; status=1; }
  echo "forced $forced: the GEMM kernels launched"
  grep -o 'gemm_f16_wgmma[a-z0-9_]*' "$R/check.out" | sort | uniq -c
fi
if part tiles; then
  run auto-0
  for product in qkv o down gate_up; do
    var=${product^^}
    for tile in ${!var}; do run "$product=$tile" --gemm-tiles "$product=$tile"; done
    run "auto-$product"
  done
  # Each run's fastest prefill against the fastest of the auto runs (session 55: at 800 rows
  # the auto runs' own firsts spread 1.7 ms, so a difference within that spread is none).
  python3 - "$R" <<'PY'
import glob, json, os, sys
best = {}
for f in sorted(glob.glob(sys.argv[1] + "/*.out")):
    name = os.path.basename(f)[:-4]
    try:
        best[name] = min(json.load(open(f))["all_prefill_ms"])
    except (ValueError, KeyError):
        pass
autos = [v for k, v in best.items() if k.startswith("auto-")]
if autos:
    a = min(autos)
    print(f"auto: fastest {a:.2f} ms, spread of the auto runs' fastest {max(autos) - a:.2f} ms")
    for k, v in best.items():
        if not k.startswith("auto-"):
            print(f"{k:24s} {v:7.2f} ms  {v - a:+.2f}")
PY
fi
tar czf /tmp/0-tc.tgz -C "$OUT" results && mv /tmp/0-tc.tgz "$OUT/0-tc.tgz"
echo "status $status"
exit $status
