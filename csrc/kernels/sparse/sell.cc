// SELL-8 layout: sizes, validation and packing (see sell.h). Baseline C++.
#include "kernels/sparse/sell.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

namespace lowbit {
namespace {

constexpr int64_t kMaxBytes = int64_t(1) << 62;

// memcpy of a vector's bytes; skips empty ones (their data() may be null, which memcpy must not get)
template <class V>
void copy_out(uint8_t* dst, const std::vector<V>& v) {
  if (!v.empty()) std::memcpy(dst, v.data(), v.size() * sizeof(V));
}

// a + b*c, rounded up to 64, or -1 on overflow past kMaxBytes
int64_t add_section(int64_t a, int64_t b, int64_t c) {
  if (a < 0 || b < 0 || c < 0) return -1;
  if (c != 0 && b > kMaxBytes / c) return -1;
  const int64_t s = b * c;
  if (s > kMaxBytes - a - 64) return -1;
  return (a + s + 63) / 64 * 64;
}

struct Header {
  uint32_t magic, bk, vbytes, has_scale;
  uint64_t K, N, T, nnz;
};

template <class F>
void column_entries(int64_t K, int64_t N, int bk, F nonzero, std::vector<std::vector<uint32_t>>& cols) {
  cols.assign(size_t(N), {});
  for (int64_t k = 0; k < K; ++k) {  // row-major walk: ascending block indices per column
    const uint32_t b = uint32_t(k / bk);
    for (int64_t n = 0; n < N; ++n) {
      if (!nonzero(k, n)) continue;
      auto& c = cols[size_t(n)];
      if (c.empty() || c.back() != b) c.push_back(b);
    }
  }
}

// Columns by entry count, descending (stable) within each window of kSellWindow columns, and the
// slices' step counts.
void order(const std::vector<std::vector<uint32_t>>& cols, std::vector<uint32_t>& perm, std::vector<uint32_t>& slice) {
  const int64_t N = int64_t(cols.size()), S = (N + kSellC - 1) / kSellC;
  std::vector<uint32_t> p(static_cast<size_t>(N));
  std::iota(p.begin(), p.end(), 0u);
  for (int64_t w0 = 0; w0 < N; w0 += kSellWindow)
    std::stable_sort(p.begin() + w0, p.begin() + std::min(N, w0 + kSellWindow),
                     [&](uint32_t a, uint32_t b) { return cols[a].size() > cols[b].size(); });
  perm.assign(size_t(S * kSellC), kSellNoColumn);
  std::copy(p.begin(), p.end(), perm.begin());
  slice.assign(size_t(S + 1), 0u);
  for (int64_t s = 0; s < S; ++s) {
    size_t len = 0;
    for (int64_t j = 0; j < kSellC; ++j) {
      const uint32_t c = perm[size_t(s * kSellC + j)];
      if (c != kSellNoColumn) len = std::max(len, cols[c].size());
    }
    slice[size_t(s + 1)] = slice[size_t(s)] + uint32_t(len);
  }
}

template <class V, class F>
void pack(int64_t K, int64_t N, int bk, F value, const float* scales, uint8_t* out, int64_t nbytes,
          const std::vector<std::vector<uint32_t>>& cols) {
  std::vector<uint32_t> perm, slice;
  order(cols, perm, slice);
  const int64_t S = (N + kSellC - 1) / kSellC, T = slice[size_t(S)];
  int64_t nnz = 0;
  for (const auto& c : cols) nnz += int64_t(c.size());
  SellParts p;
  const int vb = int(sizeof(V));
  if (!sell_parts(K, N, T, bk, vb, scales != nullptr, &p) || p.total != nbytes) return;  // caller sized it
  std::memset(out, 0, size_t(nbytes));
  Header h{kSellMagic, uint32_t(bk), uint32_t(vb), scales ? 1u : 0u, uint64_t(K), uint64_t(N), uint64_t(T), uint64_t(nnz)};
  std::memcpy(out, &h, sizeof(h));
  copy_out(out + p.slice, slice);
  copy_out(out + p.perm, perm);
  float* sc = scales ? reinterpret_cast<float*>(out + p.scale) : nullptr;
  uint16_t* idx = reinterpret_cast<uint16_t*>(out + p.idx);
  V* val = reinterpret_cast<V*>(out + p.val);
  for (int64_t s = 0; s < S; ++s)
    for (int64_t j = 0; j < kSellC; ++j) {
      const uint32_t c = perm[size_t(s * kSellC + j)];
      if (c == kSellNoColumn) continue;
      if (sc) sc[s * kSellC + j] = scales[c];
      const auto& e = cols[c];
      for (size_t t = 0; t < e.size(); ++t) {
        const int64_t pos = (int64_t(slice[size_t(s)]) + int64_t(t)) * kSellC + j;
        idx[pos] = uint16_t(e[t]);
        for (int64_t i = 0; i < bk; ++i) {
          const int64_t k = int64_t(e[t]) * bk + i;
          val[pos * bk + i] = k < K ? value(k, int64_t(c)) : V(0);
        }
      }
    }
}

}  // namespace

bool sell_parts(int64_t K, int64_t N, int64_t T, int bk, int vbytes, bool has_scale, SellParts* out) {
  if (K < 0 || N < 0 || T < 0) return false;
  const int64_t S = (N + kSellC - 1) / kSellC;
  SellParts p;
  p.slice = 64;
  p.perm = add_section(p.slice, S + 1, 4);
  p.scale = add_section(p.perm, S * kSellC, 4);
  p.idx = add_section(p.scale, has_scale ? S * kSellC : 0, 4);
  if (p.idx < 0 || T > kMaxBytes / 64) return false;
  p.val = add_section(p.idx, T * kSellC, 2);
  p.total = add_section(p.val, T * kSellC, int64_t(bk) * vbytes);
  if (p.val < 0 || p.total < 0) return false;
  *out = p;
  return true;
}

std::string sell_validate(const uint8_t* data, int64_t nbytes, int64_t K, int64_t N, int bk, int vbytes, bool has_scale,
                          SellMatrix* m) {
  if (nbytes < 64) return "sparse weight blob of " + std::to_string(nbytes) + " bytes is shorter than its 64-byte header";
  if (K < 0 || N < 0 || N > (int64_t(1) << 32) - 2) return "sparse weight shape out of range";
  if (K > 65536 * int64_t(bk))
    return "K = " + std::to_string(K) + " is above the 16-bit index limit " + std::to_string(65536 * int64_t(bk));
  Header h;
  std::memcpy(&h, data, sizeof(h));
  if (h.magic != kSellMagic) return "sparse weight header magic is wrong";
  if (int(h.bk) != bk || int(h.vbytes) != vbytes || h.has_scale != (has_scale ? 1u : 0u))
    return "sparse weight header (block " + std::to_string(h.bk) + ", value bytes " + std::to_string(h.vbytes) +
           ") does not match its encoding (block " + std::to_string(bk) + ", value bytes " + std::to_string(vbytes) + ")";
  if (h.K != uint64_t(K) || h.N != uint64_t(N))
    return "sparse weight header says [" + std::to_string(h.K) + ", " + std::to_string(h.N) + "], the tensor is [" +
           std::to_string(K) + ", " + std::to_string(N) + "]";
  for (int i = 48; i < 64; ++i)
    if (data[i] != 0) return "sparse weight header has non-zero reserved bytes";
  const int64_t S = (N + kSellC - 1) / kSellC, nb = (K + bk - 1) / bk;
  // every lane has at most nb distinct entries, so a slice has at most nb steps
  if (h.T > uint64_t(S) * uint64_t(nb) || h.T > (uint64_t(1) << 40))
    return "sparse weight step count " + std::to_string(h.T) + " exceeds " + std::to_string(S) + " slices x " +
           std::to_string(nb) + " entries (nnz overflow)";
  const int64_t T = int64_t(h.T);
  if (h.nnz > uint64_t(T) * uint64_t(kSellC)) return "sparse weight nnz " + std::to_string(h.nnz) + " exceeds 8 x its steps";
  SellParts p;
  if (!sell_parts(K, N, T, bk, vbytes, has_scale, &p)) return "sparse weight sizes overflow";
  if (p.total != nbytes)
    return "sparse weight of " + std::to_string(T) + " steps needs " + std::to_string(p.total) + " bytes, got " +
           std::to_string(nbytes);
  SellMatrix r;
  r.K = K;
  r.N = N;
  r.S = S;
  r.T = T;
  r.nnz = int64_t(h.nnz);
  r.bk = bk;
  r.vbytes = vbytes;
  r.slice = reinterpret_cast<const uint32_t*>(data + p.slice);
  r.perm = reinterpret_cast<const uint32_t*>(data + p.perm);
  r.scale = has_scale ? reinterpret_cast<const float*>(data + p.scale) : nullptr;
  r.idx = reinterpret_cast<const uint16_t*>(data + p.idx);
  r.val = data + p.val;
  if (r.slice[0] != 0) return "sparse weight slice pointer 0 is " + std::to_string(r.slice[0]) + ", expected 0";
  for (int64_t s = 0; s < S; ++s) {
    if (r.slice[s + 1] < r.slice[s])
      return "sparse weight slice pointers are not monotonic at slice " + std::to_string(s);
    if (int64_t(r.slice[s + 1] - r.slice[s]) > nb)
      return "sparse weight slice " + std::to_string(s) + " has more steps than K allows";
  }
  if (int64_t(r.slice[S]) != T)
    return "sparse weight last slice pointer " + std::to_string(r.slice[S]) + " differs from its step count " + std::to_string(T);
  std::vector<uint8_t> seen(size_t(N), 0);
  for (int64_t l = 0; l < S * kSellC; ++l) {
    const uint32_t c = r.perm[l];
    if (c == kSellNoColumn) continue;
    if (int64_t(c) >= N) return "sparse weight lane " + std::to_string(l) + " maps to column " + std::to_string(c) + " >= N";
    if (seen[c]) return "sparse weight column " + std::to_string(c) + " appears in two lanes";
    seen[c] = 1;
  }
  for (int64_t n = 0; n < N; ++n)
    if (!seen[size_t(n)]) return "sparse weight column " + std::to_string(n) + " has no lane";
  for (int64_t i = 0; i < T * kSellC; ++i)
    if (int64_t(r.idx[i]) >= nb)
      return "sparse weight index " + std::to_string(r.idx[i]) + " at entry " + std::to_string(i) + " is out of range (< " +
             std::to_string(nb) + ")";
  // unused lanes hold zeros (they are never stored, but keep every ISA's sums defined)
  for (int64_t s = 0; s < S; ++s)
    for (int64_t j = 0; j < kSellC; ++j) {
      if (r.perm[s * kSellC + j] != kSellNoColumn) continue;
      for (int64_t t = r.slice[s]; t < int64_t(r.slice[s + 1]); ++t)
        for (int64_t b = 0; b < int64_t(bk) * vbytes; ++b)
          if (r.val[(t * kSellC + j) * bk * vbytes + b] != 0) return "sparse weight unused lane holds a nonzero value";
    }
  if (vbytes == 1) {
    // -128 breaks the AVX2 sign trick (|-128| is not an s8): every ISA rejects it alike
    if (std::memchr(r.val, 0x80, size_t(T * kSellC * bk)) != nullptr)
      return "int8 sparse weight holds -128, expected values in [-127, 127]";
  }
  *m = r;
  return "";
}

int64_t sell_count_f32(int64_t K, int64_t N, const float* W, int bk, int64_t* T_out) {
  std::vector<std::vector<uint32_t>> cols;
  column_entries(K, N, bk, [&](int64_t k, int64_t n) { return W[k * N + n] != 0.0f; }, cols);
  std::vector<uint32_t> perm, slice;
  order(cols, perm, slice);
  const int64_t T = slice.back();
  SellParts p;
  if (!sell_parts(K, N, T, bk, 4, false, &p)) return -1;
  *T_out = T;
  return p.total;
}

void sell_pack_f32(int64_t K, int64_t N, const float* W, int bk, uint8_t* out, int64_t nbytes) {
  std::vector<std::vector<uint32_t>> cols;
  column_entries(K, N, bk, [&](int64_t k, int64_t n) { return W[k * N + n] != 0.0f; }, cols);
  pack<float>(K, N, bk, [&](int64_t k, int64_t n) { return W[k * N + n]; }, nullptr, out, nbytes, cols);
}

int64_t sell_count_s8(int64_t K, int64_t N, const int8_t* W, int bk, int64_t* T_out) {
  std::vector<std::vector<uint32_t>> cols;
  column_entries(K, N, bk, [&](int64_t k, int64_t n) { return W[k * N + n] != 0; }, cols);
  std::vector<uint32_t> perm, slice;
  order(cols, perm, slice);
  const int64_t T = slice.back();
  SellParts p;
  if (!sell_parts(K, N, T, bk, 1, true, &p)) return -1;
  *T_out = T;
  return p.total;
}

void sell_pack_s8(int64_t K, int64_t N, const int8_t* W, const float* scales, int bk, uint8_t* out, int64_t nbytes) {
  std::vector<std::vector<uint32_t>> cols;
  column_entries(K, N, bk, [&](int64_t k, int64_t n) { return W[k * N + n] != 0; }, cols);
  pack<int8_t>(K, N, bk, [&](int64_t k, int64_t n) { return W[k * N + n]; }, scales, out, nbytes, cols);
}

void sell_lane_sums(const SellMatrix& m, int32_t* out) {
  const int8_t* val = reinterpret_cast<const int8_t*>(m.val);
  for (int64_t s = 0; s < m.S; ++s)
    for (int64_t j = 0; j < kSellC; ++j) {
      int64_t sum = 0;
      for (int64_t t = m.slice[s]; t < int64_t(m.slice[s + 1]); ++t)
        for (int64_t b = 0; b < m.bk; ++b) sum += val[(t * kSellC + j) * m.bk + b];
      // modulo 2^32, as the kernels' int32 lanes wrap (the accumulator minus this is exact)
      out[s * kSellC + j] = int32_t(uint32_t(uint64_t(128 * sum)));
    }
}

void sell_inverse_perm(const SellMatrix& m, uint32_t* inv) {
  for (int64_t l = 0; l < m.S * kSellC; ++l)
    if (m.perm[l] != kSellNoColumn) inv[m.perm[l]] = uint32_t(l);
}

bool sell_windowed(const SellMatrix& m) {
  for (int64_t l = 0; l < m.S * kSellC; ++l)
    if (m.perm[l] != kSellNoColumn && int64_t(m.perm[l]) / kSellWindow != l / kSellWindow) return false;
  return true;
}

}  // namespace lowbit
