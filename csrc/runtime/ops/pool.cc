// Pooling (NHWC: MaxPool -- the table's f32-maxpool kernel --, AveragePool; NHWC or NCHW: GlobalAveragePool,
// GlobalMaxPool) and BatchNormalization (inference form, for the batch norms
// the folding pass cannot merge into a preceding Conv). Threaded over output
// rows; every output is computed by one thread in a fixed order.
#include <cmath>
#include <cstring>

#include "cpu/dispatch.h"
#include "runtime/ops/common.h"
#include "runtime/ops/window.h"

namespace lowbit {
namespace {

bool nhwc(const NodeSpec& n) { return n.attrs.get_string("layout", "NCHW") == "NHWC"; }

class Pool2D : public Op {
 public:
  Pool2D(const NodeSpec& n, bool max) : max_(max) {
    if (!nhwc(n)) throw std::invalid_argument(n.op + " '" + n.name + "': the runtime op takes NHWC activations (attr layout='NHWC')");
    win_ = Window2D::from(n.attrs, n.op + " '" + n.name + "'");
    if (!n.attrs.get_ints("kernel_shape")) throw std::invalid_argument(n.op + " '" + n.name + "' needs kernel_shape");
    include_pad_ = n.attrs.get_int("count_include_pad", 0) != 0;
  }
  void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const override {
    need_inputs(in, 1, max_ ? "MaxPool" : "AveragePool");
    const Shape& x = *in[0];
    if (x.size() != 4) throw ShapeError("expected a 4-D NHWC input, got " + shape_str(x));
    auto g = win_.geometry(x[1], x[2]);
    out[0] = {x[0], g.oh, g.ow, x[3]};
  }
  void run(const RunArgs& a) const override {
    const Shape& xs = a.in[0].shape;
    const Shape& ys = a.out[0].shape;
    const int64_t H = xs[1], W = xs[2], C = xs[3], OH = ys[1], OW = ys[2];
    auto geo = win_.geometry(H, W);
    const float* x = a.in[0].as<const float>();
    float* y = a.out[0].as<float>();
    if (max_) {  // the table's kernel (kernels/f32-maxpool)
      const F32MaxPoolArgs p{x, y, ys[0], H, W, C, OH, OW, win_.kh, win_.kw, win_.sh, win_.sw, win_.dh, win_.dw,
                             geo.pt, geo.pl};
      const F32MaxPoolFn fn = kernels().f32_maxpool.fn;
      parallel_chunks(ys[0] * OH, 1, [&](int64_t r0, int64_t r1) { fn(p, r0, r1); });
      return;
    }
    parallel_chunks(ys[0] * OH, 1, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t n = r / OH, oy = r % OH;
        for (int64_t ox = 0; ox < OW; ++ox) {
          float* yp = y + (r * OW + ox) * C;
          for (int64_t c = 0; c < C; ++c) yp[c] = 0.f;
          int64_t count = 0;
          for (int64_t ky = 0; ky < win_.kh; ++ky) {
            const int64_t iy = oy * win_.sh - geo.pt + ky * win_.dh;
            for (int64_t kx = 0; kx < win_.kw; ++kx) {
              const int64_t ix = ox * win_.sw - geo.pl + kx * win_.dw;
              // padding cells count toward the average only with count_include_pad, and
              // only inside the explicit pads (not the extra cells ceil_mode adds)
              if (iy < 0 || iy >= H || ix < 0 || ix >= W) {
                if (include_pad_ && iy < H + win_.pads[2] && ix < W + win_.pads[3]) ++count;
                continue;
              }
              ++count;
              const float* xp = x + ((n * H + iy) * W + ix) * C;
              for (int64_t c = 0; c < C; ++c) yp[c] += xp[c];
            }
          }
          const float inv = count ? 1.f / float(count) : NAN;
          for (int64_t c = 0; c < C; ++c) yp[c] *= inv;
        }
      }
    });
  }

  std::string kernel() const override { return max_ ? kernels().f32_maxpool.name : "builtin"; }

 private:
  Window2D win_;
  bool max_, include_pad_ = false;
};

class GlobalPool : public Op {
 public:
  GlobalPool(bool nhwc, bool max) : nhwc_(nhwc), max_(max) {}
  void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const override {
    need_inputs(in, 1, "GlobalPool");
    const Shape& x = *in[0];
    if (x.size() < 3) throw ShapeError("expected an input of rank >= 3, got " + shape_str(x));
    Shape o = x;
    if (nhwc_) for (size_t d = 1; d + 1 < o.size(); ++d) o[d] = 1;
    else for (size_t d = 2; d < o.size(); ++d) o[d] = 1;
    out[0] = o;
  }
  void run(const RunArgs& a) const override {
    const Shape& x = a.in[0].shape;
    int64_t sp = 1;
    if (nhwc_) for (size_t d = 1; d + 1 < x.size(); ++d) sp *= x[d];
    else for (size_t d = 2; d < x.size(); ++d) sp *= x[d];
    const int64_t N = x[0], C = nhwc_ ? x.back() : x[1];
    const float* xp = a.in[0].as<const float>();
    float* y = a.out[0].as<float>();
    if (nhwc_) {
      parallel_chunks(N, 1, [&](int64_t n0, int64_t n1) {
        std::vector<double> acc(static_cast<size_t>(C), 0.0);
        for (int64_t n = n0; n < n1; ++n) {
          std::fill(acc.begin(), acc.end(), max_ ? -INFINITY : 0.0);
          for (int64_t s = 0; s < sp; ++s) {
            const float* r = xp + (n * sp + s) * C;
            if (max_) for (int64_t c = 0; c < C; ++c) acc[c] = r[c] > acc[c] || std::isnan(r[c]) ? r[c] : acc[c];
            else for (int64_t c = 0; c < C; ++c) acc[c] += r[c];
          }
          for (int64_t c = 0; c < C; ++c) y[n * C + c] = float(max_ ? acc[c] : acc[c] / double(sp));
        }
      });
    } else {
      parallel_chunks(N * C, 16, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          const float* r = xp + i * sp;
          double acc = max_ ? -INFINITY : 0.0;
          for (int64_t s = 0; s < sp; ++s) acc = max_ ? (r[s] > acc || std::isnan(r[s]) ? r[s] : acc) : acc + r[s];
          y[i] = float(max_ ? acc : acc / double(sp));
        }
      });
    }
  }

 private:
  bool nhwc_, max_;
};

// y = (x - mean) / sqrt(var + eps) * scale + B, per channel (axis 1, or last for NHWC).
class BatchNorm : public Op {
 public:
  BatchNorm(bool nhwc, double eps) : nhwc_(nhwc), eps_(eps) {}
  void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const override {
    need_inputs(in, 5, "BatchNormalization");
    const Shape& x = *in[0];
    if (x.size() < 2) throw ShapeError("expected rank >= 2, got " + shape_str(x));
    const int64_t C = nhwc_ ? x.back() : x[1];
    for (int k = 1; k < 5; ++k)
      if (*in[k] != Shape{C}) throw ShapeError("parameter " + std::to_string(k) + " must have shape (" + std::to_string(C) + ",)");
    out[0] = x;
  }
  void run(const RunArgs& a) const override {
    const Shape& x = a.in[0].shape;
    const int64_t C = nhwc_ ? x.back() : x[1];
    int64_t inner = 1;
    if (!nhwc_) for (size_t d = 2; d < x.size(); ++d) inner *= x[d];
    std::vector<float> mul(static_cast<size_t>(C), 0.f), add(static_cast<size_t>(C), 0.f);
    for (int64_t c = 0; c < C; ++c) {
      const double s = a.in[1].as<const float>()[c] / std::sqrt(double(a.in[4].as<const float>()[c]) + eps_);
      mul[c] = float(s);
      add[c] = float(a.in[2].as<const float>()[c] - a.in[3].as<const float>()[c] * s);
    }
    const float* xp = a.in[0].as<const float>();
    float* y = a.out[0].as<float>();
    const int64_t n = a.out[0].numel();
    parallel_chunks(n, 1 << 15, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t c = nhwc_ ? i % C : (i / inner) % C;
        y[i] = xp[i] * mul[c] + add[c];
      }
    });
  }

 private:
  bool nhwc_;
  double eps_;
};

std::unique_ptr<Op> mk_maxpool(const NodeSpec& n, const std::vector<ValueSpec>&) {
  if (n.outputs.size() > 1) throw std::invalid_argument("MaxPool '" + n.name + "': the Indices output is not supported");
  return std::make_unique<Pool2D>(n, true);
}
std::unique_ptr<Op> mk_avgpool(const NodeSpec& n, const std::vector<ValueSpec>&) { return std::make_unique<Pool2D>(n, false); }
std::unique_ptr<Op> mk_gap(const NodeSpec& n, const std::vector<ValueSpec>&) { return std::make_unique<GlobalPool>(nhwc(n), false); }
std::unique_ptr<Op> mk_gmp(const NodeSpec& n, const std::vector<ValueSpec>&) { return std::make_unique<GlobalPool>(nhwc(n), true); }
std::unique_ptr<Op> mk_bn(const NodeSpec& n, const std::vector<ValueSpec>&) {
  double eps = n.attrs.get_float("epsilon", 1e-5);
  if (!(eps >= 0) || !std::isfinite(eps)) throw std::invalid_argument("BatchNormalization: bad epsilon");
  if (n.outputs.size() > 1) throw std::invalid_argument("BatchNormalization '" + n.name + "': only the inference form (one output) is supported");
  return std::make_unique<BatchNorm>(nhwc(n), eps);
}

}  // namespace

void register_pool_ops() {
  register_op("MaxPool", &mk_maxpool);
  register_op("AveragePool", &mk_avgpool);
  register_op("GlobalAveragePool", &mk_gap);
  register_op("GlobalMaxPool", &mk_gmp);
  register_op("BatchNormalization", &mk_bn);
}

}  // namespace lowbit
