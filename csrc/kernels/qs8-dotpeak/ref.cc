// Int8 multiply-accumulate probe, scalar reference (see qs8_dotpeak.h): the products one by one
// in 64 int32 accumulators, summed at the end.
#include "qs8_dotpeak.h"

namespace lowbit {
namespace ref {

int64_t qs8_dotpeak__scalar(int64_t rounds, int32_t a, int32_t b) {
  int32_t acc[64] = {};
  for (int64_t r = 0; r < rounds; ++r)
    for (int i = 0; i < 1024; ++i) acc[i % 64] += static_cast<int32_t>(static_cast<uint8_t>(a)) * static_cast<int8_t>(b);
  int64_t s = 0;
  for (int32_t v : acc) s += v;
  return s;
}

}  // namespace ref
}  // namespace lowbit
