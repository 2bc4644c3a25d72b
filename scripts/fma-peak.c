/* The machine's f32 FMA peak: T threads each running 12 independent chains of 512-bit FMAs
 * (256-bit when built without AVX-512) on registers (no memory), the ceiling any GEMM on this
 * CPU can reach.
 *   gcc -O2 -mavx512f -mfma scripts/fma-peak.c -o /tmp/fma-peak -lpthread && /tmp/fma-peak 2
 *   gcc -O2 -mavx2 -mfma scripts/fma-peak.c -o /tmp/fma-peak -lpthread && /tmp/fma-peak 2
 *   (scripts/bench_cpu_vs_torch.py builds it with cc -O2 -march=native: the widest the CPU has) */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#ifdef __AVX512F__
#define VEC __m512
#define LANES 16
#define SET1 _mm512_set1_ps
#define FMADD _mm512_fmadd_ps
#define LANE0(v) _mm512_reduce_add_ps(v)
#else
#define VEC __m256
#define LANES 8
#define SET1 _mm256_set1_ps
#define FMADD _mm256_fmadd_ps
#define LANE0(v) _mm256_cvtss_f32(v)
#endif

#define ITERS 200000000L

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static void *chains(void *out) {
  VEC a[12];
  VEC x = SET1(1.0000001f), y = SET1(0.9999999f);
  for (int i = 0; i < 12; i++) a[i] = SET1((float)i);
  for (long it = 0; it < ITERS; it++) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) a[i] = FMADD(a[i], x, y);
  }
  float s = 0;
  for (int i = 0; i < 12; i++) s += LANE0(a[i]);
  *(float *)out = s; /* keeps the chains live */
  return NULL;
}

int main(int argc, char **argv) {
  int t = argc > 1 ? atoi(argv[1]) : 1;
  if (t < 1 || t > 64) return 2;
  pthread_t th[64];
  float r[64];
  double t0 = now();
  for (int i = 0; i < t; i++) pthread_create(&th[i], NULL, chains, &r[i]);
  for (int i = 0; i < t; i++) pthread_join(th[i], NULL);
  double flop = 2.0 * LANES * 12 * (double)ITERS * t;
  printf("%d-bit FMAs, %d thread(s): %.1f GFLOP/s (%.1f per thread)\n", LANES * 32, t, flop / (now() - t0) / 1e9,
         flop / (now() - t0) / 1e9 / t);
  return 0;
}
