// AVX2 int8 SELL-8 matmuls (see qs8_spmm.h). Compile with: -mavx2 -mfma
//
// Unstructured (K16): one vpshufb per cell gathers 32 slots from a 16-byte chunk.
// 1x4 blocks (SELL-8): one 32-bit load per lane fetches its block's 4 activations; vpmaddubsw with
// the sign trick (|a| as u8, sign(w, a) as s8; both in [-127, 127], so pairs never saturate)
// and vpmaddwd by ones give the block's dot product per lane. With packed 8-row tiles the
// gather disappears: one block meets 8 rows in one 32-byte load, the block's 4 weights broadcast.
#include <immintrin.h>

#include <cstring>

#include "qs8_spmm.h"
#include "kernels/common/prefetch.h"

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

// Eight scalar loads beat vpgatherdd on Zen 3 (measured ~20% on 224K steps; ~2x at M = 1).
inline int32_t Load4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
// the 4 activations of block i[j] (bytes 4 i[j] .. 4 i[j] + 3) in lane j
inline __m256i Gather8x4(const int8_t* x, const uint16_t* i) {
  return _mm256_setr_epi32(Load4(x + 4 * i[0]), Load4(x + 4 * i[1]), Load4(x + 4 * i[2]), Load4(x + 4 * i[3]),
                           Load4(x + 4 * i[4]), Load4(x + 4 * i[5]), Load4(x + 4 * i[6]), Load4(x + 4 * i[7]));
}
// The same for one row (M = 1), where nothing amortizes the index decode: the indices are
// read two per 32-bit load and split in registers (one load and two ALU ops per pair instead
// of two loads), and each half is built by vmovd + 3 vpinsrd. On Zen 3 this takes the M = 1
// step from ~2.9 to ~2.1 ns (8 lanes; microbenchmark, 105K steps).
inline __m128i Gather4x4(const int8_t* x, const uint16_t* i) {
  uint32_t a, b;
  std::memcpy(&a, i, 4);
  std::memcpy(&b, i + 2, 4);
  __m128i v = _mm_cvtsi32_si128(Load4(x + 4 * int64_t(a & 0xFFFFu)));
  v = _mm_insert_epi32(v, Load4(x + 4 * int64_t(a >> 16)), 1);
  v = _mm_insert_epi32(v, Load4(x + 4 * int64_t(b & 0xFFFFu)), 2);
  return _mm_insert_epi32(v, Load4(x + 4 * int64_t(b >> 16)), 3);
}
inline __m256i Gather8x4Row(const int8_t* x, const uint16_t* i) {
  return _mm256_inserti128_si256(_mm256_castsi128_si256(Gather4x4(x, i)), Gather4x4(x, i + 4), 1);
}

// MR rows x one group of 8 columns: per cell, vpshufb picks the 32 slots' activations from
// the chunk's 16 (0x80 slots read 0), then the sign trick and vpmaddwd sum each column's 4 slots.
template <int MR>
void K16Group(const Qs8K16Args& a, int64_t m, int64_t g, bool stream) {
  const K16Matrix& w = *a.W;
  const __m256i ones = _mm256_set1_epi16(1);
  const int8_t* x[MR];
  __m256i acc[MR];
  for (int r = 0; r < MR; ++r) {
    x[r] = a.A + (m + r) * a.lda;
    acc[r] = _mm256_setzero_si256();
  }
  const int64_t c1 = w.group[g + 1];
  for (int64_t c = w.group[g]; c < c1; ++c) {
    if (stream) {  // a cell: 32 bytes of shuffles, 32 of values, 2 of chunk number
      PrefetchStream<32>(w.shuf + 32 * c, kStreamAhead, a.prefetch);
      PrefetchStream<32>(w.val + 32 * c, kStreamAhead, a.prefetch);
      PrefetchStream<2>(w.chunk + c, kStreamAhead / 16, a.prefetch);
    }
    const __m256i sh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.shuf + 32 * c));
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.val + 32 * c));
    const int64_t off = 16 * int64_t(w.chunk[c]);
    for (int r = 0; r < MR; ++r) {
      const __m256i xc = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x[r] + off)));
      const __m256i gx = _mm256_shuffle_epi8(xc, sh);
      const __m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(gx), _mm256_sign_epi8(v, gx));
      acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(p, ones));
    }
  }
  for (int r = 0; r < MR; ++r) {
    alignas(32) int32_t o[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(o), acc[r]);
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

template <int MR>
void BsrSlice(const Qs8SpmmArgs& a, int64_t m, int64_t s, bool stream) {
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
    const uint16_t* idx = w.idx + t * kSellC;
    if (stream) {  // a step: 32 bytes of values, 16 of indices
      PrefetchStream<32>(w.val + t * kSellC * 4, kStreamAhead, a.prefetch);
      PrefetchStream<16>(idx, kStreamAhead / 2, a.prefetch);
    }
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.val + t * kSellC * 4));
    for (int r = 0; r < MR; ++r) {
      const int8_t* xr = reinterpret_cast<const int8_t*>(x[r]);
      const __m256i g = MR == 1 ? Gather8x4Row(xr, idx) : Gather8x4(xr, idx);
      const __m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(g), _mm256_sign_epi8(v, g));
      acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(p, ones));
    }
  }
  for (int r = 0; r < MR; ++r) Store(a, m + r, s, acc[r]);
}

// 8 rows (one packed tile) x one slice: lane j's accumulator holds its column for the 8 rows.
void BsrTile(const Qs8SpmmArgs& a, int64_t tile, int64_t m1, int64_t s, bool stream) {
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
    if (stream) {  // the first tile of the call: a step is 32 bytes of values, 16 of indices
      PrefetchStream<32>(v, kStreamAhead, a.prefetch);
      PrefetchStream<16>(idx, kStreamAhead / 2, a.prefetch);
    }
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

void qs8_spmm_k16m4__avx2(const Qs8K16Args& a, int64_t m0, int64_t m1, int64_t g0, int64_t g1) {
  for (int64_t g = g0; g < g1; ++g)
    ForRowBlocks(a.prefetch, m0, m1, [&](auto mr, auto pf, int64_t m) {
      K16Group<decltype(mr)::value>(a, m, g, decltype(pf)::value != StreamPrefetch::kNone);
    });
}

void qs8_bspmm_s8c4__avx2(const Qs8SpmmArgs& a, int64_t m0, int64_t m1, int64_t s0, int64_t s1) {
  const bool pf = a.prefetch != StreamPrefetch::kNone;  // the first rows of the call prefetch
  for (int64_t s = s0; s < s1; ++s) {
    if (a.At != nullptr) {
      for (int64_t m = m0; m < m1; m += 8) BsrTile(a, m / 8, m1, s, pf && m == m0);
      continue;
    }
    ForRowBlocks(a.prefetch, m0, m1, [&](auto mr, auto p, int64_t m) {
      BsrSlice<decltype(mr)::value>(a, m, s, decltype(p)::value != StreamPrefetch::kNone);
    });
  }
}

}  // namespace avx2
}  // namespace lowbit
