// Fused softmax cross-entropy, one block per row of logits [N, V] (T = float | bf16), targets [N].
// Pass 1 streams the row once keeping an online (max, sum-exp) pair per thread, merged across the
// block: lse = m + log(s). Pass 2 (when dlogits is wanted) streams it again and writes
//   dlogits[n, j] = grad_scale·(exp(x_j − lse) − [j == t])
// so no fp32 copy of the logits ever exists; dlogits may alias the logits (in place). losses[n] =
// lse − x_t (fp32). A target outside
// [0, V) (−100 by convention) means "ignored": loss 0 and a zero gradient row.
#include "ferrotron_common.cuh"

__device__ __forceinline__ void online_merge(float& m, float& s, float m2, float s2) {
    const float mn = fmaxf(m, m2);
    if (mn == -FT_INF) return;
    s = s * expf(m - mn) + s2 * expf(m2 - mn);
    m = mn;
}

// Max m and Σ exp(x − m) over columns [0, cols) of one row, merged online (one pass) across the
// block; every thread gets the row's (m, s).
template <typename T>
__device__ void block_row_max_sumexp(const T* x, long long cols, float& m_out, float& s_out) {
    __shared__ float sm[32], ss[32];
    float m = -FT_INF, s = 0.f;
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) {
        const float xj = ld(x[j]);
        if (xj > m) {
            s = s * expf(m - xj) + 1.f;
            m = xj;
        } else {
            s += expf(xj - m);
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float m2 = __shfl_xor_sync(FT_FULL_MASK, m, o), s2 = __shfl_xor_sync(FT_FULL_MASK, s, o);
        online_merge(m, s, m2, s2);
    }
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    if (lane == 0) {
        sm[wid] = m;
        ss[wid] = s;
    }
    __syncthreads();
    m = lane < nw ? sm[lane] : -FT_INF;
    s = lane < nw ? ss[lane] : 0.f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float m2 = __shfl_xor_sync(FT_FULL_MASK, m, o), s2 = __shfl_xor_sync(FT_FULL_MASK, s, o);
        online_merge(m, s, m2, s2);
    }
    m_out = m;
    s_out = s;
}

template <typename T>
__device__ void cross_entropy(const T* logits, const int* targets, float* losses, T* dlogits, int want_grad,
                              long long v, float grad_scale) {
    const long long row = blockIdx.x;
    const T* x = logits + row * v;
    const int t = targets[row];
    const bool ignored = t < 0 || (long long)t >= v;
    float m, s;
    block_row_max_sumexp(x, v, m, s);
    const float lse = m + logf(s);
    if (threadIdx.x == 0) losses[row] = ignored ? 0.f : lse - ld(x[t]);
    if (!want_grad) return;
    // dlogits may be the logits themselves (Backend::cross_entropy_in_place): every thread has
    // read the row (block_row_max_sumexp ends past a barrier) and thread 0 the target's logit
    // before any element is overwritten; below each element is read before it is written.
    __syncthreads();
    T* dx = dlogits + row * v;
    for (long long j = threadIdx.x; j < v; j += blockDim.x) {
        const float g = ignored ? 0.f : grad_scale * (expf(ld(x[j]) - lse) - (j == t ? 1.f : 0.f));
        dx[j] = cvt<T>(g);
    }
}
FT_EXPORT(cross_entropy,
          (const T* logits, const int* targets, float* losses, T* dlogits, int want_grad, long long v, float gs),
          (logits, targets, losses, dlogits, want_grad, v, gs))

// Vocab-parallel cross-entropy (math: kernels/src/cpu/vocab_ce.rs), one block per row of this
// rank's logits [N, V]: columns 0..valid are the ids start..start+valid, the rest padding.
// cross_entropy_stats: stats = row max ‖ Σ exp(x − max) ‖ the target's logit if it is this rank's.
// cross_entropy_finish: from every rank's stats (all [parts·3N], rank order) M = max m_r,
// S = Σ s_r·exp(m_r − M), Z = Σ z_r; losses = M + ln S − Z; dlogits = gs·(exp(x − M)/S − onehot)
// on valid columns, 0 on padding and ignored rows (targets < 0).
template <typename T>
__device__ void cross_entropy_stats(const T* logits, const int* targets, float* stats, long long n, long long v,
                                    long long valid, long long start) {
    const long long row = blockIdx.x;
    const T* x = logits + row * v;
    float m, s;
    block_row_max_sumexp(x, valid, m, s);
    if (threadIdx.x == 0) {
        const long long t = targets[row];
        stats[row] = m;
        stats[n + row] = s;
        stats[2 * n + row] = (t >= start && t < start + valid) ? ld(x[t - start]) : 0.f;
    }
}
FT_EXPORT(cross_entropy_stats,
          (const T* logits, const int* targets, float* stats, long long n, long long v, long long valid,
           long long start),
          (logits, targets, stats, n, v, valid, start))

template <typename T>
__device__ void cross_entropy_finish(const T* logits, const int* targets, const float* all, int parts,
                                     float* losses, T* dlogits, int want_grad, long long n, long long v,
                                     long long valid, long long start, float gs) {
    const long long row = blockIdx.x;
    const int t = targets[row];
    const bool ignored = t < 0;
    float mx = -FT_INF, sum = 0.f, z = 0.f;
    for (int r = 0; r < parts; ++r) mx = fmaxf(mx, all[(long long)r * 3 * n + row]);
    for (int r = 0; r < parts; ++r) {
        const float sr = all[(long long)r * 3 * n + n + row];
        if (sr > 0.f) sum += sr * expf(all[(long long)r * 3 * n + row] - mx);
        z += all[(long long)r * 3 * n + 2 * n + row];
    }
    if (threadIdx.x == 0) losses[row] = ignored ? 0.f : mx + logf(sum) - z;
    if (!want_grad) return;
    const T* x = logits + row * v;
    T* dx = dlogits + row * v;
    const long long tc = (long long)t - start;
    for (long long j = threadIdx.x; j < v; j += blockDim.x) {
        const float g = (ignored || j >= valid) ? 0.f : gs * (expf(ld(x[j]) - mx) / sum - (j == tc ? 1.f : 0.f));
        dx[j] = cvt<T>(g);
    }
}
FT_EXPORT(cross_entropy_finish,
          (const T* logits, const int* targets, const float* all, int parts, float* losses, T* dlogits,
           int want_grad, long long n, long long v, long long valid, long long start, float gs),
          (logits, targets, all, parts, losses, dlogits, want_grad, n, v, valid, start, gs))
