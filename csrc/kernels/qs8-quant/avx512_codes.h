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

}  // namespace
}  // namespace avx512
}  // namespace lowbit
