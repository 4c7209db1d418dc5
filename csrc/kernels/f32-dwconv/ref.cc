// Direct depthwise convolution (see f32_dwconv.h). Plain C++ over the channel
// axis: the compiler vectorizes the inner loops at the baseline ISA.
#include <cstring>

#include "f32_dwconv.h"

namespace lowbit {

void f32_dwconv_nhwc__scalar(const F32DwConvArgs& a, int64_t r0, int64_t r1, float* acc) {
  const int64_t C = a.C;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / a.OH, oy = r % a.OH;
    for (int64_t ox = 0; ox < a.OW; ++ox) {
      for (int64_t c = 0; c < C; ++c) acc[c] = 0.f;
      for (int64_t ky = 0; ky < a.kh; ++ky) {
        const int64_t iy = oy * a.sh - a.pt + ky * a.dh;
        if (iy < 0 || iy >= a.H) continue;
        for (int64_t kx = 0; kx < a.kw; ++kx) {
          const int64_t ix = ox * a.sw - a.pl + kx * a.dw;
          if (ix < 0 || ix >= a.W) continue;
          const float* xp = a.x + ((n * a.H + iy) * a.W + ix) * C;
          const float* wp = a.w + (ky * a.kw + kx) * C;
          for (int64_t c = 0; c < C; ++c) acc[c] += xp[c] * wp[c];
        }
      }
      float* yp = a.y + (r * a.OW + ox) * C;
      if (a.bias) for (int64_t c = 0; c < C; ++c) yp[c] = acc[c] + a.bias[c];
      else std::memcpy(yp, acc, size_t(C) * 4);
    }
  }
}

}  // namespace lowbit
