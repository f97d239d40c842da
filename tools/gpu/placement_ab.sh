#!/usr/bin/env bash
# Session 63: does SmolLM2's graph decode depend on where the process's buffers land? The
# peer runs' "peers' numerics" row (`--split-inputs none`) decodes faster than the default
# row in both peer runs since session 62's split combine (2536 against 2491, session 63;
# 2519 against 2488, session 62; level in sessions 48 and 60),
# though decode runs the same kernels on the same values either way: what differs is the
# FP8 copies of the weights (`--split-lo auto`), made at load, which move every buffer
# allocated after them (the decode state). One process per run, the configurations
# interleaved over rounds: the default, `--split-lo f16` (no FP8 copies, default split),
# `--split-inputs none`; with OFFSETS=1, FP8 copies of some products only (`--split-lo
# fp8:LIST`), which puts the state 10 to 135 MB further on (SmolLM2: o 10, qkv 16.6, down
# 26.5, gate_up 53, all 135), to say whether the decode follows the offset or chance.
# Usage (GPU machine, carry target/carry): OUT=dir [ROUNDS="1 2 3 4"] [SHAPE=smollm2-135m]
#   [OFFSETS=1] [BINS="main NAME .."] [CONFIGS="default lo-f16 .."] bash tools/gpu/placement_ab.sh
# BINS: greta builds to run each configuration with: main (target/device/greta) and variants
# carried as target/carry/v/NAME/greta.xz (e.g. tools/gpu/variants/state-align-*.patch).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
[ -x target/device/greta ] || bash tools/gpu/unpack_carry.sh > /dev/null
export GRETA_KERNELS_DIR=$PWD/target/device/kernels
BINS=${BINS:-main}
for b in $BINS; do
  [ "$b" = main ] || bash tools/gpu/unxz.sh target/carry/v/$b/greta.xz /tmp/greta-$b
done
SHAPE=${SHAPE:-smollm2-135m}
status=0
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
CONFIGS=${CONFIGS:-"default lo-f16 inputs-none"}
[ -n "${OFFSETS:-}" ] && CONFIGS="lo-f16 fp8-o fp8-qkv fp8-down fp8-gate_up fp8-qkv,o,down default"
for r in ${ROUNDS:-1 2 3 4}; do
  for c in $CONFIGS; do
    case $c in
      default) args="" ;;
      lo-f16) args="--split-lo f16" ;;
      inputs-none) args="--split-inputs none" ;;
      fp8-*) args="--split-lo fp8:${c#fp8-}" ;;
    esac
    for b in $BINS; do
      G=./target/device/greta && [ "$b" = main ] || G=/tmp/greta-$b
      n=$c && [ "$b" = main ] || n=$b@$c
      $G bench -m synthetic:$SHAPE --backend gpu --prompt-len 512 --gen 128 --reps 3 --json $args \
        > "$OUT/$n-$r.json" 2> "$OUT/$n-$r.err" || { status=1; tail -n 3 "$OUT/$n-$r.err"; }
    done
  done
done
python3 - "$OUT" <<'PY'
import glob, json, os, sys
out = sys.argv[1]
print("| configuration | decode tok/s, one process a round (median of its 3) | device in use GB |")
print("|---|---|---|")
configs = []
for f in sorted(glob.glob(f"{out}/*-1.json")):
    configs.append(os.path.basename(f)[:-len("-1.json")])
for c in configs:
    toks, used = [], set()
    for f in sorted(glob.glob(f"{out}/{c}-*.json")):
        try:
            d = json.load(open(f))
        except ValueError:
            continue
        toks.append(d["decode_tok_s"]); used.add(round(d["device_used_bytes"] / 1e9, 2))
    print(f"| {c} | {' / '.join(f'{t:.1f}' for t in toks)} | {', '.join(map(str, sorted(used)))} |")
PY
exit $status
