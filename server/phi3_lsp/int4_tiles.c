/* Rows times a 4-bit weight on AMX tiles, for passes over many rows (a prompt's); built by
 * cpu_kernels.py into our kernels on CPUs with AMX-BF16, called by int4_kernel.c for a prompt's
 * passes and for passes of PHI3_TILES_FROM_ROWS rows or more.
 *
 * The sums are int4_kernel.c's: per group of 32 inputs, the dot product of the rows' bf16
 * inputs with the codes' values (code - 8), then scale * dot + zero * (sum of inputs), group
 * after group, rounded to bf16. Only the dots come from elsewhere: a tile product (TDPBF16PS)
 * takes 16 rows times a group's 32 inputs times 16 output rows in one instruction, where the
 * vector kernel takes 512 AVX-512 multiply-adds. Its circuit adds a group's 32 products in an
 * order of its own, so a dot can differ from the vector kernel's in the last bit (on random
 * Phi-3-mini-sized layers, a few outputs in a million after rounding to bf16). Each output is
 * still computed by the same steps whatever the rows with it and the threads: a row gets the
 * same bits in every pass the tiles take.
 *
 * A thread unpacks a block's codes for a group once per 64 rows, into tiles, and keeps the sums
 * of those rows while the groups go by. Measured on a 2-core Intel Xeon with AMX, 48-1,024 rows:
 * Phi-3-mini-sized layer shapes at 500-930 GFLOP/s, SmolLM2's at 410-620, where the vector
 * kernel took every shape at 130-165 (with bf16 dot products; its multiply-adds take 5 rows ~1.5x
 * as fast there). From 3 rows the tiles are the faster (Phi-3-mini-sized layers: 2x at 8 rows, 3x
 * at 16); 1-2 rows take 1.2-1.35x the vectors' time.
 */
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "amx_tiles.h"
#include "int4_codes.h"

enum {
  /* Rows that share an unpacking of the codes. Measured on a first form of this kernel,
   * Phi-3-mini-sized shapes at 48-1,024 rows: 64 rows 610-870 GFLOP/s, 128 rows 500-860, every
   * row at once (their inputs no longer stay in the core's second-level cache) 350-850, the
   * least at 1,024. */
  PANEL_ROWS = 64,
};

/* Tile registers: tile q (0..3) the dots of the block's output rows 16 * q .. + 15, then the
 * rows' inputs and the codes' values. */
#define ROWS_TILE 4
#define CODES_TILE 5

/* A thread's memory. */
typedef struct {
  /* Per 16 output rows q, the group's code values as a tile: row `pair` holds, output row by
   * output row, its values for inputs 2 * pair and 2 * pair + 1. */
  uint16_t codes[4][GROUP / 2][32];
  float dots[TILE_ROWS][BLOCK];
  float sums[PANEL_ROWS][BLOCK];
} __attribute__((aligned(64))) Scratch;

/* 1 where this process may use the tiles (asked once), else 0: the vector kernel runs. */
int phi3_int4_tiles_ready(void) { return tiles_lent(); }

/* The group's codes of the block as tiles of bf16 values (-8..7), its codes prefetched as
 * int4_kernel.c's multiply_block does. */
static void unpack_group(const Operands *op, int64_t block, int64_t group, Scratch *scratch) {
  const __m512i spread_low = pair_spread(0), spread_high = pair_spread(16);
  const __m512i values = code_values();
  const int64_t first_code_byte = block * op->in_features * (BLOCK / 2);
  const int64_t code_bytes = op->out_features * op->in_features / 2;
  for (int pair = 0; pair < GROUP / 2; pair++) {
    const int64_t pair_byte = first_code_byte + (group * GROUP / 2 + pair) * BLOCK;
    prefetch_codes(op, pair_byte, code_bytes);
    __m512i pairs[4];
    pair_values(op->packed + pair_byte, spread_low, spread_high, values, pairs);
    for (int q = 0; q < 4; q++) _mm512_store_si512(scratch->codes[q][pair], pairs[q]);
  }
}

/* Tile q's dots: its output rows' codes times the rows in ROWS_TILE. */
#define DOTS_OF(q)                                  \
  do {                                              \
    _tile_loadd(CODES_TILE, scratch->codes[q], 64); \
    _tile_dpbf16ps(q, ROWS_TILE, CODES_TILE);       \
  } while (0)

/* Output rows block * 64 .. + 63 for `count` (1..PANEL_ROWS) rows from `first_row`. */
static void multiply_panel(const Operands *op, int64_t first_row, int64_t count, int64_t block,
                           Scratch *scratch) {
  const int64_t in_features = op->in_features, groups = in_features / GROUP;
  const __m512i zero_bits = _mm512_set1_epi32((int)0xFFFF0000);
  memset(scratch->sums, 0, sizeof scratch->sums);
  for (int64_t group = 0; group < groups; group++) {
    unpack_group(op, block, group, scratch);
    /* The tile loads read what unpacking stored, and GCC's tile load says nothing of the memory
     * it reads: the stores must stay before it. */
    __asm__ volatile("" ::: "memory");
    const uint16_t *group_scales = scales_of(op, block, group);
    __m512 scale[4], zero[4];
    for (int q = 0; q < 4; q++) {
      const __m512i scale_zero = _mm512_loadu_si512(group_scales + q * 32);
      scale[q] = _mm512_castsi512_ps(_mm512_slli_epi32(scale_zero, 16));
      zero[q] = _mm512_castsi512_ps(_mm512_and_si512(scale_zero, zero_bits));
    }
    for (int64_t tile = 0; tile < count; tile += TILE_ROWS) {
      _tile_loadd(ROWS_TILE, op->rows + (first_row + tile) * in_features + group * GROUP,
                  in_features * 2);
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      /* The four products back to back, then their stores: a store right after its product
       * waits for it (Phi-3-mini-sized shapes at 192-512 rows: ~10 % faster so, noisy). */
      DOTS_OF(0);
      DOTS_OF(1);
      DOTS_OF(2);
      DOTS_OF(3);
      _tile_stored(0, scratch->dots[0], BLOCK * 4);
      _tile_stored(1, scratch->dots[0] + 16, BLOCK * 4);
      _tile_stored(2, scratch->dots[0] + 32, BLOCK * 4);
      _tile_stored(3, scratch->dots[0] + 48, BLOCK * 4);
      const int64_t rows = count - tile < TILE_ROWS ? count - tile : TILE_ROWS;
      for (int64_t r = 0; r < rows; r++) {
        const int64_t row = first_row + tile + r;
        const __m512 input_sum = _mm512_set1_ps(op->group_sums[row * groups + group]);
        float *sums = scratch->sums[tile + r];
        for (int q = 0; q < 4; q++) { /* added as multiply_block adds them */
          __m512 sum = _mm512_loadu_ps(sums + 16 * q);
          sum = _mm512_fmadd_ps(scale[q], _mm512_loadu_ps(scratch->dots[r] + 16 * q), sum);
          sum = _mm512_fmadd_ps(zero[q], input_sum, sum);
          _mm512_storeu_ps(sums + 16 * q, sum);
        }
      }
    }
  }
  for (int64_t r = 0; r < count; r++)
    for (int q = 0; q < 4; q++) {
      const int64_t first = (first_row + r) * op->out_features + block * BLOCK + q * 16;
      const __m256i rounded = (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(scratch->sums[r] + 16 * q));
      if (op->products_are_fp32) {
        const __m512i widened = _mm512_slli_epi32(_mm512_cvtepu16_epi32(rounded), 16);
        _mm512_storeu_si512((float *)op->products + first, widened);
      } else {
        _mm256_storeu_si256((__m256i *)((uint16_t *)op->products + first), rounded);
      }
    }
}

/* op->products for `n_rows` rows; op->rows holds them in whole tiles (zero rows after them).
 * Needs phi3_int4_tiles_ready(). Returns 0, or -1 when out of memory (nothing written). */
int phi3_int4_tiles_multiply(const Operands *op, int64_t n_rows, int threads) {
  Scratch *scratch = aligned_alloc(64, (size_t)threads * sizeof *scratch);
  if (scratch == NULL) return -1;
#pragma omp parallel num_threads(threads)
  {
    Scratch *own = scratch + omp_get_thread_num();
    configure_tiles(CODES_TILE + 1);
    for (int64_t first_row = 0; first_row < n_rows; first_row += PANEL_ROWS) {
      const int64_t count = n_rows - first_row < PANEL_ROWS ? n_rows - first_row : PANEL_ROWS;
      /* Whole blocks per thread, as in int4_kernel.c. */
#pragma omp for schedule(static)
      for (int64_t block = 0; block < op->out_features / BLOCK; block++)
        multiply_panel(op, first_row, count, block, own);
    }
    _tile_release();
  }
  free(scratch);
  return 0;
}
