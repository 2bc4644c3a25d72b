// Multi-tensor AdamW (decoupled weight decay, PyTorch semantics), all fp32, with g read as
// float(g·grad_scale) (the global-norm clipping factor, folded in: no pass over the gradients):
//   p -= lr·wd_k·p;  m = b1·m + (1−b1)·g;  v = b2·v + (1−b2)·g²;
//   p -= step_size · m / (sqrt(v)/sqrt_bc2 + eps),  step_size = lr/(1−b1^t), sqrt_bc2 = sqrt(1−b2^t)
// One launch updates up to FT_ADAMW_MAX tensors, each with its own weight decay wd_k, passed by
// value (AdamWTensors, layout mirrored by kernels/src/cuda/ops_adamw.rs); blockIdx.y picks the
// tensor, blocks stride over its elements.
#include "ferrotron_common.cuh"

#define FT_ADAMW_MAX 32

struct AdamWTensors {
    unsigned long long p[FT_ADAMW_MAX];
    unsigned long long g[FT_ADAMW_MAX];
    unsigned long long m[FT_ADAMW_MAX];
    unsigned long long v[FT_ADAMW_MAX];
    long long n[FT_ADAMW_MAX];
    float wd[FT_ADAMW_MAX];
};
// The host mirror (ops_adamw.rs, same field order) asserts the same size and the offset of wd.
static_assert(sizeof(AdamWTensors) == FT_ADAMW_MAX * (5 * 8 + 4), "AdamWTensors layout");

extern "C" __global__ void adamw_multi(AdamWTensors t, float lr, float beta1, float beta2, float eps, double grad_scale,
                                       float step_size, float sqrt_bc2) {
    const int k = blockIdx.y;
    float* p = (float*)t.p[k];
    const float* g = (const float*)t.g[k];
    float* m = (float*)t.m[k];
    float* v = (float*)t.v[k];
    const long long n = t.n[k];
    const float wd = t.wd[k];
    const bool scaled = grad_scale != 1.0;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const float gi = scaled ? (float)((double)g[i] * grad_scale) : g[i];
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
