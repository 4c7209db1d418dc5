// Softmax and LayerNormalization over the trailing axes, threaded over rows.
#include <cmath>

#include "runtime/ops/broadcast.h"
#include "runtime/ops/common.h"
#include "kernels/f32-vmath/f32_vmath.h"

namespace lowbit {
namespace {

// Softmax along one axis (opset >= 13), or over all axes from `axis` on
// (opset < 13, attr legacy=1). Numerically stable: subtract the max first.
class Softmax : public Op {
 public:
  Softmax(int64_t axis, bool legacy) : axis_(axis), legacy_(legacy) {}
  void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const override {
    need_inputs(in, 1, "Softmax");
    norm_axis(axis_, int64_t(in[0]->size()), "Softmax");
    out[0] = *in[0];
  }
  void run(const RunArgs& r) const override {
    const Shape& s = r.in[0].shape;
    const int64_t rank = int64_t(s.size());
    const int64_t ax = norm_axis(axis_, rank, "Softmax");
    int64_t outer = 1, len = 1, inner = 1;
    for (int64_t d = 0; d < ax; ++d) outer *= s[d];
    if (legacy_) {
      for (int64_t d = ax; d < rank; ++d) len *= s[d];
    } else {
      len = rank ? s[ax] : 1;
      for (int64_t d = ax + 1; d < rank; ++d) inner *= s[d];
    }
    const float* x = r.in[0].as<const float>();
    float* y = r.out[0].as<float>();
    if (len == 0 || outer * inner == 0) return;
    if (inner == 1) {
      // contiguous rows (the usual last-axis softmax): vectorizable passes
      parallel_chunks(outer, std::max<int64_t>(1, 8192 / len), [&](int64_t i0, int64_t i1) {
        const F32RowFn row = vmath().softmax_row;
        for (int64_t i = i0; i < i1; ++i) row(x + i * len, y + i * len, len);
      });
      return;
    }
    parallel_chunks(outer * inner, std::max<int64_t>(1, 8192 / len), [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t o = i / inner, in = i % inner;
        const float* xr = x + o * len * inner + in;
        float* yr = y + o * len * inner + in;
        float m = -INFINITY;
        for (int64_t k = 0; k < len; ++k) m = std::fmax(m, xr[k * inner]);
        if (std::isnan(m) || std::isinf(m)) m = std::isnan(m) ? m : (m > 0 ? m : 0.f);
        float sum = 0.f;
        for (int64_t k = 0; k < len; ++k) {
          float e = std::exp(xr[k * inner] - m);
          yr[k * inner] = e;
          sum += e;
        }
        float inv = 1.f / sum;
        for (int64_t k = 0; k < len; ++k) yr[k * inner] *= inv;
      }
    });
  }

  std::string kernel() const override { return vmath().softmax_name; }

 private:
  int64_t axis_;
  bool legacy_;
};

// LayerNormalization (x, scale[, bias]) over the axes from `axis` on; with `skip`,
// AddLayerNormalization (x, skip, scale[, bias]): the normalization of x + skip (the
// residual Add folded in, same bits as the two ops). Rows run the f32-vmath layernorm
// kernel, threaded over rows.
class LayerNorm : public Op {
 public:
  LayerNorm(int64_t axis, double eps, bool skip) : axis_(axis), eps_(float(eps)), skip_(skip) {}
  size_t max_outputs() const override { return skip_ ? 1 : 3; }  // Y[, Mean, InvStdDev]
  void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const override {
    const char* name = skip_ ? "AddLayerNormalization" : "LayerNormalization";
    const size_t p = skip_ ? 1 : 0;  // the scale's and bias's input index shift
    need_inputs(in, 2 + p, name);
    const Shape x = skip_ ? broadcast_shapes(*in[0], *in[1]) : *in[0];
    int64_t ax = norm_axis(axis_, int64_t(x.size()), name);
    int64_t len = 1;
    for (size_t d = size_t(ax); d < x.size(); ++d) len *= x[d];
    if (shape_numel(*in[1 + p]) != len)
      throw ShapeError("scale has " + std::to_string(shape_numel(*in[1 + p])) + " elements, expected " + std::to_string(len));
    if (in.size() > 2 + p && in[2 + p] && shape_numel(*in[2 + p]) != len)
      throw ShapeError("bias has " + std::to_string(shape_numel(*in[2 + p])) + " elements, expected " + std::to_string(len));
    out[0] = x;
    for (size_t i = 1; i < out.size(); ++i) {  // Mean / InvStdDev outputs: reduced shape
      out[i] = x;
      for (size_t d = size_t(ax); d < x.size(); ++d) out[i][d] = 1;
    }
  }
  void run(const RunArgs& r) const override {
    const size_t p = skip_ ? 1 : 0;
    const Shape& s = r.out[0].shape;
    const int64_t ax = norm_axis(axis_, int64_t(s.size()), "LayerNormalization");
    int64_t rows = 1, len = 1;
    for (int64_t d = 0; d < ax; ++d) rows *= s[d];
    for (size_t d = size_t(ax); d < s.size(); ++d) len *= s[d];
    const float* x = r.in[0].as<const float>();
    const float* skip = skip_ ? r.in[1].as<const float>() : nullptr;
    const LayerNormParams prm{r.in[1 + p].as<const float>(),
                              r.in.size() > 2 + p && r.in[2 + p].data ? r.in[2 + p].as<const float>() : nullptr, eps_};
    float* y = r.out[0].as<float>();
    float* mean_out = r.out.size() > 1 ? r.out[1].as<float>() : nullptr;
    float* istd_out = r.out.size() > 2 ? r.out[2].as<float>() : nullptr;
    if (len == 0 || rows == 0) return;
    if (skip && (r.in[0].shape != s || r.in[1].shape != s)) {
      // a broadcast residual: the Add's values first (the row walk of the binary ops), then
      // the normalization in place
      Broadcast b(s, {&r.in[0].shape, &r.in[1].shape});
      b.run_rows([&](int64_t i, const int64_t* off, int64_t n, const int64_t* st) {
        for (int64_t k = 0; k < n; ++k) y[i + k] = x[off[0] + k * st[0]] + skip[off[1] + k * st[1]];
      });
      x = y;
      skip = nullptr;
    }
    const F32LayerNormFn fn = vmath().layernorm;
    parallel_chunks(rows, std::max<int64_t>(1, 8192 / len), [&](int64_t r0, int64_t r1) {
      for (int64_t i = r0; i < r1; ++i)
        fn(x + i * len, skip ? skip + i * len : nullptr, y + i * len, len, prm, mean_out ? mean_out + i : nullptr,
           istd_out ? istd_out + i : nullptr);
    });
  }
  std::string kernel() const override { return vmath().layernorm_name; }

 private:
  int64_t axis_;
  float eps_;
  bool skip_;
};

std::unique_ptr<Op> mk_softmax(const NodeSpec& n, const std::vector<ValueSpec>&) {
  return std::make_unique<Softmax>(n.attrs.get_int("axis", -1), n.attrs.get_int("legacy", 0) != 0);
}
std::unique_ptr<Op> mk_layernorm(const NodeSpec& n, const std::vector<ValueSpec>&) {
  double eps = n.attrs.get_float("epsilon", 1e-5);
  if (!(eps >= 0) || !std::isfinite(eps)) throw std::invalid_argument("LayerNormalization: bad epsilon");
  return std::make_unique<LayerNorm>(n.attrs.get_int("axis", -1), eps, n.op == "AddLayerNormalization");
}

}  // namespace

void register_normalization_ops() {
  register_op("Softmax", &mk_softmax);
  register_op("LayerNormalization", &mk_layernorm);
  register_op("AddLayerNormalization", &mk_layernorm);
}

}  // namespace lowbit
