#!/usr/bin/env bash
# The default model's first 10 of 30 layers on the GPU, in one call: the whole file (98 MB)
# does not fit a call's 64 MiB carry beside the binaries; its first 10 layers (54 MB, with
# layer 9, where the model's massive activations are) do. Make the file here first:
#   python3 tools/oracle/truncate_gguf.py ~/.cache/greta/SmolLM2-135M-Instruct.Q4_1.gguf \
#     target/dm10/smollm2-10l.gguf 10          (gguf-py: pip install gguf)
# and carry target/device/greta, target/device/kernels and target/dm10.
# Checks: the backend audit (every stage of every position, GPU against the CPU reference,
# the default 8e-3 rms tolerance; it decides) and, for the record, greedy text of graph
# decode, eager decode and the CPU (the CPU route multiplies the Q4_1 blocks, the GPU their
# f16 rounding, so a near-tie may go either way: reported, not a failure).
# GPU_ARGS: options for the GPU runs (e.g. --split-lo fp8); TAG: a suffix for the outputs.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
export GRETA_KERNELS_DIR=$PWD/target/device/kernels
G=./target/device/greta
M=target/dm10/smollm2-10l.gguf
sha256sum $M | tee $OUT/dm10-sha256.txt
status=0
A=${GPU_ARGS:-}
T=${TAG:-}
$G audit backend --against cpu -m $M $A --json > $OUT/audit-dm10$T.json 2> $OUT/audit-dm10$T.err || status=1
python3 - $OUT/audit-dm10$T.json $A <<'PY' || status=1
import json, sys
d = json.load(open(sys.argv[1]))
w = max(d["points"], key=lambda p: p["worst_error"])
print("audit (first 10 layers of the default model%s):" % (" " + " ".join(sys.argv[2:]) if sys.argv[2:] else ""), d["verdict"])
print(f"worst {w['worst_error']:.3e} at {w['point']} layer {w['layer']} position {w['worst_pos']}")
PY
P="Why is the sky blue?"
$G generate --backend gpu $A -m $M --temperature 0 -n 48 "$P" > $OUT/gen-graph.txt 2> /dev/null || status=1
$G generate --backend gpu $A --no-graph -m $M --temperature 0 -n 48 "$P" > $OUT/gen-eager.txt 2> /dev/null || status=1
$G generate --backend cpu -m $M --temperature 0 -n 48 "$P" > $OUT/gen-cpu.txt 2> /dev/null || status=1
for v in graph eager; do
  if cmp -s $OUT/gen-$v.txt $OUT/gen-cpu.txt; then echo "greedy text, GPU $v = CPU"; else echo "greedy text, GPU $v differs from the CPU (from byte $(cmp $OUT/gen-$v.txt $OUT/gen-cpu.txt | awk '{print $5}'))"; fi
done
cmp -s $OUT/gen-graph.txt $OUT/gen-eager.txt || { echo "graph and eager decode differ"; status=1; }
exit $status
