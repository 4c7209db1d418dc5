// AVX-512 VNNI int8 sparse matmuls (see qs8_spmm.h). Compile with:
// -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512vnni
//
// vpdpbusd multiplies u8 x s8: the activations arrive biased (q + 128, the table asks
// qs8-quant for it), and each column's 128 * sum(w) is subtracted at the end (one extra
// vpdpbusd of 0x80 bytes against the weights per step, shared by all rows). int32 lanes
// wrap, but the final difference is the exact sum, which fits (K <= kQs8MaxK).
//  - K16: two cells per zmm (their chunks broadcast into the low and high 256 bits), one
//    vpshufb and one vpdpbusd per pair of cells and row; the halves are folded at the end.
//  - 1x4 blocks, few rows: two steps per zmm (16 lanes of 4 activations from scalar loads).
//  - 1x4 blocks, packed 8-row tiles: one 32-byte load and one 256-bit EVEX vpdpbusd with the
//    block's 4 weights broadcast per (step, lane).
// GCC 12's AVX-512 headers self-initialise _mm512_undefined_*(): silence its -Wmaybe-uninitialized false positives.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "kernels/common/avx512.h"  // intrinsics, and vpdpbusd in place (SIMDe in the emulated test build)

#include <cstring>

#include "qs8_spmm.h"

namespace lowbit {
namespace avx512 {
namespace {

inline int32_t Load4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// 64 bytes at p, or (half) 32 bytes at p and 32 zero bytes
inline __m512i Load64(const void* p, bool half) {
  if (!half) return _mm512_loadu_si512(p);
  return _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_loadu_si256(static_cast<const __m256i*>(p)), 0);
}

inline __m256i Fold(__m512i v) { return _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1)); }

inline void Store8(const float* a_scale, const float* bias, Activation act, const float* scale, const uint32_t* cols,
                   int64_t ncols, int64_t m, float* crow, __m256i acc) {
  alignas(32) int32_t o[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(o), acc);
  for (int64_t j = 0; j < ncols; ++j) {
    const uint32_t n = cols ? cols[j] : uint32_t(j);
    if (n == kSellNoColumn) continue;
    float y = float(o[j]) * (a_scale[m] * scale[j]);
    if (bias) y = y + bias[n];
    if (act == Activation::kRelu) y = (0.0f > y) ? 0.0f : y;
    crow[n] = y;
  }
}

template <int MR>
void K16Group(const Qs8K16Args& a, int64_t m, int64_t g) {
  const K16Matrix& w = *a.W;
  const __m512i k80 = _mm512_set1_epi8(int8_t(0x80));
  const int8_t* x[MR];
  __m512i acc[MR];
  __m512i corr = _mm512_setzero_si512();
  for (int r = 0; r < MR; ++r) {
    x[r] = a.A + (m + r) * a.lda;
    acc[r] = _mm512_setzero_si512();
  }
  int64_t c = w.group[g];
  const int64_t c1 = w.group[g + 1];
  for (; c < c1; c += 2) {
    const bool pair = c + 1 < c1;
    // a lone last cell: the high half loads zeros (empty weights) and repeats the chunk
    const __m512i sh = Load64(w.shuf + 32 * c, !pair);
    const __m512i v = Load64(w.val + 32 * c, !pair);
    Dpbusd(corr, k80, v);
    const int64_t o0 = 16 * int64_t(w.chunk[c]), o1 = pair ? 16 * int64_t(w.chunk[c + 1]) : o0;
    for (int r = 0; r < MR; ++r) {
      const __m256i lo = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x[r] + o0)));
      const __m256i hi = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x[r] + o1)));
      const __m512i xc = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
      Dpbusd(acc[r], _mm512_shuffle_epi8(xc, sh), v);
    }
  }
  const __m256i cf = Fold(corr);
  const int64_t ncols = w.N - 8 * g < 8 ? w.N - 8 * g : 8;
  for (int r = 0; r < MR; ++r)
    Store8(a.a_scale, a.bias ? a.bias + 8 * g : nullptr, a.act, w.scale + 8 * g, nullptr, ncols, m + r,
           a.C + (m + r) * a.ldc + 8 * g, _mm256_sub_epi32(Fold(acc[r]), cf));
}

// 4 lanes: the 4 activations of blocks i[0..3], indices read two per 32-bit load, each lane
// built by vmovd / vpinsrd (as the AVX2 kernel; a 16-lane stack array read back as one vector
// stalled on store forwarding: 1.01x dense int8 at M = 1 on an Emerald Rapids Xeon; docs/kernels.md).
inline __m128i Gather4x4(const int8_t* x, const uint16_t* i) {
  uint32_t a, b;
  std::memcpy(&a, i, 4);
  std::memcpy(&b, i + 2, 4);
  __m128i v = _mm_cvtsi32_si128(Load4(x + 4 * int64_t(a & 0xFFFFu)));
  v = _mm_insert_epi32(v, Load4(x + 4 * int64_t(a >> 16)), 1);
  v = _mm_insert_epi32(v, Load4(x + 4 * int64_t(b & 0xFFFFu)), 2);
  return _mm_insert_epi32(v, Load4(x + 4 * int64_t(b >> 16)), 3);
}

// 16 lanes (two steps of 8 entries), or 8 lanes and 8 zero lanes when only one step is left
inline __m512i Gather16x4(const int8_t* x, const uint16_t* i, bool pair) {
  const __m256i lo = _mm256_inserti128_si256(_mm256_castsi128_si256(Gather4x4(x, i)), Gather4x4(x, i + 4), 1);
  if (!pair) return _mm512_inserti64x4(_mm512_setzero_si512(), lo, 0);
  const __m256i hi = _mm256_inserti128_si256(_mm256_castsi128_si256(Gather4x4(x, i + 8)), Gather4x4(x, i + 12), 1);
  return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

template <int MR>
void BsrSlice(const Qs8SpmmArgs& a, int64_t m, int64_t s) {
  const SellMatrix& w = *a.W;
  const __m512i k80 = _mm512_set1_epi8(int8_t(0x80));
  __m512i acc[MR];
  __m512i corr = _mm512_setzero_si512();
  for (int r = 0; r < MR; ++r) acc[r] = _mm512_setzero_si512();
  int64_t t = w.slice[s];
  const int64_t t1 = w.slice[s + 1];
  for (; t < t1; t += 2) {
    const bool pair = t + 1 < t1;
    const __m512i v = Load64(w.val + t * kSellC * 4, !pair);
    Dpbusd(corr, k80, v);
    for (int r = 0; r < MR; ++r)
      Dpbusd(acc[r], Gather16x4(a.A + (m + r) * a.lda, w.idx + t * kSellC, pair), v);
  }
  const __m256i cf = Fold(corr);
  for (int r = 0; r < MR; ++r)
    Store8(a.a_scale, a.bias, a.act, w.scale + s * kSellC, w.perm + s * kSellC, kSellC, m + r, a.C + (m + r) * a.ldc,
           _mm256_sub_epi32(Fold(acc[r]), cf));
}

void BsrTile(const Qs8SpmmArgs& a, int64_t tile, int64_t m1, int64_t s) {
  const SellMatrix& w = *a.W;
  const int64_t nb = (w.K + 3) / 4;
  const uint8_t* xt = reinterpret_cast<const uint8_t*>(a.At) + tile * nb * 32;
  const __m256i k80 = _mm256_set1_epi8(int8_t(0x80));
  __m256i acc[8];
  __m256i corr = _mm256_setzero_si256();
  for (int j = 0; j < 8; ++j) acc[j] = _mm256_setzero_si256();
  const int64_t t1 = w.slice[s + 1];
  for (int64_t t = w.slice[s]; t < t1; ++t) {
    const uint16_t* idx = w.idx + t * kSellC;
    const int8_t* v = reinterpret_cast<const int8_t*>(w.val) + t * kSellC * 4;
    Dpbusd256(corr, k80, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v)));
    for (int j = 0; j < 8; ++j) {
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xt + int64_t(idx[j]) * 32));
      DpbusdBcast256(acc[j], xv, v + 4 * j);  // the block's 4 weights, {1to8}
    }
  }
  alignas(32) int32_t o[8][8], cs[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(cs), corr);
  for (int j = 0; j < 8; ++j) _mm256_store_si256(reinterpret_cast<__m256i*>(o[j]), acc[j]);
  const uint32_t* perm = w.perm + s * kSellC;
  const float* sc = w.scale + s * kSellC;
  for (int r = 0; r < 8 && tile * 8 + r < m1; ++r) {
    const int64_t m = tile * 8 + r;
    float* c = a.C + m * a.ldc;
    for (int j = 0; j < kSellC; ++j) {
      const uint32_t n = perm[j];
      if (n == kSellNoColumn) continue;
      float y = float(int32_t(uint32_t(o[j][r]) - uint32_t(cs[j]))) * (a.a_scale[m] * sc[j]);
      if (a.bias) y = y + a.bias[n];
      if (a.act == Activation::kRelu) y = (0.0f > y) ? 0.0f : y;
      c[n] = y;
    }
  }
}

}  // namespace

void qs8_spmm_k16m4__avx512vnni(const Qs8K16Args& a, int64_t m0, int64_t m1, int64_t g0, int64_t g1) {
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

void qs8_bspmm_s8c4__avx512vnni(const Qs8SpmmArgs& a, int64_t m0, int64_t m1, int64_t s0, int64_t s1) {
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

}  // namespace avx512
}  // namespace lowbit
