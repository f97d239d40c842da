#!/usr/bin/env bash
# One call where device time is short (session 65: thirteen requests found no machine, 1531 s
# of the 1800 gone, and none came): the checks of h100_checks.sh, then the peer run
# (peer_bench.sh, both shapes) on the same warm machine, then, if the call's time allows,
# EXTRA (a command line, e.g. a variant's timing). llama.cpp's build (~6.5 min of the
# machine) does not fit beside them: LLAMA=1 builds and runs it (two calls' worth), otherwise
# its rows read n/a and the table says so.
# Usage (GPU machine, carry target/carry, and target/peer/llama-cpp-src.tar.xz with LLAMA=1):
#   OUT=dir [SKIP="gpu-ops audit-llama2-long audit-llama2-longer"] [CHECKS=0: none] [LLAMA=1]
#   [PEER_SHAPES="smollm2-135m": peer_bench.sh's shapes, both by default]
#   [EXTRA="cmd"] [EXTRA_BY=s: start EXTRA only before this many seconds] bash tools/gpu/checks_then_peers.sh
# Leaves $OUT/0-checks.tgz (the checks' files), peer-table.md and peer-raw.tgz.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
status=0
if [ "${LLAMA:-0}" != 1 ] && [ ! -d /tmp/llama-cpp ]; then
  # peer_bench.sh waits for this file; its rows for llama.cpp then read n/a. (A warm
  # machine's build, done or under way, is left to peer_bench.sh as it is.)
  mkdir -p /tmp/llama-cpp && echo "left out (checks_then_peers.sh without LLAMA=1)" > /tmp/llama-cpp/done
fi
if [ "${CHECKS:-1}" != 0 ]; then
  mkdir -p /tmp/checks
  OUT=/tmp/checks SKIP=${SKIP-"gpu-ops audit-llama2-long audit-llama2-longer"} \
    bash tools/gpu/h100_checks.sh 2>&1 | tail -n 80
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  cp /tmp/checks/0-checks.tgz "$OUT/0-checks.tgz"
else
  echo "== checks left out (CHECKS=0)"
fi
echo "== peers ($SECONDS s into the call)"
PEER_RAW=/tmp/peer-raw OUT=$OUT bash tools/gpu/peer_bench.sh ${PEER_SHAPES:-} 2>&1 | tail -n 40
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
if [ -n "${EXTRA:-}" ]; then
  if [ $SECONDS -lt "${EXTRA_BY:-480}" ]; then
    echo "== extra ($SECONDS s into the call): $EXTRA"
    bash -c "$EXTRA" 2>&1 | tail -n 40
  else
    echo "== extra left out: $SECONDS s into the call, past EXTRA_BY=${EXTRA_BY:-480}"
  fi
fi
echo "== end ($SECONDS s) status $status"
exit $status
