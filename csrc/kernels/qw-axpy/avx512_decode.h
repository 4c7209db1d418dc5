// Decoding one row of a packed weight on AVX-512, shared by qw_axpy__avx512 and the AMX GEMMs'
// epilogues (which add the outlier split's float part themselves). Include after kernels/common/avx512.h.
#pragma once
#include <cstdint>

#include "kernels/q4-gemm/q4_gemm.h"

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

// float(v) * s[n, g] for the 16 columns of panel p at row k of a q4 weight W (qw_axpy.h's
// definition): each column's code u is byte k % 4 of its 4-byte group in the 64-byte line of
// k / 8, low nibble for k % 8 < 4, else high; v = u - z (affine; z = 8 when symmetric) or T[u]
// (table: t holds T[0..15] as int32 lanes).
inline __m512 Q4WeightRow(const uint8_t* W, const Q4Layout& lay, const Q4Parts& parts, int64_t Kg, int64_t p, int64_t k,
                          __m512i t) {
  const int64_t NG = Kg / lay.group, g = k / lay.group;
  const __m512i b = _mm512_loadu_si512(W + parts.codes + (p * (Kg / 8) + k / 8) * 64);
  const __m512i byte = _mm512_srli_epi32(ByteToTop(b, k & 3), 24);  // u8 of column j
  const __m512i u = _mm512_and_si512((k & 7) >= 4 ? _mm512_srli_epi32(byte, 4) : byte, _mm512_set1_epi32(15));
  __m512i c;
  if (lay.kind == Q4Kind::kTable) {
    c = _mm512_permutexvar_epi32(u, t);
  } else if (lay.asym) {
    const uint8_t* zp = W + parts.zeros + (p * NG + g) * 16;
    c = _mm512_sub_epi32(u, _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(zp))));
  } else {
    c = _mm512_sub_epi32(u, _mm512_set1_epi32(8));
  }
  const uint16_t* sc = reinterpret_cast<const uint16_t*>(W + parts.scales) + (p * NG + g) * 16;
  return _mm512_mul_ps(_mm512_cvtepi32_ps(c), _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(sc))));
}

}  // namespace
}  // namespace avx512
}  // namespace lowbit
