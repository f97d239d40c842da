#!/usr/bin/env bash
# One call for a change to the FP8 low halves (`--split-lo fp8`): its checks, an A/B against
# the previous form, and the bounds that frame the 7B prefill target.
#   1. tools/gpu/cublas_gemms.py: the 7B prefill's products on cuBLAS (f16 and FP8), a
#      bound greta did not write;
#   2. tools/gpu/fp8_lo_checks.sh (ROUNDS=1): every op test, the random shapes' audits and
#      the default model's first 10 layers with f16 and fp8 low halves, a planted fault;
#   3. tools/gpu/kernel_variants.sh on the variants carried in target/carry/v (each with
#      its `args`, e.g. `--split-lo fp8` for the old and the new build, `--split-lo f16`,
#      `--split-inputs none` for the hi products alone), on the three synthetic shapes.
# Carry target/carry (binaries, kernels, smollm2-10l.gguf.xz, v/). Everything lands in
# $OUT/0-all.tgz plus the three summaries. A short call: SKIP_CUBLAS=1 leaves out (1),
# CHECK_ROUNDS=0 the benches of (2) (the variants time the builds).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"/checks "$OUT"/variants
status=0
[ "${SKIP_CUBLAS:-0}" = 1 ] || timeout 120 python3 tools/gpu/cublas_gemms.py 512 --json "$OUT"/cublas.json 2>&1 | tee "$OUT"/0-cublas.txt
OUT=$OUT/checks ROUNDS=${CHECK_ROUNDS:-1} timeout 330 bash tools/gpu/fp8_lo_checks.sh 2>&1 | tee "$OUT"/0-checks.txt
[ "${PIPESTATUS[0]}" = 0 ] || status=1
OUT=$OUT/variants SHAPES=${SHAPES:-"llama2-7b llama3.2-1b smollm2-135m"} GEN=${GEN:-32} \
  timeout 300 bash tools/gpu/kernel_variants.sh 2>&1 | tee "$OUT"/0-variants.txt
(cd "$OUT" && tar czf 0-all.tgz cublas.json checks variants 2>/dev/null)
exit $status
