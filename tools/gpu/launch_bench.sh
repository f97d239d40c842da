#!/usr/bin/env bash
# On the GPU machine: the launch-path criterion bench (crates/greta-kernels/benches/launch.rs:
# the host's cost of a launch, argument packing to the driver call) of several builds in one
# call, so that a host-side change compares with main on one host. Build each here with
#   cargo bench -p greta-kernels --bench launch --no-run
# (in a worktree with the change applied, for a variant), strip it and carry it xz-compressed
# as target/carry/bench/NAME.xz; every build runs on main's kernels (target/device/kernels,
# from unpack_carry.sh). ROUNDS (default 2) interleaves the builds, so that a drift of the
# host over the call shows as a round-to-round difference rather than as a build's.
# Session 34's first run moved one build 25 % between rounds on a 16-core host, more than
# the change it measured: each run is pinned to one core (CPU, default 2; taskset where the
# machine has it) so the scheduler's moves are not in the figures, and ROUNDS can rise.
# Usage (GPU machine): OUT=dir [ROUNDS=2] [MEASURE=2] [CPU=2] tools/gpu/launch_bench.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
[ -d target/device/kernels ] || bash tools/gpu/unpack_carry.sh
names=$(cd target/carry/bench && ls *.xz | sed 's/\.xz$//')
for n in $names; do bash tools/gpu/unxz.sh target/carry/bench/$n.xz /tmp/launch-$n; done
pin=""
if command -v taskset > /dev/null; then pin="taskset -c ${CPU:-2}"; else echo "no taskset: runs not pinned"; fi
for r in $(seq 1 "${ROUNDS:-2}"); do
  for n in $names; do
    f=$OUT/launch-$n-r$r.txt
    # Criterion keeps its last estimates under target/criterion: the second build of a round
    # prints its "change" against the first, which is the comparison wanted.
    GRETA_KERNELS_DIR=$PWD/target/device/kernels $pin /tmp/launch-$n --bench --noplot \
      --warm-up-time 1 --measurement-time "${MEASURE:-2}" > $f 2>&1
    echo "== launch bench $n round $r: exit $?"
    # Each bench's name and its estimate's interval (criterion prints the name on the line
    # before when it is long).
    grep -E -B1 'time:' $f | grep -v -e '^--$' | sed 's/^ */  /'
  done
done
