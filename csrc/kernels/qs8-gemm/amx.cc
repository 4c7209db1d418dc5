// AMX-INT8 GEMM over "qs8-n16k4" (see qs8_gemm.h): Intel Sapphire Rapids and later.
// Compile with: -mamx-tile -mamx-int8 -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512vnni
//
// tdpbusd multiplies a tile of 16 rows x 64 u8 activations by a tile of 16 k-quads x 16
// columns x 4 s8 weights into 16 x 16 int32 sums. A "qs8-n16k4" panel is that B layout
// already: 64 bytes per k-quad, 16 columns x 4 k, so 64 consecutive k of a panel are one
// contiguous 1 KB tile, read in place. The activations arrive biased (q + 128, as for
// vpdpbusd) and the packed colsum takes 128 * colsum back out in the epilogue. Integer
// sums are exact, so the result has the reference's bits.
//
// Register tiles of 32 rows x 32 columns (tmm0..3 the sums, tmm4/5 two row blocks of A,
// tmm6/7 two panels of B) over the whole K. A K tail of fewer than 64 and panel counts
// that are odd go through zero-padded copies / a 32 x 16 tile; rows past the last multiple
// of 16 and calls of fewer than 16 rows (the memory-bound GEMV) run the AVX-512 VNNI kernel,
// which gives the same bits.
//
// With Qs8GemmArgs' outliers (the amx table sets qs8_gemm_outliers), each row's float outliers
// are added in the epilogue while the block is in registers, after the bias and before ReLU,
// with qw_axpy's operations; rows the VNNI kernel computes get them from qw_axpy afterwards.
//
// Linux hands out the AMX tile state only on request (arch_prctl ARCH_REQ_XCOMP_PERM, made
// once in csrc/cpu/cpu.cc before the level is reported as supported). Each call loads its
// tile configuration and releases the tiles before it returns, so nothing is assumed of the
// calling thread.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include "kernels/common/amx.h"
#include "kernels/qw-axpy/avx512_decode.h"
#include "kernels/qw-axpy/qw_axpy.h"
#include "qs8_gemm.h"

namespace lowbit {
namespace amx {
namespace {

constexpr int64_t kKC = 1024;  // K block (bytes of k): a panel pair's block is 32 KB, in L1
constexpr int64_t kMR = 128;  // rows per run over a K block (their partial sums: 16 KB on the stack)

// The epilogue of one 16 x 16 block of int32 sums (row stride 16): rows [m, m + nrows),
// columns [nb, nb + ncols) of C. (The fields of g the row loop needs are locals: with stores to
// C in the loop, the compiler would otherwise reload them, and spill its counters, per row. The
// bias and ReLU are template arguments: GCC kept their tests in the row loop, 2 of its ~12
// instructions.)
template <bool OUTLIERS, bool BIAS, bool RELU>
void FinishT(const Qs8GemmArgs& g, const int32_t* acc, int64_t m, int64_t nrows, int64_t nb, int64_t ncols) {
  const int64_t P = (g.N + 15) / 16, ps = qs8_kp(g.K) * 16;
  const float* wscale = reinterpret_cast<const float*>(g.W + P * ps) + nb;
  const int32_t* colsum = reinterpret_cast<const int32_t*>(g.W + P * ps + P * 16 * 4) + nb;
  const __mmask16 mk = TailMask16(ncols);
  const __m512i corr = _mm512_slli_epi32(_mm512_loadu_si512(colsum), 7);
  const __m512 ws = _mm512_loadu_ps(wscale);
  const __m512 bias = BIAS ? _mm512_maskz_loadu_ps(mk, g.bias + nb) : _mm512_setzero_ps();
  const uint8_t* panel = g.W + (nb / 16) * ps;
  const float* as = g.a_scale + m;
  float* c = g.C + m * g.ldc + nb;
  const int64_t ldc = g.ldc, no = g.outliers;
  const int32_t* oi = g.out_idx + m * no;
  const float* ov = g.out_val + m * no;
  for (int64_t r = 0; r < nrows; ++r) {
    const __m512 s = _mm512_mul_ps(_mm512_set1_ps(as[r]), ws);
    __m512 y = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_loadu_si512(acc + 16 * r), corr)), s);
    if (BIAS) y = _mm512_add_ps(y, bias);
    if (OUTLIERS)
      for (int64_t j = 0; j < no; ++j) {  // the outlier split's float part, in order
        const int32_t k = oi[r * no + j];
        if (k >= 0) y = _mm512_fmadd_ps(_mm512_set1_ps(ov[r * no + j]), Qs8WeightRowAnyK(panel + (k / 4) * 64, k, ws), y);
      }
    if (RELU) y = _mm512_max_ps(_mm512_setzero_ps(), y);
    _mm512_mask_storeu_ps(c + r * ldc, mk, y);
  }
}
template <bool OUTLIERS>
inline void FinishB(const Qs8GemmArgs& g, const int32_t* acc, int64_t m, int64_t nrows, int64_t nb, int64_t ncols) {
  const bool relu = g.act == Activation::kRelu;
  if (g.bias != nullptr) {
    if (relu) FinishT<OUTLIERS, true, true>(g, acc, m, nrows, nb, ncols);
    else FinishT<OUTLIERS, true, false>(g, acc, m, nrows, nb, ncols);
  } else {
    if (relu) FinishT<OUTLIERS, false, true>(g, acc, m, nrows, nb, ncols);
    else FinishT<OUTLIERS, false, false>(g, acc, m, nrows, nb, ncols);
  }
}
inline void Finish(const Qs8GemmArgs& g, const int32_t* acc, int64_t m, int64_t nrows, int64_t nb, int64_t ncols) {
  if (g.outliers > 0) FinishB<true>(g, acc, m, nrows, nb, ncols);
  else FinishB<false>(g, acc, m, nrows, nb, ncols);
}

// Rows [m0, m1) of the VNNI kernel's result get the outliers afterwards (qw_axpy, its bits),
// then ReLU, as in Finish.
void VnniRows(const Qs8GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  if (g.outliers == 0) return avx512::qs8_gemm_8x32c4__avx512vnni(g, m0, m1, n0, n1);
  Qs8GemmArgs plain = g;
  plain.act = Activation::kNone;
  plain.outliers = 0;
  avx512::qs8_gemm_8x32c4__avx512vnni(plain, m0, m1, n0, n1);
  const QwView view{false, Q4Layout{}, g.K, g.N, g.W};
  for (int64_t m = m0; m < m1; ++m) {
    float* y = g.C + m * g.ldc;
    for (int64_t j = 0; j < g.outliers; ++j) {
      const int32_t k = g.out_idx[m * g.outliers + j];
      if (k >= 0) avx512::qw_axpy__avx512(view, k, g.out_val[m * g.outliers + j], n0, n1, y + n0);
    }
    if (g.act == Activation::kRelu)
      for (int64_t n = n0; n < n1; ++n) y[n] = (0.0f > y[n]) ? 0.0f : y[n];
  }
}

// Zero-padded copies of the last (Kp - kt) bytes of a K range: 16 rows of A, one panel of B.
inline void CopyATail(const Qs8GemmArgs& g, int64_t m, int64_t kt, int64_t kn, uint8_t* dst) {
  std::memset(dst, 0, 16 * 64);
  for (int r = 0; r < 16; ++r) std::memcpy(dst + 64 * r, g.A + (m + r) * g.lda + kt, static_cast<size_t>(kn));
}
inline void CopyBTail(const uint8_t* panel, int64_t kt, int64_t kn, uint8_t* dst) {
  std::memset(dst, 0, 16 * 64);
  std::memcpy(dst, panel + kt * 16, static_cast<size_t>(kn * 16));
}

// The epilogue still to run for a finished block (common/amx.h): piece = its rows, first
// column and column count.
struct Piece {
  int64_t m, nb, nc;
};
using Pending = PendingEpilogue<Piece>;

inline void Drain(const Qs8GemmArgs& g, Pending& p, int rows) {
  p.drain(rows, [&g](const Piece& pc, const int32_t* acc, int r, int n) { Finish(g, acc, pc.m + r, n, pc.nb, pc.nc); });
}

// MB row blocks (16 rows each: 1 or 2) x NB panels (1 or 2) from row m, panel column nb, over
// k in [k0, k1) (multiples of 64, but for a K tail at Kp). Sums of earlier K blocks wait in
// `part` (32 int32 per row, from row m), as does this block's when it is not the last.
// The previous block's epilogue (pend) runs spread over this block's K steps, between its
// tdpbusd; this block's sums, when it is the last over K, become pend.
template <int MB, int NB>
void Tile(const Qs8GemmArgs& g, int64_t m, int64_t nb, int64_t n1, int64_t k0, int64_t k1, bool first, bool last,
          int32_t* part, Pending& pend) {
  const int64_t Kp = qs8_kp(g.K), ps = Kp * 16, kt = k1 == Kp ? Kp / 64 * 64 : k1;
  const uint8_t* W = g.W + (nb / 16) * ps;
  const uint8_t* a0 = reinterpret_cast<const uint8_t*>(g.A) + m * g.lda;
  const uint8_t* a1 = a0 + 16 * g.lda;
  if (first) {
    _tile_zero(0);
    if (NB > 1) _tile_zero(1);
    if (MB > 1) _tile_zero(2);
    if (MB > 1 && NB > 1) _tile_zero(3);
  } else {
    _tile_loadd(0, part, 128);
    if (NB > 1) _tile_loadd(1, part + 16, 128);
    if (MB > 1) _tile_loadd(2, part + 16 * 32, 128);
    if (MB > 1 && NB > 1) _tile_loadd(3, part + 16 * 32 + 16, 128);
  }
  // the previous block's epilogue, spread over this block's K steps
  const int per = pend.per_step((kt - k0) / 64 + (kt < k1 ? 1 : 0));
  for (int64_t k = k0; k < kt; k += 64) {
    _tile_loadd(4, a0 + k, g.lda);
    _tile_loadd(6, W + k * 16, 64);
    _tile_dpbusd(0, 4, 6);
    if (NB > 1) {
      _tile_loadd(7, W + ps + k * 16, 64);
      _tile_dpbusd(1, 4, 7);
    }
    if (MB > 1) {
      _tile_loadd(5, a1 + k, g.lda);
      _tile_dpbusd(2, 5, 6);
      if (NB > 1) _tile_dpbusd(3, 5, 7);
    }
    Drain(g, pend, per);
  }
  if (kt < k1) {
    alignas(64) uint8_t ta[2][16 * 64], tb[2][16 * 64];
    const int64_t kn = k1 - kt;
    CopyATail(g, m, kt, kn, ta[0]);
    CopyBTail(W, kt, kn, tb[0]);
    _tile_loadd(4, ta[0], 64);
    _tile_loadd(6, tb[0], 64);
    _tile_dpbusd(0, 4, 6);
    if (NB > 1) {
      CopyBTail(W + ps, kt, kn, tb[1]);
      _tile_loadd(7, tb[1], 64);
      _tile_dpbusd(1, 4, 7);
    }
    if (MB > 1) {
      CopyATail(g, m + 16, kt, kn, ta[1]);
      _tile_loadd(5, ta[1], 64);
      _tile_dpbusd(2, 5, 6);
      if (NB > 1) _tile_dpbusd(3, 5, 7);
    }
  }
  if (!last) {
    _tile_stored(0, part, 128);
    if (NB > 1) _tile_stored(1, part + 16, 128);
    if (MB > 1) _tile_stored(2, part + 16 * 32, 128);
    if (MB > 1 && NB > 1) _tile_stored(3, part + 16 * 32 + 16, 128);
    return;
  }
  Drain(g, pend, 64);
  const int64_t c0 = n1 - nb < 16 ? n1 - nb : 16, c1 = n1 - nb - 16;
  pend.reset(16);
  _tile_stored(0, pend.add({m, nb, c0}), 64);
  if (NB > 1) _tile_stored(1, pend.add({m, nb + 16, c1}), 64);
  if (MB > 1) {
    _tile_stored(2, pend.add({m + 16, nb, c0}), 64);
    if (NB > 1) _tile_stored(3, pend.add({m + 16, nb + 16, c1}), 64);
  }
}

template <int NB>
void Rows(const Qs8GemmArgs& g, int64_t m0, int64_t m1, int64_t nb, int64_t n1, int64_t k0, int64_t k1, bool first,
          bool last, int32_t* part, Pending& pend) {
  int64_t m = m0;
  for (; m + 32 <= m1; m += 32) Tile<2, NB>(g, m, nb, n1, k0, k1, first, last, part + (m - m0) * 32, pend);
  if (m < m1) Tile<1, NB>(g, m, nb, n1, k0, k1, first, last, part + (m - m0) * 32, pend);
}

}  // namespace

void qs8_gemm_32x32c4__amx(const Qs8GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  if (m1 <= m0 || n1 <= n0) return;
  const int64_t rows16 = (m1 - m0) / 16 * 16;
  if (rows16 == 0) return VnniRows(g, m0, m1, n0, n1);
  const int64_t ma = m0 + rows16, Kp = qs8_kp(g.K);
  // K blocks of about kKC (multiples of 64; the last one takes the tail), so that a panel
  // pair's block (2 x kKC x 16 bytes) stays in L1 while every row block of the run reads it.
  const int64_t nkb = (Kp + kKC / 2) / kKC > 1 ? (Kp + kKC / 2) / kKC : 1;
  const int64_t kcb = (Kp / 64 + nkb - 1) / nkb * 64;
  alignas(64) int32_t part[kMR * 32];
  Pending pend;
  LoadTileConfigFull();
  for (int64_t nb = n0; nb < n1; nb += 32) {
    const bool two = n1 - nb > 16;
    for (int64_t mr = m0; mr < ma; mr += kMR) {
      const int64_t mre = mr + kMR < ma ? mr + kMR : ma;
      for (int64_t k = 0; k < Kp; k += kcb) {
        const int64_t ke = k + kcb >= Kp || nkb == 1 ? Kp : k + kcb;
        if (two) Rows<2>(g, mr, mre, nb, n1, k, ke, k == 0, ke == Kp, part, pend);
        else Rows<1>(g, mr, mre, nb, n1, k, ke, k == 0, ke == Kp, part, pend);
        if (ke == Kp) break;
      }
    }
  }
  _tile_release();
  Drain(g, pend, 64);
  if (ma < m1) VnniRows(g, ma, m1, n0, n1);
}

}  // namespace amx
}  // namespace lowbit
