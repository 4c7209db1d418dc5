// Dense: y[..., N] = act(x[..., K] . W[K, N] + b[N]) with W prepacked ("f32-n16").
#include "cpu/dispatch.h"
#include "kernels/f32-gemm/f32_gemm.h"
#include "kernels/f32-vmath/f32_vmath.h"
#include "runtime/ops/common.h"
#include "runtime/ops/spdense.h"

namespace lowbit {
namespace {

class DenseF32 : public Op {
 public:
  DenseF32(const NodeSpec& n, const std::vector<ValueSpec>& values) {
    if (n.inputs.size() < 2 || n.inputs[1] < 0) throw std::invalid_argument("Dense '" + n.name + "' needs a weight");
    const ValueSpec& w = values[n.inputs[1]];
    if (!w.is_const || w.encoding != "f32-n16" || w.shape.size() != 2)
      throw std::invalid_argument("Dense '" + n.name + "': weight must be a 2-D constant with encoding f32-n16, got " + w.encoding);
    K_ = w.shape[0];
    N_ = w.shape[1];
    if (K_ < 0 || N_ < 0 || w.nbytes != f32_gemm_packed_floats(K_, N_) * 4)
      throw std::invalid_argument("Dense '" + n.name + "': packed weight size does not match its shape");
    if (n.inputs.size() > 2 && n.inputs[2] >= 0) {
      const ValueSpec& b = values[n.inputs[2]];
      if (!b.is_const || b.shape != Shape{N_} || b.nbytes != N_ * 4)
        throw std::invalid_argument("Dense '" + n.name + "': bias must be a constant of shape (N,)");
    }
    int64_t act = n.attrs.get_int("activation", 0);
    if (act < 0 || act > 2) throw std::invalid_argument("Dense '" + n.name + "': unknown activation");
    act_ = Activation(act);
  }
  void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const override {
    need_inputs(in, 1, "Dense");
    const Shape& x = *in[0];
    if (x.empty() || x.back() != K_)
      throw ShapeError("expected input with last dimension " + std::to_string(K_) + ", got shape " + shape_str(x));
    out[0] = x;
    out[0].back() = N_;
  }
  void run(const RunArgs& a) const override {
    F32GemmArgs g;
    g.M = a.in[0].numel() / std::max<int64_t>(K_, 1);
    if (K_ == 0) g.M = a.out[0].numel() / std::max<int64_t>(N_, 1);
    g.N = N_;
    g.K = K_;
    g.A = a.in[0].as<const float>();
    g.lda = K_;
    g.Bp = a.in[1].as<const float>();
    g.bias = a.in.size() > 2 ? a.in[2].as<const float>() : nullptr;
    g.C = a.out[0].as<float>();
    g.ldc = N_;
    // GELU: the GEMM's fused epilogue evaluates erf in double (~1 ulp, and 25% of
    // this layer's time on MiniLM's FFN); the vectorized float GELU over the
    // finished rows is within a few ulp and costs a small fraction of that.
    const bool row_gelu = act_ == Activation::kGelu;
    g.act = row_gelu ? Activation::kNone : act_;
    run_f32_gemm_threaded(g);
    if (row_gelu) {
      float* y = g.C;
      const F32RowFn gelu = vmath().gelu;
      parallel_chunks(g.M, std::max<int64_t>(1, 16384 / std::max<int64_t>(N_, 1)),
                      [&](int64_t m0, int64_t m1) { gelu(y + m0 * N_, y + m0 * N_, (m1 - m0) * N_); });
    }
  }
  std::string kernel() const override {
    return act_ == Activation::kGelu ? std::string(kernels().f32_gemm_name) + "+" + vmath().gelu_name : kernels().f32_gemm_name;
  }

 private:
  int64_t K_ = 0, N_ = 0;
  Activation act_ = Activation::kNone;
};

std::unique_ptr<Op> make_dense(const NodeSpec& n, const std::vector<ValueSpec>& v) {
  // quantized weight encodings run the integer kernels (qdense.cc)
  if (n.inputs.size() >= 2 && n.inputs[1] >= 0 && v[n.inputs[1]].encoding != "f32-n16") {
    SparseKind kind;
    if (parse_sparse_encoding(v[n.inputs[1]].encoding, kind)) return make_spdense(n, v);  // spdense.cc
    return make_qdense(n, v);
  }
  return std::make_unique<DenseF32>(n, v);
}

}  // namespace


// Splits C over threads: along N (whole 16-column panels) when there are enough
// panels, else along M. Each element's result is independent of the split.
void run_f32_gemm_threaded(const F32GemmArgs& g) {
  if (g.M == 0 || g.N == 0) return;
  const F32GemmFn fn = kernels().f32_gemm;
  ThreadPool& pool = ThreadPool::global();
  int64_t t = pool.num_threads();
  int64_t panels = (g.N + 15) / 16;
  double work = double(g.M) * double(g.N) * double(std::max<int64_t>(g.K, 1));
  if (t <= 1 || work < 64.0 * 1024) {
    fn(g, 0, g.M, 0, g.N);
    return;
  }
  if (panels >= 2 * t || g.M < 2 * t) {
    std::vector<int64_t> b = split_range(g.N, pool.work_items(panels), 16);
    std::function<void(int64_t)> f = [&](int64_t i) { fn(g, 0, g.M, b[i], b[i + 1]); };
    pool.parallel_for(int64_t(b.size()) - 1, f);
  } else {
    std::vector<int64_t> b = split_range(g.M, pool.work_items((g.M + 5) / 6), 6);  // whole 6-row tiles
    std::function<void(int64_t)> f = [&](int64_t i) { fn(g, b[i], b[i + 1], 0, g.N); };
    pool.parallel_for(int64_t(b.size()) - 1, f);
  }
}

void register_dense_ops() { register_op("Dense", &make_dense); }

}  // namespace lowbit
