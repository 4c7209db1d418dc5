// Dense layers whose weights are stored quantized ("qs8-n16k4", "q4-g{G}-{sym,asym}-n16k8",
// "q4t-g{G}-n16k8"): activations are quantized per row on the fly (optionally with the
// per-row outlier split), or with a static scale and zero point (imported QDQ models); then
// the integer GEMM of the selected ISA runs over the thread pool, with bias, ReLU and GELU
// fused per thread block.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "cpu/dispatch.h"

namespace lowbit {

struct QWeights {
  bool is_q4 = false;  // else qs8
  bool w7 = false;     // qs8 layout with codes in [-63, 63] ("qs7-n16k4"): runs on the level's qs7_gemm
  Q4Layout lay{Q4Kind::kAffine, false, 32};
  int64_t K = 0, N = 0;
  const uint8_t* W = nullptr;
  // 4-bit weights in the lattice form (q4_gemm.h: exact for affine codes on the int8 lattice,
  // else requantized per column), for a table with a q4_gemm_lattice kernel: step per column,
  // multiple per group and the shift (empty: the group-wise form only)
  std::vector<float> lat_step;
  std::vector<int16_t> lat_mul;
  int32_t lat_shift = 0;
  int64_t packed_bytes() const;
  int64_t kp() const;  // row length of the quantized activations
};

// How the activations are quantized, and what happens to the result (attrs of Dense).
struct QDenseOpts {
  // dynamic per-row scales; the `outliers` largest |x| of each row stay float (qs8_quant_split)
  int64_t outliers = 0;
  // static: q = saturate(rint(x / x_scale) + x_zp) in [-128, 127] (ONNX QuantizeLinear); qs8 only.
  // The bias passed to run_qdense must already hold the zero-point term (static_x_bias).
  bool x_static = false;
  float x_scale = 1.0f;
  int32_t x_zp = 0;
  // output rounded to an int8 grid and back, after the activation (a QuantizeLinear ->
  // DequantizeLinear pair after the layer, as onnxruntime's QLinearMatMul produces int8)
  bool y_requant = false;
  float y_scale = 1.0f;
  int32_t y_zp = 0;
};

// True and fills `w` (layout only) when `enc` names a quantized weight encoding.
bool parse_qweight_encoding(const std::string& enc, QWeights& w);
// Empty when every int8 weight code of `w` (qs8/qs7 layout, W set) is allowed for its encoding
// ([-127, 127], or [-63, 63] for qs7), else a message naming the first offending code.
std::string check_qweight_codes(const QWeights& w);
// bias[n] - x_scale * x_zp * sum_k W[k, n] (from the packed column sums; qs8 only): the
// static zero point moved out of the integer sums. `bias` may be null (zero).
std::vector<float> static_x_bias(const QWeights& w, const float* bias, float x_scale, int32_t x_zp);
// Fills w.lat_step / w.lat_mul when table t runs the lattice form in models
// (q4_gemm_lattice_min_rows > 0), or `force`, and w's 4-bit weights are on the lattice;
// returns whether they are.
// `rounded`: the rounded form is allowed where the exact one does not exist (q4_gemm.h).
bool prepare_q4_lattice(const KernelTable& t, QWeights& w, bool rounded, bool force = false);
// The 4-bit GEMM kernel(s) table t runs w with, for Model.layers().
std::string q4_kernel_name(const KernelTable& t, const QWeights& w);
// Bytes of scratch run_qdense needs for M rows.
size_t qdense_scratch_bytes(const QWeights& w, int64_t M, const QDenseOpts& o);
// y[M,N] = act(x[M,K] . W + bias) with table t's kernels; threaded over the global pool
// when `threaded`. `scratch` holds qdense_scratch_bytes(w, M, o) bytes, 64-byte aligned.
// quantized: the scratch already holds x's quantized rows (an earlier call with the same x, K
// padding, group and options), so the quantizing step is skipped.
void run_qdense(const KernelTable& t, const QWeights& w, const float* x, int64_t M, const float* bias,
                Activation act, float* y, void* scratch, bool threaded, const QDenseOpts& o = QDenseOpts(),
                bool quantized = false);
// The key of what run_qdense writes to its scratch from x (Op::shared_scratch_key).
std::string qdense_scratch_key(const KernelTable& t, const QWeights& w, const QDenseOpts& o);

}  // namespace lowbit
