// Dense with sparse weights (see spdense.h).
#include "runtime/ops/spdense.h"

#include <algorithm>
#include <cstring>
#include <mutex>

#include "kernels/f32-vmath/f32_vmath.h"
#include "runtime/ops/common.h"

namespace lowbit {

bool parse_sparse_encoding(const std::string& enc, SparseKind& kind) {
  if (enc == "f32-csr-s8") kind = SparseKind::kF32Csr;
  else if (enc == "qs8-csr-k16") kind = SparseKind::kQs8Csr;
  else if (enc == "qs8-bsr1x4-s8") kind = SparseKind::kQs8Bsr;
  else return false;
  return true;
}

void load_sparse_weights(const std::string& what, const std::string& enc, const void* data, int64_t nbytes, int64_t K,
                         int64_t N, SparseWeights& out) {
  if (!parse_sparse_encoding(enc, out.kind)) throw std::invalid_argument(what + ": unknown sparse encoding " + enc);
  const bool q = out.kind != SparseKind::kF32Csr;
  if (q && K > kQs8MaxK) throw std::invalid_argument(what + ": K = " + std::to_string(K) + " is above " + std::to_string(kQs8MaxK));
  const std::string err =
      out.kind == SparseKind::kQs8Csr
          ? k16_validate(static_cast<const uint8_t*>(data), nbytes, K, N, &out.k16)
          : sell_validate(static_cast<const uint8_t*>(data), nbytes, K, N, out.kind == SparseKind::kQs8Bsr ? 4 : 1, q ? 1 : 4, q,
                          &out.w);
  if (!err.empty()) throw std::invalid_argument(what + ": " + enc + ": " + err);
  if (out.kind == SparseKind::kQs8Bsr) {
    out.wsum.resize(size_t(out.w.S * kSellC));
    sell_lane_sums(out.w, out.wsum.data());
    out.inv.resize(size_t(out.w.N));
    sell_inverse_perm(out.w, out.inv.data());
    out.windowed = sell_windowed(out.w);
  }
}

void prepare_sparse_weights(const KernelTable& t, SparseWeights& w, bool force) {
  w.t16 = T16Matrix{};
  w.t16_rows = 0;
  if (w.kind != SparseKind::kQs8Bsr || t.qs8_bspmm_t16 == nullptr) return;
  if (force) {
    w.t16_rows = 1;
    build_sparse_t16(w);
    return;
  }
  if (t.qs8_bspmm_t16_min_rows <= 0) return;
  // stored blocks over the block slots of the layer's tiles (16 columns x 16 quads each)
  const double slots = double((w.w.N + 15) / 16) * double((w.w.K + 63) / 64) * 256.0;
  const double density = slots > 0 ? double(w.w.nnz) / slots : 0.0;
  if (density < t.qs8_bspmm_t16_density_32 || !t16_buildable(w.w)) return;
  w.t16_rows = density >= t.qs8_bspmm_t16_density_16 ? t.qs8_bspmm_t16_min_rows
                                                     : std::max<int64_t>(t.qs8_bspmm_t16_min_rows, 17);
}

void build_sparse_t16(SparseWeights& w) {
  // t16_buildable held at load (force: checked by the caller through t16.empty())
  if (w.t16_rows <= 0 || !t16_from_sell(w.w, &w.t16)) w.t16 = T16Matrix{};
}

namespace {

constexpr size_t kAlign = 64;

// True when M rows of w run the T16 kernel on table t (the layer passed t16_buildable at load, so its
// form is built, or is built by the op before such a call; calls of fewer rows never read the form).
bool use_t16(const KernelTable& t, const SparseWeights& w, int64_t M) {
  return w.kind == SparseKind::kQs8Bsr && t.qs8_bspmm_t16 != nullptr && w.t16_rows > 0 && M >= w.t16_rows;
}
inline size_t up64(size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

struct Parts {
  size_t q, scale, at, yt, total;
};
// The 1x4-block kernel's tile height on table t for M rows, or 0 where it takes no tiles.
int64_t bspmm_tile_rows(const KernelTable& t, int64_t M) {
  if (M < std::max(t.qs8_bspmm_tile_min_rows, kBspmmTileMinRowsAny)) return 0;
  return M > kBspmmTileMinRows16 && t.qs8_bspmm_tile_rows >= 16 ? 16 : 8;
}

Parts parts(const KernelTable& t, const SparseWeights& w, int64_t M, bool t16) {
  Parts p{0, 0, 0, 0, 0};
  if (w.kind == SparseKind::kF32Csr) return p;
  if (t16) {  // whole 16-row tiles of rows, K rounded up to 64
    p.scale = up64(size_t((M + 15) / 16 * 16) * size_t(qs8_bspmm_t16_lda(w.w.K)));
    p.at = p.yt = p.total = p.scale + up64(size_t(M) * 4);
    return p;
  }
  const int64_t lda = w.kind == SparseKind::kQs8Csr ? k16_lda(w.k16.K) : qs8_spmm_lda(w.w.K);
  p.scale = up64(size_t(M) * size_t(lda));
  p.at = p.scale + up64(size_t(M) * 4);
  p.total = p.at;
  const int64_t R = w.kind == SparseKind::kQs8Bsr ? bspmm_tile_rows(t, M) : 0;
  if (R > 0) {  // the activation tiles, then the staged output where the table unstages
    p.yt = p.at + up64(size_t(qs8_bspmm_at_bytes(M, w.w.K, R)));
    p.total = p.yt;
    if (t.qs8_bspmm_unstage != nullptr) p.total += up64(size_t((M + R - 1) / R * R) * size_t(w.w.S * kSellC) * 4);
  }
  return p;
}

// Runs f(m0, m1, s0, s1) over the pool: slices split across threads when there are
// enough, else rows (in multiples of `row_grain`). Each output element is computed by
// exactly one call with the same operands, so results do not depend on the split.
template <class F>
void split(int64_t M, int64_t S, int64_t row_grain, double work, bool threaded, F&& f) {
  ThreadPool& pool = ThreadPool::global();
  const int64_t nt = threaded ? pool.num_threads() : 1;
  if (nt <= 1 || work < 64.0 * 1024) {
    f(0, M, 0, S);
    return;
  }
  if (S >= 2 * nt || M < 2 * nt * row_grain) {
    const std::vector<int64_t> b = split_range(S, std::min<int64_t>(nt, S), 1);
    std::function<void(int64_t)> fn = [&](int64_t i) { f(0, M, b[i], b[i + 1]); };
    pool.parallel_for(int64_t(b.size()) - 1, fn);
  } else {
    const std::vector<int64_t> b = split_range(M, nt, row_grain);
    std::function<void(int64_t)> fn = [&](int64_t i) { f(b[i], b[i + 1], 0, S); };
    pool.parallel_for(int64_t(b.size()) - 1, fn);
  }
}

}  // namespace

size_t spdense_scratch_bytes(const KernelTable& t, const SparseWeights& w, int64_t M) {
  return parts(t, w, M, use_t16(t, w, M)).total;
}

void run_spdense(const KernelTable& t, const SparseWeights& sw, const float* x, int64_t M, const float* bias,
                 Activation act, float* y, void* scratch, bool threaded) {
  const SellMatrix& w = sw.w;
  const int64_t K = sw.K(), N = sw.N();
  if (M == 0 || N == 0) return;
  const Activation kact = act == Activation::kGelu ? Activation::kNone : act;
  const double work = sw.kind == SparseKind::kQs8Csr ? double(M) * double(sw.k16.C) * 32.0
                                                     : double(M) * double(w.T) * 8.0 * double(w.bk);
  if (sw.kind == SparseKind::kF32Csr) {
    F32SpmmArgs g{M, x, w.K, &w, bias, y, w.N, kact};
    g.prefetch = t.f32_spmm_prefetch;
    split(M, w.S, 1, work, threaded, [&](int64_t m0, int64_t m1, int64_t s0, int64_t s1) { t.f32_spmm(g, m0, m1, s0, s1); });
  } else {
    const bool t16 = use_t16(t, sw, M);
    if (t16 && sw.t16.empty()) throw std::logic_error("1x4-block layer: its T16 form was not built before the call");
    const Parts p = parts(t, sw, M, t16);
    uint8_t* base = static_cast<uint8_t*>(scratch);
    const int64_t lda = sw.kind == SparseKind::kQs8Csr ? k16_lda(K) : t16 ? qs8_bspmm_t16_lda(K) : qs8_spmm_lda(K);
    Qs8QuantArgs qa{};
    qa.x = x;
    qa.ldx = K;
    qa.K = K;
    qa.Kp = lda;  // zeros past K: the gathers may read up to 4 bytes beyond a row's last index
    qa.q = reinterpret_cast<int8_t*>(base + p.q);
    qa.ldq = lda;
    qa.scale = reinterpret_cast<float*>(base + p.scale);
    qa.gsum = nullptr;
    qa.bias128 = t16 || t.qs8_spmm_biased;  // tdpbusd: u8 x s8
    if (threaded && ThreadPool::global().num_threads() > 1 && M * K >= 64 * 1024)
      parallel_chunks(M, 4, [&](int64_t r0, int64_t r1) { t.qs8_quant(qa, r0, r1); });
    else
      t.qs8_quant(qa, 0, M);
    if (t16) {
      // rows past M in the last 16-row tile: zeros (read by the tile unit, never written out)
      const int64_t mp = (M + 15) / 16 * 16;
      if (mp > M) std::memset(qa.q + M * lda, 0, size_t((mp - M) * lda));
      Qs8BspmmT16Args g{M, reinterpret_cast<const uint8_t*>(qa.q), lda, qa.scale, &sw.t16, bias, y, N, kact};
      // column groups only (the kernel takes every row): a row grain of M keeps split on groups
      split(M, sw.t16.G, M, work, threaded, [&](int64_t, int64_t, int64_t g0, int64_t g1) { t.qs8_bspmm_t16(g, g0, g1); });
    } else if (sw.kind == SparseKind::kQs8Csr) {
      Qs8K16Args g{M, qa.q, lda, qa.scale, &sw.k16, bias, y, N, kact};
      g.prefetch = t.qs8_spmm_prefetch;
      split(M, sw.k16.G, 1, work, threaded, [&](int64_t m0, int64_t m1, int64_t g0, int64_t g1) { t.qs8_spmm(g, m0, m1, g0, g1); });
    } else {
    const int64_t tile_rows = bspmm_tile_rows(t, M);
    const bool tiles = tile_rows > 0;
    const int64_t R = tiles ? tile_rows : 8;
    int8_t* at = tiles ? reinterpret_cast<int8_t*>(base + p.at) : nullptr;
    if (tiles) t.qs8_bspmm_pack_a(M, K, qa.q, lda, R, at);
    Qs8SpmmArgs g{M, qa.q, lda, qa.scale, at, &w, bias, y, N, kact, R};
    g.wsum = sw.wsum.data();
    g.prefetch = t.qs8_bspmm_prefetch;
    const bool staged = tiles && t.qs8_bspmm_unstage != nullptr;
    if (staged) g.Yt = reinterpret_cast<float*>(base + p.yt);
    // staged rows [m0, m1) (whole tiles) of columns [n0, n1) to C
    auto unstage = [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
      for (int64_t m = m0; m < m1; m += R)
        t.qs8_bspmm_unstage(g.Yt + m / R * w.S * kSellC * R, R, std::min<int64_t>(R, m1 - m), sw.inv.data(), n0, n1,
                            y + m * N, N);
    };
    if (staged && sw.windowed) {
      // window by window (kSellWindow columns, 32 slices): each goes to C as soon as it is done,
      // while its staged values are in cache (unstaged at the end, they came back from DRAM:
      // ~7% of an M = 16, 4096 x 4096 product)
      const int64_t ws = kSellWindow / kSellC, nw = (w.S + ws - 1) / ws;
      split(M, nw, R, work, threaded, [&](int64_t m0, int64_t m1, int64_t u0, int64_t u1) {
        for (int64_t u = u0; u < u1; ++u) {
          const int64_t s0 = u * ws, s1 = std::min(w.S, s0 + ws);
          t.qs8_bspmm(g, m0, m1, s0, s1);
          unstage(m0, m1, s0 * kSellC, std::min(N, s1 * kSellC));
        }
      });
    } else {
      split(M, w.S, tiles ? R : 1, work, threaded,
            [&](int64_t m0, int64_t m1, int64_t s0, int64_t s1) { t.qs8_bspmm(g, m0, m1, s0, s1); });
      if (staged) {  // columns from anywhere: after every slice, split over the pool by columns
        if (threaded && ThreadPool::global().num_threads() > 1 && M * N >= 64 * 1024)
          parallel_chunks(N, 64, [&](int64_t n0, int64_t n1) { unstage(0, M, n0, n1); });
        else
          unstage(0, M, 0, N);
      }
    }
    }
  }
  if (act == Activation::kGelu) {  // the same row GELU as the fp32 Dense, on finished rows
    const F32RowFn gelu = vmath().gelu;
    if (threaded)
      parallel_chunks(M, std::max<int64_t>(1, 16384 / std::max<int64_t>(N, 1)),
                      [&](int64_t m0, int64_t m1) { gelu(y + m0 * N, y + m0 * N, (m1 - m0) * N); });
    else
      gelu(y, y, M * N);
  }
}

std::string spdense_kernel_name(const KernelTable& t, const SparseWeights& w, bool quant_name) {
  switch (w.kind) {
    case SparseKind::kF32Csr: return t.f32_spmm_name;
    case SparseKind::kQs8Csr: return std::string(quant_name ? std::string(t.qs8_quant_name) + " + " : "") + t.qs8_spmm_name;
    case SparseKind::kQs8Bsr: {
      std::string k = std::string(quant_name ? std::string(t.qs8_quant_name) + " + " : "") + t.qs8_bspmm_name;
      if (t.qs8_bspmm_t16 != nullptr && w.t16_rows > 0)
        k += " | " + std::string(t.qs8_bspmm_t16_name) + " from " + std::to_string(w.t16_rows) + " rows";
      return k;
    }
  }
  return "";
}

namespace {

class DenseSparse : public Op {
 public:
  DenseSparse(const NodeSpec& n, const std::vector<ValueSpec>& values) {
    const ValueSpec& wv = values[n.inputs[1]];
    if (!wv.is_const || wv.shape.size() != 2 || wv.dtype != DType::kF32)
      throw std::invalid_argument("Dense '" + n.name + "': weight must be a 2-D float32 constant");
    load_sparse_weights("Dense '" + n.name + "'", wv.encoding, wv.data, wv.nbytes, wv.shape[0], wv.shape[1], w_);
    prepare_sparse_weights(kernels(), w_);  // the T16 form itself: before the first call that takes it
    if (n.inputs.size() > 2 && n.inputs[2] >= 0) {
      const ValueSpec& b = values[n.inputs[2]];
      if (!b.is_const || b.shape != Shape{w_.N()} || b.nbytes != w_.N() * 4 || b.encoding != "raw")
        throw std::invalid_argument("Dense '" + n.name + "': bias must be a raw constant of shape (N,)");
    }
    const int64_t act = n.attrs.get_int("activation", 0);
    if (act < 0 || act > 2) throw std::invalid_argument("Dense '" + n.name + "': unknown activation");
    act_ = Activation(act);
  }
  void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const override {
    need_inputs(in, 1, "Dense");
    const Shape& x = *in[0];
    if (x.empty() || x.back() != w_.K())
      throw ShapeError("expected input with last dimension " + std::to_string(w_.K()) + ", got shape " + shape_str(x));
    out[0] = x;
    out[0].back() = w_.N();
  }
  size_t scratch_bytes(const std::vector<const Shape*>& in) const override { return spdense_scratch_bytes(kernels(), w_, rows(*in[0])); }
  void run(const RunArgs& a) const override {
    const int64_t M = rows(a.in[0].shape);
    const float* bias = a.in.size() > 2 ? a.in[2].as<const float>() : nullptr;
    // Built on first use, so a model run only at fewer rows (decoding) never pays its load time
    // (~8 ms) and memory (~0.8x the blob) for a 4096 x 4096 layer. Concurrent runs wait for one
    // build; a run of fewer rows reads neither flag nor form (t16_rows is fixed at load).
    if (w_.t16_rows > 0 && M >= w_.t16_rows) std::call_once(t16_once_, [this] { build_sparse_t16(w_); });
    run_spdense(kernels(), w_, a.in[0].as<const float>(), M, bias, act_, a.out[0].as<float>(), a.scratch, true);
  }
  std::string kernel() const override {
    const std::string k = spdense_kernel_name(kernels(), w_, true);
    return act_ == Activation::kGelu ? k + "+" + vmath().gelu_name : k;
  }

 private:
  static int64_t rows(const Shape& x) {
    int64_t m = 1;
    for (size_t i = 0; i + 1 < x.size(); ++i) m *= x[i];
    return m;
  }
  mutable SparseWeights w_;  // mutable: its T16 form is built by the first call that takes it
  mutable std::once_flag t16_once_;
  Activation act_ = Activation::kNone;
};

}  // namespace

std::unique_ptr<Op> make_spdense(const NodeSpec& n, const std::vector<ValueSpec>& v) {
  return std::make_unique<DenseSparse>(n, v);
}

}  // namespace lowbit
