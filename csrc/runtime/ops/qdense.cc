// Dense with quantized weights (see qdense.h).
#include "runtime/ops/qdense.h"

#include <cstdio>
#include <cstring>

#include "kernels/f32-vmath/f32_vmath.h"
#include "runtime/ops/common.h"

namespace lowbit {

int64_t QWeights::kp() const { return is_q4 ? q4_kg(K, lay.group) : qs8_kp(K); }

int64_t QWeights::packed_bytes() const { return is_q4 ? q4_parts(K, N, lay).total : qs8_packed_bytes(K, N); }

bool parse_qweight_encoding(const std::string& enc, QWeights& w) {
  if (enc == "qs8-n16k4") {
    w.is_q4 = false;
    return true;
  }
  for (int g : {32, 64, 128}) {
    const std::string gs = "-g" + std::to_string(g);
    if (enc == "q4" + gs + "-sym-n16k8" || enc == "q4" + gs + "-asym-n16k8") {
      w.is_q4 = true;
      w.lay = {Q4Kind::kAffine, enc.find("-asym-") != std::string::npos, g};
      return true;
    }
    if (enc == "q4t" + gs + "-n16k8") {
      w.is_q4 = true;
      w.lay = {Q4Kind::kTable, false, g};
      return true;
    }
  }
  return false;
}

namespace {

constexpr size_t kAlign = 64;
inline size_t up64(size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

struct ScratchParts {
  size_t q, scale, gsum, total;
};
ScratchParts scratch_parts(const QWeights& w, int64_t M) {
  ScratchParts s;
  const int64_t ng = w.is_q4 ? w.kp() / w.lay.group : 0;
  s.q = 0;
  s.scale = up64(size_t(M) * size_t(w.kp()));
  s.gsum = s.scale + up64(size_t(M) * 4);
  s.total = s.gsum + up64(size_t(M) * size_t(ng) * 4);
  return s;
}

}  // namespace

size_t qdense_scratch_bytes(const QWeights& w, int64_t M) { return scratch_parts(w, M).total; }

void run_qdense(const KernelTable& t, const QWeights& w, const float* x, int64_t M, const float* bias,
                Activation act, float* y, void* scratch, bool threaded) {
  if (M == 0 || w.N == 0) return;
  const ScratchParts sp = scratch_parts(w, M);
  uint8_t* base = static_cast<uint8_t*>(scratch);
  const int64_t Kp = w.kp();
  Qs8QuantArgs qa;
  qa.x = x;
  qa.ldx = w.K;
  qa.K = w.K;
  qa.Kp = Kp;
  qa.q = reinterpret_cast<int8_t*>(base + sp.q);
  qa.ldq = Kp;
  qa.scale = reinterpret_cast<float*>(base + sp.scale);
  qa.gsum = w.is_q4 ? reinterpret_cast<int32_t*>(base + sp.gsum) : nullptr;
  qa.group = w.is_q4 ? w.lay.group : 0;
  qa.ngroups = w.is_q4 ? Kp / w.lay.group : 0;
  qa.bias128 = !w.is_q4 && t.qs8_gemm_biased;

  ThreadPool& pool = ThreadPool::global();
  const int64_t nt = threaded ? pool.num_threads() : 1;
  if (nt > 1 && M * w.K >= 64 * 1024) {
    parallel_chunks(M, 4, [&](int64_t r0, int64_t r1) { t.qs8_quant(qa, r0, r1); });
  } else {
    t.qs8_quant(qa, 0, M);
  }

  Qs8GemmArgs g8{};
  Q4GemmArgs g4{};
  if (w.is_q4) {
    g4 = {M, w.N, w.K, w.lay, qa.q, Kp, qa.scale, qa.gsum, w.W, bias, y, w.N, act};
  } else {
    g8 = {M, w.N, w.K, qa.q, Kp, qa.scale, w.W, bias, y, w.N, act};
  }
  const F32RowFn gelu = vmath().gelu;
  // Each block: the integer GEMM, then GELU on the finished block while it is in cache.
  auto block = [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    if (w.is_q4) t.q4_gemm(g4, m0, m1, n0, n1);
    else t.qs8_gemm(g8, m0, m1, n0, n1);
    if (act == Activation::kGelu)  // the same row GELU as the fp32 Dense
      for (int64_t m = m0; m < m1; ++m) gelu(y + m * w.N + n0, y + m * w.N + n0, n1 - n0);
  };
  const int64_t panels = (w.N + 15) / 16;
  const double work = double(M) * double(w.N) * double(w.K);
  if (nt <= 1 || work < 256.0 * 1024) {
    block(0, M, 0, w.N);
    return;
  }
  if (panels >= 2 * nt || M < 2 * nt) {
    const int64_t parts = std::min<int64_t>(nt, panels);
    // 64-column granules keep the 4-panel small-M tiles whole
    const std::vector<int64_t> b = split_range(w.N, parts, panels >= 4 * parts ? 64 : 16);
    std::function<void(int64_t)> f = [&](int64_t i) { block(0, M, b[i], b[i + 1]); };
    pool.parallel_for(int64_t(b.size()) - 1, f);
  } else {
    const std::vector<int64_t> b = split_range(M, nt, 1);
    std::function<void(int64_t)> f = [&](int64_t i) { block(b[i], b[i + 1], 0, w.N); };
    pool.parallel_for(int64_t(b.size()) - 1, f);
  }
}

namespace {

class DenseQ : public Op {
 public:
  DenseQ(const NodeSpec& n, const std::vector<ValueSpec>& values) {
    const ValueSpec& wv = values[n.inputs[1]];
    if (!parse_qweight_encoding(wv.encoding, w_))
      throw std::invalid_argument("Dense '" + n.name + "': unknown weight encoding " + wv.encoding);
    if (!wv.is_const || wv.shape.size() != 2)
      throw std::invalid_argument("Dense '" + n.name + "': weight must be a 2-D constant");
    w_.K = wv.shape[0];
    w_.N = wv.shape[1];
    if (w_.K < 0 || w_.N < 0 || w_.K > kQs8MaxK || w_.N > (int64_t(1) << 31))
      throw std::invalid_argument("Dense '" + n.name + "': weight shape out of range (K <= " + std::to_string(kQs8MaxK) + ")");
    if (wv.nbytes != w_.packed_bytes())
      throw std::invalid_argument("Dense '" + n.name + "': " + wv.encoding + " weight of shape [" + std::to_string(w_.K) + ", " +
                                  std::to_string(w_.N) + "] needs " + std::to_string(w_.packed_bytes()) + " bytes, got " +
                                  std::to_string(wv.nbytes));
    w_.W = static_cast<const uint8_t*>(wv.data);
    if (!w_.is_q4 && w_.K > 0) {
      // -128 breaks the AVX2 sign trick (|-128| is not an s8): reject it so every ISA agrees
      const size_t wbytes = size_t((w_.N + 15) / 16) * 16 * size_t(qs8_kp(w_.K));
      if (std::memchr(w_.W, 0x80, wbytes) != nullptr)
        throw std::invalid_argument("Dense '" + n.name + "': int8 weight holds -128, expected values in [-127, 127]");
    }
    if (w_.is_q4 && w_.lay.kind == Q4Kind::kTable) {
      // the AVX2 path multiplies |t| x sign(a, t): -128 has no magnitude in s8
      for (int i = 0; i < 16; ++i)
        if (int8_t(w_.W[i]) == -128)
          throw std::invalid_argument("Dense '" + n.name + "': codebook entry " + std::to_string(i) + " is -128, expected [-127, 127]");
    }
    if (n.inputs.size() > 2 && n.inputs[2] >= 0) {
      const ValueSpec& b = values[n.inputs[2]];
      if (!b.is_const || b.shape != Shape{w_.N} || b.nbytes != w_.N * 4 || b.encoding != "raw")
        throw std::invalid_argument("Dense '" + n.name + "': bias must be a raw constant of shape (N,)");
    }
    const int64_t act = n.attrs.get_int("activation", 0);
    if (act < 0 || act > 2) throw std::invalid_argument("Dense '" + n.name + "': unknown activation");
    act_ = Activation(act);
  }
  void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const override {
    need_inputs(in, 1, "Dense");
    const Shape& x = *in[0];
    if (x.empty() || x.back() != w_.K)
      throw ShapeError("expected input with last dimension " + std::to_string(w_.K) + ", got shape " + shape_str(x));
    out[0] = x;
    out[0].back() = w_.N;
  }
  size_t scratch_bytes(const std::vector<const Shape*>& in) const override {
    return qdense_scratch_bytes(w_, rows(*in[0]));
  }
  void run(const RunArgs& a) const override {
    const int64_t M = rows(a.in[0].shape);
    const float* bias = a.in.size() > 2 ? a.in[2].as<const float>() : nullptr;
    float* y = a.out[0].as<float>();
    if (w_.K == 0) {  // empty dot products: y = act(bias)
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < w_.N; ++n) y[m * w_.N + n] = bias ? bias[n] : 0.0f;
      if (act_ == Activation::kRelu)
        for (int64_t i = 0; i < M * w_.N; ++i) y[i] = (0.0f > y[i]) ? 0.0f : y[i];
      if (act_ == Activation::kGelu) vmath().gelu(y, y, M * w_.N);
      return;
    }
    run_qdense(kernels(), w_, a.in[0].as<const float>(), M, bias, act_, y, a.scratch, true);
  }
  std::string kernel() const override {
    return std::string(kernels().qs8_quant_name) + " + " + (w_.is_q4 ? kernels().q4_gemm_name : kernels().qs8_gemm_name);
  }

 private:
  static int64_t rows(const Shape& x) {
    int64_t m = 1;
    for (size_t i = 0; i + 1 < x.size(); ++i) m *= x[i];
    return m;
  }
  QWeights w_;
  Activation act_ = Activation::kNone;
};

}  // namespace

std::unique_ptr<Op> make_qdense(const NodeSpec& n, const std::vector<ValueSpec>& v) { return std::make_unique<DenseQ>(n, v); }

}  // namespace lowbit
