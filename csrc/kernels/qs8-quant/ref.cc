// Scalar reference of the activation quantizer (see qs8_quant.h for the definitions).
#include <cmath>

#include "qs8_quant.h"

namespace lowbit {
namespace ref {
namespace {

// Quantizes one row given its amax; `skip` (n entries, -1 = none) are written as code 0.
void quant_row(const Qs8QuantArgs& a, int64_t r, float amax, const int32_t* skip, int64_t nskip) {
  const float* x = a.x + r * a.ldx;
  int8_t* q = a.q + r * a.ldq;
  a.scale[r] = amax / 127.0f;
  const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
  const int8_t off = a.bias128 ? int8_t(-128) : int8_t(0);  // +128 mod 256 == flip the top bit
  for (int64_t k = 0; k < a.K; ++k) {
    float v = x[k] * inv;
    v = v > -127.0f ? v : -127.0f;
    v = v < 127.0f ? v : 127.0f;
    q[k] = int8_t(int(std::nearbyint(v)) ^ off);
  }
  for (int64_t j = 0; j < nskip; ++j)
    if (skip[j] >= 0) q[skip[j]] = off;
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

bool chosen(const int32_t* idx, int64_t n, int64_t k) {
  for (int64_t j = 0; j < n; ++j)
    if (idx[j] == k) return true;
  return false;
}

// max |x[k]| over k not in idx[0..n), NaN ignored (it never compares greater)
float max_rest(const float* x, int64_t K, const int32_t* idx, int64_t n) {
  float m = 0.0f;
  for (int64_t k = 0; k < K; ++k) {
    const float v = std::fabs(x[k]);
    if (v > m && !chosen(idx, n, k)) m = v;
  }
  return m;
}

}  // namespace

void qs8_quant__scalar(const Qs8QuantArgs& a, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) quant_row(a, r, max_rest(a.x + r * a.ldx, a.K, nullptr, 0), nullptr, 0);
}

void qs8_quant_split__scalar(const Qs8QuantArgs& a, const Qs8SplitOut& o, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* x = a.x + r * a.ldx;
    int32_t* idx = o.idx + r * o.outliers;
    float* val = o.val + r * o.outliers;
    int64_t n = 0;  // outliers chosen so far
    for (int64_t j = 0; j < o.outliers; ++j) {
      idx[j] = -1;
      val[j] = 0.0f;
    }
    while (n < o.outliers) {
      const float m = max_rest(x, a.K, idx, n);
      if (!(m > 0.0f)) break;
      int64_t k = 0;
      while (std::fabs(x[k]) != m || chosen(idx, n, k)) ++k;  // exists: m is some |x[k]|
      idx[n] = int32_t(k);
      val[n] = x[k];
      ++n;
    }
    quant_row(a, r, max_rest(x, a.K, idx, n), idx, n);
  }
}

}  // namespace ref
}  // namespace lowbit
