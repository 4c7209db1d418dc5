// AVX2 Winograd F(2x2, 3x3) transforms (see f32_winograd.h): 8 channels per ymm, the
// reference's adds and subtracts in its order; the last channels through the reference's
// one-channel code (the same operations, so the same bits).
// Compile with: -mavx2 -mfma
#include <immintrin.h>

#include "common.h"
#include "f32_winograd.h"

namespace lowbit {
namespace avx2 {

void f32_wino_input_f2k3__avx2(const float* const d[16], float* const v[16], int64_t C) {
  int64_t c = 0;
  for (; c + 8 <= C; c += 8) {
    __m256 x[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) x[i] = _mm256_loadu_ps(d[i] + c);
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const __m256 t0 = _mm256_sub_ps(x[j], x[8 + j]);
      const __m256 t1 = _mm256_add_ps(x[4 + j], x[8 + j]);
      const __m256 t2 = _mm256_sub_ps(x[8 + j], x[4 + j]);
      const __m256 t3 = _mm256_sub_ps(x[4 + j], x[12 + j]);
      x[j] = t0, x[4 + j] = t1, x[8 + j] = t2, x[12 + j] = t3;  // x[4i + j] = t[i][j]
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      const __m256* t = x + 4 * i;
      _mm256_storeu_ps(v[4 * i + 0] + c, _mm256_sub_ps(t[0], t[2]));
      _mm256_storeu_ps(v[4 * i + 1] + c, _mm256_add_ps(t[1], t[2]));
      _mm256_storeu_ps(v[4 * i + 2] + c, _mm256_sub_ps(t[2], t[1]));
      _mm256_storeu_ps(v[4 * i + 3] + c, _mm256_sub_ps(t[1], t[3]));
    }
  }
  for (; c < C; ++c) WinoInputOne(d, v, c);
}

void f32_wino_output_f2k3__avx2(const F32WinoOutputArgs& a) {
  int64_t c = 0;
  for (; c + 8 <= a.C; c += 8) {
    __m256 t[2][4];
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const __m256 m0 = _mm256_loadu_ps(a.m[j] + c), m1 = _mm256_loadu_ps(a.m[4 + j] + c);
      const __m256 m2 = _mm256_loadu_ps(a.m[8 + j] + c), m3 = _mm256_loadu_ps(a.m[12 + j] + c);
      t[0][j] = _mm256_add_ps(_mm256_add_ps(m0, m1), m2);
      t[1][j] = _mm256_sub_ps(_mm256_sub_ps(m1, m2), m3);
    }
    const __m256 b = a.bias ? _mm256_loadu_ps(a.bias + c) : _mm256_setzero_ps();
#pragma GCC unroll 2
    for (int i = 0; i < 2; ++i) {
      const __m256 o[2] = {_mm256_add_ps(_mm256_add_ps(_mm256_add_ps(t[i][0], t[i][1]), t[i][2]), b),
                           _mm256_add_ps(_mm256_sub_ps(_mm256_sub_ps(t[i][1], t[i][2]), t[i][3]), b)};
#pragma GCC unroll 2
      for (int j = 0; j < 2; ++j) {
        float* y = a.y[2 * i + j];
        if (!y) continue;
        __m256 r = o[j];
        if (a.res[2 * i + j]) r = _mm256_add_ps(r, _mm256_loadu_ps(a.res[2 * i + j] + c));
        // x > 0 or NaN keeps x, the rest (zeros of both signs too) gives +0
        if (a.relu) r = _mm256_and_ps(r, _mm256_cmp_ps(r, _mm256_setzero_ps(), _CMP_NLE_UQ));
        _mm256_storeu_ps(y + c, r);
      }
    }
  }
  for (; c < a.C; ++c) WinoOutputOne(a, c);
}

}  // namespace avx2
}  // namespace lowbit
