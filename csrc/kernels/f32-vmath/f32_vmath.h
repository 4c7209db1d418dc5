// Vectorized fp32 row functions for the transformer ops: softmax over one
// contiguous row, and exact-form GELU (0.5 x (1 + erf(x / sqrt 2))).
//
// The scalar versions (ref.cc) use libm; the AVX-512 versions use polynomial
// exp / erfc (relative error ~1e-7), so ISAs agree within a tolerance, not bit for
// bit (tests/native/kernels_test.cc, test_vmath):
//   softmax: |y - ref| <= (2e-6 + n * 2^-24) * |ref| + 1e-37: the reference sums the
//     row one by one, AVX-512 in 16 lanes and then a tree;
//   GELU: |y - ref| <= 1e-6 + 4 ulp(ref): the reference's float 1 + erf(x / sqrt 2)
//     cancels for x < 0 (absolute error up to ~5e-7; -0 below x = -5.9). AVX-512's
//     erfc form has no cancellation: relative error <= 3e-5 against GELU in double
//     (measured: <= 6 ulp for |x| <= 1, 1.5e-5 at x = -13, where exp(-x^2 / 2)
//     amplifies the rounding of x / sqrt 2).
// Each result is independent of how rows are split over threads (softmax sums
// each row in one fixed order per ISA).
#pragma once
#include <cstdint>

namespace lowbit {

using F32RowFn = void (*)(const float* x, float* y, int64_t n);

struct VMathKernels {
  F32RowFn softmax_row;  // y = softmax(x) over n contiguous values (x may equal y)
  const char* softmax_name;
  F32RowFn gelu;         // y[i] = gelu(x[i]) (x may equal y)
  const char* gelu_name;
};

// The implementation matching the selected dispatch table's ISA.
const VMathKernels& vmath();

namespace ref {
void f32_softmax_row__scalar(const float* x, float* y, int64_t n);
void f32_gelu__scalar(const float* x, float* y, int64_t n);
}  // namespace ref
namespace avx512 {
void f32_softmax_row__avx512(const float* x, float* y, int64_t n);
void f32_gelu__avx512(const float* x, float* y, int64_t n);
}  // namespace avx512

}  // namespace lowbit
