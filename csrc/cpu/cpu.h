// CPU feature detection: CPUID plus the OS register-state check (XGETBV) on x86,
// HWCAP on aarch64. Read once; never executes an instruction the CPU lacks.
#pragma once
#include <string>
#include <vector>

namespace lowbit::cpu {

struct Features {
  // x86
  bool sse42 = false, avx = false, avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512dq = false, avx512vl = false, avx512vnni = false;
  bool avx512vbmi = false;  // vpermb: the 4-bit table decode of q4_gemm_8x32c8__avx512vbmi
  bool os_ymm = false;  // XCR0 says the OS saves YMM state
  bool os_zmm = false;  // XCR0 says the OS saves opmask + ZMM state
  // AMX tiles with int8 dot products: CPUID AMX-TILE + AMX-INT8, XCR0 tile state enabled and,
  // on Linux, the tile data permission granted to this process (arch_prctl ARCH_REQ_XCOMP_PERM).
  bool amx_int8 = false;
  bool amx_bf16 = false;  // with amx_int8: the same tile permission
  // Development builds only (CMake -DLOWBIT_EMULATE_AVX512=ON): the AVX-512 kernels are compiled
  // through SIMDe for AVX2 + FMA + F16C, so the avx512vnni table runs (emulated, slowly) on this
  // CPU. The avx512* flags above stay what CPUID says; this one alone makes the table supported.
  bool avx512_emulated = false;
  // aarch64
  bool neon = false, dotprod = false, crc32 = false;
  std::string vendor;
};

const Features& features();
std::vector<std::string> feature_names();

}  // namespace lowbit::cpu
