// What the lattice-form 4-bit kernels share (q4_gemm.h, "Lattice form"): the decode of a
// panel's codes into int8 weights w8 = mul * (u - z), or (T[u] * y + 64) >> 7 for table codes. Compiled into each AVX-512 object that
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

// The same for table codes: w8 = (T[u] * y + 64) >> 7 (q4_gemm.h), y = mul's u8 bit pattern.
// T[u] by vpshufb; vpmaddubsw of (y, 64) u8 pairs with (T[u], 1) s8 pairs (the bytes
// interleaved with ones) gives T[u] * y + 64 per word (|T[u] * y| <= 16319: no saturation),
// an arithmetic shift by 7 the rounded w8, and the in-lane pack puts the bytes back in order.
// In a 128-bit lane the low 8 bytes are columns 4L and 4L + 1, the high 8 columns 4L + 2 and
// 4L + 3: the y words follow that.
inline void LatticeDecodeTable(const uint8_t* codes, const int8_t* table, const int8_t* mul, int64_t k0, int64_t k1,
                               int64_t G, int8_t* out) {
  const __m512i low4 = _mm512_set1_epi8(0x0F), ones = _mm512_set1_epi8(1), round = _mm512_set1_epi16(64 << 8);
  const __m512i tab = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(table)));
  // word w of lane L (w < 8): column 4L + w / 4 (low half), 4L + 2 + w / 4 (high half)
  alignas(64) int16_t il[32], ih[32];
  for (int w = 0; w < 32; ++w) {
    il[w] = int16_t(4 * (w / 8) + (w % 8) / 4);
    ih[w] = int16_t(il[w] + 2);
  }
  const __m512i idx_lo = _mm512_load_si512(il), idx_hi = _mm512_load_si512(ih);
  for (int64_t gi = k0 / G; gi < k1 / G; ++gi) {
    const __m512i y16 =
        _mm512_castsi256_si512(_mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(mul + gi * 16))));
    const __m512i ylo = _mm512_or_si512(_mm512_permutexvar_epi16(idx_lo, y16), round);
    const __m512i yhi = _mm512_or_si512(_mm512_permutexvar_epi16(idx_hi, y16), round);
    for (int64_t k8 = gi * G / 8; k8 < (gi + 1) * G / 8; ++k8) {
      const __m512i v = _mm512_loadu_si512(codes + k8 * 64);
      const __m512i t[2] = {_mm512_shuffle_epi8(tab, _mm512_and_si512(v, low4)),
                            _mm512_shuffle_epi8(tab, _mm512_and_si512(_mm512_srli_epi16(v, 4), low4))};
      int8_t* o = out + (k8 - k0 / 8) * 128;
      for (int h = 0; h < 2; ++h) {
        const __m512i lo = _mm512_srai_epi16(_mm512_maddubs_epi16(ylo, _mm512_unpacklo_epi8(t[h], ones)), 7);
        const __m512i hi = _mm512_srai_epi16(_mm512_maddubs_epi16(yhi, _mm512_unpackhi_epi8(t[h], ones)), 7);
        _mm512_store_si512(o + 64 * h, _mm512_packs_epi16(lo, hi));
      }
    }
  }
  if ((k1 - k0) % 64 != 0) std::memset(out + (k1 - k0) * 16, 0, 32 * 16);
}

}  // namespace
}  // namespace lowbit
