// CRC32C with the SSE4.2 crc32 instruction: three independent streams hide the
// instruction's 3-cycle latency, then the three CRCs are combined by GF(2) shifts.
#include <nmmintrin.h>

#include <cstring>

#include "kernels/crc32c/crc32c.h"

namespace lowbit::sse42 {
namespace {

inline uint64_t load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

uint32_t one_stream(uint32_t c, const uint8_t* p, size_t n) {
  while (n && (reinterpret_cast<uintptr_t>(p) & 7)) { c = _mm_crc32_u8(c, *p++); --n; }
  for (; n >= 8; n -= 8, p += 8) c = uint32_t(_mm_crc32_u64(c, load64(p)));
  for (; n; --n) c = _mm_crc32_u8(c, *p++);
  return c;
}

}  // namespace

uint32_t crc32c__sse42(uint32_t crc, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t c = ~crc;
  constexpr size_t kBlock = 8192;  // bytes per stream per round
  if (n >= 3 * kBlock) {
    // Shift constants: state after 2*kBlock and kBlock bytes of zeros.
    const uint32_t x_2b = crc32c_shift(1u << 31, 2 * kBlock);
    const uint32_t x_1b = crc32c_shift(1u << 31, kBlock);
    auto mul = [](uint32_t a, uint32_t b) {  // a * b mod P, reflected
      uint32_t prod = 0;
      for (uint32_t m = 1u << 31; m != 0; m >>= 1) {
        if (a & m) prod ^= b;
        b = (b & 1) ? (b >> 1) ^ 0x82F63B78u : b >> 1;
      }
      return prod;
    };
    while (n >= 3 * kBlock) {
      uint64_t c0 = c, c1 = 0, c2 = 0;
      const uint8_t* p1 = p + kBlock;
      const uint8_t* p2 = p + 2 * kBlock;
      for (size_t i = 0; i < kBlock; i += 8) {
        c0 = _mm_crc32_u64(c0, load64(p + i));
        c1 = _mm_crc32_u64(c1, load64(p1 + i));
        c2 = _mm_crc32_u64(c2, load64(p2 + i));
      }
      c = mul(x_2b, uint32_t(c0)) ^ mul(x_1b, uint32_t(c1)) ^ uint32_t(c2);
      p += 3 * kBlock;
      n -= 3 * kBlock;
    }
  }
  return ~one_stream(c, p, n);
}

}  // namespace lowbit::sse42
