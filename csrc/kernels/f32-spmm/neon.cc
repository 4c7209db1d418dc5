// NEON fp32 SELL-8 matmul (see f32_spmm.h). Compile with: -march=armv8.2-a+dotprod+fp16
//
// NEON has no gather: the 4 lanes of each half-step are loaded one by one into a
// q register, then one fused vfmaq adds them (the reference's per-lane FMA chain).
#include <arm_neon.h>

#include "f32_spmm.h"

namespace lowbit {
namespace neon {
namespace {

inline float32x4_t Gather4(const float* x, const uint16_t* idx) {
  float32x4_t v = vdupq_n_f32(0.0f);
  v = vld1q_lane_f32(x + idx[0], v, 0);
  v = vld1q_lane_f32(x + idx[1], v, 1);
  v = vld1q_lane_f32(x + idx[2], v, 2);
  v = vld1q_lane_f32(x + idx[3], v, 3);
  return v;
}

template <int MR>
void Slice(const F32SpmmArgs& a, int64_t m, int64_t s) {
  const SellMatrix& w = *a.W;
  const float* val = reinterpret_cast<const float*>(w.val);
  const float* x[MR];
  float32x4_t acc[MR][2];
  for (int r = 0; r < MR; ++r) {
    x[r] = a.A + (m + r) * a.lda;
    acc[r][0] = acc[r][1] = vdupq_n_f32(0.0f);
  }
  const int64_t t1 = w.slice[s + 1];
  for (int64_t t = w.slice[s]; t < t1; ++t) {
    const uint16_t* idx = w.idx + t * kSellC;
    const float32x4_t v0 = vld1q_f32(val + t * kSellC), v1 = vld1q_f32(val + t * kSellC + 4);
    for (int r = 0; r < MR; ++r) {
      acc[r][0] = vfmaq_f32(acc[r][0], Gather4(x[r], idx), v0);
      acc[r][1] = vfmaq_f32(acc[r][1], Gather4(x[r], idx + 4), v1);
    }
  }
  const uint32_t* perm = w.perm + s * kSellC;
  for (int r = 0; r < MR; ++r) {
    float out[8];
    vst1q_f32(out, acc[r][0]);
    vst1q_f32(out + 4, acc[r][1]);
    float* c = a.C + (m + r) * a.ldc;
    for (int j = 0; j < kSellC; ++j) {
      const uint32_t n = perm[j];
      if (n == kSellNoColumn) continue;
      float y = out[j];
      if (a.bias) y = y + a.bias[n];
      if (a.act == Activation::kRelu) y = (0.0f > y) ? 0.0f : y;
      c[n] = y;
    }
  }
}

}  // namespace

void f32_spmm_s8m4__neon(const F32SpmmArgs& a, int64_t m0, int64_t m1, int64_t s0, int64_t s1) {
  for (int64_t s = s0; s < s1; ++s) {
    int64_t m = m0;
    for (; m + 4 <= m1; m += 4) Slice<4>(a, m, s);
    switch (m1 - m) {
      case 1: Slice<1>(a, m, s); break;
      case 2: Slice<2>(a, m, s); break;
      case 3: Slice<3>(a, m, s); break;
      default: break;
    }
  }
}

}  // namespace neon
}  // namespace lowbit
