#!/usr/bin/env bash
# Builds, on this machine, what the GPU machine runs (it has no cargo): the kernels, the
# greta binary and the GPU test binaries, into target/device/ (ignored by git; pass it as
# `carry`).
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
