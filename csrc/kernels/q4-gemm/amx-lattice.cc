// AMX-INT8 4-bit GEMM in the lattice form (see q4_gemm.h): affine codes whose group scales are
// integer multiples of one step per column, s[n,g] = mul[n,g] * step[n], or any codes
// requantized per column, w8 = (v * mul + 2^(S-1)) >> S.
// Intel Sapphire Rapids and later.
// Compile with: -mamx-tile -mamx-int8 -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512vnni
//
// With the group scales folded into the codes, w8 is an int8 weight, so a
// panel pair's codes are decoded once per K chunk into two AMX B layouts (as in
// q4_gemm_16x16__amx, times mul), and every 32-row block runs plain tdpbssd over the chunk in
// 4 sum tiles (2 row blocks x 2 panels: 2 A and 2 B tile loads per 4 tdpbssd), as the int8
// kernel does. The sums leave the tiles once per K, not once per group: the per-group drain
// is what holds q4_gemm_16x16__amx at 2-2.5x the int8 time (docs/kernels.md).
//
// K runs in steps of 64: a group count that ends half way (G = 32, odd NG) is padded with 32
// zero weights, against which the step reads 32 bytes past the row (the next row, or the
// scratch after the last one: qdense's scratch keeps > 64 bytes there), times zero.
// Rows past the last multiple of 16 run through tiles configured with fewer rows.
// The tile state is requested in csrc/cpu/cpu.cc; each call loads its configuration and
// releases the tiles before it returns.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <cstring>

#include "kernels/common/amx.h"
#include "kernels/qw-axpy/avx512_decode.h"
#include "lattice.h"
#include "q4_gemm.h"

namespace lowbit {
namespace amx {
namespace {

// K chunk (a multiple of 64 and of every group size): two panels' decoded chunks, 2 x 32 KB,
// twice (one set for the pending epilogue), on the stack. Sums of earlier chunks wait as int32
// in a per-call buffer.
constexpr int64_t kLKC = 2048;

// tmm0..3: sums of (row block r, panel q) at 2r + q; tmm4/5: activations of row blocks 0/1
// (rows x 64 bytes); tmm6/7: decoded weights of panels 0/1 (16 k-quads x 64 bytes).
inline void ConfigureRows(int rows) {
  const uint16_t colsb[8] = {64, 64, 64, 64, 64, 64, 64, 64};
  const uint8_t r = static_cast<uint8_t>(rows);
  const uint8_t rw[8] = {r, r, r, r, r, r, 16, 16};
  LoadTileConfig(8, colsb, rw);
}

// Stores sum tile T to buf (16 x 16 int32) / loads it back. (The _tile_* macros paste their
// tile numbers into the asm: literals only.)
template <int T>
inline void StoreSum(int32_t* buf, int64_t stride) {
  if constexpr (T == 0) _tile_stored(0, buf, stride);
  else if constexpr (T == 1) _tile_stored(1, buf, stride);
  else if constexpr (T == 2) _tile_stored(2, buf, stride);
  else _tile_stored(3, buf, stride);
}
template <int T>
inline void LoadSum(const int32_t* buf, int64_t stride) {
  if constexpr (T == 0) _tile_loadd(0, buf, stride);
  else if constexpr (T == 1) _tile_loadd(1, buf, stride);
  else if constexpr (T == 2) _tile_loadd(2, buf, stride);
  else _tile_loadd(3, buf, stride);
}

// The decoded chunk [k0, k1) of a panel: the qs8-n16k4 layout, where the epilogue finds the
// outliers' weight rows as bytes (Qs8WeightRowAnyK, common/amx.h).
struct Decoded {
  const int8_t* dec;
  int64_t k0, k1;
};

// The epilogue of one sum tile: y = float(D) * (a_scale[m] * step[n]) + bias, then the rows'
// outliers in order (fma, as qw_axpy; the weight row from the decoded chunk when it holds it,
// else from the packed codes), then ReLU.
template <bool OUTLIERS>
void FinishT(const Q4GemmArgs& g, const int32_t* buf, int64_t m, int rows, int64_t nb, int64_t n1, Decoded d) {
  const __mmask16 mk = TailMask16(n1 - nb);
  if (mk == 0) return;
  const __m512 step = _mm512_maskz_loadu_ps(mk, g.lat_step + nb);
  const __m512 bias = g.bias ? _mm512_maskz_loadu_ps(mk, g.bias + nb) : _mm512_setzero_ps();
  const bool relu = g.act == Activation::kRelu, has_bias = g.bias != nullptr;
  const float* as = g.a_scale + m;
  float* c = g.C + m * g.ldc + nb;
  const int64_t ldc = g.ldc;
  // (the rows of earlier K chunks, K > 2048 only, and every row of the rounded form, come from
  // the packed codes: the rounded form's outlier weights are the group-wise ones, v * s[n, g])
  const bool table = g.lay.kind == Q4Kind::kTable;
  const int64_t dk0 = g.lat_shift > 0 ? g.K : d.k0;
  const Q4Parts parts = OUTLIERS && dk0 > 0 ? q4_parts(g.K, g.N, g.lay) : Q4Parts{};
  const __m512i tab = OUTLIERS && table ? _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g.W)))
                                        : _mm512_setzero_si512();
  // the outliers' fields as locals too (as in the int8 AMX epilogue: no reload per row)
  const int64_t no = g.outliers;
  const int32_t* oi = g.out_idx + m * no;
  const float* ov = g.out_val + m * no;
  const uint8_t* dec = reinterpret_cast<const uint8_t*>(d.dec);
  for (int r = 0; r < rows; ++r) {
    __m512 y = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_load_si512(buf + 16 * r)),
                             _mm512_mul_ps(_mm512_set1_ps(as[r]), step));
    if (has_bias) y = _mm512_add_ps(y, bias);
    if (OUTLIERS) for (int64_t j = 0; j < no; ++j) {  // the outlier split's float part, in order
      const int32_t k = oi[r * no + j];
      if (k < 0) continue;
      // the exact form: step * w8 and qw_axpy's float(u - z) * s[n, g] are the same exact fp32 value
      const __m512 w = k >= dk0 ? Qs8WeightRowAnyK(dec + ((k - dk0) >> 2) * 64, k, step)
                                : avx512::Q4WeightRow(g.W, g.lay, parts, q4_kg(g.K, g.lay.group), nb / 16, k, tab);
      y = _mm512_fmadd_ps(_mm512_set1_ps(ov[r * no + j]), w, y);
    }
    if (relu) y = _mm512_max_ps(_mm512_setzero_ps(), y);
    _mm512_mask_storeu_ps(c + r * ldc, mk, y);
  }
}
inline void Finish(const Q4GemmArgs& g, const int32_t* buf, int64_t m, int rows, int64_t nb, int64_t n1, Decoded d) {
  if (g.outliers > 0) FinishT<true>(g, buf, m, rows, nb, n1, d);
  else FinishT<false>(g, buf, m, rows, nb, n1, d);
}

// The epilogue still to run for a finished block (common/amx.h): piece = its first row and
// column, the columns' end, and the decoded weights its outliers read.
struct Piece {
  int64_t m, nb, n1;
  Decoded d;
};
using Pending = PendingEpilogue<Piece>;

inline void Drain(const Q4GemmArgs& g, Pending& p, int rows) {
  p.drain(rows, [&g](const Piece& pc, const int32_t* acc, int r, int n) { Finish(g, acc, pc.m + r, n, pc.nb, pc.n1, pc.d); });
}

// One block of NR row blocks (16 rows each, or `rows` < 16 with NR = 1) x the panel pair at nb
// over the chunk [k0, k1). part: the block's int32 sums between chunks (32 rows x 32 columns).
// The previous block's epilogue (pend) runs spread over this block's K steps, between its
// tdpbssd; this block's sums, at the last chunk, become pend.
template <int NR>
void Block(const Q4GemmArgs& g, int64_t m, int rows, int64_t nb, int64_t n1, const int8_t* dec0, const int8_t* dec1,
           int64_t k0, int64_t k1, bool first, bool last, int32_t* part, Pending& pend) {
  const uint8_t* a0 = reinterpret_cast<const uint8_t*>(g.A) + m * g.lda;
  const uint8_t* a1 = a0 + 16 * g.lda;
  constexpr int64_t ps = 32 * 4;  // part row stride in bytes
  if (first) {
    _tile_zero(0);
    _tile_zero(1);
    if (NR == 2) {
      _tile_zero(2);
      _tile_zero(3);
    }
  } else {
    LoadSum<0>(part, ps);
    LoadSum<1>(part + 16, ps);
    if (NR == 2) {
      LoadSum<2>(part + 16 * 32, ps);
      LoadSum<3>(part + 16 * 32 + 16, ps);
    }
  }
  const int per = pend.per_step((k1 - k0) / 64);
  for (int64_t k = k0; k < k1; k += 64) {
    _tile_loadd(6, dec0 + (k - k0) * 16, 64);
    _tile_loadd(4, a0 + k, g.lda);
    _tile_dpbssd(0, 4, 6);
    _tile_loadd(7, dec1 + (k - k0) * 16, 64);
    _tile_dpbssd(1, 4, 7);
    if (NR == 2) {
      _tile_loadd(5, a1 + k, g.lda);
      _tile_dpbssd(2, 5, 6);
      _tile_dpbssd(3, 5, 7);
    }
    Drain(g, pend, per);
  }
  if (!last) {
    StoreSum<0>(part, ps);
    StoreSum<1>(part + 16, ps);
    if (NR == 2) {
      StoreSum<2>(part + 16 * 32, ps);
      StoreSum<3>(part + 16 * 32 + 16, ps);
    }
    return;
  }
  Drain(g, pend, 64);
  pend.reset(rows);
  StoreSum<0>(pend.add({m, nb, n1, {dec0, k0, k1}}), 64);
  StoreSum<1>(pend.add({m, nb + 16, n1, {dec1, k0, k1}}), 64);
  if (NR == 2) {
    StoreSum<2>(pend.add({m + 16, nb, n1, {dec0, k0, k1}}), 64);
    StoreSum<3>(pend.add({m + 16, nb + 16, n1, {dec1, k0, k1}}), 64);
  }
}

// The chunk [k0, k1) of panel p as int8 weights in B layout (lattice.h).
inline void DecodePanel(const Q4GemmArgs& g, const Q4Parts& parts, int64_t p, int64_t k0, int64_t k1, int8_t* out) {
  const int64_t Kg = q4_kg(g.K, g.lay.group), NG = Kg / g.lay.group;
  LatticeDecodePanel(g.lay, g.W, g.W + parts.codes + p * Kg * 8, g.W + parts.zeros + p * NG * 16, g.lat_mul + p * NG * 16,
                     g.lat_shift, k0, k1, out);
}

// Rows [m0, m1) (32-row blocks, then a 16-row block; or, tail, one block of fewer rows) x
// columns [n0, n1): panel pairs outermost, then K chunks (decoded once per pair and chunk),
// then the row blocks. The caller has configured the tiles for the rows.
void Sweep(const Q4GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1, bool tail,
           int8_t (*decs)[2][kLKC * 16], int& cur, int32_t* part, Pending& pend) {
  const int64_t Kg = q4_kg(g.K, g.lay.group), P = (g.N + 15) / 16;
  const Q4Parts parts = q4_parts(g.K, g.N, g.lay);
  const int64_t full32 = m0 + (m1 - m0) / 32 * 32;
  for (int64_t nb = n0; nb < n1; nb += 32) {
    const int64_t p = nb / 16;
    const bool two = p + 1 < P && nb + 16 < n1;
    const int64_t ncols = two ? n1 : (nb + 16 < n1 ? nb + 16 : n1);
    for (int64_t k0 = 0; k0 < Kg; k0 += kLKC) {
      const int64_t k1 = k0 + kLKC < Kg ? k0 + kLKC : Kg, kr = (k1 - k0 + 63) / 64 * 64;
      // two sets of decoded chunks, in turn: the pending epilogue may read the previous
      // one (its outliers' weight rows) while the next block runs
      cur ^= 1;
      int8_t (*dec)[kLKC * 16] = decs[cur];
      DecodePanel(g, parts, p, k0, k1, dec[0]);
      if (two)
        DecodePanel(g, parts, p + 1, k0, k1, dec[1]);
      else  // one panel left: the second B tile multiplies zeros
        std::memset(dec[1], 0, size_t(kr * 16));
      const bool first = k0 == 0, last = k1 == Kg;
      // (part is null for a single chunk: no offsets on it then)
      auto at = [&](int64_t m) { return part ? part + (m - m0) / 32 * 1024 : nullptr; };
      if (tail) {
        Block<1>(g, m0, int(m1 - m0), nb, ncols, dec[0], dec[1], k0, k0 + kr, first, last, part, pend);
        continue;
      }
      int64_t m = m0;
      for (; m < full32; m += 32) Block<2>(g, m, 16, nb, ncols, dec[0], dec[1], k0, k0 + kr, first, last, at(m), pend);
      if (m < m1) Block<1>(g, m, 16, nb, ncols, dec[0], dec[1], k0, k0 + kr, first, last, at(m), pend);
    }
  }
}

void Run(const Q4GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  const int64_t Kg = q4_kg(g.K, g.lay.group);
  const int64_t full16 = m0 + (m1 - m0) / 16 * 16;
  // int32 sums between K chunks, 32 x 32 per row block. (A plain new[]: a std::vector would
  // instantiate its inline members in this AMX object, where the linker could pick them for
  // baseline code; test_isa_objects_export_only_their_kernels.)
  int32_t* part = Kg > kLKC ? new int32_t[size_t((m1 - m0 + 31) / 32) * 32 * 32] : nullptr;
  alignas(64) int8_t decs[2][2][kLKC * 16];
  Pending pend;
  int cur = 0;
  if (full16 > m0) {
    ConfigureRows(16);
    Sweep(g, m0, full16, n0, n1, false, decs, cur, part, pend);
  }
  if (full16 < m1) {  // the last rows through tiles of fewer rows (one more decode of the codes)
    ConfigureRows(int(m1 - full16));
    Sweep(g, full16, m1, n0, n1, true, decs, cur, part, pend);
  }
  Drain(g, pend, 64);
  _tile_release();
  delete[] part;
}

}  // namespace

void q4_gemm_lattice_32x32__amx(const Q4GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  if (m1 <= m0 || n1 <= n0) return;
  Run(g, m0, m1, n0, n1);
}

}  // namespace amx
}  // namespace lowbit
