// AVX-512 qw_axpy (definition in qw_axpy.h; same bits as the reference): 16 columns, one
// 64-byte chunk of the packed weight, per step. Compile with: -mavx512f -mavx512bw -mavx512dq -mavx512vl
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include "kernels/common/avx512.h"

#include "kernels/qs8-gemm/qs8_gemm.h"
#include "avx512_decode.h"
#include "qw_axpy.h"

namespace lowbit {
namespace avx512 {
namespace {

inline __mmask16 Mask(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}

// y[0..16) = fma(v, w, y) on the lanes of mk
inline void Fma16(float* y, __m512 vv, __m512 w, __mmask16 mk) {
  _mm512_mask_storeu_ps(y, mk, _mm512_fmadd_ps(vv, w, _mm512_maskz_loadu_ps(mk, y)));
}

}  // namespace

void qw_axpy__avx512(const QwView& w, int64_t k, float v, int64_t n0, int64_t n1, float* y) {
  const int64_t P = (w.N + 15) / 16;
  const __m512 vv = _mm512_set1_ps(v);
  // byte k%4 of every 4-byte group (one column), moved to the top, then sign/zero extended
  if (!w.q4) {
    const int64_t Kp = qs8_kp(w.K);
    const float* ws = reinterpret_cast<const float*>(w.W + P * Kp * 16);
    for (int64_t n = n0; n < n1; n += 16) {
      const __mmask16 mk = Mask(n1 - n);
      Fma16(y + (n - n0), vv, Qs8WeightRow(w.W + ((n >> 4) * (Kp / 4) + k / 4) * 64, k, _mm512_maskz_loadu_ps(mk, ws + n)), mk);
    }
    return;
  }
  const Q4Parts parts = q4_parts(w.K, w.N, w.lay);
  const int64_t Kg = q4_kg(w.K, w.lay.group);
  // T[0..15] as int32 lanes: one permutexvar is the lookup
  const __m512i t = w.lay.kind == Q4Kind::kTable
                        ? _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.W + parts.table)))
                        : _mm512_setzero_si512();
  for (int64_t n = n0; n < n1; n += 16)
    Fma16(y + (n - n0), vv, Q4WeightRow(w.W, w.lay, parts, Kg, n >> 4, k, t), Mask(n1 - n));
}

}  // namespace avx512
}  // namespace lowbit
