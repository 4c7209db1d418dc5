// AVX-512 VNNI int8 GEMM over "qs8-n16k4" (see qs8_gemm.h).
// Compile with: -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512vnni
//
// vpdpbusd multiplies u8 x s8, so the activations arrive biased (q + 128, from qs8-quant
// with bias128): sum (q+128)*w = sum q*w + 128*colsum(w), and the packed colsum takes the
// 128*colsum back out. Integer sums are exact, so any tiling gives the reference's bits.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include "kernels/common/avx512.h"

#include <cstring>

#include "qs8_gemm.h"

namespace lowbit {
namespace avx512 {
namespace {

constexpr int64_t kGemvMaxRows = 4;  // 1..4 rows: memory-bound path over 8 (1-2 rows) or 4 panel streams
constexpr int64_t kPf = 512;         // prefetch distance (bytes) along each weight panel stream
constexpr int64_t kKC = 4096;        // K block of the tiled path (measured at 256x4096x4096: 4096 beats 1024-2048 by ~9%)

inline __mmask16 TailMask(int64_t n) {
  if (n <= 0) return 0;
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}

// Dpbusd / Dpbusd256 (vpdpbusd, in place; the 256-bit one EVEX-encoded): kernels/common/avx512.h.

inline __m512i Bcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// MR rows x NP panels (16 columns each) over the whole K; ncols valid columns from nb.
// K range [k0, k1) of a K-blocked pass: the int32 sums of earlier blocks wait in C's own
// memory (as int32 bits, exact, so blocking cannot change a result); the last block
// applies the epilogue.
struct KRange {
  int64_t k0, k1;
  bool first, last;
};

template <int MR, int NP>
__attribute__((noinline)) void Tile(const Qs8GemmArgs& g, int64_t m, int64_t nb, int64_t ncols, KRange kr) {
  const int64_t Kp = qs8_kp(g.K), P = (g.N + 15) / 16, ps = Kp * 16;
  const uint8_t* W = g.W + (nb / 16) * ps;
  __m512i acc[MR][NP];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 16
    for (int p = 0; p < NP; ++p)
      acc[r][p] = kr.first ? _mm512_setzero_si512()
                           : _mm512_maskz_loadu_epi32(TailMask(ncols - 16 * p), g.C + (m + r) * g.ldc + nb + 16 * p);
  const int8_t* a[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) a[r] = g.A + (m + r) * g.lda;
  for (int64_t k = kr.k0; k < kr.k1; k += 4) {
    __m512i w[NP];
#pragma GCC unroll 16
    for (int p = 0; p < NP; ++p) {
      const uint8_t* src = W + p * ps + k * 16;
      _mm_prefetch(reinterpret_cast<const char*>(src) + kPf, _MM_HINT_T0);
      w[p] = _mm512_loadu_si512(src);
    }
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m512i ab = Bcast4(a[r] + k);
#pragma GCC unroll 16
      for (int p = 0; p < NP; ++p) Dpbusd(acc[r][p], ab, w[p]);
    }
  }
  if (!kr.last) {
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 16
      for (int p = 0; p < NP; ++p)
        _mm512_mask_storeu_epi32(g.C + (m + r) * g.ldc + nb + 16 * p, TailMask(ncols - 16 * p), acc[r][p]);
    return;
  }
  const float* wscale = reinterpret_cast<const float*>(g.W + P * ps) + nb;
  const int32_t* colsum = reinterpret_cast<const int32_t*>(g.W + P * ps + P * 16 * 4) + nb;
  const bool relu = g.act == Activation::kRelu;
#pragma GCC unroll 16
  for (int p = 0; p < NP; ++p) {
    const __mmask16 mk = TailMask(ncols - 16 * p);
    const __m512i corr = _mm512_slli_epi32(_mm512_loadu_si512(colsum + 16 * p), 7);
    const __m512 ws = _mm512_loadu_ps(wscale + 16 * p);
    const __m512 bias = g.bias ? _mm512_maskz_loadu_ps(mk, g.bias + nb + 16 * p) : _mm512_setzero_ps();
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m512 s = _mm512_mul_ps(_mm512_set1_ps(g.a_scale[m + r]), ws);
      __m512 y = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][p], corr)), s);
      if (g.bias) y = _mm512_add_ps(y, bias);
      if (relu) y = _mm512_max_ps(_mm512_setzero_ps(), y);
      _mm512_mask_storeu_ps(g.C + (m + r) * g.ldc + nb + 16 * p, mk, y);
    }
  }
}

// A last panel with at most 8 valid columns: its first half (32 of the 64 bytes per k-step)
// through the 256-bit EVEX form, half the work of a full panel.
template <int MR>
__attribute__((noinline)) void TileHalf(const Qs8GemmArgs& g, int64_t m, int64_t nb, int64_t ncols) {
  const int64_t Kp = qs8_kp(g.K), P = (g.N + 15) / 16, ps = Kp * 16;
  const uint8_t* W = g.W + (nb / 16) * ps;
  __m256i acc[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) acc[r] = _mm256_setzero_si256();
  for (int64_t k = 0; k < Kp; k += 4) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(W + k * 16));
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      int32_t v;
      std::memcpy(&v, g.A + (m + r) * g.lda + k, 4);
      Dpbusd256(acc[r], _mm256_set1_epi32(v), w);
    }
  }
  const float* wscale = reinterpret_cast<const float*>(g.W + P * ps) + nb;
  const int32_t* colsum = reinterpret_cast<const int32_t*>(g.W + P * ps + P * 16 * 4) + nb;
  const __mmask8 mk = static_cast<__mmask8>((1u << ncols) - 1u);
  const __m256i corr = _mm256_slli_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(colsum)), 7);
  const __m256 ws = _mm256_loadu_ps(wscale);
  const __m256 bias = g.bias ? _mm256_maskz_loadu_ps(mk, g.bias + nb) : _mm256_setzero_ps();
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    const __m256 s = _mm256_mul_ps(_mm256_set1_ps(g.a_scale[m + r]), ws);
    __m256 y = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(acc[r], corr)), s);
    if (g.bias) y = _mm256_add_ps(y, bias);
    if (g.act == Activation::kRelu) y = _mm256_max_ps(_mm256_setzero_ps(), y);
    _mm256_mask_storeu_ps(g.C + (m + r) * g.ldc + nb, mk, y);
  }
}

// Columns [n0, n1) for rows [m, m+MR), NP panels at a time, narrower tiles for the rest.
template <int MR, int NP>
void Cols(const Qs8GemmArgs& g, int64_t m, int64_t n0, int64_t n1, KRange kr) {
  int64_t nb = n0;
  for (; nb + 16 * NP <= n1; nb += 16 * NP) Tile<MR, NP>(g, m, nb, 16 * NP, kr);
  if constexpr (NP > 1) {
    if (n1 - nb > 16 * (NP - 1)) return Tile<MR, NP>(g, m, nb, n1 - nb, kr);
    if (nb < n1) Cols<MR, NP - 1>(g, m, nb, n1, kr);
  } else {
    if (n1 - nb > 8 || !(kr.first && kr.last)) Tile<MR, 1>(g, m, nb, n1 - nb, kr);
    else if (nb < n1) TileHalf<MR>(g, m, nb, n1 - nb);
  }
}

template <int NP>
void RowsDispatch(const Qs8GemmArgs& g, int64_t m, int64_t mr, int64_t n0, int64_t n1, KRange kr) {
  switch (mr) {
    case 1: Cols<1, NP>(g, m, n0, n1, kr); break;
    case 2: Cols<2, NP>(g, m, n0, n1, kr); break;
    case 3: Cols<3, NP>(g, m, n0, n1, kr); break;
    case 4: Cols<4, NP>(g, m, n0, n1, kr); break;
    case 5: Cols<5, NP>(g, m, n0, n1, kr); break;
    case 6: Cols<6, NP>(g, m, n0, n1, kr); break;
    case 7: Cols<7, NP>(g, m, n0, n1, kr); break;
    default: Cols<8, NP>(g, m, n0, n1, kr); break;
  }
}

}  // namespace

void qs8_gemm_8x32c4__avx512vnni(const Qs8GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  if (m1 <= m0 || n1 <= n0) return;
  const int64_t rows = m1 - m0, Kp = qs8_kp(g.K);
  const KRange whole{0, Kp, true, true};
  // 1-2 rows: 8 panel streams keep more loads in flight (measured: ~20% faster than 4 at M = 1)
  if (rows == 1) return Cols<1, 8>(g, m0, n0, n1, whole);
  if (rows == 2) return Cols<2, 8>(g, m0, n0, n1, whole);
  if (rows <= kGemvMaxRows) return RowsDispatch<4>(g, m0, rows, n0, n1, whole);
  // Register tiles of 8 rows x 32 columns. K blocks outermost (only for K > kKC), then column
  // blocks of 64 (their weights reused from L1/L2 by every row tile), rows inside. Sums of
  // earlier K blocks wait in C as int32.
  const int64_t ntiles = (rows + 7) / 8;
  const int64_t base = rows / ntiles, extra = rows % ntiles;  // balanced tile heights
  const int64_t nkb = (Kp + kKC - 1) / kKC;
  const int64_t kcb = (Kp / 4 + nkb - 1) / nkb * 4;  // balanced K blocks, multiples of 4
  const int64_t nc = 64;
  for (int64_t pc = 0; pc < Kp; pc += kcb) {
    const KRange kr{pc, pc + kcb < Kp ? pc + kcb : Kp, pc == 0, pc + kcb >= Kp};
    for (int64_t jc = n0; jc < n1; jc += nc) {
      const int64_t jend = jc + nc < n1 ? jc + nc : n1;
      int64_t m = m0;
      for (int64_t it = 0; it < ntiles; ++it) {
        const int64_t mr = base + (it < extra ? 1 : 0);
        RowsDispatch<2>(g, m, mr, jc, jend, kr);
        m += mr;
      }
    }
  }
}

}  // namespace avx512
}  // namespace lowbit
