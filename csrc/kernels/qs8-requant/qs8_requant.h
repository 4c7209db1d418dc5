// Requantization: the float output block of an int8 layer (an integer GEMM's exact sums
// plus bias, as float) to the int8 codes of the next layer, with the activation clamp and
// an optional int8 residual fused. Activations are int8 codes q with a per-tensor scale s
// and zero point z: real = s * (q - z).
//
// Definition (the scalar reference is the truth; every ISA reproduces it bit for bit):
//   v = y[m, n] * mult[n]
//   with a residual r:
//     two_step:  t = clamp(v, -128 - mid_zp, 127 - mid_zp);  v = rint(t) * mid_mult
//                (the layer's own output rounded to its grid first, as ONNX Runtime's
//                QLinearConv followed by QLinearAdd computes it)
//     v = v + float(r[m, n] - r_zp) * r_mult
//   v = max(v, float(lo - out_zp));  v = min(v, float(hi - out_zp))
//   q[m, n] = int(rint(v)) + out_zp               rint = round half to even
// lo..hi is the code range of the output (within [-128, 127]); a fused ReLU is lo = out_zp,
// ReLU6 also hi = the code of 6.
#pragma once
#include <cstdint>

namespace lowbit {

struct Qs8RequantArgs {
  int64_t N;            // columns
  const float* y;       // rows of N floats, row stride ldy
  int64_t ldy;
  const float* mult;    // N per-channel multipliers
  int32_t out_zp, lo, hi;
  const int8_t* r;      // residual rows (row stride ldr) or nullptr
  int64_t ldr;
  int32_t r_zp;
  float r_mult;
  bool two_step;
  int32_t mid_zp;
  float mid_mult;
  int8_t* q;            // output rows, row stride ldq
  int64_t ldq;
};

// Rows [m0, m1). Thread-safe on disjoint rows.
using Qs8RequantFn = void (*)(const Qs8RequantArgs& a, int64_t m0, int64_t m1);

namespace ref {
void qs8_requant__scalar(const Qs8RequantArgs& a, int64_t m0, int64_t m1);
}
namespace avx2 {
void qs8_requant__avx2(const Qs8RequantArgs& a, int64_t m0, int64_t m1);
}

}  // namespace lowbit
