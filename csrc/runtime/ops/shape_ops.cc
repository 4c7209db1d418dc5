// Reshape, Flatten (copies: cheap next to the GEMMs, and keeps the arena plan
// free of aliases) and Transpose.
#include <cstring>

#include "runtime/ops/common.h"

namespace lowbit {
namespace {

void copy_f32(const RunArgs& r) {
  int64_t n = r.out[0].numel();
  if (n && r.out[0].data != r.in[0].data) std::memcpy(r.out[0].data, r.in[0].data, size_t(n) * dtype_size(r.in[0].dtype));
}

// Ops that only move bytes read and write any dtype (the input's).
class AnyDType : public Op {
 public:
  explicit AnyDType(DType t) : t_(t) {}
  DType out_dtype(size_t) const override { return t_; }
  bool input_dtype_ok(size_t i, DType t) const override { return i == 0 ? t == t_ : t == DType::kI64; }

 protected:
  DType t_;
};

DType dt0(const NodeSpec& n, const std::vector<ValueSpec>& v) {
  return n.inputs.empty() || n.inputs[0] < 0 ? DType::kF32 : v[n.inputs[0]].dtype;
}

}  // namespace

Shape reshape_target(const Shape& x, const std::vector<int64_t>& target_, bool allowzero_) {
  const int64_t n = shape_numel(x);
  Shape o(target_.size());
  int64_t known = 1, infer_at = -1;
  for (size_t i = 0; i < target_.size(); ++i) {
    int64_t d = target_[i];
    if (d == 0 && !allowzero_) {
      if (i >= x.size()) throw ShapeError("Reshape target " + shape_str(target_) + " copies dim " + std::to_string(i) + " the input lacks");
      d = x[i];
    }
    if (d == -1) {
      if (infer_at >= 0) throw ShapeError("Reshape target " + shape_str(target_) + " has more than one -1");
      infer_at = int64_t(i);
      continue;
    }
    if (d < 0) throw ShapeError("Reshape target " + shape_str(target_) + " has a negative dim");
    o[i] = d;
    // check before multiplying: dims come from the file and may be up to 2^63
    if (d != 0 && known > (int64_t(1) << 48) / d) throw ShapeError("Reshape target " + shape_str(target_) + " is too large");
    known *= d;
  }
  if (infer_at >= 0) {
    if (known == 0 || n % known) throw ShapeError("cannot reshape " + shape_str(x) + " to " + shape_str(target_));
    o[infer_at] = n / known;
  } else if (known != n) {
    throw ShapeError("cannot reshape " + shape_str(x) + " (" + std::to_string(n) + " elements) to " + shape_str(target_));
  }
  return o;
}

namespace {

// Target shape from the attribute (folded at convert time) or from the second
// input, known while planning (computed from input shapes: Shape -> Gather ->
// Concat chains, the usual exporter output for dynamic batch / sequence).
class Reshape : public AnyDType {
 public:
  Reshape(DType t, std::vector<int64_t> shape, bool has_attr, bool allowzero)
      : AnyDType(t), attr_(std::move(shape)), has_attr_(has_attr), allowzero_(allowzero) {}
  void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const override {
    infer_values(in, std::vector<const void*>(in.size(), nullptr), out);
  }
  void infer_values(const std::vector<const Shape*>& in, const std::vector<const void*>& vals,
                    std::vector<Shape>& out) const override {
    need_inputs(in, 1, "Reshape");
    std::vector<int64_t> target_ = attr_;
    if (!has_attr_) {
      if (in.size() < 2 || !in[1] || !vals[1])
        throw ShapeError("Reshape's target shape must be computable from input shapes and constants while planning");
      const int64_t k = shape_numel(*in[1]);
      target_.assign(static_cast<const int64_t*>(vals[1]), static_cast<const int64_t*>(vals[1]) + k);
    }
    out[0] = reshape_target(*in[0], target_, allowzero_);
  }
  void run(const RunArgs& r) const override { copy_f32(r); }

 private:
  std::vector<int64_t> attr_;
  bool has_attr_, allowzero_;
};

class Flatten : public AnyDType {
 public:
  Flatten(DType t, int64_t axis) : AnyDType(t), axis_(axis) {}
  void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const override {
    need_inputs(in, 1, "Flatten");
    const Shape& x = *in[0];
    int64_t r = int64_t(x.size());
    int64_t a = axis_ < 0 ? axis_ + r : axis_;
    if (a < 0 || a > r) throw ShapeError("Flatten axis " + std::to_string(axis_) + " out of range for rank " + std::to_string(r));
    int64_t outer = 1, inner = 1;
    for (int64_t d = 0; d < a; ++d) outer *= x[d];
    for (int64_t d = a; d < r; ++d) inner *= x[d];
    out[0] = {outer, inner};
  }
  void run(const RunArgs& r) const override { copy_f32(r); }

 private:
  int64_t axis_;
};

class Transpose : public AnyDType {
 public:
  Transpose(DType t, std::vector<int64_t> perm) : AnyDType(t), perm_(std::move(perm)) {}
  std::vector<int64_t> perm_for(size_t rank) const {
    std::vector<int64_t> p = perm_;
    if (p.empty())
      for (size_t i = 0; i < rank; ++i) p.push_back(int64_t(rank - 1 - i));
    if (p.size() != rank) throw ShapeError("Transpose perm has " + std::to_string(p.size()) + " entries for rank " + std::to_string(rank));
    std::vector<char> seen(rank, 0);
    for (int64_t v : p) {
      if (v < 0 || v >= int64_t(rank) || seen[v]) throw ShapeError("Transpose perm is not a permutation");
      seen[v] = 1;
    }
    return p;
  }
  void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const override {
    need_inputs(in, 1, "Transpose");
    auto p = perm_for(in[0]->size());
    Shape o(p.size());
    for (size_t i = 0; i < p.size(); ++i) o[i] = (*in[0])[p[i]];
    out[0] = o;
  }
  void run(const RunArgs& r) const override {
    switch (dtype_size(t_)) {
      case 8: return go<int64_t>(r);
      case 4: return go<float>(r);
      default: return go<uint8_t>(r);
    }
  }
  template <class T>
  void go(const RunArgs& r) const {
    const Shape& s = r.in[0].shape;
    const size_t rank = s.size();
    auto p = perm_for(rank);
    const Shape& os = r.out[0].shape;
    const int64_t n = shape_numel(os);
    if (n == 0) return;
    std::vector<int64_t> istride(rank, 1);
    for (int64_t d = int64_t(rank) - 2; d >= 0; --d) istride[d] = istride[d + 1] * s[d + 1];
    std::vector<int64_t> st(rank);  // input stride for each output dim
    for (size_t i = 0; i < rank; ++i) st[i] = istride[p[i]];
    const T* x = r.in[0].as<const T>();
    T* y = r.out[0].as<T>();
    if (batched_2d<T>(s, p, x, y)) return;
    const int64_t inner = rank ? os.back() : 1;
    const int64_t sin = rank ? st.back() : 1;
    const int64_t rows = inner ? n / inner : 0;
    parallel_chunks(rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(inner, 1)), [&](int64_t r0, int64_t r1) {
      std::vector<int64_t> idx(rank ? rank - 1 : 0, 0);
      int64_t rem = r0;
      for (int64_t d = int64_t(rank) - 2; d >= 0; --d) { idx[d] = rem % os[d]; rem /= os[d]; }
      for (int64_t row = r0; row < r1; ++row) {
        int64_t off = 0;
        for (size_t d = 0; d + 1 < rank; ++d) off += idx[d] * st[d];
        T* yr = y + row * inner;
        if (sin == 1) std::memcpy(yr, x + off, size_t(inner) * sizeof(T));  // innermost axis kept: row copies
        else for (int64_t k = 0; k < inner; ++k) yr[k] = x[off + k * sin];
        for (int64_t d = int64_t(rank) - 2; d >= 0; --d) {
          if (++idx[d] < os[d]) break;
          idx[d] = 0;
        }
      }
    });
  }

 private:
  // Merges input axes that stay adjacent and in order under the permutation (size-1
  // axes dropped). When what is left swaps the last two merged axes -- [B, R, C] ->
  // [B, C, R]: NCHW <-> NHWC, attention's K^T -- it runs as cache-blocked 2-D
  // transposes instead of one strided gather per output row. Returns false otherwise.
  template <class T>
  static bool batched_2d(const Shape& s, const std::vector<int64_t>& p, const T* x, T* y) {
    std::vector<int64_t> idx(s.size(), -1), rs, rp;  // size-1 axes dropped: reduced shape and perm
    for (size_t d = 0; d < s.size(); ++d)
      if (s[d] != 1) {
        idx[d] = int64_t(rs.size());
        rs.push_back(s[d]);
      }
    for (int64_t d : p)
      if (idx[d] >= 0) rp.push_back(idx[d]);
    // groups: runs of output axes whose input axes are consecutive (numbered in output order)
    std::vector<int64_t> dims, first;  // per group: merged size, first input axis
    for (size_t i = 0; i < rp.size(); ++i) {
      if (i > 0 && rp[i] == rp[i - 1] + 1) {
        dims.back() *= rs[rp[i]];
      } else {
        dims.push_back(rs[rp[i]]);
        first.push_back(rp[i]);
      }
    }
    const size_t g = dims.size();
    if (g < 2) return false;
    // input order of the groups must be 0, 1, ..., g-3, g-1, g-2: a batch of 2-D transposes
    for (size_t i = 0; i + 1 < g; ++i) {
      const int64_t a = first[i], b = first[i + 1];
      if (i + 2 < g ? a > b : a < b) return false;
    }
    if (g > 2 && first[g - 3] > first[g - 1]) return false;
    const int64_t C = dims[g - 2], R = dims[g - 1];  // output [B, C, R] from input [B, R, C]
    int64_t B = 1;
    for (size_t i = 0; i + 2 < g; ++i) B *= dims[i];
    constexpr int64_t kb = 16;  // 16 x 16 blocks: both sides touch whole cache lines
    const int64_t rb = (R + kb - 1) / kb;
    parallel_chunks(B * rb, std::max<int64_t>(1, 4096 / std::max<int64_t>(C * kb, 1)), [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t b = t / rb, r0 = (t % rb) * kb, r1 = std::min(R, r0 + kb);
        const T* xb = x + b * R * C;
        T* yb = y + b * R * C;
        for (int64_t c0 = 0; c0 < C; c0 += kb) {
          const int64_t c1 = std::min(C, c0 + kb);
          for (int64_t c = c0; c < c1; ++c)
            for (int64_t rr = r0; rr < r1; ++rr) yb[c * R + rr] = xb[rr * C + c];
        }
      }
    });
    return true;
  }

  std::vector<int64_t> perm_;
};

std::unique_ptr<Op> mk_reshape(const NodeSpec& n, const std::vector<ValueSpec>& v) {
  const auto* s = n.attrs.get_ints("shape");
  if (!s && (n.inputs.size() < 2 || n.inputs[1] < 0))
    throw std::invalid_argument("Reshape '" + n.name + "' needs a 'shape' attribute or a shape input");
  return std::make_unique<Reshape>(dt0(n, v), s ? *s : std::vector<int64_t>{}, s != nullptr, n.attrs.get_int("allowzero", 0) != 0);
}
std::unique_ptr<Op> mk_flatten(const NodeSpec& n, const std::vector<ValueSpec>& v) {
  return std::make_unique<Flatten>(dt0(n, v), n.attrs.get_int("axis", 1));
}
std::unique_ptr<Op> mk_transpose(const NodeSpec& n, const std::vector<ValueSpec>& v) {
  const auto* p = n.attrs.get_ints("perm");
  return std::make_unique<Transpose>(dt0(n, v), p ? *p : std::vector<int64_t>{});
}

}  // namespace

void register_shape_ops() {
  register_op("Reshape", &mk_reshape);
  register_op("Flatten", &mk_flatten);
  register_op("Transpose", &mk_transpose);
}

}  // namespace lowbit
