// The T16 form of 1x4-block weights (see t16.h). Baseline C++, run once per layer at load.
#include "kernels/sparse/t16.h"

#include <cstring>

namespace lowbit {

bool t16_buildable(const SellMatrix& w) {
  if (w.bk != 4 || w.vbytes != 1 || w.scale == nullptr || w.nnz < 0 || w.nnz > int64_t(0xFFFFFFFFll)) return false;
  const uint32_t* v = reinterpret_cast<const uint32_t*>(w.val);  // a block's 4 bytes
  for (int64_t s = 0; s < w.S; ++s) {
    int32_t last[kSellC];
    for (int64_t j = 0; j < kSellC; ++j) last[j] = -1;
    for (int64_t t = w.slice[s]; t < int64_t(w.slice[s + 1]); ++t)
      for (int64_t j = 0; j < kSellC; ++j) {
        uint32_t b;
        std::memcpy(&b, v + t * kSellC + j, 4);
        if (b == 0) continue;
        const int32_t q = w.idx[t * kSellC + j];
        if (q <= last[j]) return false;
        last[j] = q;
      }
  }
  return true;
}

bool t16_from_sell(const SellMatrix& w, T16Matrix* out) {
  *out = T16Matrix{};
  if (!t16_buildable(w)) return false;
  T16Matrix t;
  t.K = w.K;
  t.N = w.N;
  t.G = (w.N + 15) / 16;
  t.C = (w.K + 63) / 64;
  const int64_t tiles = t.G * t.C;
  t.mask.assign(size_t(tiles * 16), 0);
  t.scale.assign(size_t(t.G * 16), 0.0f);
  t.corr.assign(size_t(t.G * 16), 0);
  const int8_t* val = reinterpret_cast<const int8_t*>(w.val);
  auto nonzero = [&](int64_t e) {
    const int8_t* v = val + e * 4;
    return (v[0] | v[1] | v[2] | v[3]) != 0;
  };
  // pass 1: the masks (t16_buildable: no block twice, fewer than 2^32 of them)
  for (int64_t s = 0; s < w.S; ++s)
    for (int64_t j = 0; j < kSellC; ++j) {
      const uint32_t n = w.perm[s * kSellC + j];
      if (n == kSellNoColumn) continue;
      t.scale[n] = w.scale[s * kSellC + j];
      int64_t sum = 0;
      for (int64_t st = w.slice[s]; st < int64_t(w.slice[s + 1]); ++st) {
        const int64_t e = st * kSellC + j;
        if (!nonzero(e)) continue;
        const int64_t q = w.idx[e];
        t.mask[size_t(t16_tile(t, n / 16, q / 16) * 16 + q % 16)] |= uint16_t(1u << (n % 16));
        for (int b = 0; b < 4; ++b) sum += val[e * 4 + b];
      }
      t.corr[n] = int32_t(uint32_t(uint64_t(128 * sum)));  // modulo 2^32, as the int32 sums wrap
    }
  // tile starts, and each quad row's first block
  t.start.assign(size_t(tiles + 1), 0);
  std::vector<uint64_t> row(size_t(tiles * 16));
  uint64_t p = 0;
  for (int64_t i = 0; i < tiles; ++i) {
    t.start[size_t(i)] = uint32_t(p);
    for (int64_t r = 0; r < 16; ++r) {
      row[size_t(i * 16 + r)] = p;
      p += uint64_t(__builtin_popcount(t.mask[size_t(i * 16 + r)]));
    }
  }
  t.start[size_t(tiles)] = uint32_t(p);
  t.nblocks = int64_t(p);
  t.val.assign(size_t(p * 4 + 64), 0);
  // pass 2: each block to its place (column order within its quad row)
  for (int64_t s = 0; s < w.S; ++s)
    for (int64_t j = 0; j < kSellC; ++j) {
      const uint32_t n = w.perm[s * kSellC + j];
      if (n == kSellNoColumn) continue;
      for (int64_t st = w.slice[s]; st < int64_t(w.slice[s + 1]); ++st) {
        const int64_t e = st * kSellC + j;
        if (!nonzero(e)) continue;
        const int64_t q = w.idx[e], ri = t16_tile(t, n / 16, q / 16) * 16 + q % 16;
        const uint32_t below = t.mask[size_t(ri)] & ((1u << (n % 16)) - 1u);
        std::memcpy(&t.val[size_t((row[size_t(ri)] + uint64_t(__builtin_popcount(below))) * 4)], val + e * 4, 4);
      }
    }
  *out = std::move(t);
  return true;
}

}  // namespace lowbit
