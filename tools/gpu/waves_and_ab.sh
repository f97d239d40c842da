#!/usr/bin/env bash
# One call for a new build and an A/B (session 42): build_ab.sh's tests (the carried build's
# op and model tests), kernels_waves.sh (hiprt's runtime tests, the occupancy op test and
# `greta bench --kernels` with waves), then build_ab.sh's A/B of the variants in
# target/carry/v. Each part keeps its own results; one tarball of all three comes back
# ($OUT holds only it, the log and the three scripts' own tarballs). Environment as the
# scripts take it (ROUNDS, GEN, SHAPES, VARIANTS for the A/B; PROMPTS for the waves).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
W=/tmp/waves-and-ab && rm -rf $W && mkdir -p $W
status=0
echo "=== tests"; PARTS=tests OUT=$W/tests bash tools/gpu/build_ab.sh || status=1
echo "=== waves"; (unset SHAPES; OUT=$W/waves bash tools/gpu/kernels_waves.sh) || status=1
echo "=== ab"; PARTS=ab OUT=$W/ab bash tools/gpu/build_ab.sh || status=1
tar czf "$OUT/results.tgz" -C $W tests/results waves/results ab/results
echo "status $status"
exit $status
