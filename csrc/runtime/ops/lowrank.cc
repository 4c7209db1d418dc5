// LowRank: y = act((x . V) . U + b), V [K, r] and U [r, N] each stored in any dense weight
// encoding (fp32 "f32-n16", int8 "qs8-n16k4", 4-bit "q4-*"/"q4t-*"). The rows run in tiles:
// a tile's rank-r intermediate (tile x r floats, at most kTileBytes) is written and read
// back while it is still in L1/L2, the second product's bias and ReLU are fused in its
// epilogue, and GELU runs on the tile's finished rows. Both products reuse the dense
// kernels of the selected ISA (and their thread split along N inside each tile).
#include <cstring>

#include "kernels/f32-vmath/f32_vmath.h"
#include "runtime/ops/common.h"
#include "runtime/ops/qdense.h"

namespace lowbit {
namespace {

constexpr int64_t kTileBytes = 64 * 1024;  // the intermediate tile: half of L2 on the smallest target cores

struct Factor {
  bool f32 = true;
  const float* Bp = nullptr;  // f32-n16
  QWeights q;
  int64_t K = 0, N = 0;

  void load(const std::string& what, const ValueSpec& v) {
    if (!v.is_const || v.shape.size() != 2 || v.dtype != DType::kF32)
      throw std::invalid_argument(what + " must be a 2-D float32 constant");
    K = v.shape[0];
    N = v.shape[1];
    if (K < 0 || N < 0 || K > kQs8MaxK || N > (int64_t(1) << 31))
      throw std::invalid_argument(what + ": shape out of range (K <= " + std::to_string(kQs8MaxK) + ")");
    if (v.encoding == "f32-n16") {
      f32 = true;
      if (v.nbytes != f32_gemm_packed_floats(K, N) * 4) throw std::invalid_argument(what + ": packed size does not match its shape");
      Bp = static_cast<const float*>(v.data);
      return;
    }
    f32 = false;
    if (!parse_qweight_encoding(v.encoding, q))
      throw std::invalid_argument(what + ": encoding " + v.encoding + " is not a dense weight encoding");
    q.K = K;
    q.N = N;
    if (v.nbytes != q.packed_bytes())
      throw std::invalid_argument(what + ": " + v.encoding + " of shape [" + std::to_string(K) + ", " + std::to_string(N) +
                                  "] needs " + std::to_string(q.packed_bytes()) + " bytes, got " + std::to_string(v.nbytes));
    q.W = static_cast<const uint8_t*>(v.data);
    const std::string bad = check_qweight_codes(q);
    if (!bad.empty()) throw std::invalid_argument(what + ": " + bad);
    if (q.is_q4 && q.lay.kind == Q4Kind::kTable)
      for (int i = 0; i < 16; ++i)
        if (int8_t(q.W[i]) == -128) throw std::invalid_argument(what + ": codebook entry is -128, expected [-127, 127]");
    prepare_q4_lattice(kernels(), q, false);  // the exact form only (factors run as stored)
  }
  size_t scratch(int64_t M) const { return f32 ? 0 : qdense_scratch_bytes(q, M, QDenseOpts()); }
  void run(const float* x, int64_t M, const float* bias, Activation act, float* y, void* scratch) const {
    if (M == 0 || N == 0) return;
    if (K == 0) {
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) {
          float v = bias ? bias[n] : 0.0f;
          if (act == Activation::kRelu) v = (0.0f > v) ? 0.0f : v;
          y[m * N + n] = v;
        }
      return;
    }
    if (f32) {
      F32GemmArgs g{M, N, K, x, K, Bp, bias, y, N, act};
      run_f32_gemm_threaded(g);
    } else {
      run_qdense(kernels(), q, x, M, bias, act, y, scratch, true);
    }
  }
  std::string kernel() const {
    return f32 ? std::string(kernels().f32_gemm_name)
               : std::string(kernels().qs8_quant_name) + " + " + (q.is_q4 ? q4_kernel_name(kernels(), q) : (q.w7 ? kernels().qs7_gemm_name : kernels().qs8_gemm_name));
  }
};

inline size_t up64(size_t x) { return (x + 63) / 64 * 64; }

class LowRank : public Op {
 public:
  LowRank(const NodeSpec& n, const std::vector<ValueSpec>& values) {
    if (n.inputs.size() < 3 || n.inputs[1] < 0 || n.inputs[2] < 0)
      throw std::invalid_argument("LowRank '" + n.name + "' needs inputs x, V, U (and an optional bias)");
    v_.load("LowRank '" + n.name + "': V", values[n.inputs[1]]);
    u_.load("LowRank '" + n.name + "': U", values[n.inputs[2]]);
    if (u_.K != v_.N)
      throw std::invalid_argument("LowRank '" + n.name + "': V is [" + std::to_string(v_.K) + ", " + std::to_string(v_.N) +
                                  "] but U has " + std::to_string(u_.K) + " rows, expected " + std::to_string(v_.N));
    if (n.inputs.size() > 3 && n.inputs[3] >= 0) {
      const ValueSpec& b = values[n.inputs[3]];
      if (!b.is_const || b.shape != Shape{u_.N} || b.nbytes != u_.N * 4 || b.encoding != "raw")
        throw std::invalid_argument("LowRank '" + n.name + "': bias must be a raw constant of shape (N,)");
    }
    const int64_t act = n.attrs.get_int("activation", 0);
    if (act < 0 || act > 2) throw std::invalid_argument("LowRank '" + n.name + "': unknown activation");
    act_ = Activation(act);
  }
  void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const override {
    need_inputs(in, 1, "LowRank");
    const Shape& x = *in[0];
    if (x.empty() || x.back() != v_.K)
      throw ShapeError("expected input with last dimension " + std::to_string(v_.K) + ", got shape " + shape_str(x));
    out[0] = x;
    out[0].back() = u_.N;
  }
  int64_t tile_rows(int64_t M) const {
    const int64_t t = std::max<int64_t>(1, kTileBytes / std::max<int64_t>(1, v_.N * 4));
    return std::min<int64_t>(M, std::max<int64_t>(4, t / 4 * 4));
  }
  size_t scratch_bytes(const std::vector<const Shape*>& in) const override {
    const int64_t mt = tile_rows(rows(*in[0]));
    return up64(size_t(mt) * size_t(v_.N) * 4) + std::max(v_.scratch(mt), u_.scratch(mt));
  }
  void run(const RunArgs& a) const override {
    const int64_t M = rows(a.in[0].shape), mt = tile_rows(M);
    const float* x = a.in[0].as<const float>();
    const float* bias = a.in.size() > 3 ? a.in[3].as<const float>() : nullptr;
    float* y = a.out[0].as<float>();
    float* t = static_cast<float*>(a.scratch);
    void* qs = static_cast<uint8_t*>(a.scratch) + up64(size_t(mt) * size_t(v_.N) * 4);
    const Activation kact = act_ == Activation::kGelu ? Activation::kNone : act_;
    for (int64_t m0 = 0; m0 < M; m0 += mt) {
      const int64_t rows_ = std::min(mt, M - m0);
      v_.run(x + m0 * v_.K, rows_, nullptr, Activation::kNone, t, qs);
      u_.run(t, rows_, bias, kact, y + m0 * u_.N, qs);
      if (act_ == Activation::kGelu) vmath().gelu(y + m0 * u_.N, y + m0 * u_.N, rows_ * u_.N);
    }
  }
  std::string kernel() const override {
    std::string k = "lowrank(" + v_.kernel() + "; " + u_.kernel() + ")";
    return act_ == Activation::kGelu ? k + "+" + vmath().gelu_name : k;
  }

 private:
  static int64_t rows(const Shape& x) {
    int64_t m = 1;
    for (size_t i = 0; i + 1 < x.size(); ++i) m *= x[i];
    return m;
  }
  Factor v_, u_;
  Activation act_ = Activation::kNone;
};

std::unique_ptr<Op> make_lowrank(const NodeSpec& n, const std::vector<ValueSpec>& v) { return std::make_unique<LowRank>(n, v); }

}  // namespace

void register_lowrank_ops() { register_op("LowRank", &make_lowrank); }

}  // namespace lowbit
