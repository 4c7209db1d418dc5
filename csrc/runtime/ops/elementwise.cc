// Elementwise ops: binary arithmetic with numpy broadcasting, and unary
// activations. Threaded over rows when large.
#include <cmath>
#include <cstring>

#include "runtime/ops/broadcast.h"
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

template <Bin B>
class Binary : public Op {
 public:
  explicit Binary(std::string name) : name_(std::move(name)) {}
  void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const override {
    need_inputs(in, 2, name_.c_str());
    out[0] = broadcast_shapes(*in[0], *in[1]);
  }
  void run(const RunArgs& r) const override {
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
    parallel_chunks(n, kGrain, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) y[i] = un<U>(x[i]);
    });
  }

 private:
  std::string name_;
};

template <Bin B>
std::unique_ptr<Op> mk_bin(const NodeSpec& n, const std::vector<ValueSpec>&) { return std::make_unique<Binary<B>>(n.op); }
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
}

}  // namespace lowbit
