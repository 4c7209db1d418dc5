// AVX2 max pooling (see f32_maxpool.h): 32 channels (four ymm) of one output pixel held in
// registers across the window, then 8 at a time, the last 8 masked.
// Compile with: -mavx2 -mfma
#include <immintrin.h>

#include <cmath>

#include "common.h"
#include "f32_maxpool.h"

namespace lowbit {
namespace avx2 {
namespace {

inline __m256i Mask8(int64_t n) {  // lanes [0, n) set
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n < 8 ? n : 8)), idx);
}

}  // namespace

void f32_maxpool_nhwc__avx2(const F32MaxPoolArgs& a, int64_t r0, int64_t r1) {
  const int64_t C = a.C;
  const float* taps[kMaxPoolTaps];
  const __m256 ninf = _mm256_set1_ps(-INFINITY);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / a.OH, oy = r % a.OH;
    for (int64_t ox = 0; ox < a.OW; ++ox) {
      float* yp = a.y + (r * a.OW + ox) * C;
      // the window's taps kMaxPoolTaps at a time; later passes start from y
      int64_t next = 0;
      bool first = true;
      do {
        const int nt = MaxPoolTaps(a, n, oy, ox, &next, taps);
        int64_t c = 0;
        for (; c + 32 <= C; c += 32) {
          __m256 m0 = first ? ninf : _mm256_loadu_ps(yp + c), m1 = first ? ninf : _mm256_loadu_ps(yp + c + 8);
          __m256 m2 = first ? ninf : _mm256_loadu_ps(yp + c + 16), m3 = first ? ninf : _mm256_loadu_ps(yp + c + 24);
          for (int t = 0; t < nt; ++t) {
            const float* xp = taps[t] + c;
            m0 = _mm256_max_ps(_mm256_loadu_ps(xp), m0);  // (x > m) ? x : m
            m1 = _mm256_max_ps(_mm256_loadu_ps(xp + 8), m1);
            m2 = _mm256_max_ps(_mm256_loadu_ps(xp + 16), m2);
            m3 = _mm256_max_ps(_mm256_loadu_ps(xp + 24), m3);
          }
          _mm256_storeu_ps(yp + c, m0);
          _mm256_storeu_ps(yp + c + 8, m1);
          _mm256_storeu_ps(yp + c + 16, m2);
          _mm256_storeu_ps(yp + c + 24, m3);
        }
        for (; c < C; c += 8) {
          const __m256i k = Mask8(C - c);
          __m256 m = first ? ninf : _mm256_maskload_ps(yp + c, k);
          for (int t = 0; t < nt; ++t) m = _mm256_max_ps(_mm256_maskload_ps(taps[t] + c, k), m);
          _mm256_maskstore_ps(yp + c, k, m);
        }
        first = false;
      } while (next < a.kh * a.kw);
    }
  }
}

}  // namespace avx2
}  // namespace lowbit
