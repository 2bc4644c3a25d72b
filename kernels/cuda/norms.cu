// RMSNorm and LayerNorm, forward and backward. x, y, dy, dx [N, D] (T = float | bf16);
// w, b [D] (T); statistics rstd, mean [N] and parameter gradients dw, db [D] are fp32.
//   rms fwd:  rstd = 1/sqrt(mean_d x² + eps);  y = x·rstd·s,  s = w + woff (woff 1 for Gemma's
//             RMSNorm, whose stored weight is the scale minus one; 0 otherwise)
//   rms bwd:  dx += rstd·(dy·s) − x·rstd³·(Σ_d dy·s·x)/D;      dw += Σ_n dy·x·rstd
//   ln fwd:   mean = mean_d x, rstd = 1/sqrt(mean_d (x−mean)² + eps);  y = (x−mean)·rstd·w + b
//   ln bwd:   x̂ = (x−mean)·rstd, g = dy·w;  dx += rstd·(g − mean_d g − x̂·mean_d(g·x̂))
//             dw += Σ_n dy·x̂,  db += Σ_n dy
//   residual_*_fwd:  h += y (rounded to T), then the norm's forward on the updated h: the residual
//             add fused with the norm after it (one launch; h is read from DRAM once instead of
//             twice). Bit for bit add_act + *_fwd: same rounding of h, same reduction order
//             (same block size, see ops_norms.rs). Forward only: the add's backward is the
//             identity and *_bwd_dx already ADDS into the residual gradient.
// Row kernels: one block per row (block reductions). Column kernels (dw, db): one thread per
// column over a chunk of rows (blockIdx.y), partial sums atomically added into fp32.
#include "ferrotron_common.cuh"

template <typename T>
__device__ void rmsnorm_fwd(const T* x, const T* w, T* y, float* rstd, int d, float eps, float woff) {
    const long long row = blockIdx.x;
    const T* xr = x + row * d;
    float ss = 0.f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        const float v = ld(xr[i]);
        ss += v * v;
    }
    ss = block_sum(ss);
    const float r = 1.f / sqrtf(ss / (float)d + eps);
    T* yr = y + row * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) yr[i] = cvt<T>(ld(xr[i]) * r * (ld(w[i]) + woff));
    if (threadIdx.x == 0) rstd[row] = r;
}
FT_EXPORT(rmsnorm_fwd, (const T* x, const T* w, T* y, float* rstd, int d, float eps, float woff),
          (x, w, y, rstd, d, eps, woff))

// h += y, then rmsnorm_fwd on h. Each thread re-reads only the elements of h it wrote itself.
template <typename T>
__device__ void residual_rmsnorm_fwd(T* h, const T* y, const T* w, T* out, float* rstd, int d, float eps,
                                     float woff) {
    const long long row = blockIdx.x;
    T* hr = h + row * d;
    const T* yr = y + row * d;
    float ss = 0.f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        const T s = cvt<T>(ld(hr[i]) + ld(yr[i]));
        hr[i] = s;
        const float v = ld(s);
        ss += v * v;
    }
    ss = block_sum(ss);
    const float r = 1.f / sqrtf(ss / (float)d + eps);
    T* outr = out + row * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) outr[i] = cvt<T>(ld(hr[i]) * r * (ld(w[i]) + woff));
    if (threadIdx.x == 0) rstd[row] = r;
}
FT_EXPORT(residual_rmsnorm_fwd, (T * h, const T* y, const T* w, T* out, float* rstd, int d, float eps, float woff),
          (h, y, w, out, rstd, d, eps, woff))

template <typename T>
__device__ void rmsnorm_bwd_dx(const T* x, const T* w, const float* rstd, const T* dy, T* dx, int d, float woff) {
    const long long row = blockIdx.x;
    const T *xr = x + row * d, *dyr = dy + row * d;
    float dot = 0.f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) dot += ld(dyr[i]) * (ld(w[i]) + woff) * ld(xr[i]);
    dot = block_sum(dot);
    const float r = rstd[row];
    const float c = r * r * r * dot / (float)d;
    T* dxr = dx + row * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x)
        dxr[i] = cvt<T>(ld(dxr[i]) + r * ld(dyr[i]) * (ld(w[i]) + woff) - ld(xr[i]) * c);
}
FT_EXPORT(rmsnorm_bwd_dx, (const T* x, const T* w, const float* rstd, const T* dy, T* dx, int d, float woff),
          (x, w, rstd, dy, dx, d, woff))

// dw[c] += Σ_{n in chunk} dy[n, c]·x[n, c]·rstd[n]
template <typename T>
__device__ void rmsnorm_bwd_dw(const T* x, const float* rstd, const T* dy, float* dw, long long n, int d,
                               long long rows_per_chunk) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= d) return;
    const long long r0 = blockIdx.y * rows_per_chunk;
    const long long r1 = min(n, r0 + rows_per_chunk);
    float acc = 0.f;
    for (long long r = r0; r < r1; ++r) acc += ld(dy[r * d + c]) * ld(x[r * d + c]) * rstd[r];
    if (r1 > r0) atomicAdd(dw + c, acc);
}
FT_EXPORT(rmsnorm_bwd_dw, (const T* x, const float* rstd, const T* dy, float* dw, long long n, int d, long long rpc),
          (x, rstd, dy, dw, n, d, rpc))

template <typename T>
__device__ void layernorm_fwd(const T* x, const T* w, const T* b, T* y, float* mean, float* rstd, int d, float eps) {
    const long long row = blockIdx.x;
    const T* xr = x + row * d;
    float s = 0.f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) s += ld(xr[i]);
    const float mu = block_sum(s) / (float)d;
    float ss = 0.f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        const float v = ld(xr[i]) - mu;
        ss += v * v;
    }
    const float r = 1.f / sqrtf(block_sum(ss) / (float)d + eps);
    T* yr = y + row * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) yr[i] = cvt<T>((ld(xr[i]) - mu) * r * ld(w[i]) + ld(b[i]));
    if (threadIdx.x == 0) {
        mean[row] = mu;
        rstd[row] = r;
    }
}
FT_EXPORT(layernorm_fwd, (const T* x, const T* w, const T* b, T* y, float* mean, float* rstd, int d, float eps),
          (x, w, b, y, mean, rstd, d, eps))

// h += y, then layernorm_fwd on h (same passes and reduction order).
template <typename T>
__device__ void residual_layernorm_fwd(T* h, const T* y, const T* w, const T* b, T* out, float* mean, float* rstd,
                                       int d, float eps) {
    const long long row = blockIdx.x;
    T* hr = h + row * d;
    const T* yr = y + row * d;
    float s = 0.f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        const T v = cvt<T>(ld(hr[i]) + ld(yr[i]));
        hr[i] = v;
        s += ld(v);
    }
    const float mu = block_sum(s) / (float)d;
    float ss = 0.f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        const float v = ld(hr[i]) - mu;
        ss += v * v;
    }
    const float r = 1.f / sqrtf(block_sum(ss) / (float)d + eps);
    T* outr = out + row * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x)
        outr[i] = cvt<T>((ld(hr[i]) - mu) * r * ld(w[i]) + ld(b[i]));
    if (threadIdx.x == 0) {
        mean[row] = mu;
        rstd[row] = r;
    }
}
FT_EXPORT(residual_layernorm_fwd,
          (T * h, const T* y, const T* w, const T* b, T* out, float* mean, float* rstd, int d, float eps),
          (h, y, w, b, out, mean, rstd, d, eps))

template <typename T>
__device__ void layernorm_bwd_dx(const T* x, const T* w, const float* mean, const float* rstd, const T* dy, T* dx,
                                 int d) {
    const long long row = blockIdx.x;
    const T *xr = x + row * d, *dyr = dy + row * d;
    const float mu = mean[row], r = rstd[row];
    float sg = 0.f, sgx = 0.f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        const float g = ld(dyr[i]) * ld(w[i]);
        sg += g;
        sgx += g * (ld(xr[i]) - mu) * r;
    }
    const float mg = block_sum(sg) / (float)d;
    const float mgx = block_sum(sgx) / (float)d;
    T* dxr = dx + row * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        const float g = ld(dyr[i]) * ld(w[i]);
        const float xh = (ld(xr[i]) - mu) * r;
        dxr[i] = cvt<T>(ld(dxr[i]) + r * (g - mg - xh * mgx));
    }
}
FT_EXPORT(layernorm_bwd_dx, (const T* x, const T* w, const float* mean, const float* rstd, const T* dy, T* dx, int d),
          (x, w, mean, rstd, dy, dx, d))

// dw[c] += Σ dy·x̂,  db[c] += Σ dy over a chunk of rows.
template <typename T>
__device__ void layernorm_bwd_dwdb(const T* x, const float* mean, const float* rstd, const T* dy, float* dw, float* db,
                                   long long n, int d, long long rows_per_chunk) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= d) return;
    const long long r0 = blockIdx.y * rows_per_chunk;
    const long long r1 = min(n, r0 + rows_per_chunk);
    float aw = 0.f, ab = 0.f;
    for (long long r = r0; r < r1; ++r) {
        const float g = ld(dy[r * d + c]);
        aw += g * (ld(x[r * d + c]) - mean[r]) * rstd[r];
        ab += g;
    }
    if (r1 > r0) {
        atomicAdd(dw + c, aw);
        atomicAdd(db + c, ab);
    }
}
FT_EXPORT(layernorm_bwd_dwdb,
          (const T* x, const float* mean, const float* rstd, const T* dy, float* dw, float* db, long long n, int d,
           long long rpc),
          (x, mean, rstd, dy, dw, db, n, d, rpc))

// Bias gradient of a linear layer: db[c] += Σ_n dy[n, c] (same column scheme).
template <typename T>
__device__ void column_sum(const T* dy, float* db, long long n, int d, long long rows_per_chunk) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= d) return;
    const long long r0 = blockIdx.y * rows_per_chunk;
    const long long r1 = min(n, r0 + rows_per_chunk);
    float acc = 0.f;
    for (long long r = r0; r < r1; ++r) acc += ld(dy[r * d + c]);
    if (r1 > r0) atomicAdd(db + c, acc);
}
FT_EXPORT(column_sum, (const T* dy, float* db, long long n, int d, long long rpc), (dy, db, n, d, rpc))
