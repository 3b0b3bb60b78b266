/* Many fp32 rows times a bf16-held weight on AMX tiles, to fp32's precision; built by
 * cpu_kernels.py into our kernels and the fp32 kernel on CPUs with AMX-BF16. decoder_layer.c
 * calls it for a prompt's passes at any width, fp32_products.py for passes longer than the
 * vector kernel takes where a layer does not run in one call.
 *
 * products[r, o] = sum over i of rows[r, i] * weight[o, i]. An fp32 input is the sum of three
 * bf16 parts (its 24 significant bits, 8 at a time): high = bf16(x), middle = bf16(x - high),
 * low = bf16(x - high - middle). A tile product (TDPBF16PS) multiplies bf16 values exactly and
 * adds in fp32, so three of them, one per part, against the weight's bf16 values sum the
 * products of the fp32 rows with the weight, rounded as an fp32 sum rounds: on Phi-3-mini's
 * shapes the largest error was 0.8-1.3e-7 of the sum of the terms' magnitudes (torch's fp32
 * products: 0.3-0.8e-7). Only inputs under ~1e-33 lose their low part (the tiles read bf16
 * subnormals as zero).
 *
 * Each output is summed in one order whatever the rows beside it and the threads: group of 32
 * inputs after group, the high part's products, then the middle's, then the low's. Measured on a
 * 2-core Intel Xeon with AMX, against torch's fp32 products of the widened weight (2 threads):
 * Phi-3-mini's query-key-value, gate-up and down projections at 200-500 rows 2.8-3.1x, 2.8-2.9x
 * and 1.8-2.0x the speed; over 2 Phi-3-mini-sized layers (from memory), 1 / 2 / 4 / 16 / 128
 * rows 0.8 / 0.87 / 1.06 / 2.45 / 3.7x the vector kernel's. Most of the time goes in waiting for
 * the weight's tiles (sampled: ~57 % of it just after their loads); slower, with the same bits:
 * 128 rows at a time with the inputs in chunks of 512-2048 (0.7-1.05x), the block's weight rows
 * copied into one run first (0.5-0.9x), its next groups or block asked for ahead (0.6-1.1x).
 * An fp32 weight would need six products (its parts times the rows'): SmolLM2's shapes at
 * 200-500 rows took 1.2-2.1x torch's time so, and keep torch's.
 */
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>

#include "amx_tiles.h"

enum {
  TILE_ROWS = 16, /* rows of a tile: 16 outputs of an A tile, 16 input pairs of a B tile */
  GROUP = 32,     /* inputs a tile product takes: a tile row's 64 bytes of bf16 */
  PARTS = 3,      /* bf16 parts of an fp32 input */
  /* Rows that meet a block's weight together: two tiles. Their three parts stay in the core's
   * second-level cache while the blocks go by (Phi-3-mini's shapes at 200 and 500 rows: 32 rows at a
   * time 0.95-1.5x the speed of 64, 1.3-1.6x that of 128). */
  PANEL_ROWS = 2 * TILE_ROWS,
  BLOCK = 2 * TILE_ROWS, /* outputs a thread takes at a time: two A tiles */
};

/* 1 where Linux lends this process the tile registers (asked once), else 0. */
int phi3_fp32_tiles_ready(void) { return tiles_lent(); }

/* Tiles 0-3 hold the sums (outputs 0-15 and 16-31 of a block, times the panel's rows 0-15 and
 * 16-31), 4-5 the block's weight, 6-7 the rows' inputs. */
enum { TILES = 8 };

static inline __m512i lanes_times(int step) {
  return _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                            _mm512_set1_epi32(step));
}

/* Rows first .. first + count - 1 (count <= PANEL_ROWS) as the B tiles of their parts:
 * panel[part][tile][pair][lane] is one 32-bit word, the row's inputs 2 * pair and 2 * pair + 1
 * (a tile product's pairs), for row tile * 16 + lane; zeros for the rows past count. */
static void split_panel(const float *rows, int64_t first, int64_t count, int64_t in_features,
                        uint32_t *panel) {
  const int64_t tile_words = in_features / 2 * TILE_ROWS;
  const __m512i next_pair = lanes_times(TILE_ROWS);
#pragma omp for schedule(static)
  for (int64_t row = 0; row < PANEL_ROWS; row++) {
    uint32_t *words = panel + row / TILE_ROWS * tile_words + row % TILE_ROWS;
    for (int64_t i = 0; i < in_features; i += GROUP) {
      __m512 x[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
      if (row < count)
        for (int half = 0; half < 2; half++)
          x[half] = _mm512_loadu_ps(rows + (first + row) * in_features + i + 16 * half);
      for (int part = 0; part < PARTS; part++) {
        /* This part of the 32 inputs in order, as 16 pairs; what is left for the next. */
        const __m512bh bf16 = _mm512_cvtne2ps_pbh(x[1], x[0]);
        const __m512i pairs = (__m512i)bf16;
        for (int half = 0; half < 2; half++) {
          const __m256bh rounded = (__m256bh)_mm512_extracti64x4_epi64(pairs, half);
          x[half] = _mm512_sub_ps(x[half], _mm512_cvtpbh_ps(rounded));
        }
        _mm512_i32scatter_epi32(words + part * 2 * tile_words + i / 2 * TILE_ROWS, next_pair,
                                pairs, 4);
      }
    }
  }
}

/* Sum tile `tile` (stored to `sums`, outputs by row) into products[row, first_output ..]. */
#define STORE_SUMS(tile, first_output, first_row)                    \
  do {                                                               \
    _tile_stored(tile, sums, 64);                                    \
    store_sums(sums, products, out_features, first_output, first_row, \
               count - ((first_row) - first));                       \
  } while (0)

static void store_sums(float (*sums)[TILE_ROWS], float *products, int64_t out_features,
                       int64_t first_output, int64_t first_row, int64_t rows_left) {
  /* The tile store writes what the gathers read, and GCC's tile store says nothing of it. */
  __asm__ volatile("" ::: "memory");
  const __m512i next_output = lanes_times(TILE_ROWS);
  const int64_t rows = rows_left < TILE_ROWS ? rows_left : TILE_ROWS;
  for (int64_t r = 0; r < rows; r++)
    _mm512_storeu_ps(products + (first_row + r) * out_features + first_output,
                     _mm512_i32gather_ps(next_output, &sums[0][r], 4));
}

/* The block's 32 outputs for the panel's rows: group by group, each part's products. A panel
 * of up to 16 rows (a keystroke's) takes one tile of rows, half the products. */
static void multiply_block(const uint16_t *weight, int64_t block, const uint32_t *panel,
                           int64_t in_features, int64_t out_features, float *products,
                           int64_t first, int64_t count) {
  const int64_t tile_words = in_features / 2 * TILE_ROWS;
  const uint16_t *outputs = weight + block * BLOCK * in_features;
  const int two_tiles = count > TILE_ROWS;
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (int64_t i = 0; i < in_features; i += GROUP) {
    _tile_loadd(4, outputs + i, in_features * 2);
    _tile_loadd(5, outputs + TILE_ROWS * in_features + i, in_features * 2);
    for (int part = 0; part < PARTS; part++) {
      const uint32_t *inputs = panel + part * 2 * tile_words + i / 2 * TILE_ROWS;
      _tile_loadd(6, inputs, 64);
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(1, 5, 6);
      if (two_tiles) {
        _tile_loadd(7, inputs + tile_words, 64);
        _tile_dpbf16ps(2, 4, 7);
        _tile_dpbf16ps(3, 5, 7);
      }
    }
  }
  float sums[TILE_ROWS][TILE_ROWS] __attribute__((aligned(64)));
  const int64_t o = block * BLOCK;
  STORE_SUMS(0, o, first);
  STORE_SUMS(1, o + TILE_ROWS, first);
  if (two_tiles) {
    STORE_SUMS(2, o, first + TILE_ROWS);
    STORE_SUMS(3, o + TILE_ROWS, first + TILE_ROWS);
  }
}

/* products [n_rows, out] = rows [n_rows, in] (fp32) times weight [out, in] (bf16) transposed,
 * for in and out multiples of 32. Needs phi3_fp32_tiles_ready(). Returns 0, or -1 when out of
 * memory (nothing written). */
int phi3_fp32_tiles_multiply(const float *rows, int64_t n_rows, int64_t in_features,
                             const uint16_t *weight, int64_t out_features, float *products,
                             int threads) {
  uint32_t *panel = aligned_alloc(64, (size_t)PARTS * PANEL_ROWS * in_features * 2);
  if (panel == NULL) return -1;
#pragma omp parallel num_threads(threads)
  {
    configure_tiles(TILES);
    for (int64_t first = 0; first < n_rows; first += PANEL_ROWS) {
      const int64_t count = n_rows - first < PANEL_ROWS ? n_rows - first : PANEL_ROWS;
      split_panel(rows, first, count, in_features, panel); /* its loop ends in a barrier */
#pragma omp for schedule(static)
      for (int64_t block = 0; block < out_features / BLOCK; block++)
        multiply_block(weight, block, panel, in_features, out_features, products, first, count);
    }
    _tile_release();
  }
  free(panel);
  return 0;
}
