// The one include of every AVX-512 kernel translation unit: the intrinsics, and the few
// instructions the kernels write as inline asm, behind names that have two builds.
//
// Production (CMake): <immintrin.h>, and the asm below exactly as written, so the machine
// code is what the kernels had when the asm sat in each of them.
//
// LOWBIT_EMULATE_AVX512 (tests/test_avx512_emulated.py only, never the extension): the
// same kernel sources compiled WITHOUT -mavx512* against SIMDe's portable AVX-512
// (Debian's libsimde-dev, native aliases on), so a CPU without AVX-512 runs them; the asm
// becomes the equivalent intrinsic, and intrinsics SIMDe lacks come from
// avx512_emulation.h. A new AVX-512 kernel uses only intrinsics and the helpers here: no
// asm, no __builtin_ia32_* of its own (add a helper here instead, with both builds).
#pragma once
#include <cstdint>

#if defined(LOWBIT_EMULATE_AVX512)
#if defined(__AVX512F__)
#error "LOWBIT_EMULATE_AVX512 builds the AVX-512 kernels through SIMDe: compile them without -mavx512*"
#endif
#include "kernels/common/avx512_emulation.h"
#else
#include <immintrin.h>
#endif

// The emulated helpers below are the test build's hot spots: optimized even when the kernels
// around them are compiled at -O0 (tests/test_avx512_emulated.py explains why they are).
#if defined(LOWBIT_EMULATE_AVX512)
#define LOWBIT_EMULATED_HOT __attribute__((optimize("O2")))
#else
#define LOWBIT_EMULATED_HOT
#endif

namespace lowbit {
namespace {

// vpdpbusd: acc.i32[j] += sum over the 4 bytes of lane j of u8[..] (unsigned) * s8[..] (signed),
// in place. (GCC 12 copies the accumulator around the intrinsic's result, several extra moves and
// even spills per step: the asm keeps it in place.)
LOWBIT_EMULATED_HOT inline void Dpbusd(__m512i& acc, __m512i u8, __m512i s8) {
#if defined(LOWBIT_EMULATE_AVX512)
  acc = _mm512_dpbusd_epi32(acc, u8, s8);
#else
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u8), "v"(s8));
#endif
}

// The 256-bit form. {evex} matters: without it the assembler may pick the VEX (AVX-VNNI)
// encoding of the same mnemonic, which Zen 4 and other AVX-512 VNNI CPUs lack (#UD).
LOWBIT_EMULATED_HOT inline void Dpbusd256(__m256i& acc, __m256i u8, __m256i s8) {
#if defined(LOWBIT_EMULATE_AVX512)
  acc = _mm256_dpbusd_epi32(acc, u8, s8);
#else
  asm("%{evex%} vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u8), "v"(s8));
#endif
}

// acc += u8 x the 4 signed bytes at p, broadcast to every lane from memory ({1to16}).
LOWBIT_EMULATED_HOT inline void DpbusdBcast(__m512i& acc, __m512i u8, const int8_t* p) {
#if defined(LOWBIT_EMULATE_AVX512)
  int32_t v;
  __builtin_memcpy(&v, p, 4);
  acc = _mm512_dpbusd_epi32(acc, u8, _mm512_set1_epi32(v));
#else
  asm("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(u8), "m"(*reinterpret_cast<const int32_t*>(p)));
#endif
}

// The 256-bit EVEX form of DpbusdBcast ({1to8}).
LOWBIT_EMULATED_HOT inline void DpbusdBcast256(__m256i& acc, __m256i u8, const int8_t* p) {
#if defined(LOWBIT_EMULATE_AVX512)
  int32_t v;
  __builtin_memcpy(&v, p, 4);
  acc = _mm256_dpbusd_epi32(acc, u8, _mm256_set1_epi32(v));
#else
  asm("%{evex%} vpdpbusd %2%{1to8%}, %1, %0" : "+v"(acc) : "v"(u8), "m"(*reinterpret_cast<const int32_t*>(p)));
#endif
}

// vpermb (AVX512_VBMI): byte j of the result is tbl's byte idx[j] & 63. Only for kernels the
// dispatch picks where CPUID reports VBMI (the AVX-512 sources are compiled without
// -mavx512vbmi, so nothing else in them can use it).
LOWBIT_EMULATED_HOT inline __m512i PermB(__m512i idx, __m512i tbl) {
#if defined(LOWBIT_EMULATE_AVX512)
  return _mm512_permutexvar_epi8(idx, tbl);
#else
  __m512i r;
  asm("vpermb %2, %1, %0" : "=v"(r) : "v"(idx), "v"(tbl));
  return r;
#endif
}

}  // namespace
}  // namespace lowbit
