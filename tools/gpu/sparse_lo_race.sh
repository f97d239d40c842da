#!/usr/bin/env bash
# The sparse GEMM's race (docs/sparse-lo.md): its op test
# `sparse_fp8_low_halves_and_their_products_match_cpu` ROUNDS times on each full build named
# in VARIANTS (build_variant.sh with TESTS=ops PACK=1: its own gpu-ops binary and kernels)
# and on each kernel-only variant in KVARIANTS (kernel_variant.sh against the first of
# VARIANTS, e.g. -DGRETA_SP_DRAIN: each sparse step waits for its own products), printing
# each run's worst nmse against the CPU and how many cases passed 1e-11. Session 49 saw the
# 128-row tiles' product 0 read 2e-11 to 4e-9, differently every run, and the 64-row tiles
# ~1e-12; session 50 found the cause in the SASS (one pair of metadata registers reloaded
# under the running products) and built `splo2` (two alternating pairs, each held until its
# products' wait) against `splo` (session 49's) and `drain`.
# Build here:
#   TESTS=ops PACK=1 tools/gpu/build_variant.sh REV NAME [PATCH]   (each of VARIANTS)
#   tools/gpu/kernel_variant.sh drain PATCH -- -DGRETA_SP_DRAIN     (each of KVARIANTS)
# and carry target/carry (v/NAME for each).
# Usage (GPU machine): OUT=dir [ROUNDS=3] [VARIANTS="splo"] [KVARIANTS="drain"] bash tools/gpu/sparse_lo_race.sh
PARTS_DEFAULT="race"
source "$(dirname "$0")/parts.sh"
bash tools/gpu/fill_variants.sh
read -r -a full <<< "${VARIANTS:-splo}"
for v in "${full[@]}"; do bash tools/gpu/unxz.sh "target/carry/v/$v/gpu-ops.xz" "/tmp/gpu-ops-$v"; done
# A kernel-only variant holds the objects that differ from the first full build's; the rest
# come from that build.
for v in ${KVARIANTS-drain}; do
  mkdir -p "/tmp/k-$v" && cp -r "target/carry/v/${full[0]}/sm_90a" "/tmp/k-$v/" && cp "target/carry/v/$v/sm_90a/"*.cubin "/tmp/k-$v/sm_90a/"
done
for r in $(seq 1 "${ROUNDS:-3}"); do
  for v in "${full[@]}" ${KVARIANTS-drain}; do
    K=$PWD/target/carry/v/$v bin=/tmp/gpu-ops-$v
    [ -d "/tmp/k-$v" ] && K=/tmp/k-$v bin=/tmp/gpu-ops-${full[0]}
    f=$R/$v-$r.txt
    GRETA_KERNELS_DIR=$K timeout 120 "$bin" --ignored --test-threads=1 --nocapture sparse > "$f" 2>&1
    rc=$?
    worst=$(grep -E "nmse" "$f" | awk '{for (i = 1; i <= NF; i++) if ($i == "nmse") print $(i + 1)}' | sort -g | tail -1)
    echo "== $v round $r: exit $rc, $(grep -c largest "$f") cases over 1e-11, worst nmse ${worst:-none}, $(grep -c "nmse" "$f") lines"
    [ $rc = 0 ] || status=1
  done
done
exit $status
