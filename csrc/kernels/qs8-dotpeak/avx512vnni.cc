// Int8 multiply-accumulate probe, AVX-512 VNNI (see qs8_dotpeak.h): one vpdpbusd (64 products)
// into each of 16 accumulators a round. Compile with: -mavx512f -mavx512bw -mavx512vnni
#include "kernels/common/avx512.h"

#include "qs8_dotpeak.h"

namespace lowbit {
namespace avx512 {

int64_t qs8_dotpeak__avx512vnni(int64_t rounds, int32_t a, int32_t b) {
  const __m512i av = _mm512_set1_epi8(static_cast<char>(a)), bv = _mm512_set1_epi8(static_cast<char>(b));
  // sixteen named accumulators: as an array GCC keeps them in memory, a load and a store per step
  __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
  __m512i c8 = c0, c9 = c0, c10 = c0, c11 = c0, c12 = c0, c13 = c0, c14 = c0, c15 = c0;
  for (int64_t r = 0; r < rounds; ++r) {
    Dpbusd(c0, av, bv), Dpbusd(c1, av, bv), Dpbusd(c2, av, bv), Dpbusd(c3, av, bv);
    Dpbusd(c4, av, bv), Dpbusd(c5, av, bv), Dpbusd(c6, av, bv), Dpbusd(c7, av, bv);
    Dpbusd(c8, av, bv), Dpbusd(c9, av, bv), Dpbusd(c10, av, bv), Dpbusd(c11, av, bv);
    Dpbusd(c12, av, bv), Dpbusd(c13, av, bv), Dpbusd(c14, av, bv), Dpbusd(c15, av, bv);
  }
  const __m512i c[16] = {c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15};
  int64_t sum = 0;
  for (const __m512i& v : c) {
    int32_t lanes[16];
    _mm512_storeu_si512(lanes, v);
    for (int32_t x : lanes) sum += x;
  }
  return sum;
}

}  // namespace avx512
}  // namespace lowbit
