// The scalar reference of the bf16 GEMM and its packings (the definition: bf16_gemm.h).
#include <cmath>
#include <cstring>

#include "bf16_gemm.h"

namespace lowbit {
namespace ref {

void bf16_pack_a__scalar(int64_t M, int64_t K, const float* X, int64_t ldx, uint16_t* A) {
  const int64_t Kp = bf16_kp(K);
  std::memset(A, 0, size_t(bf16_packed_a(M, K)) * 2);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) A[m * Kp + k] = bf16_round(X[m * ldx + k]);
}

void bf16_pack_b__scalar(int64_t K, int64_t N, const float* B, int64_t ldb, uint16_t* Bp) {
  const int64_t Kp = bf16_kp(K);
  std::memset(Bp, 0, size_t(bf16_packed_b(K, N)) * 2);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n) Bp[(n / 16) * Kp * 16 + (k / 2) * 32 + (n % 16) * 2 + k % 2] = bf16_round(B[k * ldb + n]);
}

void bf16_pack_bt__scalar(int64_t K, int64_t N, const float* Bt, int64_t ldbt, uint16_t* Bp) {
  const int64_t Kp = bf16_kp(K);
  std::memset(Bp, 0, size_t(bf16_packed_b(K, N)) * 2);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) Bp[(n / 16) * Kp * 16 + (k / 2) * 32 + (n % 16) * 2 + k % 2] = bf16_round(Bt[n * ldbt + k]);
}

void bf16_gemm_1x16__scalar(const Bf16GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  const int64_t Kp = bf16_kp(g.K);
  for (int64_t m = m0; m < m1; ++m)
    for (int64_t n = n0; n < n1; ++n) {
      const uint16_t* b = g.Bp + (n / 16) * Kp * 16 + (n % 16) * 2;
      float acc = 0.0f;
      for (int64_t k = 0; k < g.K; ++k)
        acc = std::fma(bf16_float(g.A[m * Kp + k]), bf16_float(b[(k / 2) * 32 + k % 2]), acc);
      g.C[m * g.ldc + n] = g.row_scale ? acc * g.row_scale[m] : acc;
    }
}

namespace {
// One row (bf16_gemm.h's definition): returns sum e.
float SoftmaxRow(float* x, int64_t n, const SoftmaxPre& pre, uint16_t* p, int64_t np) {
  float m = -INFINITY;
  bool nan = false;
  for (int64_t i = 0; i < n; ++i) {  // t = pre(x) into x, as f32_softmax_pre_row__scalar: one rounding per step
    float t = x[i];
    if (pre.scale_op == 1) t = t * pre.scale;
    else if (pre.scale_op == 2) t = t / pre.scale;
    if (pre.add) t = t + pre.add[pre.add_bcast ? 0 : i];
    x[i] = t;
    nan |= std::isnan(t);
    m = t > m ? t : m;
  }
  for (int64_t i = n; i < np; ++i) p[i] = 0;
  if (nan) {
    for (int64_t i = 0; i < n; ++i) p[i] = bf16_round(NAN);
    return NAN;
  }
  if (std::isinf(m)) m = m > 0 ? m : 0.f;
  float sum = 0.f;
  for (int64_t i = 0; i < n; ++i) {
    const float e = std::exp(x[i] - m);
    p[i] = bf16_round(e);
    sum += e;
  }
  return sum;
}
}  // namespace

void bf16_softmax__scalar(float* x, int64_t ldx, int64_t rows, int64_t n, const SoftmaxPre& pre, int64_t add_ld,
                          uint16_t* p, int64_t np, float* inv) {
  for (int64_t r = 0; r < rows; ++r) {
    SoftmaxPre pr = pre;
    if (pre.add) pr.add = pre.add + r * add_ld;
    inv[r] = 1.f / SoftmaxRow(x + r * ldx, n, pr, p + r * np, np);
  }
}

}  // namespace ref
}  // namespace lowbit
