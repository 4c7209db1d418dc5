// Dense layers whose weights are stored quantized ("qs8-n16k4", "q4-g{G}-{sym,asym}-n16k8",
// "q4t-g{G}-n16k8"): activations are quantized per row on the fly, then the integer GEMM of
// the selected ISA runs over the thread pool, with bias, ReLU and GELU fused per thread block.
#pragma once
#include <cstdint>
#include <string>

#include "cpu/dispatch.h"

namespace lowbit {

struct QWeights {
  bool is_q4 = false;  // else qs8
  Q4Layout lay{Q4Kind::kAffine, false, 32};
  int64_t K = 0, N = 0;
  const uint8_t* W = nullptr;
  int64_t packed_bytes() const;
  int64_t kp() const;  // row length of the quantized activations
};

// True and fills `w` (layout only) when `enc` names a quantized weight encoding.
bool parse_qweight_encoding(const std::string& enc, QWeights& w);
// Bytes of scratch run_qdense needs for M rows.
size_t qdense_scratch_bytes(const QWeights& w, int64_t M);
// y[M,N] = act(x[M,K] . W + bias) with table t's kernels; threaded over the global pool
// when `threaded`. `scratch` holds qdense_scratch_bytes(w, M) bytes, 64-byte aligned.
void run_qdense(const KernelTable& t, const QWeights& w, const float* x, int64_t M, const float* bias,
                Activation act, float* y, void* scratch, bool threaded);

}  // namespace lowbit
