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
 * AVX-512, each weight vector loaded (and widened, from bf16) meets four input rows (two, where
 * two or three are left), beside two weight rows: on a 2-core Xeon, passes of 4 / 8 / 16 / 32
 * rows over Phi-3-mini-sized bf16 weights took 0.72 / 0.64 / 0.58 / 0.52x the time of two rows
 * beside four weight rows, over SmolLM2's fp32 ones 0.82 / 0.68 / 0.62 / 0.58x.
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
 *
 * And an fp32 weight whose every block of 32 inputs is d * q + m (q an integer 0-15, d an fp16
 * value), as a checkpoint dequantized from GGUF's Q4_1 is, may be held as those blocks
 * (`phi3_q4_1_pack`): each value is rebuilt exactly as it is loaded (d * q is exact, so one
 * rounding, that of the sum), and the products have the fp32 weight's bits from 24 bytes a block
 * instead of 128. Over SmolLM2's 210 linear weights (425 MB in fp32, 80 MB so), a pass of 1 / 2 /
 * 6 / 16 / 32 rows took 1.95 / 1.83 / 1.52 / 1.30 / 1.14x less time (2 threads, with its fp32
 * vocabulary projection); the more rows meet each rebuilt value, the less its bytes matter. So
 * may one whose blocks are d * q (q -127 to 127), as GGUF's Q8_0 (`phi3_q8_0_pack`; SmolLM2's
 * vocabulary projection, 113 MB in fp32, 32 MB so: a one-row product 5.3-5.5 -> 1.8 ms).
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX512F__)
typedef __m512 Vector;
enum { LANES = 16 };
#define ZERO() _mm512_setzero_ps()
#define LOAD(p) _mm512_loadu_ps(p)
#define MULTIPLY_ADD(a, b, sum) _mm512_fmadd_ps(a, b, sum)
#define ADD(a, b) _mm512_add_ps(a, b)
#define SUBTRACT(a, b) _mm512_sub_ps(a, b)
#define MULTIPLY(a, b) _mm512_mul_ps(a, b)
#define SPLAT(x) _mm512_set1_ps(x)
#define STORE(p, v) _mm512_storeu_ps(p, v)
#define LEAST(a, b) _mm512_min_ps(a, b)
#define GREATEST(a, b) _mm512_max_ps(a, b)
#define NEAREST_WHOLE(v) _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

static inline float least_lane(Vector v) { return _mm512_reduce_min_ps(v); }
static inline float greatest_lane(Vector v) { return _mm512_reduce_max_ps(v); }
static inline int all_equal(Vector a, Vector b) {
  return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ) == 0xFFFF;
}

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

/* The 2 * LANES values of a Q4_1 block from `codes` (its 16 bytes: value j's code in the low
 * half of byte j, value j + 16's in the high half), rebuilt exactly as d * q + m, in order. */
static inline __attribute__((always_inline)) void rebuild_block(const uint8_t *codes, float d,
                                                                float m, int64_t half, Vector *a,
                                                                Vector *b) {
  (void)half; /* a step is the whole block */
  const __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)codes));
  const __m512 scale = _mm512_set1_ps(d), minimum = _mm512_set1_ps(m);
  const __m512i low = _mm512_and_si512(bytes, _mm512_set1_epi32(15));
  *a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(low), scale, minimum);
  *b = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(bytes, 4)), scale, minimum);
}

/* The 2 * LANES values of a Q8_0 block from `codes` (its 32 signed bytes, in order), rebuilt
 * exactly as d * q. */
static inline __attribute__((always_inline)) void rebuild_q8_0_block(const int8_t *codes,
                                                                     float d, int64_t half,
                                                                     Vector *a, Vector *b) {
  (void)half; /* a step is the whole block */
  const __m512 scale = _mm512_set1_ps(d);
  const __m512i first = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)codes));
  const __m512i next = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(codes + LANES)));
  *a = _mm512_mul_ps(_mm512_cvtepi32_ps(first), scale);
  *b = _mm512_mul_ps(_mm512_cvtepi32_ps(next), scale);
}

/* Input rows that meet each weight vector loaded, beside OUTPUTS_BESIDE_ROWS weight rows: their
 * 16 sums, 8 inputs and 2 weight vectors fit the 32 registers (see the top; 3 rows beside 2
 * weight rows, and 4 beside 3, were slower). One row keeps OUTPUTS_AT_ONCE weight rows beside it,
 * which a decode pass's reads from memory need. */
#define ROWS_AT_ONCE 4
#define OUTPUTS_BESIDE_ROWS 2

#elif defined(__AVX2__) && defined(__FMA__)
typedef __m256 Vector;
enum { LANES = 8 };
#define ZERO() _mm256_setzero_ps()
#define LOAD(p) _mm256_loadu_ps(p)
#define MULTIPLY_ADD(a, b, sum) _mm256_fmadd_ps(a, b, sum)
#define ADD(a, b) _mm256_add_ps(a, b)
#define SUBTRACT(a, b) _mm256_sub_ps(a, b)
#define MULTIPLY(a, b) _mm256_mul_ps(a, b)
#define SPLAT(x) _mm256_set1_ps(x)
#define STORE(p, v) _mm256_storeu_ps(p, v)
#define LEAST(a, b) _mm256_min_ps(a, b)
#define GREATEST(a, b) _mm256_max_ps(a, b)
#define NEAREST_WHOLE(v) _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

static inline float least_lane(Vector v) {
  __m128 least = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  least = _mm_min_ps(least, _mm_movehl_ps(least, least));
  return _mm_cvtss_f32(_mm_min_ss(least, _mm_movehdup_ps(least)));
}
static inline float greatest_lane(Vector v) {
  __m128 greatest = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  greatest = _mm_max_ps(greatest, _mm_movehl_ps(greatest, greatest));
  return _mm_cvtss_f32(_mm_max_ss(greatest, _mm_movehdup_ps(greatest)));
}
static inline int all_equal(Vector a, Vector b) {
  return _mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_EQ_OQ)) == 0xFF;
}

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
/* The `half`-th (0 or 1) 2 * LANES values of a Q4_1 block (see the AVX-512 one), in order: the
 * low halves of its 16 code bytes, or the high halves. */
static inline __attribute__((always_inline)) void rebuild_block(const uint8_t *codes, float d,
                                                                float m, int64_t half, Vector *a,
                                                                Vector *b) {
  const __m128i bytes = _mm_loadu_si128((const __m128i *)codes);
  const __m128i shift = _mm_cvtsi32_si128((int)(4 * half));
  const __m256 scale = _mm256_set1_ps(d), minimum = _mm256_set1_ps(m);
  const __m256i fifteen = _mm256_set1_epi32(15);
  const __m256i first =
      _mm256_and_si256(_mm256_srl_epi32(_mm256_cvtepu8_epi32(bytes), shift), fifteen);
  const __m256i next = _mm256_and_si256(
      _mm256_srl_epi32(_mm256_cvtepu8_epi32(_mm_srli_si128(bytes, 8)), shift), fifteen);
  *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(first), scale, minimum);
  *b = _mm256_fmadd_ps(_mm256_cvtepi32_ps(next), scale, minimum);
}
/* The `half`-th (0 or 1) 2 * LANES values of a Q8_0 block (see the AVX-512 one), in order. */
static inline __attribute__((always_inline)) void rebuild_q8_0_block(const int8_t *codes,
                                                                     float d, int64_t half,
                                                                     Vector *a, Vector *b) {
  const int8_t *here = codes + 2 * LANES * half;
  const __m256 scale = _mm256_set1_ps(d);
  const __m256i first = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)here));
  const __m256i next = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(here + LANES)));
  *a = _mm256_mul_ps(_mm256_cvtepi32_ps(first), scale);
  *b = _mm256_mul_ps(_mm256_cvtepi32_ps(next), scale);
}
#define ROWS_AT_ONCE 1 /* 16 registers hold one row's sums */
#define OUTPUTS_BESIDE_ROWS 4

#else
#error "the fp32 kernel needs AVX-512, or AVX2 and FMA"
#endif

/* How a weight's values are held: as fp32, as bf16, or as Q4_1 or Q8_0 blocks. */
enum Held { HELD_FP32, HELD_BF16, HELD_Q4_1, HELD_Q8_0 };

enum {
  BLOCK = 32, /* values a Q4_1 or Q8_0 block holds */
  /* A Q4_1 block's bytes: d and m (fp32), then its 16 bytes of codes. */
  Q4_1_BLOCK_BYTES = 24,
  /* A Q8_0 block's bytes: d (fp32), then its 32 signed codes. */
  Q8_0_BLOCK_BYTES = 36,
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

/* A step of a weight row's values from `i` (held as `held`): in order for fp32 and the blocks,
 * as pairs for bf16 (see `load_step`); the first `left` (all STEP if as many), zeros after. A
 * weight held as blocks has whole blocks (`phi3_q4_1_pack`, `phi3_q8_0_pack`), so whole steps. */
static inline __attribute__((always_inline)) void load_weights(const void *w, int64_t i,
                                                               int64_t left, int held,
                                                               Vector *a, Vector *b) {
  if (held == HELD_FP32) {
    load_step((const float *)w + i, left, 0, a, b);
    return;
  }
  if (held == HELD_Q4_1) {
    const uint8_t *block = (const uint8_t *)w + i / BLOCK * Q4_1_BLOCK_BYTES;
    float d, m;
    memcpy(&d, block, sizeof d);
    memcpy(&m, block + sizeof d, sizeof m);
    rebuild_block(block + 2 * sizeof d, d, m, i % BLOCK / STEP, a, b);
    return;
  }
  if (held == HELD_Q8_0) {
    const uint8_t *block = (const uint8_t *)w + i / BLOCK * Q8_0_BLOCK_BYTES;
    float d;
    memcpy(&d, block, sizeof d);
    rebuild_q8_0_block((const int8_t *)(block + sizeof d), d, i % BLOCK / STEP, a, b);
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

/* A block's 32 codes (0-15, as floats) as its 16 bytes: value j's code in the low half of byte j,
 * value j + 16's in the high half (see `rebuild_block`). */
#if defined(__AVX512F__)
static inline void store_codes(const Vector *codes, uint8_t *bytes) {
  const __m128i low = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(codes[0]));
  const __m128i high = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(codes[1]));
  /* Each code < 16: shifted by 4 within 16-bit lanes, no bits cross into the next byte. */
  _mm_storeu_si128((__m128i *)bytes, _mm_or_si128(low, _mm_slli_epi16(high, 4)));
}
#else
static inline void store_codes(const Vector *codes, uint8_t *bytes) {
  float values[BLOCK];
  for (int v = 0; v < BLOCK / LANES; v++) STORE(values + v * LANES, codes[v]);
  for (int j = 0; j < BLOCK / 2; j++)
    bytes[j] = (uint8_t)((int)values[j] | (int)values[j + BLOCK / 2] << 4);
}
#endif

/* Bytes of a weight row held as `held`, and of the part of it a step reads. */
static inline int64_t row_bytes(int held, int64_t in_features) {
  if (held == HELD_Q4_1) return in_features / BLOCK * Q4_1_BLOCK_BYTES;
  if (held == HELD_Q8_0) return in_features / BLOCK * Q8_0_BLOCK_BYTES;
  return in_features * (held == HELD_BF16 ? 2 : 4);
}

static inline int64_t step_bytes(int held) {
  if (held == HELD_Q4_1) return Q4_1_BLOCK_BYTES * STEP / BLOCK;
  if (held == HELD_Q8_0) return Q8_0_BLOCK_BYTES * STEP / BLOCK;
  return STEP * (held == HELD_BF16 ? 2 : 4);
}

/* `count` (at most OUTPUTS_AT_ONCE) outputs from `first` of `row_count` (at most ROWS_AT_ONCE)
 * rows [row_count, in_features] (`row_stride` values apart) into their products [row_count,
 * out_features].
 *
 * Each row and output has a sum for each input position of a step (STEP inputs, the last step
 * padded with zeros), in two vectors, and the output is the sum of each even-numbered
 * position's sum and the next, their lanes reduced. A bf16 weight's values widen as pairs
 * (see `widen_bf16_evens_odds`), so its sums are kept as even- and odd-numbered positions and
 * the inputs come paired up to meet them (`pair_up_rows`); an fp32 weight's sums are kept in
 * order and paired up once at the end. Every position's sum takes the same steps either way,
 * so a bf16 weight's products have the bits of its fp32 widening's (and a weight's held as
 * blocks, rebuilt in order, those of its fp32 values').
 *
 * Each weight vector is loaded (and widened) once for all the rows: the rows only interleave
 * these steps, so each row's sums are those it gets alone. Where `fetch_ahead`, the weight's
 * bytes are asked for ahead of their use: the first rows to meet a block do, later ones find
 * it in the cache (asking again made AVX2's 16-row passes 1.13-1.17x slower). */
static inline __attribute__((always_inline)) void multiply_outputs(
    const float *rows, int64_t row_stride, int row_count, const void *weight, int held,
    int64_t in_features, int64_t out_features, int64_t first, int count, float *products,
    int fetch_ahead) {
  const int pairs = held == HELD_BF16;
  Vector sums[ROWS_AT_ONCE][OUTPUTS_AT_ONCE][2];
  for (int r = 0; r < row_count; r++)
    for (int k = 0; k < count; k++) sums[r][k][0] = sums[r][k][1] = ZERO();
  Vector inputs_a[ROWS_AT_ONCE], inputs_b[ROWS_AT_ONCE], weights_a, weights_b;
  int64_t i = 0;
  for (; i + STEP <= in_features; i += STEP) {
    for (int r = 0; r < row_count; r++)
      load_step(rows + r * row_stride + i, STEP, 0, &inputs_a[r], &inputs_b[r]);
    for (int k = 0; k < count; k++) {
      const char *w = (const char *)weight + (first + k) * row_bytes(held, in_features);
      for (int64_t line = 0; fetch_ahead && line < step_bytes(held); line += CACHE_LINE) {
        const char *at = w + i / STEP * step_bytes(held) + line;
        _mm_prefetch(at + PREFETCH_BYTES, _MM_HINT_T0);
        _mm_prefetch(at + FAR_PREFETCH_BYTES, _MM_HINT_T2);
        _mm_prefetch(at + FARTHEST_PREFETCH_BYTES, _MM_HINT_T2);
      }
      load_weights(w, i, STEP, held, &weights_a, &weights_b);
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
      /* Paired rows hold their last step whole, zeros paired up with the inputs. */
      load_step(rows + r * row_stride + i, pairs ? STEP : left, 0, &inputs_a[r], &inputs_b[r]);
    for (int k = 0; k < count; k++) {
      const char *w = (const char *)weight + (first + k) * row_bytes(held, in_features);
      load_weights(w, i, left, held, &weights_a, &weights_b);
      for (int r = 0; r < row_count; r++) {
        sums[r][k][0] = MULTIPLY_ADD(weights_a, inputs_a[r], sums[r][k][0]);
        sums[r][k][1] = MULTIPLY_ADD(weights_b, inputs_b[r], sums[r][k][1]);
      }
    }
  }
  for (int r = 0; r < row_count; r++)
    for (int k = 0; k < count; k++) {
      Vector evens = sums[r][k][0], odds = sums[r][k][1];
      if (!pairs) pair_up(sums[r][k][0], sums[r][k][1], &evens, &odds);
      products[r * out_features + first + k] = sum_of_lanes(ADD(evens, odds));
    }
}

/* The products of one block of OUTPUTS_AT_ONCE outputs (fewer in the last) for every row; the
 * rows `row_stride` values apart. */
static inline __attribute__((always_inline)) void multiply_block(
    const float *rows, int64_t row_stride, int64_t n_rows, int64_t in_features,
    const void *weight, int held, int64_t out_features, float *products, int64_t block) {
  const int64_t first = block * OUTPUTS_AT_ONCE;
  const int64_t left = out_features - first;
  /* Constant counts keep the sums in registers. */
  int64_t r = 0;
  if (left >= OUTPUTS_AT_ONCE)
    for (; r + ROWS_AT_ONCE <= n_rows; r += ROWS_AT_ONCE)
      for (int beside = 0; beside < OUTPUTS_AT_ONCE; beside += OUTPUTS_BESIDE_ROWS)
        multiply_outputs(rows + r * row_stride, row_stride, ROWS_AT_ONCE, weight, held,
                         in_features, out_features, first + beside, OUTPUTS_BESIDE_ROWS,
                         products + r * out_features, r == 0);
  /* 2 or 3 rows left: two at a time beside all the block's weight rows (16 sums). */
  if (left >= OUTPUTS_AT_ONCE && ROWS_AT_ONCE > 2)
    for (; r + 2 <= n_rows; r += 2)
      multiply_outputs(rows + r * row_stride, row_stride, 2, weight, held, in_features,
                       out_features, first, OUTPUTS_AT_ONCE, products + r * out_features, r == 0);
  for (; r < n_rows; r++)
    multiply_outputs(rows + r * row_stride, row_stride, 1, weight, held, in_features, out_features,
                     first, left >= OUTPUTS_AT_ONCE ? OUTPUTS_AT_ONCE : (int)left,
                     products + r * out_features, r == 0);
}

/* Every block of outputs, whole blocks per thread (each thread reads its own stretch of the
 * weight), for a weight held as the constant `held`. A macro, so that each entry point has its
 * own parallel region: OpenMP outlines a region before functions are inlined, so one region
 * shared by every kind tested the kind within its innermost loop (4 rows over Q4_1 blocks took
 * 1.7x the time once a fourth kind was added). */
#define MULTIPLY_EVERY_BLOCK(rows, row_stride, held)                                         \
  do {                                                                                       \
    const int64_t blocks = (out_features + OUTPUTS_AT_ONCE - 1) / OUTPUTS_AT_ONCE;          \
    _Pragma("omp parallel for num_threads(threads) schedule(static)")                        \
    for (int64_t block = 0; block < blocks; block++)                                         \
      multiply_block(rows, row_stride, n_rows, in_features, weight, held, out_features,      \
                     products, block);                                                       \
  } while (0)

/* Each returns 0, or -1 where it found no memory. */
int phi3_fp32_multiply(const float *rows, int64_t n_rows, int64_t in_features,
                       const float *weight, int64_t out_features, float *products, int threads) {
  MULTIPLY_EVERY_BLOCK(rows, in_features, HELD_FP32);
  return 0;
}

/* The even- and odd-numbered inputs of each step of each row, as a bf16 weight's values widen
 * (see `load_step`), into rows of whole steps (zeros after the last input): once a call, not
 * for every block of outputs the rows meet. */
static void pair_up_rows(const float *rows, int64_t n_rows, int64_t in_features,
                         int64_t row_stride, float *paired) {
  for (int64_t r = 0; r < n_rows; r++)
    for (int64_t i = 0; i < in_features; i += STEP) {
      Vector a, b;
      load_step(rows + r * in_features + i, in_features - i, 1, &a, &b);
      STORE(paired + r * row_stride + i, a);
      STORE(paired + r * row_stride + i + LANES, b);
    }
}

/* The same products for a weight held in bf16 (uint16 bit patterns), with the same bits. The
 * rows are paired up once (over Phi-3-mini-sized bf16 weights, 2 threads, 4 / 8 / 16 rows took
 * 0.92 / 0.85 / 0.82x the time of pairing them up for every block; 1 row no more). */
int phi3_bf16_weight_multiply(const float *rows, int64_t n_rows, int64_t in_features,
                              const uint16_t *weight, int64_t out_features, float *products,
                              int threads) {
  const int64_t row_stride = (in_features + STEP - 1) / STEP * STEP;
  if (n_rows == 0) return 0;
  float *paired = malloc((size_t)(n_rows * row_stride) * sizeof(float));
  if (paired == NULL) return -1;
  pair_up_rows(rows, n_rows, in_features, row_stride, paired);
  MULTIPLY_EVERY_BLOCK(paired, row_stride, HELD_BF16);
  free(paired);
  return 0;
}

/* The same products for a weight held as Q4_1 blocks (`phi3_q4_1_pack`), with the bits of its
 * fp32 values'. */
int phi3_q4_1_weight_multiply(const float *rows, int64_t n_rows, int64_t in_features,
                              const uint8_t *blocks, int64_t out_features, float *products,
                              int threads) {
  const uint8_t *weight = blocks;
  MULTIPLY_EVERY_BLOCK(rows, in_features, HELD_Q4_1);
  return 0;
}

/* The same products for a weight held as Q8_0 blocks (`phi3_q8_0_pack`), with the bits of its
 * fp32 values'. */
int phi3_q8_0_weight_multiply(const float *rows, int64_t n_rows, int64_t in_features,
                              const uint8_t *blocks, int64_t out_features, float *products,
                              int threads) {
  const uint8_t *weight = blocks;
  MULTIPLY_EVERY_BLOCK(rows, in_features, HELD_Q8_0);
  return 0;
}

/* x rounded to fp16's precision (ties to even), as GGUF's Q4_1 stores its d: 11 significant
 * bits, or a multiple of 2^-24 below fp16's normal numbers. */
static float to_half_precision(float x) {
  if (fabsf(x) < 0x1p-14f) return nearbyintf(x * 0x1p24f) * 0x1p-24f;
  uint32_t bits;
  memcpy(&bits, &x, sizeof bits);
  bits += 0xFFFu + ((bits >> 13) & 1u);
  bits &= ~0x1FFFu;
  memcpy(&x, &bits, sizeof x);
  return x;
}

/* One block of 32 values as d, m and codes (the layout `rebuild_block` reads), if each value is
 * d * q + m exactly; returns 0 if not. m is the least value (q 0), d a fifteenth of the range
 * (the greatest value's q 15), as Q4_1 quantizes. */
static int pack_block(const float *values, uint8_t *block) {
  Vector least = LOAD(values), greatest = least;
  for (int j = LANES; j < BLOCK; j += LANES) {
    least = LEAST(least, LOAD(values + j));
    greatest = GREATEST(greatest, LOAD(values + j));
  }
  const float m = least_lane(least);
  /* d * q then has at most 15 significant bits: exact, so the one rounding is the sum's, here
   * as in `rebuild_block`'s fused multiply-add. */
  const float d = to_half_precision((greatest_lane(greatest) - m) / 15.0f);
  /* By the reciprocal: near enough to pick q, which the check then proves. */
  const Vector scale = SPLAT(d), minimum = SPLAT(m), inverse = SPLAT(d > 0.0f ? 1.0f / d : 0.0f);
  Vector codes[BLOCK / LANES];
  int exact = 1;
  for (int v = 0; v < BLOCK / LANES; v++) {
    const Vector values_here = LOAD(values + v * LANES);
    const Vector nearest = NEAREST_WHOLE(MULTIPLY(SUBTRACT(values_here, minimum), inverse));
    codes[v] = LEAST(GREATEST(nearest, ZERO()), SPLAT(15.0f));
    exact &= all_equal(MULTIPLY_ADD(codes[v], scale, minimum), values_here);
  }
  if (!exact) return 0;
  memcpy(block, &d, sizeof d);
  memcpy(block + sizeof d, &m, sizeof m);
  store_codes(codes, block + 2 * sizeof d);
  return 1;
}

/* One block of 32 values as d and codes (the layout `rebuild_q8_0_block` reads), if each value
 * is d * q exactly (q -127 to 127); returns 0 if not. d is the greatest magnitude's 127th, as
 * Q8_0 quantizes (that value's q is 127: d, rounded to fp16, moves it by under 2^-10). */
static int pack_q8_0_block(const float *values, uint8_t *block) {
  float greatest = 0.0f;
  for (int j = 0; j < BLOCK; j++) greatest = fmaxf(greatest, fabsf(values[j]));
  const float d = greatest / 127.0f;
  /* By the reciprocal: near enough to pick q, which the check then proves. */
  const Vector scale = SPLAT(d), inverse = SPLAT(d > 0.0f ? 1.0f / d : 0.0f);
  float codes[BLOCK];
  int exact = 1;
  for (int v = 0; v < BLOCK / LANES; v++) {
    const Vector values_here = LOAD(values + v * LANES);
    const Vector nearest = NEAREST_WHOLE(MULTIPLY(values_here, inverse));
    const Vector code = LEAST(GREATEST(nearest, SPLAT(-127.0f)), SPLAT(127.0f));
    exact &= all_equal(MULTIPLY(code, scale), values_here);
    STORE(codes + v * LANES, code);
  }
  if (!exact) return 0;
  memcpy(block, &d, sizeof d);
  for (int j = 0; j < BLOCK; j++) ((int8_t *)(block + sizeof d))[j] = (int8_t)codes[j];
  return 1;
}

/* An fp32 weight [out_features, in_features] as blocks of BLOCK inputs, each packed by `pack`
 * into `block_bytes` of `blocks`: 1 when each is exact, else 0 (`blocks` then unspecified). */
static int pack_blocks(const float *weight, int64_t out_features, int64_t in_features,
                       int (*pack)(const float *, uint8_t *), int64_t block_bytes,
                       uint8_t *blocks, int threads) {
  if (in_features % BLOCK != 0) return 0;
  const int64_t count = out_features * (in_features / BLOCK);
  int exact = 1;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t b = 0; b < count; b++) {
    int seen;
#pragma omp atomic read
    seen = exact;
    if (seen && !pack(weight + b * BLOCK, blocks + b * block_bytes)) {
#pragma omp atomic write
      exact = 0;
    }
  }
  return exact;
}

/* An fp32 weight [out_features, in_features] as Q4_1 blocks [out_features, in_features / 32,
 * 24 bytes] into `blocks`, for `phi3_q4_1_weight_multiply`: returns 1 when every block of 32
 * inputs is d * q + m exactly (see `pack_block`), else 0 (`blocks` then unspecified). */
int phi3_q4_1_pack(const float *weight, int64_t out_features, int64_t in_features,
                   uint8_t *blocks, int threads) {
  return pack_blocks(weight, out_features, in_features, pack_block, Q4_1_BLOCK_BYTES, blocks,
                     threads);
}

/* The same as Q8_0 blocks [out_features, in_features / 32, 36 bytes], for
 * `phi3_q8_0_weight_multiply`: 1 when every block of 32 inputs is d * q exactly (see
 * `pack_q8_0_block`), as in a checkpoint dequantized from GGUF's Q8_0. */
int phi3_q8_0_pack(const float *weight, int64_t out_features, int64_t in_features,
                   uint8_t *blocks, int threads) {
  return pack_blocks(weight, out_features, in_features, pack_q8_0_block, Q8_0_BLOCK_BYTES, blocks,
                     threads);
}

/* The fp32 values of `rows` weight rows held as `held` blocks, rebuilt as the products rebuild
 * them, into `values` [rows, in_features]: for torch's products of a long pass. */
static void widen(const uint8_t *blocks, int held, int64_t rows, int64_t in_features,
                  float *values, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t row = 0; row < rows; row++) {
    const uint8_t *row_blocks = blocks + row * row_bytes(held, in_features);
    for (int64_t i = 0; i < in_features; i += STEP) {
      Vector a, b;
      load_weights(row_blocks, i, STEP, held, &a, &b);
      STORE(values + row * in_features + i, a);
      STORE(values + row * in_features + i + LANES, b);
    }
  }
}

void phi3_q4_1_widen(const uint8_t *blocks, int64_t rows, int64_t in_features, float *values,
                     int threads) {
  widen(blocks, HELD_Q4_1, rows, in_features, values, threads);
}

void phi3_q8_0_widen(const uint8_t *blocks, int64_t rows, int64_t in_features, float *values,
                     int threads) {
  widen(blocks, HELD_Q8_0, rows, in_features, values, threads);
}
