// AVX-512 VNNI 4-bit GEMM over the q4 layouts (see q4_gemm.h).
// Compile with: -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512vnni -mf16c
//
// The codes are the u8 operand of vpdpbusd and the s8 activations the other one, so no
// bias trick is needed for affine codes: d = sum u*a, and the zero point comes out as
// z * gsum (the per-group sum of the activations). Table codes go through vpshufb into a
// table stored +128 (u8), which puts 128 * gsum into the sum; it is taken out the same way
// (q4_gemm_8x32c8__avx512vbmi: through vpermb instead, on CPUs with AVX512_VBMI).
// Integer sums are exact and the per-group fma chain runs in the reference's order.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include "kernels/common/avx512.h"

#include <cstring>

#include "q4_gemm.h"

namespace lowbit {
namespace avx512 {
namespace {

// kTabVbmi: table codes decoded with vpermb, whose index is 6 bits into the table repeated in
// all four 128-bit lanes, so the nibbles need no masking (3 ops per 128 codes where vpshufb,
// which zeroes bytes with bit 7 set, takes 5); q4_gemm_8x32c8__avx512vbmi only
enum Mode { kSym = 0, kAsym = 1, kTab = 2, kTabVbmi = 3 };

constexpr int64_t kGemvMaxRows = 4;
constexpr int64_t kMR = 8;  // rows per register tile for M > 4 (8 x 32: 16 int32 accumulators)
constexpr int64_t kPf = 512;  // prefetch distance (bytes) along each code panel stream

inline __mmask16 TailMask(int64_t n) {
  if (n <= 0) return 0;
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}

// DpbusdBcast(acc, codes, p): acc += codes (u8) x the 4 activation bytes at p (s8, broadcast
// from memory), in place; DpbusdBcast256 is its 256-bit EVEX form. Both in kernels/common/avx512.h.

template <int MR, int NP, int MODE>
__attribute__((noinline)) void Tile(const Q4GemmArgs& g, int64_t m, int64_t nb, int64_t ncols) {
  const int64_t G = g.lay.group, Kg = q4_kg(g.K, G), NG = Kg / G;
  const Q4Parts parts = q4_parts(g.K, g.N, g.lay);
  const int64_t ps = Kg * 8, pidx = nb / 16;
  const uint8_t* codes = g.W + parts.codes + pidx * ps;
  const uint16_t* scales = reinterpret_cast<const uint16_t*>(g.W + parts.scales) + pidx * NG * 16;
  const uint8_t* zeros = g.W + parts.zeros + pidx * NG * 16;
  __m512i tbl = _mm512_setzero_si512();
  if (MODE >= kTab) {  // T + 128 as u8 (flip the sign bit), in each 128-bit lane for vpshufb (vpermb: entry i & 15)
    const __m128i t = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g.W)), _mm_set1_epi8(char(0x80)));
    tbl = _mm512_broadcast_i32x4(t);
  }
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  // fp32 sums: in registers for small tiles (the small-M path), else in memory (L1) so the
  // registers go to the int32 group sums and the codes
  constexpr bool kRegF = MR * NP <= 8;
  alignas(64) float f[MR][NP][16];
  __m512 fr[MR][NP];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 16
    for (int p = 0; p < NP; ++p) {
      fr[r][p] = _mm512_setzero_ps();
      if (!kRegF) _mm512_store_ps(f[r][p], fr[r][p]);
    }
  const int8_t* a[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) a[r] = g.A + (m + r) * g.lda;
  const int32_t* gs[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) gs[r] = g.gsum + (m + r) * NG;

  for (int64_t gi = 0; gi < NG; ++gi) {
    // The int32 group sums start at -z*gsum (the zero point's share), so the group's
    // epilogue is only convert + fma: sym z = 8, table z = 128 (the +128 table bias).
    __m512i d[MR][NP];
    if (MODE == kAsym) {
#pragma GCC unroll 16
      for (int p = 0; p < NP; ++p) {
        const __m512i z = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(zeros + (p * NG + gi) * 16)));
#pragma GCC unroll 16
        for (int r = 0; r < MR; ++r) d[r][p] = _mm512_mullo_epi32(z, _mm512_set1_epi32(-gs[r][gi]));
      }
    } else {
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const __m512i init = _mm512_set1_epi32(-gs[r][gi] * (MODE >= kTab ? 128 : 8));
#pragma GCC unroll 16
        for (int p = 0; p < NP; ++p) d[r][p] = init;
      }
    }
    const int64_t k8e = (gi + 1) * G / 8;
    // Small tiles of affine codes skip the shift: the high nibbles stay in place (16 x code),
    // go to their own sums, and those are divided by 16 (exactly) once per group.
    constexpr bool kSplitHi = MODE < kTab && MR <= 2;
    __m512i dh[MR][NP];
    if (kSplitHi) {
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r)
#pragma GCC unroll 16
        for (int p = 0; p < NP; ++p) dh[r][p] = _mm512_setzero_si512();
    }
    for (int64_t k8 = gi * G / 8; k8 < k8e; ++k8) {
      // Small tiles: each row's two activation words broadcast once per k8 into registers and
      // shared by the NP panels (the {1to16} memory form reloaded them for every panel: at one
      // row that was a load per vpdpbusd, and the GEMV ran 15-20% slower on a Zen 4)
      constexpr bool kHoist = MR <= 2;
      __m512i ab[kHoist ? MR : 1][2];
      if (kHoist) {
#pragma GCC unroll 16
        for (int r = 0; r < MR; ++r) {
          int32_t w0, w1;
          std::memcpy(&w0, a[r] + k8 * 8, 4);
          std::memcpy(&w1, a[r] + k8 * 8 + 4, 4);
          ab[r][0] = _mm512_set1_epi32(w0);
          ab[r][1] = _mm512_set1_epi32(w1);
        }
      }
      // one panel at a time: only its two code vectors are live next to the accumulators
#pragma GCC unroll 16
      for (int p = 0; p < NP; ++p) {
        const uint8_t* src = codes + p * ps + k8 * 64;
        _mm_prefetch(reinterpret_cast<const char*>(src) + kPf, _MM_HINT_T0);
        const __m512i v = _mm512_loadu_si512(src);
        if (kSplitHi) {
          const __m512i lo = _mm512_and_si512(v, low4);
          const __m512i hi16 = _mm512_andnot_si512(low4, v);
#pragma GCC unroll 16
          for (int r = 0; r < MR; ++r) {
            Dpbusd(d[r][p], lo, ab[r][0]);
            Dpbusd(dh[r][p], hi16, ab[r][1]);
          }
          continue;
        }
        __m512i lo, hi;
        if (MODE == kTabVbmi) {
          lo = PermB(v, tbl);
          hi = PermB(_mm512_srli_epi16(v, 4), tbl);
        } else {
          lo = _mm512_and_si512(v, low4);
          hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
          if (MODE == kTab) {
            lo = _mm512_shuffle_epi8(tbl, lo);
            hi = _mm512_shuffle_epi8(tbl, hi);
          }
        }
#pragma GCC unroll 16
        for (int r = 0; r < MR; ++r) {
          if (kHoist) {
            Dpbusd(d[r][p], lo, ab[r][0]);
            Dpbusd(d[r][p], hi, ab[r][1]);
          } else {
            DpbusdBcast(d[r][p], lo, a[r] + k8 * 8);
            DpbusdBcast(d[r][p], hi, a[r] + k8 * 8 + 4);
          }
        }
      }
    }
    if (kSplitHi) {
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r)
#pragma GCC unroll 16
        for (int p = 0; p < NP; ++p) d[r][p] = _mm512_add_epi32(d[r][p], _mm512_srai_epi32(dh[r][p], 4));
    }
#pragma GCC unroll 16
    for (int p = 0; p < NP; ++p) {
      const __m512 s = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(scales + (p * NG + gi) * 16)));
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r)
        if (kRegF) fr[r][p] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d[r][p]), s, fr[r][p]);
        else _mm512_store_ps(f[r][p], _mm512_fmadd_ps(_mm512_cvtepi32_ps(d[r][p]), s, _mm512_load_ps(f[r][p])));
    }
  }
  const bool relu = g.act == Activation::kRelu;
#pragma GCC unroll 16
  for (int p = 0; p < NP; ++p) {
    const __mmask16 mk = TailMask(ncols - 16 * p);
    const __m512 bias = g.bias ? _mm512_maskz_loadu_ps(mk, g.bias + nb + 16 * p) : _mm512_setzero_ps();
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      __m512 y = _mm512_mul_ps(kRegF ? fr[r][p] : _mm512_load_ps(f[r][p]), _mm512_set1_ps(g.a_scale[m + r]));
      if (g.bias) y = _mm512_add_ps(y, bias);
      if (relu) y = _mm512_max_ps(_mm512_setzero_ps(), y);
      _mm512_mask_storeu_ps(g.C + (m + r) * g.ldc + nb + 16 * p, mk, y);
    }
  }
}

// A last panel with at most 8 valid columns: the first 32 bytes of each 64-byte code
// block (columns 0..7), 256-bit vectors, half the work of a full panel.
template <int MR, int MODE>
__attribute__((noinline)) void TileHalf(const Q4GemmArgs& g, int64_t m, int64_t nb, int64_t ncols) {
  const int64_t G = g.lay.group, Kg = q4_kg(g.K, G), NG = Kg / G;
  const Q4Parts parts = q4_parts(g.K, g.N, g.lay);
  const int64_t pidx = nb / 16;
  const uint8_t* codes = g.W + parts.codes + pidx * Kg * 8;
  const uint16_t* scales = reinterpret_cast<const uint16_t*>(g.W + parts.scales) + pidx * NG * 16;
  const uint8_t* zeros = g.W + parts.zeros + pidx * NG * 16;
  __m256i tbl = _mm256_setzero_si256();
  if (MODE >= kTab)
    tbl = _mm256_broadcastsi128_si256(
        _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g.W)), _mm_set1_epi8(char(0x80))));
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  __m256 f[MR];
  for (int r = 0; r < MR; ++r) f[r] = _mm256_setzero_ps();
  for (int64_t gi = 0; gi < NG; ++gi) {
    __m256i d[MR];
    __m256i z = _mm256_set1_epi32(MODE >= kTab ? 128 : 8);
    if (MODE == kAsym) {
      int64_t zz;
      std::memcpy(&zz, zeros + gi * 16, 8);
      z = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(zz));
    }
    for (int r = 0; r < MR; ++r) d[r] = _mm256_mullo_epi32(z, _mm256_set1_epi32(-g.gsum[(m + r) * NG + gi]));
    for (int64_t k8 = gi * G / 8; k8 < (gi + 1) * G / 8; ++k8) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + k8 * 64));
      __m256i lo = _mm256_and_si256(v, low4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
      if (MODE >= kTab) {  // the half panel decodes with vpshufb in either table mode
        lo = _mm256_shuffle_epi8(tbl, lo);
        hi = _mm256_shuffle_epi8(tbl, hi);
      }
      for (int r = 0; r < MR; ++r) {
        DpbusdBcast256(d[r], lo, g.A + (m + r) * g.lda + k8 * 8);
        DpbusdBcast256(d[r], hi, g.A + (m + r) * g.lda + k8 * 8 + 4);
      }
    }
    const __m256 s = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(scales + gi * 16)));
    for (int r = 0; r < MR; ++r) f[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d[r]), s, f[r]);
  }
  const __mmask8 mk = static_cast<__mmask8>((1u << ncols) - 1u);
  const __m256 bias = g.bias ? _mm256_maskz_loadu_ps(mk, g.bias + nb) : _mm256_setzero_ps();
  for (int r = 0; r < MR; ++r) {
    __m256 y = _mm256_mul_ps(f[r], _mm256_set1_ps(g.a_scale[m + r]));
    if (g.bias) y = _mm256_add_ps(y, bias);
    if (g.act == Activation::kRelu) y = _mm256_max_ps(_mm256_setzero_ps(), y);
    _mm256_mask_storeu_ps(g.C + (m + r) * g.ldc + nb, mk, y);
  }
}

template <int MR, int NP, int MODE>
void Cols(const Q4GemmArgs& g, int64_t m, int64_t n0, int64_t n1) {
  int64_t nb = n0;
  for (; nb + 16 * NP <= n1; nb += 16 * NP) Tile<MR, NP, MODE>(g, m, nb, 16 * NP);
  if constexpr (NP > 1) {
    if (n1 - nb > 16 * (NP - 1)) return Tile<MR, NP, MODE>(g, m, nb, n1 - nb);
    if (nb < n1) Cols<MR, NP - 1, MODE>(g, m, nb, n1);
  } else {
    if (n1 - nb > 8) Tile<MR, 1, MODE>(g, m, nb, n1 - nb);
    else if (nb < n1) TileHalf<MR, MODE>(g, m, nb, n1 - nb);
  }
}

template <int NP, int MODE>
void RowsDispatch(const Q4GemmArgs& g, int64_t m, int64_t mr, int64_t n0, int64_t n1) {
  switch (mr) {
    case 1: Cols<1, NP, MODE>(g, m, n0, n1); break;
    case 2: Cols<2, NP, MODE>(g, m, n0, n1); break;
    case 3: Cols<3, NP, MODE>(g, m, n0, n1); break;
    case 4: Cols<4, NP, MODE>(g, m, n0, n1); break;
    case 5: Cols<5, NP, MODE>(g, m, n0, n1); break;
    case 6: Cols<6, NP, MODE>(g, m, n0, n1); break;
    case 7: Cols<7, NP, MODE>(g, m, n0, n1); break;
    default: Cols<8, NP, MODE>(g, m, n0, n1); break;
  }
}

template <int MODE>
void Run(const Q4GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  const int64_t rows = m1 - m0;
  // 1-2 rows: 8 panel streams keep more loads in flight, as for int8
  if (rows == 1) return Cols<1, 8, MODE>(g, m0, n0, n1);
  if (rows == 2) return Cols<2, 8, MODE>(g, m0, n0, n1);
  if (rows <= kGemvMaxRows) return RowsDispatch<4, MODE>(g, m0, rows, n0, n1);
  const int64_t ntiles = (rows + kMR - 1) / kMR;
  const int64_t base = rows / ntiles, extra = rows % ntiles;
  const int64_t nc = 64;
  for (int64_t jc = n0; jc < n1; jc += nc) {
    const int64_t jend = jc + nc < n1 ? jc + nc : n1;
    int64_t m = m0;
    for (int64_t it = 0; it < ntiles; ++it) {
      const int64_t mr = base + (it < extra ? 1 : 0);
      RowsDispatch<2, MODE>(g, m, mr, jc, jend);
      m += mr;
    }
  }
}

}  // namespace

void q4_gemm_8x32c8__avx512vnni(const Q4GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  if (m1 <= m0 || n1 <= n0) return;
  if (g.lay.kind == Q4Kind::kTable) return Run<kTab>(g, m0, m1, n0, n1);
  if (g.lay.asym) return Run<kAsym>(g, m0, m1, n0, n1);
  Run<kSym>(g, m0, m1, n0, n1);
}

void q4_gemm_8x32c8__avx512vbmi(const Q4GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  if (m1 <= m0 || n1 <= n0) return;
  if (g.lay.kind == Q4Kind::kTable) return Run<kTabVbmi>(g, m0, m1, n0, n1);
  q4_gemm_8x32c8__avx512vnni(g, m0, m1, n0, n1);
}

}  // namespace avx512
}  // namespace lowbit
