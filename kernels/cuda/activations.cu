// Elementwise activations, one thread per element (grid-stride), fp32 math, T = float | bf16.
//   glu:     out = act(g)·u;  dg += dout·u·act'(g),  du += dout·act(g);  act by `kind`:
//            0 silu(g) = g·σ(g), act' = σ(g)(1 + g(1 − σ(g))); 1 the tanh GELU; 2 the exact GELU
//   gelu (tanh): y = ½x(1 + tanh(c(x + 0.044715x³))), c = √(2/π)
//            dx += dy·(½(1 + t) + ½x(1 − t²)·c(1 + 3·0.044715x²)),  t = tanh(c(x + 0.044715x³))
//   gelu_erf (exact): y = x·Φ(x),  dx += dy·(Φ(x) + x·φ(x)),  Φ(x) = ½·erfc(−x/√2),
//            φ(x) = e^{−x²/2}/√(2π)  (erfcf, so neither tail cancels)
#include "ferrotron_common.cuh"

#define FT_GRID_STRIDE(i, n) \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); i += (long long)gridDim.x * blockDim.x)

__device__ __forceinline__ float sigmoidf_(float x) { return 1.f / (1.f + expf(-x)); }

#define FT_GELU_C 0.7978845608028654f
#define FT_GELU_A 0.044715f

template <typename T> __device__ void gelu_fwd(const T* x, T* y, long long n) {
    FT_GRID_STRIDE(i, n) {
        const float v = ld(x[i]);
        y[i] = cvt<T>(0.5f * v * (1.f + tanhf(FT_GELU_C * (v + FT_GELU_A * v * v * v))));
    }
}
FT_EXPORT(gelu_fwd, (const T* x, T* y, long long n), (x, y, n))

template <typename T> __device__ void gelu_bwd(const T* x, const T* dy, T* dx, long long n) {
    FT_GRID_STRIDE(i, n) {
        const float v = ld(x[i]);
        const float t = tanhf(FT_GELU_C * (v + FT_GELU_A * v * v * v));
        const float g = 0.5f * (1.f + t) + 0.5f * v * (1.f - t * t) * FT_GELU_C * (1.f + 3.f * FT_GELU_A * v * v);
        dx[i] = cvt<T>(ld(dx[i]) + ld(dy[i]) * g);
    }
}
FT_EXPORT(gelu_bwd, (const T* x, const T* dy, T* dx, long long n), (x, dy, dx, n))

#define FT_SQRT1_2 0.7071067811865476f
#define FT_INV_SQRT_2PI 0.3989422804014327f

__device__ __forceinline__ float normal_cdf_(float x) { return 0.5f * erfcf(-x * FT_SQRT1_2); }

template <typename T> __device__ void gelu_erf_fwd(const T* x, T* y, long long n) {
    FT_GRID_STRIDE(i, n) {
        const float v = ld(x[i]);
        y[i] = cvt<T>(v * normal_cdf_(v));
    }
}
FT_EXPORT(gelu_erf_fwd, (const T* x, T* y, long long n), (x, y, n))

template <typename T> __device__ void gelu_erf_bwd(const T* x, const T* dy, T* dx, long long n) {
    FT_GRID_STRIDE(i, n) {
        const float v = ld(x[i]);
        const float g = normal_cdf_(v) + v * FT_INV_SQRT_2PI * expf(-0.5f * v * v);
        dx[i] = cvt<T>(ld(dx[i]) + ld(dy[i]) * g);
    }
}
FT_EXPORT(gelu_erf_bwd, (const T* x, const T* dy, T* dx, long long n), (x, dy, dx, n))

// act(g) and act'(g) of a glu `kind` (see the top comment).
__device__ __forceinline__ void glu_act(int kind, float g, float* a, float* da) {
    if (kind == 0) {
        const float s = sigmoidf_(g);
        *a = g * s;
        *da = s * (1.f + g * (1.f - s));
    } else if (kind == 1) {
        const float t = tanhf(FT_GELU_C * (g + FT_GELU_A * g * g * g));
        *a = 0.5f * g * (1.f + t);
        *da = 0.5f * (1.f + t) + 0.5f * g * (1.f - t * t) * FT_GELU_C * (1.f + 3.f * FT_GELU_A * g * g);
    } else {
        const float p = normal_cdf_(g);
        *a = g * p;
        *da = p + g * FT_INV_SQRT_2PI * expf(-0.5f * g * g);
    }
}

template <typename T> __device__ void glu_fwd(const T* gate, const T* up, T* out, long long n, int kind) {
    FT_GRID_STRIDE(i, n) {
        float a, da;
        glu_act(kind, ld(gate[i]), &a, &da);
        out[i] = cvt<T>(a * ld(up[i]));
    }
}
FT_EXPORT(glu_fwd, (const T* gate, const T* up, T* out, long long n, int kind), (gate, up, out, n, kind))

template <typename T>
__device__ void glu_bwd(const T* gate, const T* up, const T* dout, T* dgate, T* dup, long long n, int kind) {
    FT_GRID_STRIDE(i, n) {
        const float u = ld(up[i]), d = ld(dout[i]);
        float a, da;
        glu_act(kind, ld(gate[i]), &a, &da);
        dgate[i] = cvt<T>(ld(dgate[i]) + d * u * da);
        dup[i] = cvt<T>(ld(dup[i]) + d * a);
    }
}
FT_EXPORT(glu_bwd, (const T* gate, const T* up, const T* dout, T* dgate, T* dup, long long n, int kind),
          (gate, up, dout, dgate, dup, n, kind))
