#!/usr/bin/env bash
# Every GPU check of the project, in one run on the GPU machine (it keeps nothing: results go
# to $OUT). Build first, here: tools/gpu/build_for_device.sh; carry target/device.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)}
export GRETA_KERNELS_DIR=$PWD/target/device/kernels GRETA_REQUIRE_GPU=1
status=0
run() { local name=$1; shift; echo "== $name"; "$@" > "$OUT/$name.txt" 2>&1; local rc=$?; cat "$OUT/$name.txt"; echo "== $name: exit $rc"; [ $rc -eq 0 ] || status=1; }
run gpu nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
run greta-info ./target/device/greta info
run hiprt-gpu ./target/device/hiprt-gpu --ignored --test-threads=1 --nocapture
run gpu-ops ./target/device/gpu-ops --ignored --test-threads=1 --nocapture
exit $status
