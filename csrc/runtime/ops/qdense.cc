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
  if (enc == "qs8-n16k4" || enc == "qs7-n16k4") {
    w.is_q4 = false;
    w.w7 = enc == "qs7-n16k4";
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

std::string check_qweight_codes(const QWeights& w) {
  if (w.K <= 0 || w.N <= 0) return {};
  if (w.is_q4) {
    // 4-bit zero points: the AVX2 tiled path decodes u + 15 - z into a byte in [0, 30]
    if (w.lay.kind != Q4Kind::kAffine || !w.lay.asym) return {};
    const Q4Parts parts = q4_parts(w.K, w.N, w.lay);
    const uint8_t* z = w.W + parts.zeros;
    uint8_t worst = 0;
    for (int64_t i = 0; i < parts.total - parts.zeros; ++i) worst = z[i] > worst ? z[i] : worst;
    if (worst <= 15) return {};
    for (int64_t i = 0; i < parts.total - parts.zeros; ++i)
      if (z[i] > 15)
        return "q4 zero point holds " + std::to_string(int(z[i])) + " at byte " + std::to_string(i) +
               " of the zero points, expected values in [0, 15]";
  }
  if (w.is_q4) return {};
  const size_t wbytes = size_t((w.N + 15) / 16) * 16 * size_t(qs8_kp(w.K));
  if (!w.w7) {
    // -128 breaks the AVX2 sign trick (|-128| is not an s8): reject it so every ISA agrees
    if (std::memchr(w.W, 0x80, wbytes) != nullptr) return "int8 weight holds -128, expected values in [-127, 127]";
    return {};
  }
  // 7-bit codes: (c + 64) as unsigned must stay <= 128; a branch-free max the compiler vectorizes
  const int8_t* c = reinterpret_cast<const int8_t*>(w.W);
  uint8_t worst = 0;
  for (size_t i = 0; i < wbytes; ++i) {
    const uint8_t v = uint8_t(c[i] + kQs7MaxAbs);
    worst = v > worst ? v : worst;
  }
  if (worst <= 2 * kQs7MaxAbs) return {};
  for (size_t i = 0; i < wbytes; ++i)
    if (c[i] < -kQs7MaxAbs || c[i] > kQs7MaxAbs)
      return "qs7-n16k4 weight holds " + std::to_string(int(c[i])) + " at byte " + std::to_string(i) +
             ", expected values in [-64, 64]";
  return {};
}

bool prepare_q4_lattice(const KernelTable& t, QWeights& w, bool rounded, bool force) {
  w.lat_step.clear();
  w.lat_mul.clear();
  if (!w.is_q4 || w.K <= 0 || w.N <= 0 || w.K > (int64_t(1) << 17)) return false;
  if (!force && (t.q4_gemm_lattice == nullptr || t.q4_gemm_lattice_min_rows <= 0)) return false;
  const int64_t P = (w.N + 15) / 16, NG = w.kp() / w.lay.group;
  std::vector<float> step(size_t(P * 16));
  std::vector<int16_t> mul(size_t(P * NG * 16));
  int32_t shift = 0;
  if (!q4_lattice(w.K, w.N, w.lay, w.W, step.data(), mul.data(), &shift, rounded)) return false;
  w.lat_step = std::move(step);
  w.lat_mul = std::move(mul);
  w.lat_shift = shift;
  return true;
}

std::string q4_kernel_name(const KernelTable& t, const QWeights& w) {
  if (w.lat_mul.empty() || t.q4_gemm_lattice == nullptr) return t.q4_gemm_name;
  return std::string(t.q4_gemm_lattice_name) + " (from " + std::to_string(t.q4_gemm_lattice_min_rows) + " rows; fewer: " +
         t.q4_gemm_name + ")";
}

std::vector<float> static_x_bias(const QWeights& w, const float* bias, float x_scale, int32_t x_zp) {
  if (w.is_q4) throw std::invalid_argument("static activation scales need int8 weights");
  std::vector<float> b(size_t(w.N), 0.0f);
  // the packed column sums are exact: sum_k W[k, n] = w_scale[n] * colsum[n]
  const int64_t P = (w.N + 15) / 16, Kp = qs8_kp(w.K);
  const float* ws = reinterpret_cast<const float*>(w.W + P * Kp * 16);
  const int32_t* cs = reinterpret_cast<const int32_t*>(w.W + P * Kp * 16 + P * 16 * 4);
  for (int64_t n = 0; n < w.N; ++n)
    b[n] = float(double(bias ? bias[n] : 0.0f) - double(x_scale) * double(x_zp) * double(ws[n]) * double(cs[n]));
  return b;
}

namespace {

constexpr size_t kAlign = 64;
inline size_t up64(size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

struct ScratchParts {
  size_t q, scale, gsum, idx, val, total;
};
ScratchParts scratch_parts(const QWeights& w, int64_t M, const QDenseOpts& o) {
  ScratchParts s;
  const int64_t ng = w.is_q4 ? w.kp() / w.lay.group : 0;
  const size_t no = size_t(M) * size_t(o.x_static ? 0 : o.outliers);
  s.q = 0;
  s.scale = up64(size_t(M) * size_t(w.kp()));
  s.gsum = s.scale + up64(size_t(M) * 4);
  s.idx = s.gsum + up64(size_t(M) * size_t(ng) * 4);
  s.val = s.idx + up64(no * 4);
  s.total = s.val + up64(no * 4);
  return s;
}

// Rounds to nearest, ties to even, for |v| < 2^22 in the default rounding mode (1.5 * 2^23
// leaves no fraction bits); portable and vectorizable where nearbyint is a libm call.
inline float round_even(float v) { return (v + 12582912.0f) - 12582912.0f; }

// ONNX QuantizeLinear into int8 codes: saturate(rint(x / s) + zp) (NaN -> -128).
inline int32_t quantize_static(float x, float s, int32_t zp) {
  float v = x / s;
  v = v > -512.0f ? v : -512.0f;  // beyond +-512 every zero point saturates anyway
  v = v < 512.0f ? v : 512.0f;
  int32_t c = int32_t(round_even(v)) + zp;
  return c < -128 ? -128 : (c > 127 ? 127 : c);
}

void quant_static_rows(const Qs8QuantArgs& a, float s, int32_t zp, int64_t r0, int64_t r1) {
  const int32_t off = a.bias128 ? 128 : 0;
  for (int64_t r = r0; r < r1; ++r) {
    const float* x = a.x + r * a.ldx;
    int8_t* q = a.q + r * a.ldq;
    a.scale[r] = s;
    for (int64_t k = 0; k < a.K; ++k) q[k] = int8_t(uint8_t(quantize_static(x[k], s, zp) + off));
    for (int64_t k = a.K; k < a.Kp; ++k) q[k] = int8_t(uint8_t(off));
  }
}

// y[m, n0:n1] += val[m, j] * W[idx[m, j], n0:n1] for j in order (the outlier split's float part).
void add_outliers(const KernelTable& t, const QWeights& w, const int32_t* idx, const float* val, int64_t no,
                  int64_t m0, int64_t m1, int64_t n0, int64_t n1, float* y, int64_t ldy) {
  const QwView view{w.is_q4, w.lay, w.K, w.N, w.W};
  for (int64_t m = m0; m < m1; ++m)
    for (int64_t j = 0; j < no; ++j)
      if (idx[m * no + j] >= 0) t.qw_axpy(view, idx[m * no + j], val[m * no + j], n0, n1, y + m * ldy + n0);
}

void requant_rows(float* y, int64_t ldy, int64_t m0, int64_t m1, int64_t n0, int64_t n1, float s, int32_t zp) {
  for (int64_t m = m0; m < m1; ++m) {
    float* yr = y + m * ldy;
    for (int64_t n = n0; n < n1; ++n) yr[n] = float(quantize_static(yr[n], s, zp) - zp) * s;
  }
}

}  // namespace

size_t qdense_scratch_bytes(const QWeights& w, int64_t M, const QDenseOpts& o) { return scratch_parts(w, M, o).total; }

std::string qdense_scratch_key(const KernelTable& t, const QWeights& w, const QDenseOpts& o) {
  const bool biased = w.is_q4 ? !w.lat_mul.empty() && t.q4_gemm_lattice_biased : (w.w7 ? t.qs7_gemm_biased : t.qs8_gemm_biased);
  // (lattice: whether the 4-bit group sums may be skipped, which depends on the layer and M alike)
  std::string k = "qdense K=" + std::to_string(w.K) + " Kp=" + std::to_string(w.kp()) +
                  " group=" + std::to_string(w.is_q4 ? w.lay.group : 0) + " bias128=" + std::to_string(biased) +
                  " lattice=" + std::to_string(!w.lat_mul.empty());
  if (o.x_static) {
    char buf[64];
    std::snprintf(buf, sizeof buf, " static=%a/%d", double(o.x_scale), int(o.x_zp));
    return k + buf;
  }
  return k + " outliers=" + std::to_string(o.outliers);
}

void run_qdense(const KernelTable& t, const QWeights& w, const float* x, int64_t M, const float* bias,
                Activation act, float* y, void* scratch, bool threaded, const QDenseOpts& o, bool quantized) {
  if (M == 0 || w.N == 0) return;
  const ScratchParts sp = scratch_parts(w, M, o);
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
  // the lattice form from the table's row count on (of the whole M: a row's bits never depend on
  // the thread split); the scalar table's reference only when a caller forces it (min_rows 0)
  const bool lattice = w.is_q4 && !w.lat_mul.empty() && t.q4_gemm_lattice != nullptr &&
                       M >= std::max<int64_t>(1, t.q4_gemm_lattice_min_rows);
  const Q4GemmFn gemm4 = lattice ? t.q4_gemm_lattice : t.q4_gemm;
  // the group sums serve the group-wise 4-bit kernels' zero points; the lattice form needs none
  qa.gsum = w.is_q4 && !lattice ? reinterpret_cast<int32_t*>(base + sp.gsum) : nullptr;
  qa.group = w.is_q4 ? w.lay.group : 0;
  qa.ngroups = w.is_q4 ? Kp / w.lay.group : 0;
  const Qs8GemmFn gemm8 = w.w7 ? t.qs7_gemm : t.qs8_gemm;
  qa.bias128 = w.is_q4 ? lattice && t.q4_gemm_lattice_biased : (w.w7 ? t.qs7_gemm_biased : t.qs8_gemm_biased);
  const int64_t no = o.x_static ? 0 : o.outliers;
  const Qs8SplitOut so{no, reinterpret_cast<int32_t*>(base + sp.idx), reinterpret_cast<float*>(base + sp.val)};

  ThreadPool& pool = ThreadPool::global();
  const int64_t nt = threaded ? pool.num_threads() : 1;
  auto quant = [&](int64_t r0, int64_t r1) {
    if (o.x_static) quant_static_rows(qa, o.x_scale, o.x_zp, r0, r1);
    else if (no > 0) t.qs8_quant_split(qa, so, r0, r1);
    else t.qs8_quant(qa, r0, r1);
  };
  // Threads take blocks of rows (each quantizing its own rows, then its GEMM) when there are
  // whole 32-row blocks for each and the weights are small enough to be read by every core:
  // the rows of x, of the quantized x and of y then stay in the L2 of the core that wrote
  // them, from the op before to the op after (the pool gives each thread the same share of
  // rows every time). Larger weights are split by columns, each core reading its part once.
  // (MiniLM-L6's 384 x 1536 int8 layers at 128 rows, 2 threads: docs/kernels.md.)
  const double work = double(M) * double(w.N) * double(w.K);
  const int64_t wbytes = w.is_q4 ? w.K * w.N / 2 : Kp * w.N;
  const bool by_rows = nt > 1 && M >= 32 * nt && work >= 256.0 * 1024 &&
                       (wbytes <= (int64_t(1) << 20) || wbytes <= M * Kp);
  if (quantized || by_rows) {
    // an earlier node quantized this x into the same scratch, or each row block quantizes its rows
  } else if (nt > 1 && M * w.K >= 64 * 1024) {
    parallel_chunks(M, 4, quant);
  } else {
    quant(0, M);
  }

  // the outliers' float part inside the GEMM's epilogue where the kernel takes it (same bits)
  const bool fused = no > 0 && (w.is_q4 ? lattice && t.q4_gemm_lattice_outliers
                                        : gemm8 == t.qs8_gemm && t.qs8_gemm_outliers);
  // with outliers added afterwards, ReLU waits for their float part
  const Activation kact = (no > 0 && !fused && act == Activation::kRelu) ? Activation::kNone : act;
  Qs8GemmArgs g8{};
  Q4GemmArgs g4{};
  if (w.is_q4) {
    g4 = {M, w.N, w.K, w.lay, qa.q, Kp, qa.scale, qa.gsum, w.W, bias, y, w.N, kact};
    if (lattice) {
      g4.lat_step = w.lat_step.data();
      g4.lat_mul = w.lat_mul.data();
      g4.lat_shift = w.lat_shift;
    }
    if (fused) {
      g4.outliers = no;
      g4.out_idx = so.idx;
      g4.out_val = so.val;
    }
  } else {
    g8 = {M, w.N, w.K, qa.q, Kp, qa.scale, w.W, bias, y, w.N, kact};
    if (fused) {
      g8.outliers = no;
      g8.out_idx = so.idx;
      g8.out_val = so.val;
    }
  }
  const F32RowFn gelu = vmath().gelu;
  // Each block: the integer GEMM, then (in cache) the outliers' float part, ReLU/GELU, the output grid.
  auto block = [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    if (w.is_q4) gemm4(g4, m0, m1, n0, n1);
    else gemm8(g8, m0, m1, n0, n1);
    if (no > 0 && !fused) {
      add_outliers(t, w, so.idx, so.val, no, m0, m1, n0, n1, y, w.N);
      if (act == Activation::kRelu)
        for (int64_t m = m0; m < m1; ++m)
          for (int64_t n = n0; n < n1; ++n) y[m * w.N + n] = (0.0f > y[m * w.N + n]) ? 0.0f : y[m * w.N + n];
    }
    if (act == Activation::kGelu)  // the same row GELU as the fp32 Dense
      for (int64_t m = m0; m < m1; ++m) gelu(y + m * w.N + n0, y + m * w.N + n0, n1 - n0);
    if (o.y_requant) requant_rows(y, w.N, m0, m1, n0, n1, o.y_scale, o.y_zp);
  };
  const int64_t panels = (w.N + 15) / 16;
  if (by_rows) {
    const std::vector<int64_t> b = split_range(M, pool.work_items(M / 32), 32);
    std::function<void(int64_t)> f = [&](int64_t i) {
      if (!quantized) quant(b[i], b[i + 1]);
      block(b[i], b[i + 1], 0, w.N);
    };
    pool.parallel_for(int64_t(b.size()) - 1, f);
    return;
  }
  if (nt <= 1 || work < 256.0 * 1024) {
    block(0, M, 0, w.N);
    return;
  }
  if (panels >= 2 * nt || M < 2 * nt) {
    // 64-column granules keep the 4-panel small-M tiles whole
    const int64_t align = panels >= 4 * nt ? 64 : 16;
    const std::vector<int64_t> b = split_range(w.N, pool.work_items((w.N + align - 1) / align), align);
    std::function<void(int64_t)> f = [&](int64_t i) { block(0, M, b[i], b[i + 1]); };
    pool.parallel_for(int64_t(b.size()) - 1, f);
  } else {
    const std::vector<int64_t> b = split_range(M, pool.work_items(std::max<int64_t>(1, M / 8)), 1);
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
    const std::string bad = check_qweight_codes(w_);
    if (!bad.empty()) throw std::invalid_argument("Dense '" + n.name + "': " + bad);
    // (the rounded lattice form changes the weights: only where the node allows it)
    const int64_t requantize = n.attrs.get_int("requantize", 0);
    if (requantize < 0 || requantize > 1)
      throw std::invalid_argument("Dense '" + n.name + "': requantize must be 0 or 1, got " + std::to_string(requantize));
    if (requantize == 1 && !w_.is_q4)
      throw std::invalid_argument("Dense '" + n.name + "': requantize applies to 4-bit weights, got " + wv.encoding);
    prepare_q4_lattice(kernels(), w_, requantize == 1);
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
    opts_.outliers = n.attrs.get_int("outliers", 0);
    if (opts_.outliers < 0 || opts_.outliers > kQs8MaxOutliers)
      throw std::invalid_argument("Dense '" + n.name + "': outliers must be in [0, " + std::to_string(kQs8MaxOutliers) +
                                  "], got " + std::to_string(opts_.outliers));
    auto grid = [&](const char* s_key, const char* z_key, float& s, int32_t& z) {
      const bool has_s = n.attrs.floats.count(s_key) || n.attrs.ints.count(s_key);
      const bool has_z = n.attrs.ints.count(z_key) > 0;
      if (!has_s && !has_z) return false;
      const double sv = n.attrs.get_float(s_key, 0.0);
      const int64_t zv = n.attrs.get_int(z_key, 0);
      if (!has_s || !(sv > 0.0) || !(sv < 3.0e38))
        throw std::invalid_argument("Dense '" + n.name + "': " + s_key + " must be a finite number > 0");
      if (zv < -128 || zv > 127)
        throw std::invalid_argument("Dense '" + n.name + "': " + z_key + " must be in [-128, 127], got " + std::to_string(zv));
      s = float(sv);
      z = int32_t(zv);
      return true;
    };
    opts_.x_static = grid("x_scale", "x_zero_point", opts_.x_scale, opts_.x_zp);
    opts_.y_requant = grid("y_scale", "y_zero_point", opts_.y_scale, opts_.y_zp);
    if (opts_.x_static && (w_.is_q4 || opts_.outliers))
      throw std::invalid_argument("Dense '" + n.name + "': static activation scales (x_scale) need int8 weights "
                                  "(qs8-n16k4) and no outliers");
    if (opts_.x_static) {
      const float* b = nullptr;
      if (n.inputs.size() > 2 && n.inputs[2] >= 0) b = static_cast<const float*>(values[n.inputs[2]].data);
      static_bias_ = static_x_bias(w_, b, opts_.x_scale, opts_.x_zp);
    }
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
    return qdense_scratch_bytes(w_, rows(*in[0]), opts_);
  }
  void run(const RunArgs& a) const override {
    const int64_t M = rows(a.in[0].shape);
    const float* bias = opts_.x_static ? static_bias_.data() : a.in.size() > 2 ? a.in[2].as<const float>() : nullptr;
    float* y = a.out[0].as<float>();
    if (w_.K == 0) {  // empty dot products: y = act(bias)
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < w_.N; ++n) y[m * w_.N + n] = bias ? bias[n] : 0.0f;
      if (act_ == Activation::kRelu)
        for (int64_t i = 0; i < M * w_.N; ++i) y[i] = (0.0f > y[i]) ? 0.0f : y[i];
      if (act_ == Activation::kGelu) vmath().gelu(y, y, M * w_.N);
      if (opts_.y_requant) requant_rows(y, w_.N, 0, M, 0, w_.N, opts_.y_scale, opts_.y_zp);
      return;
    }
    run_qdense(kernels(), w_, a.in[0].as<const float>(), M, bias, act_, y, a.scratch, true, opts_, a.scratch_ready);
  }
  std::string shared_scratch_key() const override {
    return w_.N > 0 && w_.K > 0 ? qdense_scratch_key(kernels(), w_, opts_) : std::string();  // (N = 0 quantizes nothing)
  }
  std::string kernel() const override {
    const char* quant = opts_.x_static ? "qs8_quant_static" : opts_.outliers ? kernels().qs8_quant_split_name
                                                                               : kernels().qs8_quant_name;
    return std::string(quant) + " + " + (w_.is_q4 ? q4_kernel_name(kernels(), w_) : (w_.w7 ? kernels().qs7_gemm_name : kernels().qs8_gemm_name)) +
           (opts_.y_requant ? " + requant" : "");
  }

 private:
  static int64_t rows(const Shape& x) {
    int64_t m = 1;
    for (size_t i = 0; i + 1 < x.size(); ++i) m *= x[i];
    return m;
  }
  QWeights w_;
  Activation act_ = Activation::kNone;
  QDenseOpts opts_;
  std::vector<float> static_bias_;  // bias with the static zero point's term (x_static only)
};

}  // namespace

std::unique_ptr<Op> make_qdense(const NodeSpec& n, const std::vector<ValueSpec>& v) { return std::make_unique<DenseQ>(n, v); }

}  // namespace lowbit
