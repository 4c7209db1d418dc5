// Scalar reference of the activation quantizer (see qs8_quant.h for the definition).
#include <cmath>

#include "qs8_quant.h"

namespace lowbit {
namespace ref {

void qs8_quant__scalar(const Qs8QuantArgs& a, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* x = a.x + r * a.ldx;
    int8_t* q = a.q + r * a.ldq;
    float amax = 0.0f;
    for (int64_t k = 0; k < a.K; ++k) {
      const float v = std::fabs(x[k]);
      amax = v > amax ? v : amax;  // NaN never compares greater: ignored, as in max_ps(v, amax)
    }
    a.scale[r] = amax / 127.0f;
    const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    const int8_t off = a.bias128 ? int8_t(-128) : int8_t(0);  // +128 mod 256 == flip the top bit
    for (int64_t k = 0; k < a.K; ++k) {
      float v = x[k] * inv;
      v = v > -127.0f ? v : -127.0f;
      v = v < 127.0f ? v : 127.0f;
      q[k] = int8_t(int(std::nearbyint(v)) ^ off);
    }
    for (int64_t k = a.K; k < a.Kp; ++k) q[k] = off;
    if (a.gsum != nullptr) {
      int32_t* gs = a.gsum + r * a.ngroups;
      for (int64_t g = 0; g < a.ngroups; ++g) {
        int32_t s = 0;
        const int64_t k1 = (g + 1) * a.group < a.K ? (g + 1) * a.group : a.K;
        for (int64_t k = g * a.group; k < k1; ++k) s += int32_t(int8_t(q[k] ^ off));
        gs[g] = s;
      }
    }
  }
}

}  // namespace ref
}  // namespace lowbit
