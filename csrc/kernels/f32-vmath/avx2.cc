// AVX2 + FMA row functions (see f32_vmath.h).
// Compile with: -mavx2 -mfma
//
// The same algorithms, constants and operation order as avx512.cc: a softmax row
// is summed as 16 lanes (two ymm: elements 16i..16i+7 and 16i+8..16i+15) reduced
// in _mm512_reduce_add_ps's order, and exp's final scaling by 2^n (scalef there)
// is two exact power-of-two multiplies here, rounded once like scalef.
#include <immintrin.h>

#include <cmath>

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

// exp(x): n = round(x log2 e), r = x - n ln2 (two-part ln2), degree-6 Taylor in
// r (|r| <= ln2/2: truncation error 1.2e-7 relative), times 2^n. x is clamped to
// [-104, 88.7] first (below, exp rounds to 0 in float), so n is in [-150, 128]:
// 2^n is applied as 2^h * 2^(n-h), h = floor(n/2), both normal numbers; p * 2^h
// is exact and the second multiply rounds once, into the subnormals if need be.
inline __m256 Exp(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-104.f));
  x = _mm256_min_ps(x, _mm256_set1_ps(88.7f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.f / 720);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i h = _mm256_srai_epi32(ni, 1);
  return _mm256_mul_ps(_mm256_mul_ps(p, Pow2(h)), Pow2(_mm256_sub_epi32(ni, h)));
}

// Exp over V vectors at once, step by step (the same operations as Exp): V independent
// dependency chains side by side, so the FMA units are not waiting on one chain's latency.
template <int V>
inline void ExpN(__m256* x) {
  __m256 n[V], r[V], p[V];
#pragma GCC unroll 8
  for (int v = 0; v < V; ++v) {
    x[v] = _mm256_min_ps(_mm256_max_ps(x[v], _mm256_set1_ps(-104.f)), _mm256_set1_ps(88.7f));
    n[v] = _mm256_round_ps(_mm256_mul_ps(x[v], _mm256_set1_ps(1.44269504088896341f)),
                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
#pragma GCC unroll 8
  for (int v = 0; v < V; ++v) r[v] = _mm256_fnmadd_ps(n[v], _mm256_set1_ps(0.693359375f), x[v]);
#pragma GCC unroll 8
  for (int v = 0; v < V; ++v) r[v] = _mm256_fnmadd_ps(n[v], _mm256_set1_ps(-2.12194440e-4f), r[v]);
#pragma GCC unroll 8
  for (int v = 0; v < V; ++v) p[v] = _mm256_fmadd_ps(_mm256_set1_ps(1.f / 720), r[v], _mm256_set1_ps(1.f / 120));
  const float c[5] = {1.f / 24, 1.f / 6, 0.5f, 1.f, 1.f};
#pragma GCC unroll 8
  for (int j = 0; j < 5; ++j)
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) p[v] = _mm256_fmadd_ps(p[v], r[v], _mm256_set1_ps(c[j]));
#pragma GCC unroll 8
  for (int v = 0; v < V; ++v) {
    const __m256i ni = _mm256_cvtps_epi32(n[v]);
    const __m256i h = _mm256_srai_epi32(ni, 1);
    x[v] = _mm256_mul_ps(_mm256_mul_ps(p[v], Pow2(h)), Pow2(_mm256_sub_epi32(ni, h)));
  }
}

// Sum of 16 lanes (lo = lanes 0..7, hi = lanes 8..15) in _mm512_reduce_add_ps's order.
inline float ReduceAdd16(__m256 lo, __m256 hi) {
  const __m256 t3 = _mm256_add_ps(hi, lo);
  const __m128 t6 = _mm_add_ps(_mm256_extractf128_ps(t3, 1), _mm256_castps256_ps128(t3));
  const __m128 t8 = _mm_add_ps(t6, _mm_shuffle_ps(t6, t6, _MM_SHUFFLE(1, 0, 3, 2)));
  return _mm_cvtss_f32(_mm_add_ss(t8, _mm_shuffle_ps(t8, t8, _MM_SHUFFLE(1, 1, 1, 1))));
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

// softmax(pre(x)) or, with pre null, softmax(x): the first pass finds the max (and any
// NaN) and, with pre, stores the pre-processed row in y, which the later passes read.
void SoftmaxRow(const float* x, float* y, int64_t n, const SoftmaxPre* pre) {
  const __m256 ninf = _mm256_set1_ps(-INFINITY);
  __m256 vm = ninf, nan = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    if (pre) {
      v = Pre(v, *pre, i, nullptr);
      _mm256_storeu_ps(y + i, v);
    }
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    vm = _mm256_max_ps(vm, v);
  }
  if (i < n) {
    const __m256i k = Mask(n - i);
    __m256 v = _mm256_maskload_ps(x + i, k);
    if (pre) {
      v = Pre(v, *pre, i, &k);
      _mm256_maskstore_ps(y + i, k, v);
    }
    v = _mm256_blendv_ps(ninf, v, _mm256_castsi256_ps(k));
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    vm = _mm256_max_ps(vm, v);
  }
  if (_mm256_movemask_ps(nan)) {
    for (int64_t j = 0; j < n; ++j) y[j] = NAN;
    return;
  }
  if (pre) x = y;
  float m = ReduceMax8(vm);
  if (std::isinf(m)) m = m > 0 ? m : 0.f;
  const __m256 mm = _mm256_set1_ps(m);
  // exp pass: 16 elements per step into two 8-lane sums (the AVX-512 kernel's 16 lanes)
  __m256 s_lo = _mm256_setzero_ps(), s_hi = _mm256_setzero_ps();
  for (i = 0; i < n; i += 16) {
    if (i + 16 <= n) {
      const __m256 e0 = Exp(_mm256_sub_ps(_mm256_loadu_ps(x + i), mm));
      const __m256 e1 = Exp(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), mm));
      _mm256_storeu_ps(y + i, e0);
      _mm256_storeu_ps(y + i + 8, e1);
      s_lo = _mm256_add_ps(s_lo, e0);
      s_hi = _mm256_add_ps(s_hi, e1);
    } else {
      const __m256i k0 = Mask(n - i), k1 = Mask(n - i - 8);
      const __m256 e0 = _mm256_and_ps(Exp(_mm256_sub_ps(_mm256_maskload_ps(x + i, k0), mm)), _mm256_castsi256_ps(k0));
      const __m256 e1 = _mm256_and_ps(Exp(_mm256_sub_ps(_mm256_maskload_ps(x + i + 8, k1), mm)), _mm256_castsi256_ps(k1));
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
// so neither side cancels. V vectors are evaluated side by side (each is a
// ~110-cycle dependency chain: division, 10-term Horner, exp).
template <int V>
inline void GeluN(const __m256* v, __m256* y) {
  static const float c[10] = {-1.26551223f, 1.00002368f, 0.37409196f, 0.09678418f, -0.18628806f,
                              0.27886807f, -1.13520398f, 1.48851587f, -0.82215223f, 0.17087277f};
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 u[V], t[V], p[V];
#pragma GCC unroll 8
  for (int i = 0; i < V; ++i) {
    u[i] = _mm256_mul_ps(_mm256_and_ps(v[i], abs_mask), _mm256_set1_ps(0.70710678118654752f));
    t[i] = _mm256_div_ps(_mm256_set1_ps(1.f), _mm256_fmadd_ps(u[i], _mm256_set1_ps(0.5f), _mm256_set1_ps(1.f)));
    p[i] = _mm256_set1_ps(c[9]);
  }
#pragma GCC unroll 16
  for (int j = 8; j >= 0; --j)
#pragma GCC unroll 8
    for (int i = 0; i < V; ++i) p[i] = _mm256_fmadd_ps(p[i], t[i], _mm256_set1_ps(c[j]));
#pragma GCC unroll 8
  for (int i = 0; i < V; ++i) p[i] = _mm256_fnmadd_ps(u[i], u[i], p[i]);
  ExpN<V>(p);
#pragma GCC unroll 8
  for (int i = 0; i < V; ++i) {
    const __m256 erfc = _mm256_mul_ps(t[i], p[i]);
    const __m256 half_x_erfc = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), v[i]), erfc);
    const __m256 neg = _mm256_cmp_ps(v[i], _mm256_setzero_ps(), _CMP_LT_OQ);
    const __m256 r = _mm256_blendv_ps(_mm256_sub_ps(v[i], half_x_erfc), half_x_erfc, neg);
    // +inf: inf - 0.5 inf * 0 would be NaN; gelu(+inf) = +inf
    y[i] = _mm256_blendv_ps(r, v[i], _mm256_cmp_ps(v[i], _mm256_set1_ps(INFINITY), _CMP_EQ_OQ));
  }
}

}  // namespace

void f32_gelu__avx2(const float* x, float* y, int64_t n) {
  // two chains side by side: 1.26 ns/element against 1.51 for one; three or four
  // spill registers (2.0-2.5 ns) -- Zen 3, 128 x 1536 values
  constexpr int kV = 2;
  int64_t i = 0;
  for (; i + 8 * kV <= n; i += 8 * kV) {
    __m256 v[kV], r[kV];
    for (int j = 0; j < kV; ++j) v[j] = _mm256_loadu_ps(x + i + 8 * j);
    GeluN<kV>(v, r);
    for (int j = 0; j < kV; ++j) _mm256_storeu_ps(y + i + 8 * j, r[j]);
  }
  for (; i < n; i += 8) {
    const __m256i k = Mask(n - i);
    __m256 v = _mm256_maskload_ps(x + i, k), r;
    GeluN<1>(&v, &r);
    _mm256_maskstore_ps(y + i, k, r);
  }
}

}  // namespace avx2
}  // namespace lowbit
