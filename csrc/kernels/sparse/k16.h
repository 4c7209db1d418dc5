// The "K16" int8 sparse layout: unstructured sparsity with 4-bit column indices. Each group
// of 8 output columns is a list of cells; a cell covers one chunk of 16 consecutive k and
// holds, for each of the 8 columns, 4 slots (shuffle index 0..15 into the chunk, or 0x80 for
// an empty slot, and the s8 weight). A column with more than 4 nonzeros in a chunk continues
// in the next cell of the same chunk. So one cell is one 32-byte vpshufb of the chunk's 16
// activations (empty slots read 0), one vpmaddubsw/vpmaddwd pair (or NEON tbl + sdot) and
// one add into the group's 8 column accumulators: the index costs half a byte per slot
// and the gather is a single shuffle.
//
// Blob (bytes in .qbin; sections 64-byte aligned):
//   header  64 bytes: u32 magic 0x3631514B ("KQ16"), u32 0, u64 K, u64 N, u64 C (cells),
//           u64 nnz, then zeros
//   group   u32[G + 1]  first cell of each group (0, non-decreasing, last = C); G = ceil(N/8)
//   scale   f32[8G]     per column (0 for the padding columns of the last group)
//   chunk   u16[C]      chunk of each cell: k = 16 chunk + slot index; chunk < ceil(K/16)
//   shuf    u8[32C]     cell c, column j, slot s at 32c + 4j + s: 0..15 or 0x80 (empty);
//                       16 chunk + index < K; padding columns are empty
//   val     s8[32C]     weights in [-127, 127], same order; 0 in empty slots
#pragma once
#include <cstdint>
#include <string>

namespace lowbit {

constexpr uint32_t kK16Magic = 0x3631514Bu;

struct K16Matrix {
  int64_t K = 0, N = 0, G = 0, C = 0, nnz = 0;
  const uint32_t* group = nullptr;
  const float* scale = nullptr;
  const uint16_t* chunk = nullptr;
  const uint8_t* shuf = nullptr;
  const int8_t* val = nullptr;
};

struct K16Parts {
  int64_t group, scale, chunk, shuf, val, total;
};
bool k16_parts(int64_t K, int64_t N, int64_t C, K16Parts* out);
// "" when valid (see above), else what is wrong. Reads only inside [data, data + nbytes).
std::string k16_validate(const uint8_t* data, int64_t nbytes, int64_t K, int64_t N, K16Matrix* m);
// Wq [K, N] row-major in [-127, 127], per-column scales. Count first (blob bytes), then pack.
int64_t k16_count(int64_t K, int64_t N, const int8_t* W);
void k16_pack(int64_t K, int64_t N, const int8_t* W, const float* scales, uint8_t* out, int64_t nbytes);
// Activation rows are read in whole chunks: each row readable for round_up(K, 16) bytes.
inline int64_t k16_lda(int64_t K) { return (K + 15) / 16 * 16; }

}  // namespace lowbit
