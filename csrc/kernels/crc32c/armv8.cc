// CRC32C with the ARMv8 CRC extension (crc32cx), one stream.
#include <arm_acle.h>

#include <cstring>

#include "kernels/crc32c/crc32c.h"

namespace lowbit::armv8 {

uint32_t crc32c__armv8crc(uint32_t crc, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t c = ~crc;
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c = __crc32cd(c, v);
  }
  for (; n; --n) c = __crc32cb(c, *p++);
  return ~c;
}

}  // namespace lowbit::armv8
