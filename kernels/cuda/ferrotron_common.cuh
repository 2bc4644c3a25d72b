// ferrotron_common.cuh: helpers shared by the ferrotron .cu kernels. Needs no CUDA header.
// Included textually: kernels/src/cuda/nvrtc.rs expands `#include "ferrotron_common.cuh"`.
//
//   bf16            storage-only bfloat16 (raw bits); all arithmetic is done in fp32.
//   ld(x)           load an element (float or bf16) as fp32.
//   cvt<T>(f)       fp32 -> T, round to nearest even (NaN stays NaN), like half::bf16::from_f32.
//   warp_sum/max    butterfly reductions over the 32 lanes (every lane gets the result).
//   block_sum       sum over the whole block (blockDim.x a multiple of 32, <= 1024).
//   FT_EXPORT       emits `name_f32` and `name_bf16` extern "C" kernels around a template body.
#pragma once

typedef unsigned short ft_u16;
struct bf16 {
    ft_u16 x;
};

#define FT_INF __int_as_float(0x7f800000)
#define FT_FULL_MASK 0xffffffffu

__device__ __forceinline__ float ld(float v) { return v; }
__device__ __forceinline__ float ld(bf16 v) { return __uint_as_float(((unsigned int)v.x) << 16); }

template <typename T> __device__ __forceinline__ T cvt(float f);
template <> __device__ __forceinline__ float cvt<float>(float f) { return f; }
template <> __device__ __forceinline__ bf16 cvt<bf16>(float f) {
    unsigned int u = __float_as_uint(f);
    bf16 r;
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        r.x = (ft_u16)((u >> 16) | 0x40u);
        return r;
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    r.x = (ft_u16)(u >> 16);
    return r;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FT_FULL_MASK, v, o);
    return v;
}
__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FT_FULL_MASK, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FT_FULL_MASK, v, o));
    return v;
}

// Every thread of the block gets the sum. Safe to call several times in a row.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float sh[32];
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.f;
    return warp_sum(v);
}

__device__ __forceinline__ double block_sum_d(double v) {
    __shared__ double shd[32];
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_sum_d(v);
    __syncthreads();
    if (lane == 0) shd[wid] = v;
    __syncthreads();
    v = lane < nw ? shd[lane] : 0.0;
    return warp_sum_d(v);
}

// FT_EXPORT(name, (params using T), (args)): extern "C" name_f32 / name_bf16 calling name<T>.
#define FT_EXPORT(name, params, args)                                                            \
    namespace ft_f32_##name {                                                                    \
    typedef float T;                                                                             \
    extern "C" __global__ void name##_f32 params { name<T> args; }                               \
    }                                                                                            \
    namespace ft_bf16_##name {                                                                   \
    typedef bf16 T;                                                                              \
    extern "C" __global__ void name##_bf16 params { name<T> args; }                              \
    }
