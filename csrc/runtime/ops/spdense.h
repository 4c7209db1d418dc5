// Dense layers whose weights are stored sparse ("f32-csr-s8" and "qs8-bsr1x4-s8" in the SELL-8
// layout of kernels/sparse/sell.h, "qs8-csr-k16" in the K16 layout of kernels/sparse/k16.h;
// docs/format.md), and the helpers the
// bindings' test hooks share with the op.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "cpu/dispatch.h"

namespace lowbit {

enum class SparseKind { kF32Csr, kQs8Csr, kQs8Bsr };

struct SparseWeights {
  SparseKind kind = SparseKind::kF32Csr;
  SellMatrix w;   // f32 csr, qs8 bsr
  K16Matrix k16;  // qs8 csr
  // qs8 bsr: each lane's 128 * sum of its values (the biased kernels' correction, sell_lane_sums)
  // and each column's lane (for staged output, sell_inverse_perm)
  std::vector<int32_t> wsum;
  std::vector<uint32_t> inv;
  bool windowed = false;  // qs8 bsr: sell_windowed (staged output moves to C window by window)
  // qs8 bsr on tables with qs8_bspmm_t16 (prepare_sparse_weights): the fewest rows of a call that
  // runs on the T16 form (the table's thresholds at this layer's block density; 0: none, as for
  // sparser layers), and the form, built by build_sparse_t16 (the op: before its first such call).
  // t16_rows is fixed at load; a blob that stores a block twice leaves t16 empty (qs8_bspmm then).
  int64_t t16_rows = 0;
  T16Matrix t16;
  int64_t K() const { return kind == SparseKind::kQs8Csr ? k16.K : w.K; }
  int64_t N() const { return kind == SparseKind::kQs8Csr ? k16.N : w.N; }
};

// True and fills kind when `enc` names a sparse weight encoding.
bool parse_sparse_encoding(const std::string& enc, SparseKind& kind);
// Validates the blob and fills `out`; throws std::invalid_argument naming `what` and the problem.
void load_sparse_weights(const std::string& what, const std::string& enc, const void* data, int64_t nbytes, int64_t K,
                         int64_t N, SparseWeights& out);
// For table t's kernels: from how many rows qs8 bsr calls take the T16 form (t16_rows, from
// KernelTable::qs8_bspmm_t16_min_rows and the density thresholds), or with `force` from 1 row wherever
// t has the kernel, the form then built at once (test hooks). Without force the form is left to
// build_sparse_t16.
void prepare_sparse_weights(const KernelTable& t, SparseWeights& w, bool force = false);
// Builds w.t16 where w.t16_rows > 0 (t16 stays empty when the blob stores a block twice).
void build_sparse_t16(SparseWeights& w);
// The fewest rows from which any table's 1x4-block kernel takes packed activation tiles
// (KernelTable::qs8_bspmm_tile_min_rows: 2 on AVX-512, 3 on AVX2, 4 elsewhere).
constexpr int64_t kBspmmTileMinRowsAny = 2;
// above this many rows, 16-row tiles where the table has them (AVX-512: one zmm per block)
constexpr int64_t kBspmmTileMinRows16 = 8;
// Scratch bytes of run_spdense with table t's kernels: quantized rows and their scales, the
// activation tiles of the 1x4-block kernel, and its staged output where t has an unstage kernel.
size_t spdense_scratch_bytes(const KernelTable& t, const SparseWeights& w, int64_t M);
// y[M,N] = act(x[M,K] . W + bias) with table t's kernels, over the global pool when `threaded`.
void run_spdense(const KernelTable& t, const SparseWeights& w, const float* x, int64_t M, const float* bias,
                 Activation act, float* y, void* scratch, bool threaded);
std::string spdense_kernel_name(const KernelTable& t, const SparseWeights& w, bool quant_name);

}  // namespace lowbit
