// AVX2 4-bit GEMM over the q4 layouts (see q4_gemm.h). Compile with: -mavx2 -mfma -mf16c
//
// Affine codes are u8 in [0, 15]: vpmaddubsw(code, a) pairs stay within 2*15*127, so the
// int16 sums of 4 steps of 8 k (one 32-k slice) cannot saturate; vpmaddwd widens once per
// slice. Table codes are looked up with vpshufb into the s8 table and multiplied with the
// sign trick (|t| x sign(a, t)), widening every step. Exact integer sums, reference fma order.
#include <immintrin.h>

#include <cstring>

#include "q4_gemm.h"

namespace lowbit {
namespace avx2 {
namespace {

enum Mode { kSym = 0, kAsym = 1, kTab = 2 };
constexpr int64_t kPf = 1024;

inline __m256i Bcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

template <int MR, int MODE>
__attribute__((noinline)) void Tile(const Q4GemmArgs& g, int64_t m, int64_t nb, int64_t ncols) {
  const int64_t G = g.lay.group, Kg = q4_kg(g.K, G), NG = Kg / G;
  const Q4Parts parts = q4_parts(g.K, g.N, g.lay);
  const int64_t pidx = nb / 16;
  const uint8_t* codes = g.W + parts.codes + pidx * Kg * 8;
  const uint16_t* scales = reinterpret_cast<const uint16_t*>(g.W + parts.scales) + pidx * NG * 16;
  const uint8_t* zeros = g.W + parts.zeros + pidx * NG * 16;
  const __m256i tbl = MODE == kTab ? _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g.W)))
                                   : _mm256_setzero_si256();
  const __m256i low4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
  __m256 f[MR][2];
  for (int r = 0; r < MR; ++r) f[r][0] = f[r][1] = _mm256_setzero_ps();
  for (int64_t gi = 0; gi < NG; ++gi) {
    __m256i d[MR][2];
    for (int r = 0; r < MR; ++r) d[r][0] = d[r][1] = _mm256_setzero_si256();
    for (int64_t ks = gi * G / 8; ks < (gi + 1) * G / 8; ks += 4) {  // one 32-k slice
      __m256i s16[MR][2];
      for (int r = 0; r < MR; ++r) s16[r][0] = s16[r][1] = _mm256_setzero_si256();
      for (int64_t k8 = ks; k8 < ks + 4; ++k8) {
        const uint8_t* src = codes + k8 * 64;
        _mm_prefetch(reinterpret_cast<const char*>(src) + kPf, _MM_HINT_T0);
        __m256i lo[2], hi[2];
        for (int h = 0; h < 2; ++h) {
          const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 32 * h));
          lo[h] = _mm256_and_si256(v, low4);
          hi[h] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
          if (MODE == kTab) {
            lo[h] = _mm256_shuffle_epi8(tbl, lo[h]);
            hi[h] = _mm256_shuffle_epi8(tbl, hi[h]);
          }
        }
        for (int r = 0; r < MR; ++r) {
          const __m256i a0 = Bcast4(g.A + (m + r) * g.lda + k8 * 8), a1 = Bcast4(g.A + (m + r) * g.lda + k8 * 8 + 4);
          for (int h = 0; h < 2; ++h) {
            if (MODE == kTab) {
              const __m256i p0 = _mm256_maddubs_epi16(_mm256_abs_epi8(lo[h]), _mm256_sign_epi8(a0, lo[h]));
              const __m256i p1 = _mm256_maddubs_epi16(_mm256_abs_epi8(hi[h]), _mm256_sign_epi8(a1, hi[h]));
              d[r][h] = _mm256_add_epi32(d[r][h], _mm256_madd_epi16(p0, ones));
              d[r][h] = _mm256_add_epi32(d[r][h], _mm256_madd_epi16(p1, ones));
            } else {
              s16[r][h] = _mm256_add_epi16(s16[r][h], _mm256_maddubs_epi16(lo[h], a0));
              s16[r][h] = _mm256_add_epi16(s16[r][h], _mm256_maddubs_epi16(hi[h], a1));
            }
          }
        }
      }
      if (MODE != kTab)
        for (int r = 0; r < MR; ++r)
          for (int h = 0; h < 2; ++h) d[r][h] = _mm256_add_epi32(d[r][h], _mm256_madd_epi16(s16[r][h], ones));
    }
    for (int h = 0; h < 2; ++h) {
      const __m256 s = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(scales + gi * 16 + 8 * h)));
      __m256i z = _mm256_setzero_si256();
      if (MODE == kAsym) {
        int64_t zz;
        std::memcpy(&zz, zeros + gi * 16 + 8 * h, 8);
        z = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(zz));
      }
      for (int r = 0; r < MR; ++r) {
        const int32_t sum = g.gsum[(m + r) * NG + gi];
        __m256i c = d[r][h];
        if (MODE == kAsym) c = _mm256_sub_epi32(c, _mm256_mullo_epi32(z, _mm256_set1_epi32(sum)));
        if (MODE == kSym) c = _mm256_sub_epi32(c, _mm256_set1_epi32(sum * 8));
        f[r][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(c), s, f[r][h]);
      }
    }
  }
  const bool relu = g.act == Activation::kRelu;
  for (int r = 0; r < MR; ++r) {
    alignas(32) float out[16];
    for (int h = 0; h < 2; ++h) {
      __m256 y = _mm256_mul_ps(f[r][h], _mm256_set1_ps(g.a_scale[m + r]));
      if (g.bias) {
        alignas(32) float b[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int j = 0; j < 8 && 8 * h + j < ncols; ++j) b[j] = g.bias[nb + 8 * h + j];
        y = _mm256_add_ps(y, _mm256_load_ps(b));
      }
      if (relu) y = _mm256_max_ps(_mm256_setzero_ps(), y);
      _mm256_store_ps(out + 8 * h, y);
    }
    std::memcpy(g.C + (m + r) * g.ldc + nb, out, size_t(ncols < 16 ? ncols : 16) * 4);
  }
}

template <int MR, int MODE>
void Cols(const Q4GemmArgs& g, int64_t m, int64_t n0, int64_t n1) {
  for (int64_t nb = n0; nb < n1; nb += 16) Tile<MR, MODE>(g, m, nb, n1 - nb < 16 ? n1 - nb : 16);
}

template <int MODE>
void Run(const Q4GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  const int64_t nc = 64;
  for (int64_t jc = n0; jc < n1; jc += nc) {
    const int64_t jend = jc + nc < n1 ? jc + nc : n1;
    int64_t m = m0;
    for (; m + 4 <= m1; m += 4) Cols<4, MODE>(g, m, jc, jend);
    switch (m1 - m) {
      case 1: Cols<1, MODE>(g, m, jc, jend); break;
      case 2: Cols<2, MODE>(g, m, jc, jend); break;
      case 3: Cols<3, MODE>(g, m, jc, jend); break;
      default: break;
    }
  }
}

}  // namespace

void q4_gemm_4x16c8__avx2(const Q4GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  if (m1 <= m0 || n1 <= n0) return;
  if (g.lay.kind == Q4Kind::kTable) return Run<kTab>(g, m0, m1, n0, n1);
  if (g.lay.asym) return Run<kAsym>(g, m0, m1, n0, n1);
  Run<kSym>(g, m0, m1, n0, n1);
}

}  // namespace avx2
}  // namespace lowbit
