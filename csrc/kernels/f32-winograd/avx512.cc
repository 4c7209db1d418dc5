// AVX-512 Winograd F(2x2, 3x3) transforms (see f32_winograd.h): 16 channels per zmm, the
// reference's adds and subtracts in its order; the last channels masked.
// Compile with: -mavx512f -mavx512bw -mavx512dq -mavx512vl
#include "kernels/common/avx512.h"

#include "f32_winograd.h"

namespace lowbit {
namespace avx512 {
namespace {

inline __mmask16 Tail(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u); }

inline __m512 Load(const float* p, __mmask16 k, bool masked) {
  return masked ? _mm512_maskz_loadu_ps(k, p) : _mm512_loadu_ps(p);
}
inline void Store(float* p, __m512 x, __mmask16 k, bool masked) {
  if (masked) _mm512_mask_storeu_ps(p, k, x);
  else _mm512_storeu_ps(p, x);
}

template <bool kMasked>
inline void InputBlock(const float* const d[16], float* const v[16], int64_t c, __mmask16 k) {
  __m512 x[16];
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) x[i] = Load(d[i] + c, k, kMasked);
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    const __m512 t0 = _mm512_sub_ps(x[j], x[8 + j]);
    const __m512 t1 = _mm512_add_ps(x[4 + j], x[8 + j]);
    const __m512 t2 = _mm512_sub_ps(x[8 + j], x[4 + j]);
    const __m512 t3 = _mm512_sub_ps(x[4 + j], x[12 + j]);
    x[j] = t0, x[4 + j] = t1, x[8 + j] = t2, x[12 + j] = t3;  // x[4i + j] = t[i][j]
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    const __m512* t = x + 4 * i;
    Store(v[4 * i + 0] + c, _mm512_sub_ps(t[0], t[2]), k, kMasked);
    Store(v[4 * i + 1] + c, _mm512_add_ps(t[1], t[2]), k, kMasked);
    Store(v[4 * i + 2] + c, _mm512_sub_ps(t[2], t[1]), k, kMasked);
    Store(v[4 * i + 3] + c, _mm512_sub_ps(t[1], t[3]), k, kMasked);
  }
}

template <bool kMasked>
inline void OutputBlock(const F32WinoOutputArgs& a, int64_t c, __mmask16 k) {
  __m512 t[2][4];
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    const __m512 m0 = Load(a.m[j] + c, k, kMasked), m1 = Load(a.m[4 + j] + c, k, kMasked);
    const __m512 m2 = Load(a.m[8 + j] + c, k, kMasked), m3 = Load(a.m[12 + j] + c, k, kMasked);
    t[0][j] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
    t[1][j] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
  }
  const __m512 b = a.bias ? Load(a.bias + c, k, kMasked) : _mm512_setzero_ps();
#pragma GCC unroll 2
  for (int i = 0; i < 2; ++i) {
    const __m512 o[2] = {_mm512_add_ps(_mm512_add_ps(_mm512_add_ps(t[i][0], t[i][1]), t[i][2]), b),
                         _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(t[i][1], t[i][2]), t[i][3]), b)};
#pragma GCC unroll 2
    for (int j = 0; j < 2; ++j) {
      float* y = a.y[2 * i + j];
      if (!y) continue;
      __m512 r = o[j];
      if (a.res[2 * i + j]) r = _mm512_add_ps(r, Load(a.res[2 * i + j] + c, k, kMasked));
      // x > 0 or NaN keeps x, the rest (zeros of both signs too) gives +0
      if (a.relu) r = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(r, _mm512_setzero_ps(), _CMP_NLE_UQ), r);
      Store(y + c, r, k, kMasked);
    }
  }
}

}  // namespace

void f32_wino_input_f2k3__avx512(const float* const d[16], float* const v[16], int64_t C) {
  int64_t c = 0;
  for (; c + 16 <= C; c += 16) InputBlock<false>(d, v, c, 0);
  if (c < C) InputBlock<true>(d, v, c, Tail(C - c));
}

void f32_wino_output_f2k3__avx512(const F32WinoOutputArgs& a) {
  int64_t c = 0;
  for (; c + 16 <= a.C; c += 16) OutputBlock<false>(a, c, 0);
  if (c < a.C) OutputBlock<true>(a, c, Tail(a.C - c));
}

}  // namespace avx512
}  // namespace lowbit
