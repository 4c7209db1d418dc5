// K16 layout: sizes, validation, packing (see k16.h). Baseline C++.
#include "kernels/sparse/k16.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace lowbit {
namespace {

constexpr int64_t kMaxBytes = int64_t(1) << 62;

int64_t add_section(int64_t a, int64_t b, int64_t c) {
  if (a < 0 || b < 0 || c < 0) return -1;
  if (c != 0 && b > kMaxBytes / c) return -1;
  const int64_t s = b * c;
  if (s > kMaxBytes - a - 64) return -1;
  return (a + s + 63) / 64 * 64;
}

struct Header {
  uint32_t magic, zero;
  uint64_t K, N, C, nnz;
};

// Calls cell(g, chunk, round, j, list-of-k-offsets) in blob order; returns the cell count.
template <class F>
int64_t walk(int64_t K, int64_t N, const int8_t* W, F&& emit) {
  const int64_t G = (N + 7) / 8, nch = (K + 15) / 16;
  int64_t cells = 0;
  std::vector<uint8_t> cnt(8);
  std::vector<uint8_t> offs(8 * 16);
  for (int64_t g = 0; g < G; ++g)
    for (int64_t c = 0; c < nch; ++c) {
      int rounds = 0;
      for (int64_t j = 0; j < 8; ++j) {
        cnt[j] = 0;
        const int64_t n = 8 * g + j;
        if (n >= N) continue;
        for (int64_t i = 0; i < 16 && 16 * c + i < K; ++i)
          if (W[(16 * c + i) * N + n] != 0) offs[j * 16 + cnt[j]++] = uint8_t(i);
        rounds = std::max(rounds, (cnt[j] + 3) / 4);
      }
      for (int r = 0; r < rounds; ++r) emit(g, c, r, cnt.data(), offs.data(), cells++);
    }
  return cells;
}

// memcpy of a vector's bytes; skips empty ones (their data() may be null, which memcpy must not get)
template <class V>
void copy_out(uint8_t* dst, const std::vector<V>& v) {
  if (!v.empty()) std::memcpy(dst, v.data(), v.size() * sizeof(V));
}

}  // namespace

bool k16_parts(int64_t K, int64_t N, int64_t C, K16Parts* out) {
  if (K < 0 || N < 0 || C < 0 || C > kMaxBytes / 128) return false;
  const int64_t G = (N + 7) / 8;
  K16Parts p;
  p.group = 64;
  p.scale = add_section(p.group, G + 1, 4);
  p.chunk = add_section(p.scale, 8 * G, 4);
  p.shuf = add_section(p.chunk, C, 2);
  p.val = add_section(p.shuf, C, 32);
  p.total = add_section(p.val, C, 32);
  if (p.scale < 0 || p.chunk < 0 || p.shuf < 0 || p.val < 0 || p.total < 0) return false;
  *out = p;
  return true;
}

std::string k16_validate(const uint8_t* data, int64_t nbytes, int64_t K, int64_t N, K16Matrix* m) {
  if (nbytes < 64) return "sparse weight blob of " + std::to_string(nbytes) + " bytes is shorter than its 64-byte header";
  if (K < 0 || N < 0 || N > (int64_t(1) << 32)) return "sparse weight shape out of range";
  if (K > (int64_t(1) << 20)) return "K = " + std::to_string(K) + " is above the 16-bit chunk index limit";
  Header h;
  std::memcpy(&h, data, sizeof(h));
  if (h.magic != kK16Magic || h.zero != 0) return "sparse weight header magic is wrong";
  if (h.K != uint64_t(K) || h.N != uint64_t(N))
    return "sparse weight header says [" + std::to_string(h.K) + ", " + std::to_string(h.N) + "], the tensor is [" +
           std::to_string(K) + ", " + std::to_string(N) + "]";
  for (int i = 40; i < 64; ++i)
    if (data[i] != 0) return "sparse weight header has non-zero reserved bytes";
  const int64_t G = (N + 7) / 8, nch = (K + 15) / 16;
  // a chunk needs at most 4 cells (16 k / 4 slots) per group
  if (h.C > uint64_t(G) * uint64_t(nch) * 4 || h.C > (uint64_t(1) << 40))
    return "sparse weight cell count " + std::to_string(h.C) + " exceeds 4 x groups x chunks (nnz overflow)";
  const int64_t C = int64_t(h.C);
  if (h.nnz > uint64_t(C) * 32) return "sparse weight nnz " + std::to_string(h.nnz) + " exceeds 32 x its cells";
  K16Parts p;
  if (!k16_parts(K, N, C, &p)) return "sparse weight sizes overflow";
  if (p.total != nbytes)
    return "sparse weight of " + std::to_string(C) + " cells needs " + std::to_string(p.total) + " bytes, got " +
           std::to_string(nbytes);
  K16Matrix r;
  r.K = K;
  r.N = N;
  r.G = G;
  r.C = C;
  r.nnz = int64_t(h.nnz);
  r.group = reinterpret_cast<const uint32_t*>(data + p.group);
  r.scale = reinterpret_cast<const float*>(data + p.scale);
  r.chunk = reinterpret_cast<const uint16_t*>(data + p.chunk);
  r.shuf = data + p.shuf;
  r.val = reinterpret_cast<const int8_t*>(data + p.val);
  if (r.group[0] != 0) return "sparse weight group pointer 0 is " + std::to_string(r.group[0]) + ", expected 0";
  for (int64_t g = 0; g < G; ++g) {
    if (r.group[g + 1] < r.group[g]) return "sparse weight group pointers are not monotonic at group " + std::to_string(g);
    if (int64_t(r.group[g + 1] - r.group[g]) > 4 * nch)
      return "sparse weight group " + std::to_string(g) + " has more cells than K allows";
  }
  if (int64_t(r.group[G]) != C)
    return "sparse weight last group pointer " + std::to_string(r.group[G]) + " differs from its cell count " + std::to_string(C);
  for (int64_t g = 0; g < G; ++g)
    for (int64_t c = r.group[g]; c < int64_t(r.group[g + 1]); ++c) {
      const int64_t ch = r.chunk[c];
      if (ch >= nch) return "sparse weight chunk " + std::to_string(ch) + " of cell " + std::to_string(c) + " is out of range";
      for (int64_t b = 0; b < 32; ++b) {
        const uint8_t s = r.shuf[32 * c + b];
        const int8_t v = r.val[32 * c + b];
        const bool pad_col = 8 * g + b / 4 >= N;
        if (s == 0x80) {
          if (v != 0) return "sparse weight empty slot holds a nonzero value";
          continue;
        }
        if (s >= 16 || 16 * ch + s >= K || pad_col)
          return "sparse weight slot index " + std::to_string(s) + " at cell " + std::to_string(c) + " is out of range";
        if (v == -128) return "int8 sparse weight holds -128, expected values in [-127, 127]";
      }
    }
  *m = r;
  return "";
}

int64_t k16_count(int64_t K, int64_t N, const int8_t* W) {
  const int64_t C = walk(K, N, W, [](int64_t, int64_t, int, const uint8_t*, const uint8_t*, int64_t) {});
  K16Parts p;
  return k16_parts(K, N, C, &p) ? p.total : -1;
}

void k16_pack(int64_t K, int64_t N, const int8_t* W, const float* scales, uint8_t* out, int64_t nbytes) {
  const int64_t G = (N + 7) / 8;
  std::vector<uint32_t> group(size_t(G + 1), 0);
  std::vector<uint16_t> chunk;
  std::vector<uint8_t> shuf;
  std::vector<int8_t> val;
  int64_t nnz = 0;
  walk(K, N, W, [&](int64_t g, int64_t c, int r, const uint8_t* cnt, const uint8_t* offs, int64_t) {
    chunk.push_back(uint16_t(c));
    for (int64_t j = 0; j < 8; ++j)
      for (int s = 0; s < 4; ++s) {
        const int i = 4 * r + s;
        if (i < cnt[j]) {
          const uint8_t o = offs[j * 16 + i];
          shuf.push_back(o);
          val.push_back(W[(16 * c + o) * N + 8 * g + j]);
          ++nnz;
        } else {
          shuf.push_back(0x80);
          val.push_back(0);
        }
      }
    group[size_t(g + 1)] = uint32_t(chunk.size());
  });
  for (int64_t g = 0; g < G; ++g) group[size_t(g + 1)] = std::max(group[size_t(g + 1)], group[size_t(g)]);
  const int64_t C = int64_t(chunk.size());
  K16Parts p;
  if (!k16_parts(K, N, C, &p) || p.total != nbytes) return;
  std::memset(out, 0, size_t(nbytes));
  Header h{kK16Magic, 0, uint64_t(K), uint64_t(N), uint64_t(C), uint64_t(nnz)};
  std::memcpy(out, &h, sizeof(h));
  copy_out(out + p.group, group);
  float* sc = reinterpret_cast<float*>(out + p.scale);
  for (int64_t n = 0; n < N; ++n) sc[n] = scales[n];
  copy_out(out + p.chunk, chunk);
  copy_out(out + p.shuf, shuf);
  copy_out(out + p.val, val);
}

}  // namespace lowbit
