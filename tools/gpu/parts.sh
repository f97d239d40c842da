# Sourced (not run) by the GPU machine scripts made of named parts (calibrate_checks.sh,
# ladder_study.sh): unpacks the carry, points greta at the carried kernels and a scratch
# cache, and gives `part NAME` (is NAME in $PARTS, default $PARTS_DEFAULT) and
# `step NAME CMD...` (runs CMD with its stdout and stderr in $R/NAME.out and .err, prints its
# exit status, time and the tails of both: STEP_TAIL="lines-of-out lines-of-err").
# Sets OUT, R (= $OUT/results), G (the greta binary) and status=0; records the GPU.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
bash tools/gpu/unpack_carry.sh
export GRETA_KERNELS_DIR=$PWD/target/device/kernels GRETA_REQUIRE_GPU=1
export GRETA_CACHE_DIR=/tmp/greta-cache
G=./target/device/greta
R=$OUT/results && mkdir -p "$R"
status=0
PARTS=" ${PARTS:-$PARTS_DEFAULT} "
STEP_TAIL=${STEP_TAIL:-8 12}
part() { [[ "$PARTS" == *" $1 "* ]]; }
step() { local name=$1; shift; echo "== $name"; local t0=$(date +%s%N)
  "$@" > "$R/$name.out" 2> "$R/$name.err"; local rc=$?
  echo "== $name: exit $rc, $(( ($(date +%s%N) - t0) / 1000000 )) ms"
  tail -n "${STEP_TAIL% *}" "$R/$name.out"; tail -n "${STEP_TAIL#* }" "$R/$name.err"; return $rc; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$R/gpu.txt"
