/* One query position's attention over cached keys and values (fp32, AVX-512); built by
 * cpu_kernels.py.
 *
 * A decode pass attends from one position to every cached one: it reads all keys and values
 * once and does little else, so its speed is the speed of that read. torch's SDPA reads them
 * at ~19 GB/s on 2 cores of a 2-core EPYC whose memory delivers ~37. Here each head runs
 * on one thread, so a head's outputs have the same bits on any number of threads; they depend
 * on the query row and the keys and values it sees, nothing else (row_attention.py needs a
 * drafted row to attend as a one-token pass does).
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

enum { LANES = 16 };

/* e^x for x <= 0 (scores minus their maximum), to ~2 ulp: 2^n * e^f with |f| <= ln 2 / 2. */
static inline __m512 exp_nonpositive(__m512 x) {
  const __m512 log2e = _mm512_set1_ps(1.44269504f);
  const __m512 ln2_high = _mm512_set1_ps(0.693145752f), ln2_low = _mm512_set1_ps(1.42860677e-6f);
  x = _mm512_max_ps(x, _mm512_set1_ps(-104.0f)); /* e^-104 is 0 in fp32 */
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT);
  __m512 f = _mm512_fnmadd_ps(n, ln2_high, x);
  f = _mm512_fnmadd_ps(n, ln2_low, f);
  /* Taylor terms to f^7 / 7!: below fp32's rounding for |f| <= 0.35. */
  __m512 p = _mm512_set1_ps(1.0f / 5040);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 720));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

/* One head: out[head_dim] = softmax(scale * keys . query) . values, over `tokens` tokens.
 * `scores` has room for `tokens` floats rounded up to a multiple of LANES. */
static void attend_head(const float *query, const float *keys, const float *values,
                        int64_t token_stride, int64_t head_dim, int64_t tokens, float scale,
                        float *scores, float *out) {
  const int64_t chunks = head_dim / LANES;
  __m512 query_chunks[8]; /* head_dim up to 128 */
  for (int64_t c = 0; c < chunks; c++) query_chunks[c] = _mm512_loadu_ps(query + c * LANES);

  float highest = -INFINITY;
  for (int64_t t = 0; t < tokens; t++) {
    const float *key = keys + t * token_stride;
    __m512 sum = _mm512_mul_ps(query_chunks[0], _mm512_loadu_ps(key));
    for (int64_t c = 1; c < chunks; c++)
      sum = _mm512_fmadd_ps(query_chunks[c], _mm512_loadu_ps(key + c * LANES), sum);
    scores[t] = _mm512_reduce_add_ps(sum) * scale;
    highest = fmaxf(highest, scores[t]);
  }

  const int64_t padded = (tokens + LANES - 1) / LANES * LANES;
  for (int64_t t = tokens; t < padded; t++) scores[t] = -INFINITY; /* e^-inf: 0 */
  __m512 total = _mm512_setzero_ps();
  const __m512 shift = _mm512_set1_ps(highest);
  for (int64_t t = 0; t < padded; t += LANES) {
    const __m512 weights = exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(scores + t), shift));
    _mm512_storeu_ps(scores + t, weights);
    total = _mm512_add_ps(total, weights);
  }
  const float normalizer = 1.0f / _mm512_reduce_add_ps(total);

  __m512 sums[8];
  for (int64_t c = 0; c < chunks; c++) sums[c] = _mm512_setzero_ps();
  for (int64_t t = 0; t < tokens; t++) {
    const float *value = values + t * token_stride;
    const __m512 weight = _mm512_set1_ps(scores[t]);
    for (int64_t c = 0; c < chunks; c++)
      sums[c] = _mm512_fmadd_ps(weight, _mm512_loadu_ps(value + c * LANES), sums[c]);
  }
  for (int64_t c = 0; c < chunks; c++)
    _mm512_storeu_ps(out + c * LANES, _mm512_mul_ps(sums[c], _mm512_set1_ps(normalizer)));
}

/* out [heads, head_dim] = attention of query [heads, head_dim] over `tokens` cached keys and
 * values of `kv_heads` heads (query head h reads kv head h / (heads / kv_heads)), keys and
 * values laid out alike: `head_stride` and `token_stride` floats apart, a token's head_dim
 * values contiguous. head_dim must be a multiple of 16, at most 128. Returns 0, or -1 when out of memory (nothing written). */
int phi3_attend_one_position(const float *query, const float *keys, const float *values,
                             int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t tokens,
                             int64_t head_stride, int64_t token_stride, float scale, float *out,
                             int threads) {
  const int64_t padded = (tokens + LANES - 1) / LANES * LANES;
  float *scores = malloc((size_t)(heads * padded) * sizeof *scores);
  if (scores == NULL) return -1;
  const int64_t group = heads / kv_heads;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t head = 0; head < heads; head++) {
    const int64_t kv_offset = head / group * head_stride;
    attend_head(query + head * head_dim, keys + kv_offset, values + kv_offset, token_stride,
                head_dim, tokens, scale, scores + head * padded, out + head * head_dim);
  }
  free(scores);
  return 0;
}
