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
// Tables whose entries all lie in [-64, 64] (kTabS: lowbit's own NF4 and k-means tables) go in
// shifted instead: T[u] + 64 is a u8 in [0, 128], the first operand of vpmaddubsw, and the s8
// activations the second; a pair is at most 2*128*127 = 32512, so vpmaddubsw + vpmaddwd +
// vpaddd (3 ops) is exact, and the shift comes out per group: the int32 sums start at -64 * gsum.
//
// Integer group sums are exact; the per-group fma chain runs in the reference's order, so
// every tile shape and thread split gives the reference's bits.
#include <immintrin.h>

#include <cstring>

#include "kernels/common/avx2_int8_tiles.h"
#include "q4_gemm.h"

namespace lowbit {
namespace avx2 {
namespace {

enum Mode { kSym = 0, kAsym = 1, kTab = 2, kTabS = 3 };

constexpr bool IsTab(int mode) { return mode == kTab || mode == kTabS; }

constexpr int64_t kMRAffine = 6;  // large-M tile rows, affine: 12 int16 sums + 4 work registers
constexpr int64_t kMRTable = 4;   // large-M tile rows, table: 8 int32 sums + 8 work registers
constexpr int64_t kMRTableS = 6;  // large-M tile rows, shifted table: 12 int32 sums + 4 work registers
constexpr int64_t MRof(int mode) { return mode == kTab ? kMRTable : (mode == kTabS ? kMRTableS : kMRAffine); }

// The vpshufb table: T (kTab) or T + 64 (kTabS), in both 128-bit lanes.
inline __m256i LoadTable(const uint8_t* W, int mode) {
  const __m256i t = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(W)));
  return mode == kTabS ? _mm256_add_epi8(t, _mm256_set1_epi8(64)) : t;
}
constexpr int64_t kDecCols = 64;  // tiled path: columns per decoded block (8 vectors of 8)
constexpr int64_t kDecK = 768;    // tiled path: at most this many k per decoded block (48 KB on the stack)
constexpr int64_t kDecMinTiles = 3;   // tiled path: decode once per column block from this many row tiles
constexpr int64_t kPf = 768;      // prefetch distance (bytes) along each code panel stream (small M)
constexpr int64_t kGemvPf = 1024; // the same for Gemv's panel streams

using int8tiles::AddD;      // the int8 GEMMs' helpers (kernels/common/avx2_int8_tiles.h)
using int8tiles::Bcast4;
using int8tiles::TailMask;

// In-place int16 accumulation through asm: GCC 12 otherwise copies (and spills) accumulator
// arrays around the intrinsics' results.
inline void AddW(__m256i& acc, __m256i p) { asm("vpaddw %1, %0, %0" : "+x"(acc) : "x"(p)); }

// Codes of a column block, decoded once for all row tiles of the tiled path: per 8-column
// vector and 8-k step, 32 bytes of low-nibble values then 32 of high-nibble values (the codes
// u for affine layouts, T[u] for the table), so the row tiles spend no decode ops.
struct Decoded {
  const uint8_t* base;  // nullptr: decode the packed codes on the fly
  int64_t cv0;          // first column vector held (column / 8)
  int64_t k80;          // first 8-k step held
  int64_t stride;       // bytes per column vector
  const int8_t* absa;   // table codes: |a| of the row tile's rows over the same k (row stride kDecK)
  const int32_t* init;  // symmetric codes, 32-k groups: the row tile's slice sum starts over the
                        // block's groups (SliceInit, row stride kDecK / 32)
};

// The start of a symmetric 32-k slice sum (see Tile): -8 * gsum in the even int16 lane, 0 in the
// odd one. Computed once per row and group by the callers that reuse it (a vpbroadcastd from
// memory then costs no vector ALU op; computing it in the tile took 2 per row and group, ~4% of
// the tiled path's time).
inline int32_t SliceInit(int32_t gsum) { return (-8 * gsum) & 0xFFFF; }
// SliceInit of n consecutive group sums.
inline void SliceInits(const int32_t* gsum, int64_t n, int32_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = SliceInit(gsum[i]);
}

// Asymmetric codes, 32-k groups, decoded once for the tiled path: the decoded bytes are
// u + kAsymShift - z (in [0, 30]: z is in [0, 15], checked at load), so the tile multiplies
// (u - z) + kAsymShift instead of u and takes no zero-point product per row, column and group.
// The int16 slice sums start at -kAsymShift * E in the even lane and -kAsymShift * O in the
// odd one (E, O: the group's activation sums over k = 0,1 and k = 2,3 (mod 4), E + O = gsum),
// so after the slice each lane holds sum (u - z) * a over its 16 k: |.| <= 16 * 15 * 127 =
// 30480 < 32767, and vpmaddwd by ones yields the group's exact sum. (The sums on the way may
// leave the int16 range; vpaddw wraps, and the final value is what counts. A pair of products
// is at most 2 * 30 * 127 = 7620: vpmaddubsw never saturates.)
constexpr int kAsymShift = 15;
inline int32_t AsymInit(int32_t e, int32_t gsum) {
  return ((-kAsymShift * e) & 0xFFFF) | int32_t(uint32_t((-kAsymShift * (gsum - e)) & 0xFFFF) << 16);
}
// AsymInit of rows [m0, m1) and groups [ga, gb) into out (row stride os): E from the rows.
inline void AsymInits(const Q4GemmArgs& g, int64_t m0, int64_t m1, int64_t ga, int64_t gb, int32_t* out, int64_t os) {
  const int64_t NG = q4_kg(g.K, 32) / 32;
  const __m256i pick = _mm256_set1_epi32(0x00000101), ones = _mm256_set1_epi16(1);
  for (int64_t m = m0; m < m1; ++m) {
    const int8_t* a = g.A + m * g.lda;
    for (int64_t gi = ga; gi < gb; ++gi) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + gi * 32));
      const __m256i e = _mm256_madd_epi16(_mm256_maddubs_epi16(pick, v), ones);  // a[4j] + a[4j + 1]
      __m128i t = _mm_add_epi32(_mm256_castsi256_si128(e), _mm256_extracti128_si256(e, 1));
      t = _mm_add_epi32(t, _mm_shuffle_epi32(t, _MM_SHUFFLE(1, 0, 3, 2)));
      t = _mm_add_epi32(t, _mm_shuffle_epi32(t, _MM_SHUFFLE(2, 3, 0, 1)));
      out[(m - m0) * os + gi - ga] = AsymInit(_mm_cvtsi128_si32(t), g.gsum[m * NG + gi]);
    }
  }
}

// K range of a tile: groups [g0, g1); partial fp32 sums of earlier K blocks wait in C (exact:
// the per-group fma chain is the same, only stored and reloaded).
struct GRange {
  int64_t g0, g1;
  bool first, last;
};

// Symmetric codes, 32-k groups: instead of zero, the int16 slice sums start at -8*gsum in the
// even lane of each int32 pair and 0 in the odd one. The even lane sums k = 0,1 (mod 4), the
// odd lane k = 2,3; with E, O the activation sums of those two classes (gsum = E + O), the even
// lane, after a processed subset P of its 16 k, holds -8E - 8O + sum_P u*a
// = sum_P (u-8)*a - 8*sum_{even class not in P} a - 8*O: 16 terms of at most 8*127 plus
// |8*O| <= 8*16*127, so |value| <= 16256 + 16256 = 32512 < 32767 at every step (and -8*gsum
// itself fits: |gsum| <= 32*127). The odd lane is the plain sum of u*a, |.| <= 16*15*127 = 30480.
// vpmaddwd by ones then yields sum (u-8)*a exactly: no correction add per output vector.

// The output step of both tiles: row m, columns [n, n + min(nv, 8)) get f * a_scale[m] + bias,
// then ReLU if asked; a full store, or a masked one for the last partial vector.
inline void StoreOut(const Q4GemmArgs& g, int64_t m, int64_t n, int64_t nv, __m256 f, bool relu) {
  float* out = g.C + m * g.ldc + n;
  __m256 y = _mm256_mul_ps(f, _mm256_set1_ps(g.a_scale[m]));
  if (nv >= 8) {
    if (g.bias) y = _mm256_add_ps(y, _mm256_loadu_ps(g.bias + n));
    if (relu) y = _mm256_max_ps(_mm256_setzero_ps(), y);
    _mm256_storeu_ps(out, y);
  } else {
    const __m256i mk = TailMask(nv);
    if (g.bias) y = _mm256_add_ps(y, _mm256_maskload_ps(g.bias + n, mk));
    if (relu) y = _mm256_max_ps(_mm256_setzero_ps(), y);
    _mm256_maskstore_ps(out, mk, y);
  }
}

// MR rows x NC 8-column vectors starting at column n (a multiple of 8; vector c is half
// (n/8 + c) % 2 of panel (n + 8c)/16), ncols of them valid, over groups [gr.g0, gr.g1).
// ONE: 32-k groups (one slice each). REGF: the fp32 sums (and, for longer groups, the int32
// group sums) stay in registers; otherwise in small stack arrays (L1), and the registers hold
// the int16 slice sums. DEC: codes come decoded from a column block buffer.
template <int MR, int NC, int MODE, bool REGF, bool PF, bool DEC, bool ONE>
__attribute__((noinline)) void Tile(const Q4GemmArgs& g, int64_t m, int64_t n, int64_t ncols, GRange gr, Decoded dec) {
  const int64_t G = ONE ? 32 : g.lay.group, Kg = q4_kg(g.K, G), NG = Kg / G, ps = Kg * 8;
  const Q4Parts parts = q4_parts(g.K, g.N, g.lay);
  const uint8_t* cp[NC];  // packed codes at 8-k step 0 (on the fly), or decoded bytes at step k0
  const int64_t k0 = DEC ? dec.k80 : 0;  // 8-k step at cp[c] (and at aa[r])
  const uint16_t* sp[NC];
  const uint8_t* zp[NC];
#pragma GCC unroll 16
  for (int c = 0; c < NC; ++c) {
    const int64_t p = (n + 8 * c) / 16, h = (n / 8 + c) % 2;
    cp[c] = DEC ? dec.base + (n / 8 + c - dec.cv0) * dec.stride : g.W + parts.codes + p * ps + 32 * h;
    sp[c] = reinterpret_cast<const uint16_t*>(g.W + parts.scales) + p * NG * 16 + 8 * h;
    zp[c] = g.W + parts.zeros + p * NG * 16 + 8 * h;
  }
  const int8_t* a[MR];
  const int8_t* aa[MR];  // |a| (table codes with DEC), indexed like a
  const int32_t* gs[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    a[r] = g.A + (m + r) * g.lda;
    aa[r] = DEC ? dec.absa + r * kDecK : nullptr;
    gs[r] = g.gsum + (m + r) * NG;
  }
  const __m256i low4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
  const __m256i tbl = IsTab(MODE) ? LoadTable(g.W, MODE) : _mm256_setzero_si256();
  const int64_t slices = G / 32;

  // Values of vector c at 8-k step k8: the low nibbles (hi = false) or the high ones, as
  // codes (affine) or table entries.
  auto codes = [&](int c, int64_t k8, bool hi, const __m256i* raw) -> __m256i {
    if constexpr (DEC) {
      return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cp[c] + (k8 - k0) * 64 + (hi ? 32 : 0)));
    } else {
      __m256i u = hi ? _mm256_and_si256(_mm256_srli_epi16(raw[c], 4), low4) : _mm256_and_si256(raw[c], low4);
      if (IsTab(MODE)) u = _mm256_shuffle_epi8(tbl, u);
      return u;
    }
  };
  auto load_raw = [&](int64_t k8, __m256i* raw) {
    if constexpr (!DEC) {
#pragma GCC unroll 16
      for (int c = 0; c < NC; ++c) {
        raw[c] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cp[c] + (k8 - k0) * 64));
        if (PF && c % 2 == 0)  // one 64-byte line per panel and step (n is a multiple of 16)
          _mm_prefetch(reinterpret_cast<const char*>(cp[c] + (k8 - k0) * 64) + kPf, _MM_HINT_T0);
      }
    }
  };

  __m256 fr[MR][NC];                  // fp32 sums in registers (REGF)
  alignas(32) float fm[MR][NC][8];    // or in L1
  alignas(32) int32_t dm[MR][NC][8];  // int32 group sums of earlier slices (!REGF, !ONE)
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 16
    for (int c = 0; c < NC; ++c) {
      if (gr.first) {
        fr[r][c] = _mm256_setzero_ps();
      } else {
        const float* src = g.C + (m + r) * g.ldc + n + 8 * c;
        fr[r][c] = ncols >= 8 * c + 8 ? _mm256_loadu_ps(src) : _mm256_maskload_ps(src, TailMask(ncols - 8 * c));
      }
      if (!REGF) _mm256_store_ps(fm[r][c], fr[r][c]);
    }
  // f += float(t) * s for row r, vector c (the reference's fma, in its order)
  auto fma_out = [&](int r, int c, __m256i t, __m256 s) {
    if (REGF) fr[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(t), s, fr[r][c]);
    else _mm256_store_ps(fm[r][c], _mm256_fmadd_ps(_mm256_cvtepi32_ps(t), s, _mm256_load_ps(fm[r][c])));
  };
  auto scale = [&](int c, int64_t gi) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sp[c] + gi * 16)));
  };
  auto zpoint = [&](int c, int64_t gi) {
    int64_t zz;
    std::memcpy(&zz, zp[c] + gi * 16, 8);
    return _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(zz));
  };

  for (int64_t gi = gr.g0; gi < gr.g1; ++gi) {
    if constexpr (IsTab(MODE)) {
      // int32 sums per group, each vpmaddubsw widened at once: kTabS multiplies (T[u] + 64) by a,
      // the sums starting at -64 * gsum (int32: no bound to mind); kTab multiplies |a| by
      // sign(T[u], a)
      __m256i d[MR][NC];
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const __m256i init = MODE == kTabS ? _mm256_set1_epi32(-64 * gs[r][gi]) : _mm256_setzero_si256();
#pragma GCC unroll 16
        for (int c = 0; c < NC; ++c) d[r][c] = init;
      }
      for (int64_t k8 = gi * G / 8; k8 < (gi + 1) * G / 8; ++k8) {
        __m256i raw[NC], t[NC];
        load_raw(k8, raw);
#pragma GCC unroll 2
        for (int hi = 0; hi < 2; ++hi) {  // the low nibbles (k8*8 + 0..3), then the high ones (+4..7)
#pragma GCC unroll 16
          for (int c = 0; c < NC; ++c) t[c] = codes(c, k8, hi == 1, raw);
#pragma GCC unroll 16
          for (int r = 0; r < MR; ++r) {
            const __m256i av = Bcast4(a[r] + k8 * 8 + 4 * hi);
            if constexpr (MODE == kTabS) {
#pragma GCC unroll 16
              for (int c = 0; c < NC; ++c) AddD(d[r][c], _mm256_madd_epi16(_mm256_maddubs_epi16(t[c], av), ones));
            } else {
              const __m256i aav = DEC ? Bcast4(aa[r] + (k8 - k0) * 8 + 4 * hi) : _mm256_abs_epi8(av);
#pragma GCC unroll 16
              for (int c = 0; c < NC; ++c)
                AddD(d[r][c], _mm256_madd_epi16(_mm256_maddubs_epi16(aav, _mm256_sign_epi8(t[c], av)), ones));
            }
          }
        }
      }
#pragma GCC unroll 16
      for (int c = 0; c < NC; ++c) {
        const __m256 sc = scale(c, gi);
#pragma GCC unroll 16
        for (int r = 0; r < MR; ++r)
          fma_out(r, c, d[r][c], sc);
      }
    } else {
      __m256i d[MR][NC];  // int32 group sums of groups longer than a slice (REGF)
      for (int64_t sl = 0; sl < slices; ++sl) {
        const int64_t k80 = (gi * slices + sl) * 4;
        __m256i s16[MR][NC];
#pragma GCC unroll 16
        for (int r = 0; r < MR; ++r) {
          const __m256i init = (MODE == kSym || (MODE == kAsym && DEC)) && ONE
                                   ? _mm256_set1_epi32(DEC ? dec.init[r * (kDecK / 32) + gi - gr.g0] : SliceInit(gs[r][gi]))
                                   : _mm256_setzero_si256();
#pragma GCC unroll 16
          for (int c = 0; c < NC; ++c) s16[r][c] = init;
        }
        for (int64_t k8 = k80; k8 < k80 + 4; ++k8) {
          if constexpr (!DEC && MR <= 2) {
            // few rows (decode): the activations stay in registers, each code vector is used up
            // at once (fewer live registers than loading all vectors first)
            __m256i al[MR], ah[MR];
#pragma GCC unroll 16
            for (int r = 0; r < MR; ++r) {
              al[r] = Bcast4(a[r] + k8 * 8);
              ah[r] = Bcast4(a[r] + k8 * 8 + 4);
            }
#pragma GCC unroll 16
            for (int c = 0; c < NC; ++c) {
              const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cp[c] + (k8 - k0) * 64));
              if (PF && c % 2 == 0)  // one 64-byte line per panel and step (n is a multiple of 16)
                _mm_prefetch(reinterpret_cast<const char*>(cp[c] + (k8 - k0) * 64) + kPf, _MM_HINT_T0);
              const __m256i lo = _mm256_and_si256(v, low4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
#pragma GCC unroll 16
              for (int r = 0; r < MR; ++r) {
                AddW(s16[r][c], _mm256_maddubs_epi16(lo, al[r]));
                AddW(s16[r][c], _mm256_maddubs_epi16(hi, ah[r]));
              }
            }
            continue;
          }
          __m256i raw[NC], u[NC];
          load_raw(k8, raw);
#pragma GCC unroll 16
          for (int c = 0; c < NC; ++c) u[c] = codes(c, k8, false, raw);
#pragma GCC unroll 16
          for (int r = 0; r < MR; ++r) {
            const __m256i al = Bcast4(a[r] + k8 * 8);
#pragma GCC unroll 16
            for (int c = 0; c < NC; ++c) AddW(s16[r][c], _mm256_maddubs_epi16(u[c], al));
          }
#pragma GCC unroll 16
          for (int c = 0; c < NC; ++c) u[c] = codes(c, k8, true, raw);
#pragma GCC unroll 16
          for (int r = 0; r < MR; ++r) {
            const __m256i ah = Bcast4(a[r] + k8 * 8 + 4);
#pragma GCC unroll 16
            for (int c = 0; c < NC; ++c) AddW(s16[r][c], _mm256_maddubs_epi16(u[c], ah));
          }
        }
        if constexpr (ONE) {  // the group ends with its only slice
#pragma GCC unroll 16
          for (int c = 0; c < NC; ++c) {
            const __m256 sc = scale(c, gi);
            constexpr bool zcorr = MODE == kAsym && !DEC;  // decoded asymmetric codes: see AsymInit
            const __m256i z = zcorr ? zpoint(c, gi) : _mm256_setzero_si256();
#pragma GCC unroll 16
            for (int r = 0; r < MR; ++r) {
              __m256i t = _mm256_madd_epi16(s16[r][c], ones);
              if (zcorr) t = _mm256_sub_epi32(t, _mm256_mullo_epi32(z, _mm256_set1_epi32(gs[r][gi])));
              fma_out(r, c, t, sc);
            }
          }
        } else {  // widen the slice into the group's int32 sums
#pragma GCC unroll 16
          for (int r = 0; r < MR; ++r)
#pragma GCC unroll 16
            for (int c = 0; c < NC; ++c) {
              __m256i w = _mm256_madd_epi16(s16[r][c], ones);
              if (REGF) {
                if (sl == 0) d[r][c] = w;
                else AddD(d[r][c], w);
              } else {
                if (sl > 0) w = _mm256_add_epi32(w, _mm256_load_si256(reinterpret_cast<const __m256i*>(dm[r][c])));
                _mm256_store_si256(reinterpret_cast<__m256i*>(dm[r][c]), w);
              }
            }
        }
      }
      if constexpr (!ONE) {  // group end: take the zero point's share out, convert, fma
#pragma GCC unroll 16
        for (int c = 0; c < NC; ++c) {
          const __m256 sc = scale(c, gi);
          const __m256i z = MODE == kAsym ? zpoint(c, gi) : _mm256_set1_epi32(8);
#pragma GCC unroll 16
          for (int r = 0; r < MR; ++r) {
            __m256i t = REGF ? d[r][c] : _mm256_load_si256(reinterpret_cast<const __m256i*>(dm[r][c]));
            t = _mm256_sub_epi32(t, _mm256_mullo_epi32(z, _mm256_set1_epi32(gs[r][gi])));
            fma_out(r, c, t, sc);
          }
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
      float* out = g.C + (m + r) * g.ldc + n + 8 * c;
      if (!gr.last) {  // the fp32 sums so far, for the next K block
        if (nv >= 8) _mm256_storeu_ps(out, f);
        else _mm256_maskstore_ps(out, TailMask(nv), f);
        continue;
      }
      StoreOut(g, m + r, n + 8 * c, nv, f, relu);
    }
}

// Columns [n0, n1) (n0 a multiple of 16) for rows [m, m + MR): tiles of NC vectors (NC = 1, 2
// or a multiple of 2), then halved ones, so that every tile starts on a panel (n % 16 == 0).
template <int MR, int NC, int MODE, bool REGF, bool PF, bool DEC, bool ONE>
void Cols(const Q4GemmArgs& g, int64_t m, int64_t n0, int64_t n1, GRange gr, Decoded dec) {
  int64_t n = n0;
  for (; n + 8 * NC <= n1; n += 8 * NC) Tile<MR, NC, MODE, REGF, PF, DEC, ONE>(g, m, n, 8 * NC, gr, dec);
  if (n >= n1) return;
  if constexpr (NC > 1) {
    if (n1 - n > 4 * NC) return Tile<MR, NC, MODE, REGF, PF, DEC, ONE>(g, m, n, n1 - n, gr, dec);
    Cols<MR, NC / 2, MODE, REGF, PF, DEC, ONE>(g, m, n, n1, gr, dec);
  } else {
    Tile<MR, 1, MODE, REGF, PF, DEC, ONE>(g, m, n, n1 - n, gr, dec);
  }
}

// Decodes the codes of columns [n0, n1) (n0 a multiple of 16) x 8-k steps [k80, k81) into buf.
// SHIFT (asymmetric codes, 32-k groups): u + kAsymShift - z instead of u (see AsymInit).
template <int MODE, bool SHIFT = false>
void Decode(const Q4GemmArgs& g, int64_t n0, int64_t n1, int64_t k80, int64_t k81, uint8_t* buf) {
  const int64_t Kg = q4_kg(g.K, g.lay.group), ps = Kg * 8, NG = Kg / g.lay.group;
  const Q4Parts parts = q4_parts(g.K, g.N, g.lay);
  const uint8_t* codes = g.W + parts.codes;
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const __m256i tbl = IsTab(MODE) ? LoadTable(g.W, MODE) : _mm256_setzero_si256();
  // column j's zero point (byte j of 8) into the 4 bytes of 32-bit lane j
  const __m256i zrep = _mm256_setr_epi8(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6,
                                        6, 7, 7, 7, 7);
  const int64_t stride = (k81 - k80) * 64;
  for (int64_t cv = n0 / 8; cv < (n1 + 7) / 8; ++cv) {
    const uint8_t* src = codes + (cv / 2) * ps + (cv % 2) * 32;
    const uint8_t* zsrc = SHIFT ? g.W + parts.zeros + (cv / 2) * NG * 16 + (cv % 2) * 8 : nullptr;  // (asym only)
    uint8_t* dst = buf + (cv - n0 / 8) * stride;
    __m256i off = _mm256_setzero_si256();
    for (int64_t k8 = k80; k8 < k81; ++k8) {
      if (SHIFT && (k8 == k80 || k8 % 4 == 0)) {  // a new 32-k group: its zero points
        const __m128i z8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(zsrc + (k8 / 4) * 16));
        off = _mm256_sub_epi8(_mm256_set1_epi8(kAsymShift), _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(z8), zrep));
      }
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + k8 * 64));
      __m256i lo = _mm256_and_si256(v, low4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
      if (IsTab(MODE)) {
        lo = _mm256_shuffle_epi8(tbl, lo);
        hi = _mm256_shuffle_epi8(tbl, hi);
      }
      if (SHIFT) {
        lo = _mm256_add_epi8(lo, off);
        hi = _mm256_add_epi8(hi, off);
      }
      _mm256_store_si256(reinterpret_cast<__m256i*>(dst + (k8 - k80) * 64), lo);
      _mm256_store_si256(reinterpret_cast<__m256i*>(dst + (k8 - k80) * 64 + 32), hi);
    }
  }
}

// One row tile of mr rows (mr <= the mode's MR) over columns [jc, jend).
template <int MODE, bool ONE, bool DEC>
void RowTile(const Q4GemmArgs& g, int64_t m, int64_t mr, int64_t jc, int64_t jend, GRange gr, Decoded dec) {
  constexpr int64_t MR = MRof(MODE);
  constexpr bool PF = !DEC;  // codes streamed from memory: prefetch ahead
  switch (mr) {
    case 1: return Cols<1, 2, MODE, false, PF, DEC, ONE>(g, m, jc, jend, gr, dec);
    case 2: return Cols<2, 2, MODE, false, PF, DEC, ONE>(g, m, jc, jend, gr, dec);
    case 3: return Cols<3, 2, MODE, false, PF, DEC, ONE>(g, m, jc, jend, gr, dec);
    case 4: return Cols<4, 2, MODE, false, PF, DEC, ONE>(g, m, jc, jend, gr, dec);
    case 5: return Cols<MR >= 5 ? 5 : 4, 2, MODE, false, PF, DEC, ONE>(g, m, jc, jend, gr, dec);
    default: return Cols<MR, 2, MODE, false, PF, DEC, ONE>(g, m, jc, jend, gr, dec);
  }
}

// M >= 5: row tiles of MR rows (balanced heights). With enough row tiles, each column block's
// codes are decoded once (K blocks of whole groups, <= kDecK k) and shared by all row tiles;
// with few, the tiles decode on the fly in one pass over the codes.
template <int MODE, bool ONE>
void Tiled(const Q4GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  constexpr int64_t MR = MRof(MODE);
  const int64_t G = g.lay.group, Kg = q4_kg(g.K, G), NG = Kg / G;
  const int64_t rows = m1 - m0;
  const int64_t ntiles = (rows + MR - 1) / MR;
  const int64_t base = rows / ntiles, extra = rows % ntiles;  // balanced tile heights (differ by <= 1)
  if (ntiles < kDecMinTiles) {
    const GRange whole{0, NG, true, true};
    const Decoded none{nullptr, 0, 0, 0, nullptr, nullptr};
    const int64_t nc = kDecCols * 4;  // codes of a column block stay in L2 for the other row tile
    for (int64_t jc = n0; jc < n1; jc += nc) {
      const int64_t jend = jc + nc < n1 ? jc + nc : n1;
      int64_t m = m0;
      for (int64_t it = 0; it < ntiles; ++it) {
        const int64_t mr = base + (it < extra ? 1 : 0);
        RowTile<MODE, ONE, false>(g, m, mr, jc, jend, whole, none);
        m += mr;
      }
    }
    return;
  }
  const int64_t gpb_max = kDecK / G, nkb = (NG + gpb_max - 1) / gpb_max, gpb = (NG + nkb - 1) / nkb;
  alignas(64) uint8_t buf[kDecCols * kDecK];
  alignas(64) int8_t absbuf[MODE == kTab ? kMRTable * kDecK : 32];
  constexpr bool shift = MODE == kAsym && ONE;  // decoded asymmetric codes: see AsymInit
  alignas(64) int32_t initbuf[(MODE == kSym || shift) && ONE ? MR * (kDecK / 32) : 1];
  // Asymmetric slice sum starts: of every row and group of a run of row tiles, computed once
  // for all column blocks (they depend on the rows only). The runs are as many whole tiles as
  // the buffer holds; the codes are decoded once per run. Where it holds fewer than 3 tiles
  // (K > ~14500 at 6 rows), all tiles run together and each tile computes its starts per
  // column and K block instead.
  constexpr int64_t kAsymInitMax = 8192;
  alignas(64) int32_t asym_init[shift ? kAsymInitMax : 1];
  const int64_t run_tiles = shift ? kAsymInitMax / (NG * (base + 1)) : ntiles;  // tiles are <= base + 1 rows
  const bool per_block = shift && run_tiles < kDecMinTiles;
  int64_t mrun = m0;
  for (int64_t t0 = 0; t0 < ntiles; t0 += per_block ? ntiles : run_tiles) {
    const int64_t t1 = per_block || t0 + run_tiles > ntiles ? ntiles : t0 + run_tiles;
    int64_t mend = mrun;
    for (int64_t it = t0; it < t1; ++it) mend += base + (it < extra ? 1 : 0);
    if (shift && !per_block) AsymInits(g, mrun, mend, 0, NG, asym_init, NG);
    for (int64_t jc = n0; jc < n1; jc += kDecCols) {
      const int64_t jend = jc + kDecCols < n1 ? jc + kDecCols : n1;
      for (int64_t g0 = 0; g0 < NG; g0 += gpb) {
        const GRange gr{g0, g0 + gpb < NG ? g0 + gpb : NG, g0 == 0, g0 + gpb >= NG};
        const int64_t k80 = gr.g0 * G / 8, k81 = gr.g1 * G / 8;
        Decode<MODE, shift>(g, jc, jend, k80, k81, buf);
        const Decoded dec{buf, jc / 8, k80, (k81 - k80) * 64, absbuf, initbuf};
        int64_t m = mrun;
        for (int64_t it = t0; it < t1; ++it) {
          const int64_t mr = base + (it < extra ? 1 : 0);
          if (MODE == kTab) {  // |a| of the tile's rows, once for all its column tiles (no vpabsb inside)
            for (int64_t r = 0; r < mr; ++r)
              for (int64_t k = k80 * 8; k < k81 * 8; k += 32) {
                const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g.A + (m + r) * g.lda + k));
                _mm256_store_si256(reinterpret_cast<__m256i*>(absbuf + r * kDecK + (k - k80 * 8)), _mm256_abs_epi8(v));
              }
          }
          if (MODE == kSym && ONE)
            for (int64_t r = 0; r < mr; ++r) SliceInits(g.gsum + (m + r) * NG + gr.g0, gr.g1 - gr.g0, initbuf + r * (kDecK / 32));
          if (per_block) AsymInits(g, m, m + mr, gr.g0, gr.g1, initbuf, kDecK / 32);
          else if (shift)
            for (int64_t r = 0; r < mr; ++r)
              std::memcpy(initbuf + r * (kDecK / 32), asym_init + (m + r - mrun) * NG + gr.g0, size_t(gr.g1 - gr.g0) * 4);
          RowTile<MODE, ONE, true>(g, m, mr, jc, jend, gr, dec);
          m += mr;
        }
      }
    }
    mrun = mend;
  }
}

// Decode rows (MR = 1 or 2): NP whole panels (NC = 2*NP column vectors) over all groups, each
// 32-k slice's four 8-k steps unrolled with constant offsets and every sum in registers. With
// the weights in L3 the kernel is bound by instruction issue, not by the codes' bytes (it reads
// ~10 bytes per cycle of the ~15 the int8 GEMV gets), so what counts is instructions per MAC:
// no loop counter per 8-k step and one activation broadcast per NC column vectors (measured at
// 1x4096x4096: 0.82-0.86x the time of the generic tile). The prefetch, 1 KB ahead per panel,
// is for weights streamed from DRAM: 0.91x the time without it there, within 2% from L3.
// ONE: 32-k groups, the symmetric sums start at -8*gsum (see Tile); longer groups widen each
// slice's int16 sums into int32 group sums and take z*gsum out at the group end.
template <int MR, int NP, int MODE, bool ONE>
__attribute__((noinline)) void Gemv(const Q4GemmArgs& g, int64_t m, int64_t n, int64_t ncols, const int32_t* init) {
  constexpr int NC = 2 * NP;
  const int64_t G = ONE ? 32 : g.lay.group, Kg = q4_kg(g.K, G), NG = Kg / G, ps = Kg * 8, slices = G / 32;
  const Q4Parts parts = q4_parts(g.K, g.N, g.lay);
  const int64_t p0 = n / 16;
  const uint8_t* cp = g.W + parts.codes + p0 * ps;  // panel p0 + q at cp + q * ps
  const uint16_t* sp = reinterpret_cast<const uint16_t*>(g.W + parts.scales) + p0 * NG * 16;
  const uint8_t* zp = g.W + parts.zeros + p0 * NG * 16;
  const __m256i low4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
  const __m256i tbl = MODE == kTabS ? LoadTable(g.W, MODE) : _mm256_setzero_si256();
  const int8_t* a[MR];
  const int32_t* gs[MR];
#pragma GCC unroll 2
  for (int r = 0; r < MR; ++r) {
    a[r] = g.A + (m + r) * g.lda;
    gs[r] = g.gsum + (m + r) * NG;
  }
  __m256 f[MR][NC];
#pragma GCC unroll 2
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < NC; ++c) f[r][c] = _mm256_setzero_ps();
  // Each panel stream prefetches kGemvPf bytes ahead; from the slice where that passes the
  // panel's end it moves on to the next tile's panel of the same position (NP panels on), so the
  // next tile's streams start warm (a prefetch past the end of the codes never faults).
  const int64_t pf_switch = ps > kGemvPf ? (ps - kGemvPf) / 256 : 0;  // ps, kGemvPf: multiples of 256
  int64_t pf = kGemvPf;
  for (int64_t gi = 0; gi < NG; ++gi) {
    __m256i d[MR][NC];  // int32 group sums
#pragma GCC unroll 2
    for (int r = 0; r < MR; ++r) {  // (overwritten by affine slice 0; kTabS starts at -64 * gsum)
      const __m256i init = MODE == kTabS ? _mm256_set1_epi32(-64 * gs[r][gi]) : _mm256_setzero_si256();
#pragma GCC unroll 8
      for (int c = 0; c < NC; ++c) d[r][c] = init;
    }
    for (int64_t sl = 0; sl < slices; ++sl) {
      __m256i s[MR][NC];  // affine: the slice's int16 sums
#pragma GCC unroll 2
      for (int r = 0; r < MR; ++r) {
        const __m256i i0 = MODE == kSym && ONE ? _mm256_set1_epi32(init ? init[r * NG + gi] : SliceInit(gs[r][gi]))
                                               : _mm256_setzero_si256();
#pragma GCC unroll 8
        for (int c = 0; c < NC; ++c) s[r][c] = i0;
      }
      if (gi * slices + sl == pf_switch) pf += (NP - 1) * ps;
      const uint8_t* cg = cp + (gi * slices + sl) * 256;
      const int64_t k0 = gi * G + sl * 32;
#pragma GCC unroll 4
      for (int st = 0; st < 4; ++st) {
        __m256i al[MR], ah[MR];
#pragma GCC unroll 2
        for (int r = 0; r < MR; ++r) {
          al[r] = Bcast4(a[r] + k0 + st * 8);
          ah[r] = Bcast4(a[r] + k0 + st * 8 + 4);
        }
#pragma GCC unroll 8
        for (int c = 0; c < NC; ++c) {
          const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cg + (c / 2) * ps + st * 64 + (c % 2) * 32));
          if (c % 2 == 0)  // one 64-byte line per panel and 8-k step
            _mm_prefetch(reinterpret_cast<const char*>(cg + (c / 2) * ps + st * 64) + pf, _MM_HINT_T0);
          __m256i lo = _mm256_and_si256(v, low4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
          if constexpr (MODE == kTabS) {
            lo = _mm256_shuffle_epi8(tbl, lo);
            hi = _mm256_shuffle_epi8(tbl, hi);
          }
#pragma GCC unroll 2
          for (int r = 0; r < MR; ++r) {
            if constexpr (MODE == kTabS) {
              AddD(d[r][c], _mm256_madd_epi16(_mm256_maddubs_epi16(lo, al[r]), ones));
              AddD(d[r][c], _mm256_madd_epi16(_mm256_maddubs_epi16(hi, ah[r]), ones));
            } else {
              AddW(s[r][c], _mm256_maddubs_epi16(lo, al[r]));
              AddW(s[r][c], _mm256_maddubs_epi16(hi, ah[r]));
            }
          }
        }
      }
      if constexpr (MODE != kTabS) {
#pragma GCC unroll 2
        for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
          for (int c = 0; c < NC; ++c) {
            const __m256i w = _mm256_madd_epi16(s[r][c], ones);
            if (sl == 0) d[r][c] = w;
            else AddD(d[r][c], w);
          }
      }
    }
#pragma GCC unroll 8
    for (int c = 0; c < NC; ++c) {
      const int64_t off = (c / 2) * NG * 16 + gi * 16 + (c % 2) * 8;
      const __m256 sc = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sp + off)));
      __m256i z = _mm256_set1_epi32(8);  // what comes out per unit of gsum (affine)
      if constexpr (MODE == kAsym) {
        int64_t zz;
        std::memcpy(&zz, zp + off, 8);
        z = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(zz));
      }
#pragma GCC unroll 2
      for (int r = 0; r < MR; ++r) {
        __m256i t = d[r][c];
        if (MODE == kAsym || (MODE == kSym && !ONE)) t = _mm256_sub_epi32(t, _mm256_mullo_epi32(z, _mm256_set1_epi32(gs[r][gi])));
        f[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(t), sc, f[r][c]);
      }
    }
  }
  const bool relu = g.act == Activation::kRelu;
#pragma GCC unroll 2
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < NC; ++c) {
      const int64_t nv = ncols - 8 * c;
      if (nv <= 0) continue;
      StoreOut(g, m + r, n + 8 * c, nv, f[r][c], relu);
    }
}

// Columns [n0, n1) (n0 a multiple of 16) of rows [m, m + MR) through Gemv: NP panels at a time,
// then single (possibly partial) panels.
template <int MR, int NP, int MODE, bool ONE>
void GemvCols(const Q4GemmArgs& g, int64_t m, int64_t n0, int64_t n1) {
  // symmetric codes, 32-k groups: the slice sum starts once for all column tiles, up to 1024
  // (row, group) entries (K <= 32768 at one row, 16384 at two); longer rows compute them in the tile
  constexpr int64_t kMaxInit = 1024;
  alignas(64) int32_t ibuf[MODE == kSym && ONE ? kMaxInit : 1];
  const int32_t* init = nullptr;
  if constexpr (MODE == kSym && ONE) {
    const int64_t NG = q4_kg(g.K, 32) / 32;
    if (MR * NG <= kMaxInit) {
      SliceInits(g.gsum + m * NG, MR * NG, ibuf);  // the rows' sums are consecutive (row stride NG)
      init = ibuf;
    }
  }
  int64_t n = n0;
  for (; n + 16 * NP <= n1; n += 16 * NP) Gemv<MR, NP, MODE, ONE>(g, m, n, 16 * NP, init);
  for (; n < n1; n += 16) Gemv<MR, 1, MODE, ONE>(g, m, n, n1 - n < 16 ? n1 - n : 16, init);
}

template <int MODE, bool ONE>
void Run(const Q4GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  // 1-4 rows (decode): codes decoded on the fly. One row (and two with 32-k groups) through
  // Gemv, two panels at a time at one row with 32-k groups (the fewest instructions per MAC that
  // still fit the registers), one otherwise; the sign-trick table (kTab) and 3-4 rows through
  // the generic tile, one panel at a time.
  const int64_t NG = q4_kg(g.K, g.lay.group) / g.lay.group;
  const GRange whole{0, NG, true, true};
  const Decoded none{nullptr, 0, 0, 0, nullptr, nullptr};
  if constexpr (MODE != kTab) {
    if (m1 - m0 == 1) return GemvCols<1, ONE ? 2 : 1, MODE, ONE>(g, m0, n0, n1);
    if (ONE && m1 - m0 == 2) return GemvCols<2, 1, MODE, ONE>(g, m0, n0, n1);
  }
  switch (m1 - m0) {
    case 1: return Cols<1, 2, MODE, true, true, false, ONE>(g, m0, n0, n1, whole, none);
    case 2: return Cols<2, 2, MODE, true, true, false, ONE>(g, m0, n0, n1, whole, none);
    case 3: return Cols<3, 2, MODE, false, true, false, ONE>(g, m0, n0, n1, whole, none);
    case 4: return Cols<4, 2, MODE, false, true, false, ONE>(g, m0, n0, n1, whole, none);
    default: return Tiled<MODE, ONE>(g, m0, m1, n0, n1);
  }
}

}  // namespace

void q4_gemm_6x16c8__avx2(const Q4GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  if (m1 <= m0 || n1 <= n0) return;
  const bool one = g.lay.group == 32;
  if (g.lay.kind == Q4Kind::kTable) {
    bool narrow = true;  // every entry in [-64, 64]: the shifted-table path
    for (int i = 0; i < 16; ++i) narrow = narrow && int8_t(g.W[i]) >= -64 && int8_t(g.W[i]) <= 64;
    if (narrow) return one ? Run<kTabS, true>(g, m0, m1, n0, n1) : Run<kTabS, false>(g, m0, m1, n0, n1);
    return one ? Run<kTab, true>(g, m0, m1, n0, n1) : Run<kTab, false>(g, m0, m1, n0, n1);
  }
  if (g.lay.asym) return one ? Run<kAsym, true>(g, m0, m1, n0, n1) : Run<kAsym, false>(g, m0, m1, n0, n1);
  one ? Run<kSym, true>(g, m0, m1, n0, n1) : Run<kSym, false>(g, m0, m1, n0, n1);
}

}  // namespace avx2
}  // namespace lowbit
