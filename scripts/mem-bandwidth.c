/* The machine's memory bandwidth as a streaming loop sees it: T threads each reading (mode 0)
 * or writing (mode 1) its own 192 MiB buffer of floats with 256-bit loads / stores, 3 rounds.
 * The floor under any pass over data far larger than the caches (the head's logits chunk).
 *   gcc -O2 -mavx2 scripts/mem-bandwidth.c -o /tmp/mem-bandwidth -lpthread
 *   /tmp/mem-bandwidth 2 0     (2 threads reading)      /tmp/mem-bandwidth 2 1  (writing) */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FLOATS ((size_t)48 << 20)

typedef struct {
  float *a;
  int write;
  float sink;
} job;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static void *stream(void *p) {
  job *j = p;
  if (j->write) {
    __m256 v = _mm256_set1_ps(1.0f);
    for (size_t i = 0; i < FLOATS; i += 8) _mm256_storeu_ps(j->a + i, v);
  } else {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    for (size_t i = 0; i < FLOATS; i += 16) {
      s0 = _mm256_add_ps(s0, _mm256_loadu_ps(j->a + i));
      s1 = _mm256_add_ps(s1, _mm256_loadu_ps(j->a + i + 8));
    }
    j->sink = _mm256_cvtss_f32(_mm256_add_ps(s0, s1)); /* keeps the loads live */
  }
  return NULL;
}

int main(int argc, char **argv) {
  int t = argc > 1 ? atoi(argv[1]) : 1, write = argc > 2 ? atoi(argv[2]) : 0;
  if (t < 1 || t > 64) return 2;
  job *jobs = calloc(t, sizeof(job));
  pthread_t *th = calloc(t, sizeof(pthread_t));
  for (int i = 0; i < t; i++) {
    jobs[i].a = aligned_alloc(64, FLOATS * 4);
    memset(jobs[i].a, 0, FLOATS * 4); /* touched first: no page faults in the timed rounds */
    jobs[i].write = write;
  }
  for (int r = 0; r < 3; r++) {
    double t0 = now();
    for (int i = 0; i < t; i++) pthread_create(&th[i], NULL, stream, &jobs[i]);
    for (int i = 0; i < t; i++) pthread_join(th[i], NULL);
    double s = now() - t0;
    printf("%s, %d thread(s): %.1f GB/s\n", write ? "write" : "read", t, t * FLOATS * 4 / s / 1e9);
  }
  return 0;
}
