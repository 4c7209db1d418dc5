// Scalar row functions (the reference; see f32_vmath.h).
#include <cmath>

#include "cpu/dispatch.h"
#include "f32_vmath.h"

namespace lowbit {
namespace ref {

void f32_softmax_row__scalar(const float* x, float* y, int64_t n) {
  float m = -INFINITY;
  bool nan = false;
  for (int64_t i = 0; i < n; ++i) {
    nan |= std::isnan(x[i]);
    m = x[i] > m ? x[i] : m;
  }
  if (nan) {
    for (int64_t i = 0; i < n; ++i) y[i] = NAN;
    return;
  }
  if (std::isinf(m)) m = m > 0 ? m : 0.f;  // all -inf: exp gives 0s, sum 0 -> NaN like the reference
  float sum = 0.f;
  for (int64_t i = 0; i < n; ++i) {
    const float e = std::exp(x[i] - m);
    y[i] = e;
    sum += e;
  }
  const float inv = 1.f / sum;
  for (int64_t i = 0; i < n; ++i) y[i] *= inv;
}

void f32_gelu__scalar(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = 0.5f * x[i] * (1.f + std::erf(x[i] * 0.70710678118654752f));
}

}  // namespace ref

const VMathKernels& vmath() {
  static const VMathKernels scalar{&ref::f32_softmax_row__scalar, "f32_softmax_row__scalar", &ref::f32_gelu__scalar,
                                   "f32_gelu__scalar"};
#if defined(LOWBIT_X86)
  static const VMathKernels avx512{&avx512::f32_softmax_row__avx512, "f32_softmax_row__avx512",
                                   &avx512::f32_gelu__avx512, "f32_gelu__avx512"};
  // keyed on the selected table, so LOWBIT_ISA forces these paths too
  if (kernels().isa == Isa::kAvx512Vnni) return avx512;
#endif
  return scalar;
}

}  // namespace lowbit
