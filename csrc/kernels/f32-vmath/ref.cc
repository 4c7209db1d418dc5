// Scalar row functions (the reference; see f32_vmath.h).
#include <cmath>

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

void f32_softmax_pre_row__scalar(const float* x, float* y, int64_t n, const SoftmaxPre& pre) {
  for (int64_t i = 0; i < n; ++i) {
    float t = x[i];
    if (pre.scale_op == 1) t = t * pre.scale;
    else if (pre.scale_op == 2) t = t / pre.scale;
    if (pre.add) t = t + pre.add[pre.add_bcast ? 0 : i];
    y[i] = t;
  }
  f32_softmax_row__scalar(y, y, n);
}

// 0.5 x erfc(-x / sqrt 2) in double, rounded once: within 1 ulp of the exact value
// for every float (the float form 0.5 x (1 + erf(x / sqrt 2)) loses most of its
// bits to cancellation below x = -3).
void f32_gelu__scalar(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double v = x[i];
    y[i] = float(0.5 * v * std::erfc(-v * 0.70710678118654752440));
  }
}

}  // namespace ref

}  // namespace lowbit
