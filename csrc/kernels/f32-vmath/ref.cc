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

namespace {
constexpr int kLnLanes = 32;

// The fold of the 32 lane sums, then the tail, as f32_vmath.h specifies.
float fold_lanes(const float* lane) {
  float t[8];
  for (int j = 0; j < 8; ++j) {
    const float u0 = lane[j] + lane[j + 16];
    const float u1 = lane[j + 8] + lane[j + 24];
    t[j] = u0 + u1;
  }
  float sum = 0.f;
  for (int j = 0; j < 8; ++j) sum += t[j];
  return sum;
}
}  // namespace

void f32_layernorm_row__scalar(const float* x, const float* skip, float* y, int64_t n, const LayerNormParams& p,
                               float* mean_out, float* istd_out) {
  const float* s = x;
  if (skip) {
    for (int64_t k = 0; k < n; ++k) y[k] = x[k] + skip[k];
    s = y;
  }
  const int64_t full = n - n % kLnLanes;
  float lane[kLnLanes] = {};
  for (int64_t k = 0; k < full; k += kLnLanes)
    for (int j = 0; j < kLnLanes; ++j) lane[j] += s[k + j];
  float sum = fold_lanes(lane);
  for (int64_t k = full; k < n; ++k) sum += s[k];
  const float mean = sum / float(n);
  float vl[kLnLanes] = {};
  for (int64_t k = 0; k < full; k += kLnLanes)
    for (int j = 0; j < kLnLanes; ++j) {
      const float d = s[k + j] - mean;
      vl[j] += d * d;
    }
  float var = fold_lanes(vl);
  for (int64_t k = full; k < n; ++k) {
    const float d = s[k] - mean;
    var += d * d;
  }
  const float istd = 1.f / std::sqrt(var / float(n) + p.eps);
  if (p.beta)
    for (int64_t k = 0; k < n; ++k) y[k] = (s[k] - mean) * istd * p.gamma[k] + p.beta[k];
  else
    for (int64_t k = 0; k < n; ++k) y[k] = (s[k] - mean) * istd * p.gamma[k];
  if (mean_out) *mean_out = mean;
  if (istd_out) *istd_out = istd;
}

}  // namespace ref

}  // namespace lowbit
