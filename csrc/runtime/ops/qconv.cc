// The int8 CNN path: activations stay int8 between layers, with a static per-tensor
// scale and zero point (real = scale * (q - zero_point), codes in [-128, 127]).
//
// Quantize    f32 -> int8: q = clamp(rint(x / scale) + zp)          (ONNX QuantizeLinear)
// Dequantize  int8 -> f32: y = float(q - zp) * scale                  (ONNX DequantizeLinear)
// QConv       int8 NHWC conv: im2col (padding = the code of 0.0) onto the selected table's
//             qs8 GEMM, whose packed weight carries unit scales so its float output is the
//             exact integer sum plus bias; then qs8-requant turns each block into the next
//             layer's int8 codes (per-channel multiplier, activation clamp, optional int8
//             residual) while it is in cache.
// QDepthwiseConv  direct int8 depthwise kernel (kernels/qs8-dwconv), requantization fused.
// QMaxPool    max over int8 codes (max commutes with a monotonic quantization: exact).
// QGlobalAveragePool  int8 NHWC -> float32 mean.
//
// Every integer sum is exact and the float steps of the epilogues run in the same order on
// every ISA, so all ISAs and thread counts give the same bytes.
#include <cmath>
#include <cstring>

#include "cpu/dispatch.h"
#include "runtime/ops/common.h"
#include "runtime/ops/qdense.h"
#include "runtime/ops/window.h"

namespace lowbit {
namespace {

constexpr int64_t kRowsPerBlock = 96;  // output pixels per im2col/GEMM/requant block (multiple of the 4 and 8 row tiles)

void check_nhwc(const NodeSpec& n) {
  if (n.attrs.get_string("layout", "NCHW") != "NHWC")
    throw std::invalid_argument(n.op + " '" + n.name + "': the runtime op takes NHWC activations (attr layout='NHWC')");
}

// A per-tensor quantization read from attrs `<p>scale` and `<p>zp` (Quantize / Dequantize:
// `scale` and `zero_point`, as in ONNX).
struct QParams {
  float scale = 1.f;
  int32_t zp = 0;
};

QParams qparams(const NodeSpec& n, const std::string& p) {
  const auto where = n.op + " '" + n.name + "': ";
  if (!n.attrs.floats.count(p + "scale") && !n.attrs.ints.count(p + "scale"))
    throw std::invalid_argument(where + "needs attribute '" + p + "scale'");
  QParams q;
  const std::string zk = p.empty() ? "zero_point" : p + "zp";
  if (!n.attrs.ints.count(zk)) throw std::invalid_argument(where + "needs attribute '" + zk + "'");
  const double s = n.attrs.get_float(p + "scale", 1.0);
  const int64_t z = n.attrs.get_int(zk, 0);
  if (!(s > 0.0) || !std::isfinite(s) || s > 1e30 || s < 1e-30)
    throw std::invalid_argument(where + "'" + p + "scale' must be a finite positive number, got " + std::to_string(s));
  if (z < -128 || z > 127) throw std::invalid_argument(where + "'" + p + "zp' must be in [-128, 127], got " + std::to_string(z));
  q.scale = float(s);
  q.zp = int32_t(z);
  return q;
}

// The output code range [lo, hi] (a fused ReLU / ReLU6 is a narrower range).
void code_range(const NodeSpec& n, int32_t* lo, int32_t* hi) {
  const int64_t l = n.attrs.get_int("y_lo", -128), h = n.attrs.get_int("y_hi", 127);
  if (l < -128 || h > 127 || l > h)
    throw std::invalid_argument(n.op + " '" + n.name + "': y_lo/y_hi must satisfy -128 <= y_lo <= y_hi <= 127");
  *lo = int32_t(l);
  *hi = int32_t(h);
}

// rint for |v| <= 2^22 without libm: adding and subtracting 1.5 * 2^23 leaves v rounded half
// to even (the FPU's default mode), and the loop vectorizes at the baseline ISA.
inline float round_even(float v) {
  const float c = 12582912.0f;  // (v + c) - c is not folded: no -ffast-math
  return (v + c) - c;
}

// A copy with every byte's top bit flipped (q + 128: the u8 operand of vpdpbusd), 8 bytes at a time.
inline void copy_flip(int8_t* d, const int8_t* s, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v;
    std::memcpy(&v, s + i, 8);
    v ^= 0x8080808080808080ull;
    std::memcpy(d + i, &v, 8);
  }
  for (; i < n; ++i) d[i] = int8_t(s[i] ^ int8_t(-128));
}

// Copies of a few dozen bytes (an im2col row segment: kw * C bytes) without a libc call
// each: 16-byte moves, the last one overlapping.
inline void copy_bytes(int8_t* d, const int8_t* s, int64_t n) {
  if (n >= 16) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) std::memcpy(d + i, s + i, 16);
    if (i < n) std::memcpy(d + n - 16, s + n - 16, 16);
  } else if (n >= 8) {
    std::memcpy(d, s, 8);
    std::memcpy(d + n - 8, s + n - 8, 8);
  } else if (n >= 4) {
    std::memcpy(d, s, 4);
    std::memcpy(d + n - 4, s + n - 4, 4);
  } else {
    for (int64_t i = 0; i < n; ++i) d[i] = s[i];
  }
}

std::vector<uint8_t>& thread_bytes(int which) {
  thread_local std::vector<uint8_t> bufs[3];
  return bufs[which];
}

template <class T>
T* thread_array(int which, int64_t n) {
  std::vector<uint8_t>& b = thread_bytes(which);
  const size_t need = size_t(n) * sizeof(T) + 64;
  if (b.size() < need) b.resize(need);
  return reinterpret_cast<T*>((reinterpret_cast<uintptr_t>(b.data()) + 63) & ~uintptr_t(63));
}

// ---- Quantize / Dequantize ----------------------------------------------------------

class Quantize : public Op {
 public:
  explicit Quantize(const NodeSpec& n) : q_(qparams(n, "")) {}
  void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const override {
    need_inputs(in, 1, "Quantize");
    out[0] = *in[0];
  }
  DType out_dtype(size_t) const override { return DType::kI8; }
  void run(const RunArgs& a) const override {
    const float* x = a.in[0].as<const float>();
    int8_t* y = a.out[0].as<int8_t>();
    const float s = q_.scale, lo = float(-128 - q_.zp), hi = float(127 - q_.zp);
    const int32_t zp = q_.zp;
    parallel_chunks(a.out[0].numel(), 1 << 15, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        float v = x[i] / s;  // a division, as ONNX defines it (and ORT computes it)
        v = v > lo ? v : lo;  // NaN -> the lowest code, as max_ps(v, lo)
        v = v < hi ? v : hi;
        y[i] = int8_t(int32_t(round_even(v)) + zp);
      }
    });
  }

 private:
  QParams q_;
};

class Dequantize : public Op {
 public:
  explicit Dequantize(const NodeSpec& n) : q_(qparams(n, "")) {}
  void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const override {
    need_inputs(in, 1, "Dequantize");
    out[0] = *in[0];
  }
  bool input_dtype_ok(size_t, DType t) const override { return t == DType::kI8; }
  void run(const RunArgs& a) const override {
    const int8_t* x = a.in[0].as<const int8_t>();
    float* y = a.out[0].as<float>();
    const float s = q_.scale;
    const int32_t zp = q_.zp;
    parallel_chunks(a.out[0].numel(), 1 << 15, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) y[i] = float(int32_t(x[i]) - zp) * s;
    });
  }

 private:
  QParams q_;
};

// ---- QConv ------------------------------------------------------------------------

class QConv : public Op {
 public:
  QConv(const NodeSpec& n, const std::vector<ValueSpec>& values) {
    check_nhwc(n);
    const std::string where = "QConv '" + n.name + "': ";
    if (n.inputs.size() < 3 || n.inputs[1] < 0 || n.inputs[2] < 0)
      throw std::invalid_argument(where + "needs inputs x, packed weight, weight scales");
    win_ = Window2D::from(n.attrs, "QConv '" + n.name + "'");
    if (!n.attrs.get_ints("kernel_shape")) throw std::invalid_argument(where + "needs kernel_shape");
    if (n.attrs.get_int("group", 1) != 1) throw std::invalid_argument(where + "only group = 1 (depthwise is QDepthwiseConv)");
    const ValueSpec& w = values[n.inputs[1]];
    if (!w.is_const || (w.encoding != "qs8-n16k4" && w.encoding != "qs7-n16k4") || w.shape.size() != 2)
      throw std::invalid_argument(where + "weight must be a qs8-n16k4 or qs7-n16k4 constant [K, Cout], got " + w.encoding);
    w7_ = w.encoding == "qs7-n16k4";
    K_ = w.shape[0];
    N_ = w.shape[1];
    if (K_ < 1 || N_ < 1 || K_ > kQs8MaxK || K_ % (win_.kh * win_.kw) != 0)
      throw std::invalid_argument(where + "weight K must be kh*kw*Cin in [1, " + std::to_string(kQs8MaxK) + "]");
    cin_ = K_ / (win_.kh * win_.kw);
    if (w.nbytes != qs8_packed_bytes(K_, N_)) throw std::invalid_argument(where + "packed weight size does not match its shape");
    W_ = static_cast<const uint8_t*>(w.data);
    const int64_t P = (N_ + 15) / 16, Kp = qs8_kp(K_);
    QWeights qw;
    qw.w7 = w7_;
    qw.K = K_;
    qw.N = N_;
    qw.W = W_;
    if (const std::string bad = check_qweight_codes(qw); !bad.empty()) throw std::invalid_argument(where + bad);
    const float* unit = reinterpret_cast<const float*>(W_ + P * Kp * 16);
    const int32_t* colsum = reinterpret_cast<const int32_t*>(W_ + P * Kp * 16 + P * 16 * 4);
    for (int64_t j = 0; j < N_; ++j)
      if (unit[j] != 1.0f)  // the GEMM's float output must be the exact integer sum
        throw std::invalid_argument(where + "the packed weight's scale slots must be 1.0 (scales are input 2)");
    const ValueSpec& ws = values[n.inputs[2]];
    if (!ws.is_const || ws.dtype != DType::kF32 || ws.encoding != "raw" || ws.shape != Shape{N_})
      throw std::invalid_argument(where + "weight scales must be a raw float32 constant [Cout]");
    const int32_t* bias = nullptr;
    if (n.inputs.size() > 3 && n.inputs[3] >= 0) {
      const ValueSpec& b = values[n.inputs[3]];
      if (!b.is_const || b.dtype != DType::kI32 || b.encoding != "raw" || b.shape != Shape{N_})
        throw std::invalid_argument(where + "bias must be a raw int32 constant [Cout]");
      bias = static_cast<const int32_t*>(b.data);
    }
    residual_ = n.inputs.size() > 4 && n.inputs[4] >= 0;
    x_ = qparams(n, "x_");
    y_ = qparams(n, "y_");
    code_range(n, &lo_, &hi_);
    two_step_ = n.attrs.floats.count("mid_scale") != 0;
    QParams mid = two_step_ ? qparams(n, "mid_") : y_;
    if (residual_) r_ = qparams(n, "r_");
    const float* wsc = static_cast<const float*>(ws.data);
    mult_.resize(size_t(N_));
    bias_.resize(size_t(N_));
    for (int64_t j = 0; j < N_; ++j) {
      if (!(wsc[j] > 0.f) || !std::isfinite(wsc[j])) throw std::invalid_argument(where + "weight scales must be finite and > 0");
      // the same float steps as ONNX Runtime's requantization scale: (x_scale * w_scale) / y_scale
      mult_[j] = (x_.scale * wsc[j]) / mid.scale;
      if (!std::isfinite(mult_[j])) throw std::invalid_argument(where + "requantization multiplier overflows");
      // x_zp * colsum moves into the bias: sum (q - z) w = sum q w - z colsum (integer, then one float)
      bias_[j] = float((bias ? int64_t(bias[j]) : 0) - int64_t(x_.zp) * colsum[j]);
    }
    mid_mult_ = mid.scale / y_.scale;
    mid_zp_ = mid.zp;
    r_mult_ = residual_ ? r_.scale / y_.scale : 0.f;
  }
  void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const override {
    need_inputs(in, 1, "QConv");
    const Shape& x = *in[0];
    if (x.size() != 4 || x[3] != cin_)
      throw ShapeError("expected NHWC input with " + std::to_string(cin_) + " channels, got " + shape_str(x));
    auto g = win_.geometry(x[1], x[2]);
    out[0] = {x[0], g.oh, g.ow, N_};
    if (residual_ && (in.size() < 5 || !in[4] || *in[4] != out[0]))
      throw ShapeError("the residual input must have the output's shape " + shape_str(out[0]));
  }
  DType out_dtype(size_t) const override { return DType::kI8; }
  bool input_dtype_ok(size_t i, DType t) const override {
    if (i == 0 || i == 4) return t == DType::kI8;
    if (i == 3) return t == DType::kI32;
    return t == DType::kF32;
  }
  void run(const RunArgs& a) const override {
    const KernelTable& kt = kernels();
    const Shape& xs = a.in[0].shape;
    const Shape& ys = a.out[0].shape;
    const int64_t H = xs[1], W = xs[2], C = xs[3], OH = ys[1], OW = ys[2];
    const int64_t M = xs[0] * OH * OW;
    if (M == 0) return;
    const auto geo = win_.geometry(H, W);
    const int8_t* x = a.in[0].as<const int8_t>();
    const int8_t* res = residual_ ? a.in[4].as<const int8_t>() : nullptr;
    int8_t* y = a.out[0].as<int8_t>();
    const int64_t Kp = qs8_kp(K_);
    const bool biased = w7_ ? kt.qs7_gemm_biased : kt.qs8_gemm_biased;
    const Qs8GemmFn gemm = w7_ ? kt.qs7_gemm : kt.qs8_gemm;
    // vpdpbusd reads u8: the gathered bytes are q + 128 (q ^ 0x80), taken back out by the colsum
    const int8_t pad = int8_t(biased ? x_.zp ^ -128 : x_.zp);
    const bool direct = win_.kh == 1 && win_.kw == 1 && win_.sh == 1 && win_.sw == 1 && geo.pt == 0 && geo.pl == 0 &&
                        OH == H && OW == W && !biased && K_ % 4 == 0;

    auto im2col = [&](int64_t m0, int64_t m1, int8_t* dst) {
      for (int64_t m = m0; m < m1; ++m) {
        const int64_t ox = m % OW, t = m / OW, oy = t % OH, n = t / OH;
        int8_t* row = dst + (m - m0) * Kp;
        for (int64_t ky = 0; ky < win_.kh; ++ky) {
          const int64_t iy = oy * win_.sh - geo.pt + ky * win_.dh;
          const int64_t ix0 = ox * win_.sw - geo.pl;
          if (win_.dw == 1 && iy >= 0 && iy < H && ix0 >= 0 && ix0 + win_.kw <= W) {
            const int8_t* src = x + ((n * H + iy) * W + ix0) * C;  // kw adjacent pixels: one run of bytes
            if (biased) copy_flip(row, src, win_.kw * C);
            else copy_bytes(row, src, win_.kw * C);
            row += win_.kw * C;
            continue;
          }
          for (int64_t kx = 0; kx < win_.kw; ++kx, row += C) {
            const int64_t ix = ix0 + kx * win_.dw;
            if (iy < 0 || iy >= H || ix < 0 || ix >= W) {
              std::memset(row, uint8_t(pad), size_t(C));
            } else {
              const int8_t* src = x + ((n * H + iy) * W + ix) * C;
              if (biased) copy_flip(row, src, C);
              else copy_bytes(row, src, C);
            }
          }
        }
        for (int64_t k = K_; k < Kp; ++k) dst[(m - m0) * Kp + k] = 0;  // zero weights there
      }
    };
    // The GEMM: exact int32 sums (as float, scales are 1) plus the corrected bias.
    auto gemm_args = [&](const int8_t* A, int64_t lda, int64_t rows, float* C_, int64_t ldc, const float* ones) {
      Qs8GemmArgs g{};
      g.M = rows;
      g.N = N_;
      g.K = K_;
      g.A = A;
      g.lda = lda;
      g.a_scale = ones;
      g.W = W_;
      g.bias = bias_.data();
      g.C = C_;
      g.ldc = ldc;
      g.act = Activation::kNone;
      return g;
    };
    auto requant_args = [&](const float* yf, int64_t ldy, int64_t m0, int64_t n0, int64_t n1) {
      Qs8RequantArgs r{};
      r.N = n1 - n0;
      r.y = yf + n0;
      r.ldy = ldy;
      r.mult = mult_.data() + n0;
      r.out_zp = y_.zp;
      r.lo = lo_;
      r.hi = hi_;
      r.r = res ? res + m0 * N_ + n0 : nullptr;
      r.ldr = N_;
      r.r_zp = r_.zp;
      r.r_mult = r_mult_;
      r.two_step = two_step_;
      r.mid_zp = mid_zp_;
      r.mid_mult = mid_mult_;
      r.q = y + m0 * N_ + n0;
      r.ldq = N_;
      return r;
    };

    const int64_t threads = ThreadPool::global().num_threads();
    // Row blocks of at most kRowsPerBlock, as many per thread (784 rows on 2 threads: 10 blocks
    // of 80, not 9 of 96 split 5 + 4); a multiple of 8 rows keeps the GEMM's row tiles whole.
    const int64_t per_thread = (M + kRowsPerBlock * threads - 1) / (kRowsPerBlock * threads);
    const int64_t rows_per_block = std::min(kRowsPerBlock, ((M + threads * per_thread - 1) / (threads * per_thread) + 7) / 8 * 8);
    const int64_t tasks = (M + rows_per_block - 1) / rows_per_block;
    if (tasks >= 2 * threads || threads == 1) {
      // Row blocks: gather, multiply and requantize a block while it is hot in L1/L2.
      parallel_chunks(tasks, 1, [&](int64_t t0, int64_t t1) {
        float* ones = thread_array<float>(0, kRowsPerBlock);
        for (int64_t i = 0; i < kRowsPerBlock; ++i) ones[i] = 1.0f;
        float* fbuf = thread_array<float>(1, kRowsPerBlock * N_);
        int8_t* abuf = direct ? nullptr : thread_array<int8_t>(2, kRowsPerBlock * Kp);
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t m0 = t * rows_per_block, m1 = std::min(M, m0 + rows_per_block), rows = m1 - m0;
          const int8_t* A = direct ? x + m0 * C : abuf;
          if (!direct) im2col(m0, m1, abuf);
          const Qs8GemmArgs g = gemm_args(A, direct ? C : Kp, rows, fbuf, N_, ones);
          gemm(g, 0, rows, 0, N_);
          kt.qs8_requant(requant_args(fbuf, N_, m0, 0, N_), 0, rows);
        }
      });
      return;
    }
    // Few output pixels (late layers): gather everything once, split the columns.
    float* ones = thread_array<float>(0, M);
    for (int64_t i = 0; i < M; ++i) ones[i] = 1.0f;
    float* fbuf = thread_array<float>(1, M * N_);
    const int8_t* A = x;
    if (!direct) {
      int8_t* abuf = thread_array<int8_t>(2, M * Kp);
      parallel_chunks(M, 16, [&](int64_t m0, int64_t m1) { im2col(m0, m1, abuf + m0 * Kp); });
      A = abuf;
    }
    const Qs8GemmArgs g = gemm_args(A, direct ? C : Kp, M, fbuf, N_, ones);
    const int64_t panels = (N_ + 15) / 16;
    const std::vector<int64_t> b = split_range(N_, ThreadPool::global().work_items(panels), 16);
    std::function<void(int64_t)> f = [&](int64_t i) {
      if (b[i + 1] <= b[i]) return;
      gemm(g, 0, M, b[i], b[i + 1]);
      kt.qs8_requant(requant_args(fbuf, N_, 0, b[i], b[i + 1]), 0, M);
    };
    ThreadPool::global().parallel_for(int64_t(b.size()) - 1, f);
  }
  std::string kernel() const override {
    return std::string(w7_ ? kernels().qs7_gemm_name : kernels().qs8_gemm_name) + "+im2col+" + kernels().qs8_requant_name;
  }

 private:
  Window2D win_;
  bool w7_ = false;  // qs7-n16k4: 7-bit codes, the level's qs7_gemm
  int64_t K_ = 0, N_ = 0, cin_ = 0;
  const uint8_t* W_ = nullptr;
  std::vector<float> mult_, bias_;
  QParams x_, y_, r_;
  int32_t lo_ = -128, hi_ = 127, mid_zp_ = 0;
  float mid_mult_ = 1.f, r_mult_ = 0.f;
  bool residual_ = false, two_step_ = false;
};

// ---- QDepthwiseConv -----------------------------------------------------------------

class QDepthwiseConv : public Op {
 public:
  QDepthwiseConv(const NodeSpec& n, const std::vector<ValueSpec>& values) {
    check_nhwc(n);
    const std::string where = "QDepthwiseConv '" + n.name + "': ";
    if (n.inputs.size() < 3 || n.inputs[1] < 0 || n.inputs[2] < 0)
      throw std::invalid_argument(where + "needs inputs x, weight, weight scales");
    const ValueSpec& w = values[n.inputs[1]];
    if (!w.is_const || w.encoding != "raw" || w.shape.size() != 3 || w.dtype != DType::kI8)
      throw std::invalid_argument(where + "weight must be a raw int8 constant [kh, kw, C]");
    win_ = Window2D::from(n.attrs, "QDepthwiseConv '" + n.name + "'", w.shape[0], w.shape[1]);
    C_ = w.shape[2];
    if (win_.kh * win_.kw > 16384) throw std::invalid_argument(where + "kernel larger than 16384 taps");
    w_ = static_cast<const int8_t*>(w.data);
    if (std::memchr(w_, 0x80, size_t(w.nbytes)) != nullptr)
      throw std::invalid_argument(where + "int8 weight holds -128, expected values in [-127, 127]");
    const ValueSpec& ws = values[n.inputs[2]];
    if (!ws.is_const || ws.dtype != DType::kF32 || ws.encoding != "raw" || ws.shape != Shape{C_})
      throw std::invalid_argument(where + "weight scales must be a raw float32 constant [C]");
    if (n.inputs.size() > 3 && n.inputs[3] >= 0) {
      const ValueSpec& b = values[n.inputs[3]];
      if (!b.is_const || b.dtype != DType::kI32 || b.encoding != "raw" || b.shape != Shape{C_})
        throw std::invalid_argument(where + "bias must be a raw int32 constant [C]");
      bias_ = static_cast<const int32_t*>(b.data);
      for (int64_t c = 0; c < C_; ++c)
        if (bias_[c] >= (1 << 30) || bias_[c] <= -(1 << 30)) throw std::invalid_argument(where + "bias beyond +-2^30");
    }
    x_ = qparams(n, "x_");
    y_ = qparams(n, "y_");
    code_range(n, &lo_, &hi_);
    const float* wsc = static_cast<const float*>(ws.data);
    mult_.resize(size_t(C_));
    for (int64_t c = 0; c < C_; ++c) {
      if (!(wsc[c] > 0.f) || !std::isfinite(wsc[c])) throw std::invalid_argument(where + "weight scales must be finite and > 0");
      mult_[c] = (x_.scale * wsc[c]) / y_.scale;
      if (!std::isfinite(mult_[c])) throw std::invalid_argument(where + "requantization multiplier overflows");
    }
  }
  void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const override {
    need_inputs(in, 1, "QDepthwiseConv");
    const Shape& x = *in[0];
    if (x.size() != 4 || x[3] != C_) throw ShapeError("expected NHWC input with " + std::to_string(C_) + " channels, got " + shape_str(x));
    auto g = win_.geometry(x[1], x[2]);
    out[0] = {x[0], g.oh, g.ow, C_};
  }
  DType out_dtype(size_t) const override { return DType::kI8; }
  bool input_dtype_ok(size_t i, DType t) const override {
    if (i == 0 || i == 1) return t == DType::kI8;
    if (i == 3) return t == DType::kI32;
    return t == DType::kF32;
  }
  void run(const RunArgs& a) const override {
    const Shape& xs = a.in[0].shape;
    const Shape& ys = a.out[0].shape;
    const auto geo = win_.geometry(xs[1], xs[2]);
    Qs8DwConvArgs d{a.in[0].as<const int8_t>(), w_, bias_, mult_.data(), a.out[0].as<int8_t>(),
                    xs[0], xs[1], xs[2], C_, ys[1], ys[2], win_.kh, win_.kw, win_.sh, win_.sw, win_.dh, win_.dw,
                    geo.pt, geo.pl, x_.zp, y_.zp, lo_, hi_};
    const Qs8DwConvFn fn = kernels().qs8_dwconv;
    const int64_t sb = qs8_dwconv_scratch_bytes(C_, win_.kh * win_.kw);
    parallel_chunks(ys[0] * ys[1], 1, [&](int64_t r0, int64_t r1) { fn(d, r0, r1, thread_array<uint8_t>(0, sb)); });
  }
  std::string kernel() const override { return kernels().qs8_dwconv_name; }

 private:
  Window2D win_;
  int64_t C_ = 0;
  const int8_t* w_ = nullptr;
  const int32_t* bias_ = nullptr;
  std::vector<float> mult_;
  QParams x_, y_;
  int32_t lo_ = -128, hi_ = 127;
};

// ---- QMaxPool, QGlobalAveragePool ------------------------------------------------------

class QMaxPool : public Op {
 public:
  explicit QMaxPool(const NodeSpec& n) {
    check_nhwc(n);
    if (!n.attrs.get_ints("kernel_shape")) throw std::invalid_argument("QMaxPool '" + n.name + "' needs kernel_shape");
    win_ = Window2D::from(n.attrs, "QMaxPool '" + n.name + "'");
  }
  void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const override {
    need_inputs(in, 1, "QMaxPool");
    const Shape& x = *in[0];
    if (x.size() != 4) throw ShapeError("expected a 4-D NHWC input, got " + shape_str(x));
    auto g = win_.geometry(x[1], x[2]);
    out[0] = {x[0], g.oh, g.ow, x[3]};
  }
  DType out_dtype(size_t) const override { return DType::kI8; }
  bool input_dtype_ok(size_t, DType t) const override { return t == DType::kI8; }
  void run(const RunArgs& a) const override {
    const Shape& xs = a.in[0].shape;
    const Shape& ys = a.out[0].shape;
    const int64_t H = xs[1], W = xs[2], C = xs[3], OH = ys[1], OW = ys[2];
    const auto geo = win_.geometry(H, W);
    const int8_t* x = a.in[0].as<const int8_t>();
    int8_t* y = a.out[0].as<int8_t>();
    parallel_chunks(ys[0] * OH, 1, [&](int64_t r0, int64_t r1) {
      pool_rows(x, y, H, W, C, OH, OW, geo.pt, geo.pl, r0, r1);
    });
  }

 private:
  // Locals, not captures: byte stores may alias anything in memory, which would make every
  // loop bound a reload and stop the vectorizer.
  void pool_rows(const int8_t* x, int8_t* y, const int64_t H, const int64_t W, const int64_t C, const int64_t OH,
                 const int64_t OW, const int64_t pt, const int64_t pl, const int64_t r0, const int64_t r1) const {
    const int64_t kh = win_.kh, kw = win_.kw, sh = win_.sh, sw = win_.sw, dh = win_.dh, dw = win_.dw;
    for (int64_t r = r0; r < r1; ++r) {
        const int64_t n = r / OH, oy = r % OH;
        for (int64_t ox = 0; ox < OW; ++ox) {
          // on the codes + 128 as unsigned bytes: the baseline ISA (SSE2) has an unsigned byte max
          uint8_t* yp = reinterpret_cast<uint8_t*>(y + (r * OW + ox) * C);
          for (int64_t c = 0; c < C; ++c) yp[c] = 0;
          for (int64_t ky = 0; ky < kh; ++ky) {
            const int64_t iy = oy * sh - pt + ky * dh;
            if (iy < 0 || iy >= H) continue;
            for (int64_t kx = 0; kx < kw; ++kx) {
              const int64_t ix = ox * sw - pl + kx * dw;
              if (ix < 0 || ix >= W) continue;
              const uint8_t* xp = reinterpret_cast<const uint8_t*>(x + ((n * H + iy) * W + ix) * C);
              for (int64_t c = 0; c < C; ++c) {
                const uint8_t v = uint8_t(xp[c] ^ 0x80u);
                yp[c] = v > yp[c] ? v : yp[c];
              }
            }
          }
          for (int64_t c = 0; c < C; ++c) yp[c] = uint8_t(yp[c] ^ 0x80u);
        }
      }
  }

  Window2D win_;
};

class QGlobalAveragePool : public Op {
 public:
  explicit QGlobalAveragePool(const NodeSpec& n) : q_(qparams(n, "x_")) { check_nhwc(n); }
  void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const override {
    need_inputs(in, 1, "QGlobalAveragePool");
    const Shape& x = *in[0];
    if (x.size() != 4) throw ShapeError("expected a 4-D NHWC input, got " + shape_str(x));
    out[0] = {x[0], 1, 1, x[3]};
  }
  bool input_dtype_ok(size_t, DType t) const override { return t == DType::kI8; }
  void run(const RunArgs& a) const override {
    const Shape& xs = a.in[0].shape;
    const int64_t sp = xs[1] * xs[2], C = xs[3];
    const int8_t* x = a.in[0].as<const int8_t>();
    float* y = a.out[0].as<float>();
    parallel_chunks(xs[0], 1, [&](int64_t n0, int64_t n1) {
      std::vector<int64_t> acc(static_cast<size_t>(C));
      for (int64_t n = n0; n < n1; ++n) {
        std::fill(acc.begin(), acc.end(), 0);
        for (int64_t s = 0; s < sp; ++s) {
          const int8_t* r = x + (n * sp + s) * C;
          for (int64_t c = 0; c < C; ++c) acc[size_t(c)] += r[c];
        }
        for (int64_t c = 0; c < C; ++c)
          y[n * C + c] = sp ? float(double(acc[size_t(c)] - int64_t(q_.zp) * sp) / double(sp)) * q_.scale : NAN;
      }
    });
  }

 private:
  QParams q_;
};

std::unique_ptr<Op> mk_quantize(const NodeSpec& n, const std::vector<ValueSpec>&) { return std::make_unique<Quantize>(n); }
std::unique_ptr<Op> mk_dequantize(const NodeSpec& n, const std::vector<ValueSpec>&) { return std::make_unique<Dequantize>(n); }
std::unique_ptr<Op> mk_qconv(const NodeSpec& n, const std::vector<ValueSpec>& v) { return std::make_unique<QConv>(n, v); }
std::unique_ptr<Op> mk_qdwconv(const NodeSpec& n, const std::vector<ValueSpec>& v) {
  return std::make_unique<QDepthwiseConv>(n, v);
}
std::unique_ptr<Op> mk_qmaxpool(const NodeSpec& n, const std::vector<ValueSpec>&) { return std::make_unique<QMaxPool>(n); }
std::unique_ptr<Op> mk_qgap(const NodeSpec& n, const std::vector<ValueSpec>&) { return std::make_unique<QGlobalAveragePool>(n); }

}  // namespace

void register_qconv_ops() {
  register_op("Quantize", &mk_quantize);
  register_op("Dequantize", &mk_dequantize);
  register_op("QConv", &mk_qconv);
  register_op("QDepthwiseConv", &mk_qdwconv);
  register_op("QMaxPool", &mk_qmaxpool);
  register_op("QGlobalAveragePool", &mk_qgap);
}

}  // namespace lowbit
