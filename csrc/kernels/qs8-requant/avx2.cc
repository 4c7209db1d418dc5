// AVX2 requantization (see qs8_requant.h). Compile with: -mavx2 -mfma
// 32 columns per step: four 8-float vectors are scaled, clamped, rounded (cvtps_epi32 rounds
// half to even under the default MXCSR, like nearbyint) and packed to 32 int8 with two
// saturating packs; the packs interleave 128-bit lanes, one permute puts them back in order.
#include <immintrin.h>

#include <cstring>

#include "qs8_requant.h"

namespace lowbit {
namespace avx2 {
namespace {

struct Consts {
  __m256 lo, hi, mlo, mhi, mid_mult, r_mult;
  __m256i zp, r_zp;
};

inline __m256i Eight(const Qs8RequantArgs& a, const Consts& k, const float* y, const int8_t* r, int64_t n) {
  __m256 v = _mm256_mul_ps(_mm256_loadu_ps(y + n), _mm256_loadu_ps(a.mult + n));
  if (r) {
    if (a.two_step) {
      v = _mm256_min_ps(_mm256_max_ps(v, k.mlo), k.mhi);
      v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtps_epi32(v)), k.mid_mult);
    }
    int64_t rb;
    std::memcpy(&rb, r + n, 8);
    const __m256i ri = _mm256_sub_epi32(_mm256_cvtepi8_epi32(_mm_cvtsi64_si128(rb)), k.r_zp);
    v = _mm256_add_ps(v, _mm256_mul_ps(_mm256_cvtepi32_ps(ri), k.r_mult));
  }
  v = _mm256_min_ps(_mm256_max_ps(v, k.lo), k.hi);
  return _mm256_add_epi32(_mm256_cvtps_epi32(v), k.zp);
}

inline int8_t One(const Qs8RequantArgs& a, const float* y, const int8_t* r, int64_t n) {
  const float lo = float(a.lo - a.out_zp), hi = float(a.hi - a.out_zp);
  float v = y[n] * a.mult[n];
  if (r) {
    if (a.two_step) {
      const float mlo = float(-128 - a.mid_zp), mhi = float(127 - a.mid_zp);
      v = v > mlo ? v : mlo;
      v = v < mhi ? v : mhi;
      v = float(_mm_cvtss_si32(_mm_set_ss(v))) * a.mid_mult;  // rint, half to even (MXCSR default)
    }
    v = v + float(int32_t(r[n]) - a.r_zp) * a.r_mult;
  }
  v = v > lo ? v : lo;
  v = v < hi ? v : hi;
  return int8_t(_mm_cvtss_si32(_mm_set_ss(v)) + a.out_zp);
}

}  // namespace

void qs8_requant__avx2(const Qs8RequantArgs& a, int64_t m0, int64_t m1) {
  Consts k;
  k.lo = _mm256_set1_ps(float(a.lo - a.out_zp));
  k.hi = _mm256_set1_ps(float(a.hi - a.out_zp));
  k.mlo = _mm256_set1_ps(float(-128 - a.mid_zp));
  k.mhi = _mm256_set1_ps(float(127 - a.mid_zp));
  k.mid_mult = _mm256_set1_ps(a.mid_mult);
  k.r_mult = _mm256_set1_ps(a.r_mult);
  k.zp = _mm256_set1_epi32(a.out_zp);
  k.r_zp = _mm256_set1_epi32(a.r_zp);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int64_t m = m0; m < m1; ++m) {
    const float* y = a.y + m * a.ldy;
    const int8_t* r = a.r ? a.r + m * a.ldr : nullptr;
    int8_t* q = a.q + m * a.ldq;
    int64_t n = 0;
    for (; n + 32 <= a.N; n += 32) {
      const __m256i i0 = Eight(a, k, y, r, n), i1 = Eight(a, k, y, r, n + 8);
      const __m256i i2 = Eight(a, k, y, r, n + 16), i3 = Eight(a, k, y, r, n + 24);
      // packs work per 128-bit lane: the 4-byte groups hold columns 0, 8, 16, 24, 4, 12, 20, 28 (+0..3)
      const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + n), _mm256_permutevar8x32_epi32(p, order));
    }
    for (; n + 8 <= a.N; n += 8) {
      const __m256i i0 = Eight(a, k, y, r, n);
      const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(i0), _mm256_extracti128_si256(i0, 1));
      _mm_storel_epi64(reinterpret_cast<__m128i*>(q + n), _mm_packs_epi16(w, w));
    }
    for (; n < a.N; ++n) q[n] = One(a, y, r, n);
  }
}

}  // namespace avx2
}  // namespace lowbit
