/* Attention over cached keys and values (fp32, AVX-512); built by cpu_kernels.py.
 *
 * One entry point, one arithmetic. A decode pass attends from one position to every cached
 * one: it reads all keys and values once and does little else, so its speed is the speed of
 * that read (torch's SDPA reads them at ~19 GB/s on 2 cores of a 2-core EPYC whose memory
 * delivers ~37). A prompt pass attends from each of its positions to the keys up to it,
 * which is arithmetic (torch's SDPA: ~110 GFLOP/s there).
 *
 * Each position's output is computed by the same steps in the same order in either, whatever
 * the other positions and the number of threads: a position read with a prompt gets the bits
 * a one-token pass would give it (row_attention.py needs that). The steps: 16 keys' scores at
 * a time, each a per-lane sum over the head's chunks of 16 values, then a fixed halving tree
 * over the lanes (`sum_lanes`); softmax with one maximum, e^x in chunks of 16 scores and the
 * total by the same tree; the values weighted in token order and scaled by 1 / total.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "vector_math.h"

enum { LANES = 16, MAX_CHUNKS = 8, ROW_BLOCK = 16, VALUE_ROWS = 4 };

/* The sum of a vector's lanes by halving: lane i + lane i+8, then i + i+4, i + i+2, i + i+1.
 * Written out rather than left to the compiler's reduction, whose order is its own. */
static inline float sum_lanes(__m512 v) {
  const __m256 high = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
  const __m256 eighths = _mm256_add_ps(_mm512_castps512_ps256(v), high);
  const __m128 fourths = _mm_add_ps(_mm256_castps256_ps128(eighths), _mm256_extractf128_ps(eighths, 1));
  const __m128 halves = _mm_add_ps(fourths, _mm_movehl_ps(fourths, fourths));
  return _mm_cvtss_f32(_mm_add_ss(halves, _mm_movehdup_ps(halves)));
}

/* Sixteen `sum_lanes` at once: lane j of the result is sum_lanes(v[j]), by the same halving
 * (each step adds the same pairs of lanes, four vectors' worth per instruction). */
static inline __m512 sum_lanes_of_16(const __m512 v[LANES]) {
  __m512 eighths[8], fourths[4], halves[2];
  /* [v lanes 0-7 + 8-15 | w lanes 0-7 + 8-15] */
  for (int i = 0; i < 8; i++)
    eighths[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44),
                               _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xEE));
  /* 128-bit blocks 0, 2 of x and of y, plus blocks 1, 3: one block of 4 sums per vector */
  for (int i = 0; i < 4; i++)
    fourths[i] = _mm512_add_ps(_mm512_shuffle_f32x4(eighths[2 * i], eighths[2 * i + 1], 0x88),
                               _mm512_shuffle_f32x4(eighths[2 * i], eighths[2 * i + 1], 0xDD));
  /* in each block: elements 0, 1 of x and of y, plus 2, 3 */
  for (int i = 0; i < 2; i++)
    halves[i] = _mm512_add_ps(_mm512_shuffle_ps(fourths[2 * i], fourths[2 * i + 1], 0x44),
                              _mm512_shuffle_ps(fourths[2 * i], fourths[2 * i + 1], 0xEE));
  /* in each block: elements 0, 2 of x and of y, plus 1, 3 */
  const __m512 sums = _mm512_add_ps(_mm512_shuffle_ps(halves[0], halves[1], 0x88),
                                    _mm512_shuffle_ps(halves[0], halves[1], 0xDD));
  /* Lane 4 * b + k now holds v[4 * k + b]'s sum: put v[j]'s in lane j. */
  const __m512i order = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
  return _mm512_permutexvar_ps(order, sums);
}

/* scale * (query . key) for up to 16 keys from `key`, `token_stride` floats apart; lanes past
 * `count` are 0. The query is given as its head's chunks of 16 values. */
static inline __m512 scores_of_16_keys(const __m512 query[MAX_CHUNKS], int64_t chunks,
                                       const float *key, int64_t token_stride, int64_t count,
                                       float scale) {
  __m512 partial[LANES];
  for (int64_t j = 0; j < LANES; j++) {
    partial[j] = _mm512_setzero_ps();
    if (j >= count) continue;
    const float *row = key + j * token_stride;
    partial[j] = _mm512_mul_ps(query[0], _mm512_loadu_ps(row));
    for (int64_t c = 1; c < chunks; c++)
      partial[j] = _mm512_fmadd_ps(query[c], _mm512_loadu_ps(row + c * LANES), partial[j]);
  }
  return _mm512_mul_ps(sum_lanes_of_16(partial), _mm512_set1_ps(scale));
}

static inline void load_query(const float *query, int64_t chunks, __m512 out[MAX_CHUNKS]) {
  for (int64_t c = 0; c < chunks; c++) out[c] = _mm512_loadu_ps(query + c * LANES);
}

/* Turns `tokens` scores into softmax numerators in place, -inf past them up to the next
 * multiple of 16; returns 1 / their total. */
static float softmax_numerators(float *scores, int64_t tokens) {
  const int64_t padded = (tokens + LANES - 1) / LANES * LANES;
  for (int64_t t = tokens; t < padded; t++) scores[t] = -INFINITY; /* e^-inf: 0 */
  /* (a maximum is exact in any order: 16 lanes at a time, not one long chain) */
  __m512 lane_highest = _mm512_set1_ps(-INFINITY);
  for (int64_t t = 0; t < padded; t += LANES)
    lane_highest = _mm512_max_ps(lane_highest, _mm512_loadu_ps(scores + t));
  const float highest = _mm512_reduce_max_ps(lane_highest);
  __m512 total = _mm512_setzero_ps();
  const __m512 shift = _mm512_set1_ps(highest);
  for (int64_t t = 0; t < padded; t += LANES) {
    const __m512 weights = exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(scores + t), shift));
    _mm512_storeu_ps(scores + t, weights);
    total = _mm512_add_ps(total, weights);
  }
  return 1.0f / sum_lanes(total);
}

/* sums[r] += weights[r][t] * values[t] for t in [first, last), in token order, for `rows`
 * rows at once (up to VALUE_ROWS: each value is loaded once for all of them). */
static inline void add_weighted_values(int64_t rows, const float *const weights[VALUE_ROWS],
                                       const float *values, int64_t token_stride, int64_t chunks,
                                       int64_t first, int64_t last,
                                       __m512 sums[VALUE_ROWS][MAX_CHUNKS]) {
  for (int64_t t = first; t < last; t++) {
    const float *value = values + t * token_stride;
    for (int64_t c = 0; c < chunks; c++) {
      const __m512 v = _mm512_loadu_ps(value + c * LANES);
      for (int64_t r = 0; r < rows; r++)
        sums[r][c] = _mm512_fmadd_ps(_mm512_set1_ps(weights[r][t]), v, sums[r][c]);
    }
  }
}

/* Rows [first, first + count) of one head, each seeing tokens [0, visible(row)). `scores`
 * has room for ROW_BLOCK rows of `row_room` floats. */
static inline __attribute__((always_inline)) void attend_rows_of(
    const int64_t chunks, const float *query, int64_t query_row_stride, const float *keys,
    const float *values, int64_t token_stride, int64_t count, const int64_t *visible,
    float scale, float *scores, int64_t row_room, float *out, int64_t out_row_stride) {
  /* Scores: 16 keys at a time for every row that sees them, the keys staying in L1. */
  for (int64_t first_key = 0; first_key < visible[count - 1]; first_key += LANES) {
    for (int64_t r = 0; r < count; r++) {
      if (visible[r] <= first_key) continue;
      __m512 query_chunks[MAX_CHUNKS];
      load_query(query + r * query_row_stride, chunks, query_chunks);
      const int64_t keys_here = visible[r] - first_key < LANES ? visible[r] - first_key : LANES;
      const float *key = keys + first_key * token_stride;
      /* (all 16 keys spelled out as a constant, for a loop without tests) */
      const __m512 block_scores =
          keys_here == LANES
              ? scores_of_16_keys(query_chunks, chunks, key, token_stride, LANES, scale)
              : scores_of_16_keys(query_chunks, chunks, key, token_stride, keys_here, scale);
      _mm512_storeu_ps(scores + r * row_room + first_key, block_scores);
    }
  }
  float normalizers[ROW_BLOCK];
  for (int64_t r = 0; r < count; r++)
    normalizers[r] = softmax_numerators(scores + r * row_room, visible[r]);

  for (int64_t first = 0; first < count; first += VALUE_ROWS) {
    const int64_t rows = count - first < VALUE_ROWS ? count - first : VALUE_ROWS;
    __m512 sums[VALUE_ROWS][MAX_CHUNKS];
    const float *weights[VALUE_ROWS] = {NULL};
    for (int64_t r = 0; r < rows; r++) {
      weights[r] = scores + (first + r) * row_room;
      for (int64_t c = 0; c < chunks; c++) sums[r][c] = _mm512_setzero_ps();
    }
    /* Tokens every row of the group sees together, then each row's own last ones. */
    if (rows == VALUE_ROWS) /* (a constant again) */
      add_weighted_values(VALUE_ROWS, weights, values, token_stride, chunks, 0, visible[first],
                          sums);
    else
      add_weighted_values(rows, weights, values, token_stride, chunks, 0, visible[first], sums);
    for (int64_t r = 0; r < rows; r++) {
      __m512 (*row_sums)[MAX_CHUNKS] = &sums[r];
      const float *row_weights[VALUE_ROWS] = {weights[r]};
      add_weighted_values(1, row_weights, values, token_stride, chunks, visible[first],
                          visible[first + r], row_sums);
      float *row_out = out + (first + r) * out_row_stride;
      for (int64_t c = 0; c < chunks; c++)
        _mm512_storeu_ps(row_out + c * LANES,
                         _mm512_mul_ps(sums[r][c], _mm512_set1_ps(normalizers[first + r])));
    }
  }
}

/* attend_rows_of compiled for the common head sizes (64, 96, 128 values), so that its loops
 * over a head's chunks unroll and the 16 keys' partial sums stay in registers. */
static void attend_rows(const float *query, int64_t query_row_stride, const float *keys,
                        const float *values, int64_t token_stride, int64_t head_dim,
                        int64_t count, const int64_t *visible, float scale, float *scores,
                        int64_t row_room, float *out, int64_t out_row_stride) {
#define ATTEND_ROWS(chunks)                                                                   \
  attend_rows_of(chunks, query, query_row_stride, keys, values, token_stride, count, visible, \
                 scale, scores, row_room, out, out_row_stride)
  switch (head_dim / LANES) {
    case 4: ATTEND_ROWS(4); break;
    case 6: ATTEND_ROWS(6); break;
    case 8: ATTEND_ROWS(8); break;
    default: ATTEND_ROWS(head_dim / LANES);
  }
#undef ATTEND_ROWS
}

/* One position (a decode pass): each head on one thread, statically; see phi3_attend_causal. */
static int attend_one_position(const float *query, int64_t query_head_stride, const float *keys,
                               const float *values, int64_t heads, int64_t kv_heads,
                               int64_t head_dim, int64_t tokens, int64_t head_stride,
                               int64_t token_stride, float scale, float *out, int threads) {
  const int64_t room = (tokens + LANES - 1) / LANES * LANES;
  float *scores = malloc((size_t)(heads * room) * sizeof *scores);
  if (scores == NULL) return -1;
  const int64_t group = heads / kv_heads;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t head = 0; head < heads; head++) {
    const int64_t kv_offset = head / group * head_stride;
    attend_rows(query + head * query_head_stride, 0, keys + kv_offset, values + kv_offset,
                token_stride, head_dim, 1, &tokens, scale, scores + head * room, room,
                out + head * head_dim, 0);
  }
  free(scores);
  return 0;
}

/* Causal attention of the last `rows` of `tokens` positions: row r sees tokens
 * [0, tokens - rows + r]. query [heads, rows, head_dim] with `query_head_stride` and
 * `query_row_stride` (a row's head_dim values contiguous); `tokens` cached keys and values of
 * `kv_heads` heads (query head h reads kv head h / (heads / kv_heads)), laid out alike:
 * `head_stride` and `token_stride` floats apart, a token's head_dim values contiguous;
 * head_dim a multiple of 16, at most 128. out [rows, heads, head_dim], contiguous. Returns 0,
 * or -1 when out of memory (nothing written). */
int phi3_attend_causal(const float *query, int64_t query_head_stride, int64_t query_row_stride,
                       const float *keys, const float *values, int64_t heads, int64_t kv_heads,
                       int64_t head_dim, int64_t rows, int64_t tokens, int64_t head_stride,
                       int64_t token_stride, float scale, float *out, int threads) {
  if (rows == 1) /* without the row blocks' buffers and hand-out: 3-9 % of a decode pass's */
    return attend_one_position(query, query_head_stride, keys, values, heads, kv_heads, head_dim,
                               tokens, head_stride, token_stride, scale, out, threads);
  const int64_t room = (tokens + LANES - 1) / LANES * LANES;
  const int64_t blocks = (rows + ROW_BLOCK - 1) / ROW_BLOCK, group = heads / kv_heads;
  float *scores = malloc((size_t)(threads * ROW_BLOCK * room) * sizeof *scores);
  int64_t *visible = malloc((size_t)rows * sizeof *visible);
  if (scores == NULL || visible == NULL) {
    free(scores);
    free(visible);
    return -1;
  }
  for (int64_t r = 0; r < rows; r++) visible[r] = tokens - rows + r + 1;
#pragma omp parallel num_threads(threads)
  {
#ifdef _OPENMP
    float *own_scores = scores + (int64_t)omp_get_thread_num() * ROW_BLOCK * room;
#else
    float *own_scores = scores;
#endif
    /* The last blocks see the most keys: handed out first, so the threads finish together. */
#pragma omp for schedule(dynamic, 1)
    for (int64_t unit = 0; unit < heads * blocks; unit++) {
      const int64_t block = blocks - 1 - unit / heads, head = unit % heads;
      const int64_t first = block * ROW_BLOCK;
      const int64_t count = rows - first < ROW_BLOCK ? rows - first : ROW_BLOCK;
      const int64_t kv_offset = head / group * head_stride;
      attend_rows(query + head * query_head_stride + first * query_row_stride, query_row_stride,
                  keys + kv_offset, values + kv_offset, token_stride, head_dim, count,
                  visible + first, scale, own_scores, room,
                  out + (first * heads + head) * head_dim, heads * head_dim);
    }
  }
  free(scores);
  free(visible);
  return 0;
}
