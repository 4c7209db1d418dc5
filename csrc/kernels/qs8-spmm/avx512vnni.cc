// AVX-512 VNNI int8 sparse matmuls (see qs8_spmm.h). Compile with:
// -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512vnni
//
// vpdpbusd multiplies u8 x s8: the activations arrive biased (q + 128, the table asks
// qs8-quant for it), and each column's 128 * sum(w) is subtracted at the end (one extra
// vpdpbusd of 0x80 bytes against the weights per step, shared by all rows; the tile path
// takes it from wsum instead). int32 lanes wrap, but the final difference is the exact sum,
// which fits (K <= kQs8MaxK).
//  - K16: two cells per zmm (their chunks broadcast into the low and high 256 bits), one
//    vpshufb and one vpdpbusd per pair of cells and row; the halves are folded at the end.
//  - 1x4 blocks, few rows: one step per ymm (8 lanes of 4 activations from scalar loads).
//  - 1x4 blocks, packed 8- or 16-row tiles: per (step, lane) one 32- or 64-byte load and one
//    256- or 512-bit EVEX vpdpbusd with the block's 4 weights broadcast from memory; three
//    slices interleaved (BsrTile3); output staged (Yt) or scattered to C.
//  - unstage: staged lanes to C through 16 x 16 (or 8 x 8) register transposes; the activation
//    tiles are packed through the same transposes.
// GCC 12's AVX-512 headers self-initialise _mm512_undefined_*(): silence its -Wmaybe-uninitialized false positives.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "kernels/common/avx512.h"  // intrinsics, and vpdpbusd in place (SIMDe in the emulated test build)

#include <cstring>

#include "qs8_spmm.h"
#include "kernels/common/prefetch.h"

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
void K16Group(const Qs8K16Args& a, int64_t m, int64_t g, bool stream) {
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
    if (stream) {  // two cells per step: 64 bytes of shuffles, 64 of values, 4 of chunk numbers
      PrefetchStream<64>(w.shuf + 32 * c, kStreamAhead, a.prefetch);
      PrefetchStream<64>(w.val + 32 * c, kStreamAhead, a.prefetch);
      PrefetchStream<4>(w.chunk + c, kStreamAhead / 16, a.prefetch);
    }
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

// 8 lanes of 4 activation bytes (one step)
inline __m256i Gather8x4(const int8_t* x, const uint16_t* i) {
  return _mm256_inserti128_si256(_mm256_castsi128_si256(Gather4x4(x, i)), Gather4x4(x, i + 4), 1);
}

// One 256-bit vpdpbusd per step and row, four steps per iteration (128 bytes of values, two
// lines, and 64 of indices, one line, each prefetched once at level P), even and odd steps into
// two accumulators (int32 sums wrap: any order gives the same bits), the biased activations'
// correction from wsum. Measured against two steps per zmm with the correction as one more
// vpdpbusd and a prefetch test per step (M = 1, 4096 x 4096, 80% 1x4 blocks, Zen 4, alternated in
// one process): 162 vs 187 us with the weights in L3, 192-204 vs 216-233 us streamed from DRAM.
// noinline: inlined into the driver, its registers were spilled around the gathers (~40% slower)
template <int MR, StreamPrefetch P>
__attribute__((noinline)) void BsrSlice(const Qs8SpmmArgs& a, int64_t m, int64_t s) {
  const SellMatrix& w = *a.W;
  const int8_t* x[MR];
  __m256i acc0[MR], acc1[MR];
  for (int r = 0; r < MR; ++r) {
    x[r] = a.A + (m + r) * a.lda;
    acc0[r] = _mm256_setzero_si256();
    acc1[r] = _mm256_setzero_si256();
  }
  int64_t t = w.slice[s];
  const int64_t t1 = w.slice[s + 1];
  for (; t + 4 <= t1; t += 4) {
    const uint8_t* v = w.val + t * kSellC * 4;
    const uint16_t* idx = w.idx + t * kSellC;
    PrefetchSell4<P>(v, idx);
#pragma GCC unroll 4
    for (int u = 0; u < 4; ++u) {
      const __m256i vu = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + 32 * u));
#pragma GCC unroll 4
      for (int r = 0; r < MR; ++r) Dpbusd256(u % 2 ? acc1[r] : acc0[r], Gather8x4(x[r], idx + 8 * u), vu);
    }
  }
  for (; t < t1; ++t) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.val + t * kSellC * 4));
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) Dpbusd256(acc0[r], Gather8x4(x[r], w.idx + t * kSellC), v);
  }
  const __m256i cf = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.wsum + s * kSellC));
  for (int r = 0; r < MR; ++r)
    Store8(a.a_scale, a.bias, a.act, w.scale + s * kSellC, w.perm + s * kSellC, kSellC, m + r, a.C + (m + r) * a.ldc,
           _mm256_sub_epi32(_mm256_add_epi32(acc0[r], acc1[r]), cf));
}

// Vector types of the two tile heights: 8 rows (ymm, as the other ISAs' tiles) or 16 (zmm).
// DotB(acc, u8, p): acc += u8 x the 4 signed bytes at p, broadcast from memory.
template <int R>
struct TileVec;
template <>
struct TileVec<8> {
  using V = __m256i;
  static constexpr int kShift = 5;  // log2 of a block's bytes in the tile (8 rows x 4)
  static V Zero() { return _mm256_setzero_si256(); }
  static V Load(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
  static void DotB(V& acc, V u8, const int8_t* p) { DpbusdBcast256(acc, u8, p); }
  static void Store(int32_t* o, V v) { _mm256_store_si256(reinterpret_cast<__m256i*>(o), v); }
};
template <>
struct TileVec<16> {
  using V = __m512i;
  static constexpr int kShift = 6;  // 16 rows x 4 bytes
  static V Zero() { return _mm512_setzero_si512(); }
  static V Load(const void* p) { return _mm512_loadu_si512(p); }
  static void DotB(V& acc, V u8, const int8_t* p) { DpbusdBcast(acc, u8, p); }
  static void Store(int32_t* o, V v) { _mm512_store_si512(o, v); }
};

// Byte offset in the tile of the block whose 16-bit index is lane k of the 64-bit word q
// (shift and mask instead of a load per index).
template <int R, int k>
inline uint64_t BlockOffset(uint64_t q) {
  constexpr int sh = TileVec<R>::kShift;
  constexpr uint64_t mask = uint64_t(0xFFFF) << sh;
  if constexpr (k == 0) return (q << sh) & mask;  // constexpr: no negative shift instantiated for lane 0
  else return (q >> (16 * k - sh)) & mask;
}

// Per-step work of a slice against a tile of R rows: its 8 block indices are two 64-bit
// loads, each turned into a byte offset in the tile by a shift and a mask; each lane's block
// then loads its R x 4 activation bytes (one vector) into one vpdpbusd whose 4 weights come
// from memory, broadcast ({1to16} / {1to8}). The biased activations' correction is not
// accumulated here: it is the lane's wsum, subtracted at the end.
//   Measured against the earlier forms (M = 16, 4096 x 4096, 80% 1x4 blocks, alternated in one
//   process on an Emerald Rapids Xeon): the weights as one 32-byte load per step, each lane's
//   broadcast by a register permute, took ~6% longer; the correction as one more vpdpbusd per
//   step, ~3% longer; a 16-bit load per index instead of the shifts, ~14% longer.
// The lanes' accumulators are 8 named variables per slice (as an array, the compiler kept them
// in memory: each step then waited on a store-to-load round trip per lane, ~6 cycles per block).
#define LOWBIT_BSR_STEP(c, idx, v)                                       \
  do {                                                                   \
    uint64_t qa, qb;                                                     \
    std::memcpy(&qa, idx, 8);                                            \
    std::memcpy(&qb, idx + 4, 8);                                        \
    T::DotB(c##0, T::Load(xt + BlockOffset<R, 0>(qa)), v + 0);           \
    T::DotB(c##1, T::Load(xt + BlockOffset<R, 1>(qa)), v + 4);           \
    T::DotB(c##2, T::Load(xt + BlockOffset<R, 2>(qa)), v + 8);           \
    T::DotB(c##3, T::Load(xt + BlockOffset<R, 3>(qa)), v + 12);          \
    T::DotB(c##4, T::Load(xt + BlockOffset<R, 0>(qb)), v + 16);          \
    T::DotB(c##5, T::Load(xt + BlockOffset<R, 1>(qb)), v + 20);          \
    T::DotB(c##6, T::Load(xt + BlockOffset<R, 2>(qb)), v + 24);          \
    T::DotB(c##7, T::Load(xt + BlockOffset<R, 3>(qb)), v + 28);          \
    idx += kSellC;                                                       \
    v += kSellC * 4;                                                     \
  } while (0)
#define LOWBIT_BSR_ZERO(c)                                                                    \
  V c##0 = T::Zero(), c##1 = T::Zero(), c##2 = T::Zero(), c##3 = T::Zero(), c##4 = T::Zero(), \
    c##5 = T::Zero(), c##6 = T::Zero(), c##7 = T::Zero()
#define LOWBIT_BSR_SETUP     \
  using T = TileVec<R>;      \
  using V = typename T::V;   \
  const SellMatrix& w = *a.W; \
  const uint8_t* xt = reinterpret_cast<const uint8_t*>(a.At) + tile * ((w.K + 3) / 4) * (4 * R)

template <int R>
struct BsrOut {
  alignas(64) int32_t o[8][R];
};

// The epilogue of a slice and a tile, one vector of R rows per lane j:
// y = float(acc - wsum) * (a_scale[m] * scale[j]), + bias, ReLU as (0 > y) ? 0 : y
// (vmaxps(0, y) returns y for a NaN y, as that comparison does). Staged (a.Yt), each lane's
// vector is stored whole; else the lanes' values go to their columns of C row by row.
template <int R>
void BsrStore(const Qs8SpmmArgs& a, int64_t tile, int64_t m1, int64_t s, const BsrOut<R>& out) {
  const SellMatrix& w = *a.W;
  const uint32_t* perm = w.perm + s * kSellC;
  const float* sc = w.scale + s * kSellC;
  const int32_t* ws = a.wsum + s * kSellC;
  const int64_t m0 = tile * R, rows = m1 - m0 < R ? m1 - m0 : R;
  const __mmask16 rk = __mmask16((1u << rows) - 1u), full = __mmask16(R == 8 ? 0xFF : 0xFFFF);
  const __m512 as = _mm512_maskz_loadu_ps(rk, a.a_scale + m0);
  float* yt = a.Yt != nullptr ? a.Yt + (tile * w.S + s) * kSellC * R : nullptr;
  alignas(64) float y[8][R];
  for (int j = 0; j < kSellC; ++j) {
    const __m512i acc = _mm512_sub_epi32(_mm512_maskz_loadu_epi32(full, out.o[j]), _mm512_set1_epi32(ws[j]));
    __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), _mm512_mul_ps(as, _mm512_set1_ps(sc[j])));
    if (a.bias && perm[j] != kSellNoColumn) v = _mm512_add_ps(v, _mm512_set1_ps(a.bias[perm[j]]));
    if (a.act == Activation::kRelu) v = _mm512_max_ps(_mm512_setzero_ps(), v);
    _mm512_mask_storeu_ps(yt != nullptr ? yt + j * R : y[j], full, v);
  }
  if (yt != nullptr) return;
  for (int64_t r = 0; r < rows; ++r) {
    float* c = a.C + (m0 + r) * a.ldc;
    for (int j = 0; j < kSellC; ++j)
      if (perm[j] != kSellNoColumn) c[perm[j]] = y[j][r];
  }
}

#define LOWBIT_BSR_SAVE(out, c) \
  do {                          \
    T::Store(out.o[0], c##0);   \
    T::Store(out.o[1], c##1);   \
    T::Store(out.o[2], c##2);   \
    T::Store(out.o[3], c##3);   \
    T::Store(out.o[4], c##4);   \
    T::Store(out.o[5], c##5);   \
    T::Store(out.o[6], c##6);   \
    T::Store(out.o[7], c##7);   \
  } while (0)

// One slice against one tile of R rows.
template <int R>
void BsrTile1(const Qs8SpmmArgs& a, int64_t tile, int64_t m1, int64_t s) {
  LOWBIT_BSR_SETUP;
  LOWBIT_BSR_ZERO(c);
  const uint16_t* idx = w.idx + int64_t(w.slice[s]) * kSellC;
  const int8_t* v = reinterpret_cast<const int8_t*>(w.val) + int64_t(w.slice[s]) * kSellC * 4;
  for (int64_t t = w.slice[s]; t < int64_t(w.slice[s + 1]); ++t) LOWBIT_BSR_STEP(c, idx, v);
  BsrOut<R> out;
  LOWBIT_BSR_SAVE(out, c);
  BsrStore<R>(a, tile, m1, s, out);
}

// Slices s and s + 1 against one tile of R rows, their steps interleaved: a lane's blocks
// ascend in K, so both slices sweep the tile's rows together, and a line of a 16-row tile
// (64 KB for K = 4096, more than L1) fetched from L2 serves both (5-8% faster at M = 16 than
// one slice at a time).
template <int R>
void BsrTile2(const Qs8SpmmArgs& a, int64_t tile, int64_t m1, int64_t s) {
  LOWBIT_BSR_SETUP;
  LOWBIT_BSR_ZERO(c);
  LOWBIT_BSR_ZERO(d);
  const uint16_t* ic = w.idx + int64_t(w.slice[s]) * kSellC;
  const int8_t* vc = reinterpret_cast<const int8_t*>(w.val) + int64_t(w.slice[s]) * kSellC * 4;
  const uint16_t* id = w.idx + int64_t(w.slice[s + 1]) * kSellC;
  const int8_t* vd = reinterpret_cast<const int8_t*>(w.val) + int64_t(w.slice[s + 1]) * kSellC * 4;
  const int64_t lc = int64_t(w.slice[s + 1]) - int64_t(w.slice[s]);
  const int64_t ld = int64_t(w.slice[s + 2]) - int64_t(w.slice[s + 1]);
  const int64_t common = lc < ld ? lc : ld;
  for (int64_t t = 0; t < common; ++t) {
    LOWBIT_BSR_STEP(c, ic, vc);
    LOWBIT_BSR_STEP(d, id, vd);
  }
  for (int64_t t = common; t < lc; ++t) LOWBIT_BSR_STEP(c, ic, vc);
  for (int64_t t = common; t < ld; ++t) LOWBIT_BSR_STEP(d, id, vd);
  BsrOut<R> out;
  LOWBIT_BSR_SAVE(out, c);
  BsrStore<R>(a, tile, m1, s, out);
  LOWBIT_BSR_SAVE(out, d);
  BsrStore<R>(a, tile, m1, s + 1, out);
}
// Three slices, the same way: a third fewer sweeps of the tile (5-10% faster than pairs at
// M = 16, 4096 x 4096, 80% 1x4 blocks); 24 accumulators, and no spills. Four would need all 32
// vector registers for the accumulators alone.
template <int R>
void BsrTile3(const Qs8SpmmArgs& a, int64_t tile, int64_t m1, int64_t s) {
  LOWBIT_BSR_SETUP;
  LOWBIT_BSR_ZERO(c);
  LOWBIT_BSR_ZERO(d);
  LOWBIT_BSR_ZERO(e);
  const uint16_t* ic = w.idx + int64_t(w.slice[s]) * kSellC;
  const int8_t* vc = reinterpret_cast<const int8_t*>(w.val) + int64_t(w.slice[s]) * kSellC * 4;
  const uint16_t* id = w.idx + int64_t(w.slice[s + 1]) * kSellC;
  const int8_t* vd = reinterpret_cast<const int8_t*>(w.val) + int64_t(w.slice[s + 1]) * kSellC * 4;
  const uint16_t* ie = w.idx + int64_t(w.slice[s + 2]) * kSellC;
  const int8_t* ve = reinterpret_cast<const int8_t*>(w.val) + int64_t(w.slice[s + 2]) * kSellC * 4;
  const int64_t lc = int64_t(w.slice[s + 1]) - int64_t(w.slice[s]);
  const int64_t ld = int64_t(w.slice[s + 2]) - int64_t(w.slice[s + 1]);
  const int64_t le = int64_t(w.slice[s + 3]) - int64_t(w.slice[s + 2]);
  int64_t common = lc < ld ? lc : ld;
  common = common < le ? common : le;
  // The next three slices' values and indices (contiguous after these three) go to L2 in
  // sequence, three lines per step: with the weights in DRAM this took a 4096 x 4096 layer
  // at 80% 1x4 blocks and M = 16 from 0.45-0.53 to 0.39-0.41 ms, and cost ~1.5% with them in
  // L3 (per-stream forms cost 2-7% there; docs/kernels.md, "Weight streams"). Past the last
  // slice it prefetches beyond the blob, which is harmless (addresses, not pointers).
  const int64_t tn = int64_t(w.slice[s + 3 <= w.S ? s + 3 : w.S]);
  uintptr_t nv = reinterpret_cast<uintptr_t>(w.val) + uintptr_t(tn) * kSellC * 4;
  uintptr_t ni = reinterpret_cast<uintptr_t>(w.idx + tn * kSellC);
  for (int64_t t = 0; t < common; ++t) {
    _mm_prefetch(reinterpret_cast<const char*>(nv), _MM_HINT_T1);
    _mm_prefetch(reinterpret_cast<const char*>(nv + 64), _MM_HINT_T1);
    _mm_prefetch(reinterpret_cast<const char*>(ni), _MM_HINT_T1);
    nv += 128;
    ni += 64;
    LOWBIT_BSR_STEP(c, ic, vc);
    LOWBIT_BSR_STEP(d, id, vd);
    LOWBIT_BSR_STEP(e, ie, ve);
  }
  for (int64_t t = common; t < lc; ++t) LOWBIT_BSR_STEP(c, ic, vc);
  for (int64_t t = common; t < ld; ++t) LOWBIT_BSR_STEP(d, id, vd);
  for (int64_t t = common; t < le; ++t) LOWBIT_BSR_STEP(e, ie, ve);
  BsrOut<R> out;
  LOWBIT_BSR_SAVE(out, c);
  BsrStore<R>(a, tile, m1, s, out);
  LOWBIT_BSR_SAVE(out, d);
  BsrStore<R>(a, tile, m1, s + 1, out);
  LOWBIT_BSR_SAVE(out, e);
  BsrStore<R>(a, tile, m1, s + 2, out);
}
#undef LOWBIT_BSR_STEP
#undef LOWBIT_BSR_ZERO
#undef LOWBIT_BSR_SAVE
#undef LOWBIT_BSR_SETUP

template <int R>
void BsrTiles(const Qs8SpmmArgs& a, int64_t m0, int64_t m1, int64_t s0, int64_t s1) {
  int64_t s = s0;
  for (; s + 3 <= s1; s += 3)
    for (int64_t m = m0; m < m1; m += R) BsrTile3<R>(a, m / R, m1, s);
  for (; s + 2 <= s1; s += 2)
    for (int64_t m = m0; m < m1; m += R) BsrTile2<R>(a, m / R, m1, s);
  if (s < s1)
    for (int64_t m = m0; m < m1; m += R) BsrTile1<R>(a, m / R, m1, s);
}

// 16 staged lanes (r[i]: column n + i's 16 rows) to 16 rows of 16 columns, in registers.
__attribute__((always_inline)) inline void Transpose16(__m512 r[16]) {
  __m512 t[16], u[16];
#pragma GCC unroll 16
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  // u[i + c] holds column 4L + c of rows i .. i + 3 in its 128-bit lane L
#pragma GCC unroll 16
  for (int i = 0; i < 16; i += 4) {
    u[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
    u[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
    u[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    u[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
  }
#pragma GCC unroll 16
  for (int c = 0; c < 4; ++c) {
    const __m512 x0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88), x1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xDD);
    const __m512 y0 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88), y1 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xDD);
    r[c] = _mm512_shuffle_f32x4(x0, y0, 0x88);       // column c
    r[4 + c] = _mm512_shuffle_f32x4(x1, y1, 0x88);   // column 4 + c
    r[8 + c] = _mm512_shuffle_f32x4(x0, y0, 0xDD);   // column 8 + c
    r[12 + c] = _mm512_shuffle_f32x4(x1, y1, 0xDD);  // column 12 + c
  }
}

// The same for 8 lanes of 8 rows.
__attribute__((always_inline)) inline void Transpose8(__m256 r[8]) {
  __m256 t[8], u[8];
#pragma GCC unroll 16
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
#pragma GCC unroll 16
  for (int i = 0; i < 8; i += 4) {  // u[i + c]: column c (low half) and 4 + c (high) of rows i .. i + 3
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
#pragma GCC unroll 16
  for (int c = 0; c < 4; ++c) {
    r[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
    r[4 + c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
  }
}

}  // namespace

void qs8_spmm_k16m4__avx512vnni(const Qs8K16Args& a, int64_t m0, int64_t m1, int64_t g0, int64_t g1) {
  for (int64_t g = g0; g < g1; ++g)
    ForRowBlocks(a.prefetch, m0, m1, [&](auto mr, auto pf, int64_t m) {
      K16Group<decltype(mr)::value>(a, m, g, decltype(pf)::value != StreamPrefetch::kNone);
    });
}

namespace {

// The float vectors of the two tile heights, for the transposes below.
template <int R>
struct FloatVec;
template <>
struct FloatVec<16> {
  using V = __m512;
  static V Zero() { return _mm512_setzero_ps(); }
  static V Load(const float* p) { return _mm512_loadu_ps(p); }
  static V LoadZ(unsigned k, const void* p) { return _mm512_maskz_loadu_ps(__mmask16(k), p); }
  static void Store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static void MaskStore(float* p, unsigned k, V v) { _mm512_mask_storeu_ps(p, __mmask16(k), v); }
  static void Transpose(V r[16]) { Transpose16(r); }
};
template <>
struct FloatVec<8> {
  using V = __m256;
  static V Zero() { return _mm256_setzero_ps(); }
  static V Load(const float* p) { return _mm256_loadu_ps(p); }
  static V LoadZ(unsigned k, const void* p) { return _mm256_maskz_loadu_ps(__mmask8(k), p); }
  static void Store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static void MaskStore(float* p, unsigned k, V v) { _mm256_mask_storeu_ps(p, __mmask8(k), v); }
  static void Transpose(V r[8]) { Transpose8(r); }
};

// Columns in groups of R: each lane's R rows are one load, the group is transposed in
// registers, and each row's columns are one (masked at the end) store. The loops over i are
// unrolled so that r stays in registers.
template <int R>
void Unstage(const float* Yt, int64_t rows, const uint32_t* inv, int64_t n0, int64_t n1, float* C, int64_t ldc) {
  using F = FloatVec<R>;
  for (int64_t n = n0; n < n1; n += R) {
    const int64_t nc = n1 - n < R ? n1 - n : R;
    typename F::V r[R];
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) r[i] = i < nc ? F::Load(Yt + int64_t(inv[n + i]) * R) : F::Zero();
    F::Transpose(r);
    const unsigned k = (1u << nc) - 1u;
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i)
      if (i < rows) F::MaskStore(C + i * ldc + n, k, r[i]);
  }
}

// The activation tiles through the same transposes: R rows' 4-byte words of R consecutive
// blocks are one masked load per row, and each block's R rows one store (the words move as
// float bit patterns: loads, unpacks and shuffles do not touch them).
template <int R>
void PackA(int64_t M, int64_t K, const int8_t* A, int64_t lda, int8_t* At) {
  using F = FloatVec<R>;
  const int64_t nb = (K + 3) / 4, tiles = (M + R - 1) / R;
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t rows = M - R * t < R ? M - R * t : R;
    const int8_t* x = A + R * t * lda;
    float* dst = reinterpret_cast<float*>(At + t * nb * 4 * R);
    for (int64_t b = 0; b < nb; b += R) {
      const int64_t nc = nb - b < R ? nb - b : R;
      const unsigned k = (1u << nc) - 1u;
      typename F::V r[R];
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) r[i] = i < rows ? F::LoadZ(k, x + i * lda + 4 * b) : F::Zero();
      F::Transpose(r);
#pragma GCC unroll 16
      for (int j = 0; j < R; ++j)
        if (j < nc) F::Store(dst + (b + j) * R, r[j]);
    }
  }
}

}  // namespace

void qs8_bspmm_unstage__avx512(const float* Yt, int64_t R, int64_t rows, const uint32_t* inv, int64_t n0, int64_t n1,
                               float* C, int64_t ldc) {
  if (R == 16)
    Unstage<16>(Yt, rows, inv, n0, n1, C, ldc);
  else
    Unstage<8>(Yt, rows, inv, n0, n1, C, ldc);
}

void qs8_bspmm_pack_a__avx512(int64_t M, int64_t K, const int8_t* A, int64_t lda, int64_t R, int8_t* At) {
  if (R == 16)
    PackA<16>(M, K, A, lda, At);
  else
    PackA<8>(M, K, A, lda, At);
}

void qs8_bspmm_s8c4__avx512vnni(const Qs8SpmmArgs& a, int64_t m0, int64_t m1, int64_t s0, int64_t s1) {
  if (a.At != nullptr) {
    if (a.at_rows == 16)
      BsrTiles<16>(a, m0, m1, s0, s1);
    else
      BsrTiles<8>(a, m0, m1, s0, s1);
    return;
  }
  for (int64_t s = s0; s < s1; ++s)
    ForRowBlocks(a.prefetch, m0, m1, [&](auto mr, auto pf, int64_t m) {
      BsrSlice<decltype(mr)::value, decltype(pf)::value>(a, m, s);
    });
}

}  // namespace avx512
}  // namespace lowbit
