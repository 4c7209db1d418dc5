#include "cpu/dispatch.h"

#include <stdexcept>
#include <string>
#include <utility>

#include "cpu/cpu.h"

namespace lowbit {
namespace {

// "avx2::qs8_quant__avx2" -> "qs8_quant__avx2": the name a kernel is reported by.
constexpr const char* base_name(const char* qualified) {
  const char* r = qualified;
  for (const char* p = qualified; *p; ++p)
    if (*p == ':') r = p + 1;
  return r;
}

// Sets a table field and its name from one function: KERNEL(t, qs8_gemm, avx2::qs8_gemm_5x16c4__avx2).
#define KERNEL(t, field, fn) \
  do {                       \
    (t).field = &fn;         \
    (t).field##_name = base_name(#fn); \
  } while (0)

// What every level shares by construction: the 7-bit int8 GEMM is the level's int8 GEMM
// unless the level has its own (AVX2: u8 x s7, 3 ops per 32 MACs instead of the exact s8 x s8
// path's 4; VNNI and sdot have no saturation to avoid, so they run their qs8 GEMM, same bits).
void qs7_from_qs8(KernelTable& t) {
  t.qs7_gemm = t.qs8_gemm;
  t.qs7_gemm_name = t.qs8_gemm_name;
  t.qs7_gemm_biased = t.qs8_gemm_biased;
}

// Levels without a fast bf16 GEMM carry the reference (for tests and kernel_names); their
// Attention op keeps fp32 (bf16.attention false), faster there than the reference would be.
void bf16_reference(KernelTable& t) {
  t.bf16 = {&ref::bf16_gemm_1x16__scalar, "bf16_gemm_1x16__scalar", &ref::bf16_pack_a__scalar, &ref::bf16_pack_b__scalar,
            &ref::bf16_pack_bt__scalar, &ref::bf16_softmax__scalar, false};
}

// Every kernel of a table is set: a level function that forgets a field fails at import
// with the field's name instead of crashing on first use.
void check_complete(const KernelTable& t) {
  // a kernel field and its _name twin (set together by KERNEL)
#define FIELD(f) {reinterpret_cast<const void*>(t.f), #f}, {t.f##_name, #f "_name"}
  const std::pair<const void*, const char*> fields[] = {
      {t.isa_name, "isa_name"},
      FIELD(f32_gemm), FIELD(f32_pack_bt), FIELD(crc32c), FIELD(memread_sum), FIELD(qs8_dotpeak),
      FIELD(qs8_quant), FIELD(qs8_gemm), FIELD(qs7_gemm), FIELD(q4_gemm),
      FIELD(qs8_requant), FIELD(qs8_dwconv), FIELD(f32_spmm), FIELD(qs8_spmm), FIELD(qs8_bspmm), FIELD(qs8_bspmm_pack_a),
      FIELD(qs8_quant_split), FIELD(qw_axpy),
      {reinterpret_cast<const void*>(t.bf16.gemm), "bf16.gemm"}, {t.bf16.name, "bf16.name"},
      {reinterpret_cast<const void*>(t.bf16.pack_a), "bf16.pack_a"}, {reinterpret_cast<const void*>(t.bf16.pack_b), "bf16.pack_b"},
      {reinterpret_cast<const void*>(t.bf16.pack_bt), "bf16.pack_bt"},
      {reinterpret_cast<const void*>(t.bf16.softmax), "bf16.softmax"},
      {reinterpret_cast<const void*>(t.vmath.softmax_row), "vmath.softmax_row"}, {t.vmath.softmax_name, "vmath.softmax_name"},
      {reinterpret_cast<const void*>(t.vmath.gelu), "vmath.gelu"}, {t.vmath.gelu_name, "vmath.gelu_name"},
      {reinterpret_cast<const void*>(t.vmath.softmax_pre), "vmath.softmax_pre"},
      {reinterpret_cast<const void*>(t.vmath.layernorm), "vmath.layernorm"}, {t.vmath.layernorm_name, "vmath.layernorm_name"},
      {reinterpret_cast<const void*>(t.f32_dwconv.fn), "f32_dwconv.fn"}, {t.f32_dwconv.name, "f32_dwconv.name"},
      {reinterpret_cast<const void*>(t.f32_maxpool.fn), "f32_maxpool.fn"}, {t.f32_maxpool.name, "f32_maxpool.name"},
      {reinterpret_cast<const void*>(t.f32_winograd.input), "f32_winograd.input"},
      {reinterpret_cast<const void*>(t.f32_winograd.output), "f32_winograd.output"}, {t.f32_winograd.name, "f32_winograd.name"},
  };
#undef FIELD
  for (const auto& f : fields)
    if (f.first == nullptr)
      throw std::logic_error(std::string("kernel table '") + (t.isa_name ? t.isa_name : "?") + "' has no " + f.second);
}

KernelTable scalar_level() {
  KernelTable t;
  t.isa = Isa::kScalar;
  t.isa_name = "scalar";
  KERNEL(t, f32_gemm, ref::f32_gemm_1x16__scalar);
  t.f32_gemm_implicit_a = true;
  KERNEL(t, f32_pack_bt, ref::f32_pack_bt__scalar);
  bf16_reference(t);
  KERNEL(t, crc32c, ref::crc32c__scalar);
  KERNEL(t, memread_sum, ref::memread_sum__scalar);
  KERNEL(t, qs8_dotpeak, ref::qs8_dotpeak__scalar);
  KERNEL(t, qs8_quant, ref::qs8_quant__scalar);
  KERNEL(t, qs8_gemm, ref::qs8_gemm_1x16__scalar);
  qs7_from_qs8(t);
  KERNEL(t, q4_gemm, ref::q4_gemm_1x16__scalar);
  KERNEL(t, q4_gemm_lattice, ref::q4_gemm_lattice_1x16__scalar);
  KERNEL(t, qs8_requant, ref::qs8_requant__scalar);
  KERNEL(t, qs8_dwconv, ref::qs8_dwconv_nhwc__scalar);
  KERNEL(t, f32_spmm, ref::f32_spmm_s8__scalar);
  KERNEL(t, qs8_spmm, ref::qs8_spmm_k16__scalar);
  KERNEL(t, qs8_bspmm, ref::qs8_bspmm_s8c4__scalar);
  KERNEL(t, qs8_bspmm_pack_a, ref::qs8_bspmm_pack_a__scalar);
  KERNEL(t, qs8_bspmm_t16, ref::qs8_bspmm_t16__scalar);  // tests only (min_rows 0)
  t.vmath = {&ref::f32_softmax_row__scalar, "f32_softmax_row__scalar", &ref::f32_gelu__scalar, "f32_gelu__scalar",
             &ref::f32_softmax_pre_row__scalar,
             &ref::f32_layernorm_row__scalar, "f32_layernorm_row__scalar"};
  t.f32_dwconv = {&f32_dwconv_nhwc__scalar, "f32_dwconv_nhwc__scalar"};
  t.f32_maxpool = {&f32_maxpool_nhwc__scalar, "f32_maxpool_nhwc__scalar"};
  t.f32_winograd = {&f32_wino_input_f2k3__scalar, &f32_wino_output_f2k3__scalar, "f32_wino_f2k3__scalar"};
  KERNEL(t, qs8_quant_split, ref::qs8_quant_split__scalar);
  KERNEL(t, qw_axpy, ref::qw_axpy__scalar);
  return t;
}

#if defined(LOWBIT_X86)
KernelTable avx2_level() {
  KernelTable t;
  bf16_reference(t);
  t.isa = Isa::kAvx2;
  t.isa_name = "avx2";
  KERNEL(t, f32_gemm, avx2::f32_gemm_6x16__avx2);
  t.f32_gemm_implicit_a = true;
  KERNEL(t, f32_pack_bt, ref::f32_pack_bt__scalar);  // no AVX2 transposing copy: the reference
  KERNEL(t, crc32c, sse42::crc32c__sse42);
  KERNEL(t, memread_sum, avx2::memread_sum__avx2);
  KERNEL(t, qs8_dotpeak, avx2::qs8_dotpeak__avx2);
  KERNEL(t, qs8_quant, avx2::qs8_quant__avx2);
  KERNEL(t, qs8_gemm, avx2::qs8_gemm_5x16c4__avx2);
  KERNEL(t, qs7_gemm, avx2::qs7_gemm_6x16c4__avx2);
  t.qs7_gemm_biased = true;
  KERNEL(t, q4_gemm, avx2::q4_gemm_6x16c8__avx2);
  KERNEL(t, qs8_requant, avx2::qs8_requant__avx2);
  KERNEL(t, qs8_dwconv, avx2::qs8_dwconv_nhwc_16c__avx2);
  KERNEL(t, f32_spmm, avx2::f32_spmm_s8m4__avx2);
  KERNEL(t, qs8_spmm, avx2::qs8_spmm_k16m4__avx2);
  KERNEL(t, qs8_bspmm, avx2::qs8_bspmm_s8c4__avx2);
  KERNEL(t, qs8_bspmm_pack_a, ref::qs8_bspmm_pack_a__scalar);  // no AVX2 version: the reference
  // tiles from 3 rows: at 80% 1x4 blocks, 4096x4096, one 8-row tile pass (722 us on an Emerald
  // Rapids Xeon's AVX2 path) beats three rows of gathers (889 us) but not two (605 us)
  t.qs8_bspmm_tile_min_rows = 3;
  t.vmath = {&avx2::f32_softmax_row__avx2, "f32_softmax_row__avx2", &avx2::f32_gelu__avx2, "f32_gelu__avx2",
             &avx2::f32_softmax_pre_row__avx2,
             &avx2::f32_layernorm_row__avx2, "f32_layernorm_row__avx2"};
  t.f32_dwconv = {&avx2::f32_dwconv_nhwc__avx2, "f32_dwconv_nhwc__avx2"};
  t.f32_maxpool = {&avx2::f32_maxpool_nhwc__avx2, "f32_maxpool_nhwc__avx2"};
  t.f32_winograd = {&avx2::f32_wino_input_f2k3__avx2, &avx2::f32_wino_output_f2k3__avx2, "f32_wino_f2k3__avx2"};
  KERNEL(t, qs8_quant_split, avx2::qs8_quant_split__avx2);
  KERNEL(t, qw_axpy, avx2::qw_axpy__avx2);
  return t;
}

KernelTable avx512vnni_level() {
  KernelTable t;
  bf16_reference(t);
  t.isa = Isa::kAvx512Vnni;
  t.isa_name = "avx512vnni";
  KERNEL(t, f32_gemm, avx512::f32_gemm_12x32__avx512);
  t.f32_gemm_implicit_a = true;
  // ResNet-18, 1 thread: the 3-channel 7x7 stem (segments of 21) 2.02 -> 1.66 ms and the
  // 64-channel 3x3 convs (192) 1.63 -> 1.46 ms against im2col; the AVX2 GEMM ties at 192
  t.f32_conv_implicit_min_segment = 1;
  KERNEL(t, f32_pack_bt, avx512::f32_pack_bt__avx512);
  KERNEL(t, crc32c, sse42::crc32c__sse42);
  KERNEL(t, memread_sum, avx512::memread_sum__avx512);
  KERNEL(t, qs8_dotpeak, avx512::qs8_dotpeak__avx512vnni);
  KERNEL(t, qs8_quant, avx512::qs8_quant__avx512);
  KERNEL(t, qs8_gemm, avx512::qs8_gemm_8x32c4__avx512vnni);
  t.qs8_gemm_biased = true;
  qs7_from_qs8(t);
  KERNEL(t, q4_gemm, avx512::q4_gemm_8x32c8__avx512vnni);
  // table codes (nf4, codebooks) decoded by vpermb where the CPU has AVX512_VBMI (Ice Lake, Zen 4
  // and later; not Cascade Lake): 1x4096x4096 nf4 147 us where vpshufb took 164 on a Zen 4
  if (cpu::features().avx512vbmi) KERNEL(t, q4_gemm, avx512::q4_gemm_8x32c8__avx512vbmi);
  // int4 on the int8 lattice (what convert writes) through the int8 VNNI GEMM, from
  // q4_gemm_lattice_min_rows rows; fewer rows read the 4-bit codes (q4_gemm)
  KERNEL(t, q4_gemm_lattice, avx512::q4_gemm_lattice_8x32c4__avx512vnni);
  t.q4_gemm_lattice_min_rows = 32;  // measured 768x3072: the decode costs more than the drain saves below ~24 rows
  t.q4_gemm_lattice_biased = true;  // vpdpbusd: u8 x s8
  // no AVX-512 requant/depthwise yet (not testable on the AVX2 build machine): the AVX2 ones
  KERNEL(t, qs8_requant, avx2::qs8_requant__avx2);
  KERNEL(t, qs8_dwconv, avx2::qs8_dwconv_nhwc_16c__avx2);
  // fp32 SELL: the AVX2 kernel (its limit is building vectors from scalar loads, which
  // AVX-512 does not change)
  KERNEL(t, f32_spmm, avx2::f32_spmm_s8m4__avx2);
  KERNEL(t, qs8_spmm, avx512::qs8_spmm_k16m4__avx512vnni);
  KERNEL(t, qs8_bspmm, avx512::qs8_bspmm_s8c4__avx512vnni);
  // staged tile output: M = 16, 4096 x 4096, 80% 1x4 blocks, 440-455 us where scattering to C took 510-533
  KERNEL(t, qs8_bspmm_unstage, avx512::qs8_bspmm_unstage__avx512);
  // 16 x 16 transposes: 1.7 us where the scalar packer takes 12.1 (M = 16, K = 4096)
  KERNEL(t, qs8_bspmm_pack_a, avx512::qs8_bspmm_pack_a__avx512);
  t.qs8_spmm_biased = true;
  t.qs8_bspmm_tile_rows = 16;
  // tiles from 2 rows: one 8-row tile pass (396 us at 80% 1x4 blocks, 4096x4096) beats two rows of
  // gathers (598 us) and three (900 us)
  t.qs8_bspmm_tile_min_rows = 2;
  // The sparse row paths' weight prefetch. Intel (measured on an Emerald Rapids Xeon): into L1,
  // as on every level (without it the streams fell behind from DRAM; kernels/common/prefetch.h).
  // AMD (measured on a Zen 4, M = 1, 4096 x 4096 layers, the levels alternated in one process;
  // docs/kernels.md "Weight streams"): the fp32 SELL kernel into L2 (from DRAM 21-22 GB/s against
  // 15 into L1 and 14 without; in L3 as fast as without), the int8 ones none (in L3, K16 117-183 us
  // against 161-273 into L2, 1x4 blocks 173-176 against 176-178; from DRAM no slower than prefetched).
  if (cpu::features().vendor == "AuthenticAMD") {
    t.f32_spmm_prefetch = StreamPrefetch::kL2;
    t.qs8_spmm_prefetch = StreamPrefetch::kNone;
    t.qs8_bspmm_prefetch = StreamPrefetch::kNone;
  }
  t.vmath = {&avx512::f32_softmax_row__avx512, "f32_softmax_row__avx512", &avx512::f32_gelu__avx512, "f32_gelu__avx512",
             &avx512::f32_softmax_pre_row__avx512,
             &avx512::f32_layernorm_row__avx512, "f32_layernorm_row__avx512"};
  t.f32_dwconv = {&avx512::f32_dwconv_nhwc__avx512, "f32_dwconv_nhwc__avx512"};
  t.f32_maxpool = {&avx512::f32_maxpool_nhwc__avx512, "f32_maxpool_nhwc__avx512"};
  t.f32_winograd = {&avx512::f32_wino_input_f2k3__avx512, &avx512::f32_wino_output_f2k3__avx512,
                    "f32_wino_f2k3__avx512"};
  // the outlier split: the AVX-512 quantizer (one outlier per row; more take the AVX2 one inside
  // it) and float part (one weight row per outlier, 16 columns per step)
  KERNEL(t, qs8_quant_split, avx512::qs8_quant_split__avx512);
  KERNEL(t, qw_axpy, avx512::qw_axpy__avx512);
  return t;
}

#if !defined(LOWBIT_EMULATE_AVX512)
// The avx512vnni level with AMX-INT8 tiles for the int8 and 4-bit GEMMs of 16 rows and more (Intel
// Sapphire Rapids and later); fewer rows, and everything else, run the avx512vnni kernels.
// Not in SIMDe builds: SIMDe has no AMX.
KernelTable amx_level() {
  KernelTable t = avx512vnni_level();
  t.isa = Isa::kAmx;
  t.isa_name = "amx";
  KERNEL(t, qs8_gemm, amx::qs8_gemm_32x32c4__amx);
  t.qs8_gemm_biased = true;  // tdpbusd is u8 x s8, like vpdpbusd
  t.qs8_gemm_outliers = true;
  qs7_from_qs8(t);
  KERNEL(t, q4_gemm, amx::q4_gemm_16x16__amx);
  // int4 weights on the int8 lattice (what convert writes): one int8 tile GEMM over K instead
  // of a drain per group. Below 16 rows the VNNI GEMV (q4_gemm) reads the 4-bit codes.
  KERNEL(t, q4_gemm_lattice, amx::q4_gemm_lattice_32x32__amx);
  t.q4_gemm_lattice_min_rows = 16;
  t.q4_gemm_lattice_outliers = true;
  t.q4_gemm_lattice_biased = false;  // tdpbssd: s8 x s8
  // 1x4-block layers of enough blocks: tile products on rebuilt B tiles (the T16 form), whose cost
  // is per tile where the avx512vnni SELL-8 kernel's is per block. Measured at 4096 x 4096 (1 thread,
  // each layer alone; docs/kernels.md): from 9 rows at block densities from 18% (at 20%, 8 rows
  // 307 us SELL-8 vs 335 us T16, 10 rows 393 vs 339 us: from 9 rows SELL-8 takes 16-row tiles, at
  // 8 rows' cost of 16; at 16 rows 15% 296-304 vs 335-343 us, 20% 369-372 vs 353-356 us), above 16
  // rows from 10% (32 rows 10% 446-457 vs 450-452 us, 15% 594-607 vs 462-464 us)
  KERNEL(t, qs8_bspmm_t16, amx::qs8_bspmm_t16__amx);
  t.qs8_bspmm_t16_min_rows = 9;
  t.qs8_bspmm_t16_density_16 = 0.18;
  t.qs8_bspmm_t16_density_32 = 0.10;
  // the Attention op of a model that asks for bf16 (quantized models): tdpbf16ps
  t.bf16 = {&amx::bf16_gemm_32x32__amx, "bf16_gemm_32x32__amx", &amx::bf16_pack_a__avx512, &amx::bf16_pack_b__avx512,
            &amx::bf16_pack_bt__avx512, &amx::bf16_softmax__avx512, true};
  return t;
}
#endif
#endif

#if defined(LOWBIT_ARM64)
// No NEON fp32 GEMM, row kernels or outlier split yet: neondot pairs the scalar references
// with the CRC and sdot kernels.
KernelTable neondot_level() {
  KernelTable t = scalar_level();
  t.isa = Isa::kNeonDot;
  t.isa_name = "neondot";
  KERNEL(t, crc32c, armv8::crc32c__armv8crc);
  KERNEL(t, memread_sum, neon::memread_sum__neon);
  KERNEL(t, qs8_dotpeak, neon::qs8_dotpeak__neondot);
  KERNEL(t, qs8_gemm, neon::qs8_gemm_4x16c4__neondot);
  qs7_from_qs8(t);
  KERNEL(t, q4_gemm, neon::q4_gemm_4x16c8__neondot);
  KERNEL(t, f32_spmm, neon::f32_spmm_s8m4__neon);
  KERNEL(t, qs8_spmm, neon::qs8_spmm_k16m4__neondot);
  KERNEL(t, qs8_bspmm, neon::qs8_bspmm_s8c4__neondot);
  return t;
}
#endif

#undef KERNEL

std::vector<KernelTable> build_tables() {
  std::vector<KernelTable> t;  // best first
#if defined(LOWBIT_X86)
#if !defined(LOWBIT_EMULATE_AVX512)
  t.push_back(amx_level());
#endif
  t.push_back(avx512vnni_level());
  t.push_back(avx2_level());
#endif
#if defined(LOWBIT_ARM64)
  t.push_back(neondot_level());
#endif
  t.push_back(scalar_level());
  for (const KernelTable& k : t) check_complete(k);
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
    case Isa::kAmx: return !f.avx512_emulated && isa_supported(Isa::kAvx512Vnni) && f.amx_int8 && f.amx_bf16;
  }
  return false;
}

const KernelTable& kernels_for(const std::string& name) {
  static const char* known[] = {"scalar", "avx2", "avx512vnni", "amx", "neondot"};
  bool is_known = false;
  for (const char* k : known) is_known |= (name == k);
  if (!is_known)
    throw std::runtime_error("LOWBIT_ISA='" + name + "' is not an ISA; expected one of scalar, avx2, avx512vnni, amx, neondot");
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
