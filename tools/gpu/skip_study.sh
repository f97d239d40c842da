#!/usr/bin/env bash
# What each decode kernel costs where it stands in the captured graph: greta bench with the
# launches of one kernel left out (`--skip-kernels`, a timing study: outputs are wrong), so
# the time per token it saves is the kernel's work plus its place in the chain of dependent
# launches. Nsight Compute times kernels alone with cold caches (profile_decode.sh) and
# cannot say this; there is no nsys on the GPU machine.
# Usage (GPU machine, after tools/gpu/unpack_carry.sh): OUT=dir [ARGS="more bench flags"]
#   [TAG=@name: appended to the shape in files and tables, to run it again under other ARGS]
#   [SETS="none K1,K2 .."] tools/gpu/skip_study.sh [shape...]
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
G=${G:-./target/device/greta}
# The decode step's kernels (session 8: the norms ride in gemv3_norm_f16 and
# gemv_gate_up_silu_norm_f16, the residual adds in gemv_add_f16; session 9: RoPE and the KV
# append in the attention, one kernel per head_dim: 64 for SmolLM2, 128 for Llama-2-7B;
# session 62: at 2-8 splits SmolLM2's attention leaves partials, `attn_decode_rope_partials_hd64`,
# which the output product `gemv_add_splits_f16` combines); a comma joins kernels left out
# together. The partials form cannot be left out (unwritten partials give NaN logits, and
# the run stops at the pick): time SmolLM2's attention with ARGS="--ctx-combine attention".
SETS=${SETS:-"none gemv3_norm_f16,gemv3_norm_f16_r2 attn_decode_rope_split_hd64,attn_decode_rope_split_hd128 gemv_add_f16,gemv_add_f16_pre2,gemv_add_splits_f16 gemv_gate_up_silu_norm_f16"}
for s in ${@:-smollm2-135m llama2-7b}; do
  for set in $SETS; do
    skip=$([ "$set" = none ] || echo "--skip-kernels $set")
    f=$OUT/skip-$s${TAG:-}-${set//,/+}
    $G bench -m synthetic:$s --backend gpu --prompt-len 512 --gen 64 --reps 3 --json $skip ${ARGS:-} \
      > "$f.json" 2>"$f.err" || tail -3 "$f.err"
  done
done
python3 - "$OUT" $(for s in ${@:-smollm2-135m llama2-7b}; do echo "$s${TAG:-}"; done) <<'PY' | tee "$OUT/skip-study${TAG:-}.md"
import json, os, sys
out, shapes = sys.argv[1], sys.argv[2:]
layers = {"smollm2-135m": 30, "llama2-7b": 32, "llama3.2-1b": 16}
print("| shape | left out | decode tok/s | µs/token | saved µs/token | saved µs per layer |")
print("|---|---|---|---|---|---|")
for s in shapes:
    runs = {}  # name -> µs per token, or None where the run failed
    for f in os.listdir(out):
        if f.startswith(f"skip-{s}-") and f.endswith(".json"):
            try:
                runs[f[len(f"skip-{s}-"):-5]] = 1e6 / json.load(open(os.path.join(out, f)))["decode_tok_s"]
            except ValueError:
                runs[f[len(f"skip-{s}-"):-5]] = None
    base = runs.get("none")
    for name in sorted(runs, key=lambda n: (n != "none", n)):
        us = runs[name]
        if us is None:
            print(f"| {s} | {name} | failed | | | |")
            continue
        saved = "" if base is None or name == "none" else f"{base - us:.1f}"
        per = "" if saved == "" else f"{(base - us) / layers.get(s.split('@')[0], 1):.2f}"
        print(f"| {s} | {name} | {1e6 / us:.1f} | {us:.1f} | {saved} | {per} |")
PY
