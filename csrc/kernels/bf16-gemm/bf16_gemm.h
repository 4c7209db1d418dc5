// bf16 GEMM: C[M,N] = A[M,K] . B[K,N] with A and B rounded to bfloat16 and the sums in fp32.
// What the Attention op of a quantized model runs its two products on (Q K^T and P V) where the
// table has a fast one (amx: tdpbf16ps); it has no weights, so nothing of it is stored in .qbin.
//
// Rounding to bf16 ("bf16_round", what AVX512-BF16's vcvtne2ps2bf16 does: checked against it
// over all 2^32 floats): the upper 16 bits of the fp32 value, rounded to nearest even on the
// lower 16, (u + 0x7FFF + ((u >> 16) & 1)) >> 16; a NaN stays a (quiet) NaN of its sign; a
// subnormal becomes a zero of its sign. Every ISA's packing writes the same bytes.
//
// Layouts (ISA-independent, built per call by the packing kernels below):
//   "bf16-k32" (A): row-major rows of Kp = bf16_kp(K) values, zero past K; the buffer holds
//     bf16_rows(M) rows (the kernels read whole 16-row tiles; rows past M are zero, never used).
//   "bf16-n16k2" (B): panels of 16 columns; panel p is Kp / 2 rows of 16 pairs, element (k, n)
//     at p * Kp * 16 + (k / 2) * 32 + (n % 16) * 2 + k % 2, zero past K and past N. One tile row
//     (64 bytes) is a k pair of 16 columns: the B operand of tdpbf16ps as it is.
//
// Definition (the reference, ref::bf16_gemm_1x16__scalar): acc = 0; for k in 0..K-1:
// acc = fma(float(a[m,k]), float(b[k,n]), acc); C[m,n] = acc. A product of two bf16 values is
// exact in fp32, so the reference rounds once per k. AMX adds its products in its own order
// and grouping, which Intel does not specify to the bit: its sums differ from the reference's
// by the rounding of fp32 accumulation (tests bound |C - ref| by K * 2^-23 * sum |a b|), and
// equal themselves for any thread split (every output is one tile's sequence of tdpbf16ps).
#pragma once
#include <cstdint>

#include "kernels/f32-vmath/f32_vmath.h"  // SoftmaxPre

namespace lowbit {

inline int64_t bf16_kp(int64_t K) { return (K + 31) / 32 * 32; }
inline int64_t bf16_rows(int64_t M) { return (M + 15) / 16 * 16; }
// Elements of a packed "bf16-n16k2" B of K x N, and of a "bf16-k32" A of M x K.
inline int64_t bf16_packed_b(int64_t K, int64_t N) { return (N + 15) / 16 * 16 * bf16_kp(K); }
inline int64_t bf16_packed_a(int64_t M, int64_t K) { return bf16_rows(M) * bf16_kp(K); }

inline uint16_t bf16_round(float x) {
  uint32_t u;
  __builtin_memcpy(&u, &x, 4);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // NaN: quiet, same sign
  if ((u & 0x7F800000u) == 0) return static_cast<uint16_t>((u >> 16) & 0x8000u);          // subnormal: signed zero
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}
inline float bf16_float(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float x;
  __builtin_memcpy(&x, &u, 4);
  return x;
}

struct Bf16GemmArgs {
  int64_t M, N, K;
  const uint16_t* A;   // "bf16-k32", bf16_rows(M) rows of bf16_kp(K)
  const uint16_t* Bp;  // "bf16-n16k2", 64-byte aligned
  float* C;            // row-major, row stride ldc (in floats)
  int64_t ldc;
  const float* row_scale = nullptr;  // if set: C[m, n] = sum * row_scale[m] (one rounding more)
};

// Computes rows [m0, m1) x columns [n0, n1) of C; m0 and n0 are multiples of 16, n1 is a
// multiple of 16 or N. Thread-safe, allocates nothing.
using Bf16GemmFn = void (*)(const Bf16GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1);
// X[M,K] (row stride ldx) -> "bf16-k32" A (all bf16_rows(M) rows written).
using Bf16PackAFn = void (*)(int64_t M, int64_t K, const float* X, int64_t ldx, uint16_t* A);
// Row-major B[K,N] (row stride ldb) -> "bf16-n16k2".
using Bf16PackBFn = void (*)(int64_t K, int64_t N, const float* B, int64_t ldb, uint16_t* Bp);
// B = Bt^T from row-major Bt[N,K] (row stride ldbt) -> "bf16-n16k2" (the Attention op's K^T).
using Bf16PackBtFn = void (*)(int64_t K, int64_t N, const float* Bt, int64_t ldbt, uint16_t* Bp);

// The attention's probabilities for P V, normalized after the product. Row r of x (row stride
// ldx, rows of n scores): t = pre(x) (SoftmaxPre as softmax_pre, row r's add at
// pre.add + r * add_ld; add_ld 0: one mask row for all), m = max t (0 if it is -inf),
// e = exp(t - m); row r of p (row stride np) gets bf16_round(e[i]) for i < n and 0 up to np,
// and inv[r] = 1 / sum e (fp32). The op then computes y = (P V) * inv, the softmax's
// normalization moved past the product (no pass and no rounding of its own). A NaN in t: the
// row of p all NaN and inv NaN (the softmax's NaN rows); all -inf: p 0, inv inf (NaN rows
// after the product, as the softmax's 0 / 0). exp and the sums' order are the ISA's
// (f32_vmath.h: within a few ulp of the reference). x is scratch: t may be left in it.
using Bf16SoftmaxFn = void (*)(float* x, int64_t ldx, int64_t rows, int64_t n, const SoftmaxPre& pre, int64_t add_ld,
                               uint16_t* p, int64_t np, float* inv);

// A table's bf16 family. `attention`: the Attention op of a model that asks for bf16 runs on it
// (set where it is faster than the fp32 path: amx); elsewhere that op keeps fp32.
struct Bf16GemmKernels {
  Bf16GemmFn gemm = nullptr;
  const char* name = nullptr;
  Bf16PackAFn pack_a = nullptr;
  Bf16PackBFn pack_b = nullptr;
  Bf16PackBtFn pack_bt = nullptr;
  Bf16SoftmaxFn softmax = nullptr;
  bool attention = false;
};

namespace ref {
void bf16_gemm_1x16__scalar(const Bf16GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1);
void bf16_pack_a__scalar(int64_t M, int64_t K, const float* X, int64_t ldx, uint16_t* A);
void bf16_pack_b__scalar(int64_t K, int64_t N, const float* B, int64_t ldb, uint16_t* Bp);
void bf16_pack_bt__scalar(int64_t K, int64_t N, const float* Bt, int64_t ldbt, uint16_t* Bp);
void bf16_softmax__scalar(float* x, int64_t ldx, int64_t rows, int64_t n, const SoftmaxPre& pre, int64_t add_ld,
                          uint16_t* p, int64_t np, float* inv);
}  // namespace ref
namespace amx {
void bf16_gemm_32x32__amx(const Bf16GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1);
void bf16_pack_a__avx512(int64_t M, int64_t K, const float* X, int64_t ldx, uint16_t* A);
void bf16_pack_b__avx512(int64_t K, int64_t N, const float* B, int64_t ldb, uint16_t* Bp);
void bf16_pack_bt__avx512(int64_t K, int64_t N, const float* Bt, int64_t ldbt, uint16_t* Bp);
void bf16_softmax__avx512(float* x, int64_t ldx, int64_t rows, int64_t n, const SoftmaxPre& pre, int64_t add_ld,
                          uint16_t* p, int64_t np, float* inv);
}  // namespace amx

}  // namespace lowbit
