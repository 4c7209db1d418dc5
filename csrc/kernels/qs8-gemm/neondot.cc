// NEON dot-product int8 GEMM over "qs8-n16k4" (see qs8_gemm.h). Compile with: -march=armv8.2-a+dotprod
//
// sdot multiplies s8 x s8 into int32 lanes (4 products each): the activations need no bias
// and the packed 16-column x 4-k vector is exactly four sdot operands.
#include <arm_neon.h>

#include <cstring>

#include "qs8_gemm.h"

namespace lowbit {
namespace neon {
namespace {

inline int8x16_t Bcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return vreinterpretq_s8_s32(vdupq_n_s32(v));
}

// y < 0 ? 0 : y keeps -0 and NaN like the reference (vmaxq would turn -0 into +0).
inline float32x4_t Relu(float32x4_t y) { return vbslq_f32(vcltq_f32(y, vdupq_n_f32(0.0f)), vdupq_n_f32(0.0f), y); }

template <int MR>
void Tile(const Qs8GemmArgs& g, int64_t m, int64_t nb, int64_t ncols) {
  const int64_t Kp = qs8_kp(g.K), P = (g.N + 15) / 16, ps = Kp * 16;
  const int8_t* W = reinterpret_cast<const int8_t*>(g.W) + (nb / 16) * ps;
  int32x4_t acc[MR][4];
  for (int r = 0; r < MR; ++r)
    for (int q = 0; q < 4; ++q) acc[r][q] = vdupq_n_s32(0);
  for (int64_t k = 0; k < Kp; k += 4) {
    int8x16_t w[4];
    for (int q = 0; q < 4; ++q) w[q] = vld1q_s8(W + k * 16 + 16 * q);
    for (int r = 0; r < MR; ++r) {
      const int8x16_t a = Bcast4(g.A + (m + r) * g.lda + k);
      for (int q = 0; q < 4; ++q) acc[r][q] = vdotq_s32(acc[r][q], w[q], a);
    }
  }
  const float* wscale = reinterpret_cast<const float*>(g.W + P * ps) + nb;
  for (int r = 0; r < MR; ++r) {
    float out[16];
    for (int q = 0; q < 4; ++q) {
      const float32x4_t s = vmulq_f32(vdupq_n_f32(g.a_scale[m + r]), vld1q_f32(wscale + 4 * q));
      float32x4_t y = vmulq_f32(vcvtq_f32_s32(acc[r][q]), s);
      if (g.bias) {
        float b[4] = {0, 0, 0, 0};
        for (int j = 0; j < 4 && 4 * q + j < ncols; ++j) b[j] = g.bias[nb + 4 * q + j];
        y = vaddq_f32(y, vld1q_f32(b));
      }
      if (g.act == Activation::kRelu) y = Relu(y);
      vst1q_f32(out + 4 * q, y);
    }
    std::memcpy(g.C + (m + r) * g.ldc + nb, out, size_t(ncols < 16 ? ncols : 16) * 4);
  }
}

template <int MR>
void Cols(const Qs8GemmArgs& g, int64_t m, int64_t n0, int64_t n1) {
  for (int64_t nb = n0; nb < n1; nb += 16) Tile<MR>(g, m, nb, n1 - nb < 16 ? n1 - nb : 16);
}

}  // namespace

void qs8_gemm_4x16c4__neondot(const Qs8GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  if (m1 <= m0 || n1 <= n0) return;
  const int64_t nc = 64;
  for (int64_t jc = n0; jc < n1; jc += nc) {
    const int64_t jend = jc + nc < n1 ? jc + nc : n1;
    int64_t m = m0;
    for (; m + 4 <= m1; m += 4) Cols<4>(g, m, jc, jend);
    switch (m1 - m) {
      case 1: Cols<1>(g, m, jc, jend); break;
      case 2: Cols<2>(g, m, jc, jend); break;
      case 3: Cols<3>(g, m, jc, jend); break;
      default: break;
    }
  }
}

}  // namespace neon
}  // namespace lowbit
