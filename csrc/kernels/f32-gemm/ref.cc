// Scalar reference fp32 GEMM: the definition of the results every ISA kernel must reproduce.
//   acc = 0; for k in 0..K-1: acc = fma(A[m,k], B[k,n], acc);  y = acc (+ bias[n]) (+ res[m,n]);  y = act(y)
#include <cmath>

#include "common.h"
#include "f32_gemm.h"

namespace lowbit {
namespace ref {

namespace {

// GELU computed in double from the float input and rounded once: the correctly rounded
// value except in rare near-tie cases. erfc(-x/sqrt2) avoids the cancellation 1+erf(x) has
// for negative x, so tiny negative outputs are accurate too.
float gelu(float x) {
  const double xd = static_cast<double>(x);
  return static_cast<float>(0.5 * xd * std::erfc(-xd * 0.70710678118654752440));
}

}  // namespace

void f32_gemm_1x16__scalar(const F32GemmArgs& a, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  const int64_t K = a.K;
  for (int64_t m = m0; m < m1; ++m) {
    const float* arow = f32_gemm_a_row(a, m);
    float* crow = a.C + m * a.ldc;
    for (int64_t nb = n0; nb < n1; nb += kF32GemmNR) {
      const int64_t w = n1 - nb < kF32GemmNR ? n1 - nb : kF32GemmNR;
      const float* bp = a.Bp + (nb / kF32GemmNR) * K * kF32GemmNR;
      float acc[kF32GemmNR];
      for (int64_t j = 0; j < kF32GemmNR; ++j) acc[j] = 0.0f;
      for (int64_t k = 0; k < K; ++k) {
        const float av = arow[f32_gemm_a_col(a, k)];
        const float* bk = bp + k * kF32GemmNR;
        for (int64_t j = 0; j < w; ++j) acc[j] = std::fma(av, bk[j], acc[j]);
      }
      for (int64_t j = 0; j < w; ++j) {
        float y = acc[j];
        if (a.bias != nullptr) y = y + a.bias[nb + j];
        if (a.res != nullptr) y = y + a.res[m * a.ldr + nb + j];
        switch (a.act) {
          case Activation::kNone: break;
          // (0 > y) ? 0 : y keeps -0 and NaN, the same as SIMD max(0, y) with 0 as first operand.
          case Activation::kRelu: y = (0.0f > y) ? 0.0f : y; break;
          case Activation::kGelu: y = gelu(y); break;
        }
        crow[nb + j] = y;
      }
    }
  }
}

}  // namespace ref
}  // namespace lowbit
