// Int8 multiply-accumulate probe, NEON dot product (see qs8_dotpeak.h): 8 sdot (16 products
// each) into 8 accumulators, 8 times a round. a <= 127 is the same value as u8 and s8.
// Compile with: -march=armv8.2-a+dotprod
#include <arm_neon.h>

#include "qs8_dotpeak.h"

namespace lowbit {
namespace neon {

int64_t qs8_dotpeak__neondot(int64_t rounds, int32_t a, int32_t b) {
  const int8x16_t av = vdupq_n_s8(static_cast<int8_t>(a)), bv = vdupq_n_s8(static_cast<int8_t>(b));
  int32x4_t c0 = vdupq_n_s32(0), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
  for (int64_t r = 0; r < rounds; ++r)
    for (int s = 0; s < 8; ++s) {
      c0 = vdotq_s32(c0, av, bv);
      c1 = vdotq_s32(c1, av, bv);
      c2 = vdotq_s32(c2, av, bv);
      c3 = vdotq_s32(c3, av, bv);
      c4 = vdotq_s32(c4, av, bv);
      c5 = vdotq_s32(c5, av, bv);
      c6 = vdotq_s32(c6, av, bv);
      c7 = vdotq_s32(c7, av, bv);
    }
  int64_t sum = 0;
  const int32x4_t c[8] = {c0, c1, c2, c3, c4, c5, c6, c7};
  for (const int32x4_t& v : c) sum += vaddlvq_s32(v);
  return sum;
}

}  // namespace neon
}  // namespace lowbit
