// Decoding one row of a packed weight on AVX-512, shared by qw_axpy__avx512 and the AMX int8 GEMM's
// epilogue (which adds the outlier split's float part itself). Include after kernels/common/avx512.h.
#pragma once
#include <cstdint>

namespace lowbit {
namespace avx512 {
namespace {  // internal linkage: each ISA object keeps its own copy (no exported inline symbols)

// Byte b of every 32-bit lane, moved to the top (immediate shifts: SIMDe, for the emulated test
// build, has no variable-count forms)
inline __m512i ByteToTop(__m512i v, int64_t b) {
  switch (b) {
    case 0: return _mm512_slli_epi32(v, 24);
    case 1: return _mm512_slli_epi32(v, 16);
    case 2: return _mm512_slli_epi32(v, 8);
    default: return v;
  }
}

// float(Wq[k, n]) * ws[n] for the 16 columns of a "qs8-n16k4" k-quad line (the 64 bytes holding
// k): byte k % 4 of each 4-byte group, sign-extended, converted, times the column scale.
inline __m512 Qs8WeightRow(const uint8_t* line, int64_t k, __m512 ws) {
  const __m512i c = _mm512_srai_epi32(ByteToTop(_mm512_loadu_si512(line), k & 3), 24);
  return _mm512_mul_ps(_mm512_cvtepi32_ps(c), ws);
}

}  // namespace
}  // namespace avx512
}  // namespace lowbit
