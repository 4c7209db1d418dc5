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
    return size_t(f32_gemm_packed_floats(d.K, d.N)) * 4;
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
    std::vector<int64_t> idx(rank, 0);
    for (int64_t bi = 0; bi < nb; ++bi) {
      int64_t oa = 0, ob = 0;
      for (int64_t r = 0; r < rank; ++r) { oa += idx[r] * sa[r]; ob += idx[r] * sb[r]; }
      const float* Ab = A + oa * d.M * d.K;
      const float* Bb = B + ob * d.K * d.N;
      f32_gemm_pack_b(d.K, d.N, Bb, d.N, packed);
      F32GemmArgs g{d.M, d.N, d.K, Ab, d.K, packed, nullptr, C + bi * d.M * d.N, d.N, Activation::kNone};
      run_f32_gemm_threaded(g);
      for (int64_t r = rank - 1; r >= 0; --r) {
        if (++idx[r] < d.batch[r]) break;
        idx[r] = 0;
      }
    }
  }
  std::string kernel() const override { return std::string(kernels().f32_gemm_name) + "+pack"; }
};

std::unique_ptr<Op> make_matmul(const NodeSpec&, const std::vector<ValueSpec>&) { return std::make_unique<MatMulF32>(); }

}  // namespace

void register_matmul_ops() { register_op("MatMul", &make_matmul); }

}  // namespace lowbit
