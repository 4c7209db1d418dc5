// Direct depthwise convolution, NHWC, AVX-512 (see f32_dwconv.h): 16 channels
// per vector; multiply and add kept separate so the result equals ref.cc's.
// Compile with: -mavx512f -mavx512bw -mavx512dq -mavx512vl -mfma
#include "kernels/common/avx512.h"

#include "f32_dwconv.h"

namespace lowbit {
namespace avx512 {

void f32_dwconv_nhwc__avx512(const F32DwConvArgs& a, int64_t r0, int64_t r1, float* acc) {
  (void)acc;  // accumulators live in registers here
  constexpr int64_t kMaxTaps = 25;  // up to 5x5: the block's weights stay in registers / L1 across a row
  const int64_t C = a.C, taps = a.kh * a.kw;
  __m512 wv[kMaxTaps];
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / a.OH, oy = r % a.OH;
    // kernel rows inside the image for this output row (the same for every ox)
    int64_t ky0 = 0, ky1 = a.kh;
    while (ky0 < a.kh && oy * a.sh - a.pt + ky0 * a.dh < 0) ++ky0;
    while (ky1 > ky0 && oy * a.sh - a.pt + (ky1 - 1) * a.dh >= a.H) --ky1;
    for (int64_t c = 0; c < C; c += 16) {
      const __mmask16 k = C - c >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (C - c)) - 1u);
      const bool cached = taps <= kMaxTaps;
      if (cached)
        for (int64_t t = 0; t < taps; ++t) wv[t] = _mm512_maskz_loadu_ps(k, a.w + t * C + c);
      const __m512 bv = a.bias ? _mm512_maskz_loadu_ps(k, a.bias + c) : _mm512_setzero_ps();
      // One output pixel, taps checked against the image edges.
      auto one = [&](int64_t ox) {
        const int64_t ixb = ox * a.sw - a.pl;
        __m512 s = _mm512_setzero_ps();
        for (int64_t ky = ky0; ky < ky1; ++ky) {
          const int64_t iy = oy * a.sh - a.pt + ky * a.dh;
          const float* xrow = a.x + ((n * a.H + iy) * a.W) * C + c;
          for (int64_t kx = 0; kx < a.kw; ++kx) {
            const int64_t ix = ixb + kx * a.dw;
            if (ix < 0 || ix >= a.W) continue;
            const int64_t t = ky * a.kw + kx;
            const __m512 w = cached ? wv[t] : _mm512_maskz_loadu_ps(k, a.w + t * C + c);
            s = _mm512_add_ps(s, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, xrow + ix * C), w));
          }
        }
        if (a.bias) s = _mm512_add_ps(s, bv);
        _mm512_mask_storeu_ps(a.y + (r * a.OW + ox) * C + c, k, s);
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
        __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
        for (int64_t ky = ky0; ky < ky1; ++ky) {
          const int64_t iy = oy * a.sh - a.pt + ky * a.dh;
          const float* xp = a.x + ((n * a.H + iy) * a.W + ixb) * C + c;
          for (int64_t kx = 0; kx < a.kw; ++kx, xp += a.dw * C) {
            const int64_t t = ky * a.kw + kx;
            const __m512 w = cached ? wv[t] : _mm512_maskz_loadu_ps(k, a.w + t * C + c);
            s0 = _mm512_add_ps(s0, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, xp), w));
            s1 = _mm512_add_ps(s1, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, xp + a.sw * C), w));
            s2 = _mm512_add_ps(s2, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, xp + 2 * a.sw * C), w));
            s3 = _mm512_add_ps(s3, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, xp + 3 * a.sw * C), w));
          }
        }
        if (a.bias) {
          s0 = _mm512_add_ps(s0, bv);
          s1 = _mm512_add_ps(s1, bv);
          s2 = _mm512_add_ps(s2, bv);
          s3 = _mm512_add_ps(s3, bv);
        }
        float* yp = a.y + (r * a.OW + ox) * C + c;
        _mm512_mask_storeu_ps(yp, k, s0);
        _mm512_mask_storeu_ps(yp + C, k, s1);
        _mm512_mask_storeu_ps(yp + 2 * C, k, s2);
        _mm512_mask_storeu_ps(yp + 3 * C, k, s3);
        ox += 4;
      }
    }
  }
}

}  // namespace avx512
}  // namespace lowbit
