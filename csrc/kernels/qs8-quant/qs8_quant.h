// Dynamic int8 quantization of activation rows, the input side of every integer GEMM.
//
// Definition (the scalar reference is the truth; every ISA reproduces it bit for bit):
//   amax  = max_k |x[k]|, NaN ignored;  scale = amax / 127;  inv = amax > 0 ? 127 / amax : 0
//   v     = x[k] * inv;  v = (v > -127 ? v : -127);  v = (v < 127 ? v : 127)   (NaN -> -127)
//   q[k]  = round-half-to-even(v)  in [-127, 127]   (never -128: keeps maddubs pairs unsaturated)
//   columns [K, Kp) are 0; with `bias128` the stored byte is q + 128 (u8 for vpdpbusd).
//   gsum[g] = sum of q over group g (columns [g*group, (g+1)*group) ∩ [0, K)), when gsum != nullptr.
#pragma once
#include <cstdint>

namespace lowbit {

struct Qs8QuantArgs {
  const float* x;   // rows x K, row stride ldx floats
  int64_t ldx;
  int64_t K, Kp;    // Kp >= K: padded row length of q
  int8_t* q;        // rows x Kp bytes, row stride ldq
  int64_t ldq;
  float* scale;     // one per row
  int32_t* gsum;    // rows x ngroups (row stride ngroups), or nullptr
  int64_t group;    // group length along K for gsum (ignored when gsum is nullptr)
  int64_t ngroups;
  bool bias128;
};

// Quantizes rows [r0, r1). Thread-safe on disjoint row ranges.
using Qs8QuantFn = void (*)(const Qs8QuantArgs& a, int64_t r0, int64_t r1);

// Outlier split (the per-row form of LLM.int8()'s mixed-precision decomposition, Dettmers et
// al. 2022): the `outliers` (n) largest-magnitude values of each row stay in float and are
// left out of the row's int8 range. Definition (scalar reference; every ISA gives the same bits):
//   for j = 0..n-1: m = max |x[k]| over k not chosen yet, NaN ignored; if m > 0 (inf counts):
//     idx[j] = the lowest such k with |x[k]| = m, val[j] = x[k]; else idx[j] = -1, val[j] = 0
//   then exactly qs8_quant over the row with the chosen k left out of amax, and q[chosen k] = 0
//   (so gsum does not count them). idx/val: `n` entries per row, row r at r * n.
// The caller adds val[j] * W[idx[j], :] (in float, j in order) to the GEMM's result.
struct Qs8SplitOut {
  int64_t outliers;  // n, 0..kQs8MaxOutliers
  int32_t* idx;      // rows x n
  float* val;        // rows x n
};
constexpr int64_t kQs8MaxOutliers = 8;
using Qs8QuantSplitFn = void (*)(const Qs8QuantArgs& a, const Qs8SplitOut& o, int64_t r0, int64_t r1);
namespace ref {
void qs8_quant_split__scalar(const Qs8QuantArgs& a, const Qs8SplitOut& o, int64_t r0, int64_t r1);
}
namespace avx2 {
void qs8_quant_split__avx2(const Qs8QuantArgs& a, const Qs8SplitOut& o, int64_t r0, int64_t r1);
}
namespace avx512 {  // one outlier per row; more go to the AVX2 kernel (same bits)
void qs8_quant_split__avx512(const Qs8QuantArgs& a, const Qs8SplitOut& o, int64_t r0, int64_t r1);
}

namespace ref {
void qs8_quant__scalar(const Qs8QuantArgs& a, int64_t r0, int64_t r1);
}
namespace avx2 {
void qs8_quant__avx2(const Qs8QuantArgs& a, int64_t r0, int64_t r1);
}
namespace avx512 {
void qs8_quant__avx512(const Qs8QuantArgs& a, int64_t r0, int64_t r1);
}

}  // namespace lowbit
