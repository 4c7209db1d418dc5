// The "T16" form of int8 1x4-block weights: the B tiles of an AMX tile product, stored with
// their zeros left out. Derived from a SELL-8 blob with bk = 4 (sell.h) on tables whose kernel
// reads it (KernelTable::qs8_bspmm_t16), by the op before its first call that takes it; not a
// file encoding.
//
// An AMX int8 tile product takes B as 16 k-quads x 16 columns x 4 s8 bytes (1 KB): a 16 x 16
// grid of 1x4 blocks along K, which is exactly the block of a "bsr1x4" weight. Column group g
// (columns 16g .. 16g + 15) and K chunk c (k-quads 16c .. 16c + 15, k in [64c, 64c + 64)) is
// one tile; its quad row r has a 16-bit mask (bit l: column 16g + l has a nonzero block at quad
// 16c + r) and that row's blocks follow in column order. Tile t = g * C + c (t16_tile), with
// C = ceil(K / 64). A kernel rebuilds the dense tile a row at a time with one masked expand
// (vpexpandd) and runs the tile product on it: the tile unit does the multiplies, zeros included,
// and the vector unit only places the stored blocks: its cost is per tile where SELL-8's is per
// block. At 80% 1x4-block sparsity, 4096 x 4096 and 16 rows that is ~0.39 ns per block against ~0.48
// in the SELL-8 16-row tile loop, and up to 32 rows share each rebuilt tile; at 15% density and 16
// rows SELL-8 is faster (KernelTable::qs8_bspmm_t16_density_16).
//
//   mask   u16[G * C * 16]  per tile, per quad row
//   start  u32[G * C + 1]   first block of each tile (in blocks of 4 bytes)
//   val    s8[4 * nblocks + 64]  the blocks (4 bytes each, k order within the block), then
//                           64 zero bytes (a full-vector read at the last row stays inside)
//   scale  f32[16 G]  per column (0 past N);  corr  i32[16 G]  128 * the column's value sum
//   modulo 2^32 (the correction of activations biased to u8 = q + 128; 0 past N)
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/sparse/sell.h"

namespace lowbit {

struct T16Matrix {
  int64_t K = 0, N = 0, G = 0, C = 0, nblocks = 0;
  std::vector<uint16_t> mask;
  std::vector<uint32_t> start;
  std::vector<int8_t> val;
  std::vector<float> scale;
  std::vector<int32_t> corr;
  bool empty() const { return G == 0; }
};

// The number of the tile of column group g and K chunk c. (Numbered chunk by chunk within quads of
// 4 groups, the order in which a 16-row call reads them, a 16-row call measured no faster and a
// 32-row one 5% slower.)
inline int64_t t16_tile(const T16Matrix& w, int64_t g, int64_t c) { return g * w.C + c; }

// Builds the T16 form of a validated s8 SELL-8 blob with bk = 4 (its scales included). Returns
// false (and leaves `out` empty) unless t16_buildable: the form keeps one block per (column,
// quad) and counts blocks in 32 bits.
bool t16_from_sell(const SellMatrix& w, T16Matrix* out);
// True when t16_from_sell will build the form: every lane's nonzero blocks have strictly
// ascending indices (as the packer writes them; so no block twice) and there are fewer than
// 2^32 of them. One pass over the indices and values, without building anything.
bool t16_buildable(const SellMatrix& w);

}  // namespace lowbit
