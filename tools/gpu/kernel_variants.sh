#!/usr/bin/env bash
# Prefill and decode of both synthetic shapes for several kernel builds in one call, so that
# variants compare on one card in one run: each target/carry/v/NAME/ holds sm_90a/*.cubin
# (and greta.xz when the variant needs another binary; otherwise target/device/greta).
# Build the variants here: tools/gpu/build_variant.sh REV NAME builds a branch or commit
# (its greta.xz and cubins), tools/gpu/kernel_variant.sh NAME [PATCH ...] [-- FLAG ...] the
# kernels alone (and their resource usage against main's, regs.txt, printed below); carry
# target/carry (tools/gpu/unpack_carry.sh unpacks the main build).
# Prefill cells show the host's issue time beside the wall time where the build reports it
# (greta bench's prefill_host_ms). ROUNDS (default 2) and GEN (generated tokens, default 64)
# shorten a call whose question is the prefill; SHAPES (default "llama2-7b smollm2-135m")
# the synthetic shapes timed; PROMPT (default 512) the prompt's tokens; VARIANTS (names, default every directory) the variants. A variant directory may hold an `env` file (KEY=VALUE lines)
# set for its benches, `args` (one line of extra `greta bench` options, e.g. --temperature 0.8)
# and `from` (another variant's name) to time that variant's build and kernels under this
# env or these options: one build, two settings of a variant's knob.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
bash tools/gpu/unpack_carry.sh
# A variant's sm_90a/ may hold only the objects that differ from main's, or come as
# sm_90a.txz; fill_variants.sh completes it from the carry just unpacked.
bash tools/gpu/fill_variants.sh
cat target/carry/v/*/regs.txt 2>/dev/null | tee $OUT/regs.txt
# A variant that carries its own op-test binary (v/NAME/gpu-ops.xz: build_variant.sh with
# TESTS=1; and gpu-model.xz, its model tests) runs them on its kernels first, so that one
# call both checks and times it (VARIANT_TESTS: an op-test name filter, default every test).
# A failure is printed and kept in $OUT/0-NAME-ops.txt / -model.txt; the variant is still
# timed (its figures then mean nothing). Each test binary runs under VARIANT_TIMEOUT seconds
# (default 300): a shorter one bounds what a kernel that hangs costs the call.
for d in $(for v in ${VARIANTS:-$(ls target/carry/v)}; do echo target/carry/v/$v/; done); do
  [ -f $d/gpu-ops.xz ] || continue
  v=$(basename $d)
  bash tools/gpu/unxz.sh $d/gpu-ops.xz /tmp/gpu-ops-$v
  GRETA_KERNELS_DIR=$PWD/$d GRETA_REQUIRE_GPU=1 timeout ${VARIANT_TIMEOUT:-300} /tmp/gpu-ops-$v --ignored --test-threads=1 \
    ${VARIANT_TESTS:-} > $OUT/0-$v-ops.txt 2>&1
  echo "== $v op tests: exit $? ($(grep -E '^test result' $OUT/0-$v-ops.txt | tail -n 1))"
  grep -E "panicked|FAILED|failed" $OUT/0-$v-ops.txt | head -n 20
  [ -f $d/gpu-model.xz ] || continue
  bash tools/gpu/unxz.sh $d/gpu-model.xz /tmp/gpu-model-$v
  # Built in a worktree that is not here: the fixtures are this tree's.
  GRETA_TEST_FIXTURES=$PWD/crates/greta-model/tests/fixtures GRETA_KERNELS_DIR=$PWD/$d GRETA_REQUIRE_GPU=1 \
    timeout ${VARIANT_TIMEOUT:-300} /tmp/gpu-model-$v --ignored --test-threads=1 > $OUT/0-$v-model.txt 2>&1
  echo "== $v model tests: exit $? ($(grep -E '^test result' $OUT/0-$v-model.txt | tail -n 1))"
  grep -E "panicked|FAILED|failed" $OUT/0-$v-model.txt | head -n 20
done
SHAPES=${SHAPES:-llama2-7b smollm2-135m}
head="| variant" sep="|---"
for s in $SHAPES; do head="$head | $s prefill-${PROMPT:-512} ms | $s decode tok/s"; sep="$sep|---|---"; done
echo "$head |" | tee $OUT/variants.md
echo "$sep|" | tee -a $OUT/variants.md
vdirs=$(for v in ${VARIANTS:-$(ls target/carry/v)}; do echo target/carry/v/$v/; done)
for round in $(seq ${ROUNDS:-2}); do
  for d in $vdirs; do
    v=$(basename $d); G=./target/device/greta; venv=(); vargs=()
    [ -f $d/env ] && mapfile -t venv < $d/env
    [ -f $d/args ] && read -r -a vargs < $d/args
    [ -f $d/from ] && d=target/carry/v/$(cat $d/from)/
    if [ -f $d/greta.xz ]; then
      bash tools/gpu/unxz.sh $d/greta.xz /tmp/greta-$v; G=/tmp/greta-$v
    fi
    row="| $v (round $round)"
    for s in $SHAPES; do
      j=$OUT/$v-$s-$round.json
      env "${venv[@]}" GRETA_KERNELS_DIR=$PWD/$d $G bench -m synthetic:$s --backend gpu --prompt-len ${PROMPT:-512} --gen ${GEN:-64} --reps 5 "${vargs[@]}" --json > $j 2>/dev/null
      row="$row | $(python3 -c "import json; d=json.load(open('$j')); h=d.get('prefill_host_ms'); print('%.2f%s | %.1f' % (d['prefill_ms'], ' (host %.2f)' % h if h else '', d['decode_tok_s']))")"
    done
    echo "$row |" | tee -a $OUT/variants.md
  done
done
