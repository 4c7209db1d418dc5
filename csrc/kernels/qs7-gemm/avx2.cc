// AVX2 int8 GEMM over "qs7-n16k4" (7-bit weights; see qs7_gemm.h). Compile with: -mavx2 -mfma
//
// The cell: vpmaddubsw(a + 128 as u8, w in [-64, 64]) never saturates (|pair| <= 32640),
// vpmaddwd by ones widens, vpaddd accumulates: 3 vector ops per 32 MACs. The epilogue takes
// 128 * colsum[n] back out of the int32 sums, so results equal the qs8 reference bit for bit.
//
// The blocking is that of qs8_gemm_5x16c4__avx2: K blocks (<= kKC) outermost, column blocks
// whose weights stay in L2, row tiles of kMR rows whose activations are copied once per block
// into a small buffer (4 bytes per row per 4-k step) so the inner loop broadcasts from L1;
// partial int32 sums of earlier K blocks wait in C. Small M (1..4 rows): panel streams.
#include <immintrin.h>

#include <cstring>

#include "qs7_gemm.h"

namespace lowbit {
namespace avx2 {
namespace {

constexpr int64_t kMR = 6;          // rows per register tile: 12 int32 accumulators + 4 work registers
constexpr int64_t kKC = 1024;       // K block of the tiled path (k values)
constexpr int64_t kL2Block = 256 * 1024;  // bytes of weights per column block
constexpr int64_t kPf = 1024;       // prefetch distance (bytes) along each weight stream (small M)

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

// acc += (a + 128) * w over 32 products (a holds the biased bytes). The add is an asm statement
// with acc in/out: GCC 12 otherwise copies (and spills) accumulators around it.
inline void Dot(__m256i& acc, __m256i w, __m256i a, __m256i ones) {
  const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(a, w), ones);
  asm("vpaddd %1, %0, %0" : "+x"(acc) : "x"(p));
}

// Epilogue for one row and one 8-column half: bias correction, scale, bias, ReLU, store
// ncols (<= 8) floats.
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

// 128 * colsum for the 8 columns at n (of which ncols are valid; the packed colsum array is
// padded to whole panels, so the full load stays inside the weights).
inline __m256i Corr8(const Qs8GemmArgs& g, int64_t n) {
  const int64_t P = (g.N + 15) / 16, Kp = qs8_kp(g.K);
  const int32_t* cs = reinterpret_cast<const int32_t*>(g.W + P * Kp * 16 + P * 16 * 4) + n;
  return _mm256_slli_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(cs)), 7);
}

// ---- tiled path (M >= 5) ------------------------------------------------------------------

struct KBlock {
  int64_t k0, k1;  // [k0, k1), multiples of 4
  bool first, last;
};

// Copies rows [m, m+MR) x [k0, k1) into buf: per 4-k step s, bytes [s*4*MR, s*4*MR + 4*MR)
// hold the biased activations (row r at 4r).
template <int MR>
void PackA(const Qs8GemmArgs& g, int64_t m, KBlock kb, int8_t* buf) {
  const int64_t steps = (kb.k1 - kb.k0) / 4;
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    const int8_t* src = g.A + (m + r) * g.lda + kb.k0;
    int64_t s = 0;
    for (; s + 8 <= steps; s += 8) {  // 32 bytes of the row: 8 steps
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 4 * s));
      alignas(32) int32_t t[8];
      _mm256_store_si256(reinterpret_cast<__m256i*>(t), v);
      for (int i = 0; i < 8; ++i) std::memcpy(buf + (s + i) * 4 * MR + 4 * r, &t[i], 4);
    }
    for (; s < steps; ++s) std::memcpy(buf + s * 4 * MR + 4 * r, src + 4 * s, 4);
  }
}

// MR rows x NC 8-column vectors (columns [n, n + 8*NC), ncols of them valid) over the K block,
// activations from the packed buffer. Column vector c is half (n/8 + c) % 2 of panel (n + 8c)/16.
template <int MR, int NC>
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
    const int8_t* as = ap + s * 4 * MR;
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m256i a = Bcast4(as + 4 * r);
#pragma GCC unroll 16
      for (int c = 0; c < NC; ++c) Dot(acc[r][c], w[c], a, ones);
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
    const __m256i corr = Corr8(g, n + 8 * c);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) Store8(g, acc[r][c], corr, m + r, n + 8 * c, ncols - 8 * c, wscale + 8 * c);
  }
}

template <int MR, int NC>
void ColsPacked(const Qs8GemmArgs& g, const int8_t* buf, int64_t m, int64_t n0, int64_t n1, KBlock kb) {
  int64_t n = n0;
  for (; n + 8 * NC <= n1; n += 8 * NC) TilePacked<MR, NC>(g, buf, m, n, 8 * NC, kb);
  if (n >= n1) return;
  if constexpr (NC > 1) {
    if (n1 - n > 8 * (NC - 1)) return TilePacked<MR, NC>(g, buf, m, n, n1 - n, kb);
    ColsPacked<MR, NC - 1>(g, buf, m, n, n1, kb);
  } else {
    TilePacked<MR, 1>(g, buf, m, n, n1 - n, kb);
  }
}

template <int MR>
void RowTile(const Qs8GemmArgs& g, int8_t* buf, int64_t m, int64_t n0, int64_t n1, KBlock kb) {
  PackA<MR>(g, m, kb, buf);
  ColsPacked<MR, 2>(g, buf, m, n0, n1, kb);  // MR x 16: one panel
}

void Tiled(const Qs8GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  const int64_t rows = m1 - m0, Kp = qs8_kp(g.K);
  const int64_t nkb = (Kp + kKC - 1) / kKC;
  const int64_t kcb = (Kp / 4 + nkb - 1) / nkb * 4;  // balanced K blocks, multiples of 4
  int64_t nc = kL2Block / (kcb > 0 ? kcb : 4) / 16 * 16;
  if (nc < 16) nc = 16;
  const int64_t ntiles = (rows + kMR - 1) / kMR;
  const int64_t base = rows / ntiles, extra = rows % ntiles;  // balanced tile heights (differ by <= 1)
  alignas(64) int8_t buf[kMR * 4 * (kKC / 4)];
  for (int64_t pc = 0; pc < Kp; pc += kcb) {
    const KBlock kb{pc, pc + kcb < Kp ? pc + kcb : Kp, pc == 0, pc + kcb >= Kp};
    for (int64_t jc = n0; jc < n1; jc += nc) {
      const int64_t jend = jc + nc < n1 ? jc + nc : n1;
      int64_t m = m0;
      for (int64_t it = 0; it < ntiles; ++it) {
        const int64_t mr = base + (it < extra ? 1 : 0);
        switch (mr) {
          case 1: RowTile<1>(g, buf, m, jc, jend, kb); break;
          case 2: RowTile<2>(g, buf, m, jc, jend, kb); break;
          case 3: RowTile<3>(g, buf, m, jc, jend, kb); break;
          case 4: RowTile<4>(g, buf, m, jc, jend, kb); break;
          case 5: RowTile<5>(g, buf, m, jc, jend, kb); break;
          default: RowTile<kMR>(g, buf, m, jc, jend, kb); break;
        }
        m += mr;
      }
    }
  }
}

// ---- small-M path (1..4 rows) -------------------------------------------------------------

// MR rows x NP panels over the whole K, straight from the activation rows.
template <int MR, int NP>
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
  for (int64_t k = 0; k < Kp; k += 4) {
    __m256i av[MR];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) av[r] = Bcast4(a[r] + k);
#pragma GCC unroll 16
    for (int p = 0; p < NP; ++p) {
      const uint8_t* src = W + p * ps + k * 16;
      _mm_prefetch(reinterpret_cast<const char*>(src) + kPf, _MM_HINT_T0);
      const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
      const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 32));
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        Dot(acc[r][2 * p], w0, av[r], ones);
        Dot(acc[r][2 * p + 1], w1, av[r], ones);
      }
    }
  }
  const float* wscale = reinterpret_cast<const float*>(g.W + P * ps) + nb;
#pragma GCC unroll 16
  for (int c = 0; c < 2 * NP; ++c) {
    const __m256i corr = Corr8(g, nb + 8 * c);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) Store8(g, acc[r][c], corr, m + r, nb + 8 * c, ncols - 8 * c, wscale + 8 * c);
  }
}

template <int MR, int NP>
void ColsStream(const Qs8GemmArgs& g, int64_t m, int64_t n0, int64_t n1) {
  int64_t nb = n0;
  for (; nb + 16 * NP <= n1; nb += 16 * NP) TileStream<MR, NP>(g, m, nb, 16 * NP);
  if constexpr (NP > 1) {
    if (nb < n1) ColsStream<MR, NP / 2>(g, m, nb, n1);
  } else {
    if (nb < n1) TileStream<MR, 1>(g, m, nb, n1 - nb);
  }
}

}  // namespace

void qs7_gemm_6x16c4__avx2(const Qs8GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  if (m1 <= m0 || n1 <= n0) return;
  switch (m1 - m0) {
    case 1: return ColsStream<1, 4>(g, m0, n0, n1);
    case 2: return ColsStream<2, 2>(g, m0, n0, n1);
    case 3: return ColsStream<3, 1>(g, m0, n0, n1);
    case 4: return ColsStream<4, 1>(g, m0, n0, n1);
    default: return Tiled(g, m0, m1, n0, n1);
  }
}

}  // namespace avx2
}  // namespace lowbit
