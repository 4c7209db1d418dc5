// AVX2 qw_axpy (definition in qw_axpy.h; same bits as the reference). Compile with: -mavx2 -mfma -mf16c
#include <immintrin.h>

#include "kernels/qs8-gemm/qs8_gemm.h"
#include "qw_axpy.h"

namespace lowbit {
namespace avx2 {
namespace {

// Lanes [0, n) of 8.
inline __m256i Mask8(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// y[0..cnt) = fma(v, w, y) for 8 lanes, cnt <= 8
inline void Fma8(float* y, __m256 vv, __m256 w, int64_t cnt) {
  if (cnt >= 8) {
    _mm256_storeu_ps(y, _mm256_fmadd_ps(vv, w, _mm256_loadu_ps(y)));
  } else if (cnt > 0) {
    const __m256i m = Mask8(cnt);
    _mm256_maskstore_ps(y, m, _mm256_fmadd_ps(vv, w, _mm256_maskload_ps(y, m)));
  }
}

}  // namespace

void qw_axpy__avx2(const QwView& w, int64_t k, float v, int64_t n0, int64_t n1, float* y) {
  const int64_t P = (w.N + 15) / 16;
  const __m256 vv = _mm256_set1_ps(v);
  // byte k%4 of every 4-byte group (one column), moved to the top, then sign/zero extended
  const __m128i up = _mm_cvtsi32_si128(int(24 - 8 * (k & 3)));
  const __m128i down = _mm_cvtsi32_si128(24);
  if (!w.q4) {
    const int64_t Kp = qs8_kp(w.K);
    const float* ws = reinterpret_cast<const float*>(w.W + P * Kp * 16);
    for (int64_t n = n0; n < n1; n += 16) {
      const uint8_t* chunk = w.W + ((n >> 4) * (Kp / 4) + k / 4) * 64;
      for (int h = 0; h < 2; ++h) {
        const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(chunk + 32 * h));
        const __m256i c = _mm256_sra_epi32(_mm256_sll_epi32(b, up), down);
        const int64_t cnt = n1 - (n + 8 * h);
        const __m256 s = cnt >= 8 ? _mm256_loadu_ps(ws + n + 8 * h) : _mm256_maskload_ps(ws + n + 8 * h, Mask8(cnt));
        Fma8(y + (n - n0) + 8 * h, vv, _mm256_mul_ps(_mm256_cvtepi32_ps(c), s), cnt);
      }
    }
    return;
  }
  const Q4Parts parts = q4_parts(w.K, w.N, w.lay);
  const int64_t G = w.lay.group, Kg = q4_kg(w.K, G), NG = Kg / G, g = k / G;
  const __m128i nib = _mm_cvtsi32_si128((k & 7) < 4 ? 0 : 4);
  const __m256i lo4 = _mm256_set1_epi32(15);
  const bool table = w.lay.kind == Q4Kind::kTable;
  __m256i t0 = _mm256_setzero_si256(), t1 = t0;
  if (table) {  // T[0..7], T[8..15] as int32 lanes for permutevar
    const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w.W + parts.table));
    t0 = _mm256_cvtepi8_epi32(t);
    t1 = _mm256_cvtepi8_epi32(_mm_srli_si128(t, 8));
  }
  for (int64_t n = n0; n < n1; n += 16) {
    const int64_t p = n >> 4;
    const uint8_t* chunk = w.W + parts.codes + (p * (Kg / 8) + k / 8) * 64;
    const uint16_t* sc = reinterpret_cast<const uint16_t*>(w.W + parts.scales) + (p * NG + g) * 16;
    const uint8_t* zp = w.W + parts.zeros + (p * NG + g) * 16;
    for (int h = 0; h < 2; ++h) {
      const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(chunk + 32 * h));
      const __m256i byte = _mm256_srl_epi32(_mm256_sll_epi32(b, up), down);  // u8 of column j
      const __m256i u = _mm256_and_si256(_mm256_srl_epi32(byte, nib), lo4);
      __m256i c;
      if (table) {
        const __m256i hi = _mm256_cmpgt_epi32(u, _mm256_set1_epi32(7));
        c = _mm256_blendv_epi8(_mm256_permutevar8x32_epi32(t0, u), _mm256_permutevar8x32_epi32(t1, u), hi);
      } else if (w.lay.asym) {
        const __m256i z = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(zp + 8 * h)));
        c = _mm256_sub_epi32(u, z);
      } else {
        c = _mm256_sub_epi32(u, _mm256_set1_epi32(8));
      }
      const __m256 s = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sc + 8 * h)));
      Fma8(y + (n - n0) + 8 * h, vv, _mm256_mul_ps(_mm256_cvtepi32_ps(c), s), n1 - (n + 8 * h));
    }
  }
}

}  // namespace avx2
}  // namespace lowbit
