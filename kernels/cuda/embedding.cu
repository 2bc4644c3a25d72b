// Token / position embedding. ids [N] (i32), table [V, D], out [N, D].
//   embedding_fwd: out[n, :] = table[ids[n], :]          one thread per output element
//   embedding_bwd: dtable[ids[n], :] += dout[n, :]       fp32 dtable, atomicAdd (ids repeat)
// An id outside [0, V) writes zeros (fwd) / nothing (bwd) rather than touching foreign memory.
#include "ferrotron_common.cuh"

template <typename T>
__device__ void embedding_fwd(const int* ids, const T* table, T* out, long long n, long long d, long long v) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n * d; i += (long long)gridDim.x * blockDim.x) {
        const long long row = i / d, col = i % d;
        const int id = ids[row];
        out[i] = (id >= 0 && id < v) ? table[(long long)id * d + col] : cvt<T>(0.f);
    }
}
FT_EXPORT(embedding_fwd, (const int* ids, const T* table, T* out, long long n, long long d, long long v),
          (ids, table, out, n, d, v))

template <typename T>
__device__ void embedding_bwd(const int* ids, const T* dout, float* dtable, long long n, long long d, long long v) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n * d; i += (long long)gridDim.x * blockDim.x) {
        const long long row = i / d, col = i % d;
        const int id = ids[row];
        if (id >= 0 && id < v) atomicAdd(dtable + (long long)id * d + col, ld(dout[i]));
    }
}
FT_EXPORT(embedding_bwd, (const int* ids, const T* dout, float* dtable, long long n, long long d, long long v),
          (ids, dout, dtable, n, d, v))
