// FlashAttention-2 forward and backward for bf16 on tensor cores (mma.sync m16n8k16, ldmatrix,
// cp.async double buffering). Compiled by NVRTC with -DHEAD_DIM=64|128; no CUDA headers needed.
//
// Shapes (token-major, packed varlen batch; see kernels/src/backend.rs AttnDims):
//   q, o, dout, dq  [N, H, Dh]     k, v, dk, dv  [N, Hkv, Dh]     lse [H, N] fp32
//   cu_seqlens [segments + 1]: segment s holds tokens cu[s]..cu[s+1]; query head h reads kv head
//   h / (H / Hkv); causal masks key j > query i relative to the segment start, and a sliding
//   window w (causal) also key j <= query i - w. Key tiles wholly outside the window are never
//   loaded: forward and dQ start at the first tile the window reaches, dK/dV stop after the last
//   query tile that reaches it, so the work grows with S·w instead of S².
//
// Algorithm (Dao, "FlashAttention-2", 2023):
//   forward (one CTA per (query tile, head, segment)): Q tile in smem; for each K/V tile
//     S = scale * Q K^T; m' = max(m, rowmax S); P = exp(S - m'); l = l e^{m-m'} + rowsum P;
//     O = O e^{m-m'} + P V.   Finally O /= l, lse = m + log l.  Exponentials are taken base 2
//     with scale * log2(e) folded into the scores.
//   backward, three launches, no scratch memory:
//     1. flash_bwd_dot_do_o:  D[n, h] = sum_d dO[n,h,d] O[n,h,d]  (fp32), stored inside the dq
//        buffer (the first 4 bytes of each (n, h) row of dq), which is free until pass 3.
//     2. flash_bwd_dkdv (one CTA per (key tile, kv head, segment)), warps own key rows:
//        for every query head of the group and every query tile:
//          S^T = K Q^T;  P^T = exp(scale S^T - lse);  dV += P^T dO;  dP^T = V dO^T;
//          dS^T = P^T (dP^T - D);  dK += dS^T Q.     Finally dK *= scale.
//     3. flash_bwd_dq (one CTA per (query tile, head, segment)): reads its rows' D, then
//          S = Q K^T;  P = exp(scale S - lse);  dP = dO V^T;  dS = P (dP - D);  dQ += dS K,
//        finally dQ *= scale, overwriting the D it read.
//   Pass 3 recomputes S and dP (7 GEMMs in all instead of 5) in exchange for needing neither an
//   fp32 dQ accumulator nor atomics: the op allocates nothing beyond O, lse and the gradients.
//
// Softcap (Gemma 2's attn_logit_softcapping c): flash_fwd_softcap, flash_bwd_dkdv_softcap and
// flash_bwd_dq_softcap are the same bodies compiled with kCap = true (the plain kernels are
// exactly the code without the cap). The natural-scale score s = scale * q.k becomes
// s_c = c * tanh(s / c) BEFORE the mask and the softmax: the kernels compute
// t = tanh(q.k * (scale / c)) (tanh.approx.f32) and only then go to the log2 domain,
// s_c * log2(e) = t * (c * log2(e)); lse is the natural-log logsumexp of the capped scores.
// The backward recomputes t and P = exp2(t * c log2(e) - lse log2(e)) and multiplies dS by the
// cap's derivative d s_c / d s = 1 - t^2 (= 1 - (s_c / c)^2; masked entries have P = 0).
// The cap reaches them as a second parameter (SoftcapParams: scale / c and c log2(e)), so
// AttnParams and the plain kernels' signatures are those of the code without a cap.
// -DFA_SOFTCAP=0 compiles only the plain kernels, -DFA_SOFTCAP=1 only the *_softcap ones (the
// launch side builds one module per variant, so a model without the cap compiles and loads
// exactly what it did before); without the define both are compiled (the CI compile check).
// flash_bwd_dot_do_o is in every variant.
//
// Warp tiling: every GEMM is warp-local. A warp owns 16 * kMI consecutive rows of the
// accumulator and all of its columns; A operands come from swizzled smem via ldmatrix (or from the
// previous GEMM's accumulators, re-packed to bf16 in registers), B operands via ldmatrix(.trans).
// Smem tiles are [rows, HEAD_DIM] bf16 row-major; the 16-byte chunk c of row r lives at chunk
// c ^ (r & 7), so both cp.async stores and ldmatrix loads are bank-conflict free.

#ifndef HEAD_DIM
#define HEAD_DIM 128
#endif

typedef unsigned short bf16;  // storage only; math is fp32 or on tensor cores
typedef unsigned int u32;

// ---------------------------------------------------------------------------------------------
// Kernel parameters (mirrors kernels/src/cuda/flash_attn/params.rs, #[repr(C)]).
// ---------------------------------------------------------------------------------------------
struct AttnParams {
    const bf16* q;      // [N, H, Dh]
    const bf16* k;      // [N, Hkv, Dh]
    const bf16* v;      // [N, Hkv, Dh]
    bf16* o;            // [N, H, Dh]   forward output; backward input
    float* lse;         // [H, N]       forward output; backward input
    const bf16* dout;   // [N, H, Dh]   backward only
    bf16* dq;           // [N, H, Dh]   backward only (also holds D between passes 1 and 3)
    bf16* dk;           // [N, Hkv, Dh]
    bf16* dv;           // [N, Hkv, Dh]
    const int* cu_seqlens;  // [segments + 1]
    int tokens, heads, kv_heads, group;  // group = heads / kv_heads
    int causal;
    float scale;        // softmax scale
    float scale_log2;   // scale * log2(e)
    int segments;       // number of packed sequences (cu_seqlens has segments + 1 entries)
    int sched_chunk;    // CTA order: groups per chunk, >= 1 (see sched_tile)
    int window;         // sliding window (causal only): key j seen by query i iff i - window < j <= i;
                        // 0 = none
};

// The *_softcap kernels' second parameter (mirrors SoftcapParams in
// kernels/src/cuda/flash_attn/params.rs): with c the cap, t = tanh(q.k * scale_in) and the capped
// score in log2 units is t * log2_c.
struct SoftcapParams {
    float scale_in;  // scale / c
    float log2_c;    // c * log2(e)
};

// ---------------------------------------------------------------------------------------------
// Tile traits. The launch side (kernels/src/cuda/flash_attn/params.rs, TileConfig) passes the
// tunable ones as defines; the defaults here are its defaults for head dim 128.
// ---------------------------------------------------------------------------------------------
#ifndef FA_FWD_BN
#define FA_FWD_BN 64    // forward K/V tile rows
#endif
#ifndef FA_KV_WARPS
#define FA_KV_WARPS 4   // dK/dV: warps per CTA (16 key rows each): K/V tile = 16 * warps rows
#endif
#ifndef FA_KV_BM
#define FA_KV_BM 64     // dK/dV: Q/dO tile rows
#endif
#ifndef FA_DQ_WARPS
#define FA_DQ_WARPS 4   // dQ: warps per CTA (16 query rows each): Q/dO tile = 16 * warps rows
#endif
#ifndef FA_RESCALE
#define FA_RESCALE 0    // forward: raise the running max only when exceeded by more (log2 units)
#endif
#ifndef FA_DQ_BN
#define FA_DQ_BN 64     // dQ: K/V tile rows
#endif
#ifndef FA_SOFTCAP      // which kernels to compile (see the top of the file)
#define FA_PLAIN_KERNELS 1
#define FA_SOFTCAP_KERNELS 1
#elif FA_SOFTCAP
#define FA_PLAIN_KERNELS 0
#define FA_SOFTCAP_KERNELS 1
#else
#define FA_PLAIN_KERNELS 1
#define FA_SOFTCAP_KERNELS 0
#endif
constexpr int kChunks = HEAD_DIM / 8;       // 16-byte chunks per smem row
constexpr int kRowBytes = HEAD_DIM * 2;
// forward: (kFwdBlockM, HEAD_DIM) query tile, (kFwdBlockN, HEAD_DIM) K/V tiles, 4 warps x 32 rows
constexpr int kFwdWarps = 4;
constexpr int kFwdMI = 2;
constexpr int kFwdBlockM = 16 * kFwdMI * kFwdWarps;  // 128
constexpr int kFwdBlockN = FA_FWD_BN;                // 64
constexpr int kFwdThreads = 32 * kFwdWarps;
// backward dK/dV: (kKvBlockN, HEAD_DIM) K/V tile, (kKvBlockM, HEAD_DIM) Q/dO tiles, warps x 16 rows
constexpr int kKvWarps = FA_KV_WARPS;
constexpr int kKvMI = 1;
constexpr int kKvBlockN = 16 * kKvMI * kKvWarps;  // 64
constexpr int kKvBlockM = FA_KV_BM;               // 64
constexpr int kKvThreads = 32 * kKvWarps;
constexpr int kKvMinBlocks = kKvWarps <= 4 ? 2 : 1;  // CTAs per SM the register budget allows
// backward dQ: (kQBlockM, HEAD_DIM) Q/dO tiles, (kQBlockN, HEAD_DIM) K/V tiles, warps x 16 rows
constexpr int kQWarps = FA_DQ_WARPS;
constexpr int kQMI = 1;
constexpr int kQBlockM = 16 * kQMI * kQWarps;  // 64
constexpr int kQBlockN = FA_DQ_BN;             // 64
constexpr int kQThreads = 32 * kQWarps;
constexpr int kQMinBlocks = kQWarps <= 4 ? 2 : 1;

#define LOG2E_F 1.4426950408889634f
#define LN2_F 0.6931471805599453f

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }
__device__ __forceinline__ float pos_inf() { return __int_as_float(0x7f800000); }
__device__ __forceinline__ int ceil_div(int a, int b) { return (a + b - 1) / b; }

// ---------------------------------------------------------------------------------------------
// PTX wrappers.
// ---------------------------------------------------------------------------------------------
__device__ __forceinline__ u32 smem_u32(const void* p) {
    return (u32)__cvta_generic_to_shared(p);
}
// 16-byte async copy; zero-fills the destination when !pred (src is not read then).
__device__ __forceinline__ void cp_async16(u32 dst, const void* src, bool pred) {
    int sz = pred ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(sz));
}
// 4-byte async copy (cp.async.ca; .cg takes 16 bytes only); zero-fills when !pred.
__device__ __forceinline__ void cp_async4(u32 dst, const void* src, bool pred) {
    int sz = pred ? 4 : 0;
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(sz));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() {
    asm volatile("cp.async.wait_group 0;\n" ::: "memory");
}
__device__ __forceinline__ void ldmatrix_x4(u32 (&r)[4], u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(u32 (&r)[4], u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
// c (16x8 fp32) += a (16x16 bf16, row) * b (16x8 bf16, col)
__device__ __forceinline__ void mma_bf16(float (&c)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// Two floats to packed bf16x2 (round to nearest even); lo lands in the low half.
__device__ __forceinline__ u32 pack_bf16(float lo, float hi) {
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
__device__ __forceinline__ float bf16_to_f32(bf16 x) { return __uint_as_float(((u32)x) << 16); }
// tanh on the MUFU (sm_75+), max relative error ~2^-11: below bf16's rounding of the inputs.
__device__ __forceinline__ float tanh_approx(float x) {
    float y;
    asm("tanh.approx.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

// ---------------------------------------------------------------------------------------------
// Smem tiles and warp GEMMs.
// ---------------------------------------------------------------------------------------------
// Byte address of 16-byte chunk `chunk` of row `row` in a swizzled (rows, HEAD_DIM) tile.
__device__ __forceinline__ u32 tile_addr(u32 base, int row, int chunk) {
    return base + row * kRowBytes + ((chunk ^ (row & 7)) << 4);
}

// Async copy of rows [0, ROWS) of a token-major tensor into a (ROWS, HEAD_DIM) tile; rows at or
// beyond `valid` are zero-filled. `g` points at (row 0, this head), `ld` is the token stride.
template <int ROWS, int THREADS>
__device__ __forceinline__ void load_tile(u32 s, const bf16* g, long ld, int valid) {
    static_assert((ROWS * kChunks) % THREADS == 0, "tile load must divide evenly");
#pragma unroll
    for (int it = 0; it < ROWS * kChunks / THREADS; ++it) {
        int i = it * THREADS + (int)threadIdx.x;
        int r = i / kChunks, c = i % kChunks;
        bool ok = r < valid;
        const bf16* src = ok ? g + (long)r * ld + c * 8 : g;
        cp_async16(tile_addr(s, r, c), src, ok);
    }
}

// acc (16*MI, 8*NB) += A (rows a_row0.., HEAD_DIM) * B^T, B = (rows b_row0.., HEAD_DIM)
// Both tiles row-major with the reduction dim (HEAD_DIM) contiguous: S = Q K^T, dP = dO V^T, ...
template <int MI, int NB>
__device__ __forceinline__ void gemm_nt(float (&acc)[MI][NB][4], u32 sA, int a_row0, u32 sB,
                                        int b_row0) {
    static_assert(NB % 2 == 0, "NB even");
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int ks = 0; ks < HEAD_DIM / 16; ++ks) {
        u32 a[MI][4];
#pragma unroll
        for (int mi = 0; mi < MI; ++mi)
            ldmatrix_x4(a[mi], tile_addr(sA, a_row0 + mi * 16 + (lane & 15), 2 * ks + (lane >> 4)));
#pragma unroll
        for (int nb2 = 0; nb2 < NB / 2; ++nb2) {
            u32 b[4];
            ldmatrix_x4(b, tile_addr(sB, b_row0 + nb2 * 16 + (lane & 7) + ((lane >> 4) << 3),
                                     2 * ks + ((lane >> 3) & 1)));
#pragma unroll
            for (int mi = 0; mi < MI; ++mi) {
                mma_bf16(acc[mi][2 * nb2], a[mi], b[0], b[1]);
                mma_bf16(acc[mi][2 * nb2 + 1], a[mi], b[2], b[3]);
            }
        }
    }
}

// acc (16*MI, HEAD_DIM) += P (16*MI, 16*KS; bf16 A fragments in registers) * B,
// B = (rows b_row0 .. b_row0 + 16*KS, HEAD_DIM) row-major: O += P V, dV += P^T dO, dQ += dS K ...
template <int MI, int KS>
__device__ __forceinline__ void gemm_rs(float (&acc)[MI][HEAD_DIM / 8][4],
                                        const u32 (&pa)[MI][KS][4], u32 sB, int b_row0) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
#pragma unroll
        for (int nd2 = 0; nd2 < HEAD_DIM / 16; ++nd2) {
            u32 b[4];
            ldmatrix_x4_trans(b, tile_addr(sB, b_row0 + ks * 16 + (lane & 15), 2 * nd2 + (lane >> 4)));
#pragma unroll
            for (int mi = 0; mi < MI; ++mi) {
                mma_bf16(acc[mi][2 * nd2], pa[mi][ks], b[0], b[1]);
                mma_bf16(acc[mi][2 * nd2 + 1], pa[mi][ks], b[2], b[3]);
            }
        }
    }
}

// Accumulator (16*MI, 8*NB) fp32 -> A fragments (16*MI, 16*(NB/2)) bf16.
template <int MI, int NB>
__device__ __forceinline__ void to_a_frags(u32 (&pa)[MI][NB / 2][4], const float (&c)[MI][NB][4]) {
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int ks = 0; ks < NB / 2; ++ks) {
            pa[mi][ks][0] = pack_bf16(c[mi][2 * ks][0], c[mi][2 * ks][1]);
            pa[mi][ks][1] = pack_bf16(c[mi][2 * ks][2], c[mi][2 * ks][3]);
            pa[mi][ks][2] = pack_bf16(c[mi][2 * ks + 1][0], c[mi][2 * ks + 1][1]);
            pa[mi][ks][3] = pack_bf16(c[mi][2 * ks + 1][2], c[mi][2 * ks + 1][3]);
        }
}

template <int MI, int NB>
__device__ __forceinline__ void zero(float (&c)[MI][NB][4]) {
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int j = 0; j < NB; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) c[mi][j][e] = 0.f;
}

// Store a (16*MI, HEAD_DIM) accumulator, times `mul`, as bf16 rows [0, valid) of a token-major
// tensor (`g` at row 0 of this warp's block of rows, this head; `ld` token stride).
template <int MI>
__device__ __forceinline__ void store_rows(bf16* g, long ld, int row0, int valid,
                                           const float (&acc)[MI][HEAD_DIM / 8][4],
                                           const float (&mul)[MI][2]) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
            int r = row0 + mi * 16 + (lane >> 2) + hf * 8;
            if (r >= valid) continue;
            u32* dst = (u32*)(g + (long)r * ld + (lane & 3) * 2);
#pragma unroll
            for (int j = 0; j < HEAD_DIM / 8; ++j)
                dst[j * 4] = pack_bf16(acc[mi][j][2 * hf] * mul[mi][hf],
                                       acc[mi][j][2 * hf + 1] * mul[mi][hf]);
        }
}

// ---------------------------------------------------------------------------------------------
// CTA order. Every kernel runs on a 1-D grid of tiles x groups CTAs (group = head + heads * seg).
// The linear index is split into chunks of `chunk` groups; inside a chunk the tile index is
// the slow one, so each chunk starts all its heaviest tiles first (longest-processing-time
// order: the last wave holds only short CTAs), while a chunk's K/V (or Q/dO) working set stays
// small enough for L2. chunk = 1 is the plain order (one group's tiles after another).
// `reverse`: tile index counts down (causal forward and dQ: the last query tiles are longest).
// ---------------------------------------------------------------------------------------------
__device__ __forceinline__ void sched_tile(int groups, int chunk, bool reverse, int& tile,
                                           int& group) {
    const int tiles = gridDim.x / groups;
    const int bid = blockIdx.x;
    const int per = chunk * tiles;
    const int c = bid / per;
    const int w = bid - c * per;
    const int cg = min(chunk, groups - c * chunk);
    const int ti = w / cg;
    group = c * chunk + (w - ti * cg);
    tile = reverse ? tiles - 1 - ti : ti;
}

// ---------------------------------------------------------------------------------------------
// Masking. Positions are local to the segment.
// ---------------------------------------------------------------------------------------------
// Key `col` is hidden from query `row`: past the segment end, in the future (causal), or at or
// before row - window (sliding window).
__device__ __forceinline__ bool key_hidden(const AttnParams& p, int row, int col, int seqlen) {
    return col >= seqlen || (p.causal && col > row) || (p.window > 0 && col <= row - p.window);
}
// Some key of the tile starting at `col0` lies at or before `last_row` - window.
__device__ __forceinline__ bool window_cuts(const AttnParams& p, int last_row, int col0) {
    return p.window > 0 && col0 <= last_row - p.window;
}
// The first key tile (of `bn` keys) any query row >= `first_row` sees.
__device__ __forceinline__ int first_key_tile(const AttnParams& p, int first_row, int bn) {
    return p.window > 0 ? max(0, first_row - p.window + 1) / bn : 0;
}

// ---------------------------------------------------------------------------------------------
// Forward: flash_fwd, flash_fwd_softcap.
// grid ceil(max_seqlen / kFwdBlockM) * H * segments (see sched_tile), block kFwdThreads,
// smem Q (kFwdBlockM, D) + 2 x K (kFwdBlockN, D) + 2 x V (kFwdBlockN, D).
// ---------------------------------------------------------------------------------------------
template <bool kCap>
__device__ __forceinline__ void flash_fwd_body(const AttnParams p, const SoftcapParams cap) {
    constexpr int MI = kFwdMI, BM = kFwdBlockM, BN = kFwdBlockN, NB = BN / 8;
    extern __shared__ __align__(128) unsigned char smem[];
    // causal: the last query tiles have the most work, so they are scheduled first
    int m_block, grp;
    sched_tile(p.heads * p.segments, p.sched_chunk, p.causal, m_block, grp);
    const int h = grp % p.heads, seg = grp / p.heads;
    const int seq0 = p.cu_seqlens[seg];
    const int seqlen = p.cu_seqlens[seg + 1] - seq0;
    if (m_block * BM >= seqlen) return;
    const int hk = h / p.group;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const long q_ld = (long)p.heads * HEAD_DIM, kv_ld = (long)p.kv_heads * HEAD_DIM;
    const bf16* gq = p.q + (long)(seq0 + m_block * BM) * q_ld + h * HEAD_DIM;
    const bf16* gk = p.k + (long)seq0 * kv_ld + hk * HEAD_DIM;
    const bf16* gv = p.v + (long)seq0 * kv_ld + hk * HEAD_DIM;

    const u32 sQ = smem_u32(smem);                 // (BM, D)
    const u32 sK = sQ + BM * kRowBytes;            // 2 x (BN, D)
    const u32 sV = sK + 2 * BN * kRowBytes;        // 2 x (BN, D)
    constexpr u32 kTileBytes = BN * kRowBytes;

    const int m_valid = min(BM, seqlen - m_block * BM);
    int n_blocks = ceil_div(seqlen, BN);
    if (p.causal) n_blocks = min(n_blocks, ceil_div((m_block + 1) * BM, BN));
    const int n_begin = first_key_tile(p, m_block * BM, BN);

    load_tile<BM, kFwdThreads>(sQ, gq, q_ld, m_valid);
    load_tile<BN, kFwdThreads>(sK, gk + (long)n_begin * BN * kv_ld, kv_ld, min(BN, seqlen - n_begin * BN));
    load_tile<BN, kFwdThreads>(sV, gv + (long)n_begin * BN * kv_ld, kv_ld, min(BN, seqlen - n_begin * BN));
    cp_async_commit();

    const int row0 = warp * 16 * MI;  // this warp's first row inside the tile
    float acc_o[MI][HEAD_DIM / 8][4];  // (16*MI, D)
    zero(acc_o);
    float row_max[MI][2], row_sum[MI][2];
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) { row_max[mi][hf] = neg_inf(); row_sum[mi][hf] = 0.f; }

    for (int nb = n_begin; nb < n_blocks; ++nb) {
        cp_async_wait_all();
        __syncthreads();
        if (nb + 1 < n_blocks) {
            const int buf = (nb + 1 - n_begin) & 1, valid = min(BN, seqlen - (nb + 1) * BN);
            load_tile<BN, kFwdThreads>(sK + buf * kTileBytes, gk + (long)(nb + 1) * BN * kv_ld, kv_ld, valid);
            load_tile<BN, kFwdThreads>(sV + buf * kTileBytes, gv + (long)(nb + 1) * BN * kv_ld, kv_ld, valid);
        }
        cp_async_commit();
        const int cur = (nb - n_begin) & 1;
        const u32 sKc = sK + cur * kTileBytes, sVc = sV + cur * kTileBytes;

        float s[MI][NB][4];  // (16*MI, BN)
        zero(s);
        gemm_nt<MI, NB>(s, sQ, row0, sKc, 0);
        if constexpr (kCap) {  // capped scores, already in log2 units: c log2(e) tanh(scale q.k / c)
#pragma unroll
            for (int mi = 0; mi < MI; ++mi)
#pragma unroll
                for (int j = 0; j < NB; ++j)
#pragma unroll
                    for (int e = 0; e < 4; ++e)
                        s[mi][j][e] = tanh_approx(s[mi][j][e] * cap.scale_in) * cap.log2_c;
        }

        // mask (raw scores, or capped ones): keys past the segment end, causal j > i, and outside
        // the window
        const bool mask = (nb + 1) * BN > seqlen || (p.causal && (nb + 1) * BN > m_block * BM + 1) ||
                          window_cuts(p, m_block * BM + BM - 1, nb * BN);
        if (mask) {
#pragma unroll
            for (int mi = 0; mi < MI; ++mi)
#pragma unroll
                for (int j = 0; j < NB; ++j)
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        int row = m_block * BM + row0 + mi * 16 + (lane >> 2) + (e >> 1) * 8;
                        int col = nb * BN + j * 8 + (lane & 3) * 2 + (e & 1);
                        if (key_hidden(p, row, col, seqlen)) s[mi][j][e] = neg_inf();
                    }
        }

        // online softmax, in log2 units (x = s * scale * log2 e, one FFMA per score). The running
        // max m is raised when the tile's max exceeds it by more than kRescale (FA_RESCALE): 0 is
        // FlashAttention-2's eager rescale, the default; > 0 rescales O and l less often (P may
        // reach 2^kRescale), which measured up to 2.6x SDPA's O error on the H100.
        // With the cap the scores are in log2 units already (multiplier 1).
        constexpr float kRescale = (float)FA_RESCALE;
        const float sl2 = kCap ? 1.f : p.scale_log2;
#pragma unroll
        for (int mi = 0; mi < MI; ++mi)
#pragma unroll
            for (int hf = 0; hf < 2; ++hf) {
                float mx = neg_inf();
#pragma unroll
                for (int j = 0; j < NB; ++j)
                    mx = fmaxf(mx, fmaxf(s[mi][j][2 * hf], s[mi][j][2 * hf + 1]));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 1));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 2));
                mx *= sl2;
                if (mx > row_max[mi][hf] + kRescale) {  // uniform across the quad owning the row
                    const float corr = exp2f(row_max[mi][hf] - mx);  // 0 on the first raise
                    row_max[mi][hf] = mx;
                    row_sum[mi][hf] *= corr;
#pragma unroll
                    for (int j = 0; j < HEAD_DIM / 8; ++j) {
                        acc_o[mi][j][2 * hf] *= corr;
                        acc_o[mi][j][2 * hf + 1] *= corr;
                    }
                }
                const float m_use = row_max[mi][hf] == neg_inf() ? 0.f : row_max[mi][hf];
                float sum = 0.f;
#pragma unroll
                for (int j = 0; j < NB; ++j) {
                    float p0 = exp2f(fmaf(s[mi][j][2 * hf], sl2, -m_use));
                    float p1 = exp2f(fmaf(s[mi][j][2 * hf + 1], sl2, -m_use));
                    s[mi][j][2 * hf] = p0;
                    s[mi][j][2 * hf + 1] = p1;
                    sum += p0 + p1;
                }
                row_sum[mi][hf] += sum;
            }

        u32 pa[MI][NB / 2][4];
        to_a_frags<MI, NB>(pa, s);
        gemm_rs<MI, NB / 2>(acc_o, pa, sVc, 0);
    }

    // epilogue: O /= l, lse = (m + log2 l) ln 2
    float inv[MI][2];
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
            float l = row_sum[mi][hf];
            l += __shfl_xor_sync(0xffffffff, l, 1);
            l += __shfl_xor_sync(0xffffffff, l, 2);
            inv[mi][hf] = l > 0.f ? 1.f / l : 0.f;
            const int r = row0 + mi * 16 + (lane >> 2) + hf * 8;
            if ((lane & 3) == 0 && r < m_valid) {
                const float lse = l > 0.f ? (row_max[mi][hf] + __log2f(l)) * LN2_F : neg_inf();
                p.lse[(long)h * p.tokens + seq0 + m_block * BM + r] = lse;
            }
        }
    bf16* go = p.o + (long)(seq0 + m_block * BM) * q_ld + h * HEAD_DIM;
    store_rows<MI>(go, q_ld, row0, m_valid, acc_o, inv);
}

#if FA_PLAIN_KERNELS
extern "C" __global__ void __launch_bounds__(kFwdThreads)
flash_fwd(const AttnParams p) {
    flash_fwd_body<false>(p, SoftcapParams{0.f, 0.f});
}
#endif
#if FA_SOFTCAP_KERNELS
extern "C" __global__ void __launch_bounds__(kFwdThreads)
flash_fwd_softcap(const AttnParams p, const SoftcapParams cap) {
    flash_fwd_body<true>(p, cap);
}
#endif

// ---------------------------------------------------------------------------------------------
// Backward pass 1: D[n, h] = sum_d dO[n, h, d] * O[n, h, d], written as fp32 into the first
// 4 bytes of dq's (n, h) row. grid ceil(N*H / rows per block), block 256.
// ---------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(256) flash_bwd_dot_do_o(const AttnParams p) {
    constexpr int kTPR = HEAD_DIM / 8;  // threads per (n, h) row, 8 elements each
    const long row = ((long)blockIdx.x * 256 + threadIdx.x) / kTPR;
    const int part = threadIdx.x % kTPR;
    const long nrows = (long)p.tokens * p.heads;
    float acc = 0.f;
    if (row < nrows) {
        const uint4 a = *(const uint4*)(p.o + row * HEAD_DIM + part * 8);
        const uint4 b = *(const uint4*)(p.dout + row * HEAD_DIM + part * 8);
        const u32 av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            acc += bf16_to_f32((bf16)(av[i] & 0xffff)) * bf16_to_f32((bf16)(bv[i] & 0xffff));
            acc += bf16_to_f32((bf16)(av[i] >> 16)) * bf16_to_f32((bf16)(bv[i] >> 16));
        }
    }
#pragma unroll
    for (int off = kTPR / 2; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffff, acc, off);
    if (row < nrows && part == 0) *(float*)(p.dq + row * HEAD_DIM) = acc;
}

__device__ __forceinline__ float load_d(const AttnParams& p, long n, int h) {
    return *(const float*)(p.dq + (n * p.heads + h) * HEAD_DIM);
}

// ---------------------------------------------------------------------------------------------
// Backward pass 2: dK, dV (flash_bwd_dkdv, flash_bwd_dkdv_softcap).
// grid ceil(max_seqlen / kKvBlockN) * Hkv * segments (see sched_tile; key tile 0 is longest when
// causal and comes first), block kKvThreads,
// smem K, V (kKvBlockN, D) + 2 x Q, dO (kKvBlockM, D) + 2 x lse, D [kKvBlockM] fp32.
// ---------------------------------------------------------------------------------------------
template <bool kCap>
__device__ __forceinline__ void flash_bwd_dkdv_body(const AttnParams p, const SoftcapParams cap) {
    constexpr int MI = kKvMI, BN = kKvBlockN, BM = kKvBlockM, NB = BM / 8;
    extern __shared__ __align__(128) unsigned char smem[];
    int n_block, grp;
    sched_tile(p.kv_heads * p.segments, p.sched_chunk, false, n_block, grp);
    const int hk = grp % p.kv_heads, seg = grp / p.kv_heads;
    const int seq0 = p.cu_seqlens[seg];
    const int seqlen = p.cu_seqlens[seg + 1] - seq0;
    if (n_block * BN >= seqlen) return;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const long q_ld = (long)p.heads * HEAD_DIM, kv_ld = (long)p.kv_heads * HEAD_DIM;
    const long kv_off = (long)(seq0 + n_block * BN) * kv_ld + hk * HEAD_DIM;
    const int n_valid = min(BN, seqlen - n_block * BN);

    const u32 sK = smem_u32(smem);                    // (BN, D)
    const u32 sV = sK + BN * kRowBytes;               // (BN, D)
    const u32 sQ = sV + BN * kRowBytes;               // 2 x (BM, D)
    const u32 sdO = sQ + 2 * BM * kRowBytes;          // 2 x (BM, D)
    float* sL = (float*)(smem + 2 * BN * kRowBytes + 4 * BM * kRowBytes);  // 2 x [BM]
    float* sD = sL + 2 * BM;                                               // 2 x [BM]
    constexpr u32 kTileBytes = BM * kRowBytes;

    load_tile<BN, kKvThreads>(sK, p.k + kv_off, kv_ld, n_valid);
    load_tile<BN, kKvThreads>(sV, p.v + kv_off, kv_ld, n_valid);

    const int m_begin = p.causal ? (n_block * BN) / BM : 0;
    int m_end = ceil_div(seqlen, BM);
    // sliding window: the last query that sees this tile's last key is that key + window - 1
    if (p.window > 0) {
        const long long last_q = (long long)n_block * BN + BN - 2 + p.window;
        if (last_q / BM + 1 < m_end) m_end = (int)(last_q / BM + 1);
    }
    const int m_count = m_end - m_begin;
    const int total = p.group * m_count;

    // Issue the copies of query tile `it` (head, tile) into buffer `buf`, all asynchronous
    // (lse and D included). Rows past the segment end read as 0 everywhere (Q, dO, lse, D): their
    // P is 2^0 = 1 but every product it enters has a zero dO or Q row, so they add exactly 0.
    auto prefetch = [&](int it, int buf) {
        const int h = hk * p.group + it / m_count;
        const int m = m_begin + it % m_count;
        const long off = (long)(seq0 + m * BM) * q_ld + h * HEAD_DIM;
        const int valid = min(BM, seqlen - m * BM);
        load_tile<BM, kKvThreads>(sQ + buf * kTileBytes, p.q + off, q_ld, valid);
        load_tile<BM, kKvThreads>(sdO + buf * kTileBytes, p.dout + off, q_ld, valid);
        for (int i = threadIdx.x; i < BM; i += kKvThreads) {
            const bool ok = i < valid;
            const long n = seq0 + m * BM + (ok ? i : 0);
            cp_async4(smem_u32(sL + buf * BM + i), p.lse + (long)h * p.tokens + n, ok);
            cp_async4(smem_u32(sD + buf * BM + i), p.dq + (n * p.heads + h) * HEAD_DIM, ok);
        }
    };
    prefetch(0, 0);
    cp_async_commit();

    const int row0 = warp * 16 * MI;
    float acc_dk[MI][HEAD_DIM / 8][4], acc_dv[MI][HEAD_DIM / 8][4];  // (16*MI, D) each
    zero(acc_dk);
    zero(acc_dv);

    for (int it = 0; it < total; ++it) {
        cp_async_wait_all();
        __syncthreads();
        if (it + 1 < total) prefetch(it + 1, (it + 1) & 1);
        cp_async_commit();
        const int buf = it & 1;
        const int m = m_begin + it % m_count;
        const u32 sQc = sQ + buf * kTileBytes, sdOc = sdO + buf * kTileBytes;
        const float* sLc = sL + buf * BM;
        const float* sDc = sD + buf * BM;

        float s[MI][NB][4];  // S^T (16*MI keys, BM queries)
        zero(s);
        gemm_nt<MI, NB>(s, sK, row0, sQc, 0);
        const bool mask = (p.causal && m * BM < n_block * BN + BN - 1) ||
                          window_cuts(p, m * BM + BM - 1, n_block * BN);
        u32 pa[MI][NB / 2][4];
        if constexpr (kCap) {
            // P^T goes to pa (bf16, for dV) as it is computed; s keeps P^T (1 - t^2), the part of
            // dS^T before (dP^T - D), so the cap needs no extra tile of registers.
#pragma unroll
            for (int mi = 0; mi < MI; ++mi)
#pragma unroll
                for (int j = 0; j < NB; ++j) {
                    float xs[4];
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const int col = j * 8 + (lane & 3) * 2 + (e & 1);
                        const float t = tanh_approx(s[mi][j][e] * cap.scale_in);
                        float x = exp2f(fmaf(t, cap.log2_c, -(sLc[col] * LOG2E_F)));
                        if (mask) {
                            const int key = n_block * BN + row0 + mi * 16 + (lane >> 2) + (e >> 1) * 8;
                            const int query = m * BM + col;
                            if (key > query || (p.window > 0 && key <= query - p.window)) x = 0.f;
                        }
                        xs[e] = x;
                        s[mi][j][e] = x * (1.f - t * t);
                    }
                    pa[mi][j >> 1][(j & 1) * 2] = pack_bf16(xs[0], xs[1]);
                    pa[mi][j >> 1][(j & 1) * 2 + 1] = pack_bf16(xs[2], xs[3]);
                }
        } else {
#pragma unroll
            for (int mi = 0; mi < MI; ++mi)
#pragma unroll
                for (int j = 0; j < NB; ++j)
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const int col = j * 8 + (lane & 3) * 2 + (e & 1);
                        float x = exp2f(fmaf(s[mi][j][e], p.scale_log2, -(sLc[col] * LOG2E_F)));
                        if (mask) {
                            const int key = n_block * BN + row0 + mi * 16 + (lane >> 2) + (e >> 1) * 8;
                            const int query = m * BM + col;
                            if (key > query || (p.window > 0 && key <= query - p.window)) x = 0.f;
                        }
                        s[mi][j][e] = x;
                    }
            to_a_frags<MI, NB>(pa, s);
        }
        gemm_rs<MI, NB / 2>(acc_dv, pa, sdOc, 0);  // dV += P^T dO

        float dp[MI][NB][4];  // dP^T (16*MI keys, BM queries)
        zero(dp);
        gemm_nt<MI, NB>(dp, sV, row0, sdOc, 0);
#pragma unroll
        for (int mi = 0; mi < MI; ++mi)
#pragma unroll
            for (int j = 0; j < NB; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int col = j * 8 + (lane & 3) * 2 + (e & 1);
                    dp[mi][j][e] = s[mi][j][e] * (dp[mi][j][e] - sDc[col]);
                }
        to_a_frags<MI, NB>(pa, dp);
        gemm_rs<MI, NB / 2>(acc_dk, pa, sQc, 0);  // dK += dS^T Q
    }

    float mul_k[MI][2], mul_v[MI][2];
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) { mul_k[mi][hf] = p.scale; mul_v[mi][hf] = 1.f; }
    store_rows<MI>(p.dk + kv_off, kv_ld, row0, n_valid, acc_dk, mul_k);
    store_rows<MI>(p.dv + kv_off, kv_ld, row0, n_valid, acc_dv, mul_v);
}

#if FA_PLAIN_KERNELS
extern "C" __global__ void __launch_bounds__(kKvThreads, kKvMinBlocks)
flash_bwd_dkdv(const AttnParams p) {
    flash_bwd_dkdv_body<false>(p, SoftcapParams{0.f, 0.f});
}
#endif
#if FA_SOFTCAP_KERNELS
extern "C" __global__ void __launch_bounds__(kKvThreads, kKvMinBlocks)
flash_bwd_dkdv_softcap(const AttnParams p, const SoftcapParams cap) {
    flash_bwd_dkdv_body<true>(p, cap);
}
#endif

// ---------------------------------------------------------------------------------------------
// Backward pass 3: dQ (flash_bwd_dq, flash_bwd_dq_softcap).
// grid ceil(max_seqlen / kQBlockM) * H * segments (see sched_tile), block kQThreads,
// smem Q, dO (kQBlockM, D) + 2 x K, V (kQBlockN, D).
// ---------------------------------------------------------------------------------------------
template <bool kCap>
__device__ __forceinline__ void flash_bwd_dq_body(const AttnParams p, const SoftcapParams cap) {
    constexpr int MI = kQMI, BM = kQBlockM, BN = kQBlockN, NB = BN / 8;
    extern __shared__ __align__(128) unsigned char smem[];
    int m_block, grp;  // causal: longest first
    sched_tile(p.heads * p.segments, p.sched_chunk, p.causal, m_block, grp);
    const int h = grp % p.heads, seg = grp / p.heads;
    const int seq0 = p.cu_seqlens[seg];
    const int seqlen = p.cu_seqlens[seg + 1] - seq0;
    if (m_block * BM >= seqlen) return;
    const int hk = h / p.group;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const long q_ld = (long)p.heads * HEAD_DIM, kv_ld = (long)p.kv_heads * HEAD_DIM;
    const long q_off = (long)(seq0 + m_block * BM) * q_ld + h * HEAD_DIM;
    const bf16* gk = p.k + (long)seq0 * kv_ld + hk * HEAD_DIM;
    const bf16* gv = p.v + (long)seq0 * kv_ld + hk * HEAD_DIM;
    const int m_valid = min(BM, seqlen - m_block * BM);

    const u32 sQ = smem_u32(smem);             // (BM, D)
    const u32 sdO = sQ + BM * kRowBytes;       // (BM, D)
    const u32 sK = sdO + BM * kRowBytes;       // 2 x (BN, D)
    const u32 sV = sK + 2 * BN * kRowBytes;    // 2 x (BN, D)
    constexpr u32 kTileBytes = BN * kRowBytes;

    int n_blocks = ceil_div(seqlen, BN);
    if (p.causal) n_blocks = min(n_blocks, ceil_div((m_block + 1) * BM, BN));
    const int n_begin = first_key_tile(p, m_block * BM, BN);

    load_tile<BM, kQThreads>(sQ, p.q + q_off, q_ld, m_valid);
    load_tile<BM, kQThreads>(sdO, p.dout + q_off, q_ld, m_valid);
    load_tile<BN, kQThreads>(sK, gk + (long)n_begin * BN * kv_ld, kv_ld, min(BN, seqlen - n_begin * BN));
    load_tile<BN, kQThreads>(sV, gv + (long)n_begin * BN * kv_ld, kv_ld, min(BN, seqlen - n_begin * BN));
    cp_async_commit();

    const int row0 = warp * 16 * MI;
    float lse2[MI][2], dd[MI][2];  // this thread's rows: lse * log2(e), and D
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
            const int r = row0 + mi * 16 + (lane >> 2) + hf * 8;
            const long n = seq0 + m_block * BM + r;
            lse2[mi][hf] = r < m_valid ? p.lse[(long)h * p.tokens + n] * LOG2E_F : pos_inf();
            dd[mi][hf] = r < m_valid ? load_d(p, n, h) : 0.f;
        }

    float acc_dq[MI][HEAD_DIM / 8][4];  // (16*MI, D)
    zero(acc_dq);

    for (int nb = n_begin; nb < n_blocks; ++nb) {
        cp_async_wait_all();
        __syncthreads();
        if (nb + 1 < n_blocks) {
            const int buf = (nb + 1 - n_begin) & 1, valid = min(BN, seqlen - (nb + 1) * BN);
            load_tile<BN, kQThreads>(sK + buf * kTileBytes, gk + (long)(nb + 1) * BN * kv_ld, kv_ld, valid);
            load_tile<BN, kQThreads>(sV + buf * kTileBytes, gv + (long)(nb + 1) * BN * kv_ld, kv_ld, valid);
        }
        cp_async_commit();
        const int cur = (nb - n_begin) & 1;
        const u32 sKc = sK + cur * kTileBytes, sVc = sV + cur * kTileBytes;

        float s[MI][NB][4];  // S (16*MI queries, BN keys)
        zero(s);
        gemm_nt<MI, NB>(s, sQ, row0, sKc, 0);
        const bool mask = (nb + 1) * BN > seqlen || (p.causal && (nb + 1) * BN > m_block * BM + 1) ||
                          window_cuts(p, m_block * BM + BM - 1, nb * BN);
#pragma unroll
        for (int mi = 0; mi < MI; ++mi)
#pragma unroll
            for (int j = 0; j < NB; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    if constexpr (kCap) {
                        // s = P (1 - t^2): P times the cap's derivative, the part of dS before
                        // (dP - D)
                        const float t = tanh_approx(s[mi][j][e] * cap.scale_in);
                        float x = exp2f(fmaf(t, cap.log2_c, -lse2[mi][e >> 1]));
                        if (mask) {
                            const int row = m_block * BM + row0 + mi * 16 + (lane >> 2) + (e >> 1) * 8;
                            const int col = nb * BN + j * 8 + (lane & 3) * 2 + (e & 1);
                            if (key_hidden(p, row, col, seqlen)) x = 0.f;
                        }
                        s[mi][j][e] = x * (1.f - t * t);
                    } else {
                        float x = exp2f(fmaf(s[mi][j][e], p.scale_log2, -lse2[mi][e >> 1]));
                        if (mask) {
                            const int row = m_block * BM + row0 + mi * 16 + (lane >> 2) + (e >> 1) * 8;
                            const int col = nb * BN + j * 8 + (lane & 3) * 2 + (e & 1);
                            if (key_hidden(p, row, col, seqlen)) x = 0.f;
                        }
                        s[mi][j][e] = x;
                    }
                }

        float dp[MI][NB][4];  // dP (16*MI queries, BN keys)
        zero(dp);
        gemm_nt<MI, NB>(dp, sdO, row0, sVc, 0);
#pragma unroll
        for (int mi = 0; mi < MI; ++mi)
#pragma unroll
            for (int j = 0; j < NB; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e)
                    dp[mi][j][e] = s[mi][j][e] * (dp[mi][j][e] - dd[mi][e >> 1]);
        u32 pa[MI][NB / 2][4];
        to_a_frags<MI, NB>(pa, dp);
        gemm_rs<MI, NB / 2>(acc_dq, pa, sKc, 0);  // dQ += dS K
    }

    float mul[MI][2];
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) mul[mi][hf] = p.scale;
    // All D reads of this CTA happened before the loop's barriers; rows are owned by this CTA.
    store_rows<MI>(p.dq + q_off, q_ld, row0, m_valid, acc_dq, mul);
}

#if FA_PLAIN_KERNELS
extern "C" __global__ void __launch_bounds__(kQThreads, kQMinBlocks)
flash_bwd_dq(const AttnParams p) {
    flash_bwd_dq_body<false>(p, SoftcapParams{0.f, 0.f});
}
#endif
#if FA_SOFTCAP_KERNELS
extern "C" __global__ void __launch_bounds__(kQThreads, kQMinBlocks)
flash_bwd_dq_softcap(const AttnParams p, const SoftcapParams cap) {
    flash_bwd_dq_body<true>(p, cap);
}
#endif
