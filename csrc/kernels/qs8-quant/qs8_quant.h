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
