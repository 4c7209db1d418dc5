// AVX2 4-bit GEMM over the q4 layouts (see q4_gemm.h). Compile with: -mavx2 -mfma -mf16c
//
// Affine codes (kSym, kAsym) are u8 in [0, 15], the first operand of vpmaddubsw; the s8
// activations in [-127, 127] are the second. One vpmaddubsw adds two products per int16
// lane, |u0*a0 + u1*a1| <= 2*15*127 = 3810, so the int16 sums of 8 of them (one 32-k slice:
// 4 steps of 8 k, low and high nibbles) stay within 8*3810 = 30480 < 32767: they are exact
// with plain wrapping vpaddw, and one vpmaddwd by ones per slice widens them to int32.
// (The int16 accumulation of several vpmaddubsw is the trick of llama.cpp's AVX2 q4 dot
// products.) That is 2 ops per 32 MACs (vpmaddubsw + vpaddw) in the inner loop instead of 4.
// The zero point comes out per group as z * gsum (gsum: the group's activation sum).
//
// Table codes (kTab) are looked up with vpshufb into the s8 table and multiplied with the
// sign trick, |a| (u8) x sign(T[u], a) (s8): a pair is at most 2*127*127 = 32258, so each
// vpmaddubsw is widened at once (the cost of int8, 4 ops per 32 MACs).
//
// Integer group sums are exact; the per-group fma chain runs in the reference's order, so
// every tile shape and thread split gives the reference's bits.
#include <immintrin.h>

#include <cstring>

#include "q4_gemm.h"

namespace lowbit {
namespace avx2 {
namespace {

enum Mode { kSym = 0, kAsym = 1, kTab = 2 };

constexpr int64_t kMRAffine = 6;  // large-M tile rows, affine: 12 int16 sums + 4 work registers
constexpr int64_t kMRTable = 4;   // large-M tile rows, table: 8 int32 sums + 8 work registers
constexpr int64_t kL2Block = 192 * 1024;  // bytes of codes per column block of the tiled path
constexpr int64_t kPf = 768;      // prefetch distance (bytes) along each code panel stream (small M)

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

// In-place accumulation through asm: GCC 12 otherwise copies (and spills) accumulator
// arrays around the intrinsics' results.
inline void AddW(__m256i& acc, __m256i p) { asm("vpaddw %1, %0, %0" : "+x"(acc) : "x"(p)); }
inline void AddD(__m256i& acc, __m256i p) { asm("vpaddd %1, %0, %0" : "+x"(acc) : "x"(p)); }

// MR rows x NC 8-column vectors starting at column n (a multiple of 8; vector c is half
// (n/8 + c) % 2 of panel (n + 8c)/16), ncols of them valid, over the whole K.
// REGF: the fp32 sums (and the int32 group sums of groups longer than one slice) stay in
// registers; otherwise they live in small stack arrays (L1) and the registers hold the
// int16 slice sums.
template <int MR, int NC, int MODE, bool REGF, bool PF>
__attribute__((noinline)) void Tile(const Q4GemmArgs& g, int64_t m, int64_t n, int64_t ncols) {
  const int64_t G = g.lay.group, Kg = q4_kg(g.K, G), NG = Kg / G, ps = Kg * 8;
  const Q4Parts parts = q4_parts(g.K, g.N, g.lay);
  const uint8_t* cp[NC];
  const uint16_t* sp[NC];
  const uint8_t* zp[NC];
#pragma GCC unroll 16
  for (int c = 0; c < NC; ++c) {
    const int64_t p = (n + 8 * c) / 16, h = (n / 8 + c) % 2;
    cp[c] = g.W + parts.codes + p * ps + 32 * h;
    sp[c] = reinterpret_cast<const uint16_t*>(g.W + parts.scales) + p * NG * 16 + 8 * h;
    zp[c] = g.W + parts.zeros + p * NG * 16 + 8 * h;
  }
  const int8_t* a[MR];
  const int32_t* gs[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    a[r] = g.A + (m + r) * g.lda;
    gs[r] = g.gsum + (m + r) * NG;
  }
  const __m256i low4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
  const __m256i tbl = MODE == kTab ? _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g.W)))
                                   : _mm256_setzero_si256();
  const int64_t slices = G / 32;  // 32-k slices per group

  __m256 fr[MR][NC];  // fp32 sums in registers (REGF)
  alignas(32) float fm[MR][NC][8];  // or in L1
  alignas(32) int32_t dm[MR][NC][8];  // int32 group sums of earlier slices (affine, !REGF, G > 32)
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 16
    for (int c = 0; c < NC; ++c) {
      fr[r][c] = _mm256_setzero_ps();
      if (!REGF) _mm256_store_ps(fm[r][c], fr[r][c]);
    }

  for (int64_t gi = 0; gi < NG; ++gi) {
    __m256i d[MR][NC];  // int32 group sums (table: the accumulators; affine REGF: slices added here)
    for (int64_t sl = 0; sl < slices; ++sl) {
      const int64_t k80 = (gi * slices + sl) * 4;  // first 8-k step of the slice
      if (MODE == kTab) {
        if (sl == 0) {
#pragma GCC unroll 16
          for (int r = 0; r < MR; ++r)
#pragma GCC unroll 16
            for (int c = 0; c < NC; ++c) d[r][c] = _mm256_setzero_si256();
        }
        for (int64_t k8 = k80; k8 < k80 + 4; ++k8) {
          __m256i u[NC], t[NC];
#pragma GCC unroll 16
          for (int c = 0; c < NC; ++c) {
            u[c] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cp[c] + k8 * 64));
            if (PF) _mm_prefetch(reinterpret_cast<const char*>(cp[c] + k8 * 64) + kPf, _MM_HINT_T0);
            t[c] = _mm256_shuffle_epi8(tbl, _mm256_and_si256(u[c], low4));
          }
#pragma GCC unroll 16
          for (int r = 0; r < MR; ++r) {
            const __m256i al = Bcast4(a[r] + k8 * 8), aal = _mm256_abs_epi8(al);
#pragma GCC unroll 16
            for (int c = 0; c < NC; ++c)
              AddD(d[r][c], _mm256_madd_epi16(_mm256_maddubs_epi16(aal, _mm256_sign_epi8(t[c], al)), ones));
          }
#pragma GCC unroll 16
          for (int c = 0; c < NC; ++c) t[c] = _mm256_shuffle_epi8(tbl, _mm256_and_si256(_mm256_srli_epi16(u[c], 4), low4));
#pragma GCC unroll 16
          for (int r = 0; r < MR; ++r) {
            const __m256i ah = Bcast4(a[r] + k8 * 8 + 4), aah = _mm256_abs_epi8(ah);
#pragma GCC unroll 16
            for (int c = 0; c < NC; ++c)
              AddD(d[r][c], _mm256_madd_epi16(_mm256_maddubs_epi16(aah, _mm256_sign_epi8(t[c], ah)), ones));
          }
        }
        continue;
      }
      __m256i s16[MR][NC];
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r)
#pragma GCC unroll 16
        for (int c = 0; c < NC; ++c) s16[r][c] = _mm256_setzero_si256();
      for (int64_t k8 = k80; k8 < k80 + 4; ++k8) {
        __m256i u[NC];
#pragma GCC unroll 16
        for (int c = 0; c < NC; ++c) {
          u[c] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cp[c] + k8 * 64));
          if (PF) _mm_prefetch(reinterpret_cast<const char*>(cp[c] + k8 * 64) + kPf, _MM_HINT_T0);
        }
        __m256i lo[NC];
#pragma GCC unroll 16
        for (int c = 0; c < NC; ++c) lo[c] = _mm256_and_si256(u[c], low4);
#pragma GCC unroll 16
        for (int r = 0; r < MR; ++r) {
          const __m256i al = Bcast4(a[r] + k8 * 8);
#pragma GCC unroll 16
          for (int c = 0; c < NC; ++c) AddW(s16[r][c], _mm256_maddubs_epi16(lo[c], al));
        }
#pragma GCC unroll 16
        for (int c = 0; c < NC; ++c) lo[c] = _mm256_and_si256(_mm256_srli_epi16(u[c], 4), low4);
#pragma GCC unroll 16
        for (int r = 0; r < MR; ++r) {
          const __m256i ah = Bcast4(a[r] + k8 * 8 + 4);
#pragma GCC unroll 16
          for (int c = 0; c < NC; ++c) AddW(s16[r][c], _mm256_maddubs_epi16(lo[c], ah));
        }
      }
      // widen the slice: int16 pairs -> int32
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r)
#pragma GCC unroll 16
        for (int c = 0; c < NC; ++c) {
          const __m256i w = _mm256_madd_epi16(s16[r][c], ones);
          if (slices == 1) {
            d[r][c] = w;
          } else if (REGF) {
            if (sl == 0) d[r][c] = w;
            else AddD(d[r][c], w);
          } else {
            __m256i t = w;
            if (sl > 0) t = _mm256_add_epi32(t, _mm256_load_si256(reinterpret_cast<const __m256i*>(dm[r][c])));
            if (sl + 1 < slices) _mm256_store_si256(reinterpret_cast<__m256i*>(dm[r][c]), t);
            d[r][c] = t;
          }
        }
    }
    // group end: take the zero point's share out, convert, one fma with the group scale
    __m256i corr[MR];
    if (MODE == kSym) {
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) corr[r] = _mm256_set1_epi32(-8 * gs[r][gi]);
    }
#pragma GCC unroll 16
    for (int c = 0; c < NC; ++c) {
      const __m256 s = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sp[c] + gi * 16)));
      __m256i z = _mm256_setzero_si256();
      if (MODE == kAsym) {
        int64_t zz;
        std::memcpy(&zz, zp[c] + gi * 16, 8);
        z = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(zz));
      }
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        __m256i t = d[r][c];
        if (MODE == kSym) t = _mm256_add_epi32(t, corr[r]);
        if (MODE == kAsym) t = _mm256_sub_epi32(t, _mm256_mullo_epi32(z, _mm256_set1_epi32(gs[r][gi])));
        if (REGF) {
          fr[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(t), s, fr[r][c]);
        } else {
          _mm256_store_ps(fm[r][c], _mm256_fmadd_ps(_mm256_cvtepi32_ps(t), s, _mm256_load_ps(fm[r][c])));
        }
      }
    }
  }
  const bool relu = g.act == Activation::kRelu;
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 16
    for (int c = 0; c < NC; ++c) {
      const int64_t nv = ncols - 8 * c;
      if (nv <= 0) continue;
      const __m256 f = REGF ? fr[r][c] : _mm256_load_ps(fm[r][c]);
      __m256 y = _mm256_mul_ps(f, _mm256_set1_ps(g.a_scale[m + r]));
      float* out = g.C + (m + r) * g.ldc + n + 8 * c;
      if (nv >= 8) {
        if (g.bias) y = _mm256_add_ps(y, _mm256_loadu_ps(g.bias + n + 8 * c));
        if (relu) y = _mm256_max_ps(_mm256_setzero_ps(), y);
        _mm256_storeu_ps(out, y);
      } else {
        const __m256i mk = TailMask(nv);
        if (g.bias) y = _mm256_add_ps(y, _mm256_maskload_ps(g.bias + n + 8 * c, mk));
        if (relu) y = _mm256_max_ps(_mm256_setzero_ps(), y);
        _mm256_maskstore_ps(out, mk, y);
      }
    }
}

// Columns [n0, n1) for rows [m, m + MR): tiles of NC vectors, then narrower ones.
template <int MR, int NC, int MODE, bool REGF, bool PF>
void Cols(const Q4GemmArgs& g, int64_t m, int64_t n0, int64_t n1) {
  int64_t n = n0;
  for (; n + 8 * NC <= n1; n += 8 * NC) Tile<MR, NC, MODE, REGF, PF>(g, m, n, 8 * NC);
  if (n >= n1) return;
  if constexpr (NC > 1) {
    if (n1 - n > 8 * (NC - 1)) return Tile<MR, NC, MODE, REGF, PF>(g, m, n, n1 - n);
    Cols<MR, NC - 1, MODE, REGF, PF>(g, m, n, n1);
  } else {
    Tile<MR, 1, MODE, REGF, PF>(g, m, n, n1 - n);
  }
}

template <int MODE>
void Tiled(const Q4GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  constexpr int64_t MR = MODE == kTab ? kMRTable : kMRAffine;
  const int64_t rows = m1 - m0, Kg = q4_kg(g.K, g.lay.group);
  int64_t nc = kL2Block / (Kg / 2) / 16 * 16;  // columns whose codes stay in L2 across the row tiles
  if (nc < 16) nc = 16;
  const int64_t ntiles = (rows + MR - 1) / MR;
  const int64_t base = rows / ntiles, extra = rows % ntiles;  // balanced tile heights (differ by <= 1)
  for (int64_t jc = n0; jc < n1; jc += nc) {
    const int64_t jend = jc + nc < n1 ? jc + nc : n1;
    int64_t m = m0;
    for (int64_t it = 0; it < ntiles; ++it) {
      const int64_t mr = base + (it < extra ? 1 : 0);
      switch (mr) {
        case 1: Cols<1, 2, MODE, false, false>(g, m, jc, jend); break;
        case 2: Cols<2, 2, MODE, false, false>(g, m, jc, jend); break;
        case 3: Cols<3, 2, MODE, false, false>(g, m, jc, jend); break;
        case 4: Cols<4, 2, MODE, false, false>(g, m, jc, jend); break;
        case 5: Cols<MR >= 5 ? 5 : 4, 2, MODE, false, false>(g, m, jc, jend); break;
        default: Cols<MR, 2, MODE, false, false>(g, m, jc, jend); break;
      }
      m += mr;
    }
  }
}

template <int MODE>
void Run(const Q4GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  // 1-4 rows (decode, memory-bound): several code panel streams at once, sums in registers
  switch (m1 - m0) {
    case 1: return Cols<1, 4, MODE, true, true>(g, m0, n0, n1);
    case 2: return Cols<2, 4, MODE, false, true>(g, m0, n0, n1);
    case 3: return Cols<3, 2, MODE, false, true>(g, m0, n0, n1);
    case 4: return Cols<4, 2, MODE, false, true>(g, m0, n0, n1);
    default: return Tiled<MODE>(g, m0, m1, n0, n1);
  }
}

}  // namespace

void q4_gemm_4x16c8__avx2(const Q4GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  if (m1 <= m0 || n1 <= n0) return;
  if (g.lay.kind == Q4Kind::kTable) return Run<kTab>(g, m0, m1, n0, n1);
  if (g.lay.asym) return Run<kAsym>(g, m0, m1, n0, n1);
  Run<kSym>(g, m0, m1, n0, n1);
}

}  // namespace avx2
}  // namespace lowbit
