// AVX2 activation quantizer (definition in qs8_quant.h; same bits as the reference).
// Compile with: -mavx2 -mfma
#include <immintrin.h>

#include <cstring>

#include "qs8_quant.h"

namespace lowbit {
namespace avx2 {
namespace {

// 32 floats -> 32 codes: v = x*inv, clamped to [-127, 127] (NaN -> -127), rounded to nearest
// even by cvtps2dq (the default MXCSR mode, as nearbyint in the reference), packed to s8.
inline __m256i Quant32(const float* x, __m256 vinv) {
  const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
  __m256i q[4];
  for (int i = 0; i < 4; ++i) {
    __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + 8 * i), vinv);
    v = _mm256_max_ps(v, lo);  // (v > -127) ? v : -127: max_ps returns its second operand for NaN
    v = _mm256_min_ps(v, hi);  // (v < 127) ? v : 127
    q[i] = _mm256_cvtps_epi32(v);
  }
  // packs work per 128-bit lane: the bytes come out in dword order 0 2 4 6 1 3 5 7
  const __m256i w = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
  return _mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

inline int32_t HSum(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

}  // namespace

void qs8_quant__avx2(const Qs8QuantArgs& a, int64_t r0, int64_t r1) {
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const int8_t offb = a.bias128 ? int8_t(-128) : int8_t(0);  // +128 mod 256 == flip the top bit
  const __m256i off = _mm256_set1_epi8(offb);
  for (int64_t r = r0; r < r1; ++r) {
    const float* x = a.x + r * a.ldx;
    int8_t* q = a.q + r * a.ldq;
    __m256 m0 = _mm256_setzero_ps(), m1 = m0, m2 = m0, m3 = m0;
    int64_t k = 0;
    // max_ps(v, m) returns m when v is NaN: NaN ignored, as in the reference
    for (; k + 32 <= a.K; k += 32) {
      m0 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + k), absmask), m0);
      m1 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + k + 8), absmask), m1);
      m2 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + k + 16), absmask), m2);
      m3 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + k + 24), absmask), m3);
    }
    for (; k + 8 <= a.K; k += 8) m0 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + k), absmask), m0);
    // the lanes hold no NaN, so the order of the reduction does not matter
    m0 = _mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3));
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(m0), _mm256_extractf128_ps(m0, 1));
    m = _mm_max_ps(m, _mm_shuffle_ps(m, m, 0x4E));
    m = _mm_max_ps(m, _mm_shuffle_ps(m, m, 0xB1));
    float amax = _mm_cvtss_f32(m);
    for (; k < a.K; ++k) {
      const float v = __builtin_fabsf(x[k]);  // NaN never compares greater: ignored, as in the reference
      amax = v > amax ? v : amax;
    }
    a.scale[r] = amax / 127.0f;
    const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    const __m256 vinv = _mm256_set1_ps(inv);
    for (k = 0; k + 32 <= a.K; k += 32)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + k), _mm256_xor_si256(Quant32(x + k, vinv), off));
    if (k < a.K) {  // the tail through a zero-padded copy: the same vector ops, so the same bits
      alignas(32) float t[32] = {};
      std::memcpy(t, x + k, size_t(a.K - k) * 4);
      alignas(32) int8_t b[32];
      _mm256_store_si256(reinterpret_cast<__m256i*>(b), _mm256_xor_si256(Quant32(t, vinv), off));
      std::memcpy(q + k, b, size_t(a.K - k));
    }
    for (k = a.K; k < a.Kp; ++k) q[k] = offb;
    if (a.gsum != nullptr) {
      int32_t* gs = a.gsum + r * a.ngroups;
      const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
      for (int64_t g = 0; g < a.ngroups; ++g) {
        const int64_t k0 = g * a.group, k1 = (g + 1) * a.group < a.K ? (g + 1) * a.group : a.K;
        __m256i s = _mm256_setzero_si256();
        int64_t kk = k0;
        for (; kk + 32 <= k1; kk += 32) {  // |pair| <= 2*127: maddubs by 1s is exact
          const __m256i v = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + kk)), off);
          s = _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, v), ones16));
        }
        int32_t t = HSum(s);
        for (; kk < k1; ++kk) t += int32_t(int8_t(q[kk] ^ offb));
        gs[g] = t;
      }
    }
  }
}

}  // namespace avx2
}  // namespace lowbit
