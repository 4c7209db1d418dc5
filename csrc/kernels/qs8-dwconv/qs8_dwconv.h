// Direct int8 depthwise convolution, NHWC: one filter per channel, so the loop runs
// along the contiguous channel axis (no GEMM). Requantization is fused.
//
// Definition (the scalar reference is the truth; every ISA reproduces it bit for bit):
//   acc = bias[c] + sum over in-bounds taps (ky, kx) of (x[n, iy, ix, c] - x_zp) * w[ky, kx, c]
//         (exact int32; padding is the real value 0, i.e. the code x_zp, and contributes 0)
//   v = float(acc) * mult[c];  v = max(v, lo - out_zp);  v = min(v, hi - out_zp)
//   y[n, oy, ox, c] = int(rint(v)) + out_zp
// Bounds that keep acc exact: |x - x_zp| <= 255, |w| <= 127, kh*kw <= 16384, |bias| < 2^30.
#pragma once
#include <cstdint>

namespace lowbit {

struct Qs8DwConvArgs {
  const int8_t* x;      // [N, H, W, C]
  const int8_t* w;      // [kh, kw, C], codes in [-127, 127]
  const int32_t* bias;  // [C] or nullptr
  const float* mult;    // [C]: x_scale * w_scale[c] / y_scale
  int8_t* y;            // [N, OH, OW, C]
  int64_t N, H, W, C, OH, OW;
  int64_t kh, kw, sh, sw, dh, dw, pt, pl;
  int32_t x_zp, out_zp, lo, hi;
};

// Output rows r in [r0, r1), r = n * OH + oy. Thread-safe on disjoint rows. `scratch`:
// qs8_dwconv_scratch_bytes(C, kh * kw) bytes, 64-byte aligned, private to the caller's thread.
using Qs8DwConvFn = void (*)(const Qs8DwConvArgs& a, int64_t r0, int64_t r1, void* scratch);

// Per-call working memory of any implementation: int32 accumulators (C), the
// interleaved int16 weights of the SIMD kernels (C/16 blocks x tap pairs x 64 bytes)
// and one pointer per tap.
inline int64_t qs8_dwconv_scratch_bytes(int64_t C, int64_t taps) {
  const int64_t pairs = (taps + 1) / 2;
  return (C * 4 + 63) / 64 * 64 + (C / 16) * pairs * 64 + 2 * pairs * 8 + 64;
}

namespace ref {
void qs8_dwconv_nhwc__scalar(const Qs8DwConvArgs& a, int64_t r0, int64_t r1, void* scratch);
}
namespace avx2 {
void qs8_dwconv_nhwc_16c__avx2(const Qs8DwConvArgs& a, int64_t r0, int64_t r1, void* scratch);
}

}  // namespace lowbit
