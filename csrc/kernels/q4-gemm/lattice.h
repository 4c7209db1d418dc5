// What the lattice-form 4-bit kernels share (q4_gemm.h, "Lattice form"): the decode of a
// panel's codes into int8 weights w8: mul * (u - z) exactly, or rounded, (v * mul + 2^(S-1)) >> S.
// Compiled into each AVX-512 object that includes it (AVX-512 F/BW), with internal linkage, as
// f32-gemm/common.h.
#pragma once
#include <cstdint>
#include <cstring>

#include "kernels/common/avx512.h"
#include "q4_gemm.h"

namespace lowbit {
namespace {

// A group's 16 multiples, and as bytes, saturated (the sign kept; exact within [-128, 127]).
inline __m256i Mul16(const int16_t* mul) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(mul)); }
inline __m128i Mul8(__m256i m) { return _mm_packs_epi16(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1)); }

// k range [k0, k1) of a panel (whole groups; k1 - k0 rounded up to 64 with zero weights) as
// int8 w8 = mul * (u - z) in B layout, 64 bytes per k-quad. A 16-bit word holds two codes of
// one column, and |mul| * u <= 16 * 15 < 256, so one vpmullw by |mul| gives both bytes' |mul| * u
// without a carry between them; then - |mul| * z and the sign, byte-wise mod 256 (the result
// is in [-128, 127] by the lattice's bounds, so its s8 value is exact).
template <bool ASYM>
void LatticeDecode(const uint8_t* codes, const uint8_t* zeros, const int16_t* mul, int64_t k0, int64_t k1, int64_t G,
            int8_t* out) {
  const __m512i low4 = _mm512_set1_epi8(0x0F), dup16 = _mm512_set1_epi32(0x00010001),
                dup8 = _mm512_set1_epi32(0x01010101);
  for (int64_t gi = k0 / G; gi < k1 / G; ++gi) {
    // per column j (lane j): |mul| in both 16-bit words, |mul| * z in all 4 bytes, mul < 0 as a byte mask
    const __m128i m8 = Mul8(Mul16(mul + gi * 16));  // (exact multiples are within +-16)
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

// The rounded lattice form (q4_gemm.h): w8 = (v * mul + 2^(S-1)) >> S, v = T[u] (TABLE, by
// vpshufb) or u - z (z = 8 when symmetric), mul = sign * y. Per group and lane (column): v's
// sign flipped where mul < 0 (a masked byte subtract), then one vpmaddubsw of (y, 2^(S-1)) u8
// pairs with (v, 1) s8 pairs (the bytes interleaved with ones) gives v * mul + 2^(S-1) per word
// (within int16 by q4_lattice's bounds), an arithmetic shift by S the rounded w8, and the
// in-lane pack puts the bytes back in order. In a 128-bit lane the low 8 bytes are columns 4L
// and 4L + 1, the high 8 columns 4L + 2 and 4L + 3: the y words follow that. 19-21 vector ops
// per 128 weights (the exact form: ~9).
template <bool TABLE, bool ASYM>
void LatticeDecodeRounded(const uint8_t* codes, const int8_t* table, const uint8_t* zeros, const int16_t* mul,
                          int32_t S, int64_t k0, int64_t k1, int64_t G, int8_t* out) {
  const __m512i low4 = _mm512_set1_epi8(0x0F), ones = _mm512_set1_epi8(1), dup8 = _mm512_set1_epi32(0x01010101);
  const __m512i round = _mm512_set1_epi16(int16_t((1 << (S - 1)) << 8));
  const __m128i sh = _mm_cvtsi32_si128(S);
  const __m512i tab = TABLE ? _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(table)))
                            : _mm512_setzero_si512();
  // word w of lane L (w < 8): column 4L + w / 4 (low half), 4L + 2 + w / 4 (high half)
  alignas(64) int16_t il[32], ih[32];
  for (int w = 0; w < 32; ++w) {
    il[w] = int16_t(4 * (w / 8) + (w % 8) / 4);
    ih[w] = int16_t(il[w] + 2);
  }
  const __m512i idx_lo = _mm512_load_si512(il), idx_hi = _mm512_load_si512(ih);
  for (int64_t gi = k0 / G; gi < k1 / G; ++gi) {
    const __m256i m16 = Mul16(mul + gi * 16);
    const __m512i y16 = _mm512_castsi256_si512(_mm256_abs_epi16(m16));
    const __m512i ylo = _mm512_or_si512(_mm512_permutexvar_epi16(idx_lo, y16), round);
    const __m512i yhi = _mm512_or_si512(_mm512_permutexvar_epi16(idx_hi, y16), round);
    // lane j's 4 bytes: mul < 0 as a byte mask, z in every byte
    const __mmask64 neg = _mm512_movepi8_mask(_mm512_srai_epi32(_mm512_cvtepi8_epi32(Mul8(m16)), 31));
    const __m512i z = TABLE  ? _mm512_setzero_si512()
                      : ASYM ? _mm512_mullo_epi32(
                                   _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(zeros + gi * 16))), dup8)
                             : _mm512_set1_epi8(8);
    for (int64_t k8 = gi * G / 8; k8 < (gi + 1) * G / 8; ++k8) {
      const __m512i c = _mm512_loadu_si512(codes + k8 * 64);
      const __m512i u[2] = {_mm512_and_si512(c, low4), _mm512_and_si512(_mm512_srli_epi16(c, 4), low4)};
      int8_t* o = out + (k8 - k0 / 8) * 128;
      for (int h = 0; h < 2; ++h) {
        __m512i v = TABLE ? _mm512_shuffle_epi8(tab, u[h]) : _mm512_sub_epi8(u[h], z);
        v = _mm512_mask_sub_epi8(v, neg, _mm512_setzero_si512(), v);
        const __m512i lo = _mm512_sra_epi16(_mm512_maddubs_epi16(ylo, _mm512_unpacklo_epi8(v, ones)), sh);
        const __m512i hi = _mm512_sra_epi16(_mm512_maddubs_epi16(yhi, _mm512_unpackhi_epi8(v, ones)), sh);
        _mm512_store_si512(o + 64 * h, _mm512_packs_epi16(lo, hi));
      }
    }
  }
  if ((k1 - k0) % 64 != 0) std::memset(out + (k1 - k0) * 16, 0, 32 * 16);
}

// The chunk [k0, k1) of panel p (codes, zero points and multiples at the panel's offsets) as
// int8 weights in B layout: the exact or the rounded form, by the layout and the shift.
inline void LatticeDecodePanel(const Q4Layout& lay, const uint8_t* W, const uint8_t* codes, const uint8_t* zeros,
                               const int16_t* mul, int32_t shift, int64_t k0, int64_t k1, int8_t* out) {
  const int64_t G = lay.group;
  const int8_t* T = reinterpret_cast<const int8_t*>(W);
  if (lay.kind == Q4Kind::kTable) LatticeDecodeRounded<true, false>(codes, T, nullptr, mul, shift, k0, k1, G, out);
  else if (shift > 0 && lay.asym) LatticeDecodeRounded<false, true>(codes, nullptr, zeros, mul, shift, k0, k1, G, out);
  else if (shift > 0) LatticeDecodeRounded<false, false>(codes, nullptr, nullptr, mul, shift, k0, k1, G, out);
  else if (lay.asym) LatticeDecode<true>(codes, zeros, mul, k0, k1, G, out);
  else LatticeDecode<false>(codes, nullptr, mul, k0, k1, G, out);
}

}  // namespace
}  // namespace lowbit
