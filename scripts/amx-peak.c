/* The machine's AMX-BF16 peak: T threads each running TDPBF16PS on four independent 16 × 16
 * f32 accumulator tiles from registers (no memory in the loop), after asking Linux for the tile
 * state (arch_prctl ARCH_REQ_XCOMP_PERM). Compare with scripts/fma-peak.c at the same T: on a
 * machine whose vCPUs share one AMX unit, T = 2 gives each thread about half of T = 1.
 *   gcc -O2 -mamx-tile -mamx-bf16 scripts/amx-peak.c -o /tmp/amx-peak -lpthread && /tmp/amx-peak 2 */
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define ITERS 20000000L

struct cfg {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
} __attribute__((packed, aligned(64)));

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static void *tiles(void *out) {
  struct cfg c;
  memset(&c, 0, sizeof c);
  c.palette = 1;
  for (int i = 0; i < 8; i++) c.colsb[i] = 64, c.rows[i] = 16;
  _tile_loadconfig(&c);
  static uint16_t ones[16 * 32];
  for (int i = 0; i < 16 * 32; i++) ones[i] = 0x3f80; /* bf16 1.0 */
  _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
  _tile_loadd(4, ones, 64); _tile_loadd(5, ones, 64);
  _tile_loadd(6, ones, 64); _tile_loadd(7, ones, 64);
  for (long i = 0; i < ITERS; i++) {
    _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
  }
  float c0[16 * 16];
  _tile_stored(0, c0, 64);
  _tile_release();
  *(float *)out = c0[0]; /* keeps the loop live */
  return NULL;
}

int main(int argc, char **argv) {
  int t = argc > 1 ? atoi(argv[1]) : 1;
  if (t < 1 || t > 64) return 2;
  if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */)) {
    fprintf(stderr, "amx-peak: the kernel refuses the AMX tile state\n");
    return 1;
  }
  pthread_t th[64];
  float r[64];
  double t0 = now();
  for (int i = 0; i < t; i++) pthread_create(&th[i], NULL, tiles, &r[i]);
  for (int i = 0; i < t; i++) pthread_join(th[i], NULL);
  double flop = 4.0 * 16 * 16 * 32 * 2 * (double)ITERS * t;
  double s = now() - t0;
  printf("%d thread(s): %.0f bf16 GFLOP/s (%.0f per thread)\n", t, flop / s * 1e-9, flop / s * 1e-9 / t);
  return 0;
}
