// AVX-512 activation quantizer (definition in qs8_quant.h; same bits as the reference).
// Compile with: -mavx512f -mavx512bw -mavx512dq -mavx512vl
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include "kernels/common/avx512.h"

#include "avx512_codes.h"
#include "qs8_quant.h"

namespace lowbit {
namespace avx512 {

void qs8_quant__avx512(const Qs8QuantArgs& a, int64_t r0, int64_t r1) {
  const __m512 absmask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7FFFFFFF));
  for (int64_t r = r0; r < r1; ++r) {
    const float* x = a.x + r * a.ldx;
    int8_t* q = a.q + r * a.ldq;
    // max_ps(v, m) returns m when v is NaN: NaN ignored, as in the reference; the max of the other
    // values does not depend on their order, so four running maxima give the same amax
    __m512 m0 = _mm512_setzero_ps(), m1 = _mm512_setzero_ps(), m2 = _mm512_setzero_ps(), m3 = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 64 <= a.K; k += 64) {
      m0 = _mm512_max_ps(_mm512_and_ps(_mm512_loadu_ps(x + k), absmask), m0);
      m1 = _mm512_max_ps(_mm512_and_ps(_mm512_loadu_ps(x + k + 16), absmask), m1);
      m2 = _mm512_max_ps(_mm512_and_ps(_mm512_loadu_ps(x + k + 32), absmask), m2);
      m3 = _mm512_max_ps(_mm512_and_ps(_mm512_loadu_ps(x + k + 48), absmask), m3);
    }
    __m512 vmax = _mm512_max_ps(_mm512_max_ps(m0, m1), _mm512_max_ps(m2, m3));
    for (; k + 16 <= a.K; k += 16) vmax = _mm512_max_ps(_mm512_and_ps(_mm512_loadu_ps(x + k), absmask), vmax);
    if (k < a.K) {
      const __mmask16 mk = static_cast<__mmask16>((1u << (a.K - k)) - 1u);
      vmax = _mm512_max_ps(_mm512_and_ps(_mm512_maskz_loadu_ps(mk, x + k), absmask), vmax);
    }
    const float amax = _mm512_reduce_max_ps(vmax);  // lanes hold no NaN: order-free
    a.scale[r] = amax / 127.0f;
    const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    CodesOfRow(x, q, a.K, inv, a.bias128);
    for (k = a.K; k < a.Kp; ++k) q[k] = a.bias128 ? int8_t(-128) : int8_t(0);
    if (a.gsum != nullptr) {
      int32_t* gs = a.gsum + r * a.ngroups;
      const __m128i off = _mm_set1_epi8(a.bias128 ? char(0x80) : 0);
      const int8_t offb = a.bias128 ? int8_t(-128) : int8_t(0);
      for (int64_t g = 0; g < a.ngroups; ++g) {
        const int64_t k0 = g * a.group, k1 = (g + 1) * a.group < a.K ? (g + 1) * a.group : a.K;
        __m512i s = _mm512_setzero_si512();
        int64_t kk = k0;
        for (; kk + 16 <= k1; kk += 16)
          s = _mm512_add_epi32(s, _mm512_cvtepi8_epi32(_mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + kk)), off)));
        int32_t t = _mm512_reduce_add_epi32(s);
        for (; kk < k1; ++kk) t += int32_t(int8_t(q[kk] ^ offb));
        gs[g] = t;
      }
    }
  }
}

}  // namespace avx512
}  // namespace lowbit
