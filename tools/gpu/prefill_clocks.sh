#!/usr/bin/env bash
# The clock the card holds while greta's prefill runs back to back (session 43): its products
# run at ~0.72 of the 989 TFLOP/s dense f16 figure, which assumes a 1.83 GHz SM clock; this
# samples the SM clock, power and the driver's clock-event reasons every SMI_MS (default 20)
# ms (nvidia-smi -lms) through `greta bench` of the 7B shape at PROMPTS (default "512 2048")
# rows, REPS (default 40) prefills each, and prints the samples' spread while the GPU is
# busy (utilisation > 50 %), so that the products' fraction can be read against the clock
# they ran at. Carry target/carry's greta.xz and kernels.txz. PARTS "tests clocks": tests
# runs the occupancy op test, hiprt's runtime tests and `greta bench --kernels` (the
# build's own checks) where their binaries were carried; plain times the same benches
# without the sampling (whether nvidia-smi's queries slow the prefill). CLOCK_VARIANTS
# (names of target/carry/v/NAME, "main" the carried build; default "main") samples each
# variant's kernels in turn: whether a kernel change moves the clock the cap allows.
# GPU_ARGS: more `greta bench` options for the sampled runs (session 50: `--split-lo
# fp8+sparse:gate_up` against `--split-lo fp8`, one OUT each).
PARTS_DEFAULT="tests clocks"
source "$(dirname "$0")/parts.sh"
if part tests; then
  [ -x target/device/hiprt-gpu ] && { step hiprt-gpu ./target/device/hiprt-gpu --ignored --test-threads=1 || status=1; }
  [ -x target/device/gpu-ops ] && { step gpu-ops-occupancy ./target/device/gpu-ops --ignored --test-threads=1 launched || status=1; }
  STEP_TAIL="14 4" step kernels-7b-512 $G bench -m synthetic:llama2-7b --backend gpu --prompt-len 512 --gen 8 \
    --reps 1 --kernels || status=1
fi
if part plain; then
  for p in ${PROMPTS:-512 2048}; do
    STEP_TAIL="0 0" step "plain-7b-$p" $G bench -m synthetic:llama2-7b --backend gpu --prompt-len "$p" --gen 1 \
      --reps "${REPS:-40}" --json || status=1
    python3 -c "import json, sys; b = json.load(open(sys.argv[1])); print(f'  unsampled prefill {b[\"prefill_ms\"]:.2f} ms')" \
      "$R/plain-7b-$p.out"
  done
fi
if part clocks; then
  q=timestamp,utilization.gpu,clocks.sm,clocks.max.sm,power.draw,power.limit,temperature.gpu
  # The reasons' field name moved (clocks_throttle_reasons -> clocks_event_reasons).
  for r in clocks_event_reasons.active clocks_throttle_reasons.active; do
    nvidia-smi --query-gpu=$r --format=csv,noheader > /dev/null 2>&1 && { q=$q,$r; break; }
  done
  bash tools/gpu/fill_variants.sh
  for v in ${CLOCK_VARIANTS:-main}; do
    K=$PWD/target/device/kernels VG=$G
    [ "$v" != main ] && K=$PWD/target/carry/v/$v
    # A full variant (build_variant.sh) runs its own binary, as kernel_variants.sh does: the
    # carried one may load kernels the variant's objects lack (session 47: base's rounds
    # failed with CUDA_ERROR_NOT_FOUND under a binary that loads the new `_kv` forms).
    if [ "$v" != main ] && [ -f "$K/greta.xz" ]; then
      bash tools/gpu/unxz.sh "$K/greta.xz" "/tmp/greta-$v" && VG=/tmp/greta-$v
    fi
    for p in ${PROMPTS:-512 2048}; do
      echo "== clocks of $v at $p rows"
      nvidia-smi --query-gpu=$q --format=csv,noheader,nounits -lms "${SMI_MS:-20}" > "$R/clocks-$v-$p.csv" &
      smi=$!
      STEP_TAIL="3 2" step "bench-7b-$v-$p" env GRETA_KERNELS_DIR=$K $VG bench -m synthetic:llama2-7b --backend gpu \
        --prompt-len "$p" --gen 1 --reps "${REPS:-40}" ${GPU_ARGS:-} --json || status=1
      kill $smi; wait $smi 2> /dev/null
      python3 - "$R/clocks-$v-$p.csv" "$R/bench-7b-$v-$p.out" <<'PY'
import json, statistics, sys
rows = [l.split(", ") for l in open(sys.argv[1]) if l.strip()]
busy = [r for r in rows if r[1].strip().isdigit() and int(r[1]) > 50]
print(f"{sys.argv[1]}: {len(rows)} samples, {len(busy)} with the GPU over 50 % busy")
if busy:
    sm = sorted(int(r[2]) for r in busy)
    pw = sorted(float(r[4]) for r in busy)
    q = lambda v, f: v[min(len(v) - 1, int(f * len(v)))]
    print(f"  SM clock MHz: median {statistics.median(sm)}, p10 {q(sm, .1)}, p90 {q(sm, .9)} (max {busy[0][3]})")
    print(f"  power W: median {statistics.median(pw):.0f}, p90 {q(pw, .9):.0f} (limit {busy[0][5]})")
    if len(busy[0]) > 7:
        reasons = {}
        for r in busy:
            reasons[r[7].strip()] = reasons.get(r[7].strip(), 0) + 1
        print(f"  clock-event reasons (samples): {reasons}")
try:
    b = json.load(open(sys.argv[2]))
    print(f"  greta prefill {b.get('prefill_ms')} ms, {b.get('prefill_tflop_s')} TFLOP/s")
except Exception as e:
    print(f"  (bench json unread: {e})")
PY
    done
  done
fi
tar czf /tmp/0-clocks.tgz -C "$OUT" results && mv /tmp/0-clocks.tgz "$OUT/0-clocks.tgz"
echo "status $status"
exit $status
