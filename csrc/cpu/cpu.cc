#include "cpu/cpu.h"

#include <cstdint>
#include <cstring>

#if defined(LOWBIT_X86)
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#endif
#if defined(LOWBIT_ARM64) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace lowbit::cpu {
namespace {

#if defined(LOWBIT_X86)
// XGETBV without requiring -mxsave on the translation unit.
uint64_t read_xcr0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (uint64_t(edx) << 32) | eax;
}
#endif

Features detect() {
  Features f;
#if defined(LOWBIT_X86)
  unsigned a, b, c, d;
  if (!__get_cpuid(0, &a, &b, &c, &d)) return f;
  unsigned max_leaf = a;
  char vendor[13];
  std::memcpy(vendor, &b, 4);
  std::memcpy(vendor + 4, &d, 4);
  std::memcpy(vendor + 8, &c, 4);
  vendor[12] = 0;
  f.vendor = vendor;
  __get_cpuid(1, &a, &b, &c, &d);
  f.sse42 = c & (1u << 20);
  f.fma = c & (1u << 12);
  f.f16c = c & (1u << 29);
  bool osxsave = c & (1u << 27);
  bool cpu_avx = c & (1u << 28);
  if (osxsave) {
    uint64_t xcr0 = read_xcr0();
    f.os_ymm = (xcr0 & 0x6) == 0x6;     // SSE + AVX state
    f.os_zmm = (xcr0 & 0xE6) == 0xE6;   // + opmask, ZMM_Hi256, Hi16_ZMM
  }
  f.avx = cpu_avx && f.os_ymm;
  f.fma = f.fma && f.avx;
  f.f16c = f.f16c && f.avx;
  if (max_leaf >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    f.avx2 = f.avx && (b & (1u << 5));
    bool z = f.os_zmm;
    f.avx512f = z && (b & (1u << 16));
    f.avx512dq = z && (b & (1u << 17));
    f.avx512bw = z && (b & (1u << 30));
    f.avx512vl = z && (b & (1u << 31));
    f.avx512vnni = z && (c & (1u << 11));
    f.avx512vbmi = z && (c & (1u << 1));
    // AMX: the tile config and tile data states (XCR0 bits 17, 18) must be enabled, and Linux
    // grants the 8 KB tile data state per process only on request (kernel 5.16+); a refused or
    // unknown request leaves AMX off.
    const bool cpu_amx = (d & (1u << 24)) && (d & (1u << 25));  // AMX-TILE, AMX-INT8
    if (cpu_amx && osxsave && (read_xcr0() & 0x60000) == 0x60000) {
#if defined(__linux__) && defined(SYS_arch_prctl)
      constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
      f.amx_int8 = syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
      unsigned a1 = 0, b1 = 0, c1 = 0, d1 = 0;
      __cpuid_count(7, 1, a1, b1, c1, d1);
      // AMX-BF16 tiles, and AVX512-BF16 for the conversions around them (every AMX CPU has both)
      f.amx_bf16 = f.amx_int8 && (d & (1u << 22)) && (a1 & (1u << 5));
#endif
    }
  }
#if defined(LOWBIT_EMULATE_AVX512)
  // Emulated builds only (tests/test_avx512_emulated.py's kernel test, or the extension built
  // with -DLOWBIT_EMULATE_AVX512=ON; never a release): the AVX-512 kernels are compiled through
  // SIMDe for AVX2 + FMA + F16C, so on such a CPU the avx512vnni table is supported, selected
  // first and tested like real hardware. The CPUID flags above are left as they are.
  if (f.avx2 && f.fma && f.f16c) {
    f.avx512_emulated = true;
    f.vendor += " (AVX-512 emulated by SIMDe)";
  }
#endif
#elif defined(LOWBIT_ARM64)
  f.neon = true;  // mandatory in armv8-a
#if defined(__linux__)
  unsigned long hw = getauxval(AT_HWCAP);
  f.dotprod = hw & HWCAP_ASIMDDP;
  f.crc32 = hw & HWCAP_CRC32;
#endif
  f.vendor = "arm64";
#endif
  return f;
}

}  // namespace

const Features& features() {
  static const Features f = detect();
  return f;
}

std::vector<std::string> feature_names() {
  const Features& f = features();
  std::vector<std::string> out;
  auto add = [&](bool on, const char* name) { if (on) out.emplace_back(name); };
  add(f.sse42, "sse4.2");
  add(f.avx, "avx");
  add(f.avx2, "avx2");
  add(f.fma, "fma");
  add(f.f16c, "f16c");
  add(f.avx512f, "avx512f");
  add(f.avx512bw, "avx512bw");
  add(f.avx512dq, "avx512dq");
  add(f.avx512vl, "avx512vl");
  add(f.avx512vnni, "avx512vnni");
  add(f.avx512vbmi, "avx512vbmi");
  add(f.amx_int8, "amx-int8");
  add(f.amx_bf16, "amx-bf16");
  add(f.neon, "neon");
  add(f.dotprod, "dotprod");
  add(f.crc32, "crc32");
  return out;
}

}  // namespace lowbit::cpu
