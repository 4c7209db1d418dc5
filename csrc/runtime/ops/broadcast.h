// Numpy-style broadcasting of shapes.
#pragma once
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

}  // namespace lowbit
