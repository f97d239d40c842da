#!/usr/bin/env bash
# `greta calibrate` and `--split-inputs auto` on the GPU machine, in one call (session 38):
# the model tests (the new one: weights ids across load routes, the ladder on a fixture),
# the calibration of the default model's first 10 layers (real weights with massive
# activations: session 30 measured none and qkv,o,down failing the audit there), of a Q8_0
# fixture (then `generate` must say it took the calibrated policy) and of both synthetic
# benchmark shapes, each timed; then `greta bench` on both shapes under auto (the default)
# beside the explicit audited default and qkv (the cheapest policy that passes the 7B's audit
# at all, session 39), two rounds alternating. Carry target/carry with
# greta.xz, gpu-model.xz, kernels.txz and smollm2-10l.gguf.xz (tools/gpu/default_model_layers.sh
# says how to make it). The 7B calibration takes ~3 minutes (its CPU
# reference and the traces' diffs). PARTS: the parts to run (default: tests dm10 fixture smollm2 7b bench).
PARTS_DEFAULT="tests dm10 fixture smollm2 7b bench"
source "$(dirname "$0")/parts.sh"
nproc | tee $R/nproc.txt
if part tests; then
  step gpu-model env -C crates/greta-model ../../target/device/gpu-model --ignored --test-threads=1 || status=1
fi
# The default model's first 10 layers: the audit's four prompts.
if part dm10; then
step calibrate-dm10 $G calibrate -m target/dm10/smollm2-10l.gguf --json
# With the profile kept, the audit of the same model takes auto's policy and says so.
step audit-dm10-auto $G audit backend --against cpu -m target/dm10/smollm2-10l.gguf || status=1
grep -q 'numerics: --split-inputs auto' $R/audit-dm10-auto.err || { echo "audit did not take the calibration"; status=1; }
fi
# A fixture: calibrated, then generate takes the profile (a Q8_0 file loaded as blocks: the
# id is of the uploaded f16 values, which the calibration's f16-rounded load uploads too).
FX=crates/greta-model/tests/fixtures/tiny/gqa4-llama3-rope/model-q8_0.gguf
if part fixture; then
step calibrate-fixture $G calibrate -m $FX --prompt "The quick brown fox jumps over the lazy dog." || status=1
step generate-fixture $G generate -m $FX --backend gpu -n 8 --temperature 0 "The quick brown fox" || status=1
grep -q 'numerics: --split-inputs auto: none' $R/generate-fixture.err || { echo "generate did not take the calibration"; status=1; }
fi
part smollm2 && { step calibrate-smollm2 $G calibrate -m synthetic:smollm2-135m --json || status=1; }
if part 7b; then
  TIME=""; [ -x /usr/bin/time ] && TIME="/usr/bin/time -v"
  step calibrate-7b $TIME $G calibrate -m synthetic:llama2-7b --json || status=1
fi
# Benches: auto (the default flags) against the audited default named explicitly.
part bench && for round in 1 2; do
  for shape in smollm2-135m llama2-7b; do
    step bench-auto-$shape-$round $G bench -m synthetic:$shape --backend gpu --json
    step bench-split-$shape-$round $G bench -m synthetic:$shape --backend gpu --split-inputs qkv,o,gate_up,down --json
    step bench-qkv-$shape-$round $G bench -m synthetic:$shape --backend gpu --split-inputs qkv --json
  done
done
python3 - $R <<'PY' | tee $R/summary.md
import json, sys, glob, os
r = sys.argv[1]
print("| run | prefill-512 ms | decode tok/s | split inputs | origin |")
print("|---|---|---|---|---|")
for f in sorted(glob.glob(r + "/bench-*.out")):
    try:
        d = json.load(open(f))
    except Exception as e:
        print(f"| {os.path.basename(f)} | failed: {e} | | | |"); continue
    print(f"| {os.path.basename(f)[6:-4]} | {d['prefill_ms']:.2f} | {d['decode_tok_s']:.1f} | {d.get('split_inputs')} | {d.get('split_origin')} |")
PY
python3 tools/gpu/calibrate_summary.py $R | tee -a $R/summary.md
tar czf /tmp/0-calibrate.tgz -C "$OUT" results && mv /tmp/0-calibrate.tgz "$OUT/0-calibrate.tgz"
echo "status $status"
exit $status
