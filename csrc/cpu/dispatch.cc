#include "cpu/dispatch.h"

#include <stdexcept>

#include "cpu/cpu.h"

namespace lowbit {
namespace {

// The fp32 row kernels (kernels/f32-vmath) and depthwise convolution (kernels/f32-dwconv)
// of each level, and whether its f32 GEMM reads an implicit A (convolutions without
// im2col; the AVX-512 kernel does not yet). neondot has no NEON versions yet: it runs
// the scalar references.
void add_f32_row_kernels(KernelTable& t) {
  switch (t.isa) {
#if defined(LOWBIT_X86)
    case Isa::kAvx512Vnni:
      t.vmath = {&avx512::f32_softmax_row__avx512, "f32_softmax_row__avx512", &avx512::f32_gelu__avx512, "f32_gelu__avx512"};
      t.f32_dwconv = {&avx512::f32_dwconv_nhwc__avx512, "f32_dwconv_nhwc__avx512"};
      return;
    case Isa::kAvx2:
      t.vmath = {&avx2::f32_softmax_row__avx2, "f32_softmax_row__avx2", &avx2::f32_gelu__avx2, "f32_gelu__avx2"};
      t.f32_dwconv = {&avx2::f32_dwconv_nhwc__avx2, "f32_dwconv_nhwc__avx2"};
      t.f32_gemm_implicit_a = true;
      return;
#endif
    default:
      t.vmath = {&ref::f32_softmax_row__scalar, "f32_softmax_row__scalar", &ref::f32_gelu__scalar, "f32_gelu__scalar"};
      t.f32_dwconv = {&f32_dwconv_nhwc__scalar, "f32_dwconv_nhwc__scalar"};
      t.f32_gemm_implicit_a = t.f32_gemm == &ref::f32_gemm_1x16__scalar;
      return;
  }
}

// The outlier split's kernels: AVX2 on x86 levels (a few passes over rows in L1 and one
// weight row per outlier: the AVX-512 level uses the AVX2 ones too), the reference elsewhere.
void add_outlier_split_kernels(KernelTable& t) {
#if defined(LOWBIT_X86)
  if (t.isa == Isa::kAvx2 || t.isa == Isa::kAvx512Vnni) {
    t.qs8_quant_split = &avx2::qs8_quant_split__avx2;
    t.qs8_quant_split_name = "qs8_quant_split__avx2";
    t.qw_axpy = &avx2::qw_axpy__avx2;
    t.qw_axpy_name = "qw_axpy__avx2";
    return;
  }
#endif
  t.qs8_quant_split = &ref::qs8_quant_split__scalar;
  t.qs8_quant_split_name = "qs8_quant_split__scalar";
  t.qw_axpy = &ref::qw_axpy__scalar;
  t.qw_axpy_name = "qw_axpy__scalar";
}

// The 7-bit weight GEMM: on AVX2 the u8 x s7 kernel (3 ops per 32 MACs instead of the exact
// s8 x s8 path's 4); elsewhere the level's int8 GEMM (VNNI and sdot have no saturation to avoid).
void add_qs7_gemm_kernels(KernelTable& t) {
#if defined(LOWBIT_X86)
  if (t.isa == Isa::kAvx2) {
    t.qs7_gemm = &avx2::qs7_gemm_6x16c4__avx2;
    t.qs7_gemm_name = "qs7_gemm_6x16c4__avx2";
    t.qs7_gemm_biased = true;
    return;
  }
#endif
  t.qs7_gemm = t.qs8_gemm;
  t.qs7_gemm_name = t.qs8_gemm_name;
  t.qs7_gemm_biased = t.qs8_gemm_biased;
}

std::vector<KernelTable> build_tables() {
  std::vector<KernelTable> t;
#if defined(LOWBIT_X86)
  t.push_back({Isa::kAvx512Vnni, "avx512vnni", &avx512::f32_gemm_12x32__avx512, "f32_gemm_12x32__avx512",
               &sse42::crc32c__sse42, "crc32c__sse42",
               &avx512::qs8_quant__avx512, "qs8_quant__avx512",
               &avx512::qs8_gemm_8x32c4__avx512vnni, "qs8_gemm_8x32c4__avx512vnni", true,
               &avx512::q4_gemm_8x32c8__avx512vnni, "q4_gemm_8x32c8__avx512vnni",
               // no AVX-512 requant/depthwise yet (not testable on the AVX2 build machine): the AVX2 ones
               &avx2::qs8_requant__avx2, "qs8_requant__avx2",
               &avx2::qs8_dwconv_nhwc_16c__avx2, "qs8_dwconv_nhwc_16c__avx2",
               // fp32 SELL: the AVX2 kernel (its limit is building vectors from scalar loads,
               // which AVX-512 does not change)
               &avx2::f32_spmm_s8m4__avx2, "f32_spmm_s8m4__avx2",
               &avx512::qs8_spmm_k16m4__avx512vnni, "qs8_spmm_k16m4__avx512vnni",
               &avx512::qs8_bspmm_s8c4__avx512vnni, "qs8_bspmm_s8c4__avx512vnni", true});
  t.push_back({Isa::kAvx2, "avx2", &avx2::f32_gemm_6x16__avx2, "f32_gemm_6x16__avx2",
               &sse42::crc32c__sse42, "crc32c__sse42",
               &avx2::qs8_quant__avx2, "qs8_quant__avx2",
               &avx2::qs8_gemm_5x16c4__avx2, "qs8_gemm_5x16c4__avx2", false,
               &avx2::q4_gemm_6x16c8__avx2, "q4_gemm_6x16c8__avx2",
               &avx2::qs8_requant__avx2, "qs8_requant__avx2",
               &avx2::qs8_dwconv_nhwc_16c__avx2, "qs8_dwconv_nhwc_16c__avx2",
               &avx2::f32_spmm_s8m4__avx2, "f32_spmm_s8m4__avx2",
               &avx2::qs8_spmm_k16m4__avx2, "qs8_spmm_k16m4__avx2",
               &avx2::qs8_bspmm_s8c4__avx2, "qs8_bspmm_s8c4__avx2", false});
#endif
#if defined(LOWBIT_ARM64)
  // No NEON fp32 GEMM yet: neondot pairs the reference fp32 GEMM with the CRC and sdot kernels.
  t.push_back({Isa::kNeonDot, "neondot", &ref::f32_gemm_1x16__scalar, "f32_gemm_1x16__scalar",
               &armv8::crc32c__armv8crc, "crc32c__armv8crc",
               &ref::qs8_quant__scalar, "qs8_quant__scalar",
               &neon::qs8_gemm_4x16c4__neondot, "qs8_gemm_4x16c4__neondot", false,
               &neon::q4_gemm_4x16c8__neondot, "q4_gemm_4x16c8__neondot",
               &ref::qs8_requant__scalar, "qs8_requant__scalar",
               &ref::qs8_dwconv_nhwc__scalar, "qs8_dwconv_nhwc__scalar",
               &neon::f32_spmm_s8m4__neon, "f32_spmm_s8m4__neon",
               &neon::qs8_spmm_k16m4__neondot, "qs8_spmm_k16m4__neondot",
               &neon::qs8_bspmm_s8c4__neondot, "qs8_bspmm_s8c4__neondot", false});
#endif
  t.push_back({Isa::kScalar, "scalar", &ref::f32_gemm_1x16__scalar, "f32_gemm_1x16__scalar",
               &ref::crc32c__scalar, "crc32c__scalar",
               &ref::qs8_quant__scalar, "qs8_quant__scalar",
               &ref::qs8_gemm_1x16__scalar, "qs8_gemm_1x16__scalar", false,
               &ref::q4_gemm_1x16__scalar, "q4_gemm_1x16__scalar",
               &ref::qs8_requant__scalar, "qs8_requant__scalar",
               &ref::qs8_dwconv_nhwc__scalar, "qs8_dwconv_nhwc__scalar",
               &ref::f32_spmm_s8__scalar, "f32_spmm_s8__scalar",
               &ref::qs8_spmm_k16__scalar, "qs8_spmm_k16__scalar",
               &ref::qs8_bspmm_s8c4__scalar, "qs8_bspmm_s8c4__scalar", false});
  for (KernelTable& k : t) add_f32_row_kernels(k);
  for (KernelTable& k : t) add_outlier_split_kernels(k);
  for (KernelTable& k : t) add_qs7_gemm_kernels(k);
  return t;
}

const KernelTable* g_selected = nullptr;

std::string supported_list() {
  std::string s;
  for (const auto& t : all_kernel_tables()) {
    if (!isa_supported(t.isa)) continue;
    if (!s.empty()) s += ", ";
    s += t.isa_name;
  }
  return s;
}

}  // namespace

const std::vector<KernelTable>& all_kernel_tables() {
  static const std::vector<KernelTable> tables = build_tables();
  return tables;
}

bool isa_supported(Isa isa) {
  const cpu::Features& f = cpu::features();
  switch (isa) {
    case Isa::kScalar: return true;
    case Isa::kAvx2: return f.avx2 && f.fma && f.sse42;
    case Isa::kAvx512Vnni:
      if (f.avx512_emulated) return f.avx2 && f.fma && f.f16c && f.sse42;  // SIMDe build: AVX2 code underneath
      return f.avx2 && f.fma && f.sse42 && f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl && f.avx512vnni;
    case Isa::kNeonDot: return f.neon && f.dotprod && f.crc32;
  }
  return false;
}

const KernelTable& kernels_for(const std::string& name) {
  static const char* known[] = {"scalar", "avx2", "avx512vnni", "neondot"};
  bool is_known = false;
  for (const char* k : known) is_known |= (name == k);
  if (!is_known)
    throw std::runtime_error("LOWBIT_ISA='" + name + "' is not an ISA; expected one of scalar, avx2, avx512vnni, neondot");
  for (const auto& t : all_kernel_tables()) {
    if (name != t.isa_name) continue;
    if (!isa_supported(t.isa))
      throw std::runtime_error("LOWBIT_ISA='" + name + "' is not supported by this CPU/OS; it supports: " + supported_list());
    return t;
  }
  throw std::runtime_error("LOWBIT_ISA='" + name + "' is not compiled into this build (other architecture); available: " +
                           supported_list());
}

void select_kernels(const std::string& forced) {
  if (g_selected) return;  // filled once
  if (!forced.empty()) {
    g_selected = &kernels_for(forced);
    return;
  }
  for (const auto& t : all_kernel_tables()) {
    if (isa_supported(t.isa)) {
      g_selected = &t;
      return;
    }
  }
}

const KernelTable& kernels() {
  if (!g_selected) select_kernels("");
  return *g_selected;
}

const VMathKernels& vmath() { return kernels().vmath; }
F32DwConvKernel f32_dwconv_kernel() { return kernels().f32_dwconv; }

}  // namespace lowbit
