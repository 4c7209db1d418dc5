// AVX2 int8 GEMM over "qs8-n16k4" (see qs8_gemm.h). Compile with: -mavx2 -mfma
//
// vpmaddubsw multiplies u8 x s8 and adds pairs into saturating int16. With both operands
// in [-127, 127] the sign trick keeps every pair exact: |a| (u8) x sign(w, a) (s8) gives
// a*w, and a pair sums to at most 2*127*127 = 32258 < 32767. vpmaddwd by ones then widens.
#include <immintrin.h>

#include <cstring>

#include "qs8_gemm.h"

namespace lowbit {
namespace avx2 {
namespace {

constexpr int64_t kPf = 1024;  // prefetch distance (bytes) along the weight panel stream

inline __m256i Bcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

// MR rows x one 16-column panel (two ymm of 8 columns) over the whole K.
template <int MR>
__attribute__((noinline)) void Tile(const Qs8GemmArgs& g, int64_t m, int64_t nb, int64_t ncols) {
  const int64_t Kp = qs8_kp(g.K), P = (g.N + 15) / 16, ps = Kp * 16;
  const uint8_t* W = g.W + (nb / 16) * ps;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[MR][2];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
  for (int64_t k = 0; k < Kp; k += 4) {
    const uint8_t* src = W + k * 16;
    _mm_prefetch(reinterpret_cast<const char*>(src) + kPf, _MM_HINT_T0);
    const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
    const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 32));
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m256i ab = Bcast4(g.A + (m + r) * g.lda + k);
      const __m256i aa = _mm256_abs_epi8(ab);
      const __m256i p0 = _mm256_maddubs_epi16(aa, _mm256_sign_epi8(w0, ab));
      const __m256i p1 = _mm256_maddubs_epi16(aa, _mm256_sign_epi8(w1, ab));
      acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(p0, ones));
      acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(p1, ones));
    }
  }
  const float* wscale = reinterpret_cast<const float*>(g.W + P * ps) + nb;
  const bool relu = g.act == Activation::kRelu;
  for (int r = 0; r < MR; ++r) {
    alignas(32) float out[16];
    for (int h = 0; h < 2; ++h) {
      const __m256 s = _mm256_mul_ps(_mm256_set1_ps(g.a_scale[m + r]), _mm256_loadu_ps(wscale + 8 * h));
      __m256 y = _mm256_mul_ps(_mm256_cvtepi32_ps(acc[r][h]), s);
      if (g.bias) {
        alignas(32) float b[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int j = 0; j < 8 && 8 * h + j < ncols; ++j) b[j] = g.bias[nb + 8 * h + j];
        y = _mm256_add_ps(y, _mm256_load_ps(b));
      }
      if (relu) y = _mm256_max_ps(_mm256_setzero_ps(), y);
      _mm256_store_ps(out + 8 * h, y);
    }
    float* c = g.C + (m + r) * g.ldc + nb;
    if (ncols >= 16) std::memcpy(c, out, 64);
    else std::memcpy(c, out, size_t(ncols) * 4);
  }
}

template <int MR>
void Cols(const Qs8GemmArgs& g, int64_t m, int64_t n0, int64_t n1) {
  for (int64_t nb = n0; nb < n1; nb += 16) Tile<MR>(g, m, nb, n1 - nb < 16 ? n1 - nb : 16);
}

}  // namespace

void qs8_gemm_4x16c4__avx2(const Qs8GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  if (m1 <= m0 || n1 <= n0) return;
  const int64_t nc = 64;  // a column block of weights stays in L1/L2 across the row tiles
  for (int64_t jc = n0; jc < n1; jc += nc) {
    const int64_t jend = jc + nc < n1 ? jc + nc : n1;
    int64_t m = m0;
    for (; m + 4 <= m1; m += 4) Cols<4>(g, m, jc, jend);
    switch (m1 - m) {
      case 1: Cols<1>(g, m, jc, jend); break;
      case 2: Cols<2>(g, m, jc, jend); break;
      case 3: Cols<3>(g, m, jc, jend); break;
      default: break;
    }
  }
}

}  // namespace avx2
}  // namespace lowbit
