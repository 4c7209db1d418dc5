// AVX2 int8 depthwise convolution, 16 channels per step (see qs8_dwconv.h).
// Compile with: -mavx2 -mfma
//
// Taps go in pairs through vpmaddwd: the two taps' (x - x_zp) as int16 are interleaved
// per channel (unpacklo/hi), the weights were interleaved the same way once per call, and
// one vpmaddwd gives each channel's two products summed in int32 (|x - z| <= 255 and
// |w| <= 127: no int16 overflow, and the int32 sums are exact). The unpacks leave the
// accumulators holding channels {0-3, 8-11} and {4-7, 12-15}; the final packs put them
// back in order. Taps outside the image are skipped (padding is the real value 0).
#include <immintrin.h>


#include "qs8_dwconv.h"

namespace lowbit {
namespace avx2 {
namespace {

inline __m256i Load16(const int8_t* p) { return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }

}  // namespace

void qs8_dwconv_nhwc_16c__avx2(const Qs8DwConvArgs& a, int64_t r0, int64_t r1, void* scratch) {
  const int64_t C = a.C, taps = a.kh * a.kw, pairs = (taps + 1) / 2, CB = C / 16;
  // Interleaved int16 weights: [block][pair][lo, hi], then the tap pointers (scratch, not
  // std::vector: an ISA object must not instantiate templates the linker could share)
  uint8_t* base = static_cast<uint8_t*>(scratch) + (C * 4 + 63) / 64 * 64;
  __m256i* wv = reinterpret_cast<__m256i*>(base);
  const int8_t** tap = reinterpret_cast<const int8_t**>(base + CB * pairs * 64);
  for (int64_t b = 0; b < CB; ++b)
    for (int64_t p = 0; p < pairs; ++p) {
      const __m256i w0 = Load16(a.w + (2 * p) * C + 16 * b);
      const __m256i w1 = 2 * p + 1 < taps ? Load16(a.w + (2 * p + 1) * C + 16 * b) : _mm256_setzero_si256();
      wv[(b * pairs + p) * 2] = _mm256_unpacklo_epi16(w0, w1);
      wv[(b * pairs + p) * 2 + 1] = _mm256_unpackhi_epi16(w0, w1);
    }
  const __m256i zp16 = _mm256_set1_epi16(int16_t(a.x_zp));
  const __m256 lo = _mm256_set1_ps(float(a.lo - a.out_zp)), hi = _mm256_set1_ps(float(a.hi - a.out_zp));
  const __m256i ozp = _mm256_set1_epi32(a.out_zp);
  const float slo = float(a.lo - a.out_zp), shi = float(a.hi - a.out_zp);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / a.OH, oy = r % a.OH;
    for (int64_t ox = 0; ox < a.OW; ++ox) {
      for (int64_t t = 0; t < 2 * pairs; ++t) {
        tap[t] = nullptr;
        if (t >= taps) continue;
        const int64_t iy = oy * a.sh - a.pt + (t / a.kw) * a.dh, ix = ox * a.sw - a.pl + (t % a.kw) * a.dw;
        if (iy >= 0 && iy < a.H && ix >= 0 && ix < a.W) tap[t] = a.x + ((n * a.H + iy) * a.W + ix) * C;
      }
      int8_t* yp = a.y + (r * a.OW + ox) * C;
      for (int64_t b = 0; b < CB; ++b) {
        const int64_t c0 = 16 * b;
        __m256i acc_lo = _mm256_setzero_si256(), acc_hi = _mm256_setzero_si256();
        const __m256i* w = wv + b * pairs * 2;
        for (int64_t p = 0; p < pairs; ++p) {
          const int8_t* p0 = tap[2 * p];
          const int8_t* p1 = tap[2 * p + 1];
          if (!p0 && !p1) continue;
          const __m256i x0 = p0 ? _mm256_sub_epi16(Load16(p0 + c0), zp16) : _mm256_setzero_si256();
          const __m256i x1 = p1 ? _mm256_sub_epi16(Load16(p1 + c0), zp16) : _mm256_setzero_si256();
          acc_lo = _mm256_add_epi32(acc_lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(x0, x1), w[2 * p]));
          acc_hi = _mm256_add_epi32(acc_hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(x0, x1), w[2 * p + 1]));
        }
        if (a.bias) {
          const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.bias + c0));
          const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.bias + c0 + 8));
          acc_lo = _mm256_add_epi32(acc_lo, _mm256_permute2x128_si256(b0, b1, 0x20));
          acc_hi = _mm256_add_epi32(acc_hi, _mm256_permute2x128_si256(b0, b1, 0x31));
        }
        const __m256 m0 = _mm256_loadu_ps(a.mult + c0), m1 = _mm256_loadu_ps(a.mult + c0 + 8);
        __m256 vlo = _mm256_mul_ps(_mm256_cvtepi32_ps(acc_lo), _mm256_permute2f128_ps(m0, m1, 0x20));
        __m256 vhi = _mm256_mul_ps(_mm256_cvtepi32_ps(acc_hi), _mm256_permute2f128_ps(m0, m1, 0x31));
        vlo = _mm256_min_ps(_mm256_max_ps(vlo, lo), hi);
        vhi = _mm256_min_ps(_mm256_max_ps(vhi, lo), hi);
        const __m256i ilo = _mm256_add_epi32(_mm256_cvtps_epi32(vlo), ozp);
        const __m256i ihi = _mm256_add_epi32(_mm256_cvtps_epi32(vhi), ozp);
        const __m256i p16 = _mm256_packs_epi32(ilo, ihi);  // channels 0-15 in order, as int16
        const __m256i p8 = _mm256_permute4x64_epi64(_mm256_packs_epi16(p16, p16), 0x08);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(yp + c0), _mm256_castsi256_si128(p8));
      }
      // channels past the last full block: the reference's arithmetic, one at a time
      for (int64_t c = CB * 16; c < C; ++c) {
        int32_t acc = a.bias ? a.bias[c] : 0;
        for (int64_t t = 0; t < taps; ++t)
          if (tap[t]) acc += (int32_t(tap[t][c]) - a.x_zp) * int32_t(a.w[t * C + c]);
        float v = float(acc) * a.mult[c];
        v = v > slo ? v : slo;
        v = v < shi ? v : shi;
        yp[c] = int8_t(_mm_cvtss_si32(_mm_set_ss(v)) + a.out_zp);  // rounds half to even, as nearbyint
      }
    }
  }
}

}  // namespace avx2
}  // namespace lowbit
