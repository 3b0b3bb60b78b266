/* A few rows times an fp32 weight for x86-64 CPUs with AVX-512; built by cpu_kernels.py.
 *
 * products[r, o] = sum over i of rows[r, i] * weight[o, i], for a weight [out, in] in torch's
 * row-major layout, in fp32. A one-token fp32 pass is nearly all such products, and torch's
 * matrix-vector kernel reads their weights at 10-23 GB/s on a 2-core AMD EPYC that delivers
 * ~35: this one reads 4 weight rows at once beside the row they meet, asking for each row's
 * bytes ahead of their use (18-32 GB/s on the shapes of SmolLM2 and Phi-3-mini). The weight rows
 * of a block stay in the first cache while each input row meets them, so a pass over a few rows
 * (a token and its drafted ones) reads the weights about once.
 *
 * Every output is computed by the same steps whatever the number of rows or threads, so a
 * row's products have the same bits alone, among drafted rows, and on any thread count.
 */
#include <immintrin.h>
#include <stdint.h>

enum {
  OUTPUTS_AT_ONCE = 4, /* weight rows read side by side, each beside the same inputs */
  /* Weight bytes are asked for this far ahead of their use: the CPU's own prefetcher stops at
   * 4 KB pages (as in int4_kernel.c). */
  PREFETCH_BYTES = 4096,
};

/* `count` (at most OUTPUTS_AT_ONCE) outputs from `first` of one row: two sums of 16 lanes
 * each over alternate 16 inputs, a masked tail into the first, then both added and reduced. */
static inline __attribute__((always_inline)) void multiply_outputs(
    const float *row, const float *weight, int64_t in_features, int64_t first, int count,
    float *products) {
  __m512 sums[OUTPUTS_AT_ONCE][2];
  for (int k = 0; k < count; k++) sums[k][0] = sums[k][1] = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= in_features; i += 32) {
    const __m512 low = _mm512_loadu_ps(row + i), high = _mm512_loadu_ps(row + i + 16);
    for (int k = 0; k < count; k++) {
      const float *w = weight + (first + k) * in_features + i;
      _mm_prefetch((const char *)w + PREFETCH_BYTES, _MM_HINT_T0);
      _mm_prefetch((const char *)w + PREFETCH_BYTES + 64, _MM_HINT_T0);
      sums[k][0] = _mm512_fmadd_ps(_mm512_loadu_ps(w), low, sums[k][0]);
      sums[k][1] = _mm512_fmadd_ps(_mm512_loadu_ps(w + 16), high, sums[k][1]);
    }
  }
  for (; i < in_features; i += 16) {
    const int64_t left = in_features - i;
    const __mmask16 mask = (__mmask16)(left >= 16 ? 0xFFFF : (1u << left) - 1);
    const __m512 inputs = _mm512_maskz_loadu_ps(mask, row + i);
    for (int k = 0; k < count; k++) {
      const float *w = weight + (first + k) * in_features + i;
      sums[k][0] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, w), inputs, sums[k][0]);
    }
  }
  for (int k = 0; k < count; k++)
    products[first + k] = _mm512_reduce_add_ps(_mm512_add_ps(sums[k][0], sums[k][1]));
}

void phi3_fp32_multiply(const float *rows, int64_t n_rows, int64_t in_features,
                        const float *weight, int64_t out_features, float *products,
                        int threads) {
  const int64_t blocks = (out_features + OUTPUTS_AT_ONCE - 1) / OUTPUTS_AT_ONCE;
  /* Whole blocks per thread: each thread reads its own stretch of the weight. */
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t block = 0; block < blocks; block++) {
    const int64_t first = block * OUTPUTS_AT_ONCE;
    const int64_t left = out_features - first;
    for (int64_t r = 0; r < n_rows; r++) {
      const float *row = rows + r * in_features;
      float *row_products = products + r * out_features;
      if (left >= OUTPUTS_AT_ONCE) /* a constant count keeps the sums in registers */
        multiply_outputs(row, weight, in_features, first, OUTPUTS_AT_ONCE, row_products);
      else
        multiply_outputs(row, weight, in_features, first, (int)left, row_products);
    }
  }
}
