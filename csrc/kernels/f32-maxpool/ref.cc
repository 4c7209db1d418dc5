// Scalar reference max pooling (see f32_maxpool.h): the definition every ISA reproduces.
#include <cmath>

#include "f32_maxpool.h"

namespace lowbit {

void f32_maxpool_nhwc__scalar(const F32MaxPoolArgs& a, int64_t r0, int64_t r1) {
  constexpr int64_t kBlock = 32;  // channels kept in a local block across the window
  const int64_t C = a.C;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / a.OH, oy = r % a.OH;
    for (int64_t ox = 0; ox < a.OW; ++ox) {
      float* yp = a.y + (r * a.OW + ox) * C;
      for (int64_t c0 = 0; c0 < C; c0 += kBlock) {
        const int64_t w = C - c0 < kBlock ? C - c0 : kBlock;
        float m[kBlock];
        for (int64_t j = 0; j < kBlock; ++j) m[j] = -INFINITY;
        for (int64_t ky = 0; ky < a.kh; ++ky) {
          const int64_t iy = oy * a.sh - a.pt + ky * a.dh;
          if (iy < 0 || iy >= a.H) continue;
          for (int64_t kx = 0; kx < a.kw; ++kx) {
            const int64_t ix = ox * a.sw - a.pl + kx * a.dw;
            if (ix < 0 || ix >= a.W) continue;
            const float* xp = a.x + ((n * a.H + iy) * a.W + ix) * C + c0;
            for (int64_t j = 0; j < w; ++j) m[j] = xp[j] > m[j] ? xp[j] : m[j];
          }
        }
        for (int64_t j = 0; j < w; ++j) yp[c0 + j] = m[j];
      }
    }
  }
}

}  // namespace lowbit
