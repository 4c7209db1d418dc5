// MatMul of two runtime tensors (numpy semantics: batched, broadcasting, 1-D
// operands promoted and their unit dim removed). B is packed per batch into the
// GEMM's panel layout in this node's scratch space, then the f32 GEMM runs.
#include "cpu/dispatch.h"
#include "kernels/f32-gemm/f32_gemm.h"
#include "runtime/ops/broadcast.h"
#include "runtime/ops/common.h"

namespace lowbit {
namespace {

struct MatMulDims {
  Shape batch;  // broadcast batch shape
  int64_t M, K, N;
  bool a_vec, b_vec;
  Shape a_batch, b_batch;
};

MatMulDims matmul_dims(const Shape& a, const Shape& b) {
  if (a.empty() || b.empty()) throw ShapeError("MatMul operands must have rank >= 1");
  MatMulDims d;
  d.a_vec = a.size() == 1;
  d.b_vec = b.size() == 1;
  Shape A = d.a_vec ? Shape{1, a[0]} : a;
  Shape B = d.b_vec ? Shape{b[0], 1} : b;
  d.M = A[A.size() - 2];
  d.K = A.back();
  if (B[B.size() - 2] != d.K)
    throw ShapeError("MatMul inner dimensions differ: " + shape_str(a) + " x " + shape_str(b));
  d.N = B.back();
  d.a_batch = Shape(A.begin(), A.end() - 2);
  d.b_batch = Shape(B.begin(), B.end() - 2);
  d.batch = broadcast_shapes(d.a_batch, d.b_batch);
  return d;
}

class MatMulF32 : public Op {
 public:
  void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const override {
    need_inputs(in, 2, "MatMul");
    MatMulDims d = matmul_dims(*in[0], *in[1]);
    Shape o = d.batch;
    if (!d.a_vec) o.push_back(d.M);
    if (!d.b_vec) o.push_back(d.N);
    out[0] = o;
  }
  size_t scratch_bytes(const std::vector<const Shape*>& in) const override {
    MatMulDims d = matmul_dims(*in[0], *in[1]);
    return size_t(f32_gemm_packed_floats(d.K, d.N)) * 4 * size_t(slots(d));
  }
  // One packed B per batch item when that stays small (attention heads: the items
  // then run in parallel), else one slot reused item after item.
  static int64_t slots(const MatMulDims& d) {
    const int64_t nb = shape_numel(d.batch);
    return nb > 1 && double(nb) * double(f32_gemm_packed_floats(d.K, d.N)) * 4 <= 16.0 * (1 << 20) ? nb : 1;
  }
  void run(const RunArgs& a) const override {
    MatMulDims d = matmul_dims(a.in[0].shape, a.in[1].shape);
    int64_t nb = shape_numel(d.batch);
    auto sa = broadcast_strides(d.a_batch, d.batch);
    auto sb = broadcast_strides(d.b_batch, d.batch);
    float* packed = static_cast<float*>(a.scratch);
    const float* A = a.in[0].as<const float>();
    const float* B = a.in[1].as<const float>();
    float* C = a.out[0].as<float>();
    const int64_t rank = int64_t(d.batch.size());
    const int64_t pf = f32_gemm_packed_floats(d.K, d.N);
    const bool per_item = slots(d) > 1;
    auto item = [&](int64_t bi, bool threaded) {
      int64_t oa = 0, ob = 0, rem = bi;
      for (int64_t r = rank - 1; r >= 0; --r) {
        const int64_t ix = rem % d.batch[r];
        rem /= d.batch[r];
        oa += ix * sa[r];
        ob += ix * sb[r];
      }
      float* pk = packed + (per_item ? bi * pf : 0);
      f32_gemm_pack_b(d.K, d.N, B + ob * d.K * d.N, d.N, pk);
      F32GemmArgs g{d.M, d.N, d.K, A + oa * d.M * d.K, d.K, pk, nullptr, C + bi * d.M * d.N, d.N, Activation::kNone};
      if (threaded) run_f32_gemm_threaded(g);
      else if (g.M && g.N) kernels().f32_gemm(g, 0, g.M, 0, g.N);
    };
    if (per_item && nb >= ThreadPool::global().num_threads()) {
      // many small products (attention: one per head): one item per task, each packs its own B
      parallel_chunks(nb, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t bi = b0; bi < b1; ++bi) item(bi, false);
      });
    } else {
      for (int64_t bi = 0; bi < nb; ++bi) item(bi, true);
    }
  }
  std::string kernel() const override { return std::string(kernels().f32_gemm_name) + "+pack"; }
};

std::unique_ptr<Op> make_matmul(const NodeSpec&, const std::vector<ValueSpec>&) { return std::make_unique<MatMulF32>(); }

}  // namespace

void register_matmul_ops() { register_op("MatMul", &make_matmul); }

}  // namespace lowbit
