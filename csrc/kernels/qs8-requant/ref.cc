// Scalar reference of the requantization (see qs8_requant.h for the definition).
#include <cmath>

#include "qs8_requant.h"

namespace lowbit {
namespace ref {

void qs8_requant__scalar(const Qs8RequantArgs& a, int64_t m0, int64_t m1) {
  const float lo = float(a.lo - a.out_zp), hi = float(a.hi - a.out_zp);
  const float mlo = float(-128 - a.mid_zp), mhi = float(127 - a.mid_zp);
  for (int64_t m = m0; m < m1; ++m) {
    const float* y = a.y + m * a.ldy;
    const int8_t* r = a.r ? a.r + m * a.ldr : nullptr;
    int8_t* q = a.q + m * a.ldq;
    for (int64_t n = 0; n < a.N; ++n) {
      float v = y[n] * a.mult[n];
      if (r) {
        if (a.two_step) {
          v = v > mlo ? v : mlo;  // (v > lo ? v : lo) is max_ps(v, lo): the same choice for NaN
          v = v < mhi ? v : mhi;
          v = std::nearbyint(v) * a.mid_mult;
        }
        v = v + float(int32_t(r[n]) - a.r_zp) * a.r_mult;
      }
      v = v > lo ? v : lo;
      v = v < hi ? v : hi;
      q[n] = int8_t(int32_t(std::nearbyint(v)) + a.out_zp);
    }
  }
}

}  // namespace ref
}  // namespace lowbit
