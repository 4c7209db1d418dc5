// AVX-512 f32_pack_bt (definition in f32_gemm.h): 16 x 16 blocks of Bt transposed in registers
// (unpack pairs, then 128-bit lane permutes), the same bytes as the scalar reference.
// Compile with: -mavx512f -mavx512bw -mavx512dq -mavx512vl
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include "kernels/common/avx512.h"

#include "f32_gemm.h"

namespace lowbit {
namespace avx512 {
namespace {

// r[0..16) (16 rows of 16 floats) -> their transpose, in place.
inline void Transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {  // 32-bit pairs
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {  // 64-bit pairs
    r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
    r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
    r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
  }
  // r[4a + b] now holds, in each 128-bit lane L, column 4L + b of rows 4a .. 4a+3 (the four
  // values of row block a); the lane shuffles gather the four row blocks of one column
  // two-source lane permutes (vpermt2ps; SIMDe's emulated build has them, not the f32x4 shuffle):
  // [a0 a1 b0 b1], [a2 a3 b2 b3], then [a0 a2 b0 b2], [a1 a3 b1 b3] in 128-bit lanes
  const __m512i l0101 = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
  const __m512i l2323 = _mm512_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
  const __m512i l0202 = _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);
  const __m512i l1313 = _mm512_setr_epi32(4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
  for (int b = 0; b < 4; ++b) {
    const __m512 lo01 = _mm512_permutex2var_ps(r[b], l0101, r[4 + b]), hi01 = _mm512_permutex2var_ps(r[b], l2323, r[4 + b]);
    const __m512 lo23 = _mm512_permutex2var_ps(r[8 + b], l0101, r[12 + b]);
    const __m512 hi23 = _mm512_permutex2var_ps(r[8 + b], l2323, r[12 + b]);
    t[b] = _mm512_permutex2var_ps(lo01, l0202, lo23);       // column b
    t[4 + b] = _mm512_permutex2var_ps(lo01, l1313, lo23);   // column 4 + b
    t[8 + b] = _mm512_permutex2var_ps(hi01, l0202, hi23);   // column 8 + b
    t[12 + b] = _mm512_permutex2var_ps(hi01, l1313, hi23);  // column 12 + b
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

}  // namespace

void f32_pack_bt__avx512(int64_t K, int64_t N, const float* Bt, int64_t ldbt, float* Bp) {
  for (int64_t p = 0; p * 16 < N; ++p) {
    float* dst = Bp + p * K * 16;
    const int64_t w = N - p * 16 < 16 ? N - p * 16 : 16;
    const float* src = Bt + p * 16 * ldbt;
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
      __m512 r[16];
      for (int j = 0; j < 16; ++j) r[j] = j < w ? _mm512_loadu_ps(src + j * ldbt + k) : _mm512_setzero_ps();
      Transpose16(r);
      for (int i = 0; i < 16; ++i) _mm512_storeu_ps(dst + (k + i) * 16, r[i]);
    }
    for (; k < K; ++k)  // the last K % 16 rows
      for (int64_t j = 0; j < 16; ++j) dst[k * 16 + j] = j < w ? src[j * ldbt + k] : 0.0f;
  }
}

}  // namespace avx512
}  // namespace lowbit
