// fp32 sparse x dense matmul over the SELL-8 layout (kernels/sparse/sell.h, bk = 1):
//   C[m, n] = act( sum over the entries of column n of A[m, idx] * val  + bias[n] )
//
// Result definition (scalar reference; every ISA reproduces it bit for bit): for each
// row m and lane (slice s, lane j) with column n = perm[8s + j]:
//   acc = +0; for t in slice[s] .. slice[s+1]-1: acc = fma(A[m, idx[8t+j]], val[8t+j], acc)
//   y = acc (+ bias[n]); ReLU as (0 > y) ? 0 : y.  Padding entries (value 0) are part of
// the chain, exactly as the SIMD lanes run them. GELU is applied by the caller on the rows.
#pragma once
#include <cstdint>

#include "kernels/f32-gemm/f32_gemm.h"  // Activation
#include "kernels/sparse/sell.h"
#include "kernels/sparse/stream.h"

namespace lowbit {

struct F32SpmmArgs {
  int64_t M;
  const float* A;  // M x K, row stride lda floats
  int64_t lda;
  const SellMatrix* W;  // bk = 1, f32 values
  const float* bias;    // N or nullptr
  float* C;             // M x N, row stride ldc floats
  int64_t ldc;
  Activation act;       // kNone or kRelu
  StreamPrefetch prefetch = StreamPrefetch::kL1;  // the first rows' software prefetch (x86 kernels)
};

// Rows [m0, m1) x slices [s0, s1). Thread-safe on disjoint ranges.
using F32SpmmFn = void (*)(const F32SpmmArgs& a, int64_t m0, int64_t m1, int64_t s0, int64_t s1);

namespace ref {
void f32_spmm_s8__scalar(const F32SpmmArgs& a, int64_t m0, int64_t m1, int64_t s0, int64_t s1);
}
namespace avx2 {
void f32_spmm_s8m4__avx2(const F32SpmmArgs& a, int64_t m0, int64_t m1, int64_t s0, int64_t s1);
}
namespace neon {
void f32_spmm_s8m4__neon(const F32SpmmArgs& a, int64_t m0, int64_t m1, int64_t s0, int64_t s1);
}

}  // namespace lowbit
