// int8 GEMM with 7-bit weights ("reduce range"): the qs8 GEMM (qs8_gemm.h) restricted to
// weight codes in [-64, 64], so that on AVX2 a biased u8 activation (q + 128, in [1, 255])
// times a weight fits vpmaddubsw's saturating int16 pair sums exactly: 2 * 255 * 64 = 32640.
// That is the 3-op cell (vpmaddubsw, vpmaddwd, vpaddd) per 32 MACs instead of the 4-op exact
// s8 x s8 cell of qs8_gemm_5x16c4__avx2. onnxruntime recommends the same restriction
// (reduce_range: 7-bit weights) for its u8 x s8 kernels on AVX2 and AVX-512 without VNNI.
//
// Layout: "qs7-n16k4" is byte for byte "qs8-n16k4" (weights, w_scale, colsum), with every
// weight code in [-64, 64] (the loader checks it). The result definition is the qs8 one, so
// the scalar reference is ref::qs8_gemm_1x16__scalar; tables without a 7-bit kernel run the
// file with their qs8 GEMM, which gives the same bits.
//
// Activations: bias128 (u8 = q + 128); acc = sum (q+128) w - 128 * colsum, exact in int32
// for K <= kQs8MaxK (131072 * 255 * 64 < 2^31).
#pragma once
#include "kernels/qs8-gemm/qs8_gemm.h"

namespace lowbit {

constexpr int kQs7MaxAbs = 64;

// Packs Wq[K,N] (row-major s8 in [-64, 64]) and scales[N] into "qs7-n16k4" (= qs8_gemm_pack).
inline void qs7_gemm_pack(int64_t K, int64_t N, const int8_t* Wq, const float* scales, uint8_t* out) {
  qs8_gemm_pack(K, N, Wq, scales, out);
}

namespace avx2 {
// Activations biased (bias128). Same arguments and row/column split as Qs8GemmFn.
void qs7_gemm_6x16c4__avx2(const Qs8GemmArgs& a, int64_t m0, int64_t m1, int64_t n0, int64_t n1);
}

}  // namespace lowbit
