// Multi-tensor AdamW (decoupled weight decay, PyTorch semantics), all fp32:
//   p -= lr·wd·p;  m = b1·m + (1−b1)·g;  v = b2·v + (1−b2)·g²;
//   p -= step_size · m / (sqrt(v)/sqrt_bc2 + eps),  step_size = lr/(1−b1^t), sqrt_bc2 = sqrt(1−b2^t)
// One launch updates up to FT_ADAMW_MAX tensors, passed by value (AdamWTensors, layout mirrored by
// kernels/src/cuda/adamw.rs); blockIdx.y picks the tensor, blocks stride over its elements.
#include "ferrotron_common.cuh"

#define FT_ADAMW_MAX 16

struct AdamWTensors {
    unsigned long long p[FT_ADAMW_MAX];
    unsigned long long g[FT_ADAMW_MAX];
    unsigned long long m[FT_ADAMW_MAX];
    unsigned long long v[FT_ADAMW_MAX];
    long long n[FT_ADAMW_MAX];
};

extern "C" __global__ void adamw_multi(AdamWTensors t, float lr, float beta1, float beta2, float eps, float wd,
                                       float step_size, float sqrt_bc2) {
    const int k = blockIdx.y;
    float* p = (float*)t.p[k];
    const float* g = (const float*)t.g[k];
    float* m = (float*)t.m[k];
    float* v = (float*)t.v[k];
    const long long n = t.n[k];
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const float gi = g[i];
        float pi = p[i];
        pi -= lr * wd * pi;
        const float mi = beta1 * m[i] + (1.f - beta1) * gi;
        const float vi = beta2 * v[i] + (1.f - beta2) * gi * gi;
        pi -= step_size * mi / (sqrtf(vi) / sqrt_bc2 + eps);
        p[i] = pi;
        m[i] = mi;
        v[i] = vi;
    }
}
