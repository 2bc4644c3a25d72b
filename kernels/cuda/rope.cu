// Rotary position embedding (HF rotate-half), in place on x [N, heads, Dh], pos [N] (i32),
// inv_freq [Dh/2] (fp64: the frequency table, default theta^(−2i/Dh) or llama3 / linear scaled).
// One thread per (n, head, i < Dh/2): a = pos[n]·inv_freq[i] (in fp64),
//   forward (sign = +1): (x_i, x_j) ← (x_i cos a − x_j sin a, x_j cos a + x_i sin a),  j = i + Dh/2
//   backward (sign = −1): the transpose rotation (angle −a).
#include "ferrotron_common.cuh"

template <typename T>
__device__ void rope(T* x, const int* pos, const double* inv_freq, long long n, int heads, int head_dim, float sign) {
    const int half = head_dim / 2;
    const long long total = n * heads * half;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total; t += (long long)gridDim.x * blockDim.x) {
        const int i = (int)(t % half);
        const long long nh = t / half;  // n * heads + h
        const long long tok = nh / heads;
        const double a = (double)pos[tok] * inv_freq[i];
        double sd, cd;
        sincos(a, &sd, &cd);
        const float s = sign * (float)sd, c = (float)cd;
        T* row = x + nh * head_dim;
        const float x1 = ld(row[i]), x2 = ld(row[i + half]);
        row[i] = cvt<T>(x1 * c - x2 * s);
        row[i + half] = cvt<T>(x2 * c + x1 * s);
    }
}
FT_EXPORT(rope, (T * x, const int* pos, const double* inv_freq, long long n, int heads, int head_dim, float sign),
          (x, pos, inv_freq, n, heads, head_dim, sign))
