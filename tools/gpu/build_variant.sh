#!/usr/bin/env bash
# Builds a commit's greta binary and sm_90a kernels into target/carry/v/NAME, a variant for
# tools/gpu/kernel_variants.sh (one call compares several builds on one card), in a git
# worktree under target/worktrees so this checkout is untouched. The worktree borrows this
# checkout's nvcc (target/toolchains) and a shared cargo target directory.
# Usage (here, not on the GPU machine): [TESTS=1] [TIMELINE=1] tools/gpu/build_variant.sh REV NAME [PATCH ...]
# (TESTS=1 also builds the variant's gpu_ops and gpu_model test binaries, which
# kernel_variants.sh runs, TESTS=ops the first alone; TIMELINE=1 its timeline kernels, for
# prefill_timeline.sh; PACK=1 keeps its objects as sm_90a.txz, 0.3 MB against 2.9, which
# fill_variants.sh unpacks on the GPU machine: a variant with its op tests then fits one
# call's carry beside main's build and the default model's first 10 layers.)
#   e.g. tools/gpu/build_variant.sh main main; tools/gpu/build_variant.sh exp/gemv-split-k splitk
# PATCHes (git diffs, e.g. tools/gpu/variants/*.patch: experiments kept in the tree, since
# a branch may not outlive its session) are applied to REV first, in the order given:
#   tools/gpu/build_variant.sh main mbarpad tools/gpu/variants/cluster-mbar.patch \
#     tools/gpu/variants/occupancy-pad.patch
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 2 ] || { echo "usage: $0 REV NAME [PATCH ...]" >&2; exit 2; }
rev=$1 name=$2 root=$PWD
shift 2
wt=$root/target/worktrees/$name
rm -rf "$wt" && git worktree prune
git worktree add --detach "$wt" "$rev" > /dev/null
for p in "$@"; do git -C "$wt" apply "$root/$p"; done
mkdir -p "$wt/target" && ln -s "$root/target/toolchains" "$wt/target/toolchains"
export PATH=$root/target/toolchains/cuda-13.0/nvidia/cu13/bin:$PATH
export CARGO_TARGET_DIR=$root/target/variant-build
(cd "$wt" && cargo xtask build-kernels > /dev/null && cargo build --release -q -p greta-cli)
out=$root/target/carry/v/$name
rm -rf "$out" && mkdir -p "$out/sm_90a"
if [ "${TESTS:-0}" = 1 ] || [ "${TESTS:-0}" = ops ]; then
  # The variant's own op tests (kernel_variants.sh runs them before timing it): a patch
  # that changes a launcher or adds a test needs its own binary.
  # Its model tests too (gpu_model: graph = eager = CPU greedy, device sampling), which a
  # patch to the model's GPU path needs as much as the op tests.
  tests=("greta-kernels gpu_ops gpu-ops")
  [ "$TESTS" = 1 ] && tests+=("greta-model gpu_model gpu-model")
  for t in "${tests[@]}"; do
    read -r crate target file <<< "$t"
    bin=$(cd "$wt" && bash "$root/tools/gpu/test_binary.sh" "$crate" "$target")
    strip -o "$out/$file" "$bin" && xz -9 -f "$out/$file"
  done
fi
cp "$wt"/target/kernels/sm_90a/*.cubin "$out/sm_90a/"
if [ "${TIMELINE:-0}" = 1 ]; then
  # Its timeline kernels too (tools/gpu/prefill_timeline.sh with VARIANTS): where a patch's
  # kernels take their time in place.
  (cd "$wt" && cargo xtask build-kernels --timeline > /dev/null)
  mkdir -p "$out/timeline/sm_90a" && cp "$wt"/target/kernels-timeline/sm_90a/*.cubin "$out/timeline/sm_90a/"
fi
[ "${PACK:-0}" = 1 ] && tar -C "$out" -cJf "$out/sm_90a.txz" sm_90a && rm -r "$out/sm_90a"
strip -o "$out/greta" "$CARGO_TARGET_DIR/release/greta"
xz -9 -f "$out/greta"
git worktree remove --force "$wt"
echo "$name: $(git rev-parse --short "$rev")${*:+ + $*} -> $out ($(du -sh "$out" | cut -f1))"
