// exp, the scores' pre-processing and its division on AVX-512, shared by the row kernels
// (f32-vmath/avx512.cc) and the bf16 attention's softmax (bf16-gemm/amx.cc), so both compute
// the same values. Include after kernels/common/avx512.h (or with the AVX-512 flags on).
#pragma once
#include <cmath>
#include <cstdint>

#include "f32_vmath.h"

namespace lowbit {
namespace avx512 {
namespace {  // internal linkage: each ISA object keeps its own copy

inline __mmask16 Tail(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u); }

// exp(x): n = round(x log2 e), r = x - n ln2 (two-part ln2), degree-6 Taylor in
// r (|r| <= ln2/2: rel. error ~2e-7), scaled by 2^n with scalef (underflows to 0).
// kUpper false: for callers whose x is never above 88.7 (GELU's argument is <= ~0), the
// same values without the upper clamp.
template <bool kUpper = true>
inline __m512 Exp(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-104.f));  // below: exp is 0 in float; keeps r finite
  if (kUpper) x = _mm512_min_ps(x, _mm512_set1_ps(88.7f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(p, n);
}

// x / c without vdivps (a 10-cycle instruction here, the softmax's largest cost): with
// r = RN(1/c), q = RN(x r) and the exact remainder e = x - q c (one fma), RN(q + e r) is the
// correctly rounded quotient (Markstein's theorem: r within half an ulp of 1/c, q within one
// ulp of x/c), as long as nothing under- or overflows. So it runs when c is in [2^-20, 2^20]
// and every lane's |x| in [2^-40, 2^40]; a vector with any other lane (0, subnormals, inf,
// NaN, huge) divides. Checked bit for bit against vdivps over every float x in that range for
// 44 divisors, among them 1.99999988 and other all-ones significands (the kernel test repeats
// samples of it).
struct Divider {
  __m512 c, r;
  bool fast;
  explicit Divider(float cs) : c(_mm512_set1_ps(cs)), r(_mm512_set1_ps(1.f / cs)) {
    const float a = std::fabs(cs);
    fast = a >= 0x1p-20f && a <= 0x1p20f;
  }
  __m512 operator()(__m512 x) const {
    if (fast) {
      const __m512i ax = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7FFFFFFF));
      // |x| as an unsigned integer in [bits(2^-40), bits(2^40)]: one unsigned range check
      const __mmask16 in = _mm512_cmple_epu32_mask(_mm512_sub_epi32(ax, _mm512_set1_epi32(0x2B800000)),
                                                   _mm512_set1_epi32(0x53800000 - 0x2B800000));
      if (in == 0xFFFF) {
        const __m512 q = _mm512_mul_ps(x, r);
        return _mm512_fmadd_ps(_mm512_fnmadd_ps(q, c, x), r, q);
      }
    }
    return _mm512_div_ps(x, c);
  }
};

// The scores' pre-processing (SoftmaxPre) of the lanes `k` of 16 starting at element i.
inline __m512 Pre(__m512 v, const SoftmaxPre& pre, const Divider& div, int64_t i, __mmask16 k) {
  if (pre.scale_op == 1) v = _mm512_mul_ps(v, _mm512_set1_ps(pre.scale));
  else if (pre.scale_op == 2) v = div(v);
  if (pre.add) v = _mm512_add_ps(v, pre.add_bcast ? _mm512_set1_ps(pre.add[0]) : _mm512_maskz_loadu_ps(k, pre.add + i));
  return v;
}

}  // namespace
}  // namespace avx512
}  // namespace lowbit
