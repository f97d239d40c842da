#!/usr/bin/env bash
# The drafted sparse GEMM's race (docs/sparse-lo.md; tools/gpu/variants/sparse-lo-gemm.patch):
# its op test `sparse_fp8_low_halves_and_their_products_match_cpu` ROUNDS times on the
# patch's own kernels and on each kernel-only variant named in KVARIANTS (built with
# tools/gpu/kernel_variant.sh against the patch, e.g. -DGRETA_SP_DRAIN: each sparse step
# waits for its own products), printing each run's worst nmse against the CPU and how many
# cases passed 1e-11. Session 49 saw the 128-row tiles' product 0 read 2e-11 to 4e-9,
# differently every run, and the 64-row tiles ~1e-12.
# Build here:
#   TESTS=ops PACK=1 tools/gpu/build_variant.sh HEAD splo tools/gpu/variants/sparse-lo-gemm.patch
#   tools/gpu/kernel_variant.sh drain tools/gpu/variants/sparse-lo-gemm.patch -- -DGRETA_SP_DRAIN
# and carry target/carry (v/splo, v/drain, kernels.txz).
# Usage (GPU machine): OUT=dir [ROUNDS=3] [KVARIANTS="drain"] bash tools/gpu/sparse_lo_race.sh
PARTS_DEFAULT="race"
source "$(dirname "$0")/parts.sh"
bash tools/gpu/fill_variants.sh
bash tools/gpu/unxz.sh target/carry/v/splo/gpu-ops.xz /tmp/gpu-ops-splo
# A kernel-only variant holds the objects that differ from main's (the patch's gemm and ops,
# with its flags); the rest come from the patch's full build.
for v in ${KVARIANTS:-drain}; do
  mkdir -p /tmp/k-$v && cp -r target/carry/v/splo/sm_90a /tmp/k-$v/ && cp target/carry/v/$v/sm_90a/*.cubin /tmp/k-$v/sm_90a/
done
for r in $(seq 1 "${ROUNDS:-3}"); do
  for v in splo ${KVARIANTS:-drain}; do
    K=$PWD/target/carry/v/splo
    [ "$v" != splo ] && K=/tmp/k-$v
    f=$R/$v-$r.txt
    GRETA_KERNELS_DIR=$K timeout 120 /tmp/gpu-ops-splo --ignored --test-threads=1 --nocapture sparse > "$f" 2>&1
    rc=$?
    worst=$(grep -E "nmse" "$f" | awk '{for (i = 1; i <= NF; i++) if ($i == "nmse") print $(i + 1)}' | sort -g | tail -1)
    echo "== $v round $r: exit $rc, $(grep -c largest "$f") cases over 1e-11, worst nmse ${worst:-none}"
    [ $rc = 0 ] || status=1
  done
done
exit $status
