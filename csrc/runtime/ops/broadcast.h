// Numpy-style broadcasting of shapes.
#pragma once
#include <algorithm>
#include <vector>

#include "runtime/engine.h"

namespace lowbit {

inline Shape broadcast_shapes(const Shape& a, const Shape& b) {
  size_t r = std::max(a.size(), b.size());
  Shape out(r);
  for (size_t i = 0; i < r; ++i) {
    int64_t da = i < r - a.size() ? 1 : a[i - (r - a.size())];
    int64_t db = i < r - b.size() ? 1 : b[i - (r - b.size())];
    if (da != db && da != 1 && db != 1)
      throw ShapeError("shapes " + shape_str(a) + " and " + shape_str(b) + " cannot be broadcast together");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

// Element strides of `s` when broadcast to `out` (0 on broadcast dims).
inline std::vector<int64_t> broadcast_strides(const Shape& s, const Shape& out) {
  std::vector<int64_t> st(out.size(), 0);
  int64_t acc = 1;
  for (size_t i = 0; i < s.size(); ++i) {
    size_t si = s.size() - 1 - i;
    size_t oi = out.size() - 1 - i;
    st[oi] = s[si] == 1 ? 0 : acc;
    acc *= s[si];
  }
  return st;
}

// Odometer over the rows of an output shape, tracking the element offset of each operand.
// Dims of size 1 are dropped and neighbouring dims that every operand walks the same
// way (all contiguous across both, or all broadcast across both) are merged, so the
// walk visits the same elements in the same order over fewer, longer dims. After
// that, each operand's stride along the innermost dim is 0 or 1.
struct Broadcast {
  Shape out;  // the merged shape (rank 0 for a single element)
  std::vector<std::vector<int64_t>> strides;
  Broadcast(const Shape& o, const std::vector<const Shape*>& ins) {
    std::vector<std::vector<int64_t>> full;
    for (const Shape* s : ins) full.push_back(broadcast_strides(*s, o));
    strides.assign(ins.size(), {});
    for (size_t d = o.size(); d-- > 0;) {  // innermost first; reversed at the end
      if (o[d] == 1) continue;
      bool merge = !out.empty();
      for (size_t j = 0; merge && j < ins.size(); ++j)
        merge = full[j][d] == strides[j].back() * out.back();
      if (merge) {
        out.back() *= o[d];
      } else {
        out.push_back(o[d]);
        for (size_t j = 0; j < ins.size(); ++j) strides[j].push_back(full[j][d]);
      }
    }
    std::reverse(out.begin(), out.end());
    for (auto& st : strides) std::reverse(st.begin(), st.end());
  }
  // One call per row of the innermost dim: f(first output index, operand offsets,
  // row length, operand strides along the row (each 0 or 1)).
  template <class F>
  void run_rows(F&& f) const {
    const size_t k = strides.size();
    std::vector<int64_t> step(k, 0);
    if (out.empty()) {  // a single element
      std::vector<int64_t> off(k, 0);
      f(int64_t(0), off.data(), int64_t(1), step.data());
      return;
    }
    const int64_t n = shape_numel(out), len = out.back();
    if (n == 0) return;
    for (size_t j = 0; j < k; ++j) step[j] = strides[j].back();
    const size_t r = out.size() - 1;  // outer dims
    std::vector<int64_t> idx(r, 0), off(k, 0);
    for (int64_t i = 0; i < n; i += len) {
      f(i, off.data(), len, step.data());
      for (int64_t d = int64_t(r) - 1; d >= 0; --d) {
        for (size_t j = 0; j < k; ++j) off[j] += strides[j][d];
        if (++idx[d] < out[d]) break;
        for (size_t j = 0; j < k; ++j) off[j] -= strides[j][d] * out[d];
        idx[d] = 0;
      }
    }
  }
};

}  // namespace lowbit
