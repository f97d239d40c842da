#!/usr/bin/env bash
# One call that checks a new build and times it against others (session 40): the carried
# build's op tests and model tests (target/device: gpu-ops, gpu-model), then
# kernel_variants.sh over the variants in target/carry/v (build_variant.sh makes them; a
# variant whose directory holds only `from` and `args` times another's build under other
# flags, e.g. `--split-inputs none`). The speed figures mean something only if the tests
# passed: read both. Carry target/carry's greta.xz, gpu-ops.xz, gpu-model.xz, kernels.txz
# and the v/ directories. PARTS (default "tests ab"); ROUNDS, GEN, SHAPES, VARIANTS as
# kernel_variants.sh takes them. One tarball comes back.
PARTS_DEFAULT="tests ab"
source "$(dirname "$0")/parts.sh"
if part tests; then
  step gpu-ops env ./target/device/gpu-ops --ignored --test-threads=1 || status=1
  step gpu-model env -C crates/greta-model ../../target/device/gpu-model --ignored --test-threads=1 || status=1
fi
if part ab; then
  OUT=$R/ab bash tools/gpu/kernel_variants.sh > $R/ab.log 2>&1 || status=1
  cat $R/ab.log
fi
tar czf /tmp/0-ab.tgz -C "$OUT" results && mv /tmp/0-ab.tgz "$OUT/0-ab.tgz"
echo "status $status"
exit $status
