// AVX2 + FMA row functions (see f32_vmath.h).
// Compile with: -mavx2 -mfma
//
// The same algorithms, constants and operation order as avx512.cc: a softmax row
// is summed as 16 lanes (two ymm: elements 16i..16i+7 and 16i+8..16i+15) reduced
// in _mm512_reduce_add_ps's order, and exp's final scaling by 2^n (scalef there)
// is two exact power-of-two multiplies here, rounded once like scalef. Where every
// argument of a softmax row or a GELU block is >= -87, 2^n is a normal float and one
// multiply is that same single rounding (ExpFast: no clamps, 8 vector ops fewer; the
// softmax's exp pass then took 0.80x the time, GELU 0.90x, same bits).
#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "f32_vmath.h"

namespace lowbit {
namespace avx2 {
namespace {

// Lane masks for maskload/maskstore: the first clamp(n, 0, 8) lanes set.
alignas(64) constexpr int32_t kMaskTab[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
inline __m256i Mask(int64_t n) {
  n = n < 0 ? 0 : (n > 8 ? 8 : n);
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskTab + 8 - n));
}

// 2^e for integer e in [-126, 127], built in the exponent field.
inline __m256 Pow2(__m256i e) { return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(e, _mm256_set1_epi32(127)), 23)); }

// The shared part of Exp and ExpFast: n = round(x log2 e) (as float, in *n) and the
// polynomial p ~ exp(x - n ln2), so that exp(x) = p * 2^n.
inline __m256 ExpPoly(__m256 x, __m256* n) {
  *n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(*n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(*n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.f / 720);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  return _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
}

// exp(x): n = round(x log2 e), r = x - n ln2 (two-part ln2), degree-6 Taylor in
// r (|r| <= ln2/2: truncation error 1.2e-7 relative), times 2^n. x is clamped to
// [-104, 88.7] first (below, exp rounds to 0 in float), so n is in [-150, 128]:
// 2^n is applied as 2^h * 2^(n-h), h = floor(n/2), both normal numbers; p * 2^h
// is exact and the second multiply rounds once, into the subnormals if need be.
inline __m256 Exp(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-104.f));
  x = _mm256_min_ps(x, _mm256_set1_ps(88.7f));
  __m256 n;
  const __m256 p = ExpPoly(x, &n);
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i h = _mm256_srai_epi32(ni, 1);
  return _mm256_mul_ps(_mm256_mul_ps(p, Pow2(h)), Pow2(_mm256_sub_epi32(ni, h)));
}

// exp(x) for x in [-87, 88] (n in [-126, 127]: 2^n is a normal number): the same bits as Exp,
// p * 2^n rounded once, without the clamps and the two-step scaling.
inline __m256 ExpFast(__m256 x) {
  __m256 n;
  const __m256 p = ExpPoly(x, &n);
  return _mm256_mul_ps(p, Pow2(_mm256_cvtps_epi32(n)));
}
constexpr float kExpFastLo = -87.f;  // ExpFast's range: [kExpFastLo, 88]

// Sum of 16 lanes (lo = lanes 0..7, hi = lanes 8..15) in _mm512_reduce_add_ps's order.
inline float ReduceAdd16(__m256 lo, __m256 hi) {
  const __m256 t3 = _mm256_add_ps(hi, lo);
  const __m128 t6 = _mm_add_ps(_mm256_extractf128_ps(t3, 1), _mm256_castps256_ps128(t3));
  const __m128 t8 = _mm_add_ps(t6, _mm_shuffle_ps(t6, t6, _MM_SHUFFLE(1, 0, 3, 2)));
  return _mm_cvtss_f32(_mm_add_ss(t8, _mm_shuffle_ps(t8, t8, _MM_SHUFFLE(1, 1, 1, 1))));
}

template <bool FAST>
inline __m256 ExpT(__m256 x) { return FAST ? ExpFast(x) : Exp(x); }

inline float ReduceMin8(__m256 v) {  // exact, like the max
  __m128 m = _mm_min_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
  m = _mm_min_ps(m, _mm_shuffle_ps(m, m, _MM_SHUFFLE(1, 0, 3, 2)));
  m = _mm_min_ps(m, _mm_shuffle_ps(m, m, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtss_f32(m);
}

inline float ReduceMax8(__m256 v) {  // max is exact: any order gives the same value
  __m128 m = _mm_max_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
  m = _mm_max_ps(m, _mm_shuffle_ps(m, m, _MM_SHUFFLE(1, 0, 3, 2)));
  m = _mm_max_ps(m, _mm_shuffle_ps(m, m, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtss_f32(m);
}

// The scores' pre-processing (SoftmaxPre) of 8 lanes starting at element i; `k` masks
// the lanes of a partial last vector (the add row is only read there).
inline __m256 Pre(__m256 v, const SoftmaxPre& pre, int64_t i, const __m256i* k) {
  if (pre.scale_op == 1) v = _mm256_mul_ps(v, _mm256_set1_ps(pre.scale));
  else if (pre.scale_op == 2) v = _mm256_div_ps(v, _mm256_set1_ps(pre.scale));
  if (pre.add) {
    const __m256 a = pre.add_bcast ? _mm256_set1_ps(pre.add[0])
                     : (k ? _mm256_maskload_ps(pre.add + i, *k) : _mm256_loadu_ps(pre.add + i));
    v = _mm256_add_ps(v, a);
  }
  return v;
}

template <bool FAST>
void ExpPass(const float* x, float* y, int64_t n, __m256 mm);

// softmax(pre(x)) or, with pre null, softmax(x): the first pass finds the max (and any
// NaN) and, with pre, stores the pre-processed row in y, which the later passes read.
void SoftmaxRow(const float* x, float* y, int64_t n, const SoftmaxPre* pre) {
  const __m256 ninf = _mm256_set1_ps(-INFINITY), pinf = _mm256_set1_ps(INFINITY);
  __m256 vm = ninf, vl = pinf, nan = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    if (pre) {
      v = Pre(v, *pre, i, nullptr);
      _mm256_storeu_ps(y + i, v);
    }
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    vm = _mm256_max_ps(vm, v);
    vl = _mm256_min_ps(vl, v);
  }
  if (i < n) {
    const __m256i k = Mask(n - i);
    __m256 v = _mm256_maskload_ps(x + i, k);
    if (pre) {
      v = Pre(v, *pre, i, &k);
      _mm256_maskstore_ps(y + i, k, v);
    }
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    vl = _mm256_min_ps(vl, _mm256_blendv_ps(pinf, v, _mm256_castsi256_ps(k)));
    vm = _mm256_max_ps(vm, _mm256_blendv_ps(ninf, v, _mm256_castsi256_ps(k)));
  }
  if (_mm256_movemask_ps(nan)) {
    for (int64_t j = 0; j < n; ++j) y[j] = NAN;
    return;
  }
  if (pre) x = y;
  float m = ReduceMax8(vm);
  if (std::isinf(m)) m = m > 0 ? m : 0.f;
  const __m256 mm = _mm256_set1_ps(m);
  // every exp argument x - m in ExpFast's range (no NaN here): the lowest is min(x) - m
  if (ReduceMin8(vl) - m >= kExpFastLo) ExpPass<true>(x, y, n, mm);
  else ExpPass<false>(x, y, n, mm);
}

// softmax's exp pass: y = exp(x - m), 16 elements per step into two 8-lane sums (the AVX-512
// kernel's 16 lanes), then y *= 1 / sum. FAST: every x - m is in ExpFast's range.
template <bool FAST>
void ExpPass(const float* x, float* y, int64_t n, __m256 mm) {
  int64_t i;
  __m256 s_lo = _mm256_setzero_ps(), s_hi = _mm256_setzero_ps();
  for (i = 0; i < n; i += 16) {
    if (i + 16 <= n) {
      const __m256 e0 = ExpT<FAST>(_mm256_sub_ps(_mm256_loadu_ps(x + i), mm));
      const __m256 e1 = ExpT<FAST>(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), mm));
      _mm256_storeu_ps(y + i, e0);
      _mm256_storeu_ps(y + i + 8, e1);
      s_lo = _mm256_add_ps(s_lo, e0);
      s_hi = _mm256_add_ps(s_hi, e1);
    } else {
      const __m256i k0 = Mask(n - i), k1 = Mask(n - i - 8);
      const __m256 e0 = _mm256_and_ps(ExpT<FAST>(_mm256_sub_ps(_mm256_maskload_ps(x + i, k0), mm)), _mm256_castsi256_ps(k0));
      const __m256 e1 = _mm256_and_ps(ExpT<FAST>(_mm256_sub_ps(_mm256_maskload_ps(x + i + 8, k1), mm)), _mm256_castsi256_ps(k1));
      _mm256_maskstore_ps(y + i, k0, e0);
      _mm256_maskstore_ps(y + i + 8, k1, e1);
      s_lo = _mm256_add_ps(s_lo, e0);
      s_hi = _mm256_add_ps(s_hi, e1);
    }
  }
  const __m256 inv = _mm256_set1_ps(1.f / ReduceAdd16(s_lo, s_hi));
  for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(y + i), inv));
  if (i < n) {
    const __m256i k = Mask(n - i);
    _mm256_maskstore_ps(y + i, k, _mm256_mul_ps(_mm256_maskload_ps(y + i, k), inv));
  }
}

}  // namespace

void f32_softmax_row__avx2(const float* x, float* y, int64_t n) { SoftmaxRow(x, y, n, nullptr); }

void f32_softmax_pre_row__avx2(const float* x, float* y, int64_t n, const SoftmaxPre& pre) {
  SoftmaxRow(x, y, n, &pre);
}

namespace {

// gelu(x) = 0.5 x erfc(-x / sqrt 2). With u = |x| / sqrt 2 and erfc(u) =
// t exp(-u^2 + P(t)), t = 1 / (1 + u / 2) (Numerical Recipes' erfcc form, rel.
// error < 1.2e-7): x < 0 uses 0.5 x erfc(u), x >= 0 uses x - 0.5 x erfc(u),
// so neither side cancels.
// (Computed as x t2 exp(...), t2 = t / 2: see the AVX-512 kernel, which runs the same
// operations.)
//
// Staged over blocks of kGeluBlock vectors: one vector is a ~110-cycle dependency
// chain (division, 10-term Horner, exp), so a loop that carries it whole keeps the
// core waiting on latency (two chains interleaved in registers: 1.25 ns/value; three
// or four spill). Each stage below runs over all the block's vectors before the next
// (independent work the out-of-order core overlaps; the intermediates wait in L1),
// fully unrolled: as 8-iteration loops its speed depended on where the loops landed
// in the binary (0.93 or 1.2 ns/value with -falign-loops=32 or 64: the loop exits'
// branch prediction), unrolled it is 0.92 for any alignment (0.83 since stage 2 takes
// ExpFast where the whole block allows it). Every element goes
// through exactly the operations of the one-chain form, in the same order, so the
// bits do not depend on the staging. (Zen 3, 128 x 1536 values, 1 thread; blocks of
// 4, 6, 12, 16 vectors: 1.08, 0.98, 0.93, 0.94 ns/value.)
constexpr int kGeluBlock = 8;

// Stage 1: t2 = 1 / (2 + u) = t / 2 and the exp argument -u^2 + P(t), P by Horner in t2 with
// the coefficients c_j scaled by 2^j (exact: the bits of Horner in t). u is clamped at 1e4
// (erfc is 0 in float from u ~ 10.1; 2 + u stays finite). The AVX-512 kernel's operations.
inline void GeluArg(__m256 x, __m256* t, __m256* arg) {
  static constexpr float c[10] = {-1.26551223f,         1.00002368f * 2,    0.37409196f * 4,   0.09678418f * 8,
                                  -0.18628806f * 16,    0.27886807f * 32,   -1.13520398f * 64, 1.48851587f * 128,
                                  -0.82215223f * 256,   0.17087277f * 512};
  // min(1e4, u): a NaN u stays NaN (vminps returns its second operand then)
  const __m256 u = _mm256_min_ps(_mm256_set1_ps(1e4f),
                                 _mm256_mul_ps(_mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff))),
                                               _mm256_set1_ps(0.70710678118654752f)));
  const __m256 t2 = _mm256_div_ps(_mm256_set1_ps(1.f), _mm256_add_ps(u, _mm256_set1_ps(2.f)));
  __m256 p = _mm256_set1_ps(c[9]);
  for (int j = 8; j >= 0; --j) p = _mm256_fmadd_ps(p, t2, _mm256_set1_ps(c[j]));
  *t = t2;
  *arg = _mm256_fnmadd_ps(u, u, p);
}

// Stage 3: gelu from x, t2 and e = exp(arg) (stage 2): h = x t2 e (0.5 x erfc), x - h for
// x >= 0. x enters h clamped at 1e30, so +inf gives inf - 0 (not inf - inf * 0).
inline __m256 GeluOut(__m256 x, __m256 t2, __m256 e) {
  const __m256 h = _mm256_mul_ps(_mm256_min_ps(_mm256_set1_ps(1e30f), x), _mm256_mul_ps(t2, e));
  return _mm256_blendv_ps(h, _mm256_sub_ps(x, h), _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GE_OQ));
}

// The three stages over nv <= kGeluBlock vectors (stage 2 takes ExpFast when the block's
// least exp argument is >= kExpFastLo; min(v, lo) keeps lo where v is NaN, so a NaN lane,
// NaN out either way, never hides a lane below the range): x from xs, t and the exp argument / exp
// value in the caller's block buffers tb and eb, the result to ys.
#define LOWBIT_GELU_STAGES(xs, ys, tb, eb, nv, LOAD, STORE)                                             \
  do {                                                                                                 \
    _Pragma("GCC unroll 8") for (int j_ = 0; j_ < (nv); ++j_) {                                        \
      __m256 t_, a_;                                                                                   \
      GeluArg(LOAD((xs) + 8 * j_), &t_, &a_);                                                          \
      _mm256_store_ps((tb) + 8 * j_, t_);                                                              \
      _mm256_store_ps((eb) + 8 * j_, a_);                                                              \
    }                                                                                                  \
    __m256 lo_ = _mm256_load_ps(eb);                                                                   \
    _Pragma("GCC unroll 8") for (int j_ = 1; j_ < (nv); ++j_) lo_ = _mm256_min_ps(_mm256_load_ps((eb) + 8 * j_), lo_); \
    if (_mm256_movemask_ps(_mm256_cmp_ps(lo_, _mm256_set1_ps(kExpFastLo), _CMP_NGE_UQ)) == 0) {        \
      _Pragma("GCC unroll 8") for (int j_ = 0; j_ < (nv); ++j_)                                        \
          _mm256_store_ps((eb) + 8 * j_, ExpFast(_mm256_load_ps((eb) + 8 * j_)));                      \
    } else {                                                                                           \
      _Pragma("GCC unroll 8") for (int j_ = 0; j_ < (nv); ++j_)                                        \
          _mm256_store_ps((eb) + 8 * j_, Exp(_mm256_load_ps((eb) + 8 * j_)));                          \
    }                                                                                                  \
    _Pragma("GCC unroll 8") for (int j_ = 0; j_ < (nv); ++j_)                                          \
        STORE((ys) + 8 * j_, GeluOut(LOAD((xs) + 8 * j_), _mm256_load_ps((tb) + 8 * j_),               \
                                     _mm256_load_ps((eb) + 8 * j_)));                                  \
  } while (0)

}  // namespace

void f32_gelu__avx2(const float* x, float* y, int64_t n) {
  constexpr int64_t kBlock = 8 * kGeluBlock;
  alignas(32) float tb[kBlock], eb[kBlock];
  int64_t i = 0;
  for (; i + kBlock <= n; i += kBlock) LOWBIT_GELU_STAGES(x + i, y + i, tb, eb, kGeluBlock, _mm256_loadu_ps, _mm256_storeu_ps);
  if (i < n) {  // the last n - i < kBlock values: masked into a block buffer and back
    alignas(32) float xb[kBlock], yb[kBlock];
    const int nv = static_cast<int>((n - i + 7) / 8);
    for (int j = 0; j < nv; ++j) _mm256_store_ps(xb + 8 * j, _mm256_maskload_ps(x + i + 8 * j, Mask(n - i - 8 * j)));
    LOWBIT_GELU_STAGES(xb, yb, tb, eb, nv, _mm256_load_ps, _mm256_store_ps);
    for (int j = 0; j < nv; ++j) _mm256_maskstore_ps(y + i + 8 * j, Mask(n - i - 8 * j), _mm256_load_ps(yb + 8 * j));
  }
}
#undef LOWBIT_GELU_STAGES

namespace {
// t = (a0 + a2) + (a1 + a3): lanes 0-7, 8-15, 16-23, 24-31 folded as f32_vmath.h says.
inline float FoldLanes(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
  alignas(32) float t[8];
  _mm256_store_ps(t, _mm256_add_ps(_mm256_add_ps(a0, a2), _mm256_add_ps(a1, a3)));
  float sum = 0.f;
  for (int j = 0; j < 8; ++j) sum += t[j];
  return sum;
}
}  // namespace

void f32_layernorm_row__avx2(const float* x, const float* skip, float* y, int64_t n, const LayerNormParams& p,
                             float* mean_out, float* istd_out) {
  const int64_t full = n - n % 32;
  const float* s = x;
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  if (skip) {  // s = x + skip into y, summed on the way
    int64_t k = 0;
    for (; k < full; k += 32) {
      const __m256 v0 = _mm256_add_ps(_mm256_loadu_ps(x + k), _mm256_loadu_ps(skip + k));
      const __m256 v1 = _mm256_add_ps(_mm256_loadu_ps(x + k + 8), _mm256_loadu_ps(skip + k + 8));
      const __m256 v2 = _mm256_add_ps(_mm256_loadu_ps(x + k + 16), _mm256_loadu_ps(skip + k + 16));
      const __m256 v3 = _mm256_add_ps(_mm256_loadu_ps(x + k + 24), _mm256_loadu_ps(skip + k + 24));
      _mm256_storeu_ps(y + k, v0);
      _mm256_storeu_ps(y + k + 8, v1);
      _mm256_storeu_ps(y + k + 16, v2);
      _mm256_storeu_ps(y + k + 24, v3);
      a0 = _mm256_add_ps(a0, v0);
      a1 = _mm256_add_ps(a1, v1);
      a2 = _mm256_add_ps(a2, v2);
      a3 = _mm256_add_ps(a3, v3);
    }
    for (; k < n; ++k) y[k] = x[k] + skip[k];
    s = y;
  } else {
    for (int64_t k = 0; k < full; k += 32) {
      a0 = _mm256_add_ps(a0, _mm256_loadu_ps(s + k));
      a1 = _mm256_add_ps(a1, _mm256_loadu_ps(s + k + 8));
      a2 = _mm256_add_ps(a2, _mm256_loadu_ps(s + k + 16));
      a3 = _mm256_add_ps(a3, _mm256_loadu_ps(s + k + 24));
    }
  }
  float sum = FoldLanes(a0, a1, a2, a3);
  for (int64_t k = full; k < n; ++k) sum += s[k];
  const float mean = sum / float(n);
  const __m256 vm = _mm256_set1_ps(mean);
  a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t k = 0; k < full; k += 32) {
    const __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(s + k), vm);
    const __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(s + k + 8), vm);
    const __m256 d2 = _mm256_sub_ps(_mm256_loadu_ps(s + k + 16), vm);
    const __m256 d3 = _mm256_sub_ps(_mm256_loadu_ps(s + k + 24), vm);
    a0 = _mm256_add_ps(a0, _mm256_mul_ps(d0, d0));  // mul then add: no FMA, the reference's rounding
    a1 = _mm256_add_ps(a1, _mm256_mul_ps(d1, d1));
    a2 = _mm256_add_ps(a2, _mm256_mul_ps(d2, d2));
    a3 = _mm256_add_ps(a3, _mm256_mul_ps(d3, d3));
  }
  float var = FoldLanes(a0, a1, a2, a3);
  for (int64_t k = full; k < n; ++k) {
    const float d = s[k] - mean;
    var += d * d;
  }
  const float istd = 1.f / std::sqrt(var / float(n) + p.eps);
  const __m256 vi = _mm256_set1_ps(istd);
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    __m256 v = _mm256_mul_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(s + k), vm), vi), _mm256_loadu_ps(p.gamma + k));
    if (p.beta) v = _mm256_add_ps(v, _mm256_loadu_ps(p.beta + k));
    _mm256_storeu_ps(y + k, v);
  }
  for (; k < n; ++k) {
    const float v = (s[k] - mean) * istd * p.gamma[k];
    y[k] = p.beta ? v + p.beta[k] : v;
  }
  if (mean_out) *mean_out = mean;
  if (istd_out) *istd_out = istd;
}

}  // namespace avx2
}  // namespace lowbit
