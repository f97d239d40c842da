#!/usr/bin/env bash
# Session 62: where the product combine's fixed ~2 µs a layer goes (session 61 measured the
# product form flat over the split count but ~59 µs a token slower at one split, where there
# is nothing to combine). On a build with `--ctx-combine` (main since session 62, or a
# variant of it: tools/gpu/build_variant.sh with TIMELINE=1 makes target/carry/v/NAME),
# SmolLM2's decode both ways at one split (prompt 28) and five (540):
#  1. each kernel's in-place cost (`--skip-kernels`, skip_study.sh's method: the time a token
#     saves with that kernel's launches left out; outputs are wrong), two interleaved rounds;
#  2. the launches on the critical path (timeline_study.sh: gap, early, late blocks, SMs);
#  3. where the warps of the attention (cluster form, five splits) and of the combining
#     product wait, instruction by instruction (stall_sites.sh: Nsight Compute's sampling of
#     one launch each, run alone, so no overlap: the kernels' own latency chains).
# Usage (GPU machine, carry target/carry/v/NAME): OUT=dir [V=product] bash tools/gpu/ctx_combine_diag.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
V=target/carry/v/${V:-product}
# Where stall_sites.sh (ncu_setup.sh) looks for greta and its kernels.
mkdir -p target/device && rm -rf target/device/kernels && mkdir -p target/device/kernels
bash tools/gpu/unxz.sh "$V/greta.xz" target/device/greta
cp -r "$V/sm_90a" target/device/kernels/
G=./target/device/greta
export GRETA_KERNELS_DIR=$PWD/target/device/kernels GRETA_REQUIRE_GPU=1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
declare -A SKIPS=(
  [attention]="none attn_decode_rope_split_hd64 gemv_add_f16 gemv3_norm_f16 gemv_gate_up_silu_norm_f16"
  [product]="none attn_decode_rope_partials_hd64 gemv_add_splits_f16 gemv_add_f16 gemv3_norm_f16 gemv_gate_up_silu_norm_f16"
)
mkdir -p "$OUT/skip"
for round in 1 2; do
  for p in 540 28; do
    for c in attention product; do
      for s in ${SKIPS[$c]}; do
        skip=$([ "$s" = none ] || echo "--skip-kernels $s")
        f="$OUT/skip/$c-$p-$s-$round"
        $G bench -m synthetic:smollm2-135m --backend gpu --prompt-len $p --gen 64 --reps 3 --json \
          --ctx-combine $c $skip > "$f.json" 2> "$f.err" || tail -n 3 "$f.err"
      done
    done
  done
done
python3 - "$OUT/skip" <<'PY' | tee "$OUT/skip.md"
import glob, json, os, statistics, sys
d = sys.argv[1]
us = {}
for f in glob.glob(d + "/*.json"):
    c, p, s, r = os.path.basename(f)[:-5].split("-")
    try:
        j = json.load(open(f)); j = j[0] if isinstance(j, list) else j
        us.setdefault((c, p, s), []).append(1e6 / j["decode_tok_s"])
    except Exception:
        pass
print("| splits (prompt) | combine | left out | µs/token (rounds) | saved µs/token | saved µs a layer |")
print("|---|---|---|---|---|---|")
for p, n in [("28", 1), ("540", 5)]:
    for c in ["attention", "product"]:
        base = statistics.mean(us.get((c, p, "none"), [float("nan")]))
        for (cc, pp, s), v in sorted(us.items(), key=lambda kv: (kv[0][2] != "none", kv[0][2])):
            if cc != c or pp != p:
                continue
            m = statistics.mean(v)
            saved = "" if s == "none" else f"{base - m:.1f}"
            per = "" if s == "none" else f"{(base - m) / 30:.2f}"
            print(f"| {n} ({p}) | {c} | {s} | {' / '.join(f'{x:.1f}' for x in v)} | {saved} | {per} |")
PY
if [ -d "$V/timeline/sm_90a" ]; then
  for c in attention product; do
    echo "== timeline, --ctx-combine $c"
    OUT=$OUT/timeline G=$G KERNELS=$V/timeline RUNS="smollm2-135m:1 smollm2-135m:5" ARGS="--ctx-combine $c" \
      TAG=-$c LAUNCHES=12 bash tools/gpu/timeline_study.sh
  done
fi
echo "== where the warps wait (Nsight Compute, one launch each, layer 0 at 512 positions: 5 splits)"
for k in "attn attention ^attn_decode_rope_split_hd64\$" "partials product ^attn_decode_rope_partials_hd64\$" \
         "splits product ^gemv_add_splits_f16\$" "output attention ^gemv_add_f16\$"; do
  read -r tag c re <<< "$k"
  echo "-- $tag"
  OUT=$OUT/ncu KERNEL=$re SKIP=0 MODEL=smollm2-135m GPU_ARGS="--ctx-combine $c" TAG=$tag \
    bash tools/gpu/stall_sites.sh 2>&1 | grep -E "Duration|Registers|samples|^ *[0-9.]+ %|by what" | head -24
  rm -f "$OUT/ncu/$tag.ncu-rep" "$OUT/ncu/$tag-sass.csv"
done
# At most 8 files come back from a call: everything in one bundle whose name sorts first.
tar czf /tmp/0-diag.tgz -C "$OUT" . && mv /tmp/0-diag.tgz "$OUT/0-diag.tgz"
