// Memory read probe, AVX2 (see memread.h). Compile with: -mavx2
#include <immintrin.h>

#include "memread.h"

namespace lowbit {
namespace avx2 {

uint64_t memread_sum__avx2(const void* p, size_t n) {
  const char* b = static_cast<const char*>(p);
  const size_t words = n / 8;
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 16 <= words; i += 16) {
    const char* s = b + i * 8;
    a0 = _mm256_add_epi64(a0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s)));
    a1 = _mm256_add_epi64(a1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + 32)));
    a2 = _mm256_add_epi64(a2, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + 64)));
    a3 = _mm256_add_epi64(a3, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + 96)));
  }
  const __m256i t = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
  uint64_t lanes[4];
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(lanes), t);
  uint64_t s = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  return s + ref::memread_sum__scalar(b + i * 8, (words - i) * 8);  // the last words
}

}  // namespace avx2
}  // namespace lowbit
