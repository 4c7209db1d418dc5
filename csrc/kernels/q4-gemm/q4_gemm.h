// 4-bit weight GEMM with group-wise scales along K:
//   C[m,n] = act( a_scale[m] * sum_g s[n,g] * sum_{k in g} A_q[m,k] * v(k,n)  + bias[n] )
// A_q: activations quantized per row by qs8-quant (s8, never biased here);
// v(k,n): the 4-bit code u decoded either affinely, v = u - z[n,g] (kind kAffine; symmetric
// weights store z = 8 implicitly), or through a 16-entry s8 table, v = T[u] (kind kTable:
// NF4 or a learned codebook).
//
// Packed layouts (the bytes stored in .qbin, ISA-independent). P = ceil(N/16) panels,
// Kg = round_up(K, G), NG = Kg / G, G in {32, 64, 128}:
//   "q4-g{G}-sym-n16k8" / "q4-g{G}-asym-n16k8" (kAffine):
//     [0, P*Kg*8)        codes: 64 bytes per (panel p, 8 consecutive k = k8): byte j*4 + i holds
//                        u(8*k8 + i, 16p+j) in its low nibble and u(8*k8 + 4 + i, 16p+j) in its high
//                        nibble (i = 0..3): the low nibbles are one vpdpbusd/sdot operand, the high
//                        nibbles the next. Padding codes are z (value 0).
//     then P*NG*16 f16   s[n,g] at ((p*NG + g)*16 + j)
//     then P*NG*16 u8    z[n,g] (asym only; sym means z = 8)
//   "q4t-g{G}-n16k8" (kTable):
//     [0, 64)            T[0..15] as s8 in [-127, 127], zero padded to 64 bytes
//     then codes and f16 scales as above (no zero points)
//
// Result definition (scalar reference; every ISA matches it bit for bit):
//   d_g = sum_{k in g} A_q[m,k] * v(k,n)   exact int32 (|d_g| < 2^31 for G <= 128)
//   f = 0;  for g = 0..NG-1:  f = fma(float(d_g), s[n,g], f)        (in this order)
//   y = f * a_scale[m];  y = y + bias[n];  y = act(y)
//
// Lattice form: the weights as int8 values w8(k,n) per column, without a scale per group, so
//   D = sum_k A_q[m,k] * w8(k,n)   exact int32 (|D| <= K * 127 * 128 < 2^31 for K <= 2^17)
//   y = float(D) * (a_scale[m] * step[n]);  y = y + bias[n];  y = act(y)   (the int8 GEMM's epilogue)
// with a multiple mul[n,g] per group (int16) and a shift S per layer (lat_shift):
//   S = 0, exact: w8 = mul * v(k,n), where every column's group scales are integer multiples of
//     one step, s[n,g] = mul[n,g] * step[n] (what convert writes for int4), and mul * v stays in
//     [-128, 127] for every code of the group. It equals the group-wise definition up to fp32
//     rounding (that one rounds once per group).
//   S >= 1, rounded (table codes, and affine codes off the exact lattice): w8 = (v * mul + 2^(S-1)) >> S (arithmetic), mul = sign(s) * y, y in [0, 255],
//     y[n,g] = round(|s[n,g]| / A[n] * Ymax) with A[n] the column's largest |s|, step[n] =
//     A[n] * 2^S / Ymax. S and Ymax are the layer's: from the largest positive and negative
//     v * sign(s) of its groups, the S in 1..8 whose largest Ymax keeps every w8 in s8 and
//     |v * mul| + 2^(S-1) <= 32767 and gives the most of min(Ymax, 2 * max|w8|) (S = 7, Ymax =
//     254 for convert's tables within +-64; S = 4, Ymax = 254 for symmetric int4). That is the
//     group-wise weights requantized to int8 per column: within step / 2 (w8's rounding) plus
//     |v| * step / 2^(S+1) (y's) of v * s. The two forms differ by about that much, not only by
//     fp32 rounding. The outlier split's float part keeps the group-wise weights (qw_axpy's).
// The rounded form changes the weights, so models take it only for layers that allow it (the
// Dense attribute `requantize`, set by convert for the weights it quantizes itself; imported and
// lowbit.compress weights run as stored). A table's q4_gemm_lattice kernel runs the lattice
// form, from q4_gemm_lattice_min_rows rows of a call's M
// (so a row's bits never depend on how the rows were split over threads); fewer rows and
// tables without such a kernel run q4_gemm.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/f32-gemm/f32_gemm.h"  // Activation

namespace lowbit {

enum class Q4Kind : int32_t { kAffine = 0, kTable = 1 };

struct Q4Layout {
  Q4Kind kind;
  bool asym;        // kAffine only
  int64_t group;    // 32, 64 or 128
};

struct Q4GemmArgs {
  int64_t M, N, K;
  Q4Layout lay;
  // quantized rows, Kg bytes valid each (zeros past K), row stride lda; biased (u8 = q + 128)
  // only for a lattice kernel whose table sets q4_gemm_lattice_biased
  const int8_t* A;
  int64_t lda;
  const float* a_scale;   // M
  const int32_t* gsum;    // M x NG sums of A_q per group (row stride NG), for the affine zero points
  const uint8_t* W;       // packed as above
  const float* bias;      // N or nullptr
  float* C;
  int64_t ldc;
  Activation act;
  const float* lat_step = nullptr;   // lattice form only: step[n] at 16p + j (P*16)
  const int16_t* lat_mul = nullptr;  // lattice form only: mul[n,g] at (p*NG + g)*16 + j, as the scales
  int32_t lat_shift = 0;             // lattice form only: 0 exact, S >= 1 rounded
  // The outlier split's float part (qs8_quant.h, qw_axpy.h), for the lattice kernels whose
  // table sets q4_gemm_lattice_outliers: `outliers` entries per row (row m at m * outliers),
  // each with idx >= 0 adding y = fma(val, W[idx, n], y) after the bias, in order, before
  // ReLU, W[k, n] = float(u - z) * s[n, g] as qw_axpy reads it (= step[n] * mul * (u - z),
  // exact either way in the exact lattice form; the rounded form adds these group-wise weights
  // too): the bits of the GEMM without ReLU, then qw_axpy, then ReLU. 0: none.
  int64_t outliers = 0;
  const int32_t* out_idx = nullptr;
  const float* out_val = nullptr;
};

using Q4GemmFn = void (*)(const Q4GemmArgs& a, int64_t m0, int64_t m1, int64_t n0, int64_t n1);

inline int64_t q4_kg(int64_t K, int64_t G) { return (K + G - 1) / G * G; }
// Byte offsets of the parts of a packed q4 blob, and its total size.
struct Q4Parts {
  int64_t table, codes, scales, zeros, total;
};
inline Q4Parts q4_parts(int64_t K, int64_t N, const Q4Layout& l) {
  const int64_t P = (N + 15) / 16, Kg = q4_kg(K, l.group), NG = Kg / l.group;
  Q4Parts r;
  r.table = 0;
  r.codes = l.kind == Q4Kind::kTable ? 64 : 0;
  r.scales = r.codes + P * Kg * 8;
  r.zeros = r.scales + P * NG * 16 * 2;
  r.total = r.zeros + (l.kind == Q4Kind::kAffine && l.asym ? P * NG * 16 : 0);
  return r;
}
// Packs codes U[K,N] (row-major u8 in [0,15]), f16 scale bits S[NG,N], zero points Z[NG,N]
// (asym only, else nullptr) and table T[16] (kTable only, else nullptr).
void q4_gemm_pack(int64_t K, int64_t N, const Q4Layout& l, const uint8_t* U, const uint16_t* S,
                  const uint8_t* Z, const int8_t* T, uint8_t* out);

// The lattice form of W (see above): fills step[P*16], mul[P*NG*16] (the scales' layout) and
// *shift. The exact form where the affine scales allow it (per column, step is the largest value
// of which every nonzero f16 scale is an integer multiple, so mul is the smallest; all-zero
// columns get step 0; multiples up to 16 with every mul * v in s8), else, when `rounded`, the
// rounded form. False otherwise, and for an infinite or NaN scale.
bool q4_lattice(int64_t K, int64_t N, const Q4Layout& l, const uint8_t* W, float* step, int16_t* mul, int32_t* shift,
                bool rounded);

namespace ref {
void q4_gemm_1x16__scalar(const Q4GemmArgs& a, int64_t m0, int64_t m1, int64_t n0, int64_t n1);
void q4_gemm_lattice_1x16__scalar(const Q4GemmArgs& a, int64_t m0, int64_t m1, int64_t n0, int64_t n1);
}
namespace avx2 {
void q4_gemm_6x16c8__avx2(const Q4GemmArgs& a, int64_t m0, int64_t m1, int64_t n0, int64_t n1);
}
namespace avx512 {
void q4_gemm_8x32c8__avx512vnni(const Q4GemmArgs& a, int64_t m0, int64_t m1, int64_t n0, int64_t n1);
// The same with table codes decoded by vpermb (AVX512_VBMI; the dispatch picks it where CPUID
// has VBMI): nf4 / codebook weights at 1-31 rows, 10-13% faster on a Zen 4 at M = 1
void q4_gemm_8x32c8__avx512vbmi(const Q4GemmArgs& a, int64_t m0, int64_t m1, int64_t n0, int64_t n1);
// The lattice form: 4 panels at a time decoded into the qs8-n16k4 layout once per call, then the
// int8 VNNI GEMM on them (activations biased: the table's q4_gemm_lattice_biased).
void q4_gemm_lattice_8x32c4__avx512vnni(const Q4GemmArgs& a, int64_t m0, int64_t m1, int64_t n0, int64_t n1);
}
namespace amx {  // AMX-INT8 tiles for 16 rows and more (K up to 4096); the rest goes to the AVX-512 VNNI kernel
void q4_gemm_16x16__amx(const Q4GemmArgs& a, int64_t m0, int64_t m1, int64_t n0, int64_t n1);
// The lattice form: weights decoded to int8 once per panel pair and K chunk, then plain tdpbssd
// over K in 32 x 32 blocks (no per-group drain); any rows (a tail through a shorter tile).
void q4_gemm_lattice_32x32__amx(const Q4GemmArgs& a, int64_t m0, int64_t m1, int64_t n0, int64_t n1);
}
namespace neon {
void q4_gemm_4x16c8__neondot(const Q4GemmArgs& a, int64_t m0, int64_t m1, int64_t n0, int64_t n1);
}

}  // namespace lowbit
