// Direct depthwise convolution, NHWC, AVX2 (see f32_dwconv.h): 8 channels per
// vector; multiply and add kept separate so the result equals ref.cc's.
// Compile with: -mavx2 -mfma
#include <immintrin.h>

#include "f32_dwconv.h"

namespace lowbit {
namespace avx2 {
namespace {

alignas(64) constexpr int32_t kMaskTab[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
inline __m256i Mask(int64_t n) {  // first clamp(n, 0, 8) lanes
  n = n < 0 ? 0 : (n > 8 ? 8 : n);
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskTab + 8 - n));
}

// Loads 8 channels, or the first `valid` of them (the rest read as 0, never touched).
inline __m256 Load(const float* p, bool full, __m256i k) { return full ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, k); }
inline void Store(float* p, __m256 v, bool full, __m256i k) {
  if (full) _mm256_storeu_ps(p, v);
  else _mm256_maskstore_ps(p, k, v);
}

}  // namespace

void f32_dwconv_nhwc__avx2(const F32DwConvArgs& a, int64_t r0, int64_t r1, float* acc) {
  (void)acc;  // accumulators live in registers here
  constexpr int64_t kMaxTaps = 25;  // up to 5x5: a channel block's weights are copied once per row into wv (L1)
  const int64_t C = a.C, taps = a.kh * a.kw;
  const bool cached = taps <= kMaxTaps;
  __m256 wv[kMaxTaps];
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / a.OH, oy = r % a.OH;
    // kernel rows inside the image for this output row (the same for every ox)
    int64_t ky0 = 0, ky1 = a.kh;
    while (ky0 < a.kh && oy * a.sh - a.pt + ky0 * a.dh < 0) ++ky0;
    while (ky1 > ky0 && oy * a.sh - a.pt + (ky1 - 1) * a.dh >= a.H) --ky1;
    for (int64_t c = 0; c < C; c += 8) {
      const bool full = C - c >= 8;
      const __m256i k = Mask(C - c);
      if (cached)
        for (int64_t t = 0; t < taps; ++t) wv[t] = Load(a.w + t * C + c, full, k);
      const __m256 bv = a.bias ? Load(a.bias + c, full, k) : _mm256_setzero_ps();
      auto weight = [&](int64_t t) { return cached ? wv[t] : Load(a.w + t * C + c, full, k); };
      // One output pixel, taps checked against the image edges.
      auto one = [&](int64_t ox) {
        const int64_t ixb = ox * a.sw - a.pl;
        __m256 s = _mm256_setzero_ps();
        for (int64_t ky = ky0; ky < ky1; ++ky) {
          const int64_t iy = oy * a.sh - a.pt + ky * a.dh;
          const float* xrow = a.x + ((n * a.H + iy) * a.W) * C + c;
          for (int64_t kx = 0; kx < a.kw; ++kx) {
            const int64_t ix = ixb + kx * a.dw;
            if (ix < 0 || ix >= a.W) continue;
            s = _mm256_add_ps(s, _mm256_mul_ps(Load(xrow + ix * C, full, k), weight(ky * a.kw + kx)));
          }
        }
        if (a.bias) s = _mm256_add_ps(s, bv);
        Store(a.y + (r * a.OW + ox) * C + c, s, full, k);
      };
      // Four output pixels at a time where their windows are inside the image
      // horizontally: four independent add chains hide the add latency (each
      // pixel still sums its taps in the same order as the scalar kernel).
      for (int64_t ox = 0; ox < a.OW;) {
        const int64_t ixb = ox * a.sw - a.pl;
        if (ox + 4 > a.OW || ixb < 0 || ixb + 3 * a.sw + (a.kw - 1) * a.dw >= a.W) {
          one(ox++);
          continue;
        }
        __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
        for (int64_t ky = ky0; ky < ky1; ++ky) {
          const int64_t iy = oy * a.sh - a.pt + ky * a.dh;
          const float* xp = a.x + ((n * a.H + iy) * a.W + ixb) * C + c;
          for (int64_t kx = 0; kx < a.kw; ++kx, xp += a.dw * C) {
            const __m256 w = weight(ky * a.kw + kx);
            s0 = _mm256_add_ps(s0, _mm256_mul_ps(Load(xp, full, k), w));
            s1 = _mm256_add_ps(s1, _mm256_mul_ps(Load(xp + a.sw * C, full, k), w));
            s2 = _mm256_add_ps(s2, _mm256_mul_ps(Load(xp + 2 * a.sw * C, full, k), w));
            s3 = _mm256_add_ps(s3, _mm256_mul_ps(Load(xp + 3 * a.sw * C, full, k), w));
          }
        }
        if (a.bias) {
          s0 = _mm256_add_ps(s0, bv);
          s1 = _mm256_add_ps(s1, bv);
          s2 = _mm256_add_ps(s2, bv);
          s3 = _mm256_add_ps(s3, bv);
        }
        float* yp = a.y + (r * a.OW + ox) * C + c;
        Store(yp, s0, full, k);
        Store(yp + C, s1, full, k);
        Store(yp + 2 * C, s2, full, k);
        Store(yp + 3 * C, s3, full, k);
        ox += 4;
      }
    }
  }
}

}  // namespace avx2
}  // namespace lowbit
