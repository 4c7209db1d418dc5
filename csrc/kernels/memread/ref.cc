// Memory read probe (see memread.h). Baseline C++: the compiler vectorizes it with SSE2,
// and the loop is bound by the memory system, not by the adds.
#include <cstring>

#include "memread.h"

namespace lowbit {
namespace ref {

uint64_t memread_sum__scalar(const void* p, size_t n) {
  const unsigned char* b = static_cast<const unsigned char*>(p);
  const size_t words = n / 8;
  uint64_t acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  size_t i = 0;
  for (; i + 8 <= words; i += 8)
    for (int j = 0; j < 8; ++j) {
      uint64_t v;
      std::memcpy(&v, b + (i + j) * 8, 8);
      acc[j] += v;
    }
  for (; i < words; ++i) {
    uint64_t v;
    std::memcpy(&v, b + i * 8, 8);
    acc[0] += v;
  }
  uint64_t s = 0;
  for (int j = 0; j < 8; ++j) s += acc[j];
  return s;
}

}  // namespace ref
}  // namespace lowbit
