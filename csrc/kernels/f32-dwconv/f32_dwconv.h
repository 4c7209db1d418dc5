// Direct depthwise convolution, NHWC, fp32: one filter per channel, so there is
// no reduction across channels for a GEMM to exploit; the loop runs along the
// contiguous channel axis instead (vectorizes without any packing).
//
// Each output is acc = 0; for ky, for kx (in-bounds taps only): acc += x * w;
// then + bias. The order is fixed, so results do not depend on the thread split.
#pragma once
#include <cstdint>

namespace lowbit {

struct F32DwConvArgs {
  const float* x;      // [N, H, W, C]
  const float* w;      // [kh, kw, C]
  const float* bias;   // [C] or nullptr
  float* y;            // [N, OH, OW, C]
  int64_t N, H, W, C, OH, OW;
  int64_t kh, kw, sh, sw, dh, dw, pt, pl;
};

// Computes output rows r in [r0, r1), r = n * OH + oy. `acc` holds C floats.
void f32_dwconv_nhwc__scalar(const F32DwConvArgs& a, int64_t r0, int64_t r1, float* acc);

}  // namespace lowbit
