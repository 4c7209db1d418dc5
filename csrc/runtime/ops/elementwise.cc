// Elementwise ops: binary arithmetic with numpy broadcasting, and unary
// activations. Threaded over rows when large.
#include <cmath>
#include <cstring>

#include "runtime/ops/broadcast.h"
#include "kernels/f32-vmath/f32_vmath.h"
#include "runtime/ops/activation.h"
#include "runtime/ops/common.h"

namespace lowbit {
namespace {

constexpr int64_t kGrain = 1 << 15;  // elements per task, below which threading costs more than it saves

enum class Bin { kAdd, kSub, kMul, kDiv, kPow };

template <Bin B>
inline float bin(float x, float y) {
  if constexpr (B == Bin::kAdd) return x + y;
  if constexpr (B == Bin::kSub) return x - y;
  if constexpr (B == Bin::kMul) return x * y;
  if constexpr (B == Bin::kDiv) return x / y;
  if constexpr (B == Bin::kPow) return std::pow(x, y);
}

template <Bin B>
void bin_row(const float* a, int64_t sa, const float* b, int64_t sb, float* o, int64_t n) {
  if (sa == 1 && sb == 1) for (int64_t i = 0; i < n; ++i) o[i] = bin<B>(a[i], b[i]);
  else if (sa == 1) { float y = b[0]; for (int64_t i = 0; i < n; ++i) o[i] = bin<B>(a[i], y); }
  else if (sb == 1) { float x = a[0]; for (int64_t i = 0; i < n; ++i) o[i] = bin<B>(x, b[i]); }
  else { float v = bin<B>(a[0], b[0]); for (int64_t i = 0; i < n; ++i) o[i] = v; }
}

template <Bin B, class T>
inline T ibin(T x, T y) {
  if constexpr (B == Bin::kAdd) return T(uint64_t(x) + uint64_t(y));  // wraps instead of signed-overflow UB
  if constexpr (B == Bin::kSub) return T(uint64_t(x) - uint64_t(y));
  if constexpr (B == Bin::kMul) return T(uint64_t(x) * uint64_t(y));
  if constexpr (B == Bin::kDiv) {
    if (y == 0) throw std::domain_error("integer division by zero");
    if (y == T(-1)) return T(uint64_t(0) - uint64_t(x));  // INT_MIN / -1 would trap
    return x / y;  // truncates toward zero, as ONNX Runtime does
  }
  if constexpr (B == Bin::kPow) {
    T r = 1;
    for (T e = 0; e < y && e < 64; ++e) r = T(uint64_t(r) * uint64_t(x));
    return r;
  }
}

template <Bin B>
class Binary : public Op {
 public:
  Binary(std::string name, DType t) : name_(std::move(name)), t_(t) {}
  void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const override {
    need_inputs(in, 2, name_.c_str());
    out[0] = broadcast_shapes(*in[0], *in[1]);
  }
  DType out_dtype(size_t) const override { return t_; }
  bool input_dtype_ok(size_t, DType t) const override {
    return t == t_ && (t == DType::kF32 || t == DType::kI64 || t == DType::kI32);
  }
  template <class T>
  void run_int(const RunArgs& r) const {
    Broadcast b(r.out[0].shape, {&r.in[0].shape, &r.in[1].shape});
    const T* x = r.in[0].as<const T>();
    const T* y = r.in[1].as<const T>();
    T* o = r.out[0].as<T>();
    b.run_rows([&](int64_t i, const int64_t* off, int64_t n, const int64_t* st) {
      const T* xr = x + off[0];
      const T* yr = y + off[1];
      for (int64_t k = 0; k < n; ++k) o[i + k] = ibin<B, T>(xr[k * st[0]], yr[k * st[1]]);
    });
  }
  void run(const RunArgs& r) const override {
    if (t_ == DType::kI64) return run_int<int64_t>(r);
    if (t_ == DType::kI32) return run_int<int32_t>(r);
    const Shape& os = r.out[0].shape;
    const int64_t n = shape_numel(os);
    if (n == 0) return;
    const float* a = r.in[0].as<const float>();
    const float* b = r.in[1].as<const float>();
    float* o = r.out[0].as<float>();
    auto sa = broadcast_strides(r.in[0].shape, os);
    auto sb = broadcast_strides(r.in[1].shape, os);
    const int64_t rank = int64_t(os.size());
    const int64_t inner = rank ? os.back() : 1;
    const int64_t ia = rank ? sa.back() : 1, ib = rank ? sb.back() : 1;
    const int64_t rows = n / std::max<int64_t>(inner, 1);
    if (inner == 0) return;
    parallel_chunks(rows, std::max<int64_t>(1, kGrain / inner), [&](int64_t r0, int64_t r1) {
      // Decompose the first row index into the outer coordinates.
      std::vector<int64_t> idx(std::max<int64_t>(rank - 1, 0), 0);
      int64_t rem = r0;
      for (int64_t d = rank - 2; d >= 0; --d) { idx[d] = rem % os[d]; rem /= os[d]; }
      for (int64_t row = r0; row < r1; ++row) {
        int64_t oa = 0, ob = 0;
        for (int64_t d = 0; d < rank - 1; ++d) { oa += idx[d] * sa[d]; ob += idx[d] * sb[d]; }
        bin_row<B>(a + oa, ia, b + ob, ib, o + row * inner, inner);
        for (int64_t d = rank - 2; d >= 0; --d) {
          if (++idx[d] < os[d]) break;
          idx[d] = 0;
        }
      }
    });
  }

 private:
  std::string name_;
  DType t_;
};

enum class Cmp { kEq, kLt, kGt, kLe, kGe, kAnd, kOr, kXor };

// Comparisons and logic: numeric (or bool) inputs, bool (uint8 0/1) output.
template <Cmp C>
class Compare : public Op {
 public:
  Compare(std::string name, DType t) : name_(std::move(name)), t_(t) {}
  void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const override {
    need_inputs(in, 2, name_.c_str());
    out[0] = broadcast_shapes(*in[0], *in[1]);
  }
  DType out_dtype(size_t) const override { return DType::kU8; }
  bool input_dtype_ok(size_t, DType t) const override {
    if constexpr (C == Cmp::kAnd || C == Cmp::kOr || C == Cmp::kXor) return t == DType::kU8;
    return t == t_;
  }
  template <class T>
  void go(const RunArgs& r) const {
    Broadcast b(r.out[0].shape, {&r.in[0].shape, &r.in[1].shape});
    const T* x = r.in[0].as<const T>();
    const T* y = r.in[1].as<const T>();
    uint8_t* o = r.out[0].as<uint8_t>();
    b.run_rows([&](int64_t i, const int64_t* off, int64_t n, const int64_t* st) {
      const T* xr = x + off[0];
      const T* yr = y + off[1];
      uint8_t* orow = o + i;
      if (st[0] == 1 && st[1] == 1) {
        for (int64_t k = 0; k < n; ++k) orow[k] = cmp(xr[k], yr[k]);
      } else if (st[0] == 1 && st[1] == 0) {
        const T c = yr[0];
        for (int64_t k = 0; k < n; ++k) orow[k] = cmp(xr[k], c);
      } else if (st[0] == 0 && st[1] == 1) {  // a column against a row (attention masks)
        const T c = xr[0];
        for (int64_t k = 0; k < n; ++k) orow[k] = cmp(c, yr[k]);
      } else {
        for (int64_t k = 0; k < n; ++k) orow[k] = cmp(xr[k * st[0]], yr[k * st[1]]);
      }
    });
  }
  template <class T>
  static uint8_t cmp(T a, T c) {
    bool v;
    if constexpr (C == Cmp::kEq) v = a == c;
    else if constexpr (C == Cmp::kLt) v = a < c;
    else if constexpr (C == Cmp::kGt) v = a > c;
    else if constexpr (C == Cmp::kLe) v = a <= c;
    else if constexpr (C == Cmp::kGe) v = a >= c;
    else if constexpr (C == Cmp::kAnd) v = a && c;
    else if constexpr (C == Cmp::kOr) v = a || c;
    else v = bool(a) != bool(c);
    return v ? 1 : 0;
  }
  void run(const RunArgs& r) const override {
    switch (t_) {
      case DType::kF32: return go<float>(r);
      case DType::kI64: return go<int64_t>(r);
      case DType::kI32: return go<int32_t>(r);
      case DType::kI8: return go<int8_t>(r);
      case DType::kU8: return go<uint8_t>(r);
    }
  }

 private:
  std::string name_;
  DType t_;
};

class Not : public Op {
 public:
  void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const override {
    need_inputs(in, 1, "Not");
    out[0] = *in[0];
  }
  DType out_dtype(size_t) const override { return DType::kU8; }
  bool input_dtype_ok(size_t, DType t) const override { return t == DType::kU8; }
  void run(const RunArgs& r) const override {
    const int64_t n = r.out[0].numel();
    for (int64_t i = 0; i < n; ++i) r.out[0].as<uint8_t>()[i] = r.in[0].as<const uint8_t>()[i] ? 0 : 1;
  }
};

// Activations with parameters: Clip(min, max), LeakyRelu(alpha),
// HardSigmoid(alpha, beta), HardSwish. The same formulas serve Conv's fused
// epilogue (see conv.cc), so a fused and an unfused graph agree bit for bit.
class ParamAct : public Op {
 public:
  ParamAct(std::string name, ActParams p) : name_(std::move(name)), p_(p) {}
  void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const override {
    need_inputs(in, 1, name_.c_str());
    out[0] = *in[0];
  }
  void run(const RunArgs& r) const override {
    const int64_t n = r.out[0].numel();
    const float* x = r.in[0].as<const float>();
    float* y = r.out[0].as<float>();
    parallel_chunks(n, kGrain, [&](int64_t i0, int64_t i1) { apply_activation(p_, x + i0, y + i0, i1 - i0); });
  }

 private:
  std::string name_;
  ActParams p_;
};

enum class Un { kRelu, kSigmoid, kTanh, kGelu, kErf, kSqrt, kReciprocal, kExp, kNeg, kAbs, kIdentity };

template <Un U>
inline float un(float x) {
  if constexpr (U == Un::kRelu) return x > 0.f ? x : (x == x ? 0.f : x);  // NaN propagates
  if constexpr (U == Un::kSigmoid) return 1.f / (1.f + std::exp(-x));
  if constexpr (U == Un::kTanh) return std::tanh(x);
  if constexpr (U == Un::kGelu) return 0.5f * x * (1.f + std::erf(x * 0.70710678118654752f));
  if constexpr (U == Un::kErf) return std::erf(x);
  if constexpr (U == Un::kSqrt) return std::sqrt(x);
  if constexpr (U == Un::kReciprocal) return 1.f / x;
  if constexpr (U == Un::kExp) return std::exp(x);
  if constexpr (U == Un::kNeg) return -x;
  if constexpr (U == Un::kAbs) return std::fabs(x);
  if constexpr (U == Un::kIdentity) return x;
}

template <Un U>
class Unary : public Op {
 public:
  explicit Unary(std::string name) : name_(std::move(name)) {}
  void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const override {
    need_inputs(in, 1, name_.c_str());
    out[0] = *in[0];
  }
  void run(const RunArgs& r) const override {
    const int64_t n = r.out[0].numel();
    const float* x = r.in[0].as<const float>();
    float* y = r.out[0].as<float>();
    if constexpr (U == Un::kIdentity) {
      if (n) std::memcpy(y, x, size_t(n) * 4);
      return;
    }
    if constexpr (U == Un::kGelu) {
      const F32RowFn gelu = vmath().gelu;
      parallel_chunks(n, kGrain, [&](int64_t i0, int64_t i1) { gelu(x + i0, y + i0, i1 - i0); });
      return;
    }
    parallel_chunks(n, kGrain, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) y[i] = un<U>(x[i]);
    });
  }

 private:
  std::string name_;
};

DType dt0(const NodeSpec& n, const std::vector<ValueSpec>& v) {
  return n.inputs.empty() || n.inputs[0] < 0 ? DType::kF32 : v[n.inputs[0]].dtype;
}
template <Bin B>
std::unique_ptr<Op> mk_bin(const NodeSpec& n, const std::vector<ValueSpec>& v) { return std::make_unique<Binary<B>>(n.op, dt0(n, v)); }
template <Cmp C>
std::unique_ptr<Op> mk_cmp(const NodeSpec& n, const std::vector<ValueSpec>& v) { return std::make_unique<Compare<C>>(n.op, dt0(n, v)); }
std::unique_ptr<Op> mk_not(const NodeSpec&, const std::vector<ValueSpec>&) { return std::make_unique<Not>(); }
std::unique_ptr<Op> mk_act(const NodeSpec& n, const std::vector<ValueSpec>&) {
  return std::make_unique<ParamAct>(n.op, act_params_from(n.op, n.attrs));
}
template <Un U>
std::unique_ptr<Op> mk_un(const NodeSpec& n, const std::vector<ValueSpec>&) { return std::make_unique<Unary<U>>(n.op); }

}  // namespace

void register_elementwise_ops() {
  register_op("Add", &mk_bin<Bin::kAdd>);
  register_op("Sub", &mk_bin<Bin::kSub>);
  register_op("Mul", &mk_bin<Bin::kMul>);
  register_op("Div", &mk_bin<Bin::kDiv>);
  register_op("Pow", &mk_bin<Bin::kPow>);
  register_op("Relu", &mk_un<Un::kRelu>);
  register_op("Sigmoid", &mk_un<Un::kSigmoid>);
  register_op("Tanh", &mk_un<Un::kTanh>);
  register_op("Gelu", &mk_un<Un::kGelu>);
  register_op("Erf", &mk_un<Un::kErf>);
  register_op("Sqrt", &mk_un<Un::kSqrt>);
  register_op("Reciprocal", &mk_un<Un::kReciprocal>);
  register_op("Exp", &mk_un<Un::kExp>);
  register_op("Neg", &mk_un<Un::kNeg>);
  register_op("Abs", &mk_un<Un::kAbs>);
  register_op("Identity", &mk_un<Un::kIdentity>);
  register_op("Equal", &mk_cmp<Cmp::kEq>);
  register_op("Less", &mk_cmp<Cmp::kLt>);
  register_op("Greater", &mk_cmp<Cmp::kGt>);
  register_op("LessOrEqual", &mk_cmp<Cmp::kLe>);
  register_op("GreaterOrEqual", &mk_cmp<Cmp::kGe>);
  register_op("And", &mk_cmp<Cmp::kAnd>);
  register_op("Or", &mk_cmp<Cmp::kOr>);
  register_op("Xor", &mk_cmp<Cmp::kXor>);
  register_op("Not", &mk_not);
  register_op("Clip", &mk_act);
  register_op("LeakyRelu", &mk_act);
  register_op("HardSigmoid", &mk_act);
  register_op("HardSwish", &mk_act);
}

}  // namespace lowbit
