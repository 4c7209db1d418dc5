// One row of a packed quantized weight, scaled and added to an output row: the float part of
// the outlier split (qs8_quant.h), y[n] += v * W[k, n], for a "qs8-n16k4" or q4 weight.
//
// Definition (scalar reference; every ISA gives the same bits):
//   w = float(code) * scale        qs8: code = Wq[k, n], scale = w_scale[n] (f32)
//                                  q4: code = u - z (affine; z = 8 when symmetric) or T[u]
//                                      (table), scale = f16 s[n, k / G] widened exactly
//   y[n] = fma(v, w, y[n])         for n in [n0, n1), n0 a multiple of 16
#pragma once
#include <cstdint>

#include "kernels/q4-gemm/q4_gemm.h"

namespace lowbit {

struct QwView {
  bool q4;          // else qs8-n16k4
  Q4Layout lay;     // q4 only
  int64_t K, N;
  const uint8_t* W;
};

using QwAxpyFn = void (*)(const QwView& w, int64_t k, float v, int64_t n0, int64_t n1, float* y);

namespace ref {
void qw_axpy__scalar(const QwView& w, int64_t k, float v, int64_t n0, int64_t n1, float* y);
}
namespace avx2 {
void qw_axpy__avx2(const QwView& w, int64_t k, float v, int64_t n0, int64_t n1, float* y);
}
namespace avx512 {
void qw_axpy__avx512(const QwView& w, int64_t k, float v, int64_t n0, int64_t n1, float* y);
}

}  // namespace lowbit
