// Scalar reference fp32 SELL-8 matmul: the definition every ISA reproduces (see f32_spmm.h).
#include <cmath>

#include "f32_spmm.h"

namespace lowbit {
namespace ref {

void f32_spmm_s8__scalar(const F32SpmmArgs& a, int64_t m0, int64_t m1, int64_t s0, int64_t s1) {
  const SellMatrix& w = *a.W;
  const float* val = reinterpret_cast<const float*>(w.val);
  for (int64_t m = m0; m < m1; ++m) {
    const float* x = a.A + m * a.lda;
    for (int64_t s = s0; s < s1; ++s)
      for (int64_t j = 0; j < kSellC; ++j) {
        const uint32_t n = w.perm[s * kSellC + j];
        if (n == kSellNoColumn) continue;
        float acc = 0.0f;
        for (int64_t t = w.slice[s]; t < int64_t(w.slice[s + 1]); ++t)
          acc = std::fma(x[w.idx[t * kSellC + j]], val[t * kSellC + j], acc);
        float y = acc;
        if (a.bias) y = y + a.bias[n];
        if (a.act == Activation::kRelu) y = (0.0f > y) ? 0.0f : y;
        a.C[m * a.ldc + n] = y;
      }
  }
}

}  // namespace ref
}  // namespace lowbit
