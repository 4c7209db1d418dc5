// AVX-512 fp32 GEMM over the "f32-n16" packed B layout.
// Compile with: -mavx512f -mavx512bw -mavx512dq -mavx512vl -mfma -mavx2
//
// Every output follows the contract chain acc = fma(A[m,k], B[k,n], acc), k = 0..K-1, from 0;
// K blocks store the fp32 partial sum to C and reload it, bias and activation come after the
// last block. Tiles, edges and the small-M path differ only in which outputs run side by side.
// GCC 12's AVX-512 headers self-initialise _mm512_undefined_*(): silence its -Wmaybe-uninitialized false positives.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "kernels/common/avx512.h"

#include "common.h"
#include "f32_gemm.h"

namespace lowbit {
namespace avx512 {
namespace {

constexpr int64_t kMR = 12;   // rows per register tile (12 x 32 -> 24 zmm accumulators)
constexpr int64_t kKC = 768;  // max K block; partial sums go through C exactly in fp32
constexpr int64_t kL2Budget = 512 * 1024;  // bytes of packed B per (K block x N block), kept in L2
constexpr int64_t kMaxNC = 2048;
constexpr int64_t kABufStride = kKC + 64;  // floats per row of the stack copy of A (stride padding)
constexpr int64_t kGemvMaxRows = 6;  // rows 1..6 take the small-M path, more go to register tiles
// Small-M path: prefetch distance in bytes along each of its P panel streams (measured: 1 KB is best
// with 2+ streams, a lone stream needs ~8 KB to cover DRAM latency).
template <int P>
constexpr int64_t kPf = P >= 2 ? 1024 : 8192;
constexpr int64_t kTilePf = 2048;  // register tiles: prefetch distance in bytes along each panel

inline __mmask16 TailMask(int64_t n) {
  if (n <= 0) return 0;
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}

// A tile's rows of A over one K block: row r starts at a[r]; its columns come in runs of at most
// kseg contiguous floats (the first run `run0` long), consecutive runs `gap` floats apart (the
// implicit-A segments of a convolution; one run when A is a plain matrix).
struct ARuns {
  const float* a[kMR];
  int64_t run0, kseg, gap;
};

// Copies rows x kc of A (as runs) into dst (row stride ldp).
void CopyRows(const ARuns& s, int64_t rows, int64_t kc, float* dst, int64_t ldp) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = s.a[r];
    float* d = dst + r * ldp;
    int64_t done = 0, run = kc < s.run0 ? kc : s.run0;
    while (done < kc) {
      int64_t k = 0;
      for (; k + 16 <= run; k += 16) _mm512_storeu_ps(d + done + k, _mm512_loadu_ps(src + k));
      if (k < run) {
        const __mmask16 m = TailMask(run - k);
        _mm512_mask_storeu_ps(d + done + k, m, _mm512_maskz_loadu_ps(m, src + k));
      }
      done += run;
      src += run + s.gap;
      run = kc - done < s.kseg ? kc - done : s.kseg;
    }
  }
}

// a[r] = &A[m + r, column at offset aoff] for r < rows (f32_gemm_a_row without a division per row).
void RowPointers(const F32GemmArgs& g, int64_t m, int64_t rows, int64_t aoff, const float** a) {
  if (g.kseg > 0 && g.mrow > 0) {
    int64_t oy = m / g.mrow, ox = m % g.mrow;
    for (int64_t r = 0; r < rows; ++r) {
      a[r] = g.A + oy * g.row_stride + ox * g.lda + aoff;
      if (++ox == g.mrow) ox = 0, ++oy;
    }
  } else {
    for (int64_t r = 0; r < rows; ++r) a[r] = g.A + (m + r) * g.lda + aoff;
  }
}

// True when the rows' addresses crowd one L1 set (8-way, 4 KB period).
bool RowsAlias(const float* const* a, int64_t rows) {
  int cnt[64] = {0};
  for (int64_t r = 0; r < rows; ++r)
    if (++cnt[(reinterpret_cast<uintptr_t>(a[r]) >> 6) & 63] > 4) return true;
  return false;
}

// ---- GELU, evaluated in double so the result is within ~1 ulp of the double reference. ----

inline __m512d ExpNegPd(__m512d v) {  // exp(v) for v in [-200, 0]
  const __m512d shifter = _mm512_set1_pd(6755399441055744.0);  // 1.5*2^52: fma rounds v*log2e to an integer in the low bits
  const __m512d kd = _mm512_fmadd_pd(v, _mm512_set1_pd(1.4426950408889634), shifter);
  const __m512d n = _mm512_sub_pd(kd, shifter);
  __m512d r = _mm512_fnmadd_pd(n, _mm512_set1_pd(kLn2Hi), v);
  r = _mm512_fnmadd_pd(n, _mm512_set1_pd(kLn2Lo), r);
  __m512d p = _mm512_set1_pd(kExpTaylor[0]);
#pragma GCC unroll 16
  for (int i = 1; i < 9; ++i) p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(kExpTaylor[i]));
  // 2^n built from the shifter's low bits: ((bits(kd) + 1023) << 52) keeps only n + 1023.
  const __m512i e = _mm512_slli_epi64(_mm512_add_epi64(_mm512_castpd_si512(kd), _mm512_set1_epi64(1023)), 52);
  return _mm512_mul_pd(p, _mm512_castsi512_pd(e));
}

inline __m512d GeluPd(__m512d x) {
  // erfc(u) = t * exp(P(s) - u^2), t = 2/(2+u), s = affine(t); P: degree-12 fit, |err| < 3e-10 on u in [0, 10.5].
  const __m512d ur = _mm512_mul_pd(_mm512_abs_pd(x), _mm512_set1_pd(0.70710678118654752440));
  const __m512d u = _mm512_min_pd(_mm512_set1_pd(10.5), ur);
  // beyond u = 10.5 even |x| = FLT_MAX gives |0.5*x*erfc(u)| below half the smallest denormal: use erfc = 0
  const __mmask8 big = _mm512_cmp_pd_mask(ur, _mm512_set1_pd(10.5), _CMP_GT_OQ);
  const __m512d two = _mm512_set1_pd(2.0);
  const __m512d t = _mm512_div_pd(two, _mm512_add_pd(two, u));
  const __m512d s = _mm512_fmadd_pd(t, _mm512_set1_pd(kGeluS1), _mm512_set1_pd(kGeluS0));
  __m512d p = _mm512_set1_pd(kGeluErfcPoly[0]);
#pragma GCC unroll 16
  for (int i = 1; i < 13; ++i) p = _mm512_fmadd_pd(p, s, _mm512_set1_pd(kGeluErfcPoly[i]));
  const __m512d e = _mm512_maskz_mul_pd(static_cast<__mmask8>(~big), t, ExpNegPd(_mm512_fnmadd_pd(u, u, p)));  // erfc(|x|/sqrt2)
  // x < 0: 0.5*x*erfc(u);  x >= 0: 0.5*x*(2 - erfc(u)) -- no cancellation on either side.
  const __mmask8 neg = _mm512_cmp_pd_mask(x, _mm512_setzero_pd(), _CMP_LT_OQ);
  const __m512d f = _mm512_mask_blend_pd(neg, _mm512_sub_pd(two, e), e);
  return _mm512_mul_pd(_mm512_mul_pd(x, _mm512_set1_pd(0.5)), f);
}

inline __m512 GeluPs(__m512 x) {
  const __m512d lo = GeluPd(_mm512_cvtps_pd(_mm512_castps512_ps256(x)));
  const __m512d hi = GeluPd(_mm512_cvtps_pd(_mm512_extractf32x8_ps(x, 1)));
  return _mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtpd_ps(lo)), _mm512_cvtpd_ps(hi), 1);
}

// In-place GELU over a finished block of C (kept out of the register tiles to keep them lean).
__attribute__((noinline)) void GeluBlock(float* C, int64_t ldc, int64_t rows, int64_t ncols) {
  for (int64_t r = 0; r < rows; ++r) {
    float* c = C + r * ldc;
    for (int64_t j = 0; j < ncols; j += 16) {
      const __mmask16 m = TailMask(ncols - j);
      _mm512_mask_storeu_ps(c + j, m, GeluPs(_mm512_maskz_loadu_ps(m, c + j)));
    }
  }
}

// bias (optional) + residual (optional) + ReLU; GELU is done afterwards by GeluBlock.
inline __m512 BiasRelu(__m512 v, const float* bias, const float* res, __mmask16 m, bool relu) {
  if (bias != nullptr) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, bias));
  if (res != nullptr) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, res));
  if (relu) v = _mm512_max_ps(_mm512_setzero_ps(), v);  // (0 > v) ? 0 : v, same as the reference
  return v;
}

struct TileArgs {
  ARuns A;            // the tile's rows at k = k0
  const float* B;     // panel of the tile's first 16 columns at k = k0
  int64_t bstride;    // floats between consecutive panels (K * 16)
  int64_t kc;
  float* C;           // first element of the tile
  int64_t ldc;
  const float* bias;  // at the tile's first column, or nullptr
  const float* res;   // residual at the tile's first element, or nullptr
  int64_t ldr;
  __mmask16 mask0, mask1;  // valid columns of the first / second panel
  bool first, last, relu;
};

// MR x (16*NV) register tile over one K block.
template <int MR, int NV>
__attribute__((noinline)) void Tile(const TileArgs& t) {
  __m512 acc[MR][NV];
  if (t.first) {
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  } else {
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      acc[r][0] = _mm512_maskz_loadu_ps(t.mask0, t.C + r * t.ldc);
      if (NV == 2) acc[r][NV - 1] = _mm512_maskz_loadu_ps(t.mask1, t.C + r * t.ldc + 16);
    }
  }
  const float* a[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) a[r] = t.A.a[r];
  const float* b0 = t.B;
  const float* b1 = t.B + (NV == 2 ? t.bstride : 0);
  int64_t left = t.kc, run = t.kc < t.A.run0 ? t.kc : t.A.run0;
  for (;;) {
    for (int64_t k = 0; k < run; ++k) {
      // B comes from DRAM/L3 on a block's first row tile: prefetch ahead into L2 (near free when it hits L2)
      _mm_prefetch(reinterpret_cast<const char*>(b0 + 16 * k) + kTilePf, _MM_HINT_T1);
      if (NV == 2) _mm_prefetch(reinterpret_cast<const char*>(b1 + 16 * k) + kTilePf, _MM_HINT_T1);
      const __m512 vb0 = _mm512_loadu_ps(b0 + 16 * k);
      const __m512 vb1 = _mm512_loadu_ps(b1 + 16 * k);
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const __m512 va = _mm512_set1_ps(a[r][k]);
        acc[r][0] = _mm512_fmadd_ps(va, vb0, acc[r][0]);
        if (NV == 2) acc[r][NV - 1] = _mm512_fmadd_ps(va, vb1, acc[r][NV - 1]);
      }
    }
    left -= run;
    if (left <= 0) break;
    // next run: the next segment of every row (implicit A only)
    b0 += 16 * run;
    b1 += 16 * run;
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) a[r] += run + t.A.gap;
    run = left < t.A.kseg ? left : t.A.kseg;
  }
  if (t.last) {
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const float* res = t.res == nullptr ? nullptr : t.res + r * t.ldr;
      acc[r][0] = BiasRelu(acc[r][0], t.bias, res, t.mask0, t.relu);
      if (NV == 2)
        acc[r][NV - 1] = BiasRelu(acc[r][NV - 1], t.bias == nullptr ? nullptr : t.bias + 16,
                                  res == nullptr ? nullptr : res + 16, t.mask1, t.relu);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    _mm512_mask_storeu_ps(t.C + r * t.ldc, t.mask0, acc[r][0]);
    if (NV == 2) _mm512_mask_storeu_ps(t.C + r * t.ldc + 16, t.mask1, acc[r][NV - 1]);
  }
}

template <int MR>
void TileDispatch(const TileArgs& t, bool two) {
  if (two) Tile<MR, 2>(t); else Tile<MR, 1>(t);
}

void RunTile(int64_t mr, const TileArgs& t, bool two) {
  switch (mr) {
    case 1: TileDispatch<1>(t, two); break;
    case 2: TileDispatch<2>(t, two); break;
    case 3: TileDispatch<3>(t, two); break;
    case 4: TileDispatch<4>(t, two); break;
    case 5: TileDispatch<5>(t, two); break;
    case 6: TileDispatch<6>(t, two); break;
    case 7: TileDispatch<7>(t, two); break;
    case 8: TileDispatch<8>(t, two); break;
    case 9: TileDispatch<9>(t, two); break;
    case 10: TileDispatch<10>(t, two); break;
    case 11: TileDispatch<11>(t, two); break;
    default: TileDispatch<12>(t, two); break;
  }
}

// ---- Small M (1..6 rows): memory-bound GEMV-like path over P panels at once, full K in registers. ----

template <int M, int P>
__attribute__((noinline)) void GemvBlock(const F32GemmArgs& g, int64_t m0, int64_t nb, int64_t ncols) {
  const int64_t K = g.K;
  const float* B = g.Bp + (nb / 16) * K * 16;
  const int64_t bs = K * 16;
  __m512 acc[M][P];
#pragma GCC unroll 16
  for (int m = 0; m < M; ++m)
#pragma GCC unroll 16
    for (int p = 0; p < P; ++p) acc[m][p] = _mm512_setzero_ps();
  // A rows come in contiguous runs of `seg` columns (one run unless A is segmented)
  const int64_t seg = g.kseg > 0 ? g.kseg : K;
  for (int64_t s0 = 0; s0 < K; s0 += seg) {
    const int64_t len = K - s0 < seg ? K - s0 : seg;
    const float* a[M];
#pragma GCC unroll 16
    for (int m = 0; m < M; ++m) a[m] = f32_gemm_a_row(g, m0 + m) + f32_gemm_a_col(g, s0);
    const float* b = B + 16 * s0;
    for (int64_t k = 0; k < len; ++k) {
      __m512 vb[P];
#pragma GCC unroll 16
      for (int p = 0; p < P; ++p) {
        // one 64-byte line per panel per k: prefetch it kPf<P> bytes ahead into L2 (T1 beat T0/none here)
        _mm_prefetch(reinterpret_cast<const char*>(b + p * bs + 16 * k) + kPf<P>, _MM_HINT_T1);
        vb[p] = _mm512_loadu_ps(b + p * bs + 16 * k);
      }
#pragma GCC unroll 16
      for (int m = 0; m < M; ++m) {
        const __m512 va = _mm512_set1_ps(a[m][k]);
#pragma GCC unroll 16
        for (int p = 0; p < P; ++p) acc[m][p] = _mm512_fmadd_ps(va, vb[p], acc[m][p]);
      }
    }
  }
  const bool relu = g.act == Activation::kRelu;
#pragma GCC unroll 16
  for (int p = 0; p < P; ++p) {
    const __mmask16 mk = TailMask(ncols - 16 * p);
    const float* bias = g.bias == nullptr ? nullptr : g.bias + nb + 16 * p;
#pragma GCC unroll 16
    for (int m = 0; m < M; ++m)
      _mm512_mask_storeu_ps(g.C + (m0 + m) * g.ldc + nb + 16 * p, mk,
                            BiasRelu(acc[m][p], bias, g.res == nullptr ? nullptr : g.res + (m0 + m) * g.ldr + nb + 16 * p, mk, relu));
  }
  if (g.act == Activation::kGelu) GeluBlock(g.C + m0 * g.ldc + nb, g.ldc, M, ncols);
}

// Last partial group: q = ceil(rest/16) panels, 1 <= q <= P, the last one possibly ragged.
template <int M, int Q>
void GemvTail(const F32GemmArgs& g, int64_t m0, int64_t nb, int64_t rest, int64_t q) {
  if constexpr (Q > 1) {
    if (q < Q) return GemvTail<M, Q - 1>(g, m0, nb, rest, q);
  }
  GemvBlock<M, Q>(g, m0, nb, rest);
}

template <int M, int P>
void GemvRows(const F32GemmArgs& g, int64_t m0, int64_t n0, int64_t n1) {
  int64_t nb = n0;
  for (; nb + 16 * P <= n1; nb += 16 * P) GemvBlock<M, P>(g, m0, nb, 16 * P);
  const int64_t rest = n1 - nb;  // < 16 P columns left
  if (rest > 0) GemvTail<M, P>(g, m0, nb, rest, (rest + 15) / 16);
}

void Gemv(const F32GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  switch (m1 - m0) {
    case 1: GemvRows<1, 8>(g, m0, n0, n1); break;
    case 2: GemvRows<2, 8>(g, m0, n0, n1); break;
    case 3: GemvRows<3, 6>(g, m0, n0, n1); break;
    case 4: GemvRows<4, 6>(g, m0, n0, n1); break;
    case 5: GemvRows<5, 4>(g, m0, n0, n1); break;
    default: GemvRows<6, 4>(g, m0, n0, n1); break;
  }
}

}  // namespace

void f32_gemm_12x32__avx512(const F32GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  if (m1 <= m0 || n1 <= n0) return;
  const int64_t rows = m1 - m0;
  if (rows <= kGemvMaxRows) {
    Gemv(g, m0, m1, n0, n1);
    return;
  }
  const int64_t K = g.K;
  const int64_t bs = K * 16;
  const bool relu = g.act == Activation::kRelu;
  const bool gelu = g.act == Activation::kGelu;
  // Balanced K blocks of at most kKC and an N block sized so kc x nc of packed B fits the L2 budget.
  const int64_t nkb = K > kKC ? (K + kKC - 1) / kKC : 1;
  const int64_t kcb = (K + nkb - 1) / nkb;
  int64_t nc = kcb > 0 ? kL2Budget / (kcb * 4) / 32 * 32 : kMaxNC;
  nc = nc < 32 ? 32 : (nc > kMaxNC ? kMaxNC : nc);
  // Balanced row tiles: ceil(rows/12) tiles whose heights differ by at most one (>= 6 rows each).
  const int64_t ntiles = (rows + kMR - 1) / kMR;
  const int64_t base = rows / ntiles, extra = rows % ntiles;
  // A rows are read in place unless they pile into a few L1 sets (a row stride near a multiple
  // of 4 KB); then each row tile's K block is copied to a stack buffer with a safe stride.
  // An implicit A (kseg > 0) is read segment by segment inside the tile: K blocks ignore segments.
  const int64_t kseg = g.kseg > 0 ? g.kseg : (K > 0 ? K : 1);
  const int64_t gap = g.kseg > 0 ? g.seg_stride - g.kseg : 0;
  // A plain A has one row stride: decide once; an implicit A's rows jump at output-row ends.
  const bool plain_alias = g.kseg == 0 && f32_gemm_rows_alias(g.lda, base + (extra ? 1 : 0));
  int64_t ldp = (kcb + 15) / 16 * 16;
  while (ldp + 16 <= kABufStride && f32_gemm_rows_alias(ldp, kMR)) ldp += 16;
  alignas(64) float abuf[kMR * kABufStride];
  for (int64_t jc = n0; jc < n1; jc += nc) {
    const int64_t jend = jc + nc < n1 ? jc + nc : n1;
    int64_t pc = 0;
    do {
      const int64_t kc = K - pc < kcb ? K - pc : kcb;
      const int64_t aoff = f32_gemm_a_col(g, pc);  // column pc of A: its segment and offset
      TileArgs t;
      t.bstride = bs;
      t.ldr = g.ldr;
      t.kc = kc;
      t.ldc = g.ldc;
      t.first = pc == 0;
      t.last = pc + kc >= K;
      t.relu = relu;
      int64_t m = m0;
      for (int64_t it = 0; it < ntiles; ++it) {
        const int64_t mr = base + (it < extra ? 1 : 0);
        t.A.run0 = kseg - pc % kseg;
        t.A.kseg = kseg;
        t.A.gap = gap;
        RowPointers(g, m, mr, aoff, t.A.a);
        if (g.kseg == 0 ? plain_alias : RowsAlias(t.A.a, mr)) {
          CopyRows(t.A, mr, kc, abuf, ldp);
          for (int64_t r = 0; r < mr; ++r) t.A.a[r] = abuf + r * ldp;
          t.A.run0 = t.A.kseg = kc;
          t.A.gap = 0;
        }
        for (int64_t jr = jc; jr < jend; jr += 32) {
          const int64_t w = jend - jr < 32 ? jend - jr : 32;
          t.B = g.Bp + (jr / 16) * bs + pc * 16;
          t.C = g.C + m * g.ldc + jr;
          t.bias = g.bias == nullptr ? nullptr : g.bias + jr;
          t.res = g.res == nullptr ? nullptr : g.res + m * g.ldr + jr;
          t.mask0 = TailMask(w);
          t.mask1 = TailMask(w - 16);
          RunTile(mr, t, w > 16);
        }
        if (gelu && t.last) GeluBlock(g.C + m * g.ldc + jc, g.ldc, mr, jend - jc);
        m += mr;
      }
      pc += kc;
    } while (pc < K);
  }
}

}  // namespace avx512
}  // namespace lowbit
