// Elementwise ops over flat regions (one thread per element, grid-stride).
//   add_act    x[i] += y[i]                      T = float | bf16 (x, y activations)
//   scale_act  x[i] *= s                         T = float | bf16, s given in double
//   softcap_act      x[i] = c·tanh(x[i] / c)     T = float | bf16 (Gemma 2's logit softcap)
//   softcap_bwd_act  dy[i] *= 1 − (y[i] / c)²    its backward, y the capped values
//   add_acc    x[i] += y[i]                      fp32
//   scale_acc  x[i] *= s                         fp32, s given in double
//   cast_acc   dst[i] = T(src[i])                fp32 -> T (compute copy of master weights)
//   copy_columns  dst[r, dc0 + c] (=|+=) src[r, sc0 + c], r < rows, c < width (row-major)
#include "ferrotron_common.cuh"

#define FT_GRID_STRIDE(i, n) \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); i += (long long)gridDim.x * blockDim.x)

template <typename T> __device__ void add_act(T* x, const T* y, long long n) {
    FT_GRID_STRIDE(i, n) x[i] = cvt<T>(ld(x[i]) + ld(y[i]));
}
FT_EXPORT(add_act, (T * x, const T* y, long long n), (x, y, n))

template <typename T> __device__ void scale_act(T* x, double s, long long n) {
    FT_GRID_STRIDE(i, n) x[i] = cvt<T>((float)((double)ld(x[i]) * s));
}
FT_EXPORT(scale_act, (T * x, double s, long long n), (x, s, n))

template <typename T> __device__ void softcap_act(T* x, float c, long long n) {
    FT_GRID_STRIDE(i, n) x[i] = cvt<T>(tanhf(ld(x[i]) / c) * c);
}
FT_EXPORT(softcap_act, (T * x, float c, long long n), (x, c, n))

template <typename T> __device__ void softcap_bwd_act(T* dy, const T* y, float c, long long n) {
    FT_GRID_STRIDE(i, n) {
        const float t = ld(y[i]) / c;
        dy[i] = cvt<T>(ld(dy[i]) * (1.f - t * t));
    }
}
FT_EXPORT(softcap_bwd_act, (T * dy, const T* y, float c, long long n), (dy, y, c, n))

extern "C" __global__ void add_acc(float* x, const float* y, long long n) {
    FT_GRID_STRIDE(i, n) x[i] += y[i];
}

extern "C" __global__ void scale_acc(float* x, double s, long long n) {
    FT_GRID_STRIDE(i, n) x[i] = (float)((double)x[i] * s);
}

template <typename T> __device__ void cast_acc(const float* src, T* dst, long long n) {
    FT_GRID_STRIDE(i, n) dst[i] = cvt<T>(src[i]);
}
FT_EXPORT(cast_acc, (const float* src, T* dst, long long n), (src, dst, n))

template <typename T>
__device__ void copy_columns(const T* src, long long src_cols, long long src_col0, T* dst, long long dst_cols,
                             long long dst_col0, long long rows, long long width, int accumulate) {
    FT_GRID_STRIDE(i, rows * width) {
        const long long r = i / width, c = i % width;
        const float s = ld(src[r * src_cols + src_col0 + c]);
        T* d = dst + r * dst_cols + dst_col0 + c;
        *d = cvt<T>(accumulate ? ld(*d) + s : s);
    }
}
FT_EXPORT(copy_columns,
          (const T* src, long long src_cols, long long src_col0, T* dst, long long dst_cols, long long dst_col0,
           long long rows, long long width, int accumulate),
          (src, src_cols, src_col0, dst, dst_cols, dst_col0, rows, width, accumulate))
