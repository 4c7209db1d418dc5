// Winograd F(2x2, 3x3) tile transforms (Lavin & Gray, "Fast Algorithms for Convolutional Neural
// Networks", 2016), fp32, vectorized along the contiguous channel axis of NHWC pixels. The Conv
// op (runtime/ops/conv.cc) runs them around 16 GEMMs through the level's f32_gemm.
//
// They only add and subtract, in the order ref.cc writes, so every ISA gives the reference's bits.
#pragma once
#include <cstdint>

namespace lowbit {

// V = B^T d B for one 4x4 input tile, every channel, B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]]:
// d[4r + c] points at the C channels of the tile's pixel (r, c) (a row of zeros for a pixel
// outside the image); channel ch of V[xi] goes to v[xi][ch].
using F32WinoInputFn = void (*)(const float* const d[16], float* const v[16], int64_t C);

// The 2x2 outputs of one tile, every channel, A^T = [[1,1,1,0],[0,1,-1,-1]]: m[xi] holds the C
// channels of M[xi]; y[2i + j] (null: outside the image) receives (A^T M A)[i][j] + bias[ch]
// (bias optional), then + res[2i + j][ch] (if res[2i + j] is not null), then ReLU when relu is
// set, with the rule x > 0 ? x : (x is NaN ? x : +0).
struct F32WinoOutputArgs {
  const float* m[16];
  float* y[4];
  const float* res[4];
  const float* bias;
  int64_t C;
  bool relu;
};
using F32WinoOutputFn = void (*)(const F32WinoOutputArgs& a);

struct F32WinogradKernels {
  F32WinoInputFn input = nullptr;
  F32WinoOutputFn output = nullptr;
  const char* name = nullptr;  // f32_wino_f2k3__<isa>: the pair f32_wino_{input,output}_f2k3__<isa>
};

void f32_wino_input_f2k3__scalar(const float* const d[16], float* const v[16], int64_t C);
void f32_wino_output_f2k3__scalar(const F32WinoOutputArgs& a);
namespace avx2 {
void f32_wino_input_f2k3__avx2(const float* const d[16], float* const v[16], int64_t C);
void f32_wino_output_f2k3__avx2(const F32WinoOutputArgs& a);
}  // namespace avx2
namespace avx512 {
void f32_wino_input_f2k3__avx512(const float* const d[16], float* const v[16], int64_t C);
void f32_wino_output_f2k3__avx512(const F32WinoOutputArgs& a);
}  // namespace avx512

}  // namespace lowbit
