/* The machine's f32 FMA peak: T threads each running 12 independent chains of 512-bit FMAs on
 * registers (no memory), the ceiling any GEMM on this CPU can reach.
 *   gcc -O2 -mavx512f -mfma scripts/fma-peak.c -o /tmp/fma-peak -lpthread && /tmp/fma-peak 2 */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define ITERS 200000000L

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static void *chains(void *out) {
  __m512 a[12];
  __m512 x = _mm512_set1_ps(1.0000001f), y = _mm512_set1_ps(0.9999999f);
  for (int i = 0; i < 12; i++) a[i] = _mm512_set1_ps((float)i);
  for (long it = 0; it < ITERS; it++) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) a[i] = _mm512_fmadd_ps(a[i], x, y);
  }
  float s = 0;
  for (int i = 0; i < 12; i++) s += _mm512_reduce_add_ps(a[i]);
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
  double flop = 2.0 * 16 * 12 * (double)ITERS * t;
  printf("%d thread(s): %.1f GFLOP/s (%.1f per thread)\n", t, flop / (now() - t0) / 1e9,
         flop / (now() - t0) / 1e9 / t);
  return 0;
}
