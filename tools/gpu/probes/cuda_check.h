// The probes' check of every CUDA runtime call: a failure prints the call, where it was and
// the runtime's message, and exits 2 (a probe's figures mean nothing past a failed call).
#pragma once
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

#define CK(x)                                                                                        \
    do {                                                                                             \
        cudaError_t e_ = (x);                                                                        \
        if (e_ != cudaSuccess) {                                                                     \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));       \
            exit(2);                                                                                 \
        }                                                                                            \
    } while (0)
