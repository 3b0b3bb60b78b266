/* What the tile kernels (int4_tiles.c, fp32_tiles.c) need of the AMX tiles: Linux's leave to use
 * them, and their shape. */
#ifndef PHI3_AMX_TILES_H
#define PHI3_AMX_TILES_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* 1 where Linux lends this process the tile registers, else 0: asked once (per file). */
static inline int tiles_lent(void) {
  enum { ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 };
  static int lent = -1;
  int known = __atomic_load_n(&lent, __ATOMIC_ACQUIRE);
  if (known < 0) {
    known = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
    __atomic_store_n(&lent, known, __ATOMIC_RELEASE);
  }
  return known;
}

/* This thread's tiles 0 .. count - 1 as 16 rows of 64 bytes each: 16 fp32 sums, 32 bf16 values
 * or 16 pairs of them a row. */
static inline void configure_tiles(int count) {
  struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t bytes_per_row[16];
    uint8_t rows[16];
  } config;
  memset(&config, 0, sizeof config);
  config.palette = 1;
  for (int tile = 0; tile < count; tile++) {
    config.bytes_per_row[tile] = 64;
    config.rows[tile] = 16;
  }
  _tile_loadconfig(&config);
}

#endif
