// int8 sparse x dense matmuls with per-output-channel scales:
//  - unstructured ("csr"): the K16 layout (kernels/sparse/k16.h), 4-bit indices into chunks
//    of 16 activations, one shuffle per 8 columns x 4 slots;
//  - 1x4 blocks along K ("bsr"): the SELL-8 layout (kernels/sparse/sell.h) with bk = 4: one
//    block is one vpmaddubsw/vpdpbusd quad, one sdot lane.
//
// Activations are quantized per row by qs8-quant (s8 in [-127, 127]; biased to u8 = q + 128 for
// the tables whose qs8_spmm_biased is set: AVX-512 VNNI, whose vpdpbusd is u8 x s8).
// Result definition (scalar reference; every ISA matches it bit for bit, in any order):
//   acc = sum of A[m, k] * Wq[k, n] over the stored entries of column n         exact int32
//   y   = float(acc) * (a_scale[m] * scale[n]);  y = y + bias[n];  ReLU as (0 > y) ? 0 : y
// (GELU is applied by the caller on the finished rows).
// K * 127 * 127 < 2^31 holds for K <= kQs8MaxK, so acc is exact.
//
// Packed activation tiles "At" for the batched bsr path (optional, built by the table's qs8_bspmm_pack_a):
// rows in tiles of R (at_rows: 8, or 16 where the table's qs8_bspmm_tile_rows allows it); tile i,
// block b is 4R bytes at (i * Kp/4 + b) * 4R where bytes 4r..4r+3 are A[Ri + r, 4b .. 4b+3]
// (zero for rows past M). A block of a weight column then meets R rows in one vector: one
// maddubs/madd pair (AVX2), two sdot (NEON), one vpdpbusd ymm (R = 8) or zmm (R = 16, AVX-512)
// with the block's 4 weights broadcast.
//
// Staged output (tables with qs8_bspmm_unstage, the tile path only): given Yt, the kernel writes
// the finished value of row R*i + r, lane l = 8s + j (slice s, lane j) to Yt[(i * 8S + l) * R + r]
// instead of C (rows past M and unused lanes: unspecified), and qs8_bspmm_unstage then moves tile
// i's values to C[R*i + r, perm[l]]. A slice's columns come from anywhere in C (they are sorted by
// entry count), so writing C directly is one scalar store per value to a random column: 17% of an
// M = 16, 4096 x 4096 product at 80% 1x4 blocks. Staged, a lane's R rows are one vector store, and
// unstage writes C row by row through 16 x 16 (or 8 x 8) transposes.
#pragma once
#include <cstdint>

#include "kernels/f32-gemm/f32_gemm.h"  // Activation
#include "kernels/sparse/k16.h"
#include "kernels/sparse/sell.h"
#include "kernels/sparse/stream.h"
#include "kernels/sparse/t16.h"

namespace lowbit {

struct Qs8SpmmArgs {
  int64_t M;
  const int8_t* A;       // quantized rows; each row readable for round_up(K, 4) + 4 bytes (value 0 past K)
  int64_t lda;
  const float* a_scale;  // M
  const int8_t* At;      // bsr only: packed 8-row tiles (see above), or nullptr
  const SellMatrix* W;
  const float* bias;     // N or nullptr
  float* C;
  int64_t ldc;
  Activation act;        // kNone or kRelu
  int64_t at_rows = 8;   // rows per At tile: 8, or 16 when the table's qs8_bspmm_tile_rows is 16
  float* Yt = nullptr;   // staged output (see above), or nullptr: C
  // Biased tables (qs8_spmm_biased): 128 * (the sum of lane l's stored values) at l = 8s + j
  // (sell_lane_sums), the correction of u8 = q + 128; required there (tile and row paths).
  const int32_t* wsum = nullptr;
  StreamPrefetch prefetch = StreamPrefetch::kL1;  // the first rows' software prefetch (x86 kernels, row gathers)
};

// Rows [m0, m1) x slices [s0, s1); with At, m0 is a multiple of at_rows. Thread-safe on disjoint ranges.
using Qs8SpmmFn = void (*)(const Qs8SpmmArgs& a, int64_t m0, int64_t m1, int64_t s0, int64_t s1);

// One tile of staged output to C: C[r * ldc + n] = Yt[inv[n] * R + r] for r < rows (<= R, R = 8
// or 16) and n in [n0, n1); inv[n] is column n's lane (sell_inverse_perm). Yt and C start at the
// tile's first row. Thread-safe on disjoint column ranges.
using Qs8BspmmUnstageFn = void (*)(const float* Yt, int64_t R, int64_t rows, const uint32_t* inv, int64_t n0, int64_t n1,
                                   float* C, int64_t ldc);

// The 1x4-block product over the T16 form (kernels/sparse/t16.h; tables with qs8_bspmm_t16): the
// same result as qs8_bspmm (the definition above, bit for bit). Activations biased to u8 = q + 128,
// rows of lda bytes with lda a multiple of 64 and at least 64 * W->C (zero past K), readable for
// round_up(M, 16) rows (the tile unit reads whole 16-row tiles; rows past M are never written out).
// acc = (sum of u8 * w over the tile rows) - corr[n], modulo 2^32: exact.
struct Qs8BspmmT16Args {
  int64_t M;
  const uint8_t* A;
  int64_t lda;
  const float* a_scale;  // M
  const T16Matrix* W;
  const float* bias;     // N or nullptr
  float* C;
  int64_t ldc;
  Activation act;        // kNone or kRelu
};
// All M rows x column groups [g0, g1) (16 columns each). Thread-safe on disjoint ranges.
using Qs8BspmmT16Fn = void (*)(const Qs8BspmmT16Args& a, int64_t g0, int64_t g1);
inline int64_t qs8_bspmm_t16_lda(int64_t K) { return (K + 63) / 64 * 64; }

struct Qs8K16Args {
  int64_t M;
  const int8_t* A;       // quantized rows; each row readable for k16_lda(K) bytes (value 0 past K)
  int64_t lda;
  const float* a_scale;  // M
  const K16Matrix* W;
  const float* bias;     // N or nullptr
  float* C;
  int64_t ldc;
  Activation act;        // kNone or kRelu
  StreamPrefetch prefetch = StreamPrefetch::kL1;  // the first rows' software prefetch (x86 kernels)
};
// Rows [m0, m1) x column groups [g0, g1) (8 columns each). Thread-safe on disjoint ranges.
using Qs8K16Fn = void (*)(const Qs8K16Args& a, int64_t m0, int64_t m1, int64_t g0, int64_t g1);

inline int64_t qs8_spmm_lda(int64_t K) { return (K + 3) / 4 * 4 + 4; }
inline int64_t qs8_bspmm_at_bytes(int64_t M, int64_t K, int64_t R) { return (M + R - 1) / R * ((K + 3) / 4) * (4 * R); }
// Builds the R-row tiles (R = 8 or 16) from quantized rows (rows past M: zeros); every version
// writes the same bytes.
using Qs8BspmmPackFn = void (*)(int64_t M, int64_t K, const int8_t* A, int64_t lda, int64_t R, int8_t* At);

namespace ref {
void qs8_bspmm_pack_a__scalar(int64_t M, int64_t K, const int8_t* A, int64_t lda, int64_t R, int8_t* At);
void qs8_spmm_k16__scalar(const Qs8K16Args& a, int64_t m0, int64_t m1, int64_t g0, int64_t g1);
void qs8_bspmm_s8c4__scalar(const Qs8SpmmArgs& a, int64_t m0, int64_t m1, int64_t s0, int64_t s1);
void qs8_bspmm_unstage__scalar(const float* Yt, int64_t R, int64_t rows, const uint32_t* inv, int64_t n0, int64_t n1,
                               float* C, int64_t ldc);
void qs8_bspmm_t16__scalar(const Qs8BspmmT16Args& a, int64_t g0, int64_t g1);
}
namespace amx {
void qs8_bspmm_t16__amx(const Qs8BspmmT16Args& a, int64_t g0, int64_t g1);
}
namespace avx2 {
void qs8_spmm_k16m4__avx2(const Qs8K16Args& a, int64_t m0, int64_t m1, int64_t g0, int64_t g1);
void qs8_bspmm_s8c4__avx2(const Qs8SpmmArgs& a, int64_t m0, int64_t m1, int64_t s0, int64_t s1);
}
namespace avx512 {
void qs8_spmm_k16m4__avx512vnni(const Qs8K16Args& a, int64_t m0, int64_t m1, int64_t g0, int64_t g1);
void qs8_bspmm_s8c4__avx512vnni(const Qs8SpmmArgs& a, int64_t m0, int64_t m1, int64_t s0, int64_t s1);
void qs8_bspmm_unstage__avx512(const float* Yt, int64_t R, int64_t rows, const uint32_t* inv, int64_t n0, int64_t n1,
                               float* C, int64_t ldc);
void qs8_bspmm_pack_a__avx512(int64_t M, int64_t K, const int8_t* A, int64_t lda, int64_t R, int8_t* At);
}
namespace neon {
void qs8_spmm_k16m4__neondot(const Qs8K16Args& a, int64_t m0, int64_t m1, int64_t g0, int64_t g1);
void qs8_bspmm_s8c4__neondot(const Qs8SpmmArgs& a, int64_t m0, int64_t m1, int64_t s0, int64_t s1);
}

}  // namespace lowbit
