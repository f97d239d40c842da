#!/usr/bin/env bash
# On the GPU machine, after unpack_carry.sh: gives each variant directory target/carry/v/NAME/
# a whole sm_90a/ — its sm_90a.txz unpacked where it carries one (build_variant.sh with
# PACK=1: the objects xz-compressed, so that a variant, its op tests and the default model's
# first 10 layers fit one call's 64 MiB), then main's objects (target/device/kernels) for
# those it lacks (kernel_variant.sh keeps only the objects that differ; v/main may be empty).
# Run by kernel_variants.sh and variant_audits.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
for d in target/carry/v/*/; do
  # Python's tarfile, not tar -J: the GPU machine need not have xz (unxz.sh).
  [ -f "$d/sm_90a.txz" ] && python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$d/sm_90a.txz" "$d"
  mkdir -p "$d/sm_90a"
  for f in target/device/kernels/sm_90a/*.cubin; do
    [ -e "$d/sm_90a/$(basename "$f")" ] || cp "$f" "$d/sm_90a/"
  done
done
