// AVX-512 max pooling (see f32_maxpool.h): 64 channels (four zmm) of one output pixel held in
// registers across the window, then 16 at a time, the last 16 masked.
// Compile with: -mavx512f -mavx512bw -mavx512dq -mavx512vl
#include "kernels/common/avx512.h"

#include <cmath>

#include "common.h"
#include "f32_maxpool.h"

namespace lowbit {
namespace avx512 {
namespace {

inline __mmask16 Tail(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u); }

}  // namespace

void f32_maxpool_nhwc__avx512(const F32MaxPoolArgs& a, int64_t r0, int64_t r1) {
  const int64_t C = a.C;
  const float* taps[kMaxPoolTaps];
  const __m512 ninf = _mm512_set1_ps(-INFINITY);
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
        for (; c + 64 <= C; c += 64) {
          __m512 m0 = first ? ninf : _mm512_loadu_ps(yp + c), m1 = first ? ninf : _mm512_loadu_ps(yp + c + 16);
          __m512 m2 = first ? ninf : _mm512_loadu_ps(yp + c + 32), m3 = first ? ninf : _mm512_loadu_ps(yp + c + 48);
          for (int t = 0; t < nt; ++t) {
            const float* xp = taps[t] + c;
            m0 = _mm512_max_ps(_mm512_loadu_ps(xp), m0);  // (x > m) ? x : m
            m1 = _mm512_max_ps(_mm512_loadu_ps(xp + 16), m1);
            m2 = _mm512_max_ps(_mm512_loadu_ps(xp + 32), m2);
            m3 = _mm512_max_ps(_mm512_loadu_ps(xp + 48), m3);
          }
          _mm512_storeu_ps(yp + c, m0);
          _mm512_storeu_ps(yp + c + 16, m1);
          _mm512_storeu_ps(yp + c + 32, m2);
          _mm512_storeu_ps(yp + c + 48, m3);
        }
        for (; c < C; c += 16) {
          const __mmask16 k = Tail(C - c);
          __m512 m = first ? ninf : _mm512_maskz_loadu_ps(k, yp + c);
          for (int t = 0; t < nt; ++t) m = _mm512_max_ps(_mm512_maskz_loadu_ps(k, taps[t] + c), m);
          _mm512_mask_storeu_ps(yp + c, k, m);
        }
        first = false;
      } while (next < a.kh * a.kw);
    }
  }
}

}  // namespace avx512
}  // namespace lowbit
