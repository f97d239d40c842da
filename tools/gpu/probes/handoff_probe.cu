// What one dependent launch costs on the decode's critical path, and what a handoff through
// a counter in memory would cost instead (session 62). SmolLM2's decode step is ~150
// dependent launches a token, each of which holds the critical path ~1.5-2 µs however
// little it does (the timelines of sessions 27 and 62): how much of that is the hardware's
// release of a programmatic wait (griddepcontrol.wait: every block of the kernel ahead has
// exited and its writes are flushed), which a counter could replace?
//
// A chain of N launches of one tiny kernel (B blocks of T threads; each thread reads the
// value the launch ahead wrote at its index, adds one and writes it to the other buffer),
// captured as one CUDA graph and replayed; the time a launch is the replay's over N. Forms:
//   plain    no programmatic launch: each launch starts once the one ahead has finished;
//   pdl      greta's decode chain: launched with programmatic stream serialization, lets
//            the next launch in at its top (griddepcontrol.launch_dependents) and waits for
//            the one ahead with griddepcontrol.wait;
//   counter  launched the same way, but waits by reading a counter of the launch ahead
//            (ld.acquire.gpu in a loop until all B blocks have counted), and counts itself
//            once its writes are done (the block's threads sync, then thread 0 adds one
//            with red.release.gpu). No griddepcontrol.wait at all: safe from deadlock
//            because a launch's blocks are scheduled only after every block of the launch
//            ahead has issued launch_dependents, i.e. is resident and will finish.
//   counter+wait  the counter form with a griddepcontrol.wait after it (what a kernel that
//            reads older launches' outputs could not skip, if transitivity did not hold).
// Every form checks its result (the value after N launches is N at every index) and says so.
// Built and run on the GPU machine (this host's toolchain has no static cudart):
//   bash tools/gpu/handoff_probe.sh (nvcc -gencode arch=compute_90a,code=sm_90a, then
//   handoff_probe [N=300] [replays=200]).
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <cuda_runtime.h>

#include "cuda_check.h"

enum Form { PLAIN = 0, PDL = 1, COUNTER = 2, COUNTER_WAIT = 3 };
static const char* kFormName[] = {"plain", "pdl", "counter", "counter+wait"};

__device__ __forceinline__ unsigned ld_acquire(const unsigned* p) {
    unsigned v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}
__device__ __forceinline__ void red_release_add(unsigned* p, unsigned v) {
    asm volatile("red.release.gpu.global.add.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

// Launch i of the chain reads src, writes dst; counters[i] counts its finished blocks.
__global__ void step(const float* src, float* dst, unsigned* counters, unsigned i, unsigned blocks, int form) {
    if (form != PLAIN) asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
    if (form == COUNTER || form == COUNTER_WAIT) {
        if (i > 0 && threadIdx.x == 0)
            while (ld_acquire(&counters[i - 1]) < blocks) {
            }
        __syncthreads();
        if (form == COUNTER_WAIT) asm volatile("griddepcontrol.wait;" ::: "memory");
    } else if (form == PDL) {
        asm volatile("griddepcontrol.wait;" ::: "memory");
    }
    const unsigned at = blockIdx.x * blockDim.x + threadIdx.x;
    dst[at] = src[at] + 1.0f;
    if (form == COUNTER || form == COUNTER_WAIT) {
        __syncthreads();
        if (threadIdx.x == 0) red_release_add(&counters[i], 1);
    }
}

int main(int argc, char** argv) {
    const unsigned n = argc > 1 ? atoi(argv[1]) : 300;
    const unsigned replays = argc > 2 ? atoi(argv[2]) : 200;
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("%s, %d SMs; a chain of %u launches, %u replays\n", prop.name, prop.multiProcessorCount, n, replays);
    printf("| blocks x threads | form | µs a launch | check |\n|---|---|---|---|\n");
    const unsigned shapes[][2] = {{1, 128}, {9, 128}, {45, 128}, {72, 256}, {132, 256}, {264, 256}};
    for (auto& sh : shapes) {
        const unsigned b = sh[0], t = sh[1], len = b * t;
        float *x0, *x1;
        unsigned* counters;
        CK(cudaMalloc(&x0, len * sizeof(float)));
        CK(cudaMalloc(&x1, len * sizeof(float)));
        CK(cudaMalloc(&counters, n * sizeof(unsigned)));
        for (int form = PLAIN; form <= COUNTER_WAIT; ++form) {
            cudaStream_t st;
            CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
            cudaGraph_t g;
            CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
            CK(cudaMemsetAsync(x0, 0, len * sizeof(float), st));
            CK(cudaMemsetAsync(counters, 0, n * sizeof(unsigned), st));
            for (unsigned i = 0; i < n; ++i) {
                cudaLaunchConfig_t cfg = {};
                cfg.gridDim = dim3(b);
                cfg.blockDim = dim3(t);
                cfg.stream = st;
                cudaLaunchAttribute attr[1];
                attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
                attr[0].val.programmaticStreamSerializationAllowed = 1;
                cfg.attrs = attr;
                // The first launch after the memsets is never programmatic (as embed_f16
                // begins greta's pass).
                cfg.numAttrs = (form != PLAIN && i > 0) ? 1 : 0;
                const float* src = i % 2 ? x1 : x0;
                float* dst = i % 2 ? x0 : x1;
                CK(cudaLaunchKernelEx(&cfg, step, src, dst, counters, i, b, form));
            }
            CK(cudaStreamEndCapture(st, &g));
            cudaGraphExec_t ge;
            CK(cudaGraphInstantiate(&ge, g, 0));
            for (int w = 0; w < 5; ++w) CK(cudaGraphLaunch(ge, st));
            CK(cudaStreamSynchronize(st));
            cudaEvent_t e0, e1;
            CK(cudaEventCreate(&e0));
            CK(cudaEventCreate(&e1));
            CK(cudaEventRecord(e0, st));
            for (unsigned r = 0; r < replays; ++r) CK(cudaGraphLaunch(ge, st));
            CK(cudaEventRecord(e1, st));
            CK(cudaEventSynchronize(e1));
            float ms = 0.0f;
            CK(cudaEventElapsedTime(&ms, e0, e1));
            std::vector<float> h(len);
            CK(cudaMemcpy(h.data(), n % 2 ? x1 : x0, len * sizeof(float), cudaMemcpyDeviceToHost));
            unsigned bad = 0;
            for (unsigned k = 0; k < len; ++k) bad += h[k] != (float)n;
            printf("| %u x %u | %s | %.3f | %s |\n", b, t, kFormName[form], ms * 1e3 / replays / n,
                   bad ? "WRONG" : "ok");
            if (bad) fprintf(stderr, "%s at %u x %u: %u of %u values wrong\n", kFormName[form], b, t, bad, len);
            CK(cudaGraphExecDestroy(ge));
            CK(cudaGraphDestroy(g));
            CK(cudaEventDestroy(e0));
            CK(cudaEventDestroy(e1));
            CK(cudaStreamDestroy(st));
        }
        CK(cudaFree(x0));
        CK(cudaFree(x1));
        CK(cudaFree(counters));
    }
    return 0;
}
