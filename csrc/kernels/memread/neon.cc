// Memory read probe, NEON (see memread.h). Compile with: -march=armv8-a
#include <arm_neon.h>

#include "memread.h"

namespace lowbit {
namespace neon {

uint64_t memread_sum__neon(const void* p, size_t n) {
  const uint8_t* b = static_cast<const uint8_t*>(p);
  const size_t words = n / 8;
  uint64x2_t a0 = vdupq_n_u64(0), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 8 <= words; i += 8) {
    const uint8_t* s = b + i * 8;
    a0 = vaddq_u64(a0, vreinterpretq_u64_u8(vld1q_u8(s)));
    a1 = vaddq_u64(a1, vreinterpretq_u64_u8(vld1q_u8(s + 16)));
    a2 = vaddq_u64(a2, vreinterpretq_u64_u8(vld1q_u8(s + 32)));
    a3 = vaddq_u64(a3, vreinterpretq_u64_u8(vld1q_u8(s + 48)));
  }
  uint64_t s = vaddvq_u64(vaddq_u64(vaddq_u64(a0, a1), vaddq_u64(a2, a3)));
  return s + ref::memread_sum__scalar(b + i * 8, (words - i) * 8);  // the last words
}

}  // namespace neon
}  // namespace lowbit
