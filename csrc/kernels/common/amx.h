// What the AMX kernel translation units share (compiled with -mamx-tile -mamx-int8 and the
// AVX-512 flags): the tile configuration and the column mask of a 16-lane epilogue.
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

// Lanes [0, n) of 16 (none for n <= 0).
inline __mmask16 TailMask16(int64_t n) {
  if (n <= 0) return 0;
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}

}  // namespace
}  // namespace lowbit
