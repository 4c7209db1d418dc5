// The int8 codes of 64 activations at once, shared by the two AVX-512 quantizers (qs8_quant__avx512,
// qs8_quant_split__avx512). Include after kernels/common/avx512.h.
#pragma once

namespace lowbit {
namespace avx512 {
namespace {  // internal linkage: each ISA object keeps its own copy (no exported inline symbols)

// Four vectors of 16 scaled activations, already clamped to [-127, 127], rounded to nearest-even
// (cvtps2dq) and narrowed by two saturating packs; the packs interleave 4-value chunks of the four
// vectors per 128-bit lane, and one dword permute puts the 64 codes back in row order. Every code
// is the one cvtsepi32_epi8 (vpmovsdb) gives for its lane: the values are within int8 already.
inline __m512i Codes64(__m512 v0, __m512 v1, __m512 v2, __m512 v3) {
  const __m512i w01 = _mm512_packs_epi32(_mm512_cvtps_epi32(v0), _mm512_cvtps_epi32(v1));
  const __m512i w23 = _mm512_packs_epi32(_mm512_cvtps_epi32(v2), _mm512_cvtps_epi32(v3));
  // dword 4L + j of the packed bytes holds elements 4L..4L+3 of vector j; row order wants 4j + L
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  return _mm512_permutexvar_epi32(order, _mm512_packs_epi16(w01, w23));
}

// q[0..K) = the codes of x[0..K) * inv: (v > -127) ? v : -127 (NaN -> -127), then (v < 127) ? v : 127,
// rounded to nearest-even, xor 0x80 when bias128 (the u8 form); 64 per store, then 16 at a time.
inline void CodesOfRow(const float* x, int8_t* q, int64_t K, float inv, bool bias128) {
  const __m512 vinv = _mm512_set1_ps(inv), lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
  auto scaled = [&](int64_t i) { return _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), vinv), lo), hi); };
  const __m512i off64 = _mm512_set1_epi8(bias128 ? char(0x80) : 0);
  int64_t k = 0;
  for (; k + 64 <= K; k += 64)
    _mm512_storeu_si512(q + k, _mm512_xor_si512(Codes64(scaled(k), scaled(k + 16), scaled(k + 32), scaled(k + 48)), off64));
  const __m128i off = _mm_set1_epi8(bias128 ? char(0x80) : 0);
  for (; k < K; k += 16) {
    const __mmask16 mk = K - k >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (K - k)) - 1u);
    __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, x + k), vinv);
    v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
    _mm_mask_storeu_epi8(q + k, mk, _mm_xor_si128(_mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(v)), off));
  }
}

}  // namespace
}  // namespace avx512
}  // namespace lowbit
