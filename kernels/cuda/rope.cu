// Rotary position embedding (HF rotate-half), in place on x [N, heads, Dh], pos [N] (i32),
// inv_freq [half] (fp64: the frequency table of the rotary dim R = 2·half ≤ Dh; dims R.. of
// each head pass through, as under a partial_rotary_factor).
// One thread per (n, head, i < half): a = pos[n]·inv_freq[i] (in fp64), cos and sin times the
// attention factor m (`scale`: yarn, longrope; 1 otherwise),
//   forward (sign = +1): (x_i, x_j) ← (x_i cos a − x_j sin a, x_j cos a + x_i sin a),  j = i + half
//   backward (sign = −1): the transpose m·R(−a).
#include "ferrotron_common.cuh"

template <typename T>
__device__ void rope(T* x, const int* pos, const double* inv_freq, long long n, int heads, int head_dim, int half, double scale, float sign) {
    const long long total = n * heads * half;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total; t += (long long)gridDim.x * blockDim.x) {
        const int i = (int)(t % half);
        const long long nh = t / half;  // n * heads + h
        const long long tok = nh / heads;
        const double a = (double)pos[tok] * inv_freq[i];
        double sd, cd;
        sincos(a, &sd, &cd);
        const float s = sign * (float)(scale * sd), c = (float)(scale * cd);
        T* row = x + nh * head_dim;
        const float x1 = ld(row[i]), x2 = ld(row[i + half]);
        row[i] = cvt<T>(x1 * c - x2 * s);
        row[i + half] = cvt<T>(x2 * c + x1 * s);
    }
}
FT_EXPORT(rope, (T * x, const int* pos, const double* inv_freq, long long n, int heads, int head_dim, int half, double scale, float sign),
          (x, pos, inv_freq, n, heads, head_dim, half, scale, sign))
