/* A few rows times an fp32 weight for x86-64 CPUs with AVX-512, or AVX2 and FMA; built by
 * cpu_kernels.py, once per instruction set.
 *
 * products[r, o] = sum over i of rows[r, i] * weight[o, i], for a weight [out, in] in torch's
 * row-major layout, in fp32. A one-token fp32 pass is nearly all such products, and torch's
 * matrix-vector kernel reads their weights at 10-23 GB/s on a 2-core AMD EPYC that delivers
 * 33-54: this one reads 4 weight rows at once beside the row they meet, asking for each row's
 * bytes near and far ahead of their use (27-40 GB/s on the shapes of SmolLM2 and Phi-3-mini).
 * The weight rows of a block stay in the cache while the input rows meet them, so a pass over a
 * few rows (a token and its drafted ones) reads the weights from memory about once; with
 * AVX-512, each weight vector loaded (and widened, from bf16) meets two input rows, which made
 * passes of 2-16 rows over Phi-3-mini's bf16 weights 1.12-1.35x faster than one row at a time.
 *
 * Every output is computed by the same steps whatever the number of rows or threads, so a
 * row's products have the same bits alone, among drafted rows, and on any thread count (the
 * two instruction sets sum in different orders, so their bits differ from each other).
 *
 * A weight may also be held in bf16, as most checkpoints store it: each value widens to fp32
 * exactly (its bits shifted up by 16) as it is loaded, so the products have the bits of the
 * fp32 weight's, from half the bytes. A bf16 weight's values widen from one load by a shift and
 * a mask, as its even- and its odd-numbered values, without the shuffles that widening them in
 * order takes; the inputs are paired up to meet them (see `multiply_outputs`). Over
 * Phi-3-mini-sized bf16 weights (one row, 2 threads, alternating with the in-order way in one
 * process) that took 0.81-0.96x the time (median 0.88x) where memory read at 52-60 GB/s, and
 * 0.94-1.01x where it read at ~32 (bound by memory either way); 4 rows 0.93x, 12 rows 1.0x.
 */
#include <immintrin.h>
#include <stdint.h>

#if defined(__AVX512F__)
typedef __m512 Vector;
enum { LANES = 16 };
#define ZERO() _mm512_setzero_ps()
#define LOAD(p) _mm512_loadu_ps(p)
#define MULTIPLY_ADD(a, b, sum) _mm512_fmadd_ps(a, b, sum)
#define ADD(a, b) _mm512_add_ps(a, b)

/* The first `left` (< LANES) values at p, zeros after them. */
static inline Vector load_first(const float *p, int64_t left) {
  return _mm512_maskz_loadu_ps((__mmask16)((1u << left) - 1), p);
}

static inline float sum_of_lanes(Vector v) { return _mm512_reduce_add_ps(v); }

/* 2 * LANES bf16 values at p widened to fp32 (exactly): the even-numbered (their bits shifted
 * up by 16) and the odd-numbered (the low 16 bits cleared). One load and two plain integer steps,
 * where widening them in order takes a shuffle for each LANES values. */
static inline void widen_bf16_evens_odds(const uint16_t *p, Vector *evens, Vector *odds) {
  const __m512i bits = _mm512_loadu_si512((const void *)p);
  *evens = _mm512_castsi512_ps(_mm512_slli_epi32(bits, 16));
  *odds = _mm512_castsi512_ps(_mm512_and_si512(bits, _mm512_set1_epi32((int)0xFFFF0000u)));
}

/* The even- and the odd-numbered of the 2 * LANES values in `low`, then `high`. */
static inline void pair_up(Vector low, Vector high, Vector *evens, Vector *odds) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  *evens = _mm512_permutex2var_ps(low, even, high);
  *odds = _mm512_permutex2var_ps(low, odd, high);
}

/* Input rows that meet each weight vector loaded: 2 rows' 16 sums and their inputs leave room
 * in the 32 registers; 3 rows' fill them, and took 1.05-1.09x the time for 4-8 rows (0.91x for
 * 16). */
#define ROWS_AT_ONCE 2

#elif defined(__AVX2__) && defined(__FMA__)
typedef __m256 Vector;
enum { LANES = 8 };
#define ZERO() _mm256_setzero_ps()
#define LOAD(p) _mm256_loadu_ps(p)
#define MULTIPLY_ADD(a, b, sum) _mm256_fmadd_ps(a, b, sum)
#define ADD(a, b) _mm256_add_ps(a, b)

static inline Vector load_first(const float *p, int64_t left) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32((int)left), lane));
}

static inline float sum_of_lanes(Vector v) {
  __m128 sum = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
  return _mm_cvtss_f32(_mm_add_ss(sum, _mm_movehdup_ps(sum)));
}

static inline void widen_bf16_evens_odds(const uint16_t *p, Vector *evens, Vector *odds) {
  const __m256i bits = _mm256_loadu_si256((const __m256i *)p);
  *evens = _mm256_castsi256_ps(_mm256_slli_epi32(bits, 16));
  *odds = _mm256_castsi256_ps(_mm256_and_si256(bits, _mm256_set1_epi32((int)0xFFFF0000u)));
}

static inline void pair_up(Vector low, Vector high, Vector *evens, Vector *odds) {
  /* Within each 128-bit half, then the halves' 64-bit pairs back in order. */
  const __m256d even = _mm256_castps_pd(_mm256_shuffle_ps(low, high, _MM_SHUFFLE(2, 0, 2, 0)));
  const __m256d odd = _mm256_castps_pd(_mm256_shuffle_ps(low, high, _MM_SHUFFLE(3, 1, 3, 1)));
  *evens = _mm256_castpd_ps(_mm256_permute4x64_pd(even, _MM_SHUFFLE(3, 1, 2, 0)));
  *odds = _mm256_castpd_ps(_mm256_permute4x64_pd(odd, _MM_SHUFFLE(3, 1, 2, 0)));
}
#define ROWS_AT_ONCE 1 /* 16 registers hold one row's sums */

#else
#error "the fp32 kernel needs AVX-512, or AVX2 and FMA"
#endif

enum {
  OUTPUTS_AT_ONCE = 4, /* weight rows read side by side, each beside the same inputs */
  STEP = 2 * LANES,    /* inputs per step: one sum over its even-numbered, one over its odd */
  /* Weight bytes are asked for this far ahead of their use: the CPU's own prefetcher stops at
   * 4 KB pages (as in int4_kernel.c). */
  PREFETCH_BYTES = 4096,
  /* ...and these far ahead into the outer caches, so that more lines are on their way at once
   * than the first cache can track (as in int4_kernel.c). 2 threads, against the near prefetch
   * alone: 1-4 rows times 1.8 GB of Phi-3-mini's weights 1.22-1.52x faster from bf16 and
   * 1.08-1.25x from fp32, SmolLM2's fp32 layers 1.23-1.46x (1 thread: 1.2-1.5x); 12 and 24 KB
   * ahead gave about half that; 32 and 64, or 48 and 96, the same. */
  FAR_PREFETCH_BYTES = 24576,
  FARTHEST_PREFETCH_BYTES = 49152,
  CACHE_LINE = 64,
};

/* The first `left` values at p (all LANES of them if there are as many), zeros after. */
static inline __attribute__((always_inline)) Vector load_part(const float *p, int64_t left) {
  if (left >= LANES) return LOAD(p);
  return left > 0 ? load_first(p, left) : ZERO();
}

/* A step's inputs, or an fp32 weight's values: the STEP values at p (the first `left`, zeros
 * after, in a last step of fewer). In order (`pairs` 0): the first LANES, then the next; as
 * pairs: the even-numbered, then the odd-numbered, as a bf16 weight's values widen. */
static inline __attribute__((always_inline)) void load_step(const float *p, int64_t left,
                                                            int pairs, Vector *a, Vector *b) {
  const Vector low = load_part(p, left), high = load_part(p + LANES, left - LANES);
  if (pairs)
    pair_up(low, high, a, b);
  else
    *a = low, *b = high;
}

/* A step of a weight row's values from `i` (fp32, or bf16 where `bf16`): in order for fp32, as
 * pairs for bf16 (see `load_step`); the first `left` (all STEP if as many), zeros after. */
static inline __attribute__((always_inline)) void load_weights(const void *w, int64_t i,
                                                               int64_t left, int bf16,
                                                               Vector *a, Vector *b) {
  if (!bf16) {
    load_step((const float *)w + i, left, 0, a, b);
    return;
  }
  const uint16_t *values = (const uint16_t *)w + i;
  if (left >= STEP) {
    widen_bf16_evens_odds(values, a, b);
    return;
  }
  uint16_t padded[STEP] = {0}; /* the last step, at most once per weight row */
  for (int64_t j = 0; j < left; j++) padded[j] = values[j];
  widen_bf16_evens_odds(padded, a, b);
}

/* `count` (at most OUTPUTS_AT_ONCE) outputs from `first` of `row_count` (at most ROWS_AT_ONCE)
 * rows [row_count, in_features] into their products [row_count, out_features].
 *
 * Each row and output has a sum for each input position of a step (STEP inputs, the last step
 * padded with zeros), in two vectors, and the output is the sum of each even-numbered
 * position's sum and the next, their lanes reduced. A bf16 weight's values widen as pairs
 * (see `widen_bf16_evens_odds`), so its sums are kept as even- and odd-numbered positions and
 * the inputs are paired up to meet them; an fp32 weight's sums are kept in order and paired up
 * once at the end. Every position's sum takes the same steps either way, so a bf16 weight's
 * products have the bits of its fp32 widening's.
 *
 * Each weight vector is loaded (and widened) once for all the rows: the rows only interleave
 * these steps, so each row's sums are those it gets alone. Where `fetch_ahead`, the weight's
 * bytes are asked for ahead of their use: the first rows to meet a block do, later ones find
 * it in the cache (asking again made AVX2's 16-row passes 1.13-1.17x slower). */
static inline __attribute__((always_inline)) void multiply_outputs(
    const float *rows, int row_count, const void *weight, int bf16, int64_t in_features,
    int64_t out_features, int64_t first, int count, float *products, int fetch_ahead) {
  const int64_t weight_bytes = bf16 ? 2 : 4;
  Vector sums[ROWS_AT_ONCE][OUTPUTS_AT_ONCE][2];
  for (int r = 0; r < row_count; r++)
    for (int k = 0; k < count; k++) sums[r][k][0] = sums[r][k][1] = ZERO();
  Vector inputs_a[ROWS_AT_ONCE], inputs_b[ROWS_AT_ONCE], weights_a, weights_b;
  int64_t i = 0;
  for (; i + STEP <= in_features; i += STEP) {
    for (int r = 0; r < row_count; r++)
      load_step(rows + r * in_features + i, STEP, bf16, &inputs_a[r], &inputs_b[r]);
    for (int k = 0; k < count; k++) {
      const char *w = (const char *)weight + (first + k) * in_features * weight_bytes;
      for (int64_t line = 0; fetch_ahead && line < STEP * weight_bytes; line += CACHE_LINE) {
        const char *at = w + i * weight_bytes + line;
        _mm_prefetch(at + PREFETCH_BYTES, _MM_HINT_T0);
        _mm_prefetch(at + FAR_PREFETCH_BYTES, _MM_HINT_T2);
        _mm_prefetch(at + FARTHEST_PREFETCH_BYTES, _MM_HINT_T2);
      }
      load_weights(w, i, STEP, bf16, &weights_a, &weights_b);
      for (int r = 0; r < row_count; r++) {
        sums[r][k][0] = MULTIPLY_ADD(weights_a, inputs_a[r], sums[r][k][0]);
        sums[r][k][1] = MULTIPLY_ADD(weights_b, inputs_b[r], sums[r][k][1]);
      }
    }
  }
  /* The same for a last step of fewer inputs. Kept apart: one loop taking both kinds of step
   * ran in 0.86-1.04x the in-order kernel's time over Phi-3-mini-sized weights, this 0.81-0.96x. */
  if (i < in_features) {
    const int64_t left = in_features - i;
    for (int r = 0; r < row_count; r++)
      load_step(rows + r * in_features + i, left, bf16, &inputs_a[r], &inputs_b[r]);
    for (int k = 0; k < count; k++) {
      const char *w = (const char *)weight + (first + k) * in_features * weight_bytes;
      load_weights(w, i, left, bf16, &weights_a, &weights_b);
      for (int r = 0; r < row_count; r++) {
        sums[r][k][0] = MULTIPLY_ADD(weights_a, inputs_a[r], sums[r][k][0]);
        sums[r][k][1] = MULTIPLY_ADD(weights_b, inputs_b[r], sums[r][k][1]);
      }
    }
  }
  for (int r = 0; r < row_count; r++)
    for (int k = 0; k < count; k++) {
      Vector evens = sums[r][k][0], odds = sums[r][k][1];
      if (!bf16) pair_up(sums[r][k][0], sums[r][k][1], &evens, &odds);
      products[r * out_features + first + k] = sum_of_lanes(ADD(evens, odds));
    }
}

static inline __attribute__((always_inline)) void multiply(
    const float *rows, int64_t n_rows, int64_t in_features, const void *weight, int bf16,
    int64_t out_features, float *products, int threads) {
  const int64_t blocks = (out_features + OUTPUTS_AT_ONCE - 1) / OUTPUTS_AT_ONCE;
  /* Whole blocks per thread: each thread reads its own stretch of the weight. */
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t block = 0; block < blocks; block++) {
    const int64_t first = block * OUTPUTS_AT_ONCE;
    const int64_t left = out_features - first;
    /* Constant counts keep the sums in registers. */
    int64_t r = 0;
    if (left >= OUTPUTS_AT_ONCE)
      for (; r + ROWS_AT_ONCE <= n_rows; r += ROWS_AT_ONCE)
        multiply_outputs(rows + r * in_features, ROWS_AT_ONCE, weight, bf16, in_features,
                         out_features, first, OUTPUTS_AT_ONCE, products + r * out_features, r == 0);
    for (; r < n_rows; r++)
      if (left >= OUTPUTS_AT_ONCE)
        multiply_outputs(rows + r * in_features, 1, weight, bf16, in_features, out_features, first,
                         OUTPUTS_AT_ONCE, products + r * out_features, r == 0);
      else
        multiply_outputs(rows + r * in_features, 1, weight, bf16, in_features, out_features, first,
                         (int)left, products + r * out_features, r == 0);
  }
}

void phi3_fp32_multiply(const float *rows, int64_t n_rows, int64_t in_features,
                        const float *weight, int64_t out_features, float *products,
                        int threads) {
  multiply(rows, n_rows, in_features, weight, 0, out_features, products, threads);
}

/* The same products for a weight held in bf16 (uint16 bit patterns), with the same bits. */
void phi3_bf16_weight_multiply(const float *rows, int64_t n_rows, int64_t in_features,
                               const uint16_t *weight, int64_t out_features, float *products,
                               int threads) {
  multiply(rows, n_rows, in_features, weight, 1, out_features, products, threads);
}
