// Numpy-style broadcasting of shapes.
#pragma once
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

// Odometer over an output shape, tracking the element offset of each operand.
struct Broadcast {
  Shape out;
  std::vector<std::vector<int64_t>> strides;
  Broadcast(const Shape& o, const std::vector<const Shape*>& ins) : out(o) {
    for (const Shape* s : ins) strides.push_back(broadcast_strides(*s, o));
  }
  template <class F>
  void run(F&& f) const {
    const int64_t n = shape_numel(out);
    const size_t r = out.size(), k = strides.size();
    std::vector<int64_t> idx(r, 0), off(k, 0);
    for (int64_t i = 0; i < n; ++i) {
      f(i, off.data());
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
