// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as used by iSCSI/ext4.
// crc32c(0, data, n) of "123456789" is 0xE3069283.
#pragma once
#include <cstddef>
#include <cstdint>

namespace lowbit {

// Continues a CRC: pass the previous result (0 to start).
using Crc32cFn = uint32_t (*)(uint32_t crc, const void* data, size_t n);

namespace ref { uint32_t crc32c__scalar(uint32_t crc, const void* data, size_t n); }
namespace sse42 { uint32_t crc32c__sse42(uint32_t crc, const void* data, size_t n); }
namespace armv8 { uint32_t crc32c__armv8crc(uint32_t crc, const void* data, size_t n); }

// Combines crc(A) and crc(B) into crc(A||B) given len(B) (zlib-style GF(2) shift).
uint32_t crc32c_shift(uint32_t crc, size_t nbytes);

}  // namespace lowbit
