# Sourced by the Nsight Compute scripts on the GPU machine, from the repository root: unpacks
# a compressed carry whenever there is one (a warm machine keeps the last call's
# target/device, which may be another build's), points greta at the carried kernels, and
# sets G (greta) and NCU (ncu's path), or exits saying ncu is absent.
if [ -f target/carry/greta.xz ]; then bash tools/gpu/unpack_carry.sh; fi
export GRETA_KERNELS_DIR=$PWD/target/device/kernels
G=$PWD/target/device/greta
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
[ -n "$NCU" ] || { echo "no ncu on this machine"; exit 1; }
# VARIANT=NAME: a variant's build instead (target/carry/v/NAME, tools/gpu/build_variant.sh):
# its binary where it has one, its kernels with main's filling the rest.
if [ -n "${VARIANT:-}" ]; then
  vd=$PWD/target/carry/v/$VARIANT
  [ -d "$vd" ] || { echo "no variant $vd"; exit 1; }
  bash tools/gpu/fill_variants.sh
  export GRETA_KERNELS_DIR=$vd
  if [ -f "$vd/greta.xz" ]; then bash tools/gpu/unxz.sh "$vd/greta.xz" "/tmp/greta-$VARIANT"; G=/tmp/greta-$VARIANT; fi
fi
