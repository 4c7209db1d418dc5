// The sliced-CSR ("SELL-8") weight layout shared by the sparse matmul kernels
// (f32-spmm, qs8-spmm): the idea is SELL-C-sigma (Kreutzer et al., SIAM J. Sci.
// Comput. 2014), with C = 8 output channels per slice and sigma = 256 (columns sorted
// by their count of nonzeros within windows of 256, so a slice's lanes have near-equal
// lengths and a window's 32 slices write one range of 256 output columns).
//
// A weight W[K, N] (y = x . W) is stored by output column n: the nonzeros of column n
// are its "row" of a CSR matrix W^T. With block length bk (1 = unstructured, 4 = 1x4
// blocks along K), an entry is one block of bk consecutive k; its index is k / bk.
// Columns are ordered by entry count (descending, stable) within windows of 256 columns (the
// packer's choice: any permutation is valid) and grouped 8 per slice;
// a slice stores its entries step by step, 8 lanes per step (lane j = the slice's
// j-th column), padded to the slice's longest column with index 0 and value 0. So
// one step is one 8-wide vector of indices and one of values: a gather and an FMA
// (or a maddubs/vpdpbusd over 8 blocks) with no horizontal sums.
//
// Blob (the bytes stored in .qbin; every section starts on a 64-byte boundary):
//   header   64 bytes: u32 magic 0x384C4553 ("SEL8"), u32 bk (1 or 4), u32 value bytes
//            (4 = f32, 1 = s8), u32 has_scale (0/1), u64 K, u64 N, u64 T (steps),
//            u64 nnz (entries before padding), then zeros
//   slice    u32[S + 1]   first step of each slice (0, non-decreasing, last = T); S = ceil(N/8)
//   perm     u32[8S]      output column of each lane, 0xFFFFFFFF for the 8S - N unused lanes
//   scale    f32[8S]      per lane (only when has_scale: int8 values), 0 for unused lanes
//   idx      u16[8T]      entry index (k / bk) of lane j at step t: idx[8t + j]; < ceil(K / bk)
//   val      8T*bk*vb     values: lane j, step t at (8t + j) * bk (s8 in [-127, 127]); 0 for unused lanes
// K is at most 65536 * bk (16-bit indices).
#pragma once
#include <cstdint>
#include <string>

namespace lowbit {

constexpr uint32_t kSellMagic = 0x384C4553u;
constexpr int64_t kSellC = 8;
constexpr uint32_t kSellNoColumn = 0xFFFFFFFFu;
constexpr int64_t kSellWindow = 256;  // the packer's sort window (sigma), in columns: 32 slices

struct SellMatrix {
  int64_t K = 0, N = 0, S = 0, T = 0, nnz = 0;
  int bk = 1, vbytes = 4;
  const uint32_t* slice = nullptr;
  const uint32_t* perm = nullptr;
  const float* scale = nullptr;  // nullptr for f32 values
  const uint16_t* idx = nullptr;
  const uint8_t* val = nullptr;
};

struct SellParts {
  int64_t slice, perm, scale, idx, val, total;  // byte offsets; total = blob size
};
// Section offsets of a blob; false when the sizes overflow int64.
bool sell_parts(int64_t K, int64_t N, int64_t T, int bk, int vbytes, bool has_scale, SellParts* out);

// Checks a blob against docs/format.md's rules (magic, sizes, slice pointers, the
// permutation, index ranges, padding values, no -128) and fills `m`. Returns "" when
// valid, else what is wrong. Reads only inside [data, data + nbytes).
std::string sell_validate(const uint8_t* data, int64_t nbytes, int64_t K, int64_t N, int bk, int vbytes,
                          bool has_scale, SellMatrix* m);

// Packing (convert time). Entry counts first, to size the blob:
//   f32: W[K, N] row-major floats; an entry is nonzero when any of its bk values is != 0.
int64_t sell_count_f32(int64_t K, int64_t N, const float* W, int bk, int64_t* T_out);
void sell_pack_f32(int64_t K, int64_t N, const float* W, int bk, uint8_t* out, int64_t nbytes);
//   s8: Wq[K, N] row-major in [-127, 127] with per-column scales.
int64_t sell_count_s8(int64_t K, int64_t N, const int8_t* W, int bk, int64_t* T_out);
void sell_pack_s8(int64_t K, int64_t N, const int8_t* W, const float* scales, int bk, uint8_t* out, int64_t nbytes);

// Lane sums of an s8 blob (vbytes 1): out[l] = 128 * (the sum of lane l's stored values) modulo
// 2^32, for l < 8S (0 for unused lanes): the correction of activations biased to u8 = q + 128.
void sell_lane_sums(const SellMatrix& m, int32_t* out);
// inv[n] = the lane (8s + j) that holds column n, for n < N.
void sell_inverse_perm(const SellMatrix& m, uint32_t* inv);
// True when every lane's column lies in the lane's window (lanes and columns in groups of
// kSellWindow), as the packer writes them; blobs from elsewhere may permute columns freely.
bool sell_windowed(const SellMatrix& m);

}  // namespace lowbit
