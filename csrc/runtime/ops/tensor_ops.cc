// Data-movement and shape-arithmetic ops that exporters emit around attention
// masks and embeddings: Shape, ConstantOfShape, Cast, Where, Expand, Range,
// Concat, Split, Slice, Gather, GatherElements, Squeeze, Unsqueeze, and the
// reductions ReduceMean / ReduceSum. Most work on any dtype (they move bytes);
// shape inputs (axes, starts, target shapes) must be known while planning,
// which holds whenever they are computed from input shapes and constants.
#include <cmath>
#include <cstring>

#include "runtime/ops/broadcast.h"
#include "runtime/ops/common.h"

namespace lowbit {
namespace {

DType in_dtype(const NodeSpec& n, const std::vector<ValueSpec>& v, size_t k) {
  if (k >= n.inputs.size() || n.inputs[k] < 0) return DType::kF32;
  return v[n.inputs[k]].dtype;
}

bool is_int(DType t) { return t == DType::kI64 || t == DType::kI32; }

// Reads element i of an integer (i64/i32) tensor known at plan time.
int64_t int_at(const void* p, DType t, int64_t i) {
  return t == DType::kI64 ? static_cast<const int64_t*>(p)[i] : int64_t(static_cast<const int32_t*>(p)[i]);
}

std::vector<int64_t> int_values(const void* p, const Shape* s, DType t, const char* what) {
  if (!p) throw ShapeError(std::string(what) + " must be computable from input shapes and constants while planning");
  std::vector<int64_t> out;
  const int64_t n = shape_numel(*s);
  for (int64_t i = 0; i < n; ++i) out.push_back(int_at(p, t, i));
  return out;
}

double num_at(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::kF32: return static_cast<const float*>(p)[i];
    case DType::kI64: return double(static_cast<const int64_t*>(p)[i]);
    case DType::kI32: return static_cast<const int32_t*>(p)[i];
    case DType::kI8: return static_cast<const int8_t*>(p)[i];
    case DType::kU8: return static_cast<const uint8_t*>(p)[i];
  }
  return 0;
}

class Shape_ : public Op {
 public:
  Shape_(int64_t start, int64_t end) : start_(start), end_(end) {}
  std::pair<int64_t, int64_t> range(int64_t r) const {
    auto clamp = [r](int64_t v) { return std::min(std::max(v < 0 ? v + r : v, int64_t(0)), r); };
    int64_t s = clamp(start_), e = end_ == INT64_MAX ? r : clamp(end_);
    return {s, std::max(s, e)};
  }
  void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const override {
    need_inputs(in, 1, "Shape");
    auto [s, e] = range(int64_t(in[0]->size()));
    out[0] = {e - s};
  }
  void run(const RunArgs& a) const override {
    auto [s, e] = range(int64_t(a.in[0].shape.size()));
    for (int64_t i = s; i < e; ++i) a.out[0].as<int64_t>()[i - s] = a.in[0].shape[i];
  }
  bool shape_only() const override { return true; }
  DType out_dtype(size_t) const override { return DType::kI64; }
  bool input_dtype_ok(size_t, DType) const override { return true; }

 private:
  int64_t start_, end_;
};

// Fills a tensor of the given shape with one value (float32, int64, int32 or
// bool stored as uint8).
class ConstantOfShape : public Op {
 public:
  ConstantOfShape(DType t, double v) : t_(t), v_(v) {}
  void infer(const std::vector<const Shape*>&, std::vector<Shape>&) const override {}
  void infer_values(const std::vector<const Shape*>& in, const std::vector<const void*>& vals,
                    std::vector<Shape>& out) const override {
    need_inputs(in, 1, "ConstantOfShape");
    out[0] = int_values(vals[0], in[0], DType::kI64, "ConstantOfShape's shape");
    shape_numel(out[0]);
  }
  void run(const RunArgs& a) const override {
    const int64_t n = a.out[0].numel();
    switch (t_) {
      case DType::kF32: std::fill_n(a.out[0].as<float>(), n, float(v_)); break;
      case DType::kI64: std::fill_n(a.out[0].as<int64_t>(), n, int64_t(v_)); break;
      case DType::kI32: std::fill_n(a.out[0].as<int32_t>(), n, int32_t(v_)); break;
      case DType::kI8: std::fill_n(a.out[0].as<int8_t>(), n, int8_t(v_)); break;
      case DType::kU8: std::fill_n(a.out[0].as<uint8_t>(), n, uint8_t(v_)); break;
    }
  }
  DType out_dtype(size_t) const override { return t_; }
  bool input_dtype_ok(size_t, DType t) const override { return t == DType::kI64; }

 private:
  DType t_;
  double v_;
};

template <class To>
To convert_to(double x) {
  if constexpr (std::is_floating_point_v<To>) return To(x);
  else {
    if (std::isnan(x)) return To(0);  // NaN -> 0 (the C cast would be undefined)
    x = std::trunc(x);
    const double lo = double(std::numeric_limits<To>::min()), hi = double(std::numeric_limits<To>::max());
    return To(std::min(std::max(x, lo), hi));  // saturate instead of undefined behaviour
  }
}

class Cast : public Op {
 public:
  Cast(DType from, DType to, bool to_bool) : from_(from), to_(to), bool_(to_bool) {}
  void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const override {
    need_inputs(in, 1, "Cast");
    out[0] = *in[0];
  }
  void run(const RunArgs& a) const override {
    const int64_t n = a.out[0].numel();
    const void* x = a.in[0].data;
    void* y = a.out[0].data;
    if (from_ == to_ && !bool_) {
      if (n) std::memcpy(y, x, size_t(n) * dtype_size(to_));
      return;
    }
    if (from_ == DType::kI8 && to_ == DType::kF32 && !bool_) {  // int8 embedding rows (exact)
      const int8_t* xi = static_cast<const int8_t*>(x);
      float* yf = static_cast<float*>(y);
      for (int64_t i = 0; i < n; ++i) yf[i] = float(xi[i]);
      return;
    }
    // int64 -> float goes through double exactly as numpy does (round to nearest)
    for (int64_t i = 0; i < n; ++i) {
      double v = num_at(x, from_, i);
      if (bool_) v = v != 0 ? 1 : 0;
      switch (to_) {
        case DType::kF32: static_cast<float*>(y)[i] = from_ == DType::kI64 ? float(static_cast<const int64_t*>(x)[i]) : float(v); break;
        case DType::kI64: static_cast<int64_t*>(y)[i] = convert_to<int64_t>(v); break;
        case DType::kI32: static_cast<int32_t*>(y)[i] = convert_to<int32_t>(v); break;
        case DType::kI8: static_cast<int8_t*>(y)[i] = convert_to<int8_t>(v); break;
        case DType::kU8: static_cast<uint8_t*>(y)[i] = convert_to<uint8_t>(v); break;
      }
    }
  }
  DType out_dtype(size_t) const override { return to_; }
  bool input_dtype_ok(size_t, DType) const override { return true; }

 private:
  DType from_, to_;
  bool bool_;
};

// Where(cond, x, y) with broadcasting; cond is bool (uint8).
class Where : public Op {
 public:
  explicit Where(DType t) : t_(t) {}
  void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const override {
    need_inputs(in, 3, "Where");
    out[0] = broadcast_shapes(broadcast_shapes(*in[0], *in[1]), *in[2]);
  }
  void run(const RunArgs& a) const override {
    switch (dtype_size(t_)) {
      case 1: return go<uint8_t>(a);
      case 2: return go<uint16_t>(a);
      case 4: return go<uint32_t>(a);
      default: return go<uint64_t>(a);
    }
  }
  DType out_dtype(size_t) const override { return t_; }
  bool input_dtype_ok(size_t i, DType t) const override { return i == 0 ? t == DType::kU8 : t == t_; }

 private:
  // T: an unsigned type of the element's size (the values are copied, not computed on).
  template <class T>
  void go(const RunArgs& a) const {
    Broadcast b(a.out[0].shape, {&a.in[0].shape, &a.in[1].shape, &a.in[2].shape});
    const uint8_t* c = a.in[0].as<const uint8_t>();
    const T* x = static_cast<const T*>(a.in[1].data);
    const T* y = static_cast<const T*>(a.in[2].data);
    T* o = static_cast<T*>(a.out[0].data);
    b.run_rows([&](int64_t i, const int64_t* off, int64_t n, const int64_t* st) {
      const uint8_t* cr = c + off[0];
      const T* xr = x + off[1];
      const T* yr = y + off[2];
      T* orow = o + i;
      if (st[0] == 1 && st[1] == 0 && st[2] == 0) {  // a mask choosing between two scalars
        const T xv = xr[0], yv = yr[0];
        for (int64_t k = 0; k < n; ++k) orow[k] = cr[k] ? xv : yv;
      } else if (st[0] == 1 && st[1] == 1 && st[2] == 1) {
        for (int64_t k = 0; k < n; ++k) orow[k] = cr[k] ? xr[k] : yr[k];
      } else {
        for (int64_t k = 0; k < n; ++k) orow[k] = cr[k * st[0]] ? xr[k * st[1]] : yr[k * st[2]];
      }
    });
  }
  DType t_;
};

template <class T>
void fill_row(uint8_t* dst, const uint8_t* src, int64_t n) {
  T v;
  std::memcpy(&v, src, sizeof(T));
  T* d = reinterpret_cast<T*>(dst);  // output buffers are aligned to at least the element size
  for (int64_t k = 0; k < n; ++k) d[k] = v;
}

class Expand : public Op {
 public:
  explicit Expand(DType t) : t_(t) {}
  void infer(const std::vector<const Shape*>&, std::vector<Shape>&) const override {}
  void infer_values(const std::vector<const Shape*>& in, const std::vector<const void*>& vals,
                    std::vector<Shape>& out) const override {
    need_inputs(in, 2, "Expand");
    Shape target = int_values(vals[1], in[1], DType::kI64, "Expand's shape");
    out[0] = broadcast_shapes(*in[0], target);
  }
  void run(const RunArgs& a) const override {
    Broadcast b(a.out[0].shape, {&a.in[0].shape});
    const size_t es = dtype_size(t_);
    const uint8_t* x = static_cast<const uint8_t*>(a.in[0].data);
    uint8_t* o = static_cast<uint8_t*>(a.out[0].data);
    b.run_rows([&](int64_t i, const int64_t* off, int64_t n, const int64_t* st) {
      uint8_t* orow = o + size_t(i) * es;
      const uint8_t* src = x + size_t(off[0]) * es;
      if (st[0] == 1) {
        std::memcpy(orow, src, size_t(n) * es);
      } else {  // one element repeated along the row
        switch (es) {
          case 1: fill_row<uint8_t>(orow, src, n); break;
          case 2: fill_row<uint16_t>(orow, src, n); break;
          case 4: fill_row<uint32_t>(orow, src, n); break;
          default: fill_row<uint64_t>(orow, src, n); break;
        }
      }
    });
  }
  DType out_dtype(size_t) const override { return t_; }
  bool input_dtype_ok(size_t i, DType t) const override { return i == 0 ? t == t_ : t == DType::kI64; }

 private:
  DType t_;
};

class Range : public Op {
 public:
  explicit Range(DType t) : t_(t) {}
  void infer(const std::vector<const Shape*>&, std::vector<Shape>&) const override {}
  void infer_values(const std::vector<const Shape*>& in, const std::vector<const void*>& vals,
                    std::vector<Shape>& out) const override {
    need_inputs(in, 3, "Range");
    for (int k = 0; k < 3; ++k) {
      if (!vals[k]) throw ShapeError("Range's start, limit and delta must be known while planning");
      if (shape_numel(*in[k]) != 1) throw ShapeError("Range's start, limit and delta must be scalars");
    }
    double s = num_at(vals[0], t_, 0), l = num_at(vals[1], t_, 0), d = num_at(vals[2], t_, 0);
    if (d == 0 || !std::isfinite(s) || !std::isfinite(l) || !std::isfinite(d)) throw ShapeError("Range needs a finite, non-zero delta");
    double n = std::ceil((l - s) / d);
    if (n > double(int64_t(1) << 40)) throw ShapeError("Range is too long");
    out[0] = {int64_t(std::max(n, 0.0))};
  }
  void run(const RunArgs& a) const override {
    const int64_t n = a.out[0].numel();
    if (t_ == DType::kF32) {
      float s = a.in[0].as<const float>()[0], d = a.in[2].as<const float>()[0];
      for (int64_t i = 0; i < n; ++i) a.out[0].as<float>()[i] = s + float(i) * d;
    } else if (t_ == DType::kI64) {
      int64_t s = a.in[0].as<const int64_t>()[0], d = a.in[2].as<const int64_t>()[0];
      for (int64_t i = 0; i < n; ++i) a.out[0].as<int64_t>()[i] = s + i * d;
    } else {
      int32_t s = a.in[0].as<const int32_t>()[0], d = a.in[2].as<const int32_t>()[0];
      for (int64_t i = 0; i < n; ++i) a.out[0].as<int32_t>()[i] = int32_t(s + i * d);
    }
  }
  DType out_dtype(size_t) const override { return t_; }
  bool input_dtype_ok(size_t, DType t) const override { return t == t_; }

 private:
  DType t_;
};

class Concat : public Op {
 public:
  Concat(DType t, int64_t axis) : t_(t), axis_(axis) {}
  void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const override {
    if (in.empty() || !in[0]) throw ShapeError("Concat needs inputs");
    const Shape& f = *in[0];
    int64_t ax = norm_axis_nd(axis_, int64_t(f.size()), "Concat");
    Shape o = f;
    o[ax] = 0;
    for (const Shape* s : in) {
      if (!s || s->size() != f.size()) throw ShapeError("Concat inputs must have the same rank");
      for (size_t d = 0; d < f.size(); ++d)
        if (int64_t(d) != ax && (*s)[d] != f[d]) throw ShapeError("Concat inputs differ off the axis: " + shape_str(*s) + " vs " + shape_str(f));
      o[ax] += (*s)[ax];
    }
    out[0] = o;
  }
  void run(const RunArgs& a) const override {
    const Shape& os = a.out[0].shape;
    const int64_t ax = norm_axis_nd(axis_, int64_t(os.size()), "Concat");
    int64_t outer = 1, inner = dtype_size(t_);
    for (int64_t d = 0; d < ax; ++d) outer *= os[d];
    for (size_t d = size_t(ax) + 1; d < os.size(); ++d) inner *= os[d];
    const int64_t orow = os[ax] * inner;
    uint8_t* y = a.out[0].as<uint8_t>();
    int64_t at = 0;
    for (const TensorRef& t : a.in) {
      const int64_t row = t.shape[ax] * inner;
      const uint8_t* x = t.as<const uint8_t>();
      for (int64_t o = 0; o < outer; ++o)
        if (row) std::memcpy(y + o * orow + at, x + o * row, size_t(row));
      at += row;
    }
  }
  DType out_dtype(size_t) const override { return t_; }
  bool input_dtype_ok(size_t, DType t) const override { return t == t_; }

 private:
  DType t_;
  int64_t axis_;
};

class Split : public Op {
 public:
  Split(DType t, int64_t axis, std::vector<int64_t> sizes, size_t nout)
      : t_(t), axis_(axis), sizes_(std::move(sizes)), nout_(nout) {}
  size_t max_outputs() const override { return nout_; }  // one output per part, as many as the node lists
  std::vector<int64_t> parts(const Shape& x, const std::vector<const void*>* vals, const std::vector<const Shape*>* in) const {
    int64_t ax = norm_axis_nd(axis_, int64_t(x.size()), "Split");
    std::vector<int64_t> p = sizes_;
    if (p.empty() && vals && in->size() > 1 && (*in)[1]) p = int_values((*vals)[1], (*in)[1], DType::kI64, "Split's sizes");
    if (p.empty()) {  // equal parts, the last one smaller (opset 18)
      int64_t each = (x[ax] + int64_t(nout_) - 1) / int64_t(nout_);
      for (size_t i = 0; i < nout_; ++i) p.push_back(std::max<int64_t>(0, std::min(each, x[ax] - each * int64_t(i))));
    }
    int64_t sum = 0;
    for (int64_t s : p) {
      if (s < 0) throw ShapeError("Split sizes must be >= 0");
      sum += s;
    }
    if (p.size() != nout_ || sum != x[ax])
      throw ShapeError("Split sizes do not add up to dimension " + std::to_string(x[ax]) + " over " + std::to_string(nout_) + " outputs");
    return p;
  }
  void infer(const std::vector<const Shape*>&, std::vector<Shape>&) const override {}
  void infer_values(const std::vector<const Shape*>& in, const std::vector<const void*>& vals,
                    std::vector<Shape>& out) const override {
    need_inputs(in, 1, "Split");
    auto p = parts(*in[0], &vals, &in);
    int64_t ax = norm_axis_nd(axis_, int64_t(in[0]->size()), "Split");
    for (size_t i = 0; i < nout_; ++i) {
      out[i] = *in[0];
      out[i][ax] = p[i];
    }
  }
  void run(const RunArgs& a) const override {
    const Shape& xs = a.in[0].shape;
    const int64_t ax = norm_axis_nd(axis_, int64_t(xs.size()), "Split");
    int64_t outer = 1, inner = dtype_size(t_);
    for (int64_t d = 0; d < ax; ++d) outer *= xs[d];
    for (size_t d = size_t(ax) + 1; d < xs.size(); ++d) inner *= xs[d];
    const uint8_t* x = a.in[0].as<const uint8_t>();
    const int64_t xrow = xs[ax] * inner;
    int64_t at = 0;
    for (const TensorRef& t : a.out) {
      const int64_t row = t.shape[ax] * inner;
      for (int64_t o = 0; o < outer; ++o)
        if (row) std::memcpy(t.as<uint8_t>() + o * row, x + o * xrow + at, size_t(row));
      at += row;
    }
  }
  DType out_dtype(size_t) const override { return t_; }
  bool input_dtype_ok(size_t i, DType t) const override { return i == 0 ? t == t_ : t == DType::kI64; }

 private:
  DType t_;
  int64_t axis_;
  std::vector<int64_t> sizes_;
  size_t nout_;
};

// Slice(data, starts, ends, axes?, steps?) with ONNX clamping rules.
class Slice : public Op {
 public:
  explicit Slice(DType t) : t_(t) {}
  struct Spec { Shape out; std::vector<int64_t> start, step; };
  Spec spec(const std::vector<const Shape*>& in, const std::vector<const void*>& vals) const {
    need_inputs(in, 3, "Slice");
    const Shape& x = *in[0];
    const int64_t r = int64_t(x.size());
    auto starts = int_values(vals[1], in[1], dt_[1], "Slice's starts");
    auto ends = int_values(vals[2], in[2], dt_[2], "Slice's ends");
    std::vector<int64_t> axes, steps;
    if (in.size() > 3 && in[3]) axes = int_values(vals[3], in[3], dt_[3], "Slice's axes");
    if (in.size() > 4 && in[4]) steps = int_values(vals[4], in[4], dt_[4], "Slice's steps");
    if (axes.empty()) for (size_t i = 0; i < starts.size(); ++i) axes.push_back(int64_t(i));
    if (steps.empty()) steps.assign(starts.size(), 1);
    if (ends.size() != starts.size() || axes.size() != starts.size() || steps.size() != starts.size())
      throw ShapeError("Slice's starts, ends, axes and steps differ in length");
    Spec s;
    s.out = x;
    s.start.assign(r, 0);
    s.step.assign(r, 1);
    std::vector<char> seen(r, 0);
    for (size_t i = 0; i < starts.size(); ++i) {
      int64_t ax = norm_axis_nd(axes[i], r, "Slice");
      if (seen[ax]) throw ShapeError("Slice repeats an axis");
      seen[ax] = 1;
      int64_t dim = x[ax], st = steps[i];
      if (st == 0 || st > (int64_t(1) << 40) || st < -(int64_t(1) << 40)) throw ShapeError("Slice step must be non-zero and at most 2^40 in size");
      int64_t b = starts[i], e = ends[i];
      if (b < 0) b += dim;
      if (e < 0 && e > INT64_MIN / 2) e += dim;
      if (st > 0) {
        b = std::min(std::max<int64_t>(b, 0), dim);
        e = std::min(std::max<int64_t>(e, 0), dim);
        s.out[ax] = e > b ? (e - b + st - 1) / st : 0;
      } else {
        b = std::min(std::max<int64_t>(b, -1), dim - 1);
        e = std::min(std::max<int64_t>(e, -1), dim - 1);
        s.out[ax] = b > e ? (b - e + (-st) - 1) / (-st) : 0;
      }
      s.start[ax] = b;
      s.step[ax] = st;
    }
    return s;
  }
  void infer(const std::vector<const Shape*>&, std::vector<Shape>&) const override {}
  void infer_values(const std::vector<const Shape*>& in, const std::vector<const void*>& vals,
                    std::vector<Shape>& out) const override {
    out[0] = spec(in, vals).out;
  }
  void run(const RunArgs& a) const override {
    std::vector<const Shape*> in;
    std::vector<const void*> vals;
    for (const TensorRef& t : a.in) { in.push_back(t.data || t.shape.size() ? &t.shape : nullptr); vals.push_back(t.data); }
    for (size_t k = 1; k < a.in.size(); ++k) if (!a.in[k].data) in[k] = nullptr;
    Spec s = spec(in, vals);
    const Shape& xs = a.in[0].shape;
    const size_t r = xs.size(), es = dtype_size(t_);
    std::vector<int64_t> xstride(r, 1);
    for (int64_t d = int64_t(r) - 2; d >= 0; --d) xstride[d] = xstride[d + 1] * xs[d + 1];
    int64_t base = 0;
    std::vector<int64_t> st(r);
    for (size_t d = 0; d < r; ++d) { base += s.start[d] * xstride[d]; st[d] = s.step[d] * xstride[d]; }
    const Shape& os = s.out;
    const uint8_t* x = a.in[0].as<const uint8_t>();
    uint8_t* y = a.out[0].as<uint8_t>();
    std::vector<int64_t> idx(r, 0);
    const int64_t n = shape_numel(os);
    int64_t off = base;
    for (int64_t i = 0; i < n; ++i) {
      std::memcpy(y + i * es, x + off * es, es);
      for (int64_t d = int64_t(r) - 1; d >= 0; --d) {
        off += st[d];
        if (++idx[d] < os[d]) break;
        off -= st[d] * os[d];
        idx[d] = 0;
      }
    }
  }
  DType out_dtype(size_t) const override { return t_; }
  bool input_dtype_ok(size_t i, DType t) const override { return i == 0 ? t == t_ : is_int(t); }
  DType dt_[5] = {DType::kF32, DType::kI64, DType::kI64, DType::kI64, DType::kI64};

 private:
  DType t_;
};

// Gather along an axis (embedding lookups: data [V, D], indices [B, S]).
class Gather : public Op {
 public:
  Gather(DType t, DType it, int64_t axis) : t_(t), it_(it), axis_(axis) {}
  void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const override {
    need_inputs(in, 2, "Gather");
    const Shape& x = *in[0];
    if (x.empty()) throw ShapeError("Gather data must have rank >= 1");
    int64_t ax = norm_axis(axis_, int64_t(x.size()), "Gather");
    Shape o(x.begin(), x.begin() + ax);
    o.insert(o.end(), in[1]->begin(), in[1]->end());
    o.insert(o.end(), x.begin() + ax + 1, x.end());
    out[0] = o;
  }
  void run(const RunArgs& a) const override {
    const Shape& x = a.in[0].shape;
    const int64_t ax = norm_axis(axis_, int64_t(x.size()), "Gather");
    int64_t outer = 1, inner = dtype_size(t_);
    for (int64_t d = 0; d < ax; ++d) outer *= x[d];
    for (size_t d = size_t(ax) + 1; d < x.size(); ++d) inner *= x[d];
    const int64_t dim = x[ax], ni = a.in[1].numel();
    const void* ip = a.in[1].data;
    for (int64_t j = 0; j < ni; ++j) {  // validate first: untrusted indices must not read out of bounds
      int64_t k = int_at(ip, it_, j);
      if (k < -dim || k >= dim)
        throw std::out_of_range("Gather index " + std::to_string(k) + " is out of range for dimension " + std::to_string(dim));
    }
    const uint8_t* xp = a.in[0].as<const uint8_t>();
    uint8_t* y = a.out[0].as<uint8_t>();
    parallel_chunks(outer * ni, std::max<int64_t>(1, 16384 / std::max<int64_t>(inner, 1)), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t o = r / ni, j = r % ni;
        int64_t k = int_at(ip, it_, j);
        if (k < 0) k += dim;
        std::memcpy(y + r * inner, xp + (o * dim + k) * inner, size_t(inner));
      }
    });
  }
  DType out_dtype(size_t) const override { return t_; }
  bool input_dtype_ok(size_t i, DType t) const override { return i == 0 ? t == t_ : is_int(t); }

 private:
  DType t_, it_;
  int64_t axis_;
};

// GatherDequantize(codes [V, D] int8, scales [V, 1] float32, ids): rows of an int8 lookup
// table back to float32, y[..., :] = float(codes[id, :]) * scales[id] -- one op for the
// Mul(Cast(Gather(codes, ids)), Gather(scales, ids)) it replaces, with the same bits (the
// conversion is exact, the product rounds once either way).
class GatherDequantize : public Op {
 public:
  explicit GatherDequantize(DType it) : it_(it) {}
  void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const override {
    need_inputs(in, 3, "GatherDequantize");
    const Shape& t = *in[0];
    const Shape& sc = *in[1];
    if (t.size() != 2) throw ShapeError("GatherDequantize: expected a 2-D code table, got " + shape_str(t));
    if (!(sc.size() == 2 && sc[0] == t[0] && sc[1] == 1))
      throw ShapeError("GatherDequantize: expected scales [" + std::to_string(t[0]) + ", 1] for a table " + shape_str(t) +
                       ", got " + shape_str(sc));
    Shape o(in[2]->begin(), in[2]->end());
    o.push_back(t[1]);
    out[0] = o;
  }
  void run(const RunArgs& a) const override {
    const int64_t V = a.in[0].shape[0], D = a.in[0].shape[1], ni = a.in[2].numel();
    const void* ip = a.in[2].data;
    for (int64_t j = 0; j < ni; ++j) {  // validate first: untrusted indices must not read out of bounds
      const int64_t k = int_at(ip, it_, j);
      if (k < -V || k >= V)
        throw std::out_of_range("GatherDequantize index " + std::to_string(k) + " is out of range for " + std::to_string(V) +
                                " rows");
    }
    const int8_t* codes = a.in[0].as<const int8_t>();
    const float* scales = a.in[1].as<const float>();
    float* y = a.out[0].as<float>();
    parallel_chunks(ni, std::max<int64_t>(1, 16384 / std::max<int64_t>(D, 1)), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        int64_t k = int_at(ip, it_, r);
        if (k < 0) k += V;
        const int8_t* c = codes + k * D;
        const float s = scales[k];
        float* yr = y + r * D;
        for (int64_t d = 0; d < D; ++d) yr[d] = float(c[d]) * s;
      }
    });
  }
  bool input_dtype_ok(size_t i, DType t) const override {
    return i == 0 ? t == DType::kI8 : i == 1 ? t == DType::kF32 : is_int(t);
  }

 private:
  DType it_;
};

class GatherElements : public Op {
 public:
  GatherElements(DType t, DType it, int64_t axis) : t_(t), it_(it), axis_(axis) {}
  void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const override {
    need_inputs(in, 2, "GatherElements");
    if (in[0]->size() != in[1]->size()) throw ShapeError("GatherElements data and indices differ in rank");
    norm_axis_nd(axis_, int64_t(in[0]->size()), "GatherElements");
    out[0] = *in[1];
  }
  void run(const RunArgs& a) const override {
    const Shape& x = a.in[0].shape;
    const Shape& is = a.in[1].shape;
    const int64_t r = int64_t(x.size()), ax = norm_axis_nd(axis_, r, "GatherElements");
    std::vector<int64_t> xstride(r, 1);
    for (int64_t d = r - 2; d >= 0; --d) xstride[d] = xstride[d + 1] * x[d + 1];
    const size_t es = dtype_size(t_);
    std::vector<int64_t> idx(r, 0);
    const int64_t n = shape_numel(is);
    for (int64_t i = 0; i < n; ++i) {
      int64_t k = int_at(a.in[1].data, it_, i);
      if (k < -x[ax] || k >= x[ax]) throw std::out_of_range("GatherElements index " + std::to_string(k) + " out of range");
      if (k < 0) k += x[ax];
      int64_t off = 0;
      for (int64_t d = 0; d < r; ++d) {
        if (d != ax && idx[d] >= x[d]) throw std::out_of_range("GatherElements indices shape exceeds data shape");
        off += (d == ax ? k : idx[d]) * xstride[d];
      }
      std::memcpy(a.out[0].as<uint8_t>() + i * es, a.in[0].as<const uint8_t>() + off * es, es);
      for (int64_t d = r - 1; d >= 0; --d) {
        if (++idx[d] < is[d]) break;
        idx[d] = 0;
      }
    }
  }
  DType out_dtype(size_t) const override { return t_; }
  bool input_dtype_ok(size_t i, DType t) const override { return i == 0 ? t == t_ : is_int(t); }

 private:
  DType t_, it_;
  int64_t axis_;
};

// Squeeze / Unsqueeze: axes from the attribute or a plan-time-known input.
class SqueezeLike : public Op {
 public:
  SqueezeLike(DType t, bool un, std::vector<int64_t> axes, bool has_attr) : t_(t), un_(un), axes_(std::move(axes)), attr_(has_attr) {}
  void infer(const std::vector<const Shape*>&, std::vector<Shape>&) const override {}
  void infer_values(const std::vector<const Shape*>& in, const std::vector<const void*>& vals,
                    std::vector<Shape>& out) const override {
    need_inputs(in, 1, un_ ? "Unsqueeze" : "Squeeze");
    std::vector<int64_t> axes = axes_;
    bool given = attr_;
    if (!attr_ && in.size() > 1 && in[1]) {
      axes = int_values(vals[1], in[1], DType::kI64, "the axes");
      given = true;
    }
    const Shape& x = *in[0];
    if (un_) {
      if (!given) throw ShapeError("Unsqueeze needs axes");
      const int64_t r = int64_t(x.size() + axes.size());
      std::vector<char> mark(r, 0);
      for (int64_t a : axes) {
        int64_t ax = norm_axis(a, r, "Unsqueeze");
        if (mark[ax]) throw ShapeError("Unsqueeze repeats an axis");
        mark[ax] = 1;
      }
      Shape o;
      size_t k = 0;
      for (int64_t d = 0; d < r; ++d) o.push_back(mark[d] ? 1 : x[k++]);
      out[0] = o;
    } else {
      const int64_t r = int64_t(x.size());
      std::vector<char> mark(r, 0);
      if (!given) for (int64_t d = 0; d < r; ++d) mark[d] = x[d] == 1;
      for (int64_t a : axes) {
        int64_t ax = norm_axis_nd(a, r, "Squeeze");
        if (x[ax] != 1) throw ShapeError("Squeeze axis " + std::to_string(a) + " has size " + std::to_string(x[ax]) + ", not 1");
        mark[ax] = 1;
      }
      Shape o;
      for (int64_t d = 0; d < r; ++d) if (!mark[d]) o.push_back(x[d]);
      out[0] = o;
    }
  }
  void run(const RunArgs& a) const override {
    int64_t n = a.out[0].numel();
    if (n) std::memcpy(a.out[0].data, a.in[0].data, size_t(n) * dtype_size(t_));
  }
  DType out_dtype(size_t) const override { return t_; }
  bool input_dtype_ok(size_t i, DType t) const override { return i == 0 ? t == t_ : t == DType::kI64; }

 private:
  DType t_;
  bool un_;
  std::vector<int64_t> axes_;
  bool attr_;
};

// ReduceMean / ReduceSum over any set of axes (float32), threaded over outputs.
class Reduce : public Op {
 public:
  Reduce(bool mean, std::vector<int64_t> axes, bool has_axes, bool keepdims, bool noop_empty)
      : mean_(mean), axes_(std::move(axes)), has_(has_axes), keep_(keepdims), noop_(noop_empty) {}
  std::vector<char> marks(const Shape& x, const std::vector<int64_t>& axes, bool given) const {
    const int64_t r = int64_t(x.size());
    std::vector<char> m(r, 0);
    if (!given || (axes.empty() && !noop_)) m.assign(r, 1);
    for (int64_t a : axes) m[norm_axis_nd(a, r, "Reduce")] = 1;
    return m;
  }
  std::vector<int64_t> axes_from(const std::vector<const Shape*>& in, const std::vector<const void*>& vals, bool* given) const {
    *given = has_;
    if (!has_ && in.size() > 1 && in[1]) {
      *given = true;
      return int_values(vals[1], in[1], DType::kI64, "the reduction axes");
    }
    return axes_;
  }
  void infer(const std::vector<const Shape*>&, std::vector<Shape>&) const override {}
  void infer_values(const std::vector<const Shape*>& in, const std::vector<const void*>& vals,
                    std::vector<Shape>& out) const override {
    need_inputs(in, 1, mean_ ? "ReduceMean" : "ReduceSum");
    bool given;
    auto axes = axes_from(in, vals, &given);
    auto m = marks(*in[0], axes, given);
    Shape o;
    for (size_t d = 0; d < m.size(); ++d) {
      if (!m[d]) o.push_back((*in[0])[d]);
      else if (keep_) o.push_back(1);
    }
    out[0] = o;
  }
  void run(const RunArgs& a) const override {
    std::vector<const Shape*> in;
    std::vector<const void*> vals;
    for (const TensorRef& t : a.in) { in.push_back(t.data ? &t.shape : nullptr); vals.push_back(t.data); }
    bool given;
    auto axes = axes_from(in, vals, &given);
    const Shape& x = a.in[0].shape;
    auto m = marks(x, axes, given);
    const int64_t r = int64_t(x.size());
    // Output dims in order, then reduced dims: offsets of each as strides of x.
    std::vector<int64_t> xstride(r, 1);
    for (int64_t d = r - 2; d >= 0; --d) xstride[d] = xstride[d + 1] * x[d + 1];
    Shape od, rd;
    std::vector<int64_t> os, rs;
    for (int64_t d = 0; d < r; ++d) {
      if (m[d]) { rd.push_back(x[d]); rs.push_back(xstride[d]); }
      else { od.push_back(x[d]); os.push_back(xstride[d]); }
    }
    const int64_t nout = shape_numel(od), nred = shape_numel(rd);
    const float* xp = a.in[0].as<const float>();
    float* y = a.out[0].as<float>();
    const bool last_contig = !rd.empty() && m[r - 1];  // innermost reduced run is contiguous
    parallel_chunks(nout, std::max<int64_t>(1, 16384 / std::max<int64_t>(nred, 1)), [&](int64_t o0, int64_t o1) {
      std::vector<int64_t> idx(rd.size());
      for (int64_t o = o0; o < o1; ++o) {
        int64_t base = 0, rem = o;
        for (int64_t d = int64_t(od.size()) - 1; d >= 0; --d) { base += (rem % od[d]) * os[d]; rem /= od[d]; }
        double acc = 0;  // double accumulation: long rows of offset values
        if (last_contig && rd.size() == 1) {
          for (int64_t k = 0; k < nred; ++k) acc += xp[base + k];
        } else {
          std::fill(idx.begin(), idx.end(), 0);
          int64_t off = base;
          for (int64_t k = 0; k < nred; ++k) {
            acc += xp[off];
            for (int64_t d = int64_t(rd.size()) - 1; d >= 0; --d) {
              off += rs[d];
              if (++idx[d] < rd[d]) break;
              off -= rs[d] * rd[d];
              idx[d] = 0;
            }
          }
        }
        y[o] = float(mean_ ? (nred ? acc / double(nred) : NAN) : acc);
      }
    });
  }
  bool input_dtype_ok(size_t i, DType t) const override { return i == 0 ? t == DType::kF32 : t == DType::kI64; }

 private:
  bool mean_;
  std::vector<int64_t> axes_;
  bool has_, keep_, noop_;
};

std::vector<int64_t> ints_or_empty(const NodeSpec& n, const char* k, bool* has) {
  const auto* p = n.attrs.get_ints(k);
  *has = p != nullptr;
  return p ? *p : std::vector<int64_t>{};
}

std::unique_ptr<Op> mk_shape(const NodeSpec& n, const std::vector<ValueSpec>&) {
  return std::make_unique<Shape_>(n.attrs.get_int("start", 0), n.attrs.get_int("end", INT64_MAX));
}
std::unique_ptr<Op> mk_cos(const NodeSpec& n, const std::vector<ValueSpec>&) {
  return std::make_unique<ConstantOfShape>(dtype_from_name(n.attrs.get_string("dtype", "float32")), n.attrs.get_float("value", 0.0));
}
std::unique_ptr<Op> mk_cast(const NodeSpec& n, const std::vector<ValueSpec>& v) {
  return std::make_unique<Cast>(in_dtype(n, v, 0), dtype_from_name(n.attrs.get_string("to", "float32")), n.attrs.get_int("bool", 0) != 0);
}
std::unique_ptr<Op> mk_where(const NodeSpec& n, const std::vector<ValueSpec>& v) { return std::make_unique<Where>(in_dtype(n, v, 1)); }
std::unique_ptr<Op> mk_expand(const NodeSpec& n, const std::vector<ValueSpec>& v) { return std::make_unique<Expand>(in_dtype(n, v, 0)); }
std::unique_ptr<Op> mk_range(const NodeSpec& n, const std::vector<ValueSpec>& v) {
  DType t = in_dtype(n, v, 0);
  if (t != DType::kF32 && t != DType::kI64 && t != DType::kI32) throw std::invalid_argument("Range '" + n.name + "': unsupported dtype");
  return std::make_unique<Range>(t);
}
std::unique_ptr<Op> mk_concat(const NodeSpec& n, const std::vector<ValueSpec>& v) {
  return std::make_unique<Concat>(in_dtype(n, v, 0), n.attrs.get_int("axis", 0));
}
std::unique_ptr<Op> mk_split(const NodeSpec& n, const std::vector<ValueSpec>& v) {
  if (n.outputs.empty()) throw std::invalid_argument("Split '" + n.name + "' has no outputs");
  bool has;
  auto s = ints_or_empty(n, "split", &has);
  return std::make_unique<Split>(in_dtype(n, v, 0), n.attrs.get_int("axis", 0), s, n.outputs.size());
}
std::unique_ptr<Op> mk_slice(const NodeSpec& n, const std::vector<ValueSpec>& v) {
  auto op = std::make_unique<Slice>(in_dtype(n, v, 0));
  for (size_t k = 1; k < 5; ++k) op->dt_[k] = in_dtype(n, v, k) == DType::kI32 ? DType::kI32 : DType::kI64;
  return op;
}
std::unique_ptr<Op> mk_gather(const NodeSpec& n, const std::vector<ValueSpec>& v) {
  return std::make_unique<Gather>(in_dtype(n, v, 0), in_dtype(n, v, 1), n.attrs.get_int("axis", 0));
}
std::unique_ptr<Op> mk_gather_dq(const NodeSpec& n, const std::vector<ValueSpec>& v) {
  return std::make_unique<GatherDequantize>(in_dtype(n, v, 2));
}
std::unique_ptr<Op> mk_gather_el(const NodeSpec& n, const std::vector<ValueSpec>& v) {
  return std::make_unique<GatherElements>(in_dtype(n, v, 0), in_dtype(n, v, 1), n.attrs.get_int("axis", 0));
}
std::unique_ptr<Op> mk_squeeze(const NodeSpec& n, const std::vector<ValueSpec>& v) {
  bool has;
  auto a = ints_or_empty(n, "axes", &has);
  return std::make_unique<SqueezeLike>(in_dtype(n, v, 0), false, a, has);
}
std::unique_ptr<Op> mk_unsqueeze(const NodeSpec& n, const std::vector<ValueSpec>& v) {
  bool has;
  auto a = ints_or_empty(n, "axes", &has);
  return std::make_unique<SqueezeLike>(in_dtype(n, v, 0), true, a, has);
}
template <bool Mean>
std::unique_ptr<Op> mk_reduce(const NodeSpec& n, const std::vector<ValueSpec>&) {
  bool has;
  auto a = ints_or_empty(n, "axes", &has);
  return std::make_unique<Reduce>(Mean, a, has, n.attrs.get_int("keepdims", 1) != 0, n.attrs.get_int("noop_with_empty_axes", 0) != 0);
}

}  // namespace

void register_tensor_ops() {
  register_op("Shape", &mk_shape);
  register_op("ConstantOfShape", &mk_cos);
  register_op("Cast", &mk_cast);
  register_op("Where", &mk_where);
  register_op("Expand", &mk_expand);
  register_op("Range", &mk_range);
  register_op("Concat", &mk_concat);
  register_op("Split", &mk_split);
  register_op("Slice", &mk_slice);
  register_op("Gather", &mk_gather);
  register_op("GatherElements", &mk_gather_el);
  register_op("GatherDequantize", &mk_gather_dq);
  register_op("Squeeze", &mk_squeeze);
  register_op("Unsqueeze", &mk_unsqueeze);
  register_op("ReduceMean", &mk_reduce<true>);
  register_op("ReduceSum", &mk_reduce<false>);
}

}  // namespace lowbit
