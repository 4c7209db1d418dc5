// AVX-512 for a CPU without it, for tests only (included by avx512.h under
// LOWBIT_EMULATE_AVX512; see docs/kernels.md "Testing AVX-512 without AVX-512").
//
// SIMDe (libsimde-dev) supplies portable AVX-512F/BW/DQ/VL/VNNI with native aliases: the
// kernels' _mm512_* calls become simde_mm512_*, which run on the AVX2/FMA/F16C the test
// compiles for. Debian 12's SIMDe (0.7.4) lacks some intrinsics the kernels use; they are
// written below from the instruction definitions (Intel SDM), lane by lane, and replace
// SIMDe's of the same name where a newer SIMDe has one, so every SIMDe version runs the
// same code. Masked loads and stores touch only the enabled lanes (like the hardware's
// fault suppression: the kernels rely on it at row ends). Reductions follow GCC's
// <immintrin.h> sequence, so sums come out in the same order as in the real build.
#pragma once
#include <cstdint>
#include <cstring>

#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#include <simde/x86/f16c.h>

namespace lowbit_avx512_emulation {
namespace {  // internal linkage, like the kernels' own helpers

inline bool Bit(uint32_t k, int i) { return (k >> i) & 1u; }

inline simde__m512 mm512_maskz_loadu_ps(simde__mmask16 k, const void* p) {
  float v[16];
  for (int i = 0; i < 16; ++i) v[i] = Bit(k, i) ? static_cast<const float*>(p)[i] : 0.0f;
  return simde_mm512_loadu_ps(v);
}
inline simde__m512 mm512_mask_loadu_ps(simde__m512 src, simde__mmask16 k, const void* p) {
  float v[16];
  simde_mm512_storeu_ps(v, src);
  for (int i = 0; i < 16; ++i)
    if (Bit(k, i)) v[i] = static_cast<const float*>(p)[i];
  return simde_mm512_loadu_ps(v);
}
inline void mm512_mask_storeu_ps(void* p, simde__mmask16 k, simde__m512 a) {
  float v[16];
  simde_mm512_storeu_ps(v, a);
  for (int i = 0; i < 16; ++i)
    if (Bit(k, i)) static_cast<float*>(p)[i] = v[i];
}
inline simde__m512i mm512_maskz_loadu_epi32(simde__mmask16 k, const void* p) {
  int32_t v[16];
  for (int i = 0; i < 16; ++i) v[i] = Bit(k, i) ? static_cast<const int32_t*>(p)[i] : 0;
  return simde_mm512_loadu_si512(v);
}
inline void mm512_mask_storeu_epi32(void* p, simde__mmask16 k, simde__m512i a) {
  int32_t v[16];
  simde_mm512_storeu_si512(v, a);
  for (int i = 0; i < 16; ++i)
    if (Bit(k, i)) static_cast<int32_t*>(p)[i] = v[i];
}
inline simde__m256 mm256_maskz_loadu_ps(simde__mmask8 k, const void* p) {
  float v[8];
  for (int i = 0; i < 8; ++i) v[i] = Bit(k, i) ? static_cast<const float*>(p)[i] : 0.0f;
  return simde_mm256_loadu_ps(v);
}
inline void mm256_mask_storeu_ps(void* p, simde__mmask8 k, simde__m256 a) {
  float v[8];
  simde_mm256_storeu_ps(v, a);
  for (int i = 0; i < 8; ++i)
    if (Bit(k, i)) static_cast<float*>(p)[i] = v[i];
}
inline void mm_mask_storeu_epi8(void* p, simde__mmask16 k, simde__m128i a) {
  int8_t v[16];
  simde_mm_storeu_si128(reinterpret_cast<simde__m128i*>(v), a);
  for (int i = 0; i < 16; ++i)
    if (Bit(k, i)) static_cast<int8_t*>(p)[i] = v[i];
}

// vcvtdq2ps: nearest-even (the default MXCSR rounding), as a C++ int -> float conversion.
inline simde__m512 mm512_cvtepi32_ps(simde__m512i a) {
  int32_t s[16];
  float v[16];
  simde_mm512_storeu_si512(s, a);
  for (int i = 0; i < 16; ++i) v[i] = static_cast<float>(s[i]);
  return simde_mm512_loadu_ps(v);
}
// vcvtps2dq: the AVX instruction on each half (same rounding, same 0x80000000 for NaN / out of range).
inline simde__m512i mm512_cvtps_epi32(simde__m512 a) {
  float s[16];
  int32_t v[16];
  simde_mm512_storeu_ps(s, a);
  simde_mm256_storeu_si256(reinterpret_cast<simde__m256i*>(v), simde_mm256_cvtps_epi32(simde_mm256_loadu_ps(s)));
  simde_mm256_storeu_si256(reinterpret_cast<simde__m256i*>(v + 8), simde_mm256_cvtps_epi32(simde_mm256_loadu_ps(s + 8)));
  return simde_mm512_loadu_si512(v);
}
inline simde__m512i mm512_cvtepi8_epi32(simde__m128i a) {
  int8_t s[16];
  int32_t v[16];
  simde_mm_storeu_si128(reinterpret_cast<simde__m128i*>(s), a);
  for (int i = 0; i < 16; ++i) v[i] = s[i];
  return simde_mm512_loadu_si512(v);
}
inline simde__m512i mm512_cvtepu8_epi32(simde__m128i a) {
  uint8_t s[16];
  int32_t v[16];
  simde_mm_storeu_si128(reinterpret_cast<simde__m128i*>(s), a);
  for (int i = 0; i < 16; ++i) v[i] = s[i];
  return simde_mm512_loadu_si512(v);
}
// float -> double is exact; double -> float rounds to nearest-even (default MXCSR), like vcvtpd2ps.
inline simde__m512d mm512_cvtps_pd(simde__m256 a) {
  float s[8];
  double v[8];
  simde_mm256_storeu_ps(s, a);
  for (int i = 0; i < 8; ++i) v[i] = s[i];
  return simde_mm512_loadu_pd(v);
}
inline simde__m256 mm512_cvtpd_ps(simde__m512d a) {
  double s[8];
  float v[8];
  simde_mm512_storeu_pd(s, a);
  for (int i = 0; i < 8; ++i) v[i] = static_cast<float>(s[i]);
  return simde_mm256_loadu_ps(v);
}
// f16 -> f32 is exact: the F16C instruction (or SIMDe's version of it) on each half.
inline simde__m512 mm512_cvtph_ps(simde__m256i a) {
  uint16_t s[16];
  float v[16];
  simde_mm256_storeu_si256(reinterpret_cast<simde__m256i*>(s), a);
  simde_mm256_storeu_ps(v, simde_mm256_cvtph_ps(simde_mm_loadu_si128(reinterpret_cast<const simde__m128i*>(s))));
  simde_mm256_storeu_ps(v + 8, simde_mm256_cvtph_ps(simde_mm_loadu_si128(reinterpret_cast<const simde__m128i*>(s + 8))));
  return simde_mm512_loadu_ps(v);
}
inline simde__m256 mm512_extractf32x8_ps(simde__m512 a, int imm) {
  float s[16];
  simde_mm512_storeu_ps(s, a);
  return simde_mm256_loadu_ps(s + 8 * (imm & 1));
}
inline simde__m512i mm512_srai_epi32(simde__m512i a, int imm) {
  int32_t v[16];
  simde_mm512_storeu_si512(v, a);
  const unsigned c = static_cast<unsigned>(imm) & 0xFFu;
  for (int i = 0; i < 16; ++i) v[i] = v[i] >> (c > 31 ? 31 : c);
  return simde_mm512_loadu_si512(v);
}

inline int32_t mm512_reduce_add_epi32(simde__m512i a) {  // wraps like the hardware
  int32_t s[16];
  simde_mm512_storeu_si512(s, a);
  uint32_t t = 0;
  for (int i = 0; i < 16; ++i) t += static_cast<uint32_t>(s[i]);
  return static_cast<int32_t>(t);
}
// GCC's sequence: halves, quarters, lanes {0,1}+{2,3}, then lane 0 + lane 1.
inline float mm512_reduce_add_ps(simde__m512 a) {
  float s[16], t3[8], t6[4], t8[4];
  simde_mm512_storeu_ps(s, a);
  for (int i = 0; i < 8; ++i) t3[i] = s[8 + i] + s[i];
  for (int i = 0; i < 4; ++i) t6[i] = t3[4 + i] + t3[i];
  for (int i = 0; i < 4; ++i) t8[i] = t6[i] + t6[i ^ 2];
  return t8[0] + t8[1];
}
// The same sequence with maxps (a > b ? a : b: the second operand on NaN or equal).
inline float mm512_reduce_max_ps(simde__m512 a) {
  auto mx = [](float x, float y) { return x > y ? x : y; };
  float s[16], t3[8], t6[4], t8[4];
  simde_mm512_storeu_ps(s, a);
  for (int i = 0; i < 8; ++i) t3[i] = mx(s[8 + i], s[i]);
  for (int i = 0; i < 4; ++i) t6[i] = mx(t3[4 + i], t3[i]);
  for (int i = 0; i < 4; ++i) t8[i] = mx(t6[i], t6[i ^ 2]);
  return mx(t8[0], t8[1]);
}

// vshuff32x4: 128-bit lanes 0, 1 from a and 2, 3 from b, each chosen by two bits of imm
inline simde__m512 mm512_shuffle_f32x4(simde__m512 a, simde__m512 b, int imm) {
  float x[16], y[16], r[16];
  simde_mm512_storeu_ps(x, a);
  simde_mm512_storeu_ps(y, b);
  for (int l = 0; l < 4; ++l) {
    const int sel = (imm >> (2 * l)) & 3;
    for (int i = 0; i < 4; ++i) r[4 * l + i] = (l < 2 ? x : y)[4 * sel + i];
  }
  return simde_mm512_loadu_ps(r);
}

}  // namespace
}  // namespace lowbit_avx512_emulation

#define LOWBIT_EMU_ALIAS(name) ::lowbit_avx512_emulation::name
#undef _mm512_maskz_loadu_ps
#define _mm512_maskz_loadu_ps LOWBIT_EMU_ALIAS(mm512_maskz_loadu_ps)
#undef _mm512_mask_loadu_ps
#define _mm512_mask_loadu_ps LOWBIT_EMU_ALIAS(mm512_mask_loadu_ps)
#undef _mm512_mask_storeu_ps
#define _mm512_mask_storeu_ps LOWBIT_EMU_ALIAS(mm512_mask_storeu_ps)
#undef _mm512_maskz_loadu_epi32
#define _mm512_maskz_loadu_epi32 LOWBIT_EMU_ALIAS(mm512_maskz_loadu_epi32)
#undef _mm512_mask_storeu_epi32
#define _mm512_mask_storeu_epi32 LOWBIT_EMU_ALIAS(mm512_mask_storeu_epi32)
#undef _mm256_maskz_loadu_ps
#define _mm256_maskz_loadu_ps LOWBIT_EMU_ALIAS(mm256_maskz_loadu_ps)
#undef _mm256_mask_storeu_ps
#define _mm256_mask_storeu_ps LOWBIT_EMU_ALIAS(mm256_mask_storeu_ps)
#undef _mm_mask_storeu_epi8
#define _mm_mask_storeu_epi8 LOWBIT_EMU_ALIAS(mm_mask_storeu_epi8)
#undef _mm512_cvtepi32_ps
#define _mm512_cvtepi32_ps LOWBIT_EMU_ALIAS(mm512_cvtepi32_ps)
#undef _mm512_cvtps_epi32
#define _mm512_cvtps_epi32 LOWBIT_EMU_ALIAS(mm512_cvtps_epi32)
#undef _mm512_cvtepi8_epi32
#define _mm512_cvtepi8_epi32 LOWBIT_EMU_ALIAS(mm512_cvtepi8_epi32)
#undef _mm512_cvtepu8_epi32
#define _mm512_cvtepu8_epi32 LOWBIT_EMU_ALIAS(mm512_cvtepu8_epi32)
#undef _mm512_cvtps_pd
#define _mm512_cvtps_pd LOWBIT_EMU_ALIAS(mm512_cvtps_pd)
#undef _mm512_cvtpd_ps
#define _mm512_cvtpd_ps LOWBIT_EMU_ALIAS(mm512_cvtpd_ps)
#undef _mm512_cvtph_ps
#define _mm512_cvtph_ps LOWBIT_EMU_ALIAS(mm512_cvtph_ps)
#undef _mm512_extractf32x8_ps
#define _mm512_extractf32x8_ps LOWBIT_EMU_ALIAS(mm512_extractf32x8_ps)
#undef _mm512_srai_epi32
#define _mm512_srai_epi32 LOWBIT_EMU_ALIAS(mm512_srai_epi32)
#undef _mm512_reduce_add_epi32
#define _mm512_reduce_add_epi32 LOWBIT_EMU_ALIAS(mm512_reduce_add_epi32)
#undef _mm512_reduce_add_ps
#define _mm512_reduce_add_ps LOWBIT_EMU_ALIAS(mm512_reduce_add_ps)
#undef _mm512_reduce_max_ps
#define _mm512_reduce_max_ps LOWBIT_EMU_ALIAS(mm512_reduce_max_ps)
#undef _mm512_shuffle_f32x4
#define _mm512_shuffle_f32x4 LOWBIT_EMU_ALIAS(mm512_shuffle_f32x4)
