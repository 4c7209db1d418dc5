// 2-D convolution, fp32, NHWC activations.
//
// Conv: im2col onto the f32 GEMM. The weight is packed at convert time as one
// "f32-n16" matrix per group, shape [G, K, Cout/G] with K = kh*kw*Cin/G ordered
// (ky, kx, ci) -- the order in which an NHWC input row is gathered, so a 1x1,
// stride-1, unpadded conv reads the activations in place, with no im2col at all.
// The GEMM's output rows are output pixels and its columns output channels,
// which is exactly NHWC: no transposes between convolutions.
//
// DepthwiseConv: the direct kernels of kernels/f32-dwconv (weight [kh, kw, C]).
//
// Conv also takes an optional residual (input 3, the output's shape) added
// before the activation: a ResNet block's Add and ReLU run in its epilogue.
// Both take bias and a fused activation (attr `act`: Relu goes into the GEMM
// epilogue; Clip / LeakyRelu / HardSigmoid / HardSwish / Sigmoid / Tanh run on
// each block of rows right after it is computed, while it is in cache).
// Threads split output rows (or N panels for small images); every output
// element is computed the same way whatever the split: bit-identical results.
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "cpu/dispatch.h"
#include "kernels/f32-dwconv/f32_dwconv.h"
#include "kernels/f32-gemm/f32_gemm.h"
#include "runtime/ops/activation.h"
#include "runtime/ops/common.h"
#include "runtime/ops/window.h"

namespace lowbit {
namespace {

constexpr int64_t kRowsPerTask = 96;  // output pixels per im2col block (a multiple of the 12-row tile)

std::atomic<bool> g_conv_implicit{true};  // test hook: false forces im2col everywhere
std::atomic<bool> g_conv_winograd{true};  // test hook: false runs 3x3 convs through the GEMM paths

// Winograd F(2x2, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
// 2016): each 2x2 block of outputs from a 4x4 input tile with 16 multiplies per channel pair
// instead of 36. Weights U = G g G^T (16 values per (ci, co)) are made once when the op is
// built; at run time V = B^T d B per tile and channel, 16 GEMMs M[xi] = V[xi] U[xi] over a
// block of tiles, and y = A^T M A with bias, residual and ReLU (the level's f32_winograd
// kernels). The transforms only add, subtract and halve, so the result is within float
// rounding of the direct convolution (not the same bits).
// Where it runs, as measured on ResNet-18 here (1 thread; each conv against its own GEMM path,
// alternated in one process): 64 channels at 56x56, 128 at 28x28 and 256 at 14x14 1.54-1.64x
// faster on AVX-512, 1.64-1.84x on AVX2; 512 at 7x7 0.98-1.03x (U is 16.8 MB per conv, read
// once per run for 16 tiles), so those keep the GEMM path.
// V and M keep their 16 matrices kWinoTiles * C + 16 floats apart: at a multiple of 4 KB, the
// 16 rows a transform reads or writes per channel vector fall in one L1 set (the 64-channel
// convs took 1.6 ms instead of 1.0).
constexpr int64_t kWinoTiles = 64;          // tiles per block at most: the GEMMs' M
constexpr int64_t kWinoMinBlockTiles = 12;  // ... and at least, when blocks are cut smaller for threads
constexpr int64_t kWinoMinTiles = 32;       // tiles per image (14x14 outputs: 49); fewer run the GEMM paths
constexpr int64_t kWinoMinChannels = 64;    // min(Cin, Cout)
constexpr int64_t kWinoMaxChannels = 256;   // max(Cin, Cout)

// U[xi] for xi = 4i + j: (G g G^T)[i][j], G = [[1,0,0],[1/2,1/2,1/2],[1/2,-1/2,1/2],[0,0,1]],
// for the 16 filters of a weight panel at once (lane l: g[ky][kx][l] -> u[xi][l]).
void winograd_weights16(const float g[3][3][16], float u[16][16]) {
  float t[4][3][16];
  for (int j = 0; j < 3; ++j)
    for (int l = 0; l < 16; ++l) {
      t[0][j][l] = g[0][j][l];
      t[1][j][l] = 0.5f * (g[0][j][l] + g[1][j][l] + g[2][j][l]);
      t[2][j][l] = 0.5f * (g[0][j][l] - g[1][j][l] + g[2][j][l]);
      t[3][j][l] = g[2][j][l];
    }
  for (int i = 0; i < 4; ++i)
    for (int l = 0; l < 16; ++l) {
      u[4 * i + 0][l] = t[i][0][l];
      u[4 * i + 1][l] = 0.5f * (t[i][0][l] + t[i][1][l] + t[i][2][l]);
      u[4 * i + 2][l] = 0.5f * (t[i][0][l] - t[i][1][l] + t[i][2][l]);
      u[4 * i + 3][l] = t[i][2][l];
    }
}

struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};

std::vector<float>& thread_buffer() {
  // Per-thread im2col block, grown once and reused across runs (a pool worker
  // or the caller; its size does not depend on the thread count).
  thread_local std::vector<float> buf;
  return buf;
}

// im2col copies. A short run (the stem: 7 taps x 3 channels = 21 floats) as 8-float
// chunks, the last one overlapping the previous, so there is no remainder loop; long
// runs through memcpy. A loop over the exact length (or a memcpy call per run) cost
// more than the copy itself on the 3-channel stem.
inline void copy8(float* dst, const float* src) { std::memcpy(dst, src, 32); }  // two moves, inlined
inline void copy_run(float* dst, const float* src, int64_t n) {
  if (n >= 64) {
    std::memcpy(dst, src, size_t(n) * 4);
  } else if (n >= 8) {
    for (int64_t i = 0; i + 8 < n; i += 8) copy8(dst + i, src + i);
    copy8(dst + n - 8, src + n - 8);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
  }
}
inline void zero_run(float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = 0.f;
}

// Geometry of one im2col (plain values, so the row loop keeps them in registers).
struct Im2col {
  const float* x;  // [N, H, W, C]
  int64_t H, W, C, OH, OW, K, cg, g;
  int64_t kh, kw, sh, sw, dh, dw, pt, pl;
};

// Rows [m0, m1) of the patch matrix (row stride K, columns ordered ky, kx, ci) into dst.
void im2col_rows(const Im2col& p, int64_t m0, int64_t m1, float* dst) {
  const float* x = p.x;
  const int64_t H = p.H, W = p.W, C = p.C, OH = p.OH, OW = p.OW, K = p.K, cg = p.cg, g = p.g;
  const int64_t kh = p.kh, kw = p.kw, sh = p.sh, sw = p.sw, dh = p.dh, dw = p.dw, pt = p.pt, pl = p.pl;
  const int64_t run = kw * cg;
  for (int64_t m = m0; m < m1; ++m) {
    const int64_t ox = m % OW, t = m / OW, oy = t % OH, n = t / OH;
    float* row = dst + (m - m0) * K;
    const int64_t ix0 = ox * sw - pl;
    const bool row_inside = dw == 1 && ix0 >= 0 && ix0 + kw <= W && cg == C;
    for (int64_t ky = 0; ky < kh; ++ky) {
      const int64_t iy = oy * sh - pt + ky * dh;
      if (row_inside && iy >= 0 && iy < H) {
        // the kw taps of this kernel row are adjacent pixels: one contiguous copy
        copy_run(row, x + ((n * H + iy) * W + ix0) * C, run);
        row += run;
        continue;
      }
      for (int64_t kx = 0; kx < kw; ++kx, row += cg) {
        const int64_t ix = ix0 + kx * dw;
        if (iy < 0 || iy >= H || ix < 0 || ix >= W) zero_run(row, cg);
        else copy_run(row, x + ((n * H + iy) * W + ix) * C + g * cg, cg);
      }
    }
  }
}

void check_layout(const NodeSpec& n) {
  if (n.attrs.get_string("layout", "NCHW") != "NHWC")
    throw std::invalid_argument(n.op + " '" + n.name + "': the runtime op takes NHWC activations (attr layout='NHWC'); "
                                "convert the graph with lowbit's passes (to_nhwc)");
}

class ConvNHWC : public Op {
 public:
  ConvNHWC(const NodeSpec& n, const std::vector<ValueSpec>& values) {
    check_layout(n);
    if (n.inputs.size() < 2 || n.inputs[1] < 0) throw std::invalid_argument("Conv '" + n.name + "' needs a weight");
    const ValueSpec& w = values[n.inputs[1]];
    const auto* ks = n.attrs.get_ints("kernel_shape");
    if (!ks || ks->size() != 2) throw std::invalid_argument("Conv '" + n.name + "': needs a 2-entry kernel_shape");
    win_ = Window2D::from(n.attrs, "Conv '" + n.name + "'");
    G_ = n.attrs.get_int("group", 1);
    if (!w.is_const || w.encoding != "f32-n16" || w.shape.size() != 3 || w.dtype != DType::kF32)
      throw std::invalid_argument("Conv '" + n.name + "': weight must be a constant [G, K, N] with encoding f32-n16, got " + w.encoding);
    if (w.shape[0] != G_ || G_ < 1) throw std::invalid_argument("Conv '" + n.name + "': weight groups differ from attr group");
    K_ = w.shape[1];
    Nper_ = w.shape[2];
    if (K_ < 1 || Nper_ < 1 || K_ % (win_.kh * win_.kw) != 0)
      throw std::invalid_argument("Conv '" + n.name + "': weight K is not kh*kw*Cin/group");
    cg_ = K_ / (win_.kh * win_.kw);
    panel_floats_ = f32_gemm_packed_floats(K_, Nper_);
    if (w.nbytes != G_ * panel_floats_ * 4) throw std::invalid_argument("Conv '" + n.name + "': packed weight size does not match its shape");
    if (n.inputs.size() > 2 && n.inputs[2] >= 0) {
      const ValueSpec& b = values[n.inputs[2]];
      if (!b.is_const || b.shape != Shape{G_ * Nper_}) throw std::invalid_argument("Conv '" + n.name + "': bias must be a constant [Cout]");
    }
    act_ = act_params_from(n.attrs.get_string("act", ""), n.attrs, "act_");
    residual_ = n.inputs.size() > 3 && n.inputs[3] >= 0;
    if (win_.kh == 3 && win_.kw == 3 && win_.sh == 1 && win_.sw == 1 && win_.dh == 1 && win_.dw == 1 && G_ == 1 &&
        std::min(cg_, Nper_) >= kWinoMinChannels && std::max(cg_, Nper_) <= kWinoMaxChannels && w.data)
      build_winograd(static_cast<const float*>(w.data));
  }
  void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const override {
    need_inputs(in, 1, "Conv");
    const Shape& x = *in[0];
    if (x.size() != 4 || x[3] != G_ * cg_)
      throw ShapeError("expected NHWC input with " + std::to_string(G_ * cg_) + " channels, got " + shape_str(x));
    auto g = win_.geometry(x[1], x[2]);
    out[0] = {x[0], g.oh, g.ow, G_ * Nper_};
    if (residual_ && (in.size() < 4 || !in[3] || *in[3] != out[0]))
      throw ShapeError("the residual input must have the output's shape " + shape_str(out[0]));
  }
  // Implicit GEMM (no im2col): the GEMM reads each patch row straight from the NHWC
  // input (a zero-padded copy when the window leaves the image), one segment of kw*C
  // contiguous floats per kernel row. Needs a kernel that supports it, one group,
  // adjacent taps (dilation 1 along x), and segments at least the table's
  // f32_conv_implicit_min_segment long (the AVX2 GEMM cuts K blocks at segment ends, so
  // short segments cost it extra blocks; the AVX-512 one walks segments inside its tiles).
  struct Implicit {
    bool on = false, padded = false;
    int64_t Hp = 0, Wp = 0;  // rows / columns of the image the GEMM reads (padded or not)
  };
  Implicit implicit_plan(const Shape& xs, const Shape& ys) const {
    Implicit p;
    const int64_t H = xs[1], W = xs[2], C = xs[3], OH = ys[1], OW = ys[2];
    const bool direct = win_.kh == 1 && win_.kw == 1 && win_.sh == 1 && win_.sw == 1 && OH == H && OW == W &&
                        win_.geometry(H, W).pt == 0 && win_.geometry(H, W).pl == 0;
    if (direct || !g_conv_implicit.load(std::memory_order_relaxed) || !kernels().f32_gemm_implicit_a || G_ != 1 || (win_.dw != 1 && win_.kw != 1) ||
        win_.kw * C < kernels().f32_conv_implicit_min_segment || OH * OW == 0)
      return p;
    const auto geo = win_.geometry(H, W);
    p.on = true;
    p.Hp = (OH - 1) * win_.sh + (win_.kh - 1) * win_.dh + 1;
    p.Wp = (OW - 1) * win_.sw + (win_.kw - 1) * win_.dw + 1;
    p.padded = geo.pt > 0 || geo.pl > 0 || p.Hp > H || p.Wp > W;
    if (!p.padded) {  // read the input itself
      p.Hp = H;
      p.Wp = W;
    }
    return p;
  }
  size_t scratch_bytes(const std::vector<const Shape*>& in) const override {
    if (in.empty() || !in[0] || in[0]->size() != 4) return 0;
    std::vector<Shape> out(1);
    infer(in, out);
    const Implicit p = implicit_plan(*in[0], out[0]);
    return p.on && p.padded ? size_t(shape_numel({(*in[0])[0], p.Hp, p.Wp, (*in[0])[3]})) * 4 : 0;
  }
  void run(const RunArgs& a) const override {
    const Shape& xs = a.in[0].shape;
    const Shape& ys = a.out[0].shape;
    const int64_t N = xs[0], H = xs[1], W = xs[2], C = xs[3];
    const int64_t OH = ys[1], OW = ys[2], Cout = ys[3];
    const int64_t M = N * OH * OW;
    if (M == 0) return;
    auto geo = win_.geometry(H, W);
    if (use_winograd(OH, OW)) return run_winograd(a);
    const Implicit imp = implicit_plan(xs, ys);
    if (imp.on) return run_implicit(a, imp);
    const float* x = a.in[0].as<const float>();
    const float* bias = a.in.size() > 2 && a.in[2].data ? a.in[2].as<const float>() : nullptr;
    float* y = a.out[0].as<float>();
    const bool direct = win_.kh == 1 && win_.kw == 1 && win_.sh == 1 && win_.sw == 1 && geo.pt == 0 && geo.pl == 0 &&
                        OH == H && OW == W;
    const F32GemmFn fn = kernels().f32_gemm;
    // y = act(conv + bias [+ residual]): the residual and ReLU run in the GEMM epilogue;
    // other activations run on each block right after its GEMM.
    const float* res = residual_ ? a.in[3].as<const float>() : nullptr;
    const Activation gemm_act = act_.kind == ActKind::kRelu ? Activation::kRelu : Activation::kNone;
    const bool post = act_.kind != ActKind::kNone && gemm_act == Activation::kNone;

    for (int64_t g = 0; g < G_; ++g) {
      F32GemmArgs ga;
      ga.M = M;
      ga.N = Nper_;
      ga.K = K_;
      ga.Bp = a.in[1].as<const float>() + g * panel_floats_;
      ga.bias = bias ? bias + g * Nper_ : nullptr;
      ga.C = y + g * Nper_;
      ga.ldc = Cout;
      ga.act = gemm_act;
      ga.res = res ? res + g * Nper_ : nullptr;
      ga.ldr = Cout;
      // im2col of output rows [m0, m1) into dst (row stride K_).
      const Im2col geom{x, H, W, C, OH, OW, K_, cg_, g, win_.kh, win_.kw, win_.sh, win_.sw, win_.dh, win_.dw, geo.pt, geo.pl};
      auto im2col = [&](int64_t m0, int64_t m1, float* dst) { im2col_rows(geom, m0, m1, dst); };
      auto epilogue = [&](int64_t m0, int64_t m1) {
        if (!post) return;
        for (int64_t m = m0; m < m1; ++m) {
          finish_pixel(ga.C + m * Cout, nullptr, Nper_);
        }
      };
      const int64_t tasks = (M + kRowsPerTask - 1) / kRowsPerTask;
      const int64_t threads = ThreadPool::global().num_threads();
      if (tasks >= 2 * threads || threads == 1) {
        // Row blocks: gather a block, multiply it while it is hot in L1/L2.
        parallel_chunks(tasks, 1, [&](int64_t t0, int64_t t1) {
          for (int64_t t = t0; t < t1; ++t) {
            const int64_t m0 = t * kRowsPerTask, m1 = std::min(M, m0 + kRowsPerTask);
            F32GemmArgs gb = ga;  // this block as its own GEMM: rows [m0, m1)
            gb.M = m1 - m0;
            gb.C = ga.C + m0 * Cout;
            gb.res = ga.res ? ga.res + m0 * Cout : nullptr;
            if (direct) {
              gb.A = x + g * cg_ + m0 * C;
              gb.lda = C;
            } else {
              std::vector<float>& buf = thread_buffer();
              if (buf.size() < size_t(kRowsPerTask * K_)) buf.resize(size_t(kRowsPerTask * K_));
              im2col(m0, m1, buf.data());
              gb.A = buf.data();
              gb.lda = K_;
            }
            fn(gb, 0, gb.M, 0, Nper_);
            epilogue(m0, m1);
          }
        });
      } else {
        // Few output pixels (late layers): gather everything, split the GEMM by N panels.
        if (direct) {
          ga.A = x + g * cg_;
          ga.lda = C;
        } else {
          std::vector<float>& buf = thread_buffer();
          if (buf.size() < size_t(M * K_)) buf.resize(size_t(M * K_));
          im2col(0, M, buf.data());
          ga.A = buf.data();
          ga.lda = K_;
        }
        run_f32_gemm_threaded(ga);
        if (post) parallel_chunks(M, 64, [&](int64_t m0, int64_t m1) { epilogue(m0, m1); });
      }
    }
  }
  std::string kernel() const override {
    // "+implicit" where the GEMM reads the input in place (padding-free 1x1 stride-1 convs
    // are read in place either way), "+im2col" where patches are gathered first
    const bool maybe_implicit = kernels().f32_gemm_implicit_a && G_ == 1 && (win_.dw == 1 || win_.kw == 1) &&
                                win_.kw * cg_ >= kernels().f32_conv_implicit_min_segment &&
                                !(win_.kh == 1 && win_.kw == 1 && win_.sh == 1 && win_.sw == 1);
    return std::string(kernels().f32_gemm_name) + (wino_ ? "+winograd" : maybe_implicit ? "+implicit" : "+im2col");
  }

 private:
  void run_implicit(const RunArgs& a, const Implicit& imp) const {
    const Shape& xs = a.in[0].shape;
    const Shape& ys = a.out[0].shape;
    const int64_t N = xs[0], H = xs[1], W = xs[2], C = xs[3];
    const int64_t OH = ys[1], OW = ys[2], Cout = ys[3];
    const int64_t Mimg = OH * OW;
    const auto geo = win_.geometry(H, W);
    const float* x = a.in[0].as<const float>();
    float* y = a.out[0].as<float>();
    const float* bias = a.in.size() > 2 && a.in[2].data ? a.in[2].as<const float>() : nullptr;
    const float* res = residual_ ? a.in[3].as<const float>() : nullptr;
    const int64_t Hp = imp.Hp, Wp = imp.Wp;
    const float* img = x;
    if (imp.padded) {
      // zero-padded copy: padded row py is input row py - pt, padded column px is input column px - pl
      float* xp = static_cast<float*>(a.scratch);
      parallel_chunks(N * Hp, std::max<int64_t>(1, 16384 / std::max<int64_t>(Wp * C, 1)), [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t n = r / Hp, iy = r % Hp - geo.pt;
          float* dst = xp + r * Wp * C;
          if (iy < 0 || iy >= H) {
            std::memset(dst, 0, size_t(Wp * C) * 4);
            continue;
          }
          const int64_t x0 = std::min(geo.pl, Wp);                     // padded columns left of the image
          const int64_t nx = std::max<int64_t>(0, std::min(W, Wp - x0));  // image columns inside
          std::memset(dst, 0, size_t(x0 * C) * 4);
          std::memcpy(dst + x0 * C, x + ((n * H + iy) * W) * C, size_t(nx * C) * 4);
          std::memset(dst + (x0 + nx) * C, 0, size_t((Wp - x0 - nx) * C) * 4);
        }
      });
      img = xp;
    }
    // the residual and ReLU run in the GEMM epilogue, other activations afterwards
    const Activation gemm_act = act_.kind == ActKind::kRelu ? Activation::kRelu : Activation::kNone;
    const bool post = act_.kind != ActKind::kNone && gemm_act == Activation::kNone;
    const F32GemmFn fn = kernels().f32_gemm;
    // A[(oy, ox), (ky, kx, ci)] = img[n][oy*sh + ky*dh][ox*sw + kx][ci]
    auto args = [&](int64_t n) {
      F32GemmArgs g;
      g.M = Mimg;
      g.N = Nper_;
      g.K = K_;
      g.A = img + n * Hp * Wp * C;
      g.lda = win_.sw * C;
      g.kseg = win_.kw * C;
      g.seg_stride = win_.dh * Wp * C;
      g.mrow = OW;
      g.row_stride = win_.sh * Wp * C;
      g.Bp = a.in[1].as<const float>();
      g.bias = bias;
      g.C = y + n * Mimg * Cout;
      g.ldc = Cout;
      g.act = gemm_act;
      g.res = res ? res + n * Mimg * Cout : nullptr;
      g.ldr = Cout;
      return g;
    };
    auto epilogue = [&](int64_t m0, int64_t m1) {  // rows of the whole batch
      if (!post) return;
      for (int64_t m = m0; m < m1; ++m) {
        finish_pixel(y + m * Cout, nullptr, Cout);
      }
    };
    const int64_t per_img = (Mimg + kRowsPerTask - 1) / kRowsPerTask;
    const int64_t tasks = N * per_img;
    const int64_t threads = ThreadPool::global().num_threads();
    if (tasks >= 2 * threads || threads == 1) {
      parallel_chunks(tasks, 1, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t n = t / per_img, m0 = (t % per_img) * kRowsPerTask, m1 = std::min(Mimg, m0 + kRowsPerTask);
          fn(args(n), m0, m1, 0, Nper_);
          epilogue(n * Mimg + m0, n * Mimg + m1);
        }
      });
    } else {
      for (int64_t n = 0; n < N; ++n) run_f32_gemm_threaded(args(n));
      if (post) parallel_chunks(N * Mimg, 64, [&](int64_t m0, int64_t m1) { epilogue(m0, m1); });
    }
  }

  // One output pixel's n channels after the GEMM: + residual (rr, when not null), then the
  // activation.
  void finish_pixel(float* yr, const float* rr, int64_t n) const {
    if (rr)
      for (int64_t j = 0; j < n; ++j) yr[j] += rr[j];
    apply_activation(act_, yr, yr, n);
  }

  bool use_winograd(int64_t OH, int64_t OW) const {
    return wino_ && g_conv_winograd.load(std::memory_order_relaxed) && ((OH + 1) / 2) * ((OW + 1) / 2) >= kWinoMinTiles;
  }

  // U[xi] (Cin x Cout, "f32-n16") from the packed weight W[(ky*3 + kx)*Cin + ci][co]: both are
  // 16-column panels, so each (panel, ci) reads 9 rows of 16 weights and writes 16 rows of 16.
  void build_winograd(const float* Wp) {
    const int64_t Cin = cg_, Cout = Nper_, panels = (Cout + 15) / 16;
    wino_floats_ = f32_gemm_packed_floats(Cin, Cout);
    float* u = static_cast<float*>(std::aligned_alloc(64, size_t((16 * wino_floats_ * 4 + 63) / 64 * 64)));
    if (!u) throw std::bad_alloc();
    wino_.reset(u);
    for (int64_t p = 0; p < panels; ++p) {
      const float* wp = Wp + p * K_ * 16;
      for (int64_t ci = 0; ci < Cin; ++ci) {
        float g[3][3][16], v[16][16];
        for (int tap = 0; tap < 9; ++tap)
          std::memcpy(g[tap / 3][tap % 3], wp + (tap * Cin + ci) * 16, sizeof(float) * 16);
        winograd_weights16(g, v);  // the panel's zero columns past Cout stay zero
        for (int xi = 0; xi < 16; ++xi) std::memcpy(u + xi * wino_floats_ + (p * Cin + ci) * 16, v[xi], sizeof(float) * 16);
      }
    }
  }

  void run_winograd(const RunArgs& a) const {
    const Shape& xs = a.in[0].shape;
    const Shape& ys = a.out[0].shape;
    const int64_t N = xs[0], H = xs[1], W = xs[2], C = xs[3];
    const int64_t OH = ys[1], OW = ys[2], Cout = ys[3];
    const auto geo = win_.geometry(H, W);
    const int64_t th = (OH + 1) / 2, tw = (OW + 1) / 2, tiles = th * tw;
    // blocks of up to kWinoTiles tiles, cut smaller (to kWinoMinBlockTiles) until there are
    // two per thread: a 14x14 image (49 tiles) would otherwise be one block on one thread.
    // A tile's result does not depend on its block (the GEMM computes each row alone).
    const int64_t threads = ThreadPool::global().num_threads();
    int64_t per_img = (tiles + kWinoTiles - 1) / kWinoTiles;
    if (threads > 1)
      per_img = std::max(per_img, std::min((2 * threads + N - 1) / N, tiles / kWinoMinBlockTiles));
    const int64_t tb = (tiles + per_img - 1) / per_img, blocks = N * per_img;
    const float* x = a.in[0].as<const float>();
    const float* bias = a.in.size() > 2 && a.in[2].data ? a.in[2].as<const float>() : nullptr;
    const float* res = residual_ ? a.in[3].as<const float>() : nullptr;
    float* y = a.out[0].as<float>();
    const F32GemmFn fn = kernels().f32_gemm;
    const F32WinogradKernels wk = kernels().f32_winograd;
    const float* U = wino_.get();
    parallel_chunks(blocks, 1, [&](int64_t b0, int64_t b1) {
      // per thread: V (16 matrices of kWinoTiles x C), M (16 of kWinoTiles x Cout), a zero pixel
      std::vector<float>& buf = thread_buffer();
      const int64_t vs = kWinoTiles * C + 16, ms = kWinoTiles * Cout + 16;  // xi strides, off the 4 KB period
      const size_t need = size_t(16 * (vs + ms) + C);
      if (buf.size() < need) buf.resize(need);
      float* V = buf.data();
      float* Mo = V + 16 * vs;
      float* zero = Mo + 16 * ms;
      std::memset(zero, 0, size_t(C) * 4);
      for (int64_t blk = b0; blk < b1; ++blk) {
        const int64_t n = blk / per_img, t0 = (blk % per_img) * tb, nt = std::min(tb, tiles - t0);
        const float* img = x + n * H * W * C;
        for (int64_t t = 0; t < nt; ++t) {
          const int64_t ty = (t0 + t) / tw, tx = (t0 + t) % tw;
          const float* d[16];
          for (int r = 0; r < 4; ++r)
            for (int c = 0; c < 4; ++c) {
              const int64_t iy = 2 * ty - geo.pt + r, ix = 2 * tx - geo.pl + c;
              d[4 * r + c] = iy >= 0 && iy < H && ix >= 0 && ix < W ? img + (iy * W + ix) * C : zero;
            }
          float* v[16];
          for (int xi = 0; xi < 16; ++xi) v[xi] = V + xi * vs + t * C;
          wk.input(d, v, C);
        }
        for (int xi = 0; xi < 16; ++xi) {
          F32GemmArgs g{};
          g.M = nt;
          g.N = Cout;
          g.K = C;
          g.A = V + xi * vs;
          g.lda = C;
          g.Bp = U + xi * wino_floats_;
          g.bias = nullptr;
          g.C = Mo + xi * ms;
          g.ldc = Cout;
          g.act = Activation::kNone;
          fn(g, 0, nt, 0, Cout);
        }
        for (int64_t t = 0; t < nt; ++t) {
          const int64_t ty = (t0 + t) / tw, tx = (t0 + t) % tw;
          F32WinoOutputArgs o;
          for (int xi = 0; xi < 16; ++xi) o.m[xi] = Mo + xi * ms + t * Cout;
          for (int p = 0; p < 4; ++p) {
            const int64_t oy = 2 * ty + p / 2, ox = 2 * tx + p % 2;
            o.y[p] = oy < OH && ox < OW ? y + ((n * OH + oy) * OW + ox) * Cout : nullptr;
            o.res[p] = res && o.y[p] ? res + (o.y[p] - y) : nullptr;
          }
          o.bias = bias;
          o.C = Cout;
          o.relu = act_.kind == ActKind::kRelu;  // bias, residual and ReLU in the transform
          wk.output(o);
          if (act_.kind != ActKind::kNone && act_.kind != ActKind::kRelu)
            for (int p = 0; p < 4; ++p)
              if (o.y[p]) apply_activation(act_, o.y[p], o.y[p], Cout);
        }
      }
    });
  }

  Window2D win_;
  int64_t G_ = 1, K_ = 0, Nper_ = 0, cg_ = 0, panel_floats_ = 0;
  ActParams act_;
  bool residual_ = false;
  std::unique_ptr<float, FreeDeleter> wino_;  // U[16] when the conv can run as Winograd F(2x2, 3x3)
  int64_t wino_floats_ = 0;                  // floats per U[xi]
};

class DepthwiseConvNHWC : public Op {
 public:
  DepthwiseConvNHWC(const NodeSpec& n, const std::vector<ValueSpec>& values) {
    check_layout(n);
    if (n.inputs.size() < 2 || n.inputs[1] < 0) throw std::invalid_argument("DepthwiseConv '" + n.name + "' needs a weight");
    const ValueSpec& w = values[n.inputs[1]];
    if (!w.is_const || w.encoding != "raw" || w.shape.size() != 3 || w.dtype != DType::kF32)
      throw std::invalid_argument("DepthwiseConv '" + n.name + "': weight must be a raw float32 constant [kh, kw, C]");
    win_ = Window2D::from(n.attrs, "DepthwiseConv '" + n.name + "'", w.shape[0], w.shape[1]);
    C_ = w.shape[2];
    if (n.inputs.size() > 2 && n.inputs[2] >= 0) {
      const ValueSpec& b = values[n.inputs[2]];
      if (!b.is_const || b.shape != Shape{C_}) throw std::invalid_argument("DepthwiseConv '" + n.name + "': bias must be a constant [C]");
    }
    act_ = act_params_from(n.attrs.get_string("act", ""), n.attrs, "act_");
  }
  void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const override {
    need_inputs(in, 1, "DepthwiseConv");
    const Shape& x = *in[0];
    if (x.size() != 4 || x[3] != C_) throw ShapeError("expected NHWC input with " + std::to_string(C_) + " channels, got " + shape_str(x));
    auto g = win_.geometry(x[1], x[2]);
    out[0] = {x[0], g.oh, g.ow, C_};
  }
  void run(const RunArgs& a) const override {
    const Shape& xs = a.in[0].shape;
    const Shape& ys = a.out[0].shape;
    auto geo = win_.geometry(xs[1], xs[2]);
    F32DwConvArgs d{a.in[0].as<const float>(), a.in[1].as<const float>(),
                    a.in.size() > 2 && a.in[2].data ? a.in[2].as<const float>() : nullptr, a.out[0].as<float>(),
                    xs[0], xs[1], xs[2], C_, ys[1], ys[2], win_.kh, win_.kw, win_.sh, win_.sw, win_.dh, win_.dw, geo.pt, geo.pl};
    const int64_t rows = ys[0] * ys[1];
    const F32DwConvFn fn = f32_dwconv_kernel().fn;
    parallel_chunks(rows, 1, [&](int64_t r0, int64_t r1) {
      std::vector<float>& acc = thread_buffer();
      if (acc.size() < size_t(C_)) acc.resize(size_t(C_));
      for (int64_t r = r0; r < r1; ++r) {
        fn(d, r, r + 1, acc.data());
        if (act_.kind != ActKind::kNone) {
          float* yr = d.y + r * d.OW * C_;
          apply_activation(act_, yr, yr, d.OW * C_);
        }
      }
    });
  }
  std::string kernel() const override { return f32_dwconv_kernel().name; }

 private:
  Window2D win_;
  int64_t C_ = 0;
  ActParams act_;
};

std::unique_ptr<Op> mk_conv(const NodeSpec& n, const std::vector<ValueSpec>& v) { return std::make_unique<ConvNHWC>(n, v); }
std::unique_ptr<Op> mk_dwconv(const NodeSpec& n, const std::vector<ValueSpec>& v) {
  return std::make_unique<DepthwiseConvNHWC>(n, v);
}

}  // namespace

void set_conv_implicit_gemm(bool on) { g_conv_implicit.store(on); }
void set_conv_winograd(bool on) { g_conv_winograd.store(on); }

void register_conv_ops() {
  register_op("Conv", &mk_conv);
  register_op("DepthwiseConv", &mk_dwconv);
}

}  // namespace lowbit
