// Direct depthwise convolution, NHWC, AVX-512 (see f32_dwconv.h): 16 channels
// per vector; multiply and add kept separate so the result equals ref.cc's.
// Compile with: -mavx512f -mavx512bw -mavx512dq -mavx512vl -mfma
#include <immintrin.h>

#include "f32_dwconv.h"

namespace lowbit {
namespace avx512 {

void f32_dwconv_nhwc__avx512(const F32DwConvArgs& a, int64_t r0, int64_t r1, float* acc) {
  (void)acc;  // accumulators live in registers here
  const int64_t C = a.C;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / a.OH, oy = r % a.OH;
    for (int64_t ox = 0; ox < a.OW; ++ox) {
      float* yp = a.y + (r * a.OW + ox) * C;
      for (int64_t c = 0; c < C; c += 16) {
        const __mmask16 k = C - c >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (C - c)) - 1u);
        __m512 s = _mm512_setzero_ps();
        for (int64_t ky = 0; ky < a.kh; ++ky) {
          const int64_t iy = oy * a.sh - a.pt + ky * a.dh;
          if (iy < 0 || iy >= a.H) continue;
          for (int64_t kx = 0; kx < a.kw; ++kx) {
            const int64_t ix = ox * a.sw - a.pl + kx * a.dw;
            if (ix < 0 || ix >= a.W) continue;
            const __m512 xv = _mm512_maskz_loadu_ps(k, a.x + ((n * a.H + iy) * a.W + ix) * C + c);
            const __m512 wv = _mm512_maskz_loadu_ps(k, a.w + (ky * a.kw + kx) * C + c);
            s = _mm512_add_ps(s, _mm512_mul_ps(xv, wv));
          }
        }
        if (a.bias) s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(k, a.bias + c));
        _mm512_mask_storeu_ps(yp + c, k, s);
      }
    }
  }
}

}  // namespace avx512
}  // namespace lowbit
