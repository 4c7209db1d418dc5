// What the AMX kernel translation units share (compiled with -mamx-tile -mamx-int8 and the
// AVX-512 flags): the tile configuration, the pending epilogue of a finished block, an int8
// weight row for the outlier split, and the column mask of a 16-lane epilogue.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace lowbit {
namespace {

// ldtilecfg with palette 1: tile t (t < n) has rows[t] rows of colsb[t] bytes; the rest unused.
inline void LoadTileConfig(int n, const uint16_t* colsb, const uint8_t* rows) {
  struct alignas(64) {
    uint8_t palette_id, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
  } c;
  std::memset(&c, 0, sizeof c);
  c.palette_id = 1;
  for (int t = 0; t < n; ++t) {
    c.colsb[t] = colsb[t];
    c.rows[t] = rows[t];
  }
  _tile_loadconfig(&c);
}

// Tile instructions with the tile numbers as template arguments, for kernels that pick tiles in
// templates (GCC's _tile_* intrinsics paste their tile argument into the instruction text, so they
// take literals only). The memory clobbers keep stores before the tile loads that read them, and
// the tile stores before the loads that read them.
template <int T>
inline void TileZero() {
  asm volatile("tilezero %%tmm%c0" ::"i"(T));
}
template <int T>
inline void TileLoad(const void* p, int64_t stride) {
  asm volatile("tileloadd (%0,%1,1), %%tmm%c2" ::"r"(p), "r"(stride), "i"(T) : "memory");
}
template <int T>
inline void TileStore(void* p, int64_t stride) {
  asm volatile("tilestored %%tmm%c2, (%0,%1,1)" ::"r"(p), "r"(stride), "i"(T) : "memory");
}
template <int C, int A, int B>
inline void TileDpbusd() {  // u8 x s8
  asm volatile("tdpbusd %%tmm%c2, %%tmm%c1, %%tmm%c0" ::"i"(C), "i"(A), "i"(B));
}
template <int C, int A, int B>
inline void TileDpbssd() {  // s8 x s8
  asm volatile("tdpbssd %%tmm%c2, %%tmm%c1, %%tmm%c0" ::"i"(C), "i"(A), "i"(B));
}

// Every tile 16 rows x 64 bytes (the int8 and bf16 GEMMs' configuration).
inline void LoadTileConfigFull() {
  const uint16_t colsb[8] = {64, 64, 64, 64, 64, 64, 64, 64};
  const uint8_t rows[8] = {16, 16, 16, 16, 16, 16, 16, 16};
  LoadTileConfig(8, colsb, rows);
}

// float(Wq[k, n]) * ws[n] for the 16 columns of a "qs8-n16k4" k-quad line: Qs8WeightRow
// (kernels/qw-axpy/avx512_decode.h) with a variable shift instead of its 4-way branch on
// k % 4 (the AMX epilogues take a different k per row, where that branch mispredicts). Same
// values: byte k % 4 of each 4-byte group moved to the top, sign-extended, converted, scaled.
inline __m512 Qs8WeightRowAnyK(const uint8_t* line, int64_t k, __m512 ws) {
  const __m512i top = _mm512_sllv_epi32(_mm512_loadu_si512(line), _mm512_set1_epi32(static_cast<int>(24 - 8 * (k & 3))));
  return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srai_epi32(top, 24)), ws);
}

// A finished 32 x 32 block's sums waiting for their epilogue, which the next block runs a few rows
// at a time between its tile products (the tile unit works through its queue meanwhile; an
// epilogue run right after the tile stores left it idle). Up to 4 pieces of `rows` x 16 int32
// (row stride 16): add() gives the tile store its slot, drain() hands up to `budget` rows
// (64: all) to the kernel's epilogue, finish(piece, sums of the first row, first row in the piece, row count), in piece
// order. Piece: what that epilogue needs to place a piece (rows, columns, weights).
template <class Piece>
struct PendingEpilogue {
  alignas(64) int32_t acc[4][256];
  Piece piece[4];
  int rows = 16, n = 0, done = 0;  // rows per piece; pieces; rows finished

  int left() const { return rows * n - done; }
  // rows per K step for the pending rows to finish within `steps` steps, in whole pieces: each
  // finish call sets up its columns (scales, column sums, bias), and pieces cut over two steps
  // paid that twice (int8 128x384x1536 on AMX: 7-8% faster in whole pieces, 128x768x3072 3%)
  int per_step(int64_t steps) const {
    if (steps <= 0) return 0;
    const int p = int((left() + steps - 1) / steps);
    return (p + rows - 1) / rows * rows;
  }
  // a new block of pieces of r rows (the previous one must be finished)
  void reset(int r) {
    rows = r;
    n = done = 0;
  }
  int32_t* add(const Piece& pc) {
    piece[n] = pc;
    return acc[n++];
  }
  template <class F>
  void drain(int budget, F&& finish) {
    while (budget > 0 && done < rows * n) {
      const int s = done / rows, r = done % rows, take = rows - r < budget ? rows - r : budget;
      finish(piece[s], acc[s] + 16 * r, r, take);
      done += take;
      budget -= take;
    }
  }
};

// Lanes [0, n) of 16 (none for n <= 0).
inline __mmask16 TailMask16(int64_t n) {
  if (n <= 0) return 0;
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}

}  // namespace
}  // namespace lowbit
