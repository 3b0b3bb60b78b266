/* Vector arithmetic that more than one of our kernels computes, so that they compute it alike. */
#ifndef PHI3_VECTOR_MATH_H
#define PHI3_VECTOR_MATH_H

#include <immintrin.h>

/* e^x for x <= 0 (attention's scores minus their maximum, SiLU's -|x|), to ~2 ulp: 2^n * e^f
 * with |f| <= ln 2 / 2. */
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

#endif
