// AMX-BF16 GEMM over "bf16-k32" x "bf16-n16k2" (see bf16_gemm.h), and the packings with
// AVX-512 (same bytes as the reference's). Intel Sapphire Rapids and later.
// Compile with: -mamx-tile -mamx-int8 -mamx-bf16 -mavx512bf16 -mavx512f -mavx512bw -mavx512dq -mavx512vl
//
// tdpbf16ps multiplies a tile of 16 rows x 32 bf16 of A by a tile of 16 k pairs x 16 columns of
// B into 16 x 16 fp32 sums: 8192 multiply-adds in the time of 16 AVX-512 FMAs (256). Register
// tiles of 32 rows x 32 columns (tmm0..3 the sums, tmm4/5 two row blocks of A, tmm6/7 two panels
// of B) over the whole K, 32 k per step. A is packed with whole 16-row tiles and B with zero
// columns up to a multiple of 16, so every tile is full; sums of rows and columns inside C are
// stored straight into it (any ldc), the edge blocks through a buffer.
//
// Each call loads its tile configuration and releases the tiles before it returns (as the
// int8 AMX kernel; the permission request is made once in csrc/cpu/cpu.cc).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include "kernels/common/amx.h"
#include "kernels/f32-vmath/avx512_exp.h"
#include "bf16_gemm.h"

namespace lowbit {
namespace amx {
namespace {

// bf16_round of 16 floats, in the low half of each 32-bit lane (bf16_gemm.h's rule).
inline __m512i Round16(__m512 x) {
  const __m512i u = _mm512_castps_si512(x);
  const __m512i hi = _mm512_srli_epi32(u, 16);
  __m512i r = _mm512_srli_epi32(
      _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7FFF), _mm512_and_si512(hi, _mm512_set1_epi32(1)))), 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
  const __mmask16 sub = _mm512_testn_epi32_mask(u, _mm512_set1_epi32(0x7F800000));
  r = _mm512_mask_and_epi32(r, sub, hi, _mm512_set1_epi32(0x8000));
  return _mm512_mask_or_epi32(r, nan, hi, _mm512_set1_epi32(0x40));
}

inline __m512 LoadTail(const float* p, int64_t n) { return _mm512_maskz_loadu_ps(TailMask16(n), p); }

// Where the 16 x 16 block of sums at (m, n) goes: straight into C when whole (true), else
// into buf, then its rows and columns inside C copied out by Spill.
inline bool Whole(int64_t m, int64_t m1, int64_t n, int64_t n1) { return m + 16 <= m1 && n + 16 <= n1; }
inline void Spill(const Bf16GemmArgs& g, const float* buf, int64_t m, int64_t m1, int64_t n, int64_t n1) {
  const __mmask16 mk = TailMask16(n1 - n);
  const int64_t rows = m1 - m < 16 ? m1 - m : 16;
  for (int64_t r = 0; r < rows; ++r) {
    __m512 v = _mm512_load_ps(buf + r * 16);
    if (g.row_scale) v = _mm512_mul_ps(v, _mm512_set1_ps(g.row_scale[m + r]));
    _mm512_mask_storeu_ps(g.C + (m + r) * g.ldc + n, mk, v);
  }
}
// (_tile_stored takes its tile as a literal: a macro, not a template)
#define LOWBIT_BF16_STORE(T, m, n)                                \
  do {                                                            \
    if (!g.row_scale && Whole(m, m1, n, n1)) {                    \
      _tile_stored(T, g.C + (m) * g.ldc + (n), g.ldc * 4);        \
    } else {                                                      \
      _tile_stored(T, buf, 64);                                   \
      Spill(g, buf, m, m1, n, n1);                                \
    }                                                             \
  } while (0)

}  // namespace

void bf16_pack_a__avx512(int64_t M, int64_t K, const float* X, int64_t ldx, uint16_t* A) {
  const int64_t Kp = bf16_kp(K), rows = bf16_rows(M);
  for (int64_t m = 0; m < rows; ++m)  // vcvtne2ps2bf16: bf16_round of 32 floats in one instruction
    for (int64_t k = 0; k < Kp; k += 32) {
      __m512i h = _mm512_setzero_si512();
      if (m < M) {
        const float* x = X + m * ldx + k;
        h = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(LoadTail(x + 16, K - k - 16), LoadTail(x, K - k)));
      }
      _mm512_storeu_si512(A + m * Kp + k, h);
    }
}

void bf16_pack_b__avx512(int64_t K, int64_t N, const float* B, int64_t ldb, uint16_t* Bp) {
  const int64_t Kp = bf16_kp(K);
  for (int64_t p = 0; p * 16 < N; ++p) {
    const int64_t n0 = p * 16, nn = N - n0;
    uint16_t* dst = Bp + p * Kp * 16;
    for (int64_t k = 0; k < Kp; k += 2) {
      const __m512i lo = k < K ? Round16(LoadTail(B + k * ldb + n0, nn)) : _mm512_setzero_si512();
      const __m512i hi = k + 1 < K ? Round16(LoadTail(B + (k + 1) * ldb + n0, nn)) : _mm512_setzero_si512();
      _mm512_storeu_si512(dst + k * 16, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
    }
  }
}

void bf16_pack_bt__avx512(int64_t K, int64_t N, const float* Bt, int64_t ldbt, uint16_t* Bp) {
  const int64_t Kp = bf16_kp(K);
  alignas(64) uint16_t rows[16 * 64];  // 16 columns' rows, 64 k at a time, as bf16
  const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                         _mm512_set1_epi32(32));  // dword offsets of the 16 rows
  for (int64_t p = 0; p * 16 < N; ++p) {
    const int64_t n0 = p * 16;
    uint16_t* dst = Bp + p * Kp * 16;
    for (int64_t k0 = 0; k0 < Kp; k0 += 64) {
      const int64_t kc = Kp - k0 < 64 ? Kp - k0 : 64;
      for (int64_t j = 0; j < 16; ++j)
        for (int64_t k = 0; k < kc; k += 16) {
          const __m512i r =
              n0 + j < N ? Round16(LoadTail(Bt + (n0 + j) * ldbt + k0 + k, K - k0 - k)) : _mm512_setzero_si512();
          _mm256_store_si256(reinterpret_cast<__m256i*>(rows + j * 64 + k), _mm512_cvtepi32_epi16(r));
        }
      // tile row (k pair) r of the panel: pair r of each of the 16 rows
      for (int64_t r = 0; r < kc / 2; ++r)
        _mm512_storeu_si512(dst + (k0 / 2 + r) * 32, _mm512_i32gather_epi32(_mm512_add_epi32(idx, _mm512_set1_epi32(int(r))), rows, 4));
    }
  }
}

namespace {
// R rows at once (bf16_gemm.h's definition): their chains (max, sum, exp) interleave, where one
// row alone would wait on each in turn.
template <int R>
void SoftmaxRows(float* x, int64_t ldx, int64_t n, const SoftmaxPre& pre, int64_t add_ld, uint16_t* p, int64_t np,
                 float* inv, const avx512::Divider& div) {
  using avx512::Exp;
  using avx512::Pre;
  const bool has_pre = pre.scale_op != 0 || pre.add != nullptr;
  SoftmaxPre pr[R];
  __m512 vm[R], mm[R], vs[R];
  __mmask16 nan[R];
  _Pragma("GCC unroll 4") for (int j = 0; j < R; ++j) {
    pr[j] = pre;
    if (pre.add) pr[j].add = pre.add + j * add_ld;
    vm[j] = _mm512_set1_ps(-INFINITY);
    vs[j] = _mm512_setzero_ps();
    nan[j] = 0;
  }
  // pass 1: t = pre(x) (left in x when pre changes it), its max and any NaN
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k = TailMask16(n - i);
    _Pragma("GCC unroll 4") for (int j = 0; j < R; ++j) {
      __m512 v = _mm512_maskz_loadu_ps(k, x + j * ldx + i);
      if (has_pre) {
        v = Pre(v, pr[j], div, i, k);
        _mm512_mask_storeu_ps(x + j * ldx + i, k, v);
      }
      v = _mm512_mask_mov_ps(_mm512_set1_ps(-INFINITY), k, v);
      nan[j] |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
      vm[j] = _mm512_max_ps(vm[j], v);
    }
  }
  bool bad[R];
  _Pragma("GCC unroll 4") for (int j = 0; j < R; ++j) {
    uint16_t* pj = p + j * np;
    for (int64_t i = n / 32 * 32; i < np; i += 32) _mm512_storeu_si512(pj + i, _mm512_setzero_si512());
    bad[j] = nan[j] != 0;
    if (bad[j]) {
      for (int64_t i = 0; i < n; ++i) pj[i] = bf16_round(NAN);
      for (int64_t i = n; i < np; ++i) pj[i] = 0;
      inv[j] = NAN;
    }
    float m = _mm512_reduce_max_ps(vm[j]);
    if (std::isinf(m)) m = m > 0 ? m : 0.f;
    mm[j] = _mm512_set1_ps(m);
  }
  // pass 2: e = exp(t - m), 32 at a time to bf16
  for (int64_t i = 0; i < n; i += 32) {
    const __mmask16 k0 = TailMask16(n - i), k1 = TailMask16(n - i - 16);
    _Pragma("GCC unroll 4") for (int j = 0; j < R; ++j) {
      if (bad[j]) continue;
      const float* xj = x + j * ldx + i;
      const __m512 e0 = _mm512_maskz_mov_ps(k0, Exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(k0, xj), mm[j])));
      const __m512 e1 = _mm512_maskz_mov_ps(k1, Exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(k1, xj + 16), mm[j])));
      vs[j] = _mm512_add_ps(vs[j], e0);
      vs[j] = _mm512_add_ps(vs[j], e1);
      const __m512i h = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(e1, e0));
      if (i + 32 <= n) _mm512_storeu_si512(p + j * np + i, h);
      else _mm512_mask_storeu_epi16(p + j * np + i, static_cast<__mmask32>((uint64_t(1) << (n - i)) - 1), h);
    }
  }
  _Pragma("GCC unroll 4") for (int j = 0; j < R; ++j)
    if (!bad[j]) inv[j] = 1.f / _mm512_reduce_add_ps(vs[j]);
}
}  // namespace

void bf16_softmax__avx512(float* x, int64_t ldx, int64_t rows, int64_t n, const SoftmaxPre& pre, int64_t add_ld,
                          uint16_t* p, int64_t np, float* inv) {
  const avx512::Divider div(pre.scale_op == 2 ? pre.scale : 1.f);
  int64_t r = 0;
  auto at = [&](int64_t row) {
    SoftmaxPre pr = pre;
    if (pre.add) pr.add = pre.add + row * add_ld;
    return pr;
  };
  for (; r + 4 <= rows; r += 4) SoftmaxRows<4>(x + r * ldx, ldx, n, at(r), add_ld, p + r * np, np, inv + r, div);
  for (; r < rows; ++r) SoftmaxRows<1>(x + r * ldx, ldx, n, at(r), add_ld, p + r * np, np, inv + r, div);
}

void bf16_gemm_32x32__amx(const Bf16GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  if (m0 >= m1 || n0 >= n1) return;
  LoadTileConfigFull();
  alignas(64) float buf[16 * 16];
  const int64_t Kp = bf16_kp(g.K), ps = Kp * 16, steps = Kp / 32, lda = Kp * 2;
  for (int64_t m = m0; m < m1; m += 32) {
    const bool two_m = m + 16 < m1;
    const uint16_t* a = g.A + m * Kp;
    for (int64_t n = n0; n < n1; n += 32) {
      const bool two_n = n + 16 < n1;
      const uint16_t* b = g.Bp + (n / 16) * ps;
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      for (int64_t s = 0; s < steps; ++s) {
        _tile_loadd(4, a + s * 32, lda);
        _tile_loadd(6, b + s * 512, 64);
        _tile_dpbf16ps(0, 4, 6);
        if (two_n) {
          _tile_loadd(7, b + ps + s * 512, 64);
          _tile_dpbf16ps(1, 4, 7);
        }
        if (two_m) {
          _tile_loadd(5, a + 16 * Kp + s * 32, lda);
          _tile_dpbf16ps(2, 5, 6);
          if (two_n) _tile_dpbf16ps(3, 5, 7);
        }
      }
      LOWBIT_BF16_STORE(0, m, n);
      if (two_n) LOWBIT_BF16_STORE(1, m, n + 16);
      if (two_m) {
        LOWBIT_BF16_STORE(2, m + 16, n);
        if (two_n) LOWBIT_BF16_STORE(3, m + 16, n + 16);
      }
    }
  }
  _tile_release();
}
#undef LOWBIT_BF16_STORE

}  // namespace amx
}  // namespace lowbit
