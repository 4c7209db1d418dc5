// NEON int8 SELL-8 matmuls (see qs8_spmm.h). Compile with: -march=armv8.2-a+dotprod
//
// Unstructured (K16): tbl gathers 16 slots from a 16-byte chunk, sdot sums each column's 4.
// 1x4 blocks (SELL-8): each lane's 4
// activations are one 32-bit lane load, so 4 lanes make one sdot operand against their
// 16 contiguous weight bytes. With packed 8-row tiles a block meets 8 rows in two sdot.
#include <arm_neon.h>

#include <cstring>

#include "qs8_spmm.h"

namespace lowbit {
namespace neon {
namespace {

inline void Store(const Qs8SpmmArgs& a, int64_t m, int64_t s, const int32_t* v) {
  const SellMatrix& w = *a.W;
  const uint32_t* perm = w.perm + s * kSellC;
  const float* sc = w.scale + s * kSellC;
  float* c = a.C + m * a.ldc;
  for (int j = 0; j < kSellC; ++j) {
    const uint32_t n = perm[j];
    if (n == kSellNoColumn) continue;
    float y = float(v[j]) * (a.a_scale[m] * sc[j]);
    if (a.bias) y = y + a.bias[n];
    if (a.act == Activation::kRelu) y = (0.0f > y) ? 0.0f : y;
    c[n] = y;
  }
}

// MR rows x one group of 8 columns: tbl picks 16 slots (4 columns) from the chunk (0x80
// slots read 0), sdot sums each column's 4 slots.
template <int MR>
void K16Group(const Qs8K16Args& a, int64_t m, int64_t g) {
  const K16Matrix& w = *a.W;
  int32x4_t acc[MR][2];
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = vdupq_n_s32(0);
  const int64_t c1 = w.group[g + 1];
  for (int64_t c = w.group[g]; c < c1; ++c) {
    const uint8x16_t s0 = vld1q_u8(w.shuf + 32 * c), s1 = vld1q_u8(w.shuf + 32 * c + 16);
    const int8x16_t v0 = vld1q_s8(w.val + 32 * c), v1 = vld1q_s8(w.val + 32 * c + 16);
    const int64_t off = 16 * int64_t(w.chunk[c]);
    for (int r = 0; r < MR; ++r) {
      const int8x16_t xc = vld1q_s8(a.A + (m + r) * a.lda + off);
      acc[r][0] = vdotq_s32(acc[r][0], vqtbl1q_s8(xc, s0), v0);
      acc[r][1] = vdotq_s32(acc[r][1], vqtbl1q_s8(xc, s1), v1);
    }
  }
  for (int r = 0; r < MR; ++r) {
    int32_t o[8];
    vst1q_s32(o, acc[r][0]);
    vst1q_s32(o + 4, acc[r][1]);
    float* c = a.C + (m + r) * a.ldc;
    for (int64_t j = 0; j < 8 && 8 * g + j < w.N; ++j) {
      const int64_t n = 8 * g + j;
      float y = float(o[j]) * (a.a_scale[m + r] * w.scale[n]);
      if (a.bias) y = y + a.bias[n];
      if (a.act == Activation::kRelu) y = (0.0f > y) ? 0.0f : y;
      c[n] = y;
    }
  }
}

inline int8x16_t Gather4(const int8_t* x, const uint16_t* idx) {
  int32x4_t g = vdupq_n_s32(0);
  int32_t v;
  std::memcpy(&v, x + 4 * int64_t(idx[0]), 4);
  g = vsetq_lane_s32(v, g, 0);
  std::memcpy(&v, x + 4 * int64_t(idx[1]), 4);
  g = vsetq_lane_s32(v, g, 1);
  std::memcpy(&v, x + 4 * int64_t(idx[2]), 4);
  g = vsetq_lane_s32(v, g, 2);
  std::memcpy(&v, x + 4 * int64_t(idx[3]), 4);
  g = vsetq_lane_s32(v, g, 3);
  return vreinterpretq_s8_s32(g);
}

template <int MR>
void BsrSlice(const Qs8SpmmArgs& a, int64_t m, int64_t s) {
  const SellMatrix& w = *a.W;
  const int8_t* val = reinterpret_cast<const int8_t*>(w.val);
  int32x4_t acc[MR][2];
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = vdupq_n_s32(0);
  const int64_t t1 = w.slice[s + 1];
  for (int64_t t = w.slice[s]; t < t1; ++t) {
    const uint16_t* idx = w.idx + t * kSellC;
    const int8x16_t v0 = vld1q_s8(val + t * kSellC * 4), v1 = vld1q_s8(val + t * kSellC * 4 + 16);
    for (int r = 0; r < MR; ++r) {
      const int8_t* x = a.A + (m + r) * a.lda;
      acc[r][0] = vdotq_s32(acc[r][0], Gather4(x, idx), v0);
      acc[r][1] = vdotq_s32(acc[r][1], Gather4(x, idx + 4), v1);
    }
  }
  for (int r = 0; r < MR; ++r) {
    int32_t out[8];
    vst1q_s32(out, acc[r][0]);
    vst1q_s32(out + 4, acc[r][1]);
    Store(a, m + r, s, out);
  }
}

void BsrTile(const Qs8SpmmArgs& a, int64_t tile, int64_t m1, int64_t s) {
  const SellMatrix& w = *a.W;
  const int64_t nb = (w.K + 3) / 4;
  const int8_t* xt = a.At + tile * nb * 32;
  // the loops over the 8 lanes are unrolled so the accumulators stay in registers (rolled,
  // GCC kept them on the stack: a store and a load around every sdot)
  int32x4_t acc[8][2];
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j) acc[j][0] = acc[j][1] = vdupq_n_s32(0);
  const int64_t t1 = w.slice[s + 1];
  for (int64_t t = w.slice[s]; t < t1; ++t) {
    const uint16_t* idx = w.idx + t * kSellC;
    const uint8_t* v = w.val + t * kSellC * 4;
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) {
      int32_t wv;
      std::memcpy(&wv, v + 4 * j, 4);
      const int8x16_t wb = vreinterpretq_s8_s32(vdupq_n_s32(wv));
      const int8_t* x = xt + int64_t(idx[j]) * 32;
      acc[j][0] = vdotq_s32(acc[j][0], vld1q_s8(x), wb);
      acc[j][1] = vdotq_s32(acc[j][1], vld1q_s8(x + 16), wb);
    }
  }
  int32_t v[8][8];
  for (int j = 0; j < 8; ++j) {
    vst1q_s32(v[j], acc[j][0]);
    vst1q_s32(v[j] + 4, acc[j][1]);
  }
  for (int r = 0; r < 8 && tile * 8 + r < m1; ++r) {
    int32_t row[8];
    for (int j = 0; j < 8; ++j) row[j] = v[j][r];
    Store(a, tile * 8 + r, s, row);
  }
}

}  // namespace

void qs8_spmm_k16m4__neondot(const Qs8K16Args& a, int64_t m0, int64_t m1, int64_t g0, int64_t g1) {
  for (int64_t g = g0; g < g1; ++g) {
    int64_t m = m0;
    for (; m + 4 <= m1; m += 4) K16Group<4>(a, m, g);
    switch (m1 - m) {
      case 1: K16Group<1>(a, m, g); break;
      case 2: K16Group<2>(a, m, g); break;
      case 3: K16Group<3>(a, m, g); break;
      default: break;
    }
  }
}

void qs8_bspmm_s8c4__neondot(const Qs8SpmmArgs& a, int64_t m0, int64_t m1, int64_t s0, int64_t s1) {
  for (int64_t s = s0; s < s1; ++s) {
    if (a.At != nullptr) {
      for (int64_t m = m0; m < m1; m += 8) BsrTile(a, m / 8, m1, s);
      continue;
    }
    int64_t m = m0;
    for (; m + 4 <= m1; m += 4) BsrSlice<4>(a, m, s);
    switch (m1 - m) {
      case 1: BsrSlice<1>(a, m, s); break;
      case 2: BsrSlice<2>(a, m, s); break;
      case 3: BsrSlice<3>(a, m, s); break;
      default: break;
    }
  }
}

}  // namespace neon
}  // namespace lowbit
