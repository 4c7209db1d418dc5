// Packs row-major B[K,N] into the "f32-n16" layout (see f32_gemm.h). Baseline C++, no intrinsics.
#include <cstring>

#include "f32_gemm.h"

namespace lowbit {

void f32_gemm_pack_b(int64_t K, int64_t N, const float* B, int64_t ldb, float* Bp) {
  const int64_t panels = (N + kF32GemmNR - 1) / kF32GemmNR;
  for (int64_t p = 0; p < panels; ++p) {
    const int64_t n0 = p * kF32GemmNR;
    const int64_t w = N - n0 < kF32GemmNR ? N - n0 : kF32GemmNR;
    float* dst = Bp + p * K * kF32GemmNR;
    if (w == kF32GemmNR) {  // a full panel: one 64-byte copy per row
      for (int64_t k = 0; k < K; ++k) std::memcpy(dst + k * kF32GemmNR, B + k * ldb + n0, sizeof(float) * kF32GemmNR);
      continue;
    }
    for (int64_t k = 0; k < K; ++k) {
      const float* src = B + k * ldb + n0;
      float* d = dst + k * kF32GemmNR;
      int64_t j = 0;
      for (; j < w; ++j) d[j] = src[j];
      for (; j < kF32GemmNR; ++j) d[j] = 0.0f;
    }
  }
}

namespace ref {

void f32_pack_bt__scalar(int64_t K, int64_t N, const float* Bt, int64_t ldbt, float* Bp) {
  for (int64_t p = 0; p * kF32GemmNR < N; ++p) {
    float* dst = Bp + p * K * kF32GemmNR;
    const int64_t w = N - p * kF32GemmNR < kF32GemmNR ? N - p * kF32GemmNR : kF32GemmNR;
    for (int64_t j = 0; j < kF32GemmNR; ++j) {
      const float* src = Bt + (p * kF32GemmNR + j) * ldbt;
      for (int64_t k = 0; k < K; ++k) dst[k * kF32GemmNR + j] = j < w ? src[k] : 0.0f;
    }
  }
}

}  // namespace ref

}  // namespace lowbit
