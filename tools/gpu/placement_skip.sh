#!/usr/bin/env bash
# Session 63: which decode kernel pays for a slow placement of the state. SmolLM2's decode
# reads ~1.7 % slower with the default's FP8 weight copies allocated before the state than
# without them (`--split-lo f16`), on the same kernels and values (placement_ab.sh): the
# skip study (each kernel left out of the graph in turn) under both, interleaved over
# rounds, says which kernel's in-place cost carries the difference.
# Usage (GPU machine, carry target/carry): OUT=dir [ROUNDS="1 2"] bash tools/gpu/placement_skip.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
[ -x target/device/greta ] || bash tools/gpu/unpack_carry.sh > /dev/null
export GRETA_KERNELS_DIR=$PWD/target/device/kernels
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
# Session 62's decode kernels at 5 splits: the normed Q/K/V product, the attention leaving
# partials, the output product combining them, the down product, gate/up, the LM head, the
# final norm, the embedding.
export SETS="none gemv3_norm_f16 attn_decode_rope_partials_hd64 gemv_add_splits_f16 gemv_add_f16 gemv_gate_up_silu_norm_f16 gemv3_f16_r2 rmsnorm_f32 embed_f16"
for r in ${ROUNDS:-1 2}; do
  TAG=@default-r$r ARGS="" OUT=$OUT bash tools/gpu/skip_study.sh smollm2-135m > /dev/null
  TAG=@lo-f16-r$r ARGS="--split-lo f16" OUT=$OUT bash tools/gpu/skip_study.sh smollm2-135m > /dev/null
done
python3 - "$OUT" <<'PY'
import glob, json, os, re, sys
out = sys.argv[1]
us = {}  # (config, set) -> [µs/token per round]
for f in sorted(glob.glob(f"{out}/skip-smollm2-135m@*.json")):
    m = re.match(r"skip-smollm2-135m@(.+)-r(\d+)-(.+)\.json", os.path.basename(f))
    try:
        t = json.load(open(f))["decode_tok_s"]
    except (ValueError, KeyError):
        continue
    us.setdefault((m.group(1), m.group(3)), []).append(1e6 / t)
sets = sorted({s for _, s in us}, key=lambda s: (s != "none", s))
print("| left out | default µs/token (rounds) | saved | --split-lo f16 µs/token | saved | default - f16 |")
print("|---|---|---|---|---|---|")
base = {c: sum(us[(c, "none")]) / len(us[(c, "none")]) for c in ["default", "lo-f16"] if (c, "none") in us}
for s in sets:
    row = [s]
    mean = {}
    for c in ["default", "lo-f16"]:
        v = us.get((c, s), [])
        mean[c] = sum(v) / len(v) if v else float("nan")
        row.append(" / ".join(f"{x:.1f}" for x in v))
        row.append("" if s == "none" else f"{base.get(c, float('nan')) - mean[c]:.1f}")
    row.append(f"{mean['default'] - mean['lo-f16']:+.1f}")
    print("| " + " | ".join(row) + " |")
PY
