// Helpers shared by the op implementations.
#pragma once
#include <algorithm>
#include <string>

#include "kernels/f32-gemm/f32_gemm.h"
#include "runtime/engine.h"
#include "runtime/threadpool.h"

namespace lowbit {

inline int64_t norm_axis(int64_t axis, int64_t rank, const char* what) {
  int64_t a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= std::max<int64_t>(rank, 1))
    throw ShapeError(std::string(what) + " axis " + std::to_string(axis) + " is out of range for rank " + std::to_string(rank));
  return a;
}

// For ops that index the shape at the axis (Concat, Split, Slice, ...): a scalar has no axis to
// index (ONNX requires rank >= 1 there), where norm_axis lets axis 0 through for rank 0.
inline int64_t norm_axis_nd(int64_t axis, int64_t rank, const char* what) {
  if (rank < 1) throw ShapeError(std::string(what) + " needs an input of rank >= 1 for axis " + std::to_string(axis) + ", got a scalar");
  return norm_axis(axis, rank, what);
}

inline void need_inputs(const std::vector<const Shape*>& in, size_t n, const char* op) {
  if (in.size() < n) throw ShapeError(std::string(op) + " expects " + std::to_string(n) + " inputs");
  for (size_t i = 0; i < n; ++i)
    if (!in[i]) throw ShapeError(std::string(op) + " input " + std::to_string(i) + " is required");
}

// Runs the selected f32 GEMM over the thread pool (split along N panels or M rows;
// defined in dense.cc).
void run_f32_gemm_threaded(const F32GemmArgs& g);

// ONNX Reshape's target resolution (0 copies the input dim unless allowzero, one -1
// is inferred); throws ShapeError naming the shapes (defined in shape_ops.cc).
Shape reshape_target(const Shape& x, const std::vector<int64_t>& target, bool allowzero);

// Test hook (conv.cc): false makes every Conv use im2col, true (default) lets it read
// its input in place when the kernel supports that; both give the same bits.
void set_conv_implicit_gemm(bool on);
void set_conv_winograd(bool on);  // test hook: false runs 3x3 convs through the GEMM paths

// Dense over quantized weight encodings (defined in qdense.cc).
std::unique_ptr<Op> make_qdense(const NodeSpec& n, const std::vector<ValueSpec>& v);
// Dense over sparse weight encodings (defined in spdense.cc).
std::unique_ptr<Op> make_spdense(const NodeSpec& n, const std::vector<ValueSpec>& v);

// Splits n items into chunks of at least `grain` and runs them on the pool.
template <class F>
void parallel_chunks(int64_t n, int64_t grain, F&& f) {
  ThreadPool& pool = ThreadPool::global();
  const int64_t parts = pool.work_items(std::max<int64_t>(1, n / std::max<int64_t>(grain, 1)));
  if (parts <= 1) {
    f(int64_t(0), n);
    return;
  }
  std::vector<int64_t> b = split_range(n, parts, 1);
  std::function<void(int64_t)> fn = [&](int64_t i) { f(b[i], b[i + 1]); };
  pool.parallel_for(int64_t(b.size()) - 1, fn);
}

}  // namespace lowbit
