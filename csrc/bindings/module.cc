// pybind11 bindings: argument conversion only, no math here.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "cpu/cpu.h"
#include "cpu/dispatch.h"
#include "kernels/crc32c/crc32c.h"
#include "kernels/f32-gemm/f32_gemm.h"
#include "kernels/memread/memread.h"
#include "runtime/engine.h"
#include "runtime/ops/common.h"
#include "runtime/ops/qdense.h"
#include "runtime/ops/spdense.h"
#include "runtime/threadpool.h"

namespace py = pybind11;
using namespace lowbit;

namespace {

// A C-contiguous array on 64-byte aligned memory: the ops split outputs over threads by column
// blocks of 64 bytes and more, so an output line is never written by two threads (numpy's own
// buffers are 16-byte aligned, which put a shared line at every block edge of every row).
py::array aligned_array(const py::dtype& dt, const Shape& s) {
  const size_t bytes = std::max<size_t>(size_t(shape_numel(s)) * size_t(dt.itemsize()), 1);  // empty outputs too
  void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);  // a multiple of the alignment, as it must be
  if (p == nullptr) throw std::bad_alloc();
  py::capsule owner(p, [](void* q) { std::free(q); });
  return py::array(dt, std::vector<py::ssize_t>(s.begin(), s.end()), p, owner);
}

Attrs to_attrs(const py::dict& d) {
  Attrs a;
  for (auto item : d) {
    std::string k = py::cast<std::string>(item.first);
    py::handle v = item.second;
    if (py::isinstance<py::bool_>(v)) a.ints[k] = py::cast<bool>(v) ? 1 : 0;
    else if (py::isinstance<py::int_>(v)) a.ints[k] = py::cast<int64_t>(v);
    else if (py::isinstance<py::float_>(v)) a.floats[k] = py::cast<double>(v);
    else if (py::isinstance<py::str>(v)) a.strings[k] = py::cast<std::string>(v);
    else if (py::isinstance<py::list>(v) || py::isinstance<py::tuple>(v)) {
      std::vector<int64_t> ints;
      for (auto e : v) {
        if (!py::isinstance<py::int_>(e) || py::isinstance<py::bool_>(e))
          throw std::invalid_argument("attribute '" + k + "': only integer lists are supported");
        ints.push_back(py::cast<int64_t>(e));
      }
      a.int_lists[k] = std::move(ints);
    } else {
      throw std::invalid_argument("attribute '" + k + "' has an unsupported type");
    }
  }
  return a;
}

// Holds the engine plus Python references that keep constant buffers (views of
// the mmap) alive for as long as the engine can read them.
class PyEngine {
 public:
  PyEngine(const py::list& values, const py::list& nodes, std::vector<int> inputs, std::vector<int> outputs) {
    std::vector<ValueSpec> vs;
    for (auto h : values) {
      py::dict d = py::cast<py::dict>(h);
      ValueSpec v;
      v.name = py::cast<std::string>(d["name"]);
      v.dtype = dtype_from_name(py::cast<std::string>(d["dtype"]));
      v.shape = py::cast<std::vector<int64_t>>(d["shape"]);
      v.is_const = d.contains("data") && !d["data"].is_none();
      if (d.contains("encoding")) v.encoding = py::cast<std::string>(d["encoding"]);
      if (v.is_const) {
        py::buffer buf = py::cast<py::buffer>(d["data"]);
        py::buffer_info info = buf.request();
        v.data = info.ptr;
        v.nbytes = int64_t(info.size) * int64_t(info.itemsize);
        keep_.push_back(buf);
        if ((reinterpret_cast<uintptr_t>(v.data) & 63) != 0 && v.nbytes)
          throw std::invalid_argument("constant '" + v.name + "' is not 64-byte aligned");
        if (v.encoding == "f32" || v.encoding == "raw") {
          int64_t want = shape_numel(v.shape) * int64_t(dtype_size(v.dtype));
          if (want != v.nbytes)
            throw std::invalid_argument("constant '" + v.name + "' has " + std::to_string(v.nbytes) + " bytes, its shape needs " + std::to_string(want));
        }
      }
      vs.push_back(std::move(v));
    }
    std::vector<NodeSpec> ns;
    for (auto h : nodes) {
      py::dict d = py::cast<py::dict>(h);
      NodeSpec n;
      n.name = py::cast<std::string>(d["name"]);
      n.op = py::cast<std::string>(d["op"]);
      n.inputs = py::cast<std::vector<int>>(d["inputs"]);
      n.outputs = py::cast<std::vector<int>>(d["outputs"]);
      if (d.contains("attrs")) n.attrs = to_attrs(py::cast<py::dict>(d["attrs"]));
      ns.push_back(std::move(n));
    }
    engine_ = std::make_unique<Engine>(std::move(vs), std::move(ns), std::move(inputs), std::move(outputs));
  }

  py::list run(const py::list& xs) { return run_impl(xs, nullptr); }

  // Runs `repeat` times; returns (outputs of the last run, per-node seconds of each run).
  py::tuple profile(const py::list& xs, int repeat) {
    if (repeat < 1) throw std::invalid_argument("repeat must be >= 1, got " + std::to_string(repeat));
    std::vector<std::vector<double>> times(static_cast<size_t>(repeat));
    py::list outs;
    for (int r = 0; r < repeat; ++r) outs = run_impl(xs, &times[size_t(r)]);
    return py::make_tuple(outs, times);
  }

 private:
  py::list run_impl(const py::list& xs, std::vector<double>* node_seconds) {
    const auto& in_ids = engine_->inputs();
    if (xs.size() != in_ids.size())
      throw std::invalid_argument("expected " + std::to_string(in_ids.size()) + " inputs, got " + std::to_string(xs.size()));
    std::vector<py::array> arrays;
    std::vector<Shape> shapes;
    std::vector<const void*> ptrs;
    for (size_t i = 0; i < xs.size(); ++i) {
      py::array a = py::cast<py::array>(xs[i]);
      const ValueSpec& v = engine_->values()[in_ids[i]];
      bool dtype_ok = (v.dtype == DType::kF32 && a.dtype().is(py::dtype::of<float>())) ||
                      (v.dtype == DType::kI64 && a.dtype().is(py::dtype::of<int64_t>())) ||
                      (v.dtype == DType::kI32 && a.dtype().is(py::dtype::of<int32_t>())) ||
                      (v.dtype == DType::kI8 && a.dtype().is(py::dtype::of<int8_t>())) ||  // engine-level tests of int8 ops
                      (v.dtype == DType::kU8 && a.dtype().is(py::dtype::of<uint8_t>()));
      if (!dtype_ok) throw std::invalid_argument("input '" + v.name + "': expected dtype " + dtype_name(v.dtype));
      if (!(a.flags() & py::array::c_style)) throw std::invalid_argument("input '" + v.name + "' must be C-contiguous");
      Shape s(a.shape(), a.shape() + a.ndim());
      shapes.push_back(s);
      ptrs.push_back(a.data());
      arrays.push_back(a);
    }
    std::shared_ptr<const Plan> plan = engine_->plan_for(shapes);
    py::list outs;
    std::vector<void*> optrs;
    for (int v : engine_->outputs()) {
      const Shape& s = plan->shapes[v];
      py::dtype dt;
      switch (engine_->value_dtype(v)) {
        case DType::kF32: dt = py::dtype::of<float>(); break;
        case DType::kI64: dt = py::dtype::of<int64_t>(); break;
        case DType::kI32: dt = py::dtype::of<int32_t>(); break;
        case DType::kI8: dt = py::dtype::of<int8_t>(); break;
        case DType::kU8: dt = py::dtype::of<uint8_t>(); break;
      }
      py::array o = aligned_array(dt, s);
      optrs.push_back(o.mutable_data());
      outs.append(o);
    }
    {
      py::gil_scoped_release nogil;
      engine_->execute(*plan, ptrs, optrs, node_seconds);
    }
    return outs;
  }

 public:
  std::vector<std::string> node_kernels() const {
    std::vector<std::string> k;
    for (size_t i = 0; i < engine_->nodes().size(); ++i) k.push_back(engine_->node_kernel(i));
    return k;
  }

  int64_t arena_bytes(const std::vector<Shape>& shapes) { return engine_->plan_for(shapes)->arena_bytes; }

 private:
  std::unique_ptr<Engine> engine_;
  std::vector<py::buffer> keep_;
};

uint32_t py_crc32c(const py::buffer& b, uint32_t crc) {
  py::buffer_info info = b.request();
  const void* p = info.ptr;
  size_t n = size_t(info.size) * size_t(info.itemsize);
  Crc32cFn fn = kernels().crc32c;
  py::gil_scoped_release nogil;
  return fn(crc, p, n);
}

uint32_t py_crc32c_isa(const std::string& isa, const py::buffer& b, uint32_t crc) {
  py::buffer_info info = b.request();
  return kernels_for(isa).crc32c(crc, info.ptr, size_t(info.size) * size_t(info.itemsize));
}

py::array_t<float> py_pack_b(py::array_t<float, py::array::c_style | py::array::forcecast> B) {
  if (B.ndim() != 2) throw std::invalid_argument("pack_f32_n16 expects a 2-D array [K, N]");
  int64_t K = B.shape(0), N = B.shape(1);
  py::array_t<float> out(std::vector<int64_t>{f32_gemm_packed_floats(K, N)});
  f32_gemm_pack_b(K, N, B.data(), N, out.mutable_data());
  return out;
}

// Test hook: one kernel call on a sub-rectangle with a named ISA's table.
void py_f32_gemm(const std::string& isa, py::array_t<float, py::array::c_style> A, py::array_t<float, py::array::c_style> Bp,
                 py::object bias, int act, int64_t N, py::array_t<float, py::array::c_style> C, int64_t m0, int64_t m1,
                 int64_t n0, int64_t n1, py::object res) {
  const KernelTable& t = kernels_for(isa);
  if (A.ndim() != 2 || C.ndim() != 2) throw std::invalid_argument("A and C must be 2-D");
  int64_t M = A.shape(0), K = A.shape(1);
  if (C.shape(0) != M || C.shape(1) != N) throw std::invalid_argument("C must be [M, N]");
  if (Bp.size() != f32_gemm_packed_floats(K, N)) throw std::invalid_argument("Bp size mismatch");
  if (!(0 <= m0 && m0 <= m1 && m1 <= M && 0 <= n0 && n0 <= n1 && n1 <= N && n0 % 16 == 0 && (n1 % 16 == 0 || n1 == N)))
    throw std::invalid_argument("bad sub-rectangle");
  if (act < 0 || act > 2) throw std::invalid_argument("bad activation");
  const float* bp = nullptr;
  py::array_t<float, py::array::c_style | py::array::forcecast> barr;
  if (!bias.is_none()) {
    barr = py::cast<py::array_t<float, py::array::c_style | py::array::forcecast>>(bias);
    if (barr.size() != N) throw std::invalid_argument("bias must have N entries");
    bp = barr.data();
  }
  F32GemmArgs g{M, N, K, A.data(), K, Bp.data(), bp, C.mutable_data(), N, Activation(act)};
  py::array_t<float, py::array::c_style | py::array::forcecast> rarr;
  if (!res.is_none()) {  // the residual: [M, N], its own buffer
    rarr = py::cast<py::array_t<float, py::array::c_style | py::array::forcecast>>(res);
    if (rarr.ndim() != 2 || rarr.shape(0) != M || rarr.shape(1) != N)
      throw std::invalid_argument("res must be [M, N] = [" + std::to_string(M) + ", " + std::to_string(N) + "]");
    g.res = rarr.data();
    g.ldr = N;
  }
  if (Bp.size() && (reinterpret_cast<uintptr_t>(g.Bp) & 63) != 0)
    throw std::invalid_argument("Bp must be 64-byte aligned (the kernels read whole 64-byte panels rows)");
  py::gil_scoped_release nogil;
  t.f32_gemm(g, m0, m1, n0, n1);
}

// Test hook: the GEMM over an implicit A (see f32_gemm.h) read from a flat buffer, with a
// named ISA's table (which must support it).
void py_f32_gemm_implicit(const std::string& isa, py::array_t<float, py::array::c_style> A, int64_t lda, int64_t kseg,
                          int64_t seg_stride, int64_t mrow, int64_t row_stride, int64_t M, int64_t K,
                          py::array_t<float, py::array::c_style> Bp, int64_t N, py::array_t<float, py::array::c_style> C,
                          int64_t m0, int64_t m1) {
  const KernelTable& t = kernels_for(isa);
  if (!t.f32_gemm_implicit_a) throw std::invalid_argument(isa + "'s f32 GEMM does not read an implicit A");
  if (M < 0 || K < 1 || N < 1 || kseg < 1 || lda < 0 || seg_stride < 0 || mrow < 0 || row_stride < 0)
    throw std::invalid_argument("bad sizes or strides");
  if (C.ndim() != 2 || C.shape(0) != M || C.shape(1) != N) throw std::invalid_argument("C must be [M, N]");
  if (Bp.size() != f32_gemm_packed_floats(K, N) || (reinterpret_cast<uintptr_t>(Bp.data()) & 63) != 0)
    throw std::invalid_argument("Bp must be the 64-byte aligned packed [K, N]");
  if (!(0 <= m0 && m0 <= m1 && m1 <= M)) throw std::invalid_argument("bad row range");
  F32GemmArgs g{M, N, K, A.data(), lda, Bp.data(), nullptr, C.mutable_data(), N, Activation::kNone};
  g.kseg = kseg;
  g.seg_stride = seg_stride;
  g.mrow = mrow;
  g.row_stride = row_stride;
  int64_t last_col = 0;  // the largest column offset read, over all segments
  for (int64_t k0 = 0; k0 < K; k0 += kseg) last_col = std::max(last_col, (k0 / kseg) * seg_stride + std::min(kseg, K - k0) - 1);
  for (int64_t m = 0; m < M; ++m) {  // every element read must lie inside A
    const int64_t row = mrow > 0 ? (m / mrow) * row_stride + (m % mrow) * lda : m * lda;
    if (row + last_col >= A.size()) throw std::invalid_argument("implicit A reads past the buffer");
  }
  py::gil_scoped_release nogil;
  t.f32_gemm(g, m0, m1, 0, N);
}

using U8Array = py::array_t<uint8_t, py::array::c_style>;

U8Array aligned_bytes(int64_t n) {
  // numpy allocations are 16-byte aligned; over-allocate and slice so kernels see 64-byte alignment
  U8Array raw(std::vector<int64_t>{n + 64});
  const uintptr_t p = reinterpret_cast<uintptr_t>(raw.mutable_data());
  const int64_t off = int64_t((64 - (p & 63)) & 63);
  py::object sl = raw[py::slice(off, off + n, 1)];
  return py::cast<U8Array>(sl);
}

// Test hook: the bf16 GEMM of a named ISA's table on float A[M,K] and B ([K,N], or [N,K] with
// trans_b): A and B packed by that table's packings, C = A . B over all of it.
py::array_t<float> py_bf16_gemm(const std::string& isa, py::array_t<float, py::array::c_style | py::array::forcecast> A,
                                py::array_t<float, py::array::c_style | py::array::forcecast> B, bool trans_b,
                                py::object row_scale) {
  const KernelTable& t = kernels_for(isa);
  if (A.ndim() != 2 || B.ndim() != 2) throw std::invalid_argument("bf16_gemm: A and B must be 2-D");
  const int64_t M = A.shape(0), K = A.shape(1), N = trans_b ? B.shape(0) : B.shape(1);
  if ((trans_b ? B.shape(1) : B.shape(0)) != K)
    throw std::invalid_argument("bf16_gemm: B's K (" + std::to_string(trans_b ? B.shape(1) : B.shape(0)) +
                                ") does not match A's (" + std::to_string(K) + ")");
  if (M < 1 || K < 1 || N < 1) throw std::invalid_argument("bf16_gemm: empty operand");
  std::vector<uint16_t> a(size_t(bf16_packed_a(M, K)));
  U8Array bbytes = aligned_bytes(bf16_packed_b(K, N) * 2);
  uint16_t* bp = reinterpret_cast<uint16_t*>(bbytes.mutable_data());
  py::array_t<float> C(std::vector<int64_t>{M, N});
  py::array_t<float, py::array::c_style | py::array::forcecast> rs;
  if (!row_scale.is_none()) {
    rs = py::cast<py::array_t<float, py::array::c_style | py::array::forcecast>>(row_scale);
    if (rs.ndim() != 1 || rs.shape(0) != M) throw std::invalid_argument("bf16_gemm: row_scale must have M values");
  }
  {
    py::gil_scoped_release nogil;
    t.bf16.pack_a(M, K, A.data(), K, a.data());
    if (trans_b) t.bf16.pack_bt(K, N, B.data(), K, bp);
    else t.bf16.pack_b(K, N, B.data(), N, bp);
    Bf16GemmArgs g{M, N, K, a.data(), bp, C.mutable_data(), N};
    if (!row_scale.is_none()) g.row_scale = rs.data();
    t.bf16.gemm(g, 0, M, 0, N);
  }
  return C;
}

// Test hook: a named ISA's bf16 packing of float x: "a" ([M,K] -> bf16-k32), "b" ([K,N] ->
// bf16-n16k2) or "bt" ([N,K] -> bf16-n16k2 of its transpose); the packed uint16 values.
py::array_t<uint16_t> py_bf16_pack(const std::string& isa, py::array_t<float, py::array::c_style | py::array::forcecast> x,
                                   const std::string& kind) {
  const KernelTable& t = kernels_for(isa);
  if (x.ndim() != 2 || x.shape(0) < 1 || x.shape(1) < 1) throw std::invalid_argument("bf16_pack: x must be a non-empty 2-D array");
  const int64_t r = x.shape(0), c = x.shape(1);
  int64_t n = 0;
  if (kind == "a") n = bf16_packed_a(r, c);
  else if (kind == "b") n = bf16_packed_b(r, c);
  else if (kind == "bt") n = bf16_packed_b(c, r);
  else throw std::invalid_argument("bf16_pack: kind must be 'a', 'b' or 'bt', got '" + kind + "'");
  U8Array bytes = aligned_bytes(n * 2);
  uint16_t* p = reinterpret_cast<uint16_t*>(bytes.mutable_data());
  {
    py::gil_scoped_release nogil;
    if (kind == "a") t.bf16.pack_a(r, c, x.data(), c, p);
    else if (kind == "b") t.bf16.pack_b(r, c, x.data(), c, p);
    else t.bf16.pack_bt(c, r, x.data(), c, p);
  }
  return py::array_t<uint16_t>(std::vector<int64_t>{n}, p);
}

// Test hook: a named ISA's bf16 attention softmax of the rows of x [rows, n] (bf16_gemm.h), add
// None, one row [n] or [1] for all, or [rows, n] / [rows, 1]: the bf16 codes of p [rows,
// bf16_kp(n)] and inv [rows].
py::tuple py_bf16_softmax(const std::string& isa, py::array_t<float, py::array::c_style | py::array::forcecast> x,
                          int scale_op, float scale, py::object add) {
  const KernelTable& t = kernels_for(isa);
  if (x.ndim() != 2 || x.shape(0) < 1 || x.shape(1) < 1) throw std::invalid_argument("bf16_softmax: x must be [rows, n]");
  if (scale_op < 0 || scale_op > 2) throw std::invalid_argument("bf16_softmax: scale_op must be 0, 1 or 2");
  const int64_t rows = x.shape(0), n = x.shape(1), np = bf16_kp(n);
  SoftmaxPre pre{scale_op, scale, nullptr, false};
  int64_t add_ld = 0;
  py::array_t<float, py::array::c_style | py::array::forcecast> a;
  if (!add.is_none()) {
    a = py::cast<py::array_t<float, py::array::c_style | py::array::forcecast>>(add);
    const int64_t w = a.shape(a.ndim() - 1);
    if ((a.ndim() != 1 && a.ndim() != 2) || (w != n && w != 1) || (a.ndim() == 2 && a.shape(0) != rows))
      throw std::invalid_argument("bf16_softmax: add must be [n], [1], [rows, n] or [rows, 1]");
    pre.add = a.data();
    pre.add_bcast = w == 1 && n != 1;
    add_ld = a.ndim() == 2 ? w : 0;
  }
  py::array_t<uint16_t> p(std::vector<int64_t>{rows, np});
  py::array_t<float> inv(std::vector<int64_t>{rows});
  std::vector<float> xs(x.data(), x.data() + rows * n);  // the kernel leaves pre(x) in its input
  {
    py::gil_scoped_release nogil;
    t.bf16.softmax(xs.data(), n, rows, n, pre, add_ld, p.mutable_data(), np, inv.mutable_data());
  }
  return py::make_tuple(p, inv);
}

U8Array py_pack_qs8(py::array_t<int8_t, py::array::c_style> Wq, py::array_t<float, py::array::c_style | py::array::forcecast> scales) {
  if (Wq.ndim() != 2) throw std::invalid_argument("pack_qs8 expects int8 weights [K, N]");
  const int64_t K = Wq.shape(0), N = Wq.shape(1);
  if (scales.size() != N) throw std::invalid_argument("pack_qs8 expects N scales");
  if (K > kQs8MaxK) throw std::invalid_argument("pack_qs8: K above " + std::to_string(kQs8MaxK));
  for (int64_t i = 0; i < K * N; ++i)
    if (Wq.data()[i] == -128) throw std::invalid_argument("pack_qs8: weights must be in [-127, 127]");
  U8Array out = aligned_bytes(qs8_packed_bytes(K, N));
  qs8_gemm_pack(K, N, Wq.data(), scales.data(), out.mutable_data());
  return out;
}

Q4Layout q4_layout(const std::string& kind, int64_t group) {
  if (group != 32 && group != 64 && group != 128) throw std::invalid_argument("group must be 32, 64 or 128");
  if (kind == "sym") return {Q4Kind::kAffine, false, group};
  if (kind == "asym") return {Q4Kind::kAffine, true, group};
  if (kind == "table") return {Q4Kind::kTable, false, group};
  throw std::invalid_argument("kind must be sym, asym or table");
}

U8Array py_pack_q4(py::array_t<uint8_t, py::array::c_style> U, py::array_t<uint16_t, py::array::c_style> S, py::object Z,
                   py::object T, const std::string& kind, int64_t group) {
  const Q4Layout l = q4_layout(kind, group);
  if (U.ndim() != 2) throw std::invalid_argument("pack_q4 expects codes [K, N]");
  const int64_t K = U.shape(0), N = U.shape(1), NG = q4_kg(K, group) / group;
  if (S.ndim() != 2 || S.shape(0) != NG || S.shape(1) != N) throw std::invalid_argument("pack_q4 expects f16 scale bits [NG, N]");
  for (int64_t i = 0; i < K * N; ++i)
    if (U.data()[i] > 15) throw std::invalid_argument("pack_q4: codes must be in [0, 15]");
  py::array_t<uint8_t, py::array::c_style | py::array::forcecast> z;
  py::array_t<int8_t, py::array::c_style | py::array::forcecast> tb;
  if (l.kind == Q4Kind::kAffine && l.asym) {
    z = py::cast<py::array_t<uint8_t, py::array::c_style | py::array::forcecast>>(Z);
    if (z.size() != NG * N) throw std::invalid_argument("pack_q4 expects zero points [NG, N]");
    for (int64_t i = 0; i < NG * N; ++i)
      if (z.data()[i] > 15) throw std::invalid_argument("pack_q4: zero points must be in [0, 15]");
  }
  if (l.kind == Q4Kind::kTable) {
    tb = py::cast<py::array_t<int8_t, py::array::c_style | py::array::forcecast>>(T);
    if (tb.size() != 16) throw std::invalid_argument("pack_q4 expects a 16-entry table");
    for (int i = 0; i < 16; ++i)
      if (tb.data()[i] == -128) throw std::invalid_argument("pack_q4: table entries must be in [-127, 127]");
  }
  U8Array out = aligned_bytes(q4_parts(K, N, l).total);
  q4_gemm_pack(K, N, l, U.data(), S.data(), z.size() ? z.data() : nullptr, tb.size() ? tb.data() : nullptr, out.mutable_data());
  return out;
}

// Test/bench hook: one quantized Dense with a named ISA's kernels (the runtime path, minus the engine).
py::array_t<float> py_qdense(const std::string& isa, py::array_t<float, py::array::c_style | py::array::forcecast> X,
                             U8Array W, const std::string& encoding, int64_t K, int64_t N, py::object bias, int act,
                             bool threaded, int64_t outliers, py::object x_grid, py::object y_grid, py::object lattice) {
  const KernelTable& table = kernels_for(isa);
  KernelTable forced;  // lattice=True: the table's lattice kernel at any M
  const KernelTable* tp = &table;
  QWeights w;
  if (!parse_qweight_encoding(encoding, w)) throw std::invalid_argument("unknown encoding " + encoding);
  w.K = K;
  w.N = N;
  if (K <= 0 || N <= 0 || K > kQs8MaxK) throw std::invalid_argument("bad K/N");
  if (W.size() != w.packed_bytes()) throw std::invalid_argument("packed weight size mismatch");
  w.W = W.data();
  if ((reinterpret_cast<uintptr_t>(w.W) & 63) != 0) throw std::invalid_argument("W must be 64-byte aligned");
  if (X.ndim() != 2 || X.shape(1) != K) throw std::invalid_argument("X must be [M, K]");
  if (const std::string bad = check_qweight_codes(w); !bad.empty()) throw std::invalid_argument(bad);
  // lattice: None as a model runs it; True the lattice form at every M (the weights must be on
  // the lattice, and the ISA have the kernel); False the group-wise form only
  if (lattice.is_none()) {
    prepare_q4_lattice(table, w, true);  // (as convert's own 4-bit layers run)
  } else if (py::cast<bool>(lattice)) {
    if (table.q4_gemm_lattice == nullptr) throw std::invalid_argument(isa + " has no q4_gemm_lattice kernel");
    if (!prepare_q4_lattice(table, w, true, true)) throw std::invalid_argument("the 4-bit weights have no lattice form (a non-finite scale)");
    forced = table;
    forced.q4_gemm_lattice_min_rows = 1;
    tp = &forced;
  }
  const KernelTable& t = *tp;
  if (act < 0 || act > 2) throw std::invalid_argument("bad activation");
  const int64_t M = X.shape(0);
  py::array_t<float, py::array::c_style | py::array::forcecast> barr;
  const float* bp = nullptr;
  if (!bias.is_none()) {
    barr = py::cast<py::array_t<float, py::array::c_style | py::array::forcecast>>(bias);
    if (barr.size() != N) throw std::invalid_argument("bias must have N entries");
    bp = barr.data();
  }
  QDenseOpts o;
  if (outliers < 0 || outliers > kQs8MaxOutliers) throw std::invalid_argument("bad outliers");
  o.outliers = outliers;
  std::vector<float> sbias;
  if (!x_grid.is_none()) {  // (scale, zero point): static activations, as the Dense op does
    auto g = py::cast<std::pair<float, int32_t>>(x_grid);
    if (w.is_q4 || outliers || !(g.first > 0.0f) || g.second < -128 || g.second > 127)
      throw std::invalid_argument("bad static activation grid");
    o.x_static = true;
    o.x_scale = g.first;
    o.x_zp = g.second;
    sbias = static_x_bias(w, bp, o.x_scale, o.x_zp);
    bp = sbias.data();
  }
  if (!y_grid.is_none()) {
    auto g = py::cast<std::pair<float, int32_t>>(y_grid);
    if (!(g.first > 0.0f) || g.second < -128 || g.second > 127) throw std::invalid_argument("bad output grid");
    o.y_requant = true;
    o.y_scale = g.first;
    o.y_zp = g.second;
  }
  py::array_t<float> Y(std::vector<int64_t>{M, N});
  std::vector<uint8_t> scratch(qdense_scratch_bytes(w, M, o) + 64);
  void* sp = scratch.data() + ((64 - (reinterpret_cast<uintptr_t>(scratch.data()) & 63)) & 63);
  const float* xp = X.data();
  float* yp = Y.mutable_data();
  {
    py::gil_scoped_release nogil;
    run_qdense(t, w, xp, M, bp, Activation(act), yp, sp, threaded, o);
  }
  return Y;
}

// Sparse packing: W [K, N] float -> "f32-csr-s8" (bk = 1); Wq int8 [K, N] + scales ->
// "qs8-csr-k16" (bk = 1) or "qs8-bsr1x4-s8" (bk = 4). Returns the blob (64-byte aligned).
U8Array py_pack_sell_f32(py::array_t<float, py::array::c_style | py::array::forcecast> W, int bk) {
  if (W.ndim() != 2) throw std::invalid_argument("pack_sell_f32 expects a 2-D array [K, N]");
  if (bk != 1) throw std::invalid_argument("pack_sell_f32: fp32 values are stored unstructured (bk = 1)");
  const int64_t K = W.shape(0), N = W.shape(1);
  if (K > 65536 * int64_t(bk)) throw std::invalid_argument("pack_sell_f32: K above the 16-bit index limit");
  int64_t T = 0;
  const int64_t n = sell_count_f32(K, N, W.data(), bk, &T);
  if (n < 0) throw std::invalid_argument("pack_sell_f32: sizes overflow");
  U8Array out = aligned_bytes(n);
  sell_pack_f32(K, N, W.data(), bk, out.mutable_data(), n);
  return out;
}

U8Array py_pack_sell_s8(py::array_t<int8_t, py::array::c_style> Wq, py::array_t<float, py::array::c_style | py::array::forcecast> scales,
                        int bk) {
  if (Wq.ndim() != 2) throw std::invalid_argument("pack_sell_s8 expects int8 weights [K, N]");
  if (bk != 1 && bk != 4) throw std::invalid_argument("pack_sell_s8: bk must be 1 or 4");
  const int64_t K = Wq.shape(0), N = Wq.shape(1);
  if (scales.size() != N) throw std::invalid_argument("pack_sell_s8 expects N scales");
  if (K > kQs8MaxK || (bk == 4 && K > 65536 * int64_t(bk))) throw std::invalid_argument("pack_sell_s8: K above the limit");
  for (int64_t i = 0; i < K * N; ++i)
    if (Wq.data()[i] == -128) throw std::invalid_argument("pack_sell_s8: weights must be in [-127, 127]");
  if (bk == 1) {  // unstructured int8: the K16 layout ("qs8-csr-k16")
    const int64_t n = k16_count(K, N, Wq.data());
    if (n < 0) throw std::invalid_argument("pack_sell_s8: sizes overflow");
    U8Array out = aligned_bytes(n);
    k16_pack(K, N, Wq.data(), scales.data(), out.mutable_data(), n);
    return out;
  }
  int64_t T = 0;
  const int64_t n = sell_count_s8(K, N, Wq.data(), bk, &T);
  if (n < 0) throw std::invalid_argument("pack_sell_s8: sizes overflow");
  U8Array out = aligned_bytes(n);
  sell_pack_s8(K, N, Wq.data(), scales.data(), bk, out.mutable_data(), n);
  return out;
}

// The header counts of a sparse blob (validated): dict with K, N, steps, nnz, slices.
py::dict py_sell_info(U8Array W, const std::string& encoding, int64_t K, int64_t N) {
  SparseWeights w;
  load_sparse_weights("sell_info", encoding, W.data(), W.size(), K, N, w);
  py::dict d;
  const bool k16 = w.kind == SparseKind::kQs8Csr;
  d["K"] = w.K();
  d["N"] = w.N();
  d["steps"] = k16 ? w.k16.C : w.w.T;  // cells for K16
  d["nnz"] = k16 ? w.k16.nnz : w.w.nnz;
  d["slices"] = k16 ? w.k16.G : w.w.S;
  d["block"] = k16 ? 1 : w.w.bk;
  return d;
}

// Test hook: a sparse Dense with a named ISA's kernels -> y [M, N].
py::array_t<float> py_spdense(const std::string& isa, py::array_t<float, py::array::c_style | py::array::forcecast> X, U8Array W,
                              const std::string& encoding, int64_t K, int64_t N, py::object bias, int act, bool threaded,
                              const std::string& path) {
  const KernelTable& t = kernels_for(isa);
  SparseWeights w;
  load_sparse_weights("spdense", encoding, W.data(), W.size(), K, N, w);
  if (path == "t16") {  // the T16 kernel at any M (the table must have it, the blob must allow the form)
    if (t.qs8_bspmm_t16 == nullptr) throw std::invalid_argument("table '" + isa + "' has no qs8_bspmm_t16");
    prepare_sparse_weights(t, w, true);
    if (w.t16.empty()) throw std::invalid_argument("this blob has no T16 form");
  } else if (path == "auto") {
    prepare_sparse_weights(t, w);
    build_sparse_t16(w);  // the op builds it before its first call of that many rows
  } else {
    throw std::invalid_argument("path must be 'auto' or 't16', got '" + path + "'");
  }
  if (X.ndim() != 2 || X.shape(1) != K) throw std::invalid_argument("X must be [M, K]");
  if (act < 0 || act > 2) throw std::invalid_argument("bad activation");
  const int64_t M = X.shape(0);
  py::array_t<float, py::array::c_style | py::array::forcecast> barr;
  const float* bp = nullptr;
  if (!bias.is_none()) {
    barr = py::cast<py::array_t<float, py::array::c_style | py::array::forcecast>>(bias);
    if (barr.size() != N) throw std::invalid_argument("bias must have N entries");
    bp = barr.data();
  }
  py::array_t<float> Y(std::vector<int64_t>{M, N});
  std::vector<uint8_t> scratch(spdense_scratch_bytes(t, w, M) + 64);
  void* sp = scratch.data() + ((64 - (reinterpret_cast<uintptr_t>(scratch.data()) & 63)) & 63);
  const float* xp = X.data();
  float* yp = Y.mutable_data();
  {
    py::gil_scoped_release nogil;
    run_spdense(t, w, xp, M, bp, Activation(act), yp, sp, threaded);
  }
  return Y;
}

// Test hook: the activation quantizer of a named ISA -> (q [M, Kp] int8, scale [M], gsum [M, NG]).
py::tuple py_qs8_quant(const std::string& isa, py::array_t<float, py::array::c_style | py::array::forcecast> X, int64_t Kp,
                       int64_t group, bool bias128) {
  const KernelTable& t = kernels_for(isa);
  if (X.ndim() != 2 || Kp < X.shape(1) || group <= 0) throw std::invalid_argument("bad arguments");
  const int64_t M = X.shape(0), K = X.shape(1), NG = (Kp + group - 1) / group;
  py::array_t<int8_t> q(std::vector<int64_t>{M, Kp});
  py::array_t<float> sc(std::vector<int64_t>{M});
  py::array_t<int32_t> gs(std::vector<int64_t>{M, NG});
  Qs8QuantArgs a{X.data(), K, K, Kp, q.mutable_data(), Kp, sc.mutable_data(), gs.mutable_data(), group, NG, bias128};
  t.qs8_quant(a, 0, M);
  return py::make_tuple(q, sc, gs);
}

// y[n0:n1] += v * W[k, n0:n1] through one table's qw_axpy (y: float32 [n1 - n0], updated in place).
void py_qw_axpy(const std::string& isa, U8Array W, const std::string& encoding, int64_t K, int64_t N, int64_t k, float v,
                int64_t n0, int64_t n1, py::array_t<float, py::array::c_style> y) {
  const KernelTable& t = kernels_for(isa);
  QWeights w;
  if (!parse_qweight_encoding(encoding, w)) throw std::invalid_argument("unknown encoding " + encoding);
  w.K = K;
  w.N = N;
  if (K <= 0 || N <= 0 || K > kQs8MaxK || W.size() != w.packed_bytes()) throw std::invalid_argument("bad weight");
  if (k < 0 || k >= K || n0 < 0 || n0 % 16 || n1 <= n0 || n1 > N || y.size() != n1 - n0)
    throw std::invalid_argument("bad k, n0, n1 or y");
  t.qw_axpy(QwView{w.is_q4, w.lay, K, N, W.data()}, k, v, n0, n1, y.mutable_data());
}

// The split quantizer: (codes, scales, group sums, outlier indices, outlier values).
py::tuple py_qs8_quant_split(const std::string& isa, py::array_t<float, py::array::c_style | py::array::forcecast> X,
                             int64_t Kp, int64_t group, bool bias128, int64_t outliers) {
  const KernelTable& t = kernels_for(isa);
  if (X.ndim() != 2 || Kp < X.shape(1) || group <= 0 || outliers < 0 || outliers > kQs8MaxOutliers)
    throw std::invalid_argument("bad arguments");
  const int64_t M = X.shape(0), K = X.shape(1), NG = (Kp + group - 1) / group;
  py::array_t<int8_t> q(std::vector<int64_t>{M, Kp});
  py::array_t<float> sc(std::vector<int64_t>{M});
  py::array_t<int32_t> gs(std::vector<int64_t>{M, NG});
  py::array_t<int32_t> idx(std::vector<int64_t>{M, outliers});
  py::array_t<float> val(std::vector<int64_t>{M, outliers});
  Qs8QuantArgs a{X.data(), K, K, Kp, q.mutable_data(), Kp, sc.mutable_data(), gs.mutable_data(), group, NG, bias128};
  t.qs8_quant_split(a, Qs8SplitOut{outliers, idx.mutable_data(), val.mutable_data()}, 0, M);
  return py::make_tuple(q, sc, gs, idx, val);
}

// Test hook: requantization of a float block [M, N] with a named ISA -> int8 [M, N].
using I8Array = py::array_t<int8_t, py::array::c_style | py::array::forcecast>;
using F32Array = py::array_t<float, py::array::c_style | py::array::forcecast>;
I8Array py_qs8_requant(const std::string& isa, F32Array Y, F32Array mult, int out_zp, int lo, int hi, py::object res,
                       int r_zp, float r_mult, bool two_step, int mid_zp, float mid_mult) {
  const KernelTable& t = kernels_for(isa);
  if (Y.ndim() != 2 || mult.size() != Y.shape(1)) throw std::invalid_argument("Y must be [M, N] and mult [N]");
  if (lo < -128 || hi > 127 || lo > hi || out_zp < -128 || out_zp > 127 || r_zp < -128 || r_zp > 127 || mid_zp < -128 ||
      mid_zp > 127)
    throw std::invalid_argument("code range or zero points out of [-128, 127]");
  const int64_t M = Y.shape(0), N = Y.shape(1);
  I8Array R;
  if (!res.is_none()) {
    R = py::cast<I8Array>(res);
    if (R.ndim() != 2 || R.shape(0) != M || R.shape(1) != N) throw std::invalid_argument("residual must be [M, N]");
  }
  I8Array Q(std::vector<int64_t>{M, N});
  Qs8RequantArgs a{N, Y.data(), N, mult.data(), out_zp, lo, hi, res.is_none() ? nullptr : R.data(), N, r_zp, r_mult,
                   two_step, mid_zp, mid_mult, Q.mutable_data(), N};
  py::gil_scoped_release nogil;
  t.qs8_requant(a, 0, M);
  return Q;
}

// Test hook: int8 depthwise convolution with a named ISA (x NHWC int8, w [kh, kw, C] int8).
I8Array py_qs8_dwconv(const std::string& isa, I8Array X, I8Array Wt, py::object bias, F32Array mult, std::vector<int64_t> strides,
                      std::vector<int64_t> dil, std::vector<int64_t> pads, int64_t OH, int64_t OW, int x_zp, int out_zp,
                      int lo, int hi) {
  const KernelTable& t = kernels_for(isa);
  if (X.ndim() != 4 || Wt.ndim() != 3 || Wt.shape(2) != X.shape(3) || mult.size() != X.shape(3) || strides.size() != 2 ||
      dil.size() != 2 || pads.size() != 2 || OH < 0 || OW < 0)
    throw std::invalid_argument("bad dwconv arguments");
  const int64_t C = X.shape(3);
  for (int64_t i = 0; i < Wt.size(); ++i)
    if (Wt.data()[i] == -128) throw std::invalid_argument("weights must be in [-127, 127]");
  py::array_t<int32_t, py::array::c_style | py::array::forcecast> B;
  if (!bias.is_none()) {
    B = py::cast<py::array_t<int32_t, py::array::c_style | py::array::forcecast>>(bias);
    if (B.size() != C) throw std::invalid_argument("bias must have C entries");
  }
  I8Array Y(std::vector<int64_t>{X.shape(0), OH, OW, C});
  Qs8DwConvArgs a{X.data(), Wt.data(), bias.is_none() ? nullptr : B.data(), mult.data(), Y.mutable_data(),
                  X.shape(0), X.shape(1), X.shape(2), C, OH, OW, Wt.shape(0), Wt.shape(1), strides[0], strides[1],
                  dil[0], dil[1], pads[0], pads[1], x_zp, out_zp, lo, hi};
  std::vector<uint8_t> scratch(size_t(qs8_dwconv_scratch_bytes(C, Wt.shape(0) * Wt.shape(1)) + 64));
  void* sp = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(scratch.data()) + 63) & ~uintptr_t(63));
  py::gil_scoped_release nogil;
  t.qs8_dwconv(a, 0, X.shape(0) * OH, sp);
  return Y;
}

// Test hook: a named ISA's f32-vmath row function over a 1-D array (in place when inplace).
py::array_t<float> py_f32_row(const std::string& isa, const std::string& fn, F32Array x, bool inplace) {
  const KernelTable& t = kernels_for(isa);
  F32RowFn f = nullptr;
  if (fn == "softmax") f = t.vmath.softmax_row;
  else if (fn == "gelu") f = t.vmath.gelu;
  else throw std::invalid_argument("unknown row function '" + fn + "'; expected softmax or gelu");
  if (x.ndim() != 1) throw std::invalid_argument("expected a 1-D float32 array");
  py::array_t<float> y(std::vector<int64_t>{x.shape(0)});
  float* yp = y.mutable_data();
  if (inplace) std::memcpy(yp, x.data(), size_t(x.shape(0)) * 4);
  const float* xp = inplace ? yp : x.data();
  const int64_t n = x.shape(0);
  py::gil_scoped_release nogil;
  f(xp, yp, n);
  return y;
}

// Test hook: a named ISA's softmax of a pre-processed row (SoftmaxPre: scale_op 0/1/2 with
// scale, then + add, a row of x's length or one value broadcast, or None), in place when inplace.
py::array_t<float> py_f32_softmax_pre(const std::string& isa, F32Array x, int scale_op, float scale, py::object add,
                                      bool inplace) {
  const KernelTable& t = kernels_for(isa);
  if (x.ndim() != 1) throw std::invalid_argument("expected a 1-D float32 array");
  if (scale_op < 0 || scale_op > 2) throw std::invalid_argument("scale_op must be 0, 1 or 2");
  const int64_t n = x.shape(0);
  F32Array a;
  SoftmaxPre pre{scale_op, scale, nullptr, false};
  if (!add.is_none()) {
    a = py::cast<F32Array>(add);
    if (a.ndim() != 1 || (a.shape(0) != n && a.shape(0) != 1))
      throw std::invalid_argument("add must be a 1-D float32 array of x's length or of length 1");
    pre.add = a.data();
    pre.add_bcast = a.shape(0) == 1 && n != 1;
  }
  py::array_t<float> y(std::vector<int64_t>{n});
  float* yp = y.mutable_data();
  if (inplace) std::memcpy(yp, x.data(), size_t(n) * 4);
  const float* xp = inplace ? yp : x.data();
  py::gil_scoped_release nogil;
  t.vmath.softmax_pre(xp, yp, n, pre);
  return y;
}

// Test hook: a named ISA's layer normalization of each row of a 2-D x (plus skip, same shape, or
// None); returns (y, mean per row, istd per row). inplace: y starts as a copy of x and is passed
// as both x and y.
py::tuple py_f32_layernorm(const std::string& isa, F32Array x, py::object skip, F32Array gamma, py::object beta,
                           float eps, bool inplace) {
  const KernelTable& t = kernels_for(isa);
  if (x.ndim() != 2) throw std::invalid_argument("expected a 2-D float32 array");
  const int64_t rows = x.shape(0), n = x.shape(1);
  if (n < 1) throw std::invalid_argument("rows must not be empty");
  if (gamma.ndim() != 1 || gamma.shape(0) != n) throw std::invalid_argument("gamma must be 1-D of the row length");
  F32Array sk, bt;
  if (!skip.is_none()) {
    sk = py::cast<F32Array>(skip);
    if (sk.ndim() != 2 || sk.shape(0) != rows || sk.shape(1) != n) throw std::invalid_argument("skip must have x's shape");
  }
  if (!beta.is_none()) {
    bt = py::cast<F32Array>(beta);
    if (bt.ndim() != 1 || bt.shape(0) != n) throw std::invalid_argument("beta must be 1-D of the row length");
  }
  py::array_t<float> y(std::vector<int64_t>{rows, n}), mean(std::vector<int64_t>{rows}), istd(std::vector<int64_t>{rows});
  float* yp = y.mutable_data();
  if (inplace) std::memcpy(yp, x.data(), size_t(rows * n) * 4);
  const float* xp = inplace ? yp : x.data();
  const float* sp = skip.is_none() ? nullptr : sk.data();
  const LayerNormParams p{gamma.data(), beta.is_none() ? nullptr : bt.data(), eps};
  float* mp = mean.mutable_data();
  float* ip = istd.mutable_data();
  {
    py::gil_scoped_release nogil;
    for (int64_t r = 0; r < rows; ++r)
      t.vmath.layernorm(xp + r * n, sp ? sp + r * n : nullptr, yp + r * n, n, p, mp + r, ip + r);
  }
  return py::make_tuple(y, mean, istd);
}

// Test hook: a named ISA's depthwise kernel over rows [r0, r1) of y (x [N,H,W,C], w [kh,kw,C]).
void py_f32_dwconv(const std::string& isa, F32Array x, F32Array w, py::object bias, py::array_t<float, py::array::c_style> y,
                   std::vector<int64_t> stride, std::vector<int64_t> dilation, std::vector<int64_t> pad_tl, int64_t r0,
                   int64_t r1) {
  const KernelTable& t = kernels_for(isa);
  if (x.ndim() != 4 || w.ndim() != 3 || y.ndim() != 4) throw std::invalid_argument("x, y must be NHWC, w [kh, kw, C]");
  if (stride.size() != 2 || dilation.size() != 2 || pad_tl.size() != 2) throw std::invalid_argument("2-D params");
  const int64_t N = x.shape(0), H = x.shape(1), W = x.shape(2), C = x.shape(3);
  const int64_t kh = w.shape(0), kw = w.shape(1), OH = y.shape(1), OW = y.shape(2);
  if (w.shape(2) != C || y.shape(0) != N || y.shape(3) != C) throw std::invalid_argument("channel/batch mismatch");
  if (stride[0] < 1 || stride[1] < 1 || dilation[0] < 1 || dilation[1] < 1 || pad_tl[0] < 0 || pad_tl[1] < 0)
    throw std::invalid_argument("bad stride/dilation/pad");
  if (!(0 <= r0 && r0 <= r1 && r1 <= N * OH)) throw std::invalid_argument("bad row range");
  F32Array b;
  const float* bp = nullptr;
  if (!bias.is_none()) {
    b = py::cast<F32Array>(bias);
    if (b.size() != C) throw std::invalid_argument("bias must have C entries");
    bp = b.data();
  }
  F32DwConvArgs a{x.data(), w.data(), bp, y.mutable_data(), N, H, W, C, OH, OW, kh, kw,
                  stride[0], stride[1], dilation[0], dilation[1], pad_tl[0], pad_tl[1]};
  std::vector<float> acc(size_t(C) + 1);
  py::gil_scoped_release nogil;
  t.f32_dwconv.fn(a, r0, r1, acc.data());
}

// Test hook: a named ISA's max-pool kernel over rows [r0, r1) of y (x and y NHWC).
void py_f32_maxpool(const std::string& isa, F32Array x, py::array_t<float, py::array::c_style> y, std::vector<int64_t> kernel,
                    std::vector<int64_t> stride, std::vector<int64_t> dilation, std::vector<int64_t> pad_tl, int64_t r0,
                    int64_t r1) {
  const KernelTable& t = kernels_for(isa);
  if (x.ndim() != 4 || y.ndim() != 4) throw std::invalid_argument("x, y must be NHWC");
  if (kernel.size() != 2 || stride.size() != 2 || dilation.size() != 2 || pad_tl.size() != 2)
    throw std::invalid_argument("2-D params");
  const int64_t N = x.shape(0), H = x.shape(1), W = x.shape(2), C = x.shape(3), OH = y.shape(1), OW = y.shape(2);
  if (y.shape(0) != N || y.shape(3) != C) throw std::invalid_argument("channel/batch mismatch");
  if (kernel[0] < 1 || kernel[1] < 1 || stride[0] < 1 || stride[1] < 1 || dilation[0] < 1 || dilation[1] < 1 ||
      pad_tl[0] < 0 || pad_tl[1] < 0)
    throw std::invalid_argument("bad kernel/stride/dilation/pad");
  if (!(0 <= r0 && r0 <= r1 && r1 <= N * OH)) throw std::invalid_argument("bad row range");
  F32MaxPoolArgs a{x.data(), y.mutable_data(), N, H, W, C, OH, OW, kernel[0], kernel[1],
                   stride[0], stride[1], dilation[0], dilation[1], pad_tl[0], pad_tl[1]};
  py::gil_scoped_release nogil;
  t.f32_maxpool.fn(a, r0, r1);
}


// Test hooks: a named ISA's Winograd F(2x2, 3x3) transforms on one tile. d: the tile's 16
// pixels as rows [16, C]; v: [16, C], written.
void py_f32_wino_input(const std::string& isa, F32Array d, py::array_t<float, py::array::c_style> v) {
  const KernelTable& t = kernels_for(isa);
  if (d.ndim() != 2 || d.shape(0) != 16 || v.ndim() != 2 || v.shape(0) != 16 || v.shape(1) != d.shape(1))
    throw std::invalid_argument("d and v must both be [16, C]");
  const int64_t C = d.shape(1);
  const float* dp[16];
  float* vp[16];
  for (int i = 0; i < 16; ++i) dp[i] = d.data() + i * C, vp[i] = v.mutable_data() + i * C;
  py::gil_scoped_release nogil;
  t.f32_winograd.input(dp, vp, C);
}

// m: [16, C]; y: [4, C], written except the rows whose bit is set in `outside`; bias: [C] or
// None; res: [4, C] or None.
void py_f32_wino_output(const std::string& isa, F32Array m, py::array_t<float, py::array::c_style> y, py::object bias,
                        py::object res, bool relu, int outside) {
  const KernelTable& t = kernels_for(isa);
  if (m.ndim() != 2 || m.shape(0) != 16 || y.ndim() != 2 || y.shape(0) != 4 || y.shape(1) != m.shape(1))
    throw std::invalid_argument("m must be [16, C] and y [4, C]");
  const int64_t C = m.shape(1);
  F32Array b, r;
  F32WinoOutputArgs a{};
  if (!bias.is_none()) {
    b = bias.cast<F32Array>();
    if (b.ndim() != 1 || b.shape(0) != C) throw std::invalid_argument("bias must be [C]");
    a.bias = b.data();
  }
  if (!res.is_none()) {
    r = res.cast<F32Array>();
    if (r.ndim() != 2 || r.shape(0) != 4 || r.shape(1) != C) throw std::invalid_argument("res must be [4, C]");
  }
  for (int i = 0; i < 16; ++i) a.m[i] = m.data() + i * C;
  for (int p = 0; p < 4; ++p) {
    a.y[p] = (outside >> p) & 1 ? nullptr : y.mutable_data() + p * C;
    a.res[p] = res.is_none() ? nullptr : r.data() + p * C;
  }
  a.C = C;
  a.relu = relu;
  py::gil_scoped_release nogil;
  t.f32_winograd.output(a);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "lowbit native core: CPU dispatch, kernels, thread pool and the executor";
  const char* forced = std::getenv("LOWBIT_ISA");
  select_kernels(forced ? std::string(forced) : std::string());  // throws -> ImportError-time exception
  register_all_ops();

  m.def("cpu_features", &cpu::feature_names);
  m.def("cpu_vendor", [] { return cpu::features().vendor; });
  m.def("avx512_emulated", [] { return cpu::features().avx512_emulated; });
  m.def("selected_isa", [] { return std::string(kernels().isa_name); });
  m.def("supported_isas", [] {
    std::vector<std::string> out;
    for (const auto& t : all_kernel_tables())
      if (isa_supported(t.isa)) out.emplace_back(t.isa_name);
    return out;
  });
  m.def("kernel_names", [](const std::string& isa) {
    const KernelTable& t = isa.empty() ? kernels() : kernels_for(isa);
    py::dict d;
    d["f32-gemm"] = t.f32_gemm_name;
    d["qs8-quant"] = t.qs8_quant_name;
    d["qs8-gemm"] = t.qs8_gemm_name;
    d["qs7-gemm"] = t.qs7_gemm_name;
    d["q4-gemm"] = t.q4_gemm_name;
    if (t.q4_gemm_lattice_min_rows > 0) d["q4-gemm-lattice"] = t.q4_gemm_lattice_name;  // int4 on the int8 lattice
    d["f32-spmm"] = t.f32_spmm_name;
    d["qs8-spmm"] = t.qs8_spmm_name;
    d["qs8-bspmm"] = t.qs8_bspmm_name;
    if (t.qs8_bspmm_unstage != nullptr) d["qs8-bspmm-unstage"] = t.qs8_bspmm_unstage_name;  // staged tile output
    if (t.qs8_bspmm_t16 != nullptr && t.qs8_bspmm_t16_min_rows > 0) d["qs8-bspmm-t16"] = t.qs8_bspmm_t16_name;  // from min_rows rows
    d["qs8-quant-split"] = t.qs8_quant_split_name;
    d["qw-axpy"] = t.qw_axpy_name;
    d["f32-pack-bt"] = t.f32_pack_bt_name;
    d["bf16-gemm"] = t.bf16.name;
    d["crc32c"] = t.crc32c_name;
    d["memread"] = t.memread_sum_name;
    d["qs8-dotpeak"] = t.qs8_dotpeak_name;
    d["f32-softmax"] = t.vmath.softmax_name;
    d["f32-gelu"] = t.vmath.gelu_name;
    d["f32-layernorm"] = t.vmath.layernorm_name;
    d["f32-dwconv"] = t.f32_dwconv.name;
    d["f32-maxpool"] = t.f32_maxpool.name;
    d["f32-winograd"] = t.f32_winograd.name;
    d["f32-conv"] = t.f32_gemm_implicit_a ? "implicit-gemm" : "im2col";
    d["qs8-requant"] = t.qs8_requant_name;
    d["qs8-dwconv"] = t.qs8_dwconv_name;
    return d;
  }, py::arg("isa") = "");
  m.def("set_num_threads", [](int n) {
    if (n < 1) throw std::invalid_argument("num_threads must be >= 1, got " + std::to_string(n));
    py::gil_scoped_release nogil;
    ThreadPool::global().set_num_threads(n);
  });
  m.def("get_num_threads", [] { return ThreadPool::global().num_threads(); });
  m.def("crc32c", &py_crc32c, py::arg("data"), py::arg("crc") = 0);
  m.def("crc32c_isa", &py_crc32c_isa, py::arg("isa"), py::arg("data"), py::arg("crc") = 0);
  m.def("pack_f32_n16", &py_pack_b);
  m.def("bf16_gemm", &py_bf16_gemm, py::arg("isa"), py::arg("A"), py::arg("B"), py::arg("trans_b") = false,
        py::arg("row_scale") = py::none(),
        "Test hook: C = A . B on an ISA's bf16 GEMM (A, B packed by its packings).");
  m.def("bf16_softmax", &py_bf16_softmax, py::arg("isa"), py::arg("x"), py::arg("scale_op") = 0, py::arg("scale") = 1.0f,
        py::arg("add") = py::none(), "Test hook: an ISA's bf16 attention softmax of the rows of x: (bf16 codes of P, 1 / sums).");
  m.def("bf16_pack", &py_bf16_pack, py::arg("isa"), py::arg("x"), py::arg("kind"),
        "Test hook: an ISA's bf16 packing of x: kind 'a', 'b' or 'bt'.");
  m.def("f32_gemm", &py_f32_gemm, py::arg("isa"), py::arg("A"), py::arg("Bp"), py::arg("bias"), py::arg("act"), py::arg("N"),
        py::arg("C"), py::arg("m0"), py::arg("m1"), py::arg("n0"), py::arg("n1"), py::arg("res") = py::none());
  m.def("f32_gemm_implicit", &py_f32_gemm_implicit);
  m.def("pack_qs8", &py_pack_qs8);
  m.def("pack_q4", &py_pack_q4, py::arg("codes"), py::arg("scales_f16"), py::arg("zeros"), py::arg("table"), py::arg("kind"),
        py::arg("group"));
  m.def("qdense", &py_qdense, py::arg("isa"), py::arg("x"), py::arg("w"), py::arg("encoding"), py::arg("K"), py::arg("N"),
        py::arg("bias") = py::none(), py::arg("act") = 0, py::arg("threaded") = false, py::arg("outliers") = 0,
        py::arg("x_grid") = py::none(), py::arg("y_grid") = py::none(), py::arg("lattice") = py::none());
  m.def(
      "q4_lattice",
      [](U8Array W, const std::string& encoding, int64_t K, int64_t N) -> py::object {
        QWeights w;
        if (!parse_qweight_encoding(encoding, w) || !w.is_q4) throw std::invalid_argument("expected a q4 encoding, got " + encoding);
        w.K = K;
        w.N = N;
        if (K <= 0 || N <= 0 || W.size() != w.packed_bytes()) throw std::invalid_argument("packed weight size mismatch");
        w.W = W.data();
        KernelTable none;
        if (!prepare_q4_lattice(none, w, true, true)) return py::none();
        py::array_t<float> s(static_cast<py::ssize_t>(w.lat_step.size()));
        std::copy(w.lat_step.begin(), w.lat_step.end(), s.mutable_data());
        py::array_t<int16_t> m(static_cast<py::ssize_t>(w.lat_mul.size()));
        std::copy(w.lat_mul.begin(), w.lat_mul.end(), m.mutable_data());
        return py::make_tuple(s, m, w.lat_shift);
      },
      py::arg("w"), py::arg("encoding"), py::arg("K"), py::arg("N"),
      "Test hook: (step [P*16], mul [P*NG*16], shift) of 4-bit weights in the lattice form (q4_gemm.h; shift 0: "
      "the exact form of affine codes on the int8 lattice, else requantized per column), or None.");
  m.def("qs8_quant", &py_qs8_quant);
  m.def("f32_row", &py_f32_row, py::arg("isa"), py::arg("fn"), py::arg("x"), py::arg("inplace") = false);
  m.def("f32_layernorm", &py_f32_layernorm, py::arg("isa"), py::arg("x"), py::arg("skip"), py::arg("gamma"),
        py::arg("beta"), py::arg("eps"), py::arg("inplace") = false);
  m.def("f32_softmax_pre", &py_f32_softmax_pre, py::arg("isa"), py::arg("x"), py::arg("scale_op"), py::arg("scale"),
        py::arg("add") = py::none(), py::arg("inplace") = false);
  m.def("f32_dwconv", &py_f32_dwconv, py::arg("isa"), py::arg("x"), py::arg("w"), py::arg("bias"), py::arg("y"),
        py::arg("stride"), py::arg("dilation"), py::arg("pad_tl"), py::arg("r0"), py::arg("r1"));
  m.def("qs8_quant_split", &py_qs8_quant_split);
  m.def("qw_axpy", &py_qw_axpy);
  m.def("qs8_requant", &py_qs8_requant, py::arg("isa"), py::arg("y"), py::arg("mult"), py::arg("out_zp"), py::arg("lo"),
        py::arg("hi"), py::arg("residual") = py::none(), py::arg("r_zp") = 0, py::arg("r_mult") = 0.0f,
        py::arg("two_step") = false, py::arg("mid_zp") = 0, py::arg("mid_mult") = 1.0f);
  m.def("qs8_dwconv", &py_qs8_dwconv);
  m.def("f32_maxpool", &py_f32_maxpool, py::arg("isa"), py::arg("x"), py::arg("y"), py::arg("kernel"), py::arg("stride"),
        py::arg("dilation"), py::arg("pad_tl"), py::arg("r0"), py::arg("r1"));
  m.def("f32_wino_input", &py_f32_wino_input, py::arg("isa"), py::arg("d"), py::arg("v"));
  m.def("f32_wino_output", &py_f32_wino_output, py::arg("isa"), py::arg("m"), py::arg("y"), py::arg("bias") = py::none(),
        py::arg("res") = py::none(), py::arg("relu") = false, py::arg("outside") = 0);
  m.def("pack_sell_f32", &py_pack_sell_f32, py::arg("w"), py::arg("bk") = 1);
  m.def("pack_sell_s8", &py_pack_sell_s8, py::arg("wq"), py::arg("scales"), py::arg("bk") = 1);
  m.def("sell_info", &py_sell_info, py::arg("w"), py::arg("encoding"), py::arg("K"), py::arg("N"));
  m.def("spdense", &py_spdense, py::arg("isa"), py::arg("x"), py::arg("w"), py::arg("encoding"), py::arg("K"), py::arg("N"),
        py::arg("bias") = py::none(), py::arg("act") = 0, py::arg("threaded") = false, py::arg("path") = "auto");
  m.def("memread_sum", [](const py::array& b, const std::string& isa) {
    if (!(b.flags() & py::array::c_style))
      throw std::invalid_argument("memread_sum: expected a C-contiguous array, got a strided view");
    const MemreadSumFn fn = kernels_for(isa).memread_sum;
    const void* p = b.data();
    const size_t n = size_t(b.nbytes());
    py::gil_scoped_release nogil;
    return fn(p, n);
  }, py::arg("b"), py::arg("isa") = "scalar",
     "Sum (mod 2^64) of the buffer's 64-bit words: a plain read loop. The scalar one is the benches' "
     "memory-bandwidth yardstick; an ISA's reads one stream with that level's widest loads");
  m.def("qs8_dotpeak", [](const std::string& isa, int64_t rounds, int a, int b) {
    if (rounds < 0) throw std::invalid_argument("qs8_dotpeak: expected rounds >= 0, got " + std::to_string(rounds));
    if (a < 0 || a > 127) throw std::invalid_argument("qs8_dotpeak: expected 0 <= a <= 127, got " + std::to_string(a));
    if (b < -127 || b > 127) throw std::invalid_argument("qs8_dotpeak: expected -127 <= b <= 127, got " + std::to_string(b));
    const int64_t ab = int64_t(a) * (b < 0 ? -b : b);
    if (ab > 0 && rounds > INT32_MAX / (kQs8DotPeakLaneMacs * ab))
      throw std::invalid_argument("qs8_dotpeak: rounds * " + std::to_string(kQs8DotPeakLaneMacs) + " * |a*b| must stay <= 2^31 - 1, got rounds " +
                                  std::to_string(rounds) + " with |a*b| = " + std::to_string(ab));
    const Qs8DotPeakFn fn = kernels_for(isa).qs8_dotpeak;
    py::gil_scoped_release nogil;
    return fn(rounds, a, b);
  }, py::arg("isa"), py::arg("rounds"), py::arg("a") = 1, py::arg("b") = 1,
     "rounds x 1024 int8 products a*b on an ISA's int8 dot instruction, in registers; returns their sum "
     "(rounds * 1024 * a * b). Timed, the int8 MAC rate of one core");
  m.def("known_ops", &known_ops);
  m.def("_set_conv_implicit_gemm", &set_conv_implicit_gemm, py::arg("on"),
        "testing only: false forces im2col for every Conv (the implicit path must give the same bits)");
  m.def("_set_conv_winograd", &set_conv_winograd, py::arg("on"),
        "testing only: false runs 3x3 stride-1 convs through the GEMM paths instead of Winograd F(2x2, 3x3)");

  py::class_<PyEngine>(m, "Engine")
      .def(py::init<const py::list&, const py::list&, std::vector<int>, std::vector<int>>())
      .def("run", &PyEngine::run)
      .def("profile", &PyEngine::profile)
      .def("node_kernels", &PyEngine::node_kernels)
      .def("arena_bytes", &PyEngine::arena_bytes);

  m.def("memory_limit", &memory_limit_bytes, "bytes one run may allocate (arena + outputs)");
  m.def("set_memory_limit", &set_memory_limit_bytes, py::arg("nbytes"),
        "overrides the memory limit (tests, fuzzing); 0 restores the default");
  // Leaked on purpose: a static py::object would be released after the interpreter is gone.
  static auto* memory_limit_error = new py::exception<MemoryLimitError>(m, "MemoryLimitError", PyExc_ValueError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const MemoryLimitError& e) {
      py::set_error(*memory_limit_error, e.what());
    } catch (const ShapeError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
}
