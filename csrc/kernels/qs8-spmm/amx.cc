// The 1x4-block sparse product on AMX tiles, over the T16 form (kernels/sparse/t16.h): each
// 16 x 16-block B tile is rebuilt from its masks and blocks, a quad row per masked expand
// (vpexpandd) and store, into a 1 KB buffer in L1, then multiplied by `tdpbusd` like a dense
// int8 tile. Intel Sapphire Rapids and later; compiled with the AMX and AVX-512 flags.
//
// Register tiles: 4 sums (tmm0..3) as 1 row tile x 4 column groups (16 rows) or 2 x 2 (blocks
// of 32 rows), the rest for A and B (blocks of 64 rows as 4 x 1 measured slower: each tile
// product then loads its own A tile from L2). Up to 32 rows, a rebuilt tile serves its block of
// rows and is gone; above, with K <= 4096, the first 32 rows rebuild each pair of column groups'
// tiles into a panel (128 KB on the stack) that the other blocks of 32 rows read from L2
// (Panels; 4096 x 4096 at 80% 1x4 blocks, 128 rows: 1.81 -> 1.43 ms in a C++ harness). The next K chunk's tiles are rebuilt before
// this chunk's tile loads are issued, into the other of two buffers. The rebuild is the bound:
// `vpexpandd` from memory takes ~3 cycles per quad row here (a load and a store ~1.2), against
// 16 cycles per `tdpbusd` for 16 rows. Integer sums are exact (modulo 2^32, less the correction
// of the biased activations), so the result has the reference's bits (qs8_bspmm_t16__scalar,
// and the SELL-8 reference qs8_bspmm_s8c4__scalar).
#include <algorithm>

#include "kernels/common/amx.h"
#include "qs8_spmm.h"

namespace lowbit {
namespace amx {
namespace {

// Quad rows of tile t into dst (16 x 64 bytes), zeros where the mask has no block.
inline void Expand(const T16Matrix& w, int64_t t, int8_t* dst) {
  const uint16_t* mk = w.mask.data() + t * 16;
  const int32_t* v = reinterpret_cast<const int32_t*>(w.val.data() + int64_t(w.start[size_t(t)]) * 4);
  for (int r = 0; r < 16; ++r) {
    const __mmask16 k = mk[r];
    _mm512_store_si512(dst + 64 * r, _mm512_maskz_expandloadu_epi32(k, v));
    v += __builtin_popcount(k);
  }
}

// Sums of rows [m, m + rows) x the 16 columns of group g (row stride 16) to C.
void Finish(const Qs8BspmmT16Args& a, const int32_t* acc, int64_t m, int64_t rows, int64_t g) {
  const T16Matrix& w = *a.W;
  const int64_t n0 = 16 * g;
  const __mmask16 mk = TailMask16(w.N - n0);
  const __m512i corr = _mm512_loadu_si512(w.corr.data() + n0);
  const __m512 ws = _mm512_loadu_ps(w.scale.data() + n0);
  const bool has_bias = a.bias != nullptr, relu = a.act == Activation::kRelu;
  const __m512 bias = has_bias ? _mm512_maskz_loadu_ps(mk, a.bias + n0) : _mm512_setzero_ps();
  const float* as = a.a_scale + m;
  float* c = a.C + m * a.ldc + n0;
  const int64_t ldc = a.ldc;
  for (int64_t r = 0; r < rows; ++r) {
    const __m512 s = _mm512_mul_ps(_mm512_set1_ps(as[r]), ws);
    __m512 y = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_loadu_si512(acc + 16 * r), corr)), s);
    if (has_bias) y = _mm512_add_ps(y, bias);
    if (relu) y = _mm512_max_ps(_mm512_setzero_ps(), y);
    _mm512_mask_storeu_ps(c + r * ldc, mk, y);
  }
}

// Tile numbers: sums i * NG + j; A of row tile i; B of group j (1 x 4: two B tiles in turn).
template <int RM, int NG>
struct Tiles {
  static_assert(RM * NG <= 4 && RM <= 2 && NG <= 4, "1 x 1..4 or 2 x 1..2 register tiles");
  static constexpr int A(int i) { return 4 + i; }
  static constexpr int B(int j) { return RM == 1 ? 5 + j % 2 : 6 + j; }
};

template <int RM, int NG, int I, int J>
inline void Step(const uint8_t* A, int64_t lda, const int8_t* b) {
  using T = Tiles<RM, NG>;
  if constexpr (J == 0) TileLoad<T::A(I)>(A + I * 16 * lda, lda);
  if constexpr (I == 0) TileLoad<T::B(J)>(b + J * 1024, 64);
  TileDpbusd<I * NG + J, T::A(I), T::B(J)>();
  if constexpr (J + 1 < NG) Step<RM, NG, I, J + 1>(A, lda, b);
  else if constexpr (I + 1 < RM) Step<RM, NG, I + 1, 0>(A, lda, b);
}
template <int RM, int NG, int S>
inline void ZeroAll() {
  TileZero<S>();
  if constexpr (S + 1 < RM * NG) ZeroAll<RM, NG, S + 1>();
}
template <int RM, int NG, int S>
inline void StoreAll(int32_t (*acc)[256]) {
  TileStore<S>(acc[S], 64);
  if constexpr (S + 1 < RM * NG) StoreAll<RM, NG, S + 1>(acc);
}

// The stored sums of rows [m, m + 16 RM) x groups [g, g + ng) to C (rows past M are not written).
template <int RM, int NG>
void FinishAll(const Qs8BspmmT16Args& a, int32_t (*acc)[256], int64_t m, int64_t g, int64_t ng) {
  StoreAll<RM, NG, 0>(acc);
  for (int i = 0; i < RM; ++i) {
    const int64_t rows = std::min<int64_t>(16, a.M - (m + 16 * i));
    if (rows <= 0) break;
    for (int64_t j = 0; j < ng; ++j) Finish(a, acc[i * NG + j], m + 16 * i, rows, g + j);
  }
}

// Rows [m, m + 16 RM) (the last tile may run past M: its rows are not written) x groups [g, g + ng), ng <= NG,
// rebuilding the tiles as it goes: into two buffers in turn, or with `panel` into chunk c's slots
// panel + (c * NG + j) * 1024 (kept for PanelBlock).
template <int RM, int NG>
void Block(const Qs8BspmmT16Args& a, int64_t m, int64_t g, int64_t ng, int8_t* panel = nullptr) {
  const T16Matrix& w = *a.W;
  alignas(64) int8_t buf[2][NG][1024];
  alignas(64) int32_t acc[RM * NG][256];
  ZeroAll<RM, NG, 0>();
  const uint8_t* A = a.A + m * a.lda;
  auto tiles = [&](int64_t c) { return panel ? panel + c * NG * 1024 : &buf[c & 1][0][0]; };
  auto expand = [&](int64_t c) {
    int8_t* b = tiles(c);
    for (int64_t j = 0; j < NG; ++j) {
      if (j < ng) Expand(w, t16_tile(w, g + j, c), b + j * 1024);
      else if (panel || c < 2) std::memset(b + j * 1024, 0, 1024);  // a group past the range: zero tiles
    }
  };
  expand(0);
  for (int64_t c = 0; c < w.C; ++c) {
    if (c + 1 < w.C) expand(c + 1);  // the next chunk's tiles first: the tile loads below find theirs in L1
    Step<RM, NG, 0, 0>(A + 64 * c, a.lda, tiles(c));
  }
  FinishAll<RM, NG>(a, acc, m, g, ng);
}

// The same over tiles rebuilt beforehand: chunk c's tile of group g + j at panel + (c * NG + j) * 1024.
template <int RM, int NG>
void PanelBlock(const Qs8BspmmT16Args& a, int64_t m, int64_t g, int64_t ng, const int8_t* panel) {
  alignas(64) int32_t acc[RM * NG][256];
  ZeroAll<RM, NG, 0>();
  const uint8_t* A = a.A + m * a.lda;
  for (int64_t c = 0; c < a.W->C; ++c) Step<RM, NG, 0, 0>(A + 64 * c, a.lda, panel + c * NG * 1024);
  FinishAll<RM, NG>(a, acc, m, g, ng);
}

// Calls of more than 32 rows with K <= 64 kPanelChunks: each pair of groups' tiles rebuilt once into a
// panel (128 KB on the stack at K = 4096, in L2) that every block of 32 rows then reads, instead of a
// rebuild per block.
constexpr int64_t kPanelChunks = 64;
void Panels(const Qs8BspmmT16Args& a, int64_t g0, int64_t g1) {
  alignas(64) int8_t panel[kPanelChunks * 2 * 1024];
  for (int64_t g = g0; g < g1; g += 2) {
    const int64_t ng = std::min<int64_t>(2, g1 - g);
    Block<2, 2>(a, 0, g, ng, panel);  // the first 32 rows rebuild the panel as they go (M > 32)
    for (int64_t m = 32; m < a.M; m += 32) {
      if (a.M - m > 16) PanelBlock<2, 2>(a, m, g, ng, panel);
      else PanelBlock<1, 2>(a, m, g, ng, panel);
    }
  }
}

template <int RM, int NG>
void Groups(const Qs8BspmmT16Args& a, int64_t m, int64_t g0, int64_t g1) {
  for (int64_t g = g0; g < g1; g += NG) Block<RM, NG>(a, m, g, std::min<int64_t>(NG, g1 - g));
}

}  // namespace

void qs8_bspmm_t16__amx(const Qs8BspmmT16Args& a, int64_t g0, int64_t g1) {
  if (a.M <= 0 || g1 <= g0) return;
  LoadTileConfigFull();
  if (a.M > 32 && a.W->C <= kPanelChunks) {
    Panels(a, g0, g1);
    _tile_release();
    return;
  }
  for (int64_t m = 0; m < a.M; m += 32) {
    if (a.M - m > 16) Groups<2, 2>(a, m, g0, g1);
    else Groups<1, 4>(a, m, g0, g1);
  }
  _tile_release();
}

}  // namespace amx
}  // namespace lowbit
