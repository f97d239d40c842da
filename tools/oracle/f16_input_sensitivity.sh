#!/usr/bin/env bash
# What rounding each matrix product's input to one f16 would cost, on the CPU, with the
# default model (or MODEL=path): for every layer and every product input (attn_norm -> Q/K/V,
# attn_ctx -> output projection, ffn_norm -> gate/up, ffn_act -> down; final_norm -> LM head)
# a greedy run with `--inject L:POINT:f16` is diffed against an untouched run at every
# prompt position (rms metric, the GPU audit's). Reported per input: the worst error at the
# product's own output(s) and at any later point of the same layer, over all layers; then
# the same rounding in every layer at once (`--inject '*:POINT:f16'`) and the worst error
# anywhere in the model, which is what an audit of a GPU doing it would see; both against
# the GPU audit's tolerance (8e-3); last, several classes at once (repeated --inject). This is the measurement behind "which products need the
# hi/lo activation split" (docs/gpu.md, "Numerics"). About 2 minutes on 2 cores.
#   usage: tools/oracle/f16_input_sensitivity.sh [PROMPT]
set -euo pipefail
cd "$(dirname "$0")/../.."
G=${GRETA:-target/release/greta}
[ -x "$G" ] || cargo build --release -q -p greta-cli
MODEL=${MODEL:-$HOME/.cache/greta/SmolLM2-135M-Instruct.Q4_1.gguf}
PROMPT=${1:-Why is the sky blue?}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
run() { # out.jsonl [inject]
  "$G" generate --backend cpu -m "$MODEL" --temperature 0 -n 1 --trace --trace-out "$1" \
    --trace-tokens all --trace-phases prefill ${2:+--inject "$2"} "$PROMPT" > /dev/null 2>&1
}
run "$W/ref.jsonl"
layers=$(python3 -c "
import json
recs = [json.loads(l) for l in open('$W/ref.jsonl')]
print(max(r['layer'] for r in recs if r.get('layer') is not None) + 1)")
for point in attn_norm attn_ctx ffn_norm ffn_act; do
  for ((l = 0; l < layers; l++)); do
    run "$W/inj.jsonl" "$l:$point:f16"
    "$G" trace diff "$W/inj.jsonl" "$W/ref.jsonl" --metric rms --tol 1 --json > "$W/$point-$l.json" || true
  done
done
for point in attn_norm attn_ctx ffn_norm ffn_act; do
  run "$W/inj.jsonl" "*:$point:f16"
  "$G" trace diff "$W/inj.jsonl" "$W/ref.jsonl" --metric rms --tol 1 --json > "$W/every-$point.json" || true
done
# Several classes at once (repeated --inject): what a GPU that rounds all but down's input
# (and then every input) to f16 would show the audit.
run_many() { # out.jsonl inject...
  local out=$1; shift
  local args=()
  for i in "$@"; do args+=(--inject "$i"); done
  "$G" generate --backend cpu -m "$MODEL" --temperature 0 -n 1 --trace --trace-out "$out" \
    --trace-tokens all --trace-phases prefill "${args[@]}" "$PROMPT" > /dev/null 2>&1
}
run_many "$W/inj.jsonl" "*:attn_norm:f16" "*:attn_ctx:f16" "*:ffn_norm:f16"
"$G" trace diff "$W/inj.jsonl" "$W/ref.jsonl" --metric rms --tol 1 --json > "$W/combo-all-but-down.json" || true
run_many "$W/inj.jsonl" "*:attn_norm:f16" "*:attn_ctx:f16" "*:ffn_norm:f16" "*:ffn_act:f16"
"$G" trace diff "$W/inj.jsonl" "$W/ref.jsonl" --metric rms --tol 1 --json > "$W/combo-all.json" || true
run "$W/inj.jsonl" "-:final_norm:f16"
"$G" trace diff "$W/inj.jsonl" "$W/ref.jsonl" --metric rms --tol 1 --json > "$W/final_norm--.json" || true
python3 - "$W" "$layers" <<'PY'
import json, sys
from pathlib import Path
w, layers = Path(sys.argv[1]), int(sys.argv[2])
ORDER = ["attn_in", "attn_norm", "q", "k", "v", "q_rope", "k_rope", "attn_ctx", "attn_out", "resid_attn",
         "ffn_norm", "ffn_gate", "ffn_up", "ffn_act", "ffn_out", "resid_ffn"]
PRODUCT = {"attn_norm": ("Q/K/V", ["q", "k", "v"]), "attn_ctx": ("output projection", ["attn_out"]),
           "ffn_norm": ("gate/up", ["ffn_gate", "ffn_up"]), "ffn_act": ("down", ["ffn_out"]),
           "final_norm": ("LM head", ["logits"])}
TOL = 8e-3
print("| product (input rounded to f16) | worst error at its output (layer, position) | worst later in the layer (point, layer, position) | over 8e-3 |")
print("|---|---|---|---|")
for point, (name, outs) in PRODUCT.items():
    best_out, best_later = (0.0, None, None), (0.0, None, None, None)
    files = [w / f"final_norm--.json"] if point == "final_norm" else [w / f"{point}-{l}.json" for l in range(layers)]
    for f in files:
        d = json.loads(f.read_text())
        for p in d["points"]:
            e = p["worst_error"]
            if p["point"] in outs and e > best_out[0]:
                best_out = (e, p["layer"], p["worst_pos"])
            after = point != "final_norm" and p["point"] in ORDER and ORDER.index(p["point"]) > ORDER.index(point)
            same_layer = f.stem.endswith(f"-{p['layer']}")
            if after and same_layer and p["point"] not in outs and e > best_later[0]:
                best_later = (e, p["point"], p["layer"], p["worst_pos"])
    over = "yes" if max(best_out[0], best_later[0]) > TOL else "no"
    later = f"{best_later[0]:.2e} ({best_later[1]}, {best_later[2]}, {best_later[3]})" if best_later[1] else "-"
    print(f"| {name} | {best_out[0]:.2e} ({best_out[1]}, {best_out[2]}) | {later} | {over} |")
print()
print("The same rounding in every layer at once: worst error anywhere in the model")
print()
print("| product (input rounded to f16 in every layer) | worst error (point, layer, position) | worst at its outputs | over 8e-3 |")
print("|---|---|---|---|")
for point in ["attn_norm", "attn_ctx", "ffn_norm", "ffn_act"]:
    name, outs = PRODUCT[point]
    d = json.loads((w / f"every-{point}.json").read_text())
    worst = max(d["points"], key=lambda p: p["worst_error"])
    own = max((p for p in d["points"] if p["point"] in outs), key=lambda p: p["worst_error"])
    over = "yes" if worst["worst_error"] > TOL else "no"
    print(f"| {name} | {worst['worst_error']:.2e} ({worst['point']}, {worst['layer']}, {worst['worst_pos']}) | "
          f"{own['worst_error']:.2e} ({own['point']}, {own['layer']}, {own['worst_pos']}) | {over} |")
print()
print("Several classes rounded in every layer at once (repeated --inject)")
print()
print("| inputs rounded to f16 in every layer | worst error (point, layer, position) | over 8e-3 |")
print("|---|---|---|")
for stem, name in [("combo-all-but-down", "Q/K/V + output + gate/up (down keeps f32)"), ("combo-all", "all four")]:
    d = json.loads((w / f"{stem}.json").read_text())
    worst = max(d["points"], key=lambda p: p["worst_error"])
    over = "yes" if worst["worst_error"] > TOL else "no"
    print(f"| {name} | {worst['worst_error']:.2e} ({worst['point']}, {worst['layer']}, {worst['worst_pos']}) | {over} |")
PY
