/* The 4-bit weight layout and the steps that int4_kernel.c and int4_tiles.c share.
 *
 * A weight's codes are stored as torch packs them for AVX-512 (see int4_weights.py): blocks of 64
 * output rows, each stored input by input, 32 bytes an input (two codes a byte). Per group of 32
 * inputs and output row, a bf16 scale and zero, and the weight is (code - 8) * scale + zero; they
 * are stored block by block, in the order the codes are read (see scales_of).
 */
#ifndef PHI3_INT4_CODES_H
#define PHI3_INT4_CODES_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

enum {
  GROUP = 32,       /* inputs per scale and zero */
  BLOCK = 64,       /* output rows per packed block; each input takes BLOCK / 2 bytes of it */
  /* Codes are asked for this far ahead of their use: the CPU's own prefetcher stops at 4 KB
   * pages. One row, 2 threads, 8 Phi-3-mini layers out of cache: 5-40 % faster than none
   * (2 KB ahead: between; 8 and 16 KB: no better). */
  PREFETCH_BYTES = 4096,
  /* ...and these far ahead into the outer caches, so that more lines are on their way at once
   * than the first cache can track (far ahead into it instead: 1.45x the time). One row times
   * 0.42 GB of Phi-3-mini-sized weights from memory, against the near prefetch alone: 12 KB
   * ahead 0.89-0.92x the time on 1 thread and 0.95-0.96x on 2; 24 KB too, with the scales'
   * prefetch below into the outer caches as well, 0.95x and 0.94x of that (medians of 25
   * paired runs; 24 or 48 KB instead of 12: no better). */
  FAR_PREFETCH_BYTES = 12288,
  FARTHEST_PREFETCH_BYTES = 24576,
  TILE_ROWS = 16, /* rows an AMX tile product takes (int4_tiles.c reads rows in whole tiles) */
};

typedef struct {
  const uint16_t *rows; /* bf16 [n_rows, in_features] */
  const float *widened_rows; /* the rows' values in fp32, for the vectors (NULL for the tiles) */
  const float *group_sums; /* [n_rows, in_features / GROUP]: each group's sum of inputs */
  const uint8_t *packed;
  const uint16_t *scales_and_zeros; /* bf16 [out_features / BLOCK, in_features / GROUP, BLOCK, 2] */
  int64_t in_features, out_features;
  void *products; /* [n_rows, out_features], bf16 or fp32 */
  int products_are_fp32;
} Operands;

/* Byte indices that spread one input pair's 64 bytes (32 for input i, 32 for i + 1) over
 * 32-bit lanes: lane l of the "low" index gets byte l of each input twice (output rows l and
 * l + 32, low and high nibble), lane l of the "high" one byte l + 16 (rows l + 16 and l + 48). */
static inline __m512i pair_spread(int first_byte) {
  uint8_t index[64];
  for (int lane = 0; lane < 16; lane++) {
    index[4 * lane] = index[4 * lane + 1] = (uint8_t)(first_byte + lane);
    index[4 * lane + 2] = index[4 * lane + 3] = (uint8_t)(BLOCK / 2 + first_byte + lane);
  }
  return _mm512_loadu_si512(index);
}

/* bf16 values of code - 8 for codes 0..15, indexed by 16-bit words (vpermw reads 5 bits). */
static inline __m512i code_values(void) {
  uint16_t table[32];
  for (int code = 0; code < 32; code++) {
    float value = (float)((code & 15) - 8);
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    table[code] = (uint16_t)(bits >> 16);
  }
  return _mm512_loadu_si512(table);
}

/* The bf16 values (-8..7) of one input pair's codes (64 bytes at `codes`: input i's, then
 * i + 1's): in lane l of the q-th, output row q * 16 + l's value of input i in its low 16 bits
 * and of input i + 1 in its high ones, as VDPBF16PS and AMX's bf16 products pair them. */
static inline __attribute__((always_inline)) void pair_values(const uint8_t *codes,
                                                              __m512i spread_low,
                                                              __m512i spread_high,
                                                              __m512i values, __m512i *pairs) {
  const __m512i low_nibbles = _mm512_set1_epi32(0x000F000F);
  const __m512i bytes = _mm512_loadu_si512(codes);
  const __m512i low = _mm512_permutexvar_epi8(spread_low, bytes);
  const __m512i high = _mm512_permutexvar_epi8(spread_high, bytes);
  pairs[0] = _mm512_permutexvar_epi16(_mm512_and_si512(low, low_nibbles), values);
  pairs[1] = _mm512_permutexvar_epi16(_mm512_and_si512(high, low_nibbles), values);
  pairs[2] = _mm512_permutexvar_epi16(_mm512_srli_epi16(low, 12), values);
  pairs[3] = _mm512_permutexvar_epi16(_mm512_srli_epi16(high, 12), values);
}

/* Asks for a block's codes further on than the pair at `pair_byte` (see PREFETCH_BYTES). */
static inline __attribute__((always_inline)) void prefetch_codes(const Operands *op,
                                                                 int64_t pair_byte,
                                                                 int64_t code_bytes) {
  if (pair_byte + PREFETCH_BYTES < code_bytes)
    _mm_prefetch((const char *)(op->packed + pair_byte + PREFETCH_BYTES), _MM_HINT_T0);
  if (pair_byte + FAR_PREFETCH_BYTES < code_bytes)
    _mm_prefetch((const char *)(op->packed + pair_byte + FAR_PREFETCH_BYTES), _MM_HINT_T2);
  if (pair_byte + FARTHEST_PREFETCH_BYTES < code_bytes)
    _mm_prefetch((const char *)(op->packed + pair_byte + FARTHEST_PREFETCH_BYTES), _MM_HINT_T2);
}

/* The scales and zeros of one block's 64 output rows for one group of inputs: (scale, zero) row
 * by row. Kept next to the group before and after, they arrive as one stream with the codes;
 * stored group by group for the whole weight (torch's layout), every group's lay a page apart,
 * and one row over 8 Phi-3-mini-sized layers from memory took 1.2x the time. */
static inline const uint16_t *scales_of(const Operands *op, int64_t block, int64_t group) {
  return op->scales_and_zeros + (block * (op->in_features / GROUP) + group) * BLOCK * 2;
}

#endif
