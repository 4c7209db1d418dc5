// Softmax and LayerNormalization over the trailing axes, threaded over rows.
#include <cmath>

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

// LayerNormalization: normalize over axes [axis, rank), then * scale + bias
// (scale and bias broadcast over the normalized shape).
class LayerNorm : public Op {
 public:
  LayerNorm(int64_t axis, double eps) : axis_(axis), eps_(float(eps)) {}
  size_t max_outputs() const override { return 3; }  // Y, Mean, InvStdDev
  void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const override {
    need_inputs(in, 2, "LayerNormalization");
    const Shape& x = *in[0];
    int64_t ax = norm_axis(axis_, int64_t(x.size()), "LayerNormalization");
    int64_t len = 1;
    for (size_t d = size_t(ax); d < x.size(); ++d) len *= x[d];
    if (shape_numel(*in[1]) != len)
      throw ShapeError("scale has " + std::to_string(shape_numel(*in[1])) + " elements, expected " + std::to_string(len));
    if (in.size() > 2 && in[2] && shape_numel(*in[2]) != len)
      throw ShapeError("bias has " + std::to_string(shape_numel(*in[2])) + " elements, expected " + std::to_string(len));
    out[0] = x;
    for (size_t i = 1; i < out.size(); ++i) {  // Mean / InvStdDev outputs: reduced shape
      out[i] = x;
      for (size_t d = size_t(ax); d < x.size(); ++d) out[i][d] = 1;
    }
  }
  void run(const RunArgs& r) const override {
    const Shape& s = r.in[0].shape;
    const int64_t ax = norm_axis(axis_, int64_t(s.size()), "LayerNormalization");
    int64_t rows = 1, len = 1;
    for (int64_t d = 0; d < ax; ++d) rows *= s[d];
    for (size_t d = size_t(ax); d < s.size(); ++d) len *= s[d];
    const float* x = r.in[0].as<const float>();
    const float* g = r.in[1].as<const float>();
    const float* b = r.in.size() > 2 && r.in[2].data ? r.in[2].as<const float>() : nullptr;
    float* y = r.out[0].as<float>();
    float* mean_out = r.out.size() > 1 ? r.out[1].as<float>() : nullptr;
    float* istd_out = r.out.size() > 2 ? r.out[2].as<float>() : nullptr;
    if (len == 0) return;
    parallel_chunks(rows, std::max<int64_t>(1, 8192 / len), [&](int64_t r0, int64_t r1) {
      for (int64_t i = r0; i < r1; ++i) {
        const float* xr = x + i * len;
        float* yr = y + i * len;
        // two passes, 8 float lanes each (vectorizable, fixed combination order)
        constexpr int L = 8;
        float sv[L] = {0, 0, 0, 0, 0, 0, 0, 0};
        int64_t k = 0;
        for (; k + L <= len; k += L)
          for (int j = 0; j < L; ++j) sv[j] += xr[k + j];
        float sum = 0.f;
        for (int j = 0; j < L; ++j) sum += sv[j];
        for (; k < len; ++k) sum += xr[k];
        const float mean = sum / float(len);
        float vv[L] = {0, 0, 0, 0, 0, 0, 0, 0};
        k = 0;
        for (; k + L <= len; k += L)
          for (int j = 0; j < L; ++j) { const float d = xr[k + j] - mean; vv[j] += d * d; }
        float var = 0.f;
        for (int j = 0; j < L; ++j) var += vv[j];
        for (; k < len; ++k) { const float d = xr[k] - mean; var += d * d; }
        const float istd = 1.f / std::sqrt(var / float(len) + eps_);
        if (b) for (k = 0; k < len; ++k) yr[k] = (xr[k] - mean) * istd * g[k] + b[k];
        else for (k = 0; k < len; ++k) yr[k] = (xr[k] - mean) * istd * g[k];
        if (mean_out) mean_out[i] = mean;
        if (istd_out) istd_out[i] = istd;
      }
    });
  }

 private:
  int64_t axis_;
  float eps_;
};

std::unique_ptr<Op> mk_softmax(const NodeSpec& n, const std::vector<ValueSpec>&) {
  return std::make_unique<Softmax>(n.attrs.get_int("axis", -1), n.attrs.get_int("legacy", 0) != 0);
}
std::unique_ptr<Op> mk_layernorm(const NodeSpec& n, const std::vector<ValueSpec>&) {
  double eps = n.attrs.get_float("epsilon", 1e-5);
  if (!(eps >= 0) || !std::isfinite(eps)) throw std::invalid_argument("LayerNormalization: bad epsilon");
  return std::make_unique<LayerNorm>(n.attrs.get_int("axis", -1), eps);
}

}  // namespace

void register_normalization_ops() {
  register_op("Softmax", &mk_softmax);
  register_op("LayerNormalization", &mk_layernorm);
}

}  // namespace lowbit
