// Attention: multi-head scaled dot-product attention as exporters write it,
// fused (passes/fuse.py: fuse_attention) so that no transposed copy of Q, K, V
// or of the output is ever made and the scores stay in a per-thread buffer:
//
//   Qt = transpose(reshape(q, q_shape), [0, 2, 1, 3])   [B, H, S, D]
//   Kt = transpose(reshape(k, k_shape), [0, 2, 3, 1])   [B, H, D, T]
//   Vt = transpose(reshape(v, v_shape), [0, 2, 1, 3])   [B, H, T, Dv]
//   P  = softmax(Qt . Kt (* or / scale) (+ mask))        [B, H, S, T]   (mask broadcasts)
//   y  = transpose(P . Vt, [0, 2, 1, 3])                 [B, S, H, Dv]
//
// Inputs: q, k, v, optional mask, then the three reshape targets (int64 inputs,
// or attrs q_shape / k_shape / v_shape when constant), then optionally the target of a
// Reshape of y that merges the heads (input 7 or attr y_shape: the same bytes, y's shape
// only). Attrs: scale_op (0 none, 1 multiply, 2 divide), scale.
//
// Per (batch, head, block of query rows): K^T and V are packed into the GEMM's
// panel layout (once per head and thread), S = Q K^T runs on the f32 GEMM reading
// Q in place (row stride H*D), each row is scaled, masked and soft-maxed in place
// (f32-vmath, one call per row), and P V is written straight into y's [B, S, H, Dv] layout. Every
// step is the same operation, in the same order, as the unfused graph's MatMul,
// Mul, Add, Softmax and MatMul, so both give the same bits, for any thread count.
//
// Attr precision = 1 (what convert writes for a quantized model unless told otherwise): Q K^T
// and P V run on the table's bf16 GEMM (bf16_gemm.h: Q, K and V rounded to bfloat16, sums in
// fp32) where the table has a fast one (bf16.attention: amx). The scale and mask stay fp32; the
// softmax's exp too, but its normalization moves past the product (bf16.softmax): P V runs on
// bf16_round(exp(t - max)) and each output row is multiplied by 1 / sum exp. Tables without a
// fast bf16 GEMM keep the fp32 path. Precision 0 (the default): fp32 always.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <functional>
#include <thread>

#include "cpu/dispatch.h"
#include "kernels/bf16-gemm/bf16_gemm.h"
#include "kernels/f32-gemm/f32_gemm.h"
#include "runtime/ops/broadcast.h"
#include "runtime/ops/common.h"

namespace lowbit {
namespace {

constexpr int64_t kRowBlock = 128;  // query rows per work item: bounds the scores buffer to 128 x T

struct Dims {
  int64_t B, S, H, D, T, Dv;
  Shape mask_bcast;  // [B, H, S, T]
};

class Attention : public Op {
 public:
  Attention(const NodeSpec& n, const std::vector<ValueSpec>&) : name_(n.name) {
    scale_op_ = n.attrs.get_int("scale_op", 0);
    if (scale_op_ < 0 || scale_op_ > 2) throw std::invalid_argument("Attention '" + n.name + "': scale_op must be 0, 1 or 2");
    scale_ = float(n.attrs.get_float("scale", 1.0));
    const int64_t precision = n.attrs.get_int("precision", 0);
    if (precision < 0 || precision > 1)
      throw std::invalid_argument("Attention '" + n.name + "': precision must be 0 (fp32) or 1 (bf16), got " +
                                  std::to_string(precision));
    bf16_ = precision == 1 && kernels().bf16.attention;
    const char* keys[4] = {"q_shape", "k_shape", "v_shape", "y_shape"};
    for (int i = 0; i < 4; ++i) {
      const auto* s = n.attrs.get_ints(keys[i]);
      const bool from_input = n.inputs.size() > size_t(4 + i) && n.inputs[4 + i] >= 0;
      if (i < 3 && !s && !from_input)
        throw std::invalid_argument("Attention '" + n.name + "': needs " + keys[i] + " (an attribute or input " +
                                    std::to_string(4 + i) + ")");
      if (s) target_[i] = *s;
      has_attr_[i] = s != nullptr;
      if (i == 3) merge_ = s != nullptr || from_input;
    }
  }
  bool input_dtype_ok(size_t i, DType t) const override { return i < 4 ? t == DType::kF32 : t == DType::kI64; }
  void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const override {
    infer_values(in, std::vector<const void*>(in.size(), nullptr), out);
  }
  void infer_values(const std::vector<const Shape*>& in, const std::vector<const void*>& vals,
                    std::vector<Shape>& out) const override {
    const Dims d = dims(in, vals);
    out[0] = {d.B, d.S, d.H, d.Dv};
    if (merge_) out[0] = reshape_target(out[0], target(3, in, vals), false);  // a view: the same bytes
  }
  void run(const RunArgs& a) const override {
    std::vector<const Shape*> in;
    std::vector<const void*> vals;
    for (size_t i = 0; i < a.in.size(); ++i) {  // absent optional inputs (data == nullptr) stay null
      in.push_back(i < 3 || a.in[i].data ? &a.in[i].shape : nullptr);
      vals.push_back(a.in[i].data);
    }
    const Dims d = dims(in, vals);
    if (d.B * d.H * d.S * d.Dv == 0) return;
    const float* q = a.in[0].as<const float>();
    const float* k = a.in[1].as<const float>();
    const float* v = a.in[2].as<const float>();
    const float* mask = a.in.size() > 3 && a.in[3].data ? a.in[3].as<const float>() : nullptr;
    std::vector<int64_t> ms(4, 0);
    if (mask) ms = broadcast_strides(a.in[3].shape, d.mask_bcast);
    float* y = a.out[0].as<float>();
    const int64_t nrb = (d.S + kRowBlock - 1) / kRowBlock, items = d.B * d.H * nrb;
    const KernelTable& kt = kernels();
    const Workspace w = workspace(d);
    // one workspace slot per part (the arena scratch holds `slots` of them); each part
    // claims runs of consecutive items (row blocks of one head reuse its packed K, V)
    // until none are left, so a part whose thread is held up leaves the rest to the others
    const int64_t parts = std::min<int64_t>({ThreadPool::global().num_threads(), w.slots, items});
    const int64_t run_len = std::max<int64_t>(nrb, items / (parts * ThreadPool::kItemsPerThread) / nrb * nrb);
    std::atomic<int64_t> next{0};
    float* scratch = static_cast<float*>(a.scratch);
    std::function<void(int64_t)> part = [&](int64_t pi) {
      float* kp = scratch + pi * w.slot_floats;  // packed K^T, packed V, scores (, Q, P); 64-byte aligned
      float* vp = kp + w.kp_floats;
      float* sc = vp + w.vp_floats;
      uint16_t* qb = reinterpret_cast<uint16_t*>(sc + w.sc_floats);  // bf16 only: Q, P, 1 / row sums
      uint16_t* pb = reinterpret_cast<uint16_t*>(sc + w.sc_floats + w.qb_floats);
      float* inv = sc + w.sc_floats + w.qb_floats + w.pb_floats;
      int64_t packed_bh = -1;
      for (;;) {
        const int64_t i0 = next.fetch_add(run_len, std::memory_order_relaxed);
        if (i0 >= items) break;
        for (int64_t it = i0; it < std::min(items, i0 + run_len); ++it) {
          const int64_t bh = it / nrb, b = bh / d.H, h = bh % d.H;
          const int64_t r0 = (it % nrb) * kRowBlock, r1 = std::min(d.S, r0 + kRowBlock);
          const float* kh = k + (b * d.T * d.H + h) * d.D;
          const float* vh = v + (b * d.T * d.H + h) * d.Dv;
          const float* qr = q + ((b * d.S + r0) * d.H + h) * d.D;  // row stride H*D
          float* yr = y + ((b * d.S + r0) * d.H + h) * d.Dv;       // row stride H*Dv
          if (bh != packed_bh) {
            if (bf16_) {
              kt.bf16.pack_bt(d.D, d.T, kh, d.H * d.D, reinterpret_cast<uint16_t*>(kp));
              kt.bf16.pack_b(d.T, d.Dv, vh, d.H * d.Dv, reinterpret_cast<uint16_t*>(vp));
            } else {
              kt.f32_pack_bt(d.D, d.T, kh, d.H * d.D, kp);  // K^T: panels of 16 keys
              pack_v(vh, d, vp);
            }
            packed_bh = bh;
          }
          const int64_t rows = r1 - r0;
          // scores = Q K^T for query rows [r0, r1): Q read in place
          if (bf16_) {
            kt.bf16.pack_a(rows, d.D, qr, d.H * d.D, qb);
            kt.bf16.gemm(Bf16GemmArgs{rows, d.T, d.D, qb, reinterpret_cast<const uint16_t*>(kp), sc, d.T}, 0, rows, 0, d.T);
          } else {
            F32GemmArgs g{rows, d.T, d.D, qr, d.H * d.D, kp, nullptr, sc, d.T, Activation::kNone};
            kt.f32_gemm(g, 0, rows, 0, d.T);
          }
          SoftmaxPre pre{int32_t(scale_op_), scale_, nullptr, ms[3] == 0};
          if (bf16_) {
            // the rows' scale, mask and exp to bf16 P and 1 / sum; then y[b, r, h, :] = (P V) / sum,
            // written in place (rows past `rows` of P's last tile are zero)
            const int64_t tp = bf16_kp(d.T);
            if (mask) pre.add = mask + b * ms[0] + h * ms[1] + r0 * ms[2];
            kt.bf16.softmax(sc, d.T, rows, d.T, pre, ms[2], pb, tp, inv);
            std::memset(pb + rows * tp, 0, size_t(bf16_rows(rows) - rows) * size_t(tp) * 2);
            Bf16GemmArgs o{rows, d.Dv, d.T, pb, reinterpret_cast<const uint16_t*>(vp), yr, d.H * d.Dv};
            o.row_scale = inv;
            kt.bf16.gemm(o, 0, rows, 0, d.Dv);
          } else {
            // each row: scale, mask and softmax in one kernel call (SoftmaxPre: the unfused graph's
            // Mul/Div, Add and Softmax, in that order, with their bits)
            for (int64_t r = 0; r < rows; ++r) {
              float* row = sc + r * d.T;
              if (mask) pre.add = mask + b * ms[0] + h * ms[1] + (r0 + r) * ms[2];
              kt.vmath.softmax_pre(row, row, d.T, pre);
            }
            // y[b, r, h, :] = P V, written in place
            F32GemmArgs o{rows, d.Dv, d.T, sc, d.T, vp, nullptr, yr, d.H * d.Dv, Activation::kNone};
            kt.f32_gemm(o, 0, rows, 0, d.Dv);
          }
        }
      }
    };
    if (parts <= 1) part(0);
    else ThreadPool::global().parallel_for(parts, part);
  }
  size_t scratch_bytes_values(const std::vector<const Shape*>& in, const std::vector<const void*>& vals) const override {
    const Dims d = dims(in, vals);
    const Workspace w = workspace(d);
    if (double(w.slots) * double(w.slot_floats) * 4.0 > double(int64_t(1) << 56))
      throw ShapeError("Attention '" + name_ + "': the scores of " + std::to_string(d.S) + " x " + std::to_string(d.T) +
                       " positions need too large a workspace");
    return size_t(w.slots) * size_t(w.slot_floats) * 4;
  }
  std::string kernel() const override {
    return std::string(bf16_ ? kernels().bf16.name : kernels().f32_gemm_name) + "+" + kernels().vmath.softmax_name;
  }

 private:
  struct Workspace {
    int64_t kp_floats, vp_floats, sc_floats, qb_floats, pb_floats, inv_floats, slot_floats, slots;
  };
  // Per-part workspace, in floats rounded to 64 bytes: K^T and V of one head packed, and
  // the scores of one row block; bf16: K^T and V packed as bf16, the scores, the row block's
  // Q and P as bf16 and its rows' 1 / sum. Slots: one per hardware thread (at most one per item), a bound
  // that does not change after planning.
  Workspace workspace(const Dims& d) const {
    auto r16 = [](int64_t n) { return (n + 15) / 16 * 16; };
    const int64_t rb = std::min(d.S, kRowBlock);
    Workspace w;
    if (bf16_) {  // bf16 counts: two per float
      w.kp_floats = r16((bf16_packed_b(d.D, d.T) + 1) / 2);
      w.vp_floats = r16((bf16_packed_b(d.T, d.Dv) + 1) / 2);
      w.qb_floats = r16((bf16_packed_a(rb, d.D) + 1) / 2);
      w.pb_floats = r16((bf16_packed_a(rb, d.T) + 1) / 2);
      w.inv_floats = r16(rb);
    } else {
      w.kp_floats = r16(f32_gemm_packed_floats(d.D, d.T));
      w.vp_floats = r16(f32_gemm_packed_floats(d.T, d.Dv));
      w.qb_floats = w.pb_floats = w.inv_floats = 0;
    }
    w.sc_floats = r16(rb * d.T);
    w.slot_floats = w.kp_floats + w.vp_floats + w.sc_floats + w.qb_floats + w.pb_floats + w.inv_floats;
    const int64_t items = d.B * d.H * ((d.S + kRowBlock - 1) / kRowBlock);
    const int64_t hw = std::max<int64_t>(1, int64_t(std::thread::hardware_concurrency()));
    w.slots = std::max<int64_t>(1, std::min(hw, items));
    return w;
  }

  // V of one head [T, Dv] (row stride H*Dv) in the "f32-n16" layout.
  static void pack_v(const float* v0, const Dims& d, float* vp) { f32_gemm_pack_b(d.T, d.Dv, v0, d.H * d.Dv, vp); }

  // Reshape target i (0-2: q, k, v; 3: y), from the attr or from input 4 + i's value.
  std::vector<int64_t> target(int i, const std::vector<const Shape*>& in, const std::vector<const void*>& vals) const {
    std::vector<int64_t> t = target_[i];
    if (!has_attr_[i]) {
      const size_t j = size_t(4 + i);
      if (in.size() <= j || !in[j] || !vals[j])
        throw ShapeError("Attention '" + name_ + "': the reshape target of " + (i < 3 ? "input " + std::to_string(i) : "the output") +
                         " must be computable while planning");
      const int64_t n = shape_numel(*in[j]);
      t.assign(static_cast<const int64_t*>(vals[j]), static_cast<const int64_t*>(vals[j]) + n);
    }
    return t;
  }
  Shape resolve(int i, const std::vector<const Shape*>& in, const std::vector<const void*>& vals) const {
    Shape s = reshape_target(*in[i], target(i, in, vals), false);
    if (s.size() != 4)
      throw ShapeError("Attention '" + name_ + "': expected a 4-D [batch, sequence, heads, head size] view of input " +
                       std::to_string(i) + ", got " + shape_str(s));
    return s;
  }
  Dims dims(const std::vector<const Shape*>& in, const std::vector<const void*>& vals) const {
    need_inputs(in, 3, "Attention");
    const Shape q = resolve(0, in, vals), k = resolve(1, in, vals), v = resolve(2, in, vals);
    if (k[0] != q[0] || v[0] != q[0] || k[2] != q[2] || v[2] != q[2] || k[3] != q[3] || v[1] != k[1])
      throw ShapeError("Attention '" + name_ + "': q, k, v views " + shape_str(q) + ", " + shape_str(k) + ", " +
                       shape_str(v) + " do not agree (batch, heads, head size, key length)");
    Dims d{q[0], q[1], q[2], q[3], k[1], v[3], {}};
    d.mask_bcast = {d.B, d.H, d.S, d.T};
    if (in.size() > 3 && in[3]) {
      if (in[3]->size() > 4 || broadcast_shapes(*in[3], d.mask_bcast) != d.mask_bcast)
        throw ShapeError("Attention '" + name_ + "': the mask " + shape_str(*in[3]) + " does not broadcast to the scores " +
                         shape_str(d.mask_bcast));
    }
    return d;
  }

  std::string name_;
  int64_t scale_op_ = 0;
  float scale_ = 1.f;
  std::vector<int64_t> target_[4];
  bool has_attr_[4] = {false, false, false, false};
  bool merge_ = false;  // y is reshaped (input 7 or attr y_shape)
  bool bf16_ = false;   // precision 1 on a table with a fast bf16 GEMM
};

std::unique_ptr<Op> make_attention(const NodeSpec& n, const std::vector<ValueSpec>& v) {
  return std::make_unique<Attention>(n, v);
}

}  // namespace

void register_attention_ops() { register_op("Attention", &make_attention); }

}  // namespace lowbit
