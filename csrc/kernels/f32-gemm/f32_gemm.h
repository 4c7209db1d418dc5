// fp32 GEMM: C[M,N] = act(A[M,K] . B[K,N] + bias[N]), B prepacked at convert time.
//
// Packed B layout "f32-n16" (ISA-independent, the bytes stored in .qbin):
//   panels of 16 output columns; panel p holds columns [16p, 16p+16), stored
//   k-major: Bp[(p * K + k) * 16 + j] = B[k, 16p + j], zero for 16p + j >= N.
//   Size: ceil(N / 16) * 16 * K floats.
//
// Determinism contract (all ISAs, all tilings, all thread splits): every output
// element is computed as   acc = 0; for k in 0..K-1: acc = fma(A[m,k], B[k,n], acc);
// then  y = acc + bias[n] (+ res[m, n]) and the activation. So a result never depends on which
// tile, edge path or thread computed it, and ISAs agree with the scalar reference
// bit for bit (the activation's erf/exp may differ by a few ulp between ISAs).
#pragma once
#include <cstddef>
#include <cstdint>

namespace lowbit {

enum class Activation : int32_t { kNone = 0, kRelu = 1, kGelu = 2 };

struct F32GemmArgs {
  int64_t M, N, K;
  const float* A;     // row-major, row stride lda (in floats)
  int64_t lda;
  const float* Bp;    // packed "f32-n16" as above
  const float* bias;  // N floats or nullptr
  float* C;           // row-major, row stride ldc (in floats)
  int64_t ldc;
  Activation act;
  // Implicit A (a convolution read in place, no im2col), off when kseg == 0:
  //   A[m, k] = A[(m / mrow) * row_stride + (m % mrow) * lda + (k / kseg) * seg_stride + k % kseg]
  // m = (output row, output column) when mrow > 0 (else m * lda), and K is cut into
  // segments of kseg columns (a kernel row of taps, contiguous in NHWC). Only kernels
  // whose dispatch table sets f32_gemm_implicit_a accept it. The FMA chain over k is
  // the same as for an im2col'd A holding those values: both give the same bits.
  int64_t kseg = 0;
  int64_t seg_stride = 0;
  int64_t mrow = 0;
  int64_t row_stride = 0;
  // Optional residual (a ResNet block's skip input), added after the bias and before the
  // activation: y = act((acc + bias) + res[m * ldr + n]). res may not overlap C.
  const float* res = nullptr;
  int64_t ldr = 0;
};

// Computes rows [m0, m1) x columns [n0, n1) of C. n0 is a multiple of 16;
// n1 is a multiple of 16 or equal to N. Callers split work over threads by
// calling this on disjoint ranges; it allocates nothing and is thread-safe.
using F32GemmFn = void (*)(const F32GemmArgs& a, int64_t m0, int64_t m1, int64_t n0, int64_t n1);

constexpr int64_t kF32GemmNR = 16;
inline int64_t f32_gemm_packed_floats(int64_t K, int64_t N) {
  return (N + kF32GemmNR - 1) / kF32GemmNR * kF32GemmNR * K;
}
// Packs row-major B[K,N] (row stride ldb) into the "f32-n16" layout.
void f32_gemm_pack_b(int64_t K, int64_t N, const float* B, int64_t ldb, float* Bp);

// Packs B = Bt^T into the "f32-n16" layout from row-major Bt[N,K] (row stride ldbt): panel p,
// row k holds Bt[16p + j, k] for j < 16 (0 past N). A transposing copy (the Attention op's K^T,
// read from K in place): every ISA writes the same bytes. A kernel of the dispatch table.
using F32PackBtFn = void (*)(int64_t K, int64_t N, const float* Bt, int64_t ldbt, float* Bp);

namespace ref {
void f32_pack_bt__scalar(int64_t K, int64_t N, const float* Bt, int64_t ldbt, float* Bp);
void f32_gemm_1x16__scalar(const F32GemmArgs& a, int64_t m0, int64_t m1, int64_t n0, int64_t n1);
}
namespace avx2 {
void f32_gemm_6x16__avx2(const F32GemmArgs& a, int64_t m0, int64_t m1, int64_t n0, int64_t n1);
}
namespace avx512 {
void f32_pack_bt__avx512(int64_t K, int64_t N, const float* Bt, int64_t ldbt, float* Bp);
void f32_gemm_12x32__avx512(const F32GemmArgs& a, int64_t m0, int64_t m1, int64_t n0, int64_t n1);
}

}  // namespace lowbit
