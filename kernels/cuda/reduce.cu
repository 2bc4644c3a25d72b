// Reductions over an fp32 region x [n], accumulated in fp64: each block writes one partial
// (partials [gridDim.x]); the host adds the partials (deterministic for a fixed grid).
//   sum_partials:          Σ x
//   sum_squares_partials:  Σ x²
#include "ferrotron_common.cuh"

__device__ __forceinline__ void reduce_partials(const float* x, long long n, double* partials, bool squares) {
    double acc = 0.0;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const double v = x[i];
        acc += squares ? v * v : v;
    }
    acc = block_sum_d(acc);
    if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

extern "C" __global__ void sum_partials(const float* x, long long n, double* partials) {
    reduce_partials(x, n, partials, false);
}
extern "C" __global__ void sum_squares_partials(const float* x, long long n, double* partials) {
    reduce_partials(x, n, partials, true);
}
