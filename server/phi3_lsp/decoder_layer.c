/* A whole Llama- or Phi-3-style decoder layer in one call (AVX-512), for 4-bit models and for
 * fp32 ones (weights in fp32 or bf16, or as Q4_1 or Q8_0 blocks); built by cpu_kernels.py with
 * int4_kernel.c, fp32_kernel.c and attention_kernel.c, whose entry points it calls.
 *
 * transformers' layer forward is a few dozen torch calls, each with its Python and dispatch
 * cost: on SmolLM2 in int4 a one-token pass spent ~8 ms where its weights take ~2 ms to read,
 * in fp32 ~11 ms beside ~13 ms of products. Here the layer is one call: RMS norm, the
 * query-key-value product, rotary embeddings, the keys and values written into the cache,
 * causal attention, the output product and the residual, RMS norm, the gate-up product,
 * SiLU(gate) * up, the down product and the residual.
 *
 * Every step computes each row (position) on its own, by the same instructions whatever the
 * number of rows and threads, so a position read with a prompt or checked among drafted tokens
 * gets the bits a one-token pass gives it (row_attention.py explains why that matters); only
 * the 4-bit products of a prompt's passes and of a pass over more than 32 rows, and the
 * products of a prompt's passes over bf16-held weights, take other instructions on CPUs with
 * AMX (int4_tiles.c, fp32_tiles.c), which give a row the same bits in every such pass.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vector_math.h"

int phi3_int4_multiply(const void *rows, int fp32, int64_t n_rows, int64_t in_features,
                       const uint8_t *packed, const uint16_t *scales_and_zeros,
                       int64_t out_features, void *products, int threads, int prompt);
int phi3_fp32_multiply(const float *rows, int64_t n_rows, int64_t in_features,
                       const float *weight, int64_t out_features, float *products, int threads);
int phi3_bf16_weight_multiply(const float *rows, int64_t n_rows, int64_t in_features,
                              const uint16_t *weight, int64_t out_features, float *products,
                              int threads);
int phi3_q4_1_weight_multiply(const float *rows, int64_t n_rows, int64_t in_features,
                              const uint8_t *blocks, int64_t out_features, float *products,
                              int threads);
int phi3_q8_0_weight_multiply(const float *rows, int64_t n_rows, int64_t in_features,
                              const uint8_t *blocks, int64_t out_features, float *products,
                              int threads);
#ifdef PHI3_TILES_FROM_ROWS
int phi3_fp32_tiles_ready(void);
int phi3_fp32_tiles_multiply(const float *rows, int64_t n_rows, int64_t in_features,
                             const uint16_t *weight, int64_t out_features, float *products,
                             int threads);
#endif
int phi3_attend_causal(const float *query, int64_t query_head_stride, int64_t query_row_stride,
                       const float *keys, const float *values, int64_t heads, int64_t kv_heads,
                       int64_t head_dim, int64_t rows, int64_t tokens, int64_t head_stride,
                       int64_t token_stride, float scale, float *out, int threads);

enum {
  LANES = 16,
  /* Below this many rows, the element-wise steps run on the calling thread alone (a decode
   * pass's take ~1 us a layer). */
  THREADED_FROM_ROWS = 8,
  /* A product's outputs come from at most this many weights (query, key and value). */
  MAX_PARTS = 3,
};

enum WeightKind { WEIGHT_INT4, WEIGHT_FP32, WEIGHT_BF16, WEIGHT_Q4_1, WEIGHT_Q8_0 };

/* A weight as our kernels read it: 4-bit (packed codes with their scales and zeros, see
 * int4_kernel.c), or fp32 values [out_features, in_features] held in fp32, bf16 or exact Q4_1
 * or Q8_0 blocks (see fp32_kernel.c). */
typedef struct {
  int kind; /* a WeightKind */
  const void *values;
  const uint16_t *scales_and_zeros; /* 4-bit only */
  int64_t out_features;
} Weight;

/* A product whose outputs are those of `count` weights side by side: Phi-3 fuses its query,
 * key and value projections into one weight, a Llama checkpoint holds three. */
typedef struct {
  Weight parts[MAX_PARTS];
  int count;
} Product;

/* One decoder layer: cpu_kernels.DecoderLayer mirrors it field by field. */
typedef struct {
  const float *input_norm, *post_attention_norm; /* [hidden] */
  Product qkv;     /* queries of every head, then keys, then values */
  Product output;  /* [hidden, heads * head_dim] */
  Product gate_up; /* gate, then up: [2 * intermediate, hidden] */
  Product down;    /* [hidden, intermediate] */
  int64_t hidden, heads, kv_heads, head_dim, rotary_dim, intermediate;
  float norm_epsilon, scaling;
} DecoderLayer;

/* transformers' RMS norm of one row: weight * (x * 1 / sqrt(mean(x^2) + epsilon)). */
static void rms_norm(const float *row, const float *weight, int64_t width, float epsilon,
                     float *out) {
  __m512 squares = _mm512_setzero_ps();
  for (int64_t i = 0; i < width; i += LANES) {
    const __m512 x = _mm512_loadu_ps(row + i);
    squares = _mm512_fmadd_ps(x, x, squares);
  }
  const float inverse = 1.0f / sqrtf(_mm512_reduce_add_ps(squares) / (float)width + epsilon);
  const __m512 scale = _mm512_set1_ps(inverse);
  for (int64_t i = 0; i < width; i += LANES)
    _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_loadu_ps(weight + i),
                                            _mm512_mul_ps(_mm512_loadu_ps(row + i), scale)));
}

/* Rotary embedding of one head's vector: x * cos + rotate_half(x) * sin over its first
 * `rotary_dim` values (rotate_half: the second half negated, then the first); the rest as is. */
static void rotate(const float *x, const float *cos, const float *sin, int64_t head_dim,
                   int64_t rotary_dim, float *out) {
  const int64_t half = rotary_dim / 2;
  for (int64_t i = 0; i < half; i++) out[i] = x[i] * cos[i] - x[i + half] * sin[i];
  for (int64_t i = half; i < rotary_dim; i++) out[i] = x[i] * cos[i] + x[i - half] * sin[i];
  memcpy(out + rotary_dim, x + rotary_dim, (size_t)(head_dim - rotary_dim) * sizeof *out);
}

/* SiLU(gate) * up for one row: SiLU(x) = x * sigmoid(x), sigmoid from e^-|x| either side. */
static void silu_times(const float *gate, const float *up, int64_t width, float *out) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
  for (int64_t i = 0; i < width; i += LANES) {
    const __m512 x = _mm512_loadu_ps(gate + i);
    const __m512 minus_magnitude = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(x), sign));
    const __m512 e = exp_nonpositive(minus_magnitude); /* e^-|x| */
    const __mmask16 negative = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
    const __m512 sigmoid = _mm512_div_ps(_mm512_mask_blend_ps(negative, one, e),
                                         _mm512_add_ps(one, e));
    _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_mul_ps(x, sigmoid), _mm512_loadu_ps(up + i)));
  }
}

static void add_into(float *sums, const float *terms, int64_t count) {
  for (int64_t i = 0; i < count; i += LANES)
    _mm512_storeu_ps(sums + i, _mm512_add_ps(_mm512_loadu_ps(sums + i), _mm512_loadu_ps(terms + i)));
}

static int multiply_weight(const Weight *weight, const float *rows, int64_t n_rows,
                           int64_t in_features, float *products, int threads, int prompt) {
  switch (weight->kind) {
  case WEIGHT_INT4:
    return phi3_int4_multiply(rows, 1, n_rows, in_features, weight->values,
                              weight->scales_and_zeros, weight->out_features, products, threads,
                              prompt);
  case WEIGHT_FP32:
    return phi3_fp32_multiply(rows, n_rows, in_features, weight->values, weight->out_features,
                              products, threads);
  case WEIGHT_BF16:
#ifdef PHI3_TILES_FROM_ROWS
    /* A prompt's rows, on the tiles where they take the weight: whole groups and blocks of 32 */
    if (prompt && in_features % 32 == 0 && weight->out_features % 32 == 0 &&
        phi3_fp32_tiles_ready())
      return phi3_fp32_tiles_multiply(rows, n_rows, in_features, weight->values,
                                      weight->out_features, products, threads);
#endif
    return phi3_bf16_weight_multiply(rows, n_rows, in_features, weight->values,
                                     weight->out_features, products, threads);
  case WEIGHT_Q4_1:
    return phi3_q4_1_weight_multiply(rows, n_rows, in_features, weight->values,
                                     weight->out_features, products, threads);
  case WEIGHT_Q8_0:
    return phi3_q8_0_weight_multiply(rows, n_rows, in_features, weight->values,
                                     weight->out_features, products, threads);
  }
  return -1;
}

/* rows [n_rows, in_features] times `product`: each row's outputs of its weights side by side. */
static int multiply(const Product *product, const float *rows, int64_t n_rows,
                    int64_t in_features, float *products, int threads, int prompt) {
  if (product->count == 1)
    return multiply_weight(&product->parts[0], rows, n_rows, in_features, products, threads,
                           prompt);
  int64_t width = 0, widest = 0;
  for (int p = 0; p < product->count; p++) {
    width += product->parts[p].out_features;
    if (product->parts[p].out_features > widest) widest = product->parts[p].out_features;
  }
  /* One row's outputs of each weight go straight to their place; several rows' go apart. */
  float *part_products = NULL;
  if (n_rows > 1 && (part_products = malloc((size_t)(n_rows * widest) * sizeof(float))) == NULL)
    return -1;
  int status = 0;
  int64_t offset = 0;
  for (int p = 0; p < product->count; p++) {
    const Weight *weight = &product->parts[p];
    if (n_rows == 1) {
      status |= multiply_weight(weight, rows, 1, in_features, products + offset, threads, prompt);
    } else {
      status |= multiply_weight(weight, rows, n_rows, in_features, part_products, threads,
                                prompt);
      for (int64_t r = 0; r < n_rows; r++)
        memcpy(products + r * width + offset, part_products + r * weight->out_features,
               (size_t)weight->out_features * sizeof(float));
    }
    offset += weight->out_features;
  }
  free(part_products);
  return status;
}

/* Runs `layer` on `rows` positions of the residual stream `hidden` [rows, hidden], in place.
 * cos and sin [rows, rotary_dim]: the positions' rotary embedding. keys and values: the cache,
 * [kv_heads, capacity, head_dim] with `head_stride` floats between heads, holding `cached`
 * positions; the rows' keys and values are written after them (capacity >= cached + rows).
 * hidden must be a multiple of 16 wide, as must intermediate, head_dim (at most 128) and
 * rotary_dim half of it or all. Returns 0, or -1 when out of memory (then hidden is unchanged
 * unless the cache or a product ran out: the caller drops the pass). */
int phi3_decoder_layer(const DecoderLayer *layer, float *hidden, int64_t rows, const float *cos,
                       const float *sin, float *keys, float *values, int64_t cached,
                       int64_t head_stride, int threads, int prompt) {
  const int64_t width = layer->hidden, head_dim = layer->head_dim;
  const int64_t query_width = layer->heads * head_dim, kv_width = layer->kv_heads * head_dim;
  const int64_t qkv_width = query_width + 2 * kv_width, intermediate = layer->intermediate;
  const int64_t sizes[] = {rows * width, rows * qkv_width, rows * query_width,
                           rows * query_width, rows * 2 * intermediate, rows * intermediate};
  int64_t total = 0;
  for (int i = 0; i < 6; i++) total += sizes[i];
  float *scratch = malloc((size_t)total * sizeof *scratch);
  if (scratch == NULL) return -1;
  float *normed = scratch, *qkv = normed + sizes[0], *queries = qkv + sizes[1];
  float *attended = queries + sizes[2], *gate_up = attended + sizes[3];
  float *activated = gate_up + sizes[4], *projected = gate_up; /* reused once gate_up is read */
  const int threaded = rows >= THREADED_FROM_ROWS;
  int status = 0;

#pragma omp parallel for num_threads(threads) if (threaded) schedule(static)
  for (int64_t r = 0; r < rows; r++)
    rms_norm(hidden + r * width, layer->input_norm, width, layer->norm_epsilon,
             normed + r * width);
  status |= multiply(&layer->qkv, normed, rows, width, qkv, threads, prompt);

  /* Queries as [heads, rows, head_dim] for the attention; keys and values into the cache. */
#pragma omp parallel for num_threads(threads) if (threaded) schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    const float *row = qkv + r * qkv_width;
    const float *row_cos = cos + r * layer->rotary_dim, *row_sin = sin + r * layer->rotary_dim;
    for (int64_t h = 0; h < layer->heads; h++)
      rotate(row + h * head_dim, row_cos, row_sin, head_dim, layer->rotary_dim,
             queries + (h * rows + r) * head_dim);
    for (int64_t h = 0; h < layer->kv_heads; h++) {
      const int64_t slot = h * head_stride + (cached + r) * head_dim;
      rotate(row + query_width + h * head_dim, row_cos, row_sin, head_dim, layer->rotary_dim,
             keys + slot);
      memcpy(values + slot, row + query_width + kv_width + h * head_dim,
             (size_t)head_dim * sizeof *values);
    }
  }
  status |= phi3_attend_causal(queries, rows * head_dim, head_dim, keys, values, layer->heads,
                               layer->kv_heads, head_dim, rows, cached + rows, head_stride,
                               head_dim, layer->scaling, attended, threads);
  status |= multiply(&layer->output, attended, rows, query_width, projected, threads, prompt);
  if (status != 0) {
    free(scratch);
    return -1;
  }

#pragma omp parallel for num_threads(threads) if (threaded) schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    add_into(hidden + r * width, projected + r * width, width);
    rms_norm(hidden + r * width, layer->post_attention_norm, width, layer->norm_epsilon,
             normed + r * width);
  }
  status |= multiply(&layer->gate_up, normed, rows, width, gate_up, threads, prompt);

#pragma omp parallel for num_threads(threads) if (threaded) schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    const float *row = gate_up + r * 2 * intermediate;
    silu_times(row, row + intermediate, intermediate, activated + r * intermediate);
  }
  status |= multiply(&layer->down, activated, rows, intermediate, projected, threads, prompt);
  if (status == 0) {
#pragma omp parallel for num_threads(threads) if (threaded) schedule(static)
    for (int64_t r = 0; r < rows; r++) add_into(hidden + r * width, projected + r * width, width);
  }
  free(scratch);
  return status == 0 ? 0 : -1;
}
