// AMX-INT8 4-bit GEMM over "q4-g{G}-{sym,asym}-n16k8" and "q4t-g{G}-n16k8" (see q4_gemm.h):
// Intel Sapphire Rapids and later.
// Compile with: -mamx-tile -mamx-int8 -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512vnni
//
// A panel's codes are decoded once into s8 values v = u - z (or T[u]) in the AMX B layout
// (16 k-quads x 16 columns x 4 bytes per 1 KB tile: the low nibbles of a 64-byte code vector
// are one k-quad row, the high nibbles the next), then every 16-row block of the call runs
// tdpbssd (s8 x s8; the activations are not biased here) over each group: the 16 x 16 int32
// group sums d_g are exact, so the zero point needs no gsum correction. Each group's tile is
// stored and folded into 16 fp32 row accumulators, f = fma(float(d_g), s[n,g], f) in group
// order as the reference does, two groups behind the tdpbssd being issued (four sum tiles).
// Same bits as the reference. K per tdpbssd is min(G, 64): G = 128 takes two per group.
//
// Rows past the last multiple of 16 and calls of fewer than 16 rows run the AVX-512 VNNI
// kernel, which gives the same bits.
// The tile state is requested in csrc/cpu/cpu.cc; each call loads its configuration and
// releases the tiles before it returns.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include "kernels/common/amx.h"
#include "q4_gemm.h"

namespace lowbit {
namespace amx {
namespace {

enum Mode { kSym = 0, kAsym = 1, kTab = 2 };

// K chunk (a multiple of every group size): a panel's chunk of decoded codes, 64 KB, on the
// stack. Measured at 128x768x3072 g32: one chunk 1.03-1.10 ms, chunks of 256 1.36 ms (the fp32
// sums' trips through C cost more than the activations' L1 residency gains).
constexpr int64_t kKC = 4096;

// tmm0..3: group sums (16 x 16 int32), four in turn; (tmm4, tmm5) and (tmm6, tmm7): activations
// (16 rows x kt bytes) and decoded weights (kt/4 k-quads x 64 bytes), the pairs alternating.
inline void Configure(int64_t kt) {
  const uint16_t a = static_cast<uint16_t>(kt);
  const uint8_t b = static_cast<uint8_t>(kt / 4);
  const uint16_t colsb[8] = {64, 64, 64, 64, a, 64, a, 64};
  const uint8_t rows[8] = {16, 16, 16, 16, 16, b, 16, b};
  LoadTileConfig(8, colsb, rows);
}


// Groups [g0, g1) of a panel's codes as s8 values in B layout: 64 bytes per k-quad, from out.
template <int MODE>
void Decode(const Q4GemmArgs& g, const uint8_t* codes, const uint8_t* zeros, int64_t g0, int64_t g1, int64_t G,
            int8_t* out) {
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  __m512i tbl = _mm512_setzero_si512(), zb = _mm512_set1_epi8(8);
  if (MODE == kTab) tbl = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g.W)));
  for (int64_t gi = g0; gi < g1; ++gi) {
    if (MODE == kAsym) {  // z of column j in the 4 bytes of lane j
      const __m512i z = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(zeros + gi * 16)));
      zb = _mm512_mullo_epi32(z, _mm512_set1_epi32(0x01010101));
    }
    for (int64_t k8 = gi * G / 8; k8 < (gi + 1) * G / 8; ++k8) {
      const __m512i v = _mm512_loadu_si512(codes + k8 * 64);
      __m512i lo = _mm512_and_si512(v, low4);
      __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
      if (MODE == kTab) {
        lo = _mm512_shuffle_epi8(tbl, lo);
        hi = _mm512_shuffle_epi8(tbl, hi);
      } else {
        lo = _mm512_sub_epi8(lo, zb);
        hi = _mm512_sub_epi8(hi, zb);
      }
      int8_t* o = out + (k8 - g0 * G / 8) * 128;
      _mm512_store_si512(o, lo);
      _mm512_store_si512(o + 64, hi);
    }
  }
}

// Folds a stored group gi into the row accumulators: f[r] = fma(float(d[r]), s, f[r]).
inline void Fold(__m512 (&f)[16], const int32_t* buf, const uint16_t* scales, int64_t gi) {
  const __m512 s = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(scales + gi * 16)));
#pragma GCC unroll 16
  for (int r = 0; r < 16; ++r) f[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(buf + 16 * r)), s, f[r]);
}

// Group gi's sums into sum tile S with the activation / weight pair P (0: tmm4/5, 1: tmm6/7).
template <int S, int P>
inline void Issue(const uint8_t* arow, int64_t lda, const int8_t* dec, int64_t k0, int64_t gi, int64_t G, int64_t kt) {
  TileZero<S>();
  for (int64_t k = gi * G; k < (gi + 1) * G; k += kt) {
    TileLoad<4 + 2 * P>(arow + k, lda);
    TileLoad<5 + 2 * P>(dec + (k - k0) * 16, 64);
    TileDpbssd<S, 4 + 2 * P, 5 + 2 * P>();
  }
}

// One 16-row block x one panel over groups [g0, g1), pipelined: group g + 2 is issued once group
// g's sums are stored, and group g - 1 (stored one step earlier) is folded after that, so neither
// the tile store nor the fold's loads wait on the instruction just before them. (Measured at
// 128x768x3072 nf4 g32, 1 thread: 722-736 us against 796-807 us for the form with two sum tiles,
// which stored g, issued g + 1 and folded g; issuing three groups ahead: no faster.)
// The fp32 sums of earlier chunks wait in C (exact: stored and reloaded as they are); the last
// chunk applies the epilogue.
struct Pipe {
  const uint8_t* arow;
  int64_t lda, k0, g0, g1, G, kt;
  const int8_t* dec;
  const uint16_t* scales;
  int32_t (*buf)[256];
};
template <int J>
inline bool PipeStep(const Pipe& p, __m512 (&f)[16], int64_t g) {
  TileStore<J>(p.buf[J & 1], 64);
  if (g + 2 < p.g1) Issue<(J + 2) & 3, J & 1>(p.arow, p.lda, p.dec, p.k0, g + 2, p.G, p.kt);
  if (g > p.g0) Fold(f, p.buf[(J + 1) & 1], p.scales, g - 1);
  return g + 1 < p.g1;
}
void Block(const Q4GemmArgs& g, int64_t m, int64_t nb, int64_t ncols, const int8_t* dec, const uint16_t* scales,
           int64_t g0, int64_t g1, int64_t G, int64_t kt, bool first, bool last) {
  alignas(64) int32_t buf[2][16 * 16];
  const Pipe p{reinterpret_cast<const uint8_t*>(g.A) + m * g.lda, g.lda, g0 * G, g0, g1, G, kt, dec, scales, buf};
  const __mmask16 mk = TailMask16(ncols);
  __m512 f[16];
#pragma GCC unroll 16
  for (int r = 0; r < 16; ++r) f[r] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mk, g.C + (m + r) * g.ldc + nb);
  Issue<0, 0>(p.arow, p.lda, dec, p.k0, g0, G, kt);
  if (g0 + 1 < g1) Issue<1, 1>(p.arow, p.lda, dec, p.k0, g0 + 1, G, kt);
  for (int64_t gi = g0;; gi += 4) {
    if (!PipeStep<0>(p, f, gi) || !PipeStep<1>(p, f, gi + 1) || !PipeStep<2>(p, f, gi + 2) || !PipeStep<3>(p, f, gi + 3))
      break;
  }
  Fold(f, buf[(g1 - 1 - g0) & 1], scales, g1 - 1);
  if (!last) {
#pragma GCC unroll 16
    for (int r = 0; r < 16; ++r) _mm512_mask_storeu_ps(g.C + (m + r) * g.ldc + nb, mk, f[r]);
    return;
  }
  const __m512 bias = g.bias ? _mm512_maskz_loadu_ps(mk, g.bias + nb) : _mm512_setzero_ps();
  const bool relu = g.act == Activation::kRelu;
#pragma GCC unroll 16
  for (int r = 0; r < 16; ++r) {
    __m512 y = _mm512_mul_ps(f[r], _mm512_set1_ps(g.a_scale[m + r]));
    if (g.bias) y = _mm512_add_ps(y, bias);
    if (relu) y = _mm512_max_ps(_mm512_setzero_ps(), y);
    _mm512_mask_storeu_ps(g.C + (m + r) * g.ldc + nb, mk, y);
  }
}

// K chunks outermost (one for K <= kKC), then panels (a chunk of codes decoded once), then
// 16-row blocks.
template <int MODE>
void Run(const Q4GemmArgs& g, int64_t m0, int64_t ma, int64_t n0, int64_t n1) {
  const int64_t G = g.lay.group, Kg = q4_kg(g.K, G), NG = Kg / G, kt = G < 64 ? G : 64;
  const int64_t gpc = kKC / G;  // groups per chunk
  const Q4Parts parts = q4_parts(g.K, g.N, g.lay);
  alignas(64) int8_t dec[kKC * 16];
  Configure(kt);
  for (int64_t c0 = 0; c0 < NG; c0 += gpc) {
    const int64_t c1 = c0 + gpc < NG ? c0 + gpc : NG;
    for (int64_t nb = n0; nb < n1; nb += 16) {
      const int64_t p = nb / 16;
      Decode<MODE>(g, g.W + parts.codes + p * Kg * 8, g.W + parts.zeros + p * NG * 16, c0, c1, G, dec);
      const uint16_t* scales = reinterpret_cast<const uint16_t*>(g.W + parts.scales) + p * NG * 16;
      for (int64_t m = m0; m < ma; m += 16) Block(g, m, nb, n1 - nb, dec, scales, c0, c1, G, kt, c0 == 0, c1 == NG);
    }
  }
  _tile_release();
}

}  // namespace

void q4_gemm_16x16__amx(const Q4GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  if (m1 <= m0 || n1 <= n0) return;
  const int64_t rows16 = (m1 - m0) / 16 * 16;
  if (rows16 == 0) return avx512::q4_gemm_8x32c8__avx512vbmi(g, m0, m1, n0, n1);  // every AMX CPU has VBMI
  const int64_t ma = m0 + rows16;
  if (g.lay.kind == Q4Kind::kTable) Run<kTab>(g, m0, ma, n0, n1);
  else if (g.lay.asym) Run<kAsym>(g, m0, ma, n0, n1);
  else Run<kSym>(g, m0, ma, n0, n1);
  if (ma < m1) avx512::q4_gemm_8x32c8__avx512vbmi(g, ma, m1, n0, n1);
}

}  // namespace amx
}  // namespace lowbit
