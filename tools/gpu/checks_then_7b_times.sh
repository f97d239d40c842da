#!/usr/bin/env bash
# Every GPU check (h100_checks.sh), then the 7B's end-to-end times: `greta bench` and the
# default calibration of synthetic:llama2-7b, each under `time` (session 39: the load's CPU
# side and the audits' recorders and diff made parallel or copy-free; the weights id printed
# must equal session 38's 64c2976321c38b5b6f06f380804c46b6, the same bytes hashed).
# Carry target/carry (greta, hiprt-gpu, gpu-ops, gpu-model, kernels). One tarball comes back.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
R=$OUT/r && mkdir -p $R
OUT=$R bash tools/gpu/h100_checks.sh > $R/checks.log 2>&1
status=$?
echo "h100_checks: exit $status"
grep -E '^== .*: exit [1-9]' $R/checks.log
export GRETA_KERNELS_DIR=$PWD/target/device/kernels GRETA_REQUIRE_GPU=1
G=./target/device/greta
t() { local name=$1; shift; local t0=$(date +%s%N); "$@" > $R/$name.out 2> $R/$name.err; local rc=$?
  echo "$name: exit $rc, $(( ($(date +%s%N) - t0) / 1000000 )) ms"; return $rc; }
t bench-7b $G bench -m synthetic:llama2-7b --backend gpu --json || status=1
t calibrate-7b $G calibrate -m synthetic:llama2-7b --no-save --json || status=1
grep -h 'weights\|split-inputs' $R/calibrate-7b.err
python3 -c "import json,sys; d=json.load(open('$R/bench-7b.out')); print('7B prefill', d['prefill_ms'], 'ms, decode', d['decode_tok_s'], 'tok/s, split', d['split_inputs'], d['split_origin'])"
tar czf /tmp/r.tgz -C $OUT r && mv /tmp/r.tgz $OUT/r.tgz && rm -rf $R
echo "status $status"
exit $status
