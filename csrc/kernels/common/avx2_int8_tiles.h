// The blocking of the AVX2 int8 GEMMs over the "qs8-n16k4" layout (qs8_gemm.h), shared by
// qs8_gemm_5x16c4__avx2 (exact s8 x s8, the sign trick) and qs7_gemm_6x16c4__avx2 (biased u8
// x 7-bit weights); each kernel file supplies its Cell (how activations are packed, broadcast
// and multiplied, and the epilogue's correction) and calls Gemm<Cell>. Include only from
// translation units compiled with -mavx2 -mfma.
//
// Large M: K blocks (<= kKC) outermost, then column blocks whose weights stay in L2, then
// row tiles of Cell::kMR rows (balanced heights); each row tile's activations are copied once
// per block into a small buffer (Cell::kAB bytes per row per 4-k step) so the inner loop
// broadcasts from L1. Partial int32 sums of earlier K blocks wait in C (exact, so blocking
// cannot change a result). Small M (1..4 rows, memory-bound): several panel streams at once,
// straight from the activation rows, prefetching kPf bytes ahead.
//
// A Cell provides:
//   static constexpr int kMR, kAB;
//   struct A;                                       the broadcast activations of one row
//   static void PackStep(const int8_t* src4, int8_t* dst, int r, int MR)   4 k of row r into
//       the buffer step at dst (its layout is the cell's: it reads it back in Packed)
//   template <int MR> static void PackRows32(const __m256i v, int8_t* buf, int64_t s, int r)
//       32 k (8 steps, v) of row r at step s
//   template <int MR> static A Packed(const int8_t* step, int r)   from a buffer step
//   static A Row(const int8_t* a4)                   from an activation row (small M)
//   static void Dot(__m256i& acc, __m256i w, const A& a, __m256i ones)   acc += a . w (32 MACs)
//   static __m256i Corr(const Qs8GemmArgs& g, int64_t n)   subtracted from the sums of the 8
//       columns at n before they are scaled (zero, or 128 * colsum for biased activations)
#pragma once
#include <immintrin.h>

#include <cstring>

#include "kernels/qs8-gemm/qs8_gemm.h"

namespace lowbit {
namespace avx2 {
namespace {  // internal linkage: each kernel file gets its own instantiations
namespace int8tiles {

constexpr int64_t kKC = 1024;             // K block of the tiled path (k values)
constexpr int64_t kL2Block = 256 * 1024;  // bytes of weights per column block
constexpr int64_t kPf = 1024;             // prefetch distance (bytes) along each weight stream (small M)

inline __m256i Bcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

inline __m256i TailMask(int64_t n) {  // lanes [0, n) set, n clamped to [0, 8]
  n = n < 0 ? 0 : (n > 8 ? 8 : n);
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int32_t(n)), idx);
}

// acc += p. The add is an asm statement with acc in/out: GCC 12 otherwise copies (and spills)
// accumulator arrays around the intrinsics.
inline void AddD(__m256i& acc, __m256i p) { asm("vpaddd %1, %0, %0" : "+x"(acc) : "x"(p)); }

// The packed column sums of the 8 columns at n (the array is padded to whole panels).
inline __m256i Colsum8(const Qs8GemmArgs& g, int64_t n) {
  const int64_t P = (g.N + 15) / 16, Kp = qs8_kp(g.K);
  const int32_t* cs = reinterpret_cast<const int32_t*>(g.W + P * Kp * 16 + P * 16 * 4) + n;
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cs));
}

// Epilogue for one row and one 8-column half: correction, scale, bias, ReLU, store ncols (<= 8).
inline void Store8(const Qs8GemmArgs& g, __m256i acc, __m256i corr, int64_t m, int64_t n, int64_t ncols,
                   const float* wscale) {
  const __m256 s = _mm256_mul_ps(_mm256_set1_ps(g.a_scale[m]), _mm256_loadu_ps(wscale));
  __m256 y = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(acc, corr)), s);
  float* c = g.C + m * g.ldc + n;
  if (ncols >= 8) {
    if (g.bias) y = _mm256_add_ps(y, _mm256_loadu_ps(g.bias + n));
    if (g.act == Activation::kRelu) y = _mm256_max_ps(_mm256_setzero_ps(), y);
    _mm256_storeu_ps(c, y);
  } else if (ncols > 0) {
    const __m256i mk = TailMask(ncols);
    if (g.bias) y = _mm256_add_ps(y, _mm256_maskload_ps(g.bias + n, mk));
    if (g.act == Activation::kRelu) y = _mm256_max_ps(_mm256_setzero_ps(), y);
    _mm256_maskstore_ps(c, mk, y);
  }
}

struct KBlock {
  int64_t k0, k1;  // [k0, k1), multiples of 4
  bool first, last;
};

// Copies rows [m, m+MR) x [k0, k1) into buf, Cell::kAB * MR bytes per 4-k step.
template <class Cell, int MR>
void PackA(const Qs8GemmArgs& g, int64_t m, KBlock kb, int8_t* buf) {
  const int64_t steps = (kb.k1 - kb.k0) / 4;
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    const int8_t* src = g.A + (m + r) * g.lda + kb.k0;
    int64_t s = 0;
    for (; s + 8 <= steps; s += 8)  // 32 bytes of the row: 8 steps
      Cell::template PackRows32<MR>(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 4 * s)), buf, s, r);
    for (; s < steps; ++s) Cell::PackStep(src + 4 * s, buf + s * Cell::kAB * MR, r, MR);
  }
}

// MR rows x NC 8-column vectors (columns [n, n + 8*NC), ncols of them valid) over the K block,
// activations from the packed buffer. Column vector c is half (n/8 + c) % 2 of panel (n + 8c)/16.
template <class Cell, int MR, int NC>
__attribute__((noinline)) void TilePacked(const Qs8GemmArgs& g, const int8_t* ap, int64_t m, int64_t n, int64_t ncols,
                                          KBlock kb) {
  const int64_t Kp = qs8_kp(g.K), P = (g.N + 15) / 16, ps = Kp * 16;
  const uint8_t* wp[NC];
#pragma GCC unroll 16
  for (int c = 0; c < NC; ++c) wp[c] = g.W + ((n + 8 * c) / 16) * ps + kb.k0 * 16 + ((n / 8 + c) % 2) * 32;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[MR][NC];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 16
    for (int c = 0; c < NC; ++c) {
      if (kb.first) {
        acc[r][c] = _mm256_setzero_si256();
      } else {
        const int32_t* cp = reinterpret_cast<const int32_t*>(g.C + (m + r) * g.ldc + n + 8 * c);
        acc[r][c] = ncols >= 8 * c + 8 ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cp))
                                       : _mm256_maskload_epi32(cp, TailMask(ncols - 8 * c));
      }
    }
  const int64_t steps = (kb.k1 - kb.k0) / 4;
  for (int64_t s = 0; s < steps; ++s) {
    __m256i w[NC];
#pragma GCC unroll 16
    for (int c = 0; c < NC; ++c) w[c] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp[c] + s * 64));
    const int8_t* as = ap + s * Cell::kAB * MR;
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const typename Cell::A a = Cell::template Packed<MR>(as, r);
#pragma GCC unroll 16
      for (int c = 0; c < NC; ++c) Cell::Dot(acc[r][c], w[c], a, ones);
    }
  }
  if (!kb.last) {
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 16
      for (int c = 0; c < NC; ++c) {
        int32_t* cp = reinterpret_cast<int32_t*>(g.C + (m + r) * g.ldc + n + 8 * c);
        if (ncols >= 8 * c + 8) _mm256_storeu_si256(reinterpret_cast<__m256i*>(cp), acc[r][c]);
        else if (ncols > 8 * c) _mm256_maskstore_epi32(cp, TailMask(ncols - 8 * c), acc[r][c]);
      }
    return;
  }
  const float* wscale = reinterpret_cast<const float*>(g.W + P * ps) + n;
#pragma GCC unroll 16
  for (int c = 0; c < NC; ++c) {
    const __m256i corr = Cell::Corr(g, n + 8 * c);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) Store8(g, acc[r][c], corr, m + r, n + 8 * c, ncols - 8 * c, wscale + 8 * c);
  }
}

template <class Cell, int MR, int NC>
void ColsPacked(const Qs8GemmArgs& g, const int8_t* buf, int64_t m, int64_t n0, int64_t n1, KBlock kb) {
  int64_t n = n0;
  for (; n + 8 * NC <= n1; n += 8 * NC) TilePacked<Cell, MR, NC>(g, buf, m, n, 8 * NC, kb);
  if (n >= n1) return;
  if constexpr (NC > 1) {
    if (n1 - n > 8 * (NC - 1)) return TilePacked<Cell, MR, NC>(g, buf, m, n, n1 - n, kb);
    ColsPacked<Cell, MR, NC - 1>(g, buf, m, n, n1, kb);
  } else {
    TilePacked<Cell, MR, 1>(g, buf, m, n, n1 - n, kb);
  }
}

template <class Cell, int MR>
void RowTile(const Qs8GemmArgs& g, int8_t* buf, int64_t m, int64_t n0, int64_t n1, KBlock kb) {
  PackA<Cell, MR>(g, m, kb, buf);
  ColsPacked<Cell, MR, 2>(g, buf, m, n0, n1, kb);  // MR x 16: one panel
}

template <class Cell>
void Tiled(const Qs8GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  constexpr int64_t kMR = Cell::kMR;
  const int64_t rows = m1 - m0, Kp = qs8_kp(g.K);
  const int64_t nkb = (Kp + kKC - 1) / kKC;
  const int64_t kcb = (Kp / 4 + nkb - 1) / nkb * 4;  // balanced K blocks, multiples of 4
  int64_t nc = kL2Block / (kcb > 0 ? kcb : 4) / 16 * 16;
  if (nc < 16) nc = 16;
  const int64_t ntiles = (rows + kMR - 1) / kMR;
  const int64_t base = rows / ntiles, extra = rows % ntiles;  // balanced tile heights (differ by <= 1)
  alignas(64) int8_t buf[kMR * Cell::kAB * (kKC / 4)];
  for (int64_t pc = 0; pc < Kp; pc += kcb) {
    const KBlock kb{pc, pc + kcb < Kp ? pc + kcb : Kp, pc == 0, pc + kcb >= Kp};
    for (int64_t jc = n0; jc < n1; jc += nc) {
      const int64_t jend = jc + nc < n1 ? jc + nc : n1;
      int64_t m = m0;
      for (int64_t it = 0; it < ntiles; ++it) {
        const int64_t mr = base + (it < extra ? 1 : 0);
        switch (mr) {
          case 1: RowTile<Cell, 1>(g, buf, m, jc, jend, kb); break;
          case 2: RowTile<Cell, 2>(g, buf, m, jc, jend, kb); break;
          case 3: RowTile<Cell, 3>(g, buf, m, jc, jend, kb); break;
          case 4: RowTile<Cell, 4>(g, buf, m, jc, jend, kb); break;
          case 5: RowTile<Cell, kMR >= 5 ? 5 : 4>(g, buf, m, jc, jend, kb); break;
          default: RowTile<Cell, kMR>(g, buf, m, jc, jend, kb); break;
        }
        m += mr;
      }
    }
  }
}

// MR rows x NP panels over the whole K, straight from the activation rows (small M).
template <class Cell, int MR, int NP>
__attribute__((noinline)) void TileStream(const Qs8GemmArgs& g, int64_t m, int64_t nb, int64_t ncols) {
  const int64_t Kp = qs8_kp(g.K), P = (g.N + 15) / 16, ps = Kp * 16;
  const uint8_t* W = g.W + (nb / 16) * ps;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[MR][2 * NP];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 16
    for (int c = 0; c < 2 * NP; ++c) acc[r][c] = _mm256_setzero_si256();
  const int8_t* a[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) a[r] = g.A + (m + r) * g.lda;
  // Each stream prefetches kPf bytes ahead; over its last kPf bytes the prefetch moves on to the
  // next tile's panel of the same position (NP panels on), so the next tile's streams start warm
  // (past the end of the weights it is only a hint: prefetches never fault).
  const int64_t kswitch = Kp - kPf / 16 > 0 ? (Kp - kPf / 16 + 3) / 4 * 4 : 0;
  int64_t pf = kPf;
  for (int64_t k = 0; k < Kp; k += 4) {
    if (k == kswitch) pf += (NP - 1) * ps;
    typename Cell::A av[MR];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) av[r] = Cell::Row(a[r] + k);
#pragma GCC unroll 16
    for (int p = 0; p < NP; ++p) {
      const uint8_t* src = W + p * ps + k * 16;
      _mm_prefetch(reinterpret_cast<const char*>(src) + pf, _MM_HINT_T0);
      const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
      const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 32));
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        Cell::Dot(acc[r][2 * p], w0, av[r], ones);
        Cell::Dot(acc[r][2 * p + 1], w1, av[r], ones);
      }
    }
  }
  const float* wscale = reinterpret_cast<const float*>(g.W + P * ps) + nb;
#pragma GCC unroll 16
  for (int c = 0; c < 2 * NP; ++c) {
    const __m256i corr = Cell::Corr(g, nb + 8 * c);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) Store8(g, acc[r][c], corr, m + r, nb + 8 * c, ncols - 8 * c, wscale + 8 * c);
  }
}

template <class Cell, int MR, int NP>
void ColsStream(const Qs8GemmArgs& g, int64_t m, int64_t n0, int64_t n1) {
  int64_t nb = n0;
  for (; nb + 16 * NP <= n1; nb += 16 * NP) TileStream<Cell, MR, NP>(g, m, nb, 16 * NP);
  if constexpr (NP > 1) {
    if (nb < n1) ColsStream<Cell, MR, NP / 2>(g, m, nb, n1);
  } else {
    if (nb < n1) TileStream<Cell, MR, 1>(g, m, nb, n1 - nb);
  }
}

// Rows [m0, m1) x columns [n0, n1): 4 panel streams at M = 1 (measured on the qs8 kernel: 1 is
// 3x slower, 2 and 8 ~10%), 2 at M = 2, 1 at M = 3..4; the tiled path from M = 5.
template <class Cell>
void Gemm(const Qs8GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  if (m1 <= m0 || n1 <= n0) return;
  switch (m1 - m0) {
    case 1: return ColsStream<Cell, 1, 4>(g, m0, n0, n1);
    case 2: return ColsStream<Cell, 2, 2>(g, m0, n0, n1);
    case 3: return ColsStream<Cell, 3, 1>(g, m0, n0, n1);
    case 4: return ColsStream<Cell, 4, 1>(g, m0, n0, n1);
    default: return Tiled<Cell>(g, m0, m1, n0, n1);
  }
}

}  // namespace int8tiles
}  // namespace
}  // namespace avx2
}  // namespace lowbit
