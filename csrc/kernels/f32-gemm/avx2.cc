// AVX2+FMA fp32 GEMM over the "f32-n16" packed B layout.
// Compile with: -mavx2 -mfma -mf16c
//
// Every output follows the contract chain acc = fma(A[m,k], B[k,n], acc), k = 0..K-1, from 0;
// K blocks store the fp32 partial sum to C and reload it, bias and activation come after the
// last block. Tiles, edges and the small-M path differ only in which outputs run side by side.
#include <immintrin.h>

#include "common.h"
#include "f32_gemm.h"

namespace lowbit {
namespace avx2 {
namespace {

constexpr int64_t kMR = 6;    // rows per register tile (6 x 16 -> 12 ymm accumulators)
constexpr int64_t kKC = 768;  // max K block; partial sums go through C exactly in fp32
// bytes of packed B per (K block x N block), kept in L2 next to the A rows: 256 KB leaves room
// for them in a 512 KB L2 (Zen 3; 0-3% faster than 512 KB on the ResNet-18 / MiniLM shapes)
constexpr int64_t kL2Budget = 256 * 1024;
constexpr int64_t kMaxNC = 2048;
constexpr int64_t kABufStride = kKC + 64;  // floats per row of the stack copy of A (stride padding)
constexpr int64_t kTilePf = 4096;  // register tiles: prefetch distance in bytes along the panel
constexpr int64_t kGemvMaxRows = 4;
// Small-M path: prefetch distance in bytes along each of its P panel streams (measured: 1 KB is best
// with 2+ streams, a lone stream needs ~8 KB to cover DRAM latency).
template <int P>
constexpr int64_t kPf = P >= 2 ? 1024 : 8192;

// Lane masks for maskload/maskstore: 8 valid lanes of the window starting at kMaskTab + 8 - n.
alignas(64) constexpr int32_t kMaskTab[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

inline __m256i HalfMask(int64_t n) {  // first clamp(n, 0, 8) lanes set
  n = n < 0 ? 0 : (n > 8 ? 8 : n);
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskTab + 8 - n));
}

// Copies rows x kc of A (row r at a[r]) into dst (row stride ldp).
void CopyRows(const float* const* a, int64_t rows, int64_t kc, float* dst, int64_t ldp) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* s = a[r];
    float* d = dst + r * ldp;
    int64_t k = 0;
    for (; k + 8 <= kc; k += 8) _mm256_storeu_ps(d + k, _mm256_loadu_ps(s + k));
    for (; k < kc; ++k) d[k] = s[k];
  }
}

// ---- GELU, evaluated in double so the result is within ~1 ulp of the double reference. ----
// Same operation sequence as the AVX-512 kernel, so both ISAs give identical GELU results.

inline __m256d ExpNegPd(__m256d v) {  // exp(v) for v in [-200, 0]
  const __m256d shifter = _mm256_set1_pd(6755399441055744.0);  // 1.5*2^52: fma rounds v*log2e to an integer in the low bits
  const __m256d kd = _mm256_fmadd_pd(v, _mm256_set1_pd(1.4426950408889634), shifter);
  const __m256d n = _mm256_sub_pd(kd, shifter);
  __m256d r = _mm256_fnmadd_pd(n, _mm256_set1_pd(kLn2Hi), v);
  r = _mm256_fnmadd_pd(n, _mm256_set1_pd(kLn2Lo), r);
  __m256d p = _mm256_set1_pd(kExpTaylor[0]);
#pragma GCC unroll 16
  for (int i = 1; i < 9; ++i) p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(kExpTaylor[i]));
  // 2^n built from the shifter's low bits: ((bits(kd) + 1023) << 52) keeps only n + 1023.
  const __m256i e = _mm256_slli_epi64(_mm256_add_epi64(_mm256_castpd_si256(kd), _mm256_set1_epi64x(1023)), 52);
  return _mm256_mul_pd(p, _mm256_castsi256_pd(e));
}

inline __m256d GeluPd(__m256d x) {
  // erfc(u) = t * exp(P(s) - u^2), t = 2/(2+u), s = affine(t); P: degree-12 fit, |err| < 3e-10 on u in [0, 10.5].
  const __m256d ax = _mm256_andnot_pd(_mm256_set1_pd(-0.0), x);
  const __m256d ur = _mm256_mul_pd(ax, _mm256_set1_pd(0.70710678118654752440));
  const __m256d u = _mm256_min_pd(_mm256_set1_pd(10.5), ur);
  // beyond u = 10.5 even |x| = FLT_MAX gives |0.5*x*erfc(u)| below half the smallest denormal: use erfc = 0
  const __m256d big = _mm256_cmp_pd(ur, _mm256_set1_pd(10.5), _CMP_GT_OQ);
  const __m256d two = _mm256_set1_pd(2.0);
  const __m256d t = _mm256_div_pd(two, _mm256_add_pd(two, u));
  const __m256d s = _mm256_fmadd_pd(t, _mm256_set1_pd(kGeluS1), _mm256_set1_pd(kGeluS0));
  __m256d p = _mm256_set1_pd(kGeluErfcPoly[0]);
#pragma GCC unroll 16
  for (int i = 1; i < 13; ++i) p = _mm256_fmadd_pd(p, s, _mm256_set1_pd(kGeluErfcPoly[i]));
  const __m256d e = _mm256_andnot_pd(big, _mm256_mul_pd(t, ExpNegPd(_mm256_fnmadd_pd(u, u, p))));  // erfc(|x|/sqrt2)
  // x < 0: 0.5*x*erfc(u);  x >= 0: 0.5*x*(2 - erfc(u)) -- no cancellation on either side.
  const __m256d neg = _mm256_cmp_pd(x, _mm256_setzero_pd(), _CMP_LT_OQ);
  const __m256d f = _mm256_blendv_pd(_mm256_sub_pd(two, e), e, neg);
  return _mm256_mul_pd(_mm256_mul_pd(x, _mm256_set1_pd(0.5)), f);
}

inline __m256 Gelu8(__m256 x) {
  const __m256d lo = GeluPd(_mm256_cvtps_pd(_mm256_castps256_ps128(x)));
  const __m256d hi = GeluPd(_mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)));
  return _mm256_set_m128(_mm256_cvtpd_ps(hi), _mm256_cvtpd_ps(lo));
}

// In-place GELU over a finished block of C (kept out of the register tiles to keep them lean).
__attribute__((noinline)) void GeluBlock(float* C, int64_t ldc, int64_t rows, int64_t ncols) {
  for (int64_t r = 0; r < rows; ++r) {
    float* c = C + r * ldc;
    int64_t j = 0;
    for (; j + 8 <= ncols; j += 8) _mm256_storeu_ps(c + j, Gelu8(_mm256_loadu_ps(c + j)));
    if (j < ncols) {
      const __m256i m = HalfMask(ncols - j);
      _mm256_maskstore_ps(c + j, m, Gelu8(_mm256_maskload_ps(c + j, m)));
    }
  }
}

// bias (optional) + residual (optional) + ReLU; GELU is done afterwards by GeluBlock.
inline __m256 BiasRelu(__m256 v, const float* bias, const float* res, __m256i m, bool full, bool relu) {
  if (bias != nullptr) v = _mm256_add_ps(v, full ? _mm256_loadu_ps(bias) : _mm256_maskload_ps(bias, m));
  if (res != nullptr) v = _mm256_add_ps(v, full ? _mm256_loadu_ps(res) : _mm256_maskload_ps(res, m));
  if (relu) v = _mm256_max_ps(_mm256_setzero_ps(), v);  // (0 > v) ? 0 : v, same as the reference
  return v;
}

struct TileArgs {
  const float* a[kMR];  // the tile's rows at k = k0
  const float* B;     // the tile's panel at k = k0
  int64_t kc;
  float* C;           // first element of the tile
  int64_t ldc;
  const float* bias;  // at the tile's first column, or nullptr
  const float* res;   // residual at the tile's first element, or nullptr
  int64_t ldr;
  int64_t ncols;      // valid columns of the panel, 1..16
  bool first, last, relu;
};

// MR x 16 register tile (two ymm per row) over one K block.
template <int MR>
__attribute__((noinline)) void Tile(const TileArgs& t) {
  __m256 acc[MR][2];
  const bool full = t.ncols == 16;
  const __m256i m0 = HalfMask(t.ncols), m1 = HalfMask(t.ncols - 8);
  if (t.first) {
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  } else if (full) {
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      acc[r][0] = _mm256_loadu_ps(t.C + r * t.ldc);
      acc[r][1] = _mm256_loadu_ps(t.C + r * t.ldc + 8);
    }
  } else {
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      acc[r][0] = _mm256_maskload_ps(t.C + r * t.ldc, m0);
      acc[r][1] = _mm256_maskload_ps(t.C + r * t.ldc + 8, m1);
    }
  }
  const float* a[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) a[r] = t.a[r];
  const float* b = t.B;
  for (int64_t k = 0; k < t.kc; ++k) {
    // B comes from DRAM/L3 on a block's first row tile: prefetch ahead into L2 (near free when it hits L2)
    _mm_prefetch(reinterpret_cast<const char*>(b + 16 * k) + kTilePf, _MM_HINT_T1);
    const __m256 vb0 = _mm256_loadu_ps(b + 16 * k);
    const __m256 vb1 = _mm256_loadu_ps(b + 16 * k + 8);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m256 va = _mm256_broadcast_ss(a[r] + k);
      acc[r][0] = _mm256_fmadd_ps(va, vb0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(va, vb1, acc[r][1]);
    }
  }
  if (t.last) {
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const float* res = t.res == nullptr ? nullptr : t.res + r * t.ldr;
      acc[r][0] = BiasRelu(acc[r][0], t.bias, res, m0, full, t.relu);
      acc[r][1] = BiasRelu(acc[r][1], t.bias == nullptr ? nullptr : t.bias + 8, res == nullptr ? nullptr : res + 8, m1,
                           full, t.relu);
    }
  }
  if (full) {
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      _mm256_storeu_ps(t.C + r * t.ldc, acc[r][0]);
      _mm256_storeu_ps(t.C + r * t.ldc + 8, acc[r][1]);
    }
  } else {
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      _mm256_maskstore_ps(t.C + r * t.ldc, m0, acc[r][0]);
      _mm256_maskstore_ps(t.C + r * t.ldc + 8, m1, acc[r][1]);
    }
  }
}

void RunTile(int64_t mr, const TileArgs& t) {
  switch (mr) {
    case 1: Tile<1>(t); break;
    case 2: Tile<2>(t); break;
    case 3: Tile<3>(t); break;
    case 4: Tile<4>(t); break;
    case 5: Tile<5>(t); break;
    default: Tile<6>(t); break;
  }
}

// ---- Small M (1..4 rows): memory-bound GEMV-like path over P panels at once, full K in registers. ----

template <int M, int P>
__attribute__((noinline)) void GemvBlock(const F32GemmArgs& g, int64_t m0, int64_t nb, int64_t ncols) {
  const int64_t K = g.K;
  const float* B = g.Bp + (nb / 16) * K * 16;
  const int64_t bs = K * 16;
  __m256 acc[M][2 * P];
#pragma GCC unroll 16
  for (int m = 0; m < M; ++m)
#pragma GCC unroll 16
    for (int p = 0; p < 2 * P; ++p) acc[m][p] = _mm256_setzero_ps();
  // A rows come in contiguous runs of `seg` columns (one run unless A is segmented)
  const int64_t seg = g.kseg > 0 ? g.kseg : K;
  for (int64_t s0 = 0; s0 < K; s0 += seg) {
    const int64_t len = K - s0 < seg ? K - s0 : seg;
    const float* a[M];
#pragma GCC unroll 16
    for (int m = 0; m < M; ++m) a[m] = f32_gemm_a_row(g, m0 + m) + f32_gemm_a_col(g, s0);
    const float* b = B + 16 * s0;
    for (int64_t k = 0; k < len; ++k) {
      __m256 vb[2 * P];
#pragma GCC unroll 16
      for (int p = 0; p < P; ++p) {
        // one 64-byte line per panel per k: prefetch it kPf<P> bytes ahead into L2 (T1 beat T0/none here)
        _mm_prefetch(reinterpret_cast<const char*>(b + p * bs + 16 * k) + kPf<P>, _MM_HINT_T1);
        vb[2 * p] = _mm256_loadu_ps(b + p * bs + 16 * k);
        vb[2 * p + 1] = _mm256_loadu_ps(b + p * bs + 16 * k + 8);
      }
#pragma GCC unroll 16
      for (int m = 0; m < M; ++m) {
        const __m256 va = _mm256_broadcast_ss(a[m] + k);
#pragma GCC unroll 16
        for (int p = 0; p < 2 * P; ++p) acc[m][p] = _mm256_fmadd_ps(va, vb[p], acc[m][p]);
      }
    }
  }
  const bool relu = g.act == Activation::kRelu;
#pragma GCC unroll 16
  for (int h = 0; h < 2 * P; ++h) {
    const int64_t valid = ncols - 8 * h;
    const bool full = valid >= 8;
    const __m256i mk = HalfMask(valid);
    const float* bias = g.bias == nullptr ? nullptr : g.bias + nb + 8 * h;
#pragma GCC unroll 16
    for (int m = 0; m < M; ++m) {
      float* c = g.C + (m0 + m) * g.ldc + nb + 8 * h;
      const float* res = g.res == nullptr ? nullptr : g.res + (m0 + m) * g.ldr + nb + 8 * h;
      const __m256 y = BiasRelu(acc[m][h], bias, res, mk, full, relu);
      if (full) _mm256_storeu_ps(c, y); else _mm256_maskstore_ps(c, mk, y);
    }
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
    case 1: GemvRows<1, 4>(g, m0, n0, n1); break;
    case 2: GemvRows<2, 3>(g, m0, n0, n1); break;
    case 3: GemvRows<3, 2>(g, m0, n0, n1); break;
    default: GemvRows<4, 1>(g, m0, n0, n1); break;
  }
}

}  // namespace

void f32_gemm_6x16__avx2(const F32GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
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
  // Balanced K blocks of at most kKC (within each segment of a segmented A) and an N block
  // sized so kc x nc of packed B fits the L2 budget.
  const int64_t seg = g.kseg > 0 ? g.kseg : (K > 0 ? K : 1);
  const int64_t nkb = seg > kKC ? (seg + kKC - 1) / kKC : 1;
  const int64_t kcb = (seg + nkb - 1) / nkb;
  int64_t nc = kcb > 0 ? kL2Budget / (kcb * 4) / 16 * 16 : kMaxNC;
  nc = nc < 16 ? 16 : (nc > kMaxNC ? kMaxNC : nc);
  // Balanced row tiles: ceil(rows/6) tiles whose heights differ by at most one.
  const int64_t ntiles = (rows + kMR - 1) / kMR;
  const int64_t base = rows / ntiles, extra = rows % ntiles;
  // A rows are read in place unless their stride piles them into a few L1 sets (lda*4 near a
  // multiple of 4 KB); then each row tile's K block is copied to a stack buffer with a safe stride.
  const bool copy_a = f32_gemm_rows_alias(g.lda, base + (extra ? 1 : 0));
  int64_t ldp = (kcb + 15) / 16 * 16;
  while (ldp + 16 <= kABufStride && f32_gemm_rows_alias(ldp, kMR)) ldp += 16;
  alignas(64) float abuf[kMR * kABufStride];
  for (int64_t jc = n0; jc < n1; jc += nc) {
    const int64_t jend = jc + nc < n1 ? jc + nc : n1;
    int64_t pc = 0;
    do {
      const int64_t seg_end = (pc / seg + 1) * seg < K ? (pc / seg + 1) * seg : K;
      const int64_t kc = seg_end - pc < kcb ? seg_end - pc : kcb;
      const int64_t aoff = f32_gemm_a_col(g, pc);  // column pc of A: its segment and offset
      TileArgs t;
      t.ldr = g.ldr;
      t.kc = kc;
      t.ldc = g.ldc;
      t.first = pc == 0;
      t.last = pc + kc >= K;
      t.relu = relu;
      int64_t m = m0;
      for (int64_t it = 0; it < ntiles; ++it) {
        const int64_t mr = base + (it < extra ? 1 : 0);
        for (int64_t r = 0; r < mr; ++r) t.a[r] = f32_gemm_a_row(g, m + r) + aoff;
        if (copy_a) {
          CopyRows(t.a, mr, kc, abuf, ldp);
          for (int64_t r = 0; r < mr; ++r) t.a[r] = abuf + r * ldp;
        }
        for (int64_t jr = jc; jr < jend; jr += 16) {
          t.ncols = jend - jr < 16 ? jend - jr : 16;
          t.B = g.Bp + (jr / 16) * bs + pc * 16;
          t.C = g.C + m * g.ldc + jr;
          t.bias = g.bias == nullptr ? nullptr : g.bias + jr;
          t.res = g.res == nullptr ? nullptr : g.res + m * g.ldr + jr;
          RunTile(mr, t);
        }
        if (gelu && t.last) GeluBlock(g.C + m * g.ldc + jc, g.ldc, mr, jend - jc);
        m += mr;
      }
      pc += kc;
    } while (pc < K);
  }
}

}  // namespace avx2
}  // namespace lowbit
