// 2-D max pooling, NHWC, fp32: the window slides over pixels and the loop runs along the
// contiguous channel axis (vectorizes without any packing, like the depthwise kernels).
//
// Each output is m = -inf; for ky, for kx (in-bounds taps only): m = (x > m) ? x : m.
// That rule is SIMD max(x, m) (which returns m when either is NaN): a NaN input is skipped,
// as in the reference, on every ISA; with no tap inside the image the output is -inf.
#pragma once
#include <cstdint>

namespace lowbit {

struct F32MaxPoolArgs {
  const float* x;  // [N, H, W, C]
  float* y;        // [N, OH, OW, C]
  int64_t N, H, W, C, OH, OW;
  int64_t kh, kw, sh, sw, dh, dw, pt, pl;
};

// Computes output rows r in [r0, r1), r = n * OH + oy.
using F32MaxPoolFn = void (*)(const F32MaxPoolArgs& a, int64_t r0, int64_t r1);
void f32_maxpool_nhwc__scalar(const F32MaxPoolArgs& a, int64_t r0, int64_t r1);
namespace avx2 {
void f32_maxpool_nhwc__avx2(const F32MaxPoolArgs& a, int64_t r0, int64_t r1);
}
namespace avx512 {
void f32_maxpool_nhwc__avx512(const F32MaxPoolArgs& a, int64_t r0, int64_t r1);
}

struct F32MaxPoolKernel {
  F32MaxPoolFn fn;
  const char* name;
};

}  // namespace lowbit
