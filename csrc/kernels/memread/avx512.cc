// Memory read probe, AVX-512 (see memread.h). Compile with: -mavx512f
#include "kernels/common/avx512.h"

#include "memread.h"

namespace lowbit {
namespace avx512 {

uint64_t memread_sum__avx512(const void* p, size_t n) {
  const char* b = static_cast<const char*>(p);
  const size_t words = n / 8;
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 32 <= words; i += 32) {
    const char* s = b + i * 8;
    a0 = _mm512_add_epi64(a0, _mm512_loadu_si512(s));
    a1 = _mm512_add_epi64(a1, _mm512_loadu_si512(s + 64));
    a2 = _mm512_add_epi64(a2, _mm512_loadu_si512(s + 128));
    a3 = _mm512_add_epi64(a3, _mm512_loadu_si512(s + 192));
  }
  const __m512i t = _mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3));
  uint64_t lanes[8];
  _mm512_storeu_si512(lanes, t);
  uint64_t s = 0;
  for (uint64_t v : lanes) s += v;
  return s + ref::memread_sum__scalar(b + i * 8, (words - i) * 8);  // the last words
}

}  // namespace avx512
}  // namespace lowbit
