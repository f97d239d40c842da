#!/usr/bin/env bash
# Backend audits (every stage of every position, GPU against the CPU reference: prefill and
# teacher-forced decode steps) for each kernel_variants.sh variant that carries its own
# greta (target/carry/v/NAME/greta.xz), so that a variant is checked in the call that
# times it. The full set of checks is h100_checks.sh, run on whichever variant is kept.
# Usage (GPU machine): OUT=dir tools/gpu/variant_audits.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)}
TINY=crates/greta-model/tests/fixtures/tiny
[ -d /tmp/smollm2-random ] || python3 tools/gpu/make_random_llama.py smollm2-135m /tmp/smollm2-random > /dev/null 2>&1
status=0
for d in target/carry/v/*/; do
  v=$(basename $d)
  [ -f $d/greta.xz ] || continue
  [ -x /tmp/greta-$v ] || { python3 -c "import lzma, shutil; shutil.copyfileobj(lzma.open('$d/greta.xz'), open('/tmp/greta-$v', 'wb'))"; chmod +x /tmp/greta-$v; }
  for m in $TINY/mha-tied-theta1e4/model-f16.gguf $TINY/gqa4-llama3-rope/model-f16.gguf /tmp/smollm2-random; do
    GRETA_KERNELS_DIR=$PWD/$d /tmp/greta-$v audit backend --against cpu -m $m > $OUT/audit-$v.txt 2>&1
    rc=$?
    echo "$v $(basename $(dirname $m))/$(basename $m): exit $rc, $(grep -m1 -iE 'worst|pass|fail|diverge' $OUT/audit-$v.txt)"
    [ $rc -eq 0 ] || status=1
  done
done
exit $status
