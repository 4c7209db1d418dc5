// CRC32C scalar reference: byte-at-a-time table (the truth) plus the GF(2)
// shift used to stitch together CRCs of interleaved streams.
#include <array>

#include "kernels/crc32c/crc32c.h"

namespace lowbit {
namespace {

constexpr uint32_t kPoly = 0x82F63B78u;  // reflected Castagnoli polynomial

constexpr std::array<uint32_t, 256> make_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr std::array<uint32_t, 256> kTable = make_table();

// a * b mod P in the reflected bit order (bit 31 is x^0).
uint32_t mul_mod_p(uint32_t a, uint32_t b) {
  uint32_t prod = 0;
  for (uint32_t m = 1u << 31; m != 0; m >>= 1) {
    if (a & m) prod ^= b;
    b = (b & 1) ? (b >> 1) ^ kPoly : b >> 1;
  }
  return prod;
}

}  // namespace

namespace ref {
uint32_t crc32c__scalar(uint32_t crc, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t c = ~crc;
  for (size_t i = 0; i < n; ++i) c = kTable[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return ~c;
}
}  // namespace ref

// Multiplies a raw (non-inverted) CRC state by x^(8 * nbytes) mod P: the state it
// would have after nbytes of zeros, so crc(A||B) = shift(crc(A), |B|) ^ crc0(B).
uint32_t crc32c_shift(uint32_t crc, size_t nbytes) {
  uint32_t x2k = 1u << 30;  // x^1; squared repeatedly gives x^(2^k)
  // x^(8n) = product of x^(2^k) over the set bits of 8n.
  uint64_t bits = uint64_t(nbytes) * 8;
  while (bits) {
    if (bits & 1) crc = mul_mod_p(x2k, crc);
    x2k = mul_mod_p(x2k, x2k);
    bits >>= 1;
  }
  return crc;
}

}  // namespace lowbit
