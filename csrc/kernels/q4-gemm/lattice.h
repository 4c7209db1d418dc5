// What the lattice-form 4-bit kernels share (q4_gemm.h, "Lattice form"): the decode of a
// panel's codes into int8 weights w8 = mul * (u - z). Compiled into each AVX-512 object that
// includes it (AVX-512 F/BW), with internal linkage, as f32-gemm/common.h.
#pragma once
#include <cstdint>
#include <cstring>

#include "kernels/common/avx512.h"

namespace lowbit {
namespace {

// k range [k0, k1) of a panel (whole groups; k1 - k0 rounded up to 64 with zero weights) as
// int8 w8 = mul * (u - z) in B layout, 64 bytes per k-quad. A 16-bit word holds two codes of
// one column, and |mul| * u <= 16 * 15 < 256, so one vpmullw by |mul| gives both bytes' |mul| * u
// without a carry between them; then - |mul| * z and the sign, byte-wise mod 256 (the result
// is in [-128, 127] by the lattice's bounds, so its s8 value is exact).
template <bool ASYM>
void LatticeDecode(const uint8_t* codes, const uint8_t* zeros, const int8_t* mul, int64_t k0, int64_t k1, int64_t G,
            int8_t* out) {
  const __m512i low4 = _mm512_set1_epi8(0x0F), dup16 = _mm512_set1_epi32(0x00010001),
                dup8 = _mm512_set1_epi32(0x01010101);
  for (int64_t gi = k0 / G; gi < k1 / G; ++gi) {
    // per column j (lane j): |mul| in both 16-bit words, |mul| * z in all 4 bytes, mul < 0 as a byte mask
    const __m128i m8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(mul + gi * 16));
    const __m512i am = _mm512_cvtepu8_epi32(_mm_abs_epi8(m8));
    const __m512i z = ASYM ? _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(zeros + gi * 16)))
                           : _mm512_set1_epi32(8);
    const __m512i mw = _mm512_mullo_epi32(am, dup16);
    const __m512i mz = _mm512_mullo_epi32(_mm512_mullo_epi32(am, z), dup8);
    const __mmask64 neg = _mm512_movepi8_mask(_mm512_mullo_epi32(_mm512_cvtepi8_epi32(m8), dup8));
    for (int64_t k8 = gi * G / 8; k8 < (gi + 1) * G / 8; ++k8) {
      const __m512i v = _mm512_loadu_si512(codes + k8 * 64);
      __m512i lo = _mm512_sub_epi8(_mm512_mullo_epi16(_mm512_and_si512(v, low4), mw), mz);
      __m512i hi = _mm512_sub_epi8(_mm512_mullo_epi16(_mm512_and_si512(_mm512_srli_epi16(v, 4), low4), mw), mz);
      lo = _mm512_mask_sub_epi8(lo, neg, _mm512_setzero_si512(), lo);
      hi = _mm512_mask_sub_epi8(hi, neg, _mm512_setzero_si512(), hi);
      int8_t* o = out + (k8 - k0 / 8) * 128;
      _mm512_store_si512(o, lo);
      _mm512_store_si512(o + 64, hi);
    }
  }
  if ((k1 - k0) % 64 != 0) std::memset(out + (k1 - k0) * 16, 0, 32 * 16);
}

}  // namespace
}  // namespace lowbit
