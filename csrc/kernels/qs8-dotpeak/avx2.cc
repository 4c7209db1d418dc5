// Int8 multiply-accumulate probe, AVX2 (see qs8_dotpeak.h): the step of the exact AVX2 int8 GEMM
// (qs8_gemm_5x16c4__avx2), 32 products per vpsignb (the weights take the activations' signs) +
// vpmaddubsw (|a| as u8 x s8, pairs to int16) + vpmaddwd (by ones, to int32) + vpaddd, into 8
// accumulators, 32 steps a round. Compile with: -mavx2
#include <immintrin.h>

#include "qs8_dotpeak.h"

namespace lowbit {
namespace avx2 {
namespace {

// acc += pair sums of a x b (a >= 0, so |a| = a), in asm: as intrinsics the product does not
// depend on the accumulator, so the compiler would compute it once for the whole loop.
inline void Step(__m256i& acc, __m256i a, __m256i b, __m256i ones) {
  __m256i t;
  asm("vpsignb %[a], %[b], %[t]\n\t"
      "vpmaddubsw %[t], %[a], %[t]\n\t"
      "vpmaddwd %[ones], %[t], %[t]\n\t"
      "vpaddd %[t], %[acc], %[acc]"
      : [acc] "+x"(acc), [t] "=&x"(t)
      : [a] "x"(a), [b] "x"(b), [ones] "x"(ones));
}

}  // namespace

int64_t qs8_dotpeak__avx2(int64_t rounds, int32_t a, int32_t b) {
  const __m256i av = _mm256_set1_epi8(static_cast<char>(a)), bv = _mm256_set1_epi8(static_cast<char>(b));
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i c0 = _mm256_setzero_si256(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
  for (int64_t r = 0; r < rounds; ++r)
    for (int s = 0; s < 4; ++s) {
      Step(c0, av, bv, ones);
      Step(c1, av, bv, ones);
      Step(c2, av, bv, ones);
      Step(c3, av, bv, ones);
      Step(c4, av, bv, ones);
      Step(c5, av, bv, ones);
      Step(c6, av, bv, ones);
      Step(c7, av, bv, ones);
    }
  const __m256i c[8] = {c0, c1, c2, c3, c4, c5, c6, c7};
  int64_t sum = 0;
  for (const __m256i& v : c) {
    int32_t lanes[8];
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(lanes), v);
    for (int32_t x : lanes) sum += x;
  }
  return sum;
}

}  // namespace avx2
}  // namespace lowbit
