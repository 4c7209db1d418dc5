// Where the sparse kernels' software prefetch brings their weight streams (kernels/common/prefetch.h):
// a field of their argument structs, set by the caller from the kernel table, which chooses it
// per CPU from measurements (cpu/dispatch.cc).
#pragma once
#include <cstdint>
#include <type_traits>

namespace lowbit {

enum class StreamPrefetch : uint8_t {
  kNone = 0,  // no software prefetch: the hardware prefetchers alone
  kL2 = 1,    // prefetcht1
  kL1 = 2,    // prefetcht0
};

// A call's rows [m0, m1) over one slice (group) in blocks of up to 4, as the x86 row kernels take
// them: f(std::integral_constant<int, MR>, std::integral_constant<StreamPrefetch, P>, m) for each
// block, P = `level` for the first block (it brings the weights in) and kNone for the others
// (they find them in cache). Each (MR, P) is its own instance of the kernel's step loop.
template <class F>
inline void ForRowBlocks(StreamPrefetch level, int64_t m0, int64_t m1, F&& f) {
  auto block = [&](auto mr, int64_t m) {
    using NoPf = std::integral_constant<StreamPrefetch, StreamPrefetch::kNone>;
    if (m != m0) return f(mr, NoPf{}, m);
    switch (level) {
      case StreamPrefetch::kNone: return f(mr, NoPf{}, m);
      case StreamPrefetch::kL2: return f(mr, std::integral_constant<StreamPrefetch, StreamPrefetch::kL2>{}, m);
      case StreamPrefetch::kL1: return f(mr, std::integral_constant<StreamPrefetch, StreamPrefetch::kL1>{}, m);
    }
  };
  int64_t m = m0;
  for (; m + 4 <= m1; m += 4) block(std::integral_constant<int, 4>{}, m);
  switch (m1 - m) {
    case 1: block(std::integral_constant<int, 1>{}, m); break;
    case 2: block(std::integral_constant<int, 2>{}, m); break;
    case 3: block(std::integral_constant<int, 3>{}, m); break;
    default: break;
  }
}

}  // namespace lowbit
