// Attention fallback: simple and exact (fp32 math) for any length, head_dim <= 256, GQA, packed
// segments, causal or not, sliding window (causal: keys i - window < j <= i); T = float | bf16.
// FlashAttention kernels (flash_attn*.cu) replace it
// for speed behind the same Backend call.
//   q, o, dout, dq: [N, H, Dh];  k, v, dk, dv: [N, Hkv, Dh];  lse, delta: [H, N] fp32
//   cu [S + 1]: segment s holds tokens cu[s]..cu[s+1]; query head h reads kv head h / (H / Hkv).
// Forward  (attn_fwd):   one warp per (query token, head); grid (ceil(N / 4), H), 4 warps a block.
//   Keys go by in tiles of 32, lane j scoring key j of the tile; online softmax (m, l) across
//   tiles; each lane owns dims lane + 32·i of the output row.
//   o = Σ_j softmax_j(scale·q·k_j) v_j,  lse = m + log(l)  (natural log, scaled scores).
// Backward: delta = Σ_d dout·o (attn_bwd_delta), then with P_ij = exp(scale·q_i·k_j − lse_i),
//   dS_ij = P_ij (dout_i·v_j − delta_i):
//   attn_bwd_dq   (warp per (i, h)):   dq_i = scale Σ_j dS_ij k_j
//   attn_bwd_dkdv (warp per (j, hkv)): dv_j = Σ_{h in group, i} P_ij dout_i,  dk_j = scale Σ dS_ij q_i
//   Both OVERWRITE their outputs. Shared memory: 4 warps x 2 x Dh floats.
// Softcap (sh.softcap = c > 0, Gemma 2's attn_logit_softcapping; 0 = none): every score
//   s = scale·q·k is replaced by c·tanh(s / c) (tanhf, fp32) before the softmax, so lse is the
//   logsumexp of the capped scores; the backward recomputes the capped s and multiplies dS by
//   1 − (s / c)². The test on sh.softcap is uniform; without the cap the arithmetic is unchanged.
#include "ferrotron_common.cuh"

#define FT_ATT_WARPS 4
#define FT_ATT_MAXD 8  // dims per lane: head_dim <= 256

struct AttnShape {
    int n, heads, kv_heads, head_dim, segments, causal;
    float scale;
    int window;  // sliding window (causal only): key j seen by query i iff i - window < j <= i; 0 = none
    float softcap;  // score cap c: s -> c tanh(s / c); 0 = none
};

// The capped score c·tanh(s / c) (c > 0), as the CPU backend computes it.
__device__ __forceinline__ float attn_softcap(float s, float c) { return tanhf(s / c) * c; }

// Largest s with cu[s] <= t.
__device__ __forceinline__ int find_segment(const int* cu, int segments, int t) {
    int lo = 0, hi = segments - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (cu[mid] <= t) lo = mid; else hi = mid - 1;
    }
    return lo;
}

template <typename T>
__device__ void attn_fwd(const T* q, const T* k, const T* v, T* o, float* lse, const int* cu, AttnShape sh) {
    extern __shared__ float smem[];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int t = blockIdx.x * FT_ATT_WARPS + warp, h = blockIdx.y;
    if (t >= sh.n) return;
    const int dh = sh.head_dim, hk = h / (sh.heads / sh.kv_heads);
    float* qs = smem + warp * dh;
    const T* qrow = q + ((long long)t * sh.heads + h) * dh;
    for (int d = lane; d < dh; d += 32) qs[d] = ld(qrow[d]);
    __syncwarp();
    const int s = find_segment(cu, sh.segments, t);
    const int k0 = sh.window > 0 ? max(cu[s], t - sh.window + 1) : cu[s], k1 = sh.causal ? t + 1 : cu[s + 1];
    const long long kst = (long long)sh.kv_heads * dh;
    const T* kb_ = k + (long long)hk * dh;
    const T* vb_ = v + (long long)hk * dh;
    float m = -FT_INF, l = 0.f, acc[FT_ATT_MAXD];
#pragma unroll
    for (int i = 0; i < FT_ATT_MAXD; ++i) acc[i] = 0.f;
    for (int kb = k0; kb < k1; kb += 32) {
        const int j = kb + lane;
        float sc = -FT_INF;
        if (j < k1) {
            const T* kr = kb_ + j * kst;
            float dot = 0.f;
            for (int d = 0; d < dh; ++d) dot += qs[d] * ld(kr[d]);
            sc = dot * sh.scale;
            if (sh.softcap > 0.f) sc = attn_softcap(sc, sh.softcap);
        }
        const float mn = fmaxf(m, warp_max(sc));
        const float p = j < k1 ? expf(sc - mn) : 0.f;
        const float corr = expf(m - mn);
        l = l * corr + warp_sum(p);
#pragma unroll
        for (int i = 0; i < FT_ATT_MAXD; ++i) acc[i] *= corr;
        const int nk = min(32, k1 - kb);
        for (int jj = 0; jj < nk; ++jj) {
            const float pj = __shfl_sync(FT_FULL_MASK, p, jj);
            const T* vr = vb_ + (kb + jj) * kst;
#pragma unroll
            for (int i = 0; i < FT_ATT_MAXD; ++i) {
                const int d = lane + 32 * i;
                if (d < dh) acc[i] += pj * ld(vr[d]);
            }
        }
        m = mn;
    }
    const float inv = l > 0.f ? 1.f / l : 0.f;
    T* orow = o + ((long long)t * sh.heads + h) * dh;
#pragma unroll
    for (int i = 0; i < FT_ATT_MAXD; ++i) {
        const int d = lane + 32 * i;
        if (d < dh) orow[d] = cvt<T>(acc[i] * inv);
    }
    if (lane == 0) lse[(long long)h * sh.n + t] = m + logf(l);
}
FT_EXPORT(attn_fwd, (const T* q, const T* k, const T* v, T* o, float* lse, const int* cu, AttnShape sh),
          (q, k, v, o, lse, cu, sh))

// delta[h, t] = Σ_d dout[t, h, d]·o[t, h, d]; warp per (t, h).
template <typename T> __device__ void attn_bwd_delta(const T* o, const T* dout, float* delta, AttnShape sh) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int t = blockIdx.x * FT_ATT_WARPS + warp, h = blockIdx.y;
    if (t >= sh.n) return;
    const long long base = ((long long)t * sh.heads + h) * sh.head_dim;
    float acc = 0.f;
    for (int d = lane; d < sh.head_dim; d += 32) acc += ld(o[base + d]) * ld(dout[base + d]);
    acc = warp_sum(acc);
    if (lane == 0) delta[(long long)h * sh.n + t] = acc;
}
FT_EXPORT(attn_bwd_delta, (const T* o, const T* dout, float* delta, AttnShape sh), (o, dout, delta, sh))

template <typename T>
__device__ void attn_bwd_dq(const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* delta,
                            T* dq, const int* cu, AttnShape sh) {
    extern __shared__ float smem[];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int t = blockIdx.x * FT_ATT_WARPS + warp, h = blockIdx.y;
    if (t >= sh.n) return;
    const int dh = sh.head_dim, hk = h / (sh.heads / sh.kv_heads);
    float* qs = smem + warp * 2 * dh;
    float* dos = qs + dh;
    const long long qoff = ((long long)t * sh.heads + h) * dh;
    for (int d = lane; d < dh; d += 32) {
        qs[d] = ld(q[qoff + d]);
        dos[d] = ld(dout[qoff + d]);
    }
    __syncwarp();
    const float lse_t = lse[(long long)h * sh.n + t], delta_t = delta[(long long)h * sh.n + t];
    const int s = find_segment(cu, sh.segments, t);
    const int k0 = sh.window > 0 ? max(cu[s], t - sh.window + 1) : cu[s], k1 = sh.causal ? t + 1 : cu[s + 1];
    const long long kst = (long long)sh.kv_heads * dh;
    const T* kb_ = k + (long long)hk * dh;
    const T* vb_ = v + (long long)hk * dh;
    float acc[FT_ATT_MAXD];
#pragma unroll
    for (int i = 0; i < FT_ATT_MAXD; ++i) acc[i] = 0.f;
    for (int kb = k0; kb < k1; kb += 32) {
        const int j = kb + lane;
        float ds = 0.f;
        if (j < k1) {
            const T *kr = kb_ + j * kst, *vr = vb_ + j * kst;
            float qk = 0.f, dp = 0.f;
            for (int d = 0; d < dh; ++d) {
                qk += qs[d] * ld(kr[d]);
                dp += dos[d] * ld(vr[d]);
            }
            if (sh.softcap > 0.f) {
                const float sc = attn_softcap(qk * sh.scale, sh.softcap), u = sc / sh.softcap;
                ds = expf(sc - lse_t) * (dp - delta_t) * (1.f - u * u);
            } else {
                const float p = expf(qk * sh.scale - lse_t);
                ds = p * (dp - delta_t);
            }
        }
        const int nk = min(32, k1 - kb);
        for (int jj = 0; jj < nk; ++jj) {
            const float dsj = __shfl_sync(FT_FULL_MASK, ds, jj);
            const T* kr = kb_ + (kb + jj) * kst;
#pragma unroll
            for (int i = 0; i < FT_ATT_MAXD; ++i) {
                const int d = lane + 32 * i;
                if (d < dh) acc[i] += dsj * ld(kr[d]);
            }
        }
    }
#pragma unroll
    for (int i = 0; i < FT_ATT_MAXD; ++i) {
        const int d = lane + 32 * i;
        if (d < dh) dq[qoff + d] = cvt<T>(acc[i] * sh.scale);
    }
}
FT_EXPORT(attn_bwd_dq,
          (const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* delta, T* dq, const int* cu,
           AttnShape sh),
          (q, k, v, dout, lse, delta, dq, cu, sh))

// grid (ceil(N / 4), Hkv): warp per (key token j, kv head).
template <typename T>
__device__ void attn_bwd_dkdv(const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* delta,
                              T* dk, T* dv, const int* cu, AttnShape sh) {
    extern __shared__ float smem[];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int j = blockIdx.x * FT_ATT_WARPS + warp, hk = blockIdx.y;
    if (j >= sh.n) return;
    const int dh = sh.head_dim, group = sh.heads / sh.kv_heads;
    float* ks = smem + warp * 2 * dh;
    float* vs = ks + dh;
    const long long koff = ((long long)j * sh.kv_heads + hk) * dh;
    for (int d = lane; d < dh; d += 32) {
        ks[d] = ld(k[koff + d]);
        vs[d] = ld(v[koff + d]);
    }
    __syncwarp();
    const int s = find_segment(cu, sh.segments, j);
    const int q0 = sh.causal ? j : cu[s];
    const int q1 = sh.window > 0 && (long long)j + sh.window < cu[s + 1] ? j + sh.window : cu[s + 1];
    const long long qst = (long long)sh.heads * dh;
    float adk[FT_ATT_MAXD], adv[FT_ATT_MAXD];
#pragma unroll
    for (int i = 0; i < FT_ATT_MAXD; ++i) adk[i] = adv[i] = 0.f;
    for (int g = 0; g < group; ++g) {
        const int h = hk * group + g;
        const T* qb_ = q + (long long)h * dh;
        const T* db_ = dout + (long long)h * dh;
        for (int ib = q0; ib < q1; ib += 32) {
            const int i = ib + lane;
            float p = 0.f, ds = 0.f;
            if (i < q1) {
                const T *qr = qb_ + i * qst, *dr = db_ + i * qst;
                float qk = 0.f, dp = 0.f;
                for (int d = 0; d < dh; ++d) {
                    qk += ld(qr[d]) * ks[d];
                    dp += ld(dr[d]) * vs[d];
                }
                if (sh.softcap > 0.f) {
                    const float sc = attn_softcap(qk * sh.scale, sh.softcap), u = sc / sh.softcap;
                    p = expf(sc - lse[(long long)h * sh.n + i]);
                    ds = p * (dp - delta[(long long)h * sh.n + i]) * (1.f - u * u);
                } else {
                    p = expf(qk * sh.scale - lse[(long long)h * sh.n + i]);
                    ds = p * (dp - delta[(long long)h * sh.n + i]);
                }
            }
            const int nq = min(32, q1 - ib);
            for (int ii = 0; ii < nq; ++ii) {
                const float pi = __shfl_sync(FT_FULL_MASK, p, ii), dsi = __shfl_sync(FT_FULL_MASK, ds, ii);
                const T *qr = qb_ + (ib + ii) * qst, *dr = db_ + (ib + ii) * qst;
#pragma unroll
                for (int c = 0; c < FT_ATT_MAXD; ++c) {
                    const int d = lane + 32 * c;
                    if (d < dh) {
                        adv[c] += pi * ld(dr[d]);
                        adk[c] += dsi * ld(qr[d]);
                    }
                }
            }
        }
    }
#pragma unroll
    for (int c = 0; c < FT_ATT_MAXD; ++c) {
        const int d = lane + 32 * c;
        if (d < dh) {
            dk[koff + d] = cvt<T>(adk[c] * sh.scale);
            dv[koff + d] = cvt<T>(adv[c]);
        }
    }
}
FT_EXPORT(attn_bwd_dkdv,
          (const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* delta, T* dk, T* dv,
           const int* cu, AttnShape sh),
          (q, k, v, dout, lse, delta, dk, dv, cu, sh))
