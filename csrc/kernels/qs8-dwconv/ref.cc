// Scalar reference of the int8 depthwise convolution (see qs8_dwconv.h).
#include <cmath>

#include "qs8_dwconv.h"

namespace lowbit {
namespace ref {

void qs8_dwconv_nhwc__scalar(const Qs8DwConvArgs& a, int64_t r0, int64_t r1, void* scratch) {
  const int64_t C = a.C;
  const float lo = float(a.lo - a.out_zp), hi = float(a.hi - a.out_zp);
  int32_t* acc = static_cast<int32_t*>(scratch);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / a.OH, oy = r % a.OH;
    for (int64_t ox = 0; ox < a.OW; ++ox) {
      for (int64_t c = 0; c < C; ++c) acc[c] = a.bias ? a.bias[c] : 0;
      for (int64_t ky = 0; ky < a.kh; ++ky) {
        const int64_t iy = oy * a.sh - a.pt + ky * a.dh;
        if (iy < 0 || iy >= a.H) continue;
        for (int64_t kx = 0; kx < a.kw; ++kx) {
          const int64_t ix = ox * a.sw - a.pl + kx * a.dw;
          if (ix < 0 || ix >= a.W) continue;
          const int8_t* xp = a.x + ((n * a.H + iy) * a.W + ix) * C;
          const int8_t* wp = a.w + (ky * a.kw + kx) * C;
          for (int64_t c = 0; c < C; ++c) acc[c] += (int32_t(xp[c]) - a.x_zp) * int32_t(wp[c]);
        }
      }
      int8_t* yp = a.y + (r * a.OW + ox) * C;
      for (int64_t c = 0; c < C; ++c) {
        float v = float(acc[c]) * a.mult[c];
        v = v > lo ? v : lo;
        v = v < hi ? v : hi;
        yp[c] = int8_t(int32_t(std::nearbyint(v)) + a.out_zp);
      }
    }
  }
}

}  // namespace ref
}  // namespace lowbit
