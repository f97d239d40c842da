#!/usr/bin/env bash
# Builds a kernel-only variant for tools/gpu/kernel_variants.sh (here, not on the GPU
# machine): this checkout's kernels/ with PATCHes applied (git diffs, e.g.
# tools/gpu/variants/*.patch; only their kernels/ part is used) and nvcc FLAGS added, compiled
# for sm_90a into target/carry/v/NAME/sm_90a/ (only the objects that differ from main's). The
# variant runs main's greta binary, so the patch must not change a kernel's arguments
# (build_variant.sh builds a binary too).
# Also writes target/carry/v/NAME/regs.txt: each kernel whose registers, stack or shared
# memory differ from main's objects (target/kernels/sm_90a, `cargo xtask build-kernels`),
# since register counts have decided several of these experiments (docs/performance.md,
# sessions 11-13); kernel_variants.sh prints it beside the timings.
# Usage: tools/gpu/kernel_variant.sh NAME [PATCH ...] [-- FLAG ...]
#   e.g. tools/gpu/kernel_variant.sh pf1 tools/gpu/variants/gemv-l2-prefetch.patch -- -DGEMV_L2_GROUPS=1
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 1 ] || { echo "usage: $0 NAME [PATCH ...] [-- FLAG ...]" >&2; exit 2; }
name=$1 root=$PWD
shift
patches=() flags=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do patches+=("$1"); shift; done
[ $# -gt 0 ] && shift
flags=("$@")
export PATH=$root/target/toolchains/cuda-13.0/nvidia/cu13/bin:$PATH
command -v nvcc > /dev/null || { echo "no nvcc: run cargo xtask build-kernels once (it installs one)" >&2; exit 1; }
base=$root/target/kernels/sm_90a
[ -d "$base" ] || { echo "no $base: run cargo xtask build-kernels first" >&2; exit 1; }
cuobjdump=$root/target/toolchains/cuobjdump-13.2/nvidia/cu13/bin/cuobjdump
[ -x "$cuobjdump" ] || cuobjdump=$(command -v cuobjdump || true)
work=$(mktemp -d) && trap 'rm -rf "$work"' EXIT
cp -r kernels "$work/kernels"
for p in "${patches[@]}"; do git -C "$work" apply --include='kernels/*' "$root/$p"; done
out=$root/target/carry/v/$name
rm -rf "$out" && mkdir -p "$out/sm_90a"
for src in "$work"/kernels/*.hip; do
  n=$(basename "$src" .hip)
  nvcc -cubin -O3 -std=c++17 -x cu -arch=sm_90a -I"$work/kernels" "${flags[@]}" "$src" -o "$out/sm_90a/$n.cubin"
done
# Resource usage, main's against the variant's, for the kernels that differ.
usage() { "$cuobjdump" --dump-resource-usage "$1" | grep -o 'Function [A-Za-z0-9_]*\|REG:[0-9]*\|STACK:[0-9]*\|SHARED:[0-9]*' | paste - - - - | sort; }
{
  echo "$name: kernels/ + ${patches[*]:-no patch} ${flags[*]:-}"
  if [ -n "$cuobjdump" ]; then
    for c in "$out"/sm_90a/*.cubin; do
      diff <(usage "$base/$(basename "$c")") <(usage "$c") | grep '^[<>]' | sed 's/^</main:/; s/^>/this:/' || true
    done
    # xtask's check (loads_before_wait: it reads every object of main's build), here for a
    # variant's decode products: any load but the weights' before griddepcontrol.wait
    # (ACQBULK) reads the kernel ahead's output early (session 14's "+10 %").
    "$cuobjdump" -sass "$out/sm_90a/gemv.cubin" | awk '
      /Function :/ { f = $3; waited = 0 }
      /ACQBULK/ { waited = 1 }
      !waited && match($0, /LDG[.A-Z0-9_]*|LD\.[.A-Z0-9_]*/) {
        l = substr($0, RSTART, RLENGTH); if (l != "LDG.E.EF.128") print "RACE: " f " loads " l " before the wait" }'
  else
    echo "(no cuobjdump: resource usage and loads before the wait not checked)"
  fi
} > "$out/regs.txt"
cat "$out/regs.txt"
changed=$(for c in "$out"/sm_90a/*.cubin; do cmp -s "$c" "$base/$(basename "$c")" || basename "$c"; done | tr '\n' ' ')
# Objects equal to main's stay behind (kernel_variants.sh takes them from the carried main
# build): a variant then costs the carry only what it changes.
for c in "$out"/sm_90a/*.cubin; do
  if cmp -s "$c" "$base/$(basename "$c")"; then rm "$c"; fi
done
echo "$name -> $out (objects that differ from main's, the only ones kept: ${changed:-none})"
