// Vectorized fp32 row functions for the transformer ops: softmax over one
// contiguous row, exact-form GELU (0.5 x (1 + erf(x / sqrt 2))), and layer
// normalization (bit-identical on every ISA; see LayerNormParams).
//
// The scalar versions (ref.cc, the truth) use libm (GELU as 0.5 x erfc(-x / sqrt 2)
// in double, within 1 ulp); the AVX2 and AVX-512 versions use the same polynomial
// exp / erfc (relative error ~1e-7) -- AVX-512's GELU with a refined vrcp14ps instead of
// the division, and its own operation order -- so they agree with the reference within a
// tolerance, not bit for bit (tests/kernels/test_f32_vmath.py
// per ISA in ulps, tests/native/kernels_test.cc test_vmath; docs/kernels.md):
//   softmax: <= 8 ulp from the exact softmax of the float differences for rows up
//     to 1024 (the reference sums the row one by one: <= 4 + n/32 ulp);
//   GELU: <= 8 ulp for x >= 0, <= 16 + 2 x^2 ulp for x < 0 (the rounding of the
//     exponent argument -x^2 / 2 is amplified by exp: 249 ulp at x = -12.5, where
//     gelu(x) ~ -1e-33).
// Each result is independent of how rows are split over threads (softmax sums
// each row in one fixed order per ISA).
#pragma once
#include <cstdint>

namespace lowbit {

using F32RowFn = void (*)(const float* x, float* y, int64_t n);

// What the Attention op applies to a row of scores before its softmax, in the unfused
// graph's order: t = x * scale (scale_op 1) or x / scale (scale_op 2) or x (0), then
// t = t + add[j] (add[0] for every j when add_bcast) unless add is null. Each step is
// one rounded float operation, so softmax_pre(x) has the bits of softmax_row applied
// to the separately computed t.
struct SoftmaxPre {
  int32_t scale_op;
  float scale;
  const float* add;
  bool add_bcast;
};
using F32SoftmaxPreFn = void (*)(const float* x, float* y, int64_t n, const SoftmaxPre& pre);

// Layer normalization of one row of n values: s = x (+ skip, when skip is not null, written
// to y first: the bits of a separate Add), mean and variance of s, then
// y = ((s - mean) * istd) * gamma + beta (beta may be null), istd = 1 / sqrt(var + eps).
// The sums run over 32 lanes (lane j takes elements j, j + 32, ...), folded as
// u[j] = lane[j] + lane[j + 16], t[j] = u[j] + u[j + 8], then t[0] + ... + t[7] in order,
// then the n % 32 tail elements in order; every ISA computes exactly these float
// operations, so all agree bit for bit. mean_out / istd_out (if not null) get the row's
// mean and istd. y may equal x (not skip).
struct LayerNormParams {
  const float* gamma;
  const float* beta;
  float eps;
};
using F32LayerNormFn = void (*)(const float* x, const float* skip, float* y, int64_t n, const LayerNormParams& p,
                                float* mean_out, float* istd_out);

struct VMathKernels {
  F32RowFn softmax_row;  // y = softmax(x) over n contiguous values (x may equal y)
  const char* softmax_name;
  F32RowFn gelu;         // y[i] = gelu(x[i]) (x may equal y)
  const char* gelu_name;
  F32SoftmaxPreFn softmax_pre;  // y = softmax(pre(x)); the same kernel as softmax_row (same name)
  F32LayerNormFn layernorm;
  const char* layernorm_name;
};

// The selected dispatch table's entry (kernels().vmath; defined in cpu/dispatch.cc).
const VMathKernels& vmath();

namespace ref {
void f32_softmax_row__scalar(const float* x, float* y, int64_t n);
void f32_gelu__scalar(const float* x, float* y, int64_t n);
void f32_softmax_pre_row__scalar(const float* x, float* y, int64_t n, const SoftmaxPre& pre);
void f32_layernorm_row__scalar(const float* x, const float* skip, float* y, int64_t n, const LayerNormParams& p,
                             float* mean_out, float* istd_out);
}  // namespace ref
namespace avx2 {
void f32_softmax_row__avx2(const float* x, float* y, int64_t n);
void f32_gelu__avx2(const float* x, float* y, int64_t n);
void f32_softmax_pre_row__avx2(const float* x, float* y, int64_t n, const SoftmaxPre& pre);
void f32_layernorm_row__avx2(const float* x, const float* skip, float* y, int64_t n, const LayerNormParams& p,
                             float* mean_out, float* istd_out);
}  // namespace avx2
namespace avx512 {
void f32_softmax_row__avx512(const float* x, float* y, int64_t n);
void f32_gelu__avx512(const float* x, float* y, int64_t n);
void f32_softmax_pre_row__avx512(const float* x, float* y, int64_t n, const SoftmaxPre& pre);
void f32_layernorm_row__avx512(const float* x, const float* skip, float* y, int64_t n, const LayerNormParams& p,
                             float* mean_out, float* istd_out);
}  // namespace avx512

}  // namespace lowbit
