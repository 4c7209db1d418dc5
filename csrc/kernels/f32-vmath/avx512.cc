// AVX-512 row functions (see f32_vmath.h).
// Compile with: -mavx512f -mavx512bw -mavx512dq -mavx512vl -mfma
// GCC 12's AVX-512 headers self-initialise _mm512_undefined_*(): silence its -Wmaybe-uninitialized false positives.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "kernels/common/avx512.h"

#include <cmath>

#include "avx512_exp.h"
#include "f32_vmath.h"

namespace lowbit {
namespace avx512 {
namespace {

// softmax(pre(x)) or, with pre null, softmax(x): the first pass finds the max (and any
// NaN) and, with pre, stores the pre-processed row in y, which the later passes read.
// Rows of whole vectors take plain loads and stores; others mask the last vector.
template <bool kWhole>
void SoftmaxRowT(const float* x, float* y, int64_t n, const SoftmaxPre* pre) {
  const Divider div(pre && pre->scale_op == 2 ? pre->scale : 1.f);
  auto load = [n](const float* p, int64_t i) {
    return kWhole ? _mm512_loadu_ps(p + i) : _mm512_maskz_loadu_ps(Tail(n - i), p + i);
  };
  auto store = [n](float* p, int64_t i, __m512 v) {
    if (kWhole) _mm512_storeu_ps(p + i, v);
    else _mm512_mask_storeu_ps(p + i, Tail(n - i), v);
  };
  __m512 vm = _mm512_set1_ps(-INFINITY);
  __mmask16 nan = 0;
  for (int64_t i = 0; i < n; i += 16) {
    __m512 v = load(x, i);
    if (pre) {
      v = Pre(v, *pre, div, i, kWhole ? __mmask16(0xFFFF) : Tail(n - i));
      store(y, i, v);
    }
    if (!kWhole) v = _mm512_mask_mov_ps(_mm512_set1_ps(-INFINITY), Tail(n - i), v);
    nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    vm = _mm512_max_ps(vm, v);
  }
  if (nan) {
    for (int64_t i = 0; i < n; ++i) y[i] = NAN;
    return;
  }
  if (pre) x = y;
  float m = _mm512_reduce_max_ps(vm);
  if (std::isinf(m)) m = m > 0 ? m : 0.f;
  const __m512 mm = _mm512_set1_ps(m);
  __m512 vs = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __m512 e = Exp(_mm512_sub_ps(load(x, i), mm));
    store(y, i, e);
    vs = _mm512_add_ps(vs, kWhole ? e : _mm512_maskz_mov_ps(Tail(n - i), e));
  }
  const __m512 inv = _mm512_set1_ps(1.f / _mm512_reduce_add_ps(vs));
  for (int64_t i = 0; i < n; i += 16) store(y, i, _mm512_mul_ps(load(y, i), inv));
}

void SoftmaxRow(const float* x, float* y, int64_t n, const SoftmaxPre* pre) {
  if (n % 16 == 0) SoftmaxRowT<true>(x, y, n, pre);
  else SoftmaxRowT<false>(x, y, n, pre);
}

}  // namespace

void f32_softmax_row__avx512(const float* x, float* y, int64_t n) { SoftmaxRow(x, y, n, nullptr); }

void f32_softmax_pre_row__avx512(const float* x, float* y, int64_t n, const SoftmaxPre& pre) {
  SoftmaxRow(x, y, n, &pre);
}

// gelu(x) = 0.5 x erfc(-x / sqrt 2). With u = |x| / sqrt 2 and erfc(u) =
// t exp(-u^2 + P(t)), t = 1 / (1 + u / 2) (Numerical Recipes' erfcc form, rel.
// error < 1.2e-7): x < 0 uses 0.5 x erfc(u), x >= 0 uses x - 0.5 x erfc(u),
// so neither side cancels.
//
// Here in terms of t2 = t / 2 = 1 / (2 + u) (exactly half of t: one rounded division either
// way): 0.5 x erfc(u) = x t2 exp(-u^2 + P(t)), with P's coefficients c_j scaled by 2^j
// (exact) so that Horner in t2 gives P(t)'s bits. That saves the multiplications by 0.5 and
// the +inf fix-up: u is clamped at 1e4 (erfc is 0 in float from u ~ 10.1, and 2 + u stays
// finite) and x enters the product clamped at 1e30, so gelu(+inf) = inf - 0. The AVX2 kernel
// runs the same operations: the same bits.
//
// Staged over blocks of kGeluBlock vectors as in the AVX2 kernel: one vector is a long
// dependency chain (division, 10-term Horner, exp), so each stage runs over the whole block
// before the next and the out-of-order core overlaps the vectors' chains. Every element goes
// through the operations of the one-chain form in the same order: same bits.
namespace {
constexpr int kGeluBlock = 8;

// Stage 1: t2 = 1 / (2 + u) and the exp argument -u^2 + P(t) (P by Horner in t2).
inline void GeluArg(__m512 v, __m512* t, __m512* arg) {
  // Numerical Recipes' c_j times 2^j (exact)
  static constexpr float c[10] = {-1.26551223f,         1.00002368f * 2,    0.37409196f * 4,   0.09678418f * 8,
                                  -0.18628806f * 16,    0.27886807f * 32,   -1.13520398f * 64, 1.48851587f * 128,
                                  -0.82215223f * 256,   0.17087277f * 512};
  // min(1e4, u): a NaN u stays NaN (vminps returns its second operand then)
  const __m512 u = _mm512_min_ps(_mm512_set1_ps(1e4f), _mm512_mul_ps(_mm512_abs_ps(v), _mm512_set1_ps(0.70710678118654752f)));
  const __m512 d = _mm512_add_ps(u, _mm512_set1_ps(2.f));
  const __m512 t2 = _mm512_div_ps(_mm512_set1_ps(1.f), d);
  __m512 p = _mm512_set1_ps(c[9]);
  for (int j = 8; j >= 0; --j) p = _mm512_fmadd_ps(p, t2, _mm512_set1_ps(c[j]));
  *t = t2;
  *arg = _mm512_fnmadd_ps(u, u, p);
}

// Stage 3: gelu from x, t2 and e = exp(arg): h = x t2 e (0.5 x erfc), then x - h for x >= 0.
// x enters h clamped at 1e30 so that +inf gives h = 0 (not inf * 0), and gelu(+inf) = +inf.
inline __m512 GeluOut(__m512 v, __m512 t2, __m512 e) {
  const __m512 h = _mm512_mul_ps(_mm512_min_ps(_mm512_set1_ps(1e30f), v), _mm512_mul_ps(t2, e));
  return _mm512_mask_sub_ps(h, _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GE_OQ), v, h);
}

// The three stages over nv <= kGeluBlock vectors of xs (lanes beyond n_last of the last one
// masked): x from xs, t and the exp argument / value in tb / eb, the result to ys.
// kTail false: kGeluBlock whole vectors (nv and n_left unused), a fixed count the compiler
// unrolls without masks; true: nv vectors, masked past n_left values.
template <bool kTail>
inline void GeluBlock(const float* xs, float* ys, int nv, int64_t n_left) {
  alignas(64) float tb[16 * kGeluBlock], eb[16 * kGeluBlock];
  const int cnt = kTail ? nv : kGeluBlock;
  auto mask = [n_left](int j) { return kTail ? Tail(n_left - 16 * j) : __mmask16(0xFFFF); };
  auto load = [xs, &mask](int j) {
    return kTail ? _mm512_maskz_loadu_ps(mask(j), xs + 16 * j) : _mm512_loadu_ps(xs + 16 * j);
  };
#pragma GCC unroll 8
  for (int j = 0; j < cnt; ++j) {
    __m512 t, a;
    GeluArg(load(j), &t, &a);
    _mm512_store_ps(tb + 16 * j, t);
    _mm512_store_ps(eb + 16 * j, a);
  }
#pragma GCC unroll 8
  for (int j = 0; j < cnt; ++j) _mm512_store_ps(eb + 16 * j, Exp<false>(_mm512_load_ps(eb + 16 * j)));  // its argument is <= ~0
#pragma GCC unroll 8
  for (int j = 0; j < cnt; ++j) {
    const __m512 y = GeluOut(load(j), _mm512_load_ps(tb + 16 * j), _mm512_load_ps(eb + 16 * j));
    if (kTail) _mm512_mask_storeu_ps(ys + 16 * j, mask(j), y);
    else _mm512_storeu_ps(ys + 16 * j, y);
  }
}

}  // namespace

void f32_gelu__avx512(const float* x, float* y, int64_t n) {
  constexpr int64_t kBlock = 16 * kGeluBlock;
  int64_t i = 0;
  for (; i + kBlock <= n; i += kBlock) GeluBlock<false>(x + i, y + i, kGeluBlock, kBlock);
  if (i < n) GeluBlock<true>(x + i, y + i, static_cast<int>((n - i + 15) / 16), n - i);
}

void f32_layernorm_row__avx512(const float* x, const float* skip, float* y, int64_t n, const LayerNormParams& p,
                               float* mean_out, float* istd_out) {
  const int64_t full = n - n % 32;
  const float* s = x;
  __m512 a0 = _mm512_setzero_ps(), a1 = a0;  // lanes 0-15 and 16-31
  if (skip) {  // s = x + skip into y, summed on the way
    int64_t k = 0;
    for (; k < full; k += 32) {
      const __m512 v0 = _mm512_add_ps(_mm512_loadu_ps(x + k), _mm512_loadu_ps(skip + k));
      const __m512 v1 = _mm512_add_ps(_mm512_loadu_ps(x + k + 16), _mm512_loadu_ps(skip + k + 16));
      _mm512_storeu_ps(y + k, v0);
      _mm512_storeu_ps(y + k + 16, v1);
      a0 = _mm512_add_ps(a0, v0);
      a1 = _mm512_add_ps(a1, v1);
    }
    for (; k < n; ++k) y[k] = x[k] + skip[k];
    s = y;
  } else {
    for (int64_t k = 0; k < full; k += 32) {
      a0 = _mm512_add_ps(a0, _mm512_loadu_ps(s + k));
      a1 = _mm512_add_ps(a1, _mm512_loadu_ps(s + k + 16));
    }
  }
  // u = lanes j + lanes j+16, t = u[0..7] + u[8..15], then t in order (f32_vmath.h)
  auto fold = [](__m512 l0, __m512 l1) {
    const __m512 u = _mm512_add_ps(l0, l1);
    alignas(32) float t[8];
    _mm256_store_ps(t, _mm256_add_ps(_mm512_castps512_ps256(u),
                                     _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(u), 1))));
    float r = 0.f;
    for (int j = 0; j < 8; ++j) r += t[j];
    return r;
  };
  float sum = fold(a0, a1);
  for (int64_t k = full; k < n; ++k) sum += s[k];
  const float mean = sum / float(n);
  const __m512 vm = _mm512_set1_ps(mean);
  a0 = _mm512_setzero_ps(), a1 = a0;
  for (int64_t k = 0; k < full; k += 32) {
    const __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(s + k), vm);
    const __m512 d1 = _mm512_sub_ps(_mm512_loadu_ps(s + k + 16), vm);
    a0 = _mm512_add_ps(a0, _mm512_mul_ps(d0, d0));  // mul then add: no FMA, the reference's rounding
    a1 = _mm512_add_ps(a1, _mm512_mul_ps(d1, d1));
  }
  float var = fold(a0, a1);
  for (int64_t k = full; k < n; ++k) {
    const float d = s[k] - mean;
    var += d * d;
  }
  const float istd = 1.f / std::sqrt(var / float(n) + p.eps);
  const __m512 vi = _mm512_set1_ps(istd);
  for (int64_t k = 0; k < n; k += 16) {
    const __mmask16 m = Tail(n - k);
    __m512 v = _mm512_mul_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + k), vm), vi),
                             _mm512_maskz_loadu_ps(m, p.gamma + k));
    if (p.beta) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, p.beta + k));
    _mm512_mask_storeu_ps(y + k, m, v);
  }
  if (mean_out) *mean_out = mean;
  if (istd_out) *istd_out = istd;
}

}  // namespace avx512
}  // namespace lowbit
