// Scalar reference int8 GEMM: the definition every ISA kernel reproduces (see qs8_gemm.h).
#include "qs8_gemm.h"

namespace lowbit {
namespace ref {

void qs8_gemm_1x16__scalar(const Qs8GemmArgs& a, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  const int64_t Kp = qs8_kp(a.K), P = (a.N + 15) / 16;
  const int8_t* W = reinterpret_cast<const int8_t*>(a.W);
  const float* wscale = reinterpret_cast<const float*>(a.W + P * Kp * 16);
  for (int64_t m = m0; m < m1; ++m) {
    const int8_t* x = a.A + m * a.lda;
    for (int64_t n = n0; n < n1; ++n) {
      const int8_t* wp = W + (n / 16) * Kp * 16 + (n % 16) * 4;
      int32_t acc = 0;
      for (int64_t k = 0; k < a.K; ++k) acc += int32_t(x[k]) * int32_t(wp[(k / 4) * 64 + k % 4]);
      float y = float(acc) * (a.a_scale[m] * wscale[n]);
      if (a.bias != nullptr) y = y + a.bias[n];
      // (0 > y) ? 0 : y keeps -0 and NaN, the same as SIMD max(0, y) with 0 as first operand.
      if (a.act == Activation::kRelu) y = (0.0f > y) ? 0.0f : y;
      a.C[m * a.ldc + n] = y;
    }
  }
}

}  // namespace ref
}  // namespace lowbit
