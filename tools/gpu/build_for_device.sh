#!/usr/bin/env bash
# Builds, on this machine, what the GPU machine runs (it has no cargo): the greta binary and
# the GPU test binaries, into target/device/ (ignored by git; pass it as `carry`).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p target/device
cargo build --release -q -p greta-cli
cp target/release/greta target/device/greta
bin=$(cargo test --release -q -p hiprt --test gpu --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys; print([j["executable"] for j in map(json.loads, sys.stdin) if j.get("executable") and j["target"]["name"]=="gpu"][0])')
cp "$bin" target/device/hiprt-gpu
strip target/device/greta target/device/hiprt-gpu
ls -la target/device
