#!/usr/bin/env bash
# The default model on the GPU machine. Its 98 MB do not fit one call's 64 MiB carry, so it
# travels in three parts over three calls to the same warm machine (target/dm1..3, split -n 3
# of the cached GGUF); this script, in the last call, joins them and runs the checks.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)}
export GRETA_KERNELS_DIR=$PWD/target/device/kernels
M=/tmp/SmolLM2-135M-Instruct.Q4_1.gguf
cat target/dm1/dmpart00 target/dm2/dmpart01 target/dm3/dmpart02 > $M || exit 1
sha256sum $M | tee $OUT/model-sha256.txt
G=./target/device/greta
status=0
run() { local name=$1; shift; echo "== $name"; "$@" > "$OUT/$name.txt" 2>&1; local rc=$?; tail -n 30 "$OUT/$name.txt"; echo "== $name: exit $rc"; [ $rc -eq 0 ] || status=1; }
run generate-gpu-graph $G generate --backend gpu -m $M --temperature 0 -n 96 "Why is the sky blue?"
run generate-gpu-eager $G generate --backend gpu -m $M --temperature 0 -n 96 --no-graph "Why is the sky blue?"
run generate-cpu $G generate --backend cpu -m $M --temperature 0 -n 96 "Why is the sky blue?"
run audit-backend $G audit backend --against cpu -m $M
exit $status
