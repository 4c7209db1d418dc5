// The dispatch table: an ordered list of implementations, best first, and the one
// selected once at import (or forced with LOWBIT_ISA). Kernels are called only
// through the selected table, so no path runs an instruction the CPU lacks.
#pragma once
#include <string>
#include <vector>

#include "kernels/bf16-gemm/bf16_gemm.h"
#include "kernels/crc32c/crc32c.h"
#include "kernels/f32-dwconv/f32_dwconv.h"
#include "kernels/f32-maxpool/f32_maxpool.h"
#include "kernels/f32-winograd/f32_winograd.h"
#include "kernels/f32-gemm/f32_gemm.h"
#include "kernels/f32-spmm/f32_spmm.h"
#include "kernels/f32-vmath/f32_vmath.h"
#include "kernels/memread/memread.h"
#include "kernels/q4-gemm/q4_gemm.h"
#include "kernels/qs8-dwconv/qs8_dwconv.h"
#include "kernels/qs8-dotpeak/qs8_dotpeak.h"
#include "kernels/qs8-gemm/qs8_gemm.h"
#include "kernels/qs8-quant/qs8_quant.h"
#include "kernels/qs8-requant/qs8_requant.h"
#include "kernels/qs7-gemm/qs7_gemm.h"
#include "kernels/qs8-spmm/qs8_spmm.h"
#include "kernels/qw-axpy/qw_axpy.h"

namespace lowbit {

enum class Isa { kScalar = 0, kAvx2 = 1, kAvx512Vnni = 2, kNeonDot = 3, kAmx = 4 };

// One entry per kernel family: the function and its name (what Model.layers(),
// cpu_info()["kernels"] and the profile report). Each level's table is filled field by
// field, by name, in dispatch.cc (one function per level); a field left empty fails the
// completeness check there when the tables are built, at import.
struct KernelTable {
  Isa isa = Isa::kScalar;
  const char* isa_name = nullptr;
  F32GemmFn f32_gemm = nullptr;
  const char* f32_gemm_name = nullptr;
  bool f32_gemm_implicit_a = false;  // f32_gemm reads an implicit (im2col-free) A (see f32_gemm.h)
  // Convolutions whose kernel row of taps (kw * C floats, one implicit-A segment) is shorter
  // keep im2col: below it the GEMM's per-segment costs beat the gather (measured per table).
  int64_t f32_conv_implicit_min_segment = 256;
  F32PackBtFn f32_pack_bt = nullptr;  // B = Bt^T packed into "f32-n16" (the Attention op's K^T)
  const char* f32_pack_bt_name = nullptr;
  // bf16 GEMM and its packings (bf16_gemm.h): bf16.attention says the Attention op of a model
  // that asks for bf16 runs on it here; elsewhere that op keeps its fp32 path
  Bf16GemmKernels bf16{};
  Crc32cFn crc32c = nullptr;
  const char* crc32c_name = nullptr;
  // Probes, run only by the benches: a plain one-stream read (memread.h) and the int8 MAC rate
  // of the instruction the level's int8 GEMV runs on (qs8_dotpeak.h), the bounds a layer's
  // time is compared with.
  MemreadSumFn memread_sum = nullptr;
  const char* memread_sum_name = nullptr;
  Qs8DotPeakFn qs8_dotpeak = nullptr;
  const char* qs8_dotpeak_name = nullptr;
  Qs8QuantFn qs8_quant = nullptr;
  const char* qs8_quant_name = nullptr;
  Qs8GemmFn qs8_gemm = nullptr;
  const char* qs8_gemm_name = nullptr;
  bool qs8_gemm_biased = false;  // qs8_gemm wants its activations quantized with bias128 (vpdpbusd is u8 x s8)
  // qs8_gemm applies Qs8GemmArgs' outliers in its epilogue, while the tile is in registers (else
  // run_qdense adds them with qw_axpy after the GEMM; the same bits either way)
  bool qs8_gemm_outliers = false;
  // The GEMM of 7-bit int8 weights ("qs7-n16k4", codes in [-64, 64]): the AVX2 level has its
  // own (u8 x s7 never saturates vpmaddubsw), the others run their qs8_gemm, which gives the
  // same bits.
  Qs8GemmFn qs7_gemm = nullptr;
  const char* qs7_gemm_name = nullptr;
  bool qs7_gemm_biased = false;  // qs7_gemm wants its activations quantized with bias128
  Q4GemmFn q4_gemm = nullptr;
  const char* q4_gemm_name = nullptr;
  // The lattice form of 4-bit weights (q4_gemm.h): its kernel, and from how many rows of a
  // call's M models take it (0: never; the scalar table keeps the reference here for tests).
  Q4GemmFn q4_gemm_lattice = nullptr;
  const char* q4_gemm_lattice_name = nullptr;
  int64_t q4_gemm_lattice_min_rows = 0;
  bool q4_gemm_lattice_outliers = false;  // it adds the outlier split's float part in its epilogue
  bool q4_gemm_lattice_biased = false;    // it wants its activations quantized with bias128
  // int8 CNN path (static activation scales): requantization of a GEMM block, direct depthwise
  Qs8RequantFn qs8_requant = nullptr;
  const char* qs8_requant_name = nullptr;
  Qs8DwConvFn qs8_dwconv = nullptr;
  const char* qs8_dwconv_name = nullptr;
  // sparse (SELL-8) matmuls: fp32 unstructured, int8 unstructured, int8 1x4 blocks along K
  F32SpmmFn f32_spmm = nullptr;
  const char* f32_spmm_name = nullptr;
  Qs8K16Fn qs8_spmm = nullptr;
  const char* qs8_spmm_name = nullptr;
  Qs8SpmmFn qs8_bspmm = nullptr;
  const char* qs8_bspmm_name = nullptr;
  bool qs8_spmm_biased = false;  // both int8 sparse kernels want activations quantized with bias128 (vpdpbusd)
  int64_t qs8_bspmm_tile_rows = 8;  // largest At tile height qs8_bspmm takes (8, or 16 with zmm)
  int64_t qs8_bspmm_tile_min_rows = 4;  // from this many rows qs8_bspmm gets packed tiles (At), below: per-row gathers
  // where the three sparse kernels' row paths prefetch their weight streams (kernels/sparse/stream.h),
  // chosen per CPU from measurements (dispatch.cc)
  StreamPrefetch f32_spmm_prefetch = StreamPrefetch::kL1;
  StreamPrefetch qs8_spmm_prefetch = StreamPrefetch::kL1;
  StreamPrefetch qs8_bspmm_prefetch = StreamPrefetch::kL1;
  // set where qs8_bspmm's tile path writes staged output (Yt) and this moves it to C; nullptr:
  // the tile path writes C itself (qs8_spmm.h)
  Qs8BspmmUnstageFn qs8_bspmm_unstage = nullptr;
  const char* qs8_bspmm_unstage_name = nullptr;
  Qs8BspmmPackFn qs8_bspmm_pack_a = nullptr;  // the activation tiles (At) of qs8_bspmm
  const char* qs8_bspmm_pack_a_name = nullptr;
  // set where 1x4-block layers also get the T16 form at load (kernels/sparse/t16.h) and run this on
  // it (the same bits as qs8_bspmm): calls of qs8_bspmm_t16_min_rows rows and more where the
  // layer's block density (stored blocks / block slots of its 16 x 64 tiles) is at least
  // density_16, calls of more than 16 rows where it is at least density_32 (its cost is per tile,
  // qs8_bspmm's per block); sparser layers keep qs8_bspmm and get no T16 form. The scalar table keeps
  // the reference here for tests, with min_rows 0: never taken by models
  Qs8BspmmT16Fn qs8_bspmm_t16 = nullptr;
  const char* qs8_bspmm_t16_name = nullptr;
  int64_t qs8_bspmm_t16_min_rows = 0;
  double qs8_bspmm_t16_density_16 = 1.0;
  double qs8_bspmm_t16_density_32 = 1.0;
  // fp32 row kernels (softmax, GELU) and the direct fp32 depthwise convolution
  VMathKernels vmath{};
  F32DwConvKernel f32_dwconv{};
  F32MaxPoolKernel f32_maxpool{};
  F32WinogradKernels f32_winograd{};  // the Conv op's Winograd F(2x2, 3x3) tile transforms
  // The outlier split of quantized Dense layers (`outliers`): the activation quantizer that
  // leaves a row's largest values out, and the float part they add back (y += v * W[k, :]).
  Qs8QuantSplitFn qs8_quant_split = nullptr;
  const char* qs8_quant_split_name = nullptr;
  QwAxpyFn qw_axpy = nullptr;
  const char* qw_axpy_name = nullptr;
};

// All tables compiled into this build, best first (whether or not this CPU runs them).
const std::vector<KernelTable>& all_kernel_tables();
// True when this CPU and OS can run the table's ISA.
bool isa_supported(Isa isa);
// Selects the table once: the best supported one, or `forced` (an ISA name).
// Throws std::runtime_error naming the choice and what this CPU supports.
void select_kernels(const std::string& forced);
// The selected table (select_kernels must have run; the module does it at import).
const KernelTable& kernels();
// A table by ISA name for tests that compare paths in one process; throws if the
// name is unknown or the CPU cannot run it.
const KernelTable& kernels_for(const std::string& isa_name);

}  // namespace lowbit
