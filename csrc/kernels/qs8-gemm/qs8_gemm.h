// int8 x int8 GEMM with per-output-channel weight scales:
//   C[M,N] = act( (A_q . W_q) * (a_scale[m] * w_scale[n]) + bias[n] )
// A_q: activations quantized per row by qs8-quant (s8, or biased u8 when the kernel asks);
// W_q: symmetric int8 weights in [-127, 127], prepacked at convert time.
//
// Packed weight layout "qs8-n16k4" (the bytes stored in .qbin, ISA-independent):
//   P = ceil(N/16) panels of 16 columns, Kp = round_up(K, 4).
//   [0, P*Kp*16)            s8 weights: byte (p*Kp/4 + k/4)*64 + j*4 + k%4 = Wq[k, 16p+j]
//                           (one 64-byte vector = 16 columns x 4 consecutive k: one vpdpbusd,
//                           two AVX2 vpmaddubsw, four NEON sdot); zero padding in k and j.
//   then P*16 f32           w_scale[n] (0 for padded columns)
//   then P*16 s32           colsum[n] = sum_k Wq[k, n] (the correction for biased activations)
//
// Result definition (scalar reference; every ISA matches it bit for bit):
//   acc = sum_k A_q[m,k] * Wq[k,n]            exact int32
//   y   = float(acc) * (a_scale[m] * w_scale[n]);  y = y + bias[n];  y = act(y)
// K <= kQs8MaxK keeps |acc| < 2^31 for any data.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/f32-gemm/f32_gemm.h"  // Activation

namespace lowbit {

constexpr int64_t kQs8MaxK = 131072;

struct Qs8GemmArgs {
  int64_t M, N, K;
  const int8_t* A;        // quantized rows (Kp bytes valid each), row stride lda bytes
  int64_t lda;
  const float* a_scale;   // M
  const uint8_t* W;       // packed "qs8-n16k4"
  const float* bias;      // N or nullptr
  float* C;
  int64_t ldc;
  Activation act;
  // The outlier split's float part (qs8_quant.h, qw_axpy.h), for the kernels whose table sets
  // qs8_gemm_outliers: `outliers` entries per row (row m at m * outliers), each with
  // idx >= 0 adding y = fma(val, float(Wq[idx, n]) * w_scale[n], y) after the bias, in order,
  // before ReLU: the bits of the GEMM without ReLU, then qw_axpy, then ReLU. 0: none.
  int64_t outliers = 0;
  const int32_t* out_idx = nullptr;
  const float* out_val = nullptr;
};

// Rows [m0, m1) x columns [n0, n1) (n0 a multiple of 16). GELU is left to the caller
// (applied on the finished rows by the f32-vmath row GELU, as for fp32 Dense), bias and ReLU are fused.
using Qs8GemmFn = void (*)(const Qs8GemmArgs& a, int64_t m0, int64_t m1, int64_t n0, int64_t n1);

inline int64_t qs8_kp(int64_t K) { return (K + 3) / 4 * 4; }
inline int64_t qs8_packed_bytes(int64_t K, int64_t N) {
  const int64_t P = (N + 15) / 16;
  return P * 16 * (qs8_kp(K) + 8);
}
// Packs Wq[K,N] (row-major s8 in [-127,127]) and scales[N] into "qs8-n16k4".
void qs8_gemm_pack(int64_t K, int64_t N, const int8_t* Wq, const float* scales, uint8_t* out);

namespace ref {
void qs8_gemm_1x16__scalar(const Qs8GemmArgs& a, int64_t m0, int64_t m1, int64_t n0, int64_t n1);
}
namespace avx2 {
void qs8_gemm_5x16c4__avx2(const Qs8GemmArgs& a, int64_t m0, int64_t m1, int64_t n0, int64_t n1);
}
namespace avx512 {
void qs8_gemm_8x32c4__avx512vnni(const Qs8GemmArgs& a, int64_t m0, int64_t m1, int64_t n0, int64_t n1);
}
namespace amx {  // AMX-INT8 tiles for 16 rows and more; fewer rows go to the AVX-512 VNNI kernel
void qs8_gemm_32x32c4__amx(const Qs8GemmArgs& a, int64_t m0, int64_t m1, int64_t n0, int64_t n1);
}
namespace neon {
void qs8_gemm_4x16c4__neondot(const Qs8GemmArgs& a, int64_t m0, int64_t m1, int64_t n0, int64_t n1);
}

}  // namespace lowbit
