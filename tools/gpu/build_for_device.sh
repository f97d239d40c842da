#!/usr/bin/env bash
# Builds, on this machine, what the GPU machine runs (it has no cargo): the kernels, the
# greta binary and the GPU test binaries, into target/device/ (ignored by git), then packs
# them xz-compressed into target/carry/ (greta.xz, hiprt-gpu.xz, gpu-ops.xz, gpu-model.xz,
# kernels.txz: ~6 MB against ~19, what the GPU scripts unpack with unpack_carry.sh; other
# files there, such as variants or a model, are left as they are). Carry target/carry.
# PACK=0 skips the packing.
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf target/device && mkdir -p target/device
cargo xtask build-kernels
cp -r target/kernels target/device/kernels
cargo build --release -q -p greta-cli
cp target/release/greta target/device/greta
cp "$(bash tools/gpu/test_binary.sh hiprt gpu)" target/device/hiprt-gpu
cp "$(bash tools/gpu/test_binary.sh greta-kernels gpu_ops)" target/device/gpu-ops
cp "$(bash tools/gpu/test_binary.sh greta-model gpu_model)" target/device/gpu-model
strip target/device/greta target/device/hiprt-gpu target/device/gpu-ops target/device/gpu-model
du -sh target/device
if [ "${PACK:-1}" != 0 ]; then
  mkdir -p target/carry
  for f in greta hiprt-gpu gpu-ops gpu-model; do xz -6 -T2 -c "target/device/$f" > "target/carry/$f.xz"; done
  rm -rf target/carry/kernels && tar -C target/device -cJf target/carry/kernels.txz kernels
  du -sh target/carry
fi
