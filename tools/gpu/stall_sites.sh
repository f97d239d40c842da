#!/usr/bin/env bash
# Where a kernel's warps wait, instruction by instruction: Nsight Compute's warp stall
# sampling (SourceCounters) on one launch in a synthetic prefill, printed as its warp state
# summary, occupancy and launch figures, then the SASS instructions with the most samples and
# their stall reasons. By default layer 0's down product (wgmma GEMM) of the 7B prefill with
# the hi products alone, `--split-inputs none` (the same work as cuBLAS's f16 product): do the
# consumer warps wait on their data (the full barrier's try-wait), on the matrix units (wgmma
# wait), or elsewhere. Written as gemm_stall_sites.sh (session 24); any kernel since session 26.
# Its last line groups the samples by what the warps wait on (session 44).
# Usage on the GPU machine: OUT=dir bash tools/gpu/stall_sites.sh (carry target/carry).
# KERNEL (regex, default ^gemm_f16_wgmma_128$), SKIP (launches of it to pass over, default 2:
# Q/K/V and output come first), GPU_ARGS (greta bench options, default --split-inputs none),
# MODEL (synthetic shape, default llama2-7b), TAG (report name, default stalls).
#   e.g. KERNEL=^attn_prefill_fa_128$ SKIP=0 GPU_ARGS= bash tools/gpu/stall_sites.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
source tools/gpu/ncu_setup.sh
TAG=${TAG:-stalls}
"$NCU" --clock-control none --graph-profiling node -k "regex:${KERNEL:-^gemm_f16_wgmma_128\$}" \
  --launch-skip "${SKIP:-2}" -c 1 --section SourceCounters --section WarpStateStats --section Occupancy \
  --section LaunchStats --section SpeedOfLight --import-source no \
  -o "$OUT/$TAG" -f "$G" bench -m synthetic:${MODEL:-llama2-7b} --backend gpu ${GPU_ARGS---split-inputs none} \
  --prompt-len 512 --gen 2 --reps 1 > "$OUT/$TAG-run.txt" 2>&1 || { tail -20 "$OUT/$TAG-run.txt"; exit 1; }
# The summary: duration, warp states (cycles per issued instruction by reason), occupancy.
"$NCU" -i "$OUT/$TAG.ncu-rep" --page details --section WarpStateStats --section Occupancy --section LaunchStats \
  --section SpeedOfLight 2>&1 | grep -vE "^\s*-+\s*$|^\s*$|^\s*(INF|OPT|WRN)" | sed -E 's/\s+/ /g' | tee "$OUT/$TAG-summary.txt"
"$NCU" -i "$OUT/$TAG.ncu-rep" --page source --print-source sass --csv > "$OUT/$TAG-sass.csv" 2> "$OUT/$TAG-sass.err" ||
  { cat "$OUT/$TAG-sass.err"; exit 1; }
python3 - "$OUT/$TAG-sass.csv" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
# ncu writes a "Kernel Name" line above the header.
while rows and rows[0] and rows[0][0] != "Address":
    rows.pop(0)
head = rows[0]
def col(*names):
    for n in names:
        for i, h in enumerate(head):
            if h.strip().lower() == n.lower():
                return i
    return None
src = col("Source")
samp = col("Warp Stall Sampling (All Samples)", "Warp Stall Sampling (All Cycles)")
if src is None or samp is None:
    sys.exit("no Source / stall-sampling column in the CSV")
def num(s):
    try:
        return float(s.replace(",", ""))
    except ValueError:
        return 0.0
body = [r for r in rows[1:] if len(r) > samp]
total = sum(num(r[samp]) for r in body) or 1.0
reasons = [i for i, h in enumerate(head) if h.startswith("stall_") and "Not Issued" not in h]
print(f"{len(body)} SASS lines, {total:.0f} samples")
for r in sorted(body, key=lambda r: -num(r[samp]))[:25]:
    top = sorted(((num(r[i]), head[i]) for i in reasons if i < len(r)), reverse=True)[:3]
    why = ", ".join(f"{h}: {v:.0f}" for v, h in top if v > 0)
    print(f"{num(r[samp]) / total * 100:5.1f} %  {r[src].strip()[:70]:70s}  {why}")
# The samples by what the warp waits on (session 44): a matrix-unit kernel's products
# (WARPGROUP.DEPBAR: its earlier products; the GMMA issue: the units' queue), its data (a
# branch stalled mostly on the long scoreboard: an mbarrier try-wait loop), or the rest.
lsb = next((i for i, h in enumerate(head) if h == "stall_long_sb"), None)
groups = {"wait for earlier products (WARPGROUP.DEPBAR)": 0.0, "at the products' issue (*GMMA)": 0.0,
          "waiting for data (branch on the long scoreboard)": 0.0, "the rest": 0.0}
for r in body:
    s, v = r[src], num(r[samp])
    if "WARPGROUP.DEPBAR" in s:
        k = "wait for earlier products (WARPGROUP.DEPBAR)"
    elif "GMMA" in s:
        k = "at the products' issue (*GMMA)"
    elif "BRA" in s and lsb is not None and lsb < len(r) and num(r[lsb]) > v / 2:
        k = "waiting for data (branch on the long scoreboard)"
    else:
        k = "the rest"
    groups[k] += v
print("by what the warps wait on: " + "; ".join(f"{k} {v / total * 100:.1f} %" for k, v in groups.items()))
PY
