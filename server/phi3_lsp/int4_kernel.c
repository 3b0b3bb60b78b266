/* Rows times a 4-bit weight for x86-64 CPUs with AVX-512 BF16 and VBMI; built by cpu_kernels.py.
 *
 * Computes what torch's packed 4-bit CPU kernel computes for rows [n, in] rounded to bf16 and a
 * weight in its AVX-512 layout (see int4_weights.py): products[r, o] = sum over i of rows[r, i]
 * * ((code[o, i] - 8) * scale[g, o] + zero[g, o]), g = i / 32, rounded to bf16. Rows and
 * products are bf16 or fp32 (then rounded to bf16 here, as torch's conversion rounds them,
 * which saves a layer two passes over its inputs and outputs). torch's kernel
 * turns every code into an fp32 weight and multiplies in fp32, which keeps a core busy at
 * ~15 GB/s of weights; here the codes become exact bf16 values (-8..7) and meet the rows in
 * bf16 dot products (two products a lane, summed in fp32), the scale and zero are applied once
 * per group of 32 inputs. That reads weights as fast as the memory delivers them.
 *
 * Here every output is computed by the same steps whatever the number of rows or threads, so a
 * row's products have the same bits alone, among drafted rows, and on any thread count. Built
 * with PHI3_TILES_FROM_ROWS (on CPUs with AMX), passes of that many rows or more (more than any
 * pass compared with one-row passes, see cpu_kernels.TILES_FROM_ROWS) take int4_tiles.c
 * instead, several times faster.
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "int4_codes.h"

enum {
  /* Input rows that share the weight codes unpacked into registers: 5 took 0.93-0.96x the time
   * of 4 for 16-480 rows, 6 no better than 4 (its sums no longer fit the registers). */
  ROWS_AT_ONCE = 5,
};

#ifdef PHI3_TILES_FROM_ROWS
int phi3_int4_tiles_ready(void);
int phi3_int4_tiles_multiply(const Operands *op, int64_t n_rows, int threads);

/* The fewest rows whose products take the tiles, or 0 where this process may not use them. */
int phi3_int4_tiles_from_rows(void) { return phi3_int4_tiles_ready() ? PHI3_TILES_FROM_ROWS : 0; }
#endif

static __m512 bf16_to_floats(__m256i values) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(values), 16));
}

/* The sum of a group's 32 bf16 inputs, in a fixed order (vectorized: a loop of dependent
 * additions over a prompt's inputs made 480-row products 1-6 % slower). */
static float group_sum(const uint16_t *inputs) {
  const __m512i values = _mm512_loadu_si512(inputs);
  const __m512 low = bf16_to_floats(_mm512_castsi512_si256(values));
  const __m512 high = bf16_to_floats(_mm512_extracti64x4_epi64(values, 1));
  return _mm512_reduce_add_ps(_mm512_add_ps(low, high));
}

/* Output rows block * 64 .. + 63 for `count` (1..ROWS_AT_ONCE) rows from `first_row`. */
static inline __attribute__((always_inline)) void multiply_block(
    const Operands *op, int64_t first_row, int count, int64_t block) {
  const int64_t in_features = op->in_features, groups = in_features / GROUP;
  const __m512i spread_low = pair_spread(0), spread_high = pair_spread(16);
  const __m512i low_nibbles = _mm512_set1_epi32(0x000F000F), values = code_values();
  const __m512i zero_bits = _mm512_set1_epi32((int)0xFFFF0000);
  const int64_t first_code_byte = block * in_features * (BLOCK / 2);
  const int64_t code_bytes = op->out_features * in_features / 2;
  const uint8_t *codes = op->packed + first_code_byte;
  __m512 sums[ROWS_AT_ONCE][4];
  for (int r = 0; r < count; r++)
    for (int q = 0; q < 4; q++) sums[r][q] = _mm512_setzero_ps();

  for (int64_t group = 0; group < groups; group++) {
    __m512 dots[ROWS_AT_ONCE][4];
    for (int r = 0; r < count; r++)
      for (int q = 0; q < 4; q++) dots[r][q] = _mm512_setzero_ps();
    const uint8_t *group_codes = codes + group * GROUP * (BLOCK / 2);
    for (int pair = 0; pair < GROUP / 2; pair++) {
      const int64_t pair_byte = first_code_byte + (group * GROUP / 2 + pair) * BLOCK;
      prefetch_codes(op, pair_byte, code_bytes);
      const __m512i bytes = _mm512_loadu_si512(group_codes + pair * BLOCK);
      const __m512i low = _mm512_permutexvar_epi8(spread_low, bytes);
      const __m512i high = _mm512_permutexvar_epi8(spread_high, bytes);
      /* Lane l: the bf16 weights of inputs (i, i + 1) for output rows l, l + 16, l + 32, l + 48. */
      const __m512bh weights[4] = {
          (__m512bh)_mm512_permutexvar_epi16(_mm512_and_si512(low, low_nibbles), values),
          (__m512bh)_mm512_permutexvar_epi16(_mm512_and_si512(high, low_nibbles), values),
          (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi16(low, 12), values),
          (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi16(high, 12), values),
      };
      for (int r = 0; r < count; r++) {
        int32_t input_pair;
        memcpy(&input_pair, op->rows + (first_row + r) * in_features + group * GROUP + 2 * pair,
               sizeof input_pair);
        const __m512bh inputs = (__m512bh)_mm512_set1_epi32(input_pair);
        for (int q = 0; q < 4; q++) dots[r][q] = _mm512_dpbf16_ps(dots[r][q], weights[q], inputs);
      }
    }
    /* sum of (code - 8) * scale + zero times input = scale * dot + zero * (sum of inputs). */
    const uint16_t *group_scales = scales_of(op, block, group);
    for (int q = 0; q < 4; q++) {
      const __m512i scale_zero = _mm512_loadu_si512(group_scales + q * 32);
      const __m512 scale = _mm512_castsi512_ps(_mm512_slli_epi32(scale_zero, 16));
      const __m512 zero = _mm512_castsi512_ps(_mm512_and_si512(scale_zero, zero_bits));
      for (int r = 0; r < count; r++) {
        const __m512 input_sum = _mm512_set1_ps(op->group_sums[(first_row + r) * groups + group]);
        sums[r][q] = _mm512_fmadd_ps(scale, dots[r][q], sums[r][q]);
        sums[r][q] = _mm512_fmadd_ps(zero, input_sum, sums[r][q]);
      }
    }
  }
  for (int r = 0; r < count; r++)
    for (int q = 0; q < 4; q++) {
      const int64_t first = (first_row + r) * op->out_features + block * BLOCK + q * 16;
      const __m256i rounded = (__m256i)_mm512_cvtneps_pbh(sums[r][q]);
      if (op->products_are_fp32) {
        const __m512i widened = _mm512_slli_epi32(_mm512_cvtepu16_epi32(rounded), 16);
        _mm512_storeu_si512((float *)op->products + first, widened);
      } else {
        _mm256_storeu_si256((__m256i *)((uint16_t *)op->products + first), rounded);
      }
    }
}

/* The rows rounded to bf16 as torch rounds them (to nearest, ties to even; the instruction also
 * flushes fp32 subnormals, below 1.2e-38, to zero). */
static void round_to_bf16(const float *rows, int64_t count, uint16_t *rounded) {
  for (int64_t i = 0; i < count; i += 16)
    _mm256_storeu_si256((__m256i *)(rounded + i),
                        (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(rows + i)));
}

/* products [n_rows, out_features] = rows [n_rows, in_features] times the weight, both bf16 or
 * both fp32 (`fp32`). in_features must be a multiple of 32 and out_features of 64. Returns 0,
 * or -1 when out of memory (nothing written). */
int phi3_int4_multiply(const void *rows, int fp32, int64_t n_rows, int64_t in_features,
                       const uint8_t *packed, const uint16_t *scales_and_zeros,
                       int64_t out_features, void *products, int threads) {
  const int64_t groups = in_features / GROUP;
#ifdef PHI3_TILES_FROM_ROWS
  const int tiles = n_rows >= PHI3_TILES_FROM_ROWS && phi3_int4_tiles_ready();
  /* The tiles read whole tiles of rows: the rows are copied with zero rows after them. */
  const int64_t held_rows = tiles ? (n_rows + TILE_ROWS - 1) / TILE_ROWS * TILE_ROWS : n_rows;
#else
  const int tiles = 0;
  const int64_t held_rows = n_rows;
#endif
  const int copied = fp32 || held_rows > n_rows;
  float *group_sums = malloc((size_t)(n_rows * groups) * sizeof *group_sums);
  uint16_t *held = copied ? malloc((size_t)(held_rows * in_features) * sizeof *held) : NULL;
  if (group_sums == NULL || (copied && held == NULL)) {
    free(group_sums);
    free(held);
    return -1;
  }
  if (fp32)
    round_to_bf16(rows, n_rows * in_features, held);
  else if (copied)
    memcpy(held, rows, (size_t)(n_rows * in_features) * sizeof *held);
  if (held_rows > n_rows)
    memset(held + n_rows * in_features, 0, (size_t)((held_rows - n_rows) * in_features) * 2);
  const Operands op = {
      .rows = copied ? held : rows,
      .group_sums = group_sums,
      .packed = packed,
      .scales_and_zeros = scales_and_zeros,
      .in_features = in_features,
      .out_features = out_features,
      .products = products,
      .products_are_fp32 = fp32,
  };
  for (int64_t r = 0; r < n_rows; r++)
    for (int64_t group = 0; group < groups; group++)
      group_sums[r * groups + group] = group_sum(op.rows + r * in_features + group * GROUP);
  int status = 0;
#ifdef PHI3_TILES_FROM_ROWS
  if (tiles) status = phi3_int4_tiles_multiply(&op, n_rows, threads);
#endif
  if (!tiles) {
    /* Whole blocks per thread: each thread reads its own stretch of the weight. */
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t block = 0; block < out_features / BLOCK; block++) {
      int64_t first_row = 0;
      for (; first_row + ROWS_AT_ONCE <= n_rows; first_row += ROWS_AT_ONCE)
        multiply_block(&op, first_row, ROWS_AT_ONCE, block);
      switch (n_rows - first_row) { /* constant counts let the compiler keep sums in registers */
        case 4: multiply_block(&op, first_row, 4, block); break;
        case 3: multiply_block(&op, first_row, 3, block); break;
        case 2: multiply_block(&op, first_row, 2, block); break;
        case 1: multiply_block(&op, first_row, 1, block); break;
      }
    }
  }
  free(group_sums);
  free(held);
  return status;
}
