// AVX2 int8 SELL-8 matmuls (see qs8_spmm.h). Compile with: -mavx2 -mfma
//
// Unstructured: vpgatherdd loads 4 bytes at A + idx for the 8 lanes; shifting left then
// arithmetic-right by 24 keeps the sign-extended first byte (rows are readable 4 bytes
// past K for this); vpmulld by the sign-extended weights and vpaddd accumulate exactly.
// 1x4 blocks: vpgatherdd at A + 4*idx fetches each lane's 4 activations; vpmaddubsw with
// the sign trick (|a| as u8, sign(w, a) as s8; both in [-127, 127], so pairs never saturate)
// and vpmaddwd by ones give the block's dot product per lane. With packed 8-row tiles the
// gather disappears: one block meets 8 rows in one 32-byte load, the block's 4 weights broadcast.
#include <immintrin.h>

#include <cstring>

#include "qs8_spmm.h"

namespace lowbit {
namespace avx2 {
namespace {

// acc[r] (8 lanes of one row) -> scaled, biased, activated, stored through perm
inline void Store(const Qs8SpmmArgs& a, int64_t m, int64_t s, __m256i acc) {
  const SellMatrix& w = *a.W;
  alignas(32) int32_t v[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(v), acc);
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

template <int MR>
void CsrSlice(const Qs8SpmmArgs& a, int64_t m, int64_t s) {
  const SellMatrix& w = *a.W;
  const int8_t* val = reinterpret_cast<const int8_t*>(w.val);
  const int* x[MR];
  __m256i acc[MR];
  for (int r = 0; r < MR; ++r) {
    x[r] = reinterpret_cast<const int*>(a.A + (m + r) * a.lda);
    acc[r] = _mm256_setzero_si256();
  }
  const int64_t t1 = w.slice[s + 1];
  for (int64_t t = w.slice[s]; t < t1; ++t) {
    const __m256i idx = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.idx + t * kSellC)));
    const __m256i v = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(val + t * kSellC)));
    for (int r = 0; r < MR; ++r) {
      const __m256i g = _mm256_i32gather_epi32(x[r], idx, 1);
      const __m256i xa = _mm256_srai_epi32(_mm256_slli_epi32(g, 24), 24);
      acc[r] = _mm256_add_epi32(acc[r], _mm256_mullo_epi32(xa, v));
    }
  }
  for (int r = 0; r < MR; ++r) Store(a, m + r, s, acc[r]);
}

template <int MR>
void BsrSlice(const Qs8SpmmArgs& a, int64_t m, int64_t s) {
  const SellMatrix& w = *a.W;
  const int* x[MR];
  __m256i acc[MR];
  const __m256i ones = _mm256_set1_epi16(1);
  for (int r = 0; r < MR; ++r) {
    x[r] = reinterpret_cast<const int*>(a.A + (m + r) * a.lda);
    acc[r] = _mm256_setzero_si256();
  }
  const int64_t t1 = w.slice[s + 1];
  for (int64_t t = w.slice[s]; t < t1; ++t) {
    const __m256i idx = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.idx + t * kSellC)));
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.val + t * kSellC * 4));
    for (int r = 0; r < MR; ++r) {
      const __m256i g = _mm256_i32gather_epi32(x[r], idx, 4);
      const __m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(g), _mm256_sign_epi8(v, g));
      acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(p, ones));
    }
  }
  for (int r = 0; r < MR; ++r) Store(a, m + r, s, acc[r]);
}

// 8 rows (one packed tile) x one slice: lane j's accumulator holds its column for the 8 rows.
void BsrTile(const Qs8SpmmArgs& a, int64_t tile, int64_t m1, int64_t s) {
  const SellMatrix& w = *a.W;
  const int64_t nb = (w.K + 3) / 4;
  const uint8_t* xt = reinterpret_cast<const uint8_t*>(a.At) + tile * nb * 32;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[8];
  for (int j = 0; j < 8; ++j) acc[j] = _mm256_setzero_si256();
  const int64_t t1 = w.slice[s + 1];
  for (int64_t t = w.slice[s]; t < t1; ++t) {
    const uint16_t* idx = w.idx + t * kSellC;
    const uint8_t* v = w.val + t * kSellC * 4;
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) {
      int32_t wv;
      std::memcpy(&wv, v + 4 * j, 4);
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xt + int64_t(idx[j]) * 32));
      const __m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(xv), _mm256_sign_epi8(_mm256_set1_epi32(wv), xv));
      acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(p, ones));
    }
  }
  // transpose 8 lanes x 8 rows -> per row, the 8 lanes
  alignas(32) int32_t v[8][8];
  for (int j = 0; j < 8; ++j) _mm256_store_si256(reinterpret_cast<__m256i*>(v[j]), acc[j]);
  const uint32_t* perm = w.perm + s * kSellC;
  const float* sc = w.scale + s * kSellC;
  for (int r = 0; r < 8 && tile * 8 + r < m1; ++r) {
    const int64_t m = tile * 8 + r;
    float* c = a.C + m * a.ldc;
    for (int j = 0; j < kSellC; ++j) {
      const uint32_t n = perm[j];
      if (n == kSellNoColumn) continue;
      float y = float(v[j][r]) * (a.a_scale[m] * sc[j]);
      if (a.bias) y = y + a.bias[n];
      if (a.act == Activation::kRelu) y = (0.0f > y) ? 0.0f : y;
      c[n] = y;
    }
  }
}


}  // namespace

void qs8_spmm_s8m4__avx2(const Qs8SpmmArgs& a, int64_t m0, int64_t m1, int64_t s0, int64_t s1) {
  for (int64_t s = s0; s < s1; ++s) {
    int64_t m = m0;
    for (; m + 4 <= m1; m += 4) CsrSlice<4>(a, m, s);
    switch (m1 - m) {
      case 1: CsrSlice<1>(a, m, s); break;
      case 2: CsrSlice<2>(a, m, s); break;
      case 3: CsrSlice<3>(a, m, s); break;
      default: break;
    }
  }
}

void qs8_bspmm_s8c4__avx2(const Qs8SpmmArgs& a, int64_t m0, int64_t m1, int64_t s0, int64_t s1) {
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

}  // namespace avx2
}  // namespace lowbit
