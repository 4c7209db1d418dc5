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
// Every path multiplies and adds separately (no FMA) in the same tap order, so
// all ISAs give the same bits.
using F32DwConvFn = void (*)(const F32DwConvArgs& a, int64_t r0, int64_t r1, float* acc);
void f32_dwconv_nhwc__scalar(const F32DwConvArgs& a, int64_t r0, int64_t r1, float* acc);
namespace avx2 {
void f32_dwconv_nhwc__avx2(const F32DwConvArgs& a, int64_t r0, int64_t r1, float* acc);
}
namespace avx512 {
void f32_dwconv_nhwc__avx512(const F32DwConvArgs& a, int64_t r0, int64_t r1, float* acc);
}

struct F32DwConvKernel {
  F32DwConvFn fn;
  const char* name;
};
// The selected dispatch table's entry (kernels().f32_dwconv; defined in cpu/dispatch.cc).
F32DwConvKernel f32_dwconv_kernel();

}  // namespace lowbit
