// Scalar reference int8 sparse matmuls (K16 unstructured, SELL-8 1x4 blocks): the definition every
// ISA reproduces (see qs8_spmm.h); also the activation tile packer (the other tables' too, but AVX-512's).
#include <cstring>

#include "qs8_spmm.h"

namespace lowbit {


namespace ref {
namespace {

void bspmm(const Qs8SpmmArgs& a, int64_t m0, int64_t m1, int64_t s0, int64_t s1) {
  const SellMatrix& w = *a.W;
  const int8_t* val = reinterpret_cast<const int8_t*>(w.val);
  for (int64_t m = m0; m < m1; ++m) {
    const int8_t* x = a.A + m * a.lda;
    for (int64_t s = s0; s < s1; ++s)
      for (int64_t j = 0; j < kSellC; ++j) {
        const uint32_t n = w.perm[s * kSellC + j];
        if (n == kSellNoColumn) continue;
        int32_t acc = 0;
        for (int64_t t = w.slice[s]; t < int64_t(w.slice[s + 1]); ++t) {
          const int64_t e = t * kSellC + j, k = int64_t(w.idx[e]) * 4;
          for (int i = 0; i < 4; ++i) acc += int32_t(x[k + i]) * int32_t(val[e * 4 + i]);
        }
        float y = float(acc) * (a.a_scale[m] * w.scale[s * kSellC + j]);
        if (a.bias) y = y + a.bias[n];
        if (a.act == Activation::kRelu) y = (0.0f > y) ? 0.0f : y;
        a.C[m * a.ldc + n] = y;
      }
  }
}

}  // namespace

void qs8_bspmm_pack_a__scalar(int64_t M, int64_t K, const int8_t* A, int64_t lda, int64_t R, int8_t* At) {
  const int64_t nb = (K + 3) / 4, tiles = (M + R - 1) / R;
  std::memset(At, 0, size_t(qs8_bspmm_at_bytes(M, K, R)));
  for (int64_t i = 0; i < tiles; ++i) {
    const int64_t rows = M - R * i < R ? M - R * i : R;
    const int8_t* x = A + R * i * lda;
    int8_t* dst = At + i * nb * 4 * R;
    // block by block, so the tile is written in order (row by row, each 4-byte store went to
    // another line: ~4% of a 16-row, K = 4096 product)
    for (int64_t b = 0; b < nb; ++b, dst += 4 * R)
      for (int64_t r = 0; r < rows; ++r) std::memcpy(dst + 4 * r, x + r * lda + 4 * b, 4);  // K padding: A is 0 past K
  }
}

void qs8_spmm_k16__scalar(const Qs8K16Args& a, int64_t m0, int64_t m1, int64_t g0, int64_t g1) {
  const K16Matrix& w = *a.W;
  for (int64_t m = m0; m < m1; ++m) {
    const int8_t* x = a.A + m * a.lda;
    for (int64_t g = g0; g < g1; ++g) {
      int32_t acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (int64_t c = w.group[g]; c < int64_t(w.group[g + 1]); ++c) {
        const int8_t* xc = x + 16 * int64_t(w.chunk[c]);
        for (int b = 0; b < 32; ++b) {
          const uint8_t s = w.shuf[32 * c + b];
          if (s != 0x80) acc[b / 4] += int32_t(xc[s]) * int32_t(w.val[32 * c + b]);
        }
      }
      for (int64_t j = 0; j < 8 && 8 * g + j < w.N; ++j) {
        const int64_t n = 8 * g + j;
        float y = float(acc[j]) * (a.a_scale[m] * w.scale[n]);
        if (a.bias) y = y + a.bias[n];
        if (a.act == Activation::kRelu) y = (0.0f > y) ? 0.0f : y;
        a.C[m * a.ldc + n] = y;
      }
    }
  }
}
void qs8_bspmm_s8c4__scalar(const Qs8SpmmArgs& a, int64_t m0, int64_t m1, int64_t s0, int64_t s1) { bspmm(a, m0, m1, s0, s1); }

void qs8_bspmm_unstage__scalar(const float* Yt, int64_t R, int64_t rows, const uint32_t* inv, int64_t n0, int64_t n1,
                               float* C, int64_t ldc) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t n = n0; n < n1; ++n) C[r * ldc + n] = Yt[int64_t(inv[n]) * R + r];
}

void qs8_bspmm_t16__scalar(const Qs8BspmmT16Args& a, int64_t g0, int64_t g1) {
  const T16Matrix& w = *a.W;
  for (int64_t m = 0; m < a.M; ++m) {
    const uint8_t* x = a.A + m * a.lda;
    for (int64_t g = g0; g < g1; ++g) {
      uint32_t acc[16] = {};  // modulo 2^32, as the tile unit's int32 sums
      for (int64_t c = 0; c < w.C; ++c) {
        const int64_t t = t16_tile(w, g, c);
        const int8_t* v = w.val.data() + int64_t(w.start[size_t(t)]) * 4;
        for (int64_t r = 0; r < 16; ++r) {
          const uint32_t mk = w.mask[size_t(t * 16 + r)];
          for (int l = 0; l < 16; ++l) {
            if (!(mk >> l & 1u)) continue;
            for (int i = 0; i < 4; ++i) acc[l] += uint32_t(int32_t(x[64 * c + 4 * r + i]) * int32_t(v[i]));
            v += 4;
          }
        }
      }
      for (int64_t l = 0; l < 16 && 16 * g + l < w.N; ++l) {
        const int64_t n = 16 * g + l;
        float y = float(int32_t(acc[l] - uint32_t(w.corr[size_t(n)]))) * (a.a_scale[m] * w.scale[size_t(n)]);
        if (a.bias) y = y + a.bias[n];
        if (a.act == Activation::kRelu) y = (0.0f > y) ? 0.0f : y;
        a.C[m * a.ldc + n] = y;
      }
    }
  }
}

}  // namespace ref
}  // namespace lowbit
