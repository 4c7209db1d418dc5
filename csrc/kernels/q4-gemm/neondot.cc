// NEON dot-product 4-bit GEMM over the q4 layouts (see q4_gemm.h). Compile with: -march=armv8.2-a+dotprod
//
// Codes 0..15 are valid s8, so sdot takes them directly (affine: the zero point comes out as
// z * gsum); table codes go through tbl into the s8 table. Exact int32 sums, fused fma chain.
#include <arm_neon.h>

#include <cstring>

#include "q4_gemm.h"

namespace lowbit {
namespace neon {
namespace {

enum Mode { kSym = 0, kAsym = 1, kTab = 2 };

inline int8x16_t Bcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return vreinterpretq_s8_s32(vdupq_n_s32(v));
}

inline float32x4_t Relu(float32x4_t y) { return vbslq_f32(vcltq_f32(y, vdupq_n_f32(0.0f)), vdupq_n_f32(0.0f), y); }

template <int MR, int MODE>
void Tile(const Q4GemmArgs& g, int64_t m, int64_t nb, int64_t ncols) {
  const int64_t G = g.lay.group, Kg = q4_kg(g.K, G), NG = Kg / G;
  const Q4Parts parts = q4_parts(g.K, g.N, g.lay);
  const int64_t pidx = nb / 16;
  const uint8_t* codes = g.W + parts.codes + pidx * Kg * 8;
  const uint16_t* scales = reinterpret_cast<const uint16_t*>(g.W + parts.scales) + pidx * NG * 16;
  const uint8_t* zeros = g.W + parts.zeros + pidx * NG * 16;
  const int8x16_t tbl = vld1q_s8(reinterpret_cast<const int8_t*>(g.W));  // only read for kTab
  const uint8x16_t low4 = vdupq_n_u8(0x0F);
  float32x4_t f[MR][4];
  for (int r = 0; r < MR; ++r)
    for (int q = 0; q < 4; ++q) f[r][q] = vdupq_n_f32(0.0f);
  for (int64_t gi = 0; gi < NG; ++gi) {
    int32x4_t d[MR][4];
    for (int r = 0; r < MR; ++r)
      for (int q = 0; q < 4; ++q) d[r][q] = vdupq_n_s32(0);
    for (int64_t k8 = gi * G / 8; k8 < (gi + 1) * G / 8; ++k8) {
      int8x16_t lo[4], hi[4];
      for (int q = 0; q < 4; ++q) {
        const uint8x16_t v = vld1q_u8(codes + k8 * 64 + 16 * q);
        lo[q] = vreinterpretq_s8_u8(vandq_u8(v, low4));
        hi[q] = vreinterpretq_s8_u8(vshrq_n_u8(v, 4));
        if (MODE == kTab) {
          lo[q] = vqtbl1q_s8(tbl, vreinterpretq_u8_s8(lo[q]));
          hi[q] = vqtbl1q_s8(tbl, vreinterpretq_u8_s8(hi[q]));
        }
      }
      for (int r = 0; r < MR; ++r) {
        const int8x16_t a0 = Bcast4(g.A + (m + r) * g.lda + k8 * 8), a1 = Bcast4(g.A + (m + r) * g.lda + k8 * 8 + 4);
        for (int q = 0; q < 4; ++q) {
          d[r][q] = vdotq_s32(d[r][q], lo[q], a0);
          d[r][q] = vdotq_s32(d[r][q], hi[q], a1);
        }
      }
    }
    for (int q = 0; q < 4; ++q) {
      const float32x4_t s = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(scales + gi * 16 + 4 * q)));
      int32x4_t z = vdupq_n_s32(MODE == kSym ? 8 : 0);
      if (MODE == kAsym) {
        const uint8_t* zp = zeros + gi * 16 + 4 * q;
        const int32_t zz[4] = {zp[0], zp[1], zp[2], zp[3]};
        z = vld1q_s32(zz);
      }
      for (int r = 0; r < MR; ++r) {
        const int32x4_t c = vmlsq_s32(d[r][q], z, vdupq_n_s32(g.gsum[(m + r) * NG + gi]));
        f[r][q] = vfmaq_f32(f[r][q], vcvtq_f32_s32(c), s);
      }
    }
  }
  for (int r = 0; r < MR; ++r) {
    float out[16];
    for (int q = 0; q < 4; ++q) {
      float32x4_t y = vmulq_f32(f[r][q], vdupq_n_f32(g.a_scale[m + r]));
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

template <int MR, int MODE>
void Cols(const Q4GemmArgs& g, int64_t m, int64_t n0, int64_t n1) {
  for (int64_t nb = n0; nb < n1; nb += 16) Tile<MR, MODE>(g, m, nb, n1 - nb < 16 ? n1 - nb : 16);
}

template <int MODE>
void Run(const Q4GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  const int64_t nc = 64;
  for (int64_t jc = n0; jc < n1; jc += nc) {
    const int64_t jend = jc + nc < n1 ? jc + nc : n1;
    int64_t m = m0;
    for (; m + 4 <= m1; m += 4) Cols<4, MODE>(g, m, jc, jend);
    switch (m1 - m) {
      case 1: Cols<1, MODE>(g, m, jc, jend); break;
      case 2: Cols<2, MODE>(g, m, jc, jend); break;
      case 3: Cols<3, MODE>(g, m, jc, jend); break;
      default: break;
    }
  }
}

}  // namespace

void q4_gemm_4x16c8__neondot(const Q4GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  if (m1 <= m0 || n1 <= n0) return;
  if (g.lay.kind == Q4Kind::kTable) return Run<kTab>(g, m0, m1, n0, n1);
  if (g.lay.asym) return Run<kAsym>(g, m0, m1, n0, n1);
  Run<kSym>(g, m0, m1, n0, n1);
}

}  // namespace neon
}  // namespace lowbit
