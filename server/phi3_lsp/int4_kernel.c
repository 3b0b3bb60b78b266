/* Rows times a 4-bit weight for x86-64 CPUs with AVX-512 BF16 and VBMI; built by cpu_kernels.py.
 *
 * Computes what torch's packed 4-bit CPU kernel computes for rows [n, in] rounded to bf16 and a
 * weight in its AVX-512 layout (see int4_weights.py): products[r, o] = sum over i of rows[r, i]
 * * ((code[o, i] - 8) * scale[g, o] + zero[g, o]), g = i / 32, rounded to bf16. Rows and
 * products are bf16 or fp32 (then rounded to bf16 here, as torch's conversion rounds them,
 * which saves a layer two passes over its inputs and outputs). torch's kernel
 * turns every code into an fp32 weight and multiplies in fp32, which keeps a core busy at
 * ~15 GB/s of weights; here each code becomes its exact value (-8..7), the rows' bf16 values
 * meet them in bf16 dot products or fp32 multiply-adds (below), and the scale and zero are
 * applied once per group of 32 inputs. That reads weights about as fast as the memory delivers
 * them.
 *
 * Inputs are taken two at a time, i + 1 before i: the sums of VDPBF16PS, which does just that
 * (each product of two bf16 values is exact in fp32, so each step rounds once; checked on 3.2M
 * lanes of a Xeon and of an AMD EPYC). So the kernel has two ways to the same bits, and takes
 * the one that is faster on the CPU it runs on (`phi3_int4_use_bf16_dots`, chosen by timing
 * both: cpu_kernels.py): VDPBF16PS on the codes' bf16 values, 32 products an instruction, or
 * fp32 multiply-adds on their fp32 values, 16. On a Xeon with AMX, VDPBF16PS costs ~2 cycles and
 * the permute port, the multiply-adds half a cycle: in cache one row 1.13x as fast, 2 rows
 * 1.29x, 5 rows 1.51x; one row over 8 Phi-3-mini-sized layers from memory 1.05-1.15x. On an
 * AMD EPYC (Zen 4), VDPBF16PS: SmolLM2's prompt of ~500 tokens read in 414 instead of 745 ms.
 *
 * Here every output is computed by the same steps whatever the number of rows or threads, so a
 * row's products have the same bits alone, among drafted rows, and on any thread count. Built
 * with PHI3_TILES_FROM_ROWS (on CPUs with AMX), passes of that many rows or more (more than any
 * pass compared with one-row passes, see cpu_kernels.TILES_FROM_ROWS) and a prompt's passes of
 * any width take int4_tiles.c instead, several times faster.
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

/* Whether the vectors multiply by VDPBF16PS (1) or by fp32 multiply-adds (0): the same bits. */
static int bf16_dots;

void phi3_int4_use_bf16_dots(int on) { bf16_dots = on != 0; }

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

/* Lane l of a vector of 16 output rows holds row TRANSPOSED(l) = 4 * (l & 3) + (l >> 2) of them:
 * with 16 bytes of codes (one input's, for 16 rows and 16 more) in each 128-bit lane, a lane's
 * 32 bits hold the bytes of rows 4 * (l & 3) .. + 3, of which a shift picks the (l >> 2)-th. */
static inline __m512i transposed_rows(void) {
  int32_t index[16];
  for (int lane = 0; lane < 16; lane++) index[lane] = 4 * (lane & 3) + (lane >> 2);
  return _mm512_loadu_si512(index);
}

/* The shifts that bring a lane's code down to its low 4 bits: its byte's low nibble (rows
 * 0..31 of a block) or high one (32..63). */
static inline __m512i code_shifts(int high_nibble) {
  int32_t shift[16];
  for (int lane = 0; lane < 16; lane++) shift[lane] = 8 * (lane >> 2) + 4 * high_nibble;
  return _mm512_loadu_si512(shift);
}

/* code - 8 for codes 0..15, indexed by 32-bit words (vpermps reads their low 4 bits). */
static inline __m512 code_floats(void) {
  float table[16];
  for (int code = 0; code < 16; code++) table[code] = (float)(code - 8);
  return _mm512_loadu_ps(table);
}

/* Output rows block * 64 .. + 63 for `count` (1..ROWS_AT_ONCE) rows from `first_row`, by
 * VDPBF16PS (`by_dots`, a constant: rows q * 16 + l in lane l of sums[.][q] and dots[.][q]) or
 * by multiply-adds (rows q * 16 + TRANSPOSED(l) there, put in order when stored). */
static inline __attribute__((always_inline)) void multiply_block(
    const Operands *op, int64_t first_row, int count, int64_t block, int by_dots) {
  const int64_t in_features = op->in_features, groups = in_features / GROUP;
  const __m512i spread_low = pair_spread(0), spread_high = pair_spread(16), values = code_values();
  const __m512i transposed = transposed_rows();
  const __m512i low_shifts = code_shifts(0), high_shifts = code_shifts(1);
  const __m512 code_table = code_floats();
  const __m512i zero_bits = _mm512_set1_epi32((int)0xFFFF0000);
  const int64_t first_code_byte = block * in_features * (BLOCK / 2);
  const int64_t code_bytes = op->out_features * in_features / 2;
  __m512 sums[ROWS_AT_ONCE][4];
  for (int r = 0; r < count; r++)
    for (int q = 0; q < 4; q++) sums[r][q] = _mm512_setzero_ps();

  for (int64_t group = 0; group < groups; group++) {
    __m512 dots[ROWS_AT_ONCE][4];
    for (int r = 0; r < count; r++)
      for (int q = 0; q < 4; q++) dots[r][q] = _mm512_setzero_ps();
    const uint8_t *group_codes = op->packed + first_code_byte + group * GROUP * (BLOCK / 2);
    for (int pair = 0; pair < GROUP / 2; pair++) {
      const int64_t pair_byte = first_code_byte + (group * GROUP / 2 + pair) * BLOCK;
      prefetch_codes(op, pair_byte, code_bytes);
      if (by_dots) {
        __m512i pairs[4];
        pair_values(group_codes + pair * BLOCK, spread_low, spread_high, values, pairs);
        for (int r = 0; r < count; r++) {
          int32_t input_pair;
          memcpy(&input_pair, op->rows + (first_row + r) * in_features + group * GROUP + 2 * pair,
                 sizeof input_pair);
          const __m512bh inputs = (__m512bh)_mm512_set1_epi32(input_pair);
          for (int q = 0; q < 4; q++)
            dots[r][q] = _mm512_dpbf16_ps(dots[r][q], (__m512bh)pairs[q], inputs);
        }
        continue;
      }
      for (int second = 1; second >= 0; second--) {
        const uint8_t *codes = group_codes + pair * BLOCK + second * (BLOCK / 2);
        const __m512i first16 = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)codes));
        const __m512i last16 =
            _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(codes + 16)));
        const __m512 weights[4] = {
            _mm512_permutexvar_ps(_mm512_srlv_epi32(first16, low_shifts), code_table),
            _mm512_permutexvar_ps(_mm512_srlv_epi32(last16, low_shifts), code_table),
            _mm512_permutexvar_ps(_mm512_srlv_epi32(first16, high_shifts), code_table),
            _mm512_permutexvar_ps(_mm512_srlv_epi32(last16, high_shifts), code_table),
        };
        const int64_t input = group * GROUP + 2 * pair + second;
        for (int r = 0; r < count; r++) {
          const __m512 input_value =
              _mm512_set1_ps(op->widened_rows[(first_row + r) * in_features + input]);
          for (int q = 0; q < 4; q++)
            dots[r][q] = _mm512_fmadd_ps(weights[q], input_value, dots[r][q]);
        }
      }
    }
    /* sum of (code - 8) * scale + zero times input = scale * dot + zero * (sum of inputs). */
    const uint16_t *group_scales = scales_of(op, block, group);
    for (int q = 0; q < 4; q++) {
      const __m512i in_order = _mm512_loadu_si512(group_scales + q * 32);
      const __m512i scale_zero =
          by_dots ? in_order : _mm512_permutexvar_epi32(transposed, in_order);
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
      const __m512 in_order = by_dots ? sums[r][q] : _mm512_permutexvar_ps(transposed, sums[r][q]);
      const __m256i rounded = (__m256i)_mm512_cvtneps_pbh(in_order);
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

/* Every block of outputs for every row, by VDPBF16PS or not (`by_dots`, a constant). A macro,
 * so that each way has its own parallel region: OpenMP outlines a region before functions are
 * inlined, and a way taken as a value would be tested within the innermost loop. Whole blocks
 * per thread: each thread reads its own stretch of the weight. */
#define MULTIPLY_EVERY_BLOCK(by_dots)                                                          \
  do {                                                                                         \
    _Pragma("omp parallel for num_threads(threads) schedule(static)")                          \
    for (int64_t block = 0; block < out_features / BLOCK; block++) {                           \
      int64_t first_row = 0;                                                                   \
      for (; first_row + ROWS_AT_ONCE <= n_rows; first_row += ROWS_AT_ONCE)                    \
        multiply_block(&op, first_row, ROWS_AT_ONCE, block, by_dots);                          \
      switch (n_rows - first_row) { /* constant counts keep the sums in registers */           \
        case 4: multiply_block(&op, first_row, 4, block, by_dots); break;                      \
        case 3: multiply_block(&op, first_row, 3, block, by_dots); break;                      \
        case 2: multiply_block(&op, first_row, 2, block, by_dots); break;                      \
        case 1: multiply_block(&op, first_row, 1, block, by_dots); break;                      \
      }                                                                                        \
    }                                                                                          \
  } while (0)

/* products [n_rows, out_features] = rows [n_rows, in_features] times the weight, both bf16 or
 * both fp32 (`fp32`). in_features must be a multiple of 32 and out_features of 64. `prompt`:
 * the rows are a prompt's, whose bits no pass compares with a one-row pass's. Returns 0, or -1
 * when out of memory (nothing written). */
int phi3_int4_multiply(const void *rows, int fp32, int64_t n_rows, int64_t in_features,
                       const uint8_t *packed, const uint16_t *scales_and_zeros,
                       int64_t out_features, void *products, int threads, int prompt) {
  const int64_t groups = in_features / GROUP;
#ifdef PHI3_TILES_FROM_ROWS
  const int tiles = (prompt || n_rows >= PHI3_TILES_FROM_ROWS) && phi3_int4_tiles_ready();
  /* The tiles read whole tiles of rows: the rows are copied with zero rows after them. */
  const int64_t held_rows = tiles ? (n_rows + TILE_ROWS - 1) / TILE_ROWS * TILE_ROWS : n_rows;
#else
  (void)prompt;
  const int tiles = 0;
  const int64_t held_rows = n_rows;
#endif
  const int copied = fp32 || held_rows > n_rows;
  float *group_sums = malloc((size_t)(n_rows * groups) * sizeof *group_sums);
  uint16_t *held = copied ? malloc((size_t)(held_rows * in_features) * sizeof *held) : NULL;
  const int widens = !tiles && !bf16_dots;
  float *widened = widens ? malloc((size_t)(n_rows * in_features) * sizeof *widened) : NULL;
  if (group_sums == NULL || (copied && held == NULL) || (widens && widened == NULL)) {
    free(group_sums);
    free(held);
    free(widened);
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
      .widened_rows = widened,
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
  if (widens)
    for (int64_t i = 0; i < n_rows * in_features; i += 16) {
      const __m256i row_values = _mm256_loadu_si256((const void *)(op.rows + i));
      _mm512_storeu_ps(widened + i, bf16_to_floats(row_values));
    }
  int status = 0;
#ifdef PHI3_TILES_FROM_ROWS
  if (tiles) status = phi3_int4_tiles_multiply(&op, n_rows, threads);
#endif
  if (!tiles && bf16_dots)
    MULTIPLY_EVERY_BLOCK(1);
  else if (!tiles)
    MULTIPLY_EVERY_BLOCK(0);
  free(group_sums);
  free(held);
  free(widened);
  return status;
}
