#!/usr/bin/env bash
# The default model on the GPU machine. Its 98 MB do not fit one call's 64 MiB carry beside
# the tree, so it travels in parts, each carried by one call to the same warm machine and
# copied to /tmp/dm (h100_checks.sh does that for the parts it finds); this script joins
# them. Two forms: the GGUF xz-compressed (90 MB) and split in two
# (target/dmA/dmx0, target/dmB/dmx1: `split -n 2 -d -a 1`), or raw in four
# (target/dm1..4/dmpart0N). The join is checked against the file's sha256.
# AUDIT_LOS: --split-lo values to audit the whole model with besides the default (e.g.
# "fp8": session 17 audited only the first 10 layers with it).
# VARIANT: a kernel_variants.sh variant's name (target/carry/v/NAME, its greta.xz and
# objects) to check instead of the main build: a variant is audited on the whole model
# before it lands (session 33 did this by hand for seqk128).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
export GRETA_KERNELS_DIR=$PWD/target/device/kernels
G=./target/device/greta
if [ -n "${VARIANT:-}" ]; then
  [ -f target/carry/greta.xz ] && bash tools/gpu/unpack_carry.sh
  bash tools/gpu/fill_variants.sh
  d=target/carry/v/$VARIANT
  [ -f $d/greta.xz ] || { echo "VARIANT=$VARIANT: no $d/greta.xz"; exit 1; }
  bash tools/gpu/unxz.sh $d/greta.xz /tmp/greta-$VARIANT && G=/tmp/greta-$VARIANT
  export GRETA_KERNELS_DIR=$PWD/$d
  echo "checking variant $VARIANT ($G, kernels $GRETA_KERNELS_DIR)" | tee $OUT/variant.txt
fi
mkdir -p /tmp/dm && for p in target/dm*/dmpart* target/dm*/dmx*; do [ -f "$p" ] && cp "$p" /tmp/dm/; done
M=/tmp/SmolLM2-135M-Instruct.Q4_1.gguf
SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ -f /tmp/dm/dmx0 ]; then
  cat /tmp/dm/dmx0 /tmp/dm/dmx1 | xz -d > $M || exit 1
else
  cat /tmp/dm/dmpart00 /tmp/dm/dmpart01 /tmp/dm/dmpart02 /tmp/dm/dmpart03 > $M || exit 1
fi
sha256sum $M | tee $OUT/model-sha256.txt
[ "$(sha256sum < $M | cut -d' ' -f1)" = $SHA ] || { echo "the joined model is not the default model (sha256 $SHA)"; exit 1; }
status=0
run() { local name=$1; shift; echo "== $name"; "$@" > "$OUT/$name.txt" 2>&1; local rc=$?; tail -n 30 "$OUT/$name.txt"; echo "== $name: exit $rc"; [ $rc -eq 0 ] || status=1; }
run generate-gpu-graph $G generate --backend gpu -m $M --temperature 0 -n 96 "Why is the sky blue?"
run generate-gpu-eager $G generate --backend gpu -m $M --temperature 0 -n 96 --no-graph "Why is the sky blue?"
run generate-cpu $G generate --backend cpu -m $M --temperature 0 -n 96 "Why is the sky blue?"
run generate-gpu-sampled sh -c "$G generate --backend gpu -m $M --seed 11 -n 64 'Write a haiku about the sea.' && $G generate --backend gpu -m $M --seed 11 -n 64 --no-graph 'Write a haiku about the sea.'"
# greta chat on the GPU: six greedy turns with the cache kept and with --no-cache-reuse;
# the replies should agree (first run in session 58 on an H200: they did; the prefill took
# 1.3-1.4 ms either way, SmolLM2's GPU prefill being the host's issue time).
run chat-gpu-reuse env GRETA=$G BACKEND=gpu MODEL=$M bash tools/bench/chat_reuse.sh
echo "== audit-backend"; $G audit backend --against cpu -m $M --json > $OUT/audit-default.json 2> $OUT/audit-default.err; rc=$?; tail -n 2 $OUT/audit-default.err; echo "== audit-backend: exit $rc"; [ $rc -eq 0 ] || status=1
for lo in ${AUDIT_LOS:-}; do
  t=$(echo "$lo" | tr ':,' '-_')
  $G audit backend --against cpu -m $M --split-lo $lo --json > $OUT/audit-default-$t.json 2> $OUT/audit-default-$t.err
  rc=$?; echo "== audit-backend --split-lo $lo: exit $rc"; tail -n 2 $OUT/audit-default-$t.err; [ $rc -eq 0 ] || status=1
done
# The long prompts of split_inputs_compare.sh (session 30: the old default failed the
# ~650-token one on the first 10 layers; the whole model had never been audited on either).
P3=$(python3 -c "print(' '.join(['The history of science is the study of how people came to understand the natural world.'] * 36))")
for p in repeated prose; do
  case $p in repeated) pr=$P3;; prose) pr=$(cat crates/greta-model/src/calibrate/long-prose.txt);; esac
  $G audit backend --against cpu -m $M --prompt "$pr" --json > $OUT/audit-default-$p.json 2> $OUT/audit-default-$p.err
  rc=$?; echo "== audit-backend, $p prompt: exit $rc"; tail -n 2 $OUT/audit-default-$p.err; [ $rc -eq 0 ] || status=1
done
# The same audit read with the max metric, for the record (not a pass criterion).
$G audit backend --against cpu -m $M --metric max --tol 1e-2 > $OUT/audit-backend-max.txt 2>&1; echo "audit (max metric, 1e-2): exit $?"
# What the GPU's numerics cost the model's output (session 32's question; the CPU emulation
# is experiments/numerics-cost.toml): perplexity of LICENSE and the KL divergence of the
# GPU route's next-token distributions from the CPU reference's, under the default, the
# peers' numerics (none) and the default to session 29. Measurements, not pass criteria;
# an error exit still counts.
for si in default none qkv,o,down; do
  a=(); [ $si = default ] || a=(--split-inputs $si)
  run perplexity-kl-$(echo $si | tr ',' '_') $G perplexity --backend gpu -m $M -f LICENSE --ctx 256 --kl --json "${a[@]}"
done
exit $status
