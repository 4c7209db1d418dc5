// Memory read probe: a plain sum over a buffer, the yardstick for the weight-streaming
// benches (GB/s of weights read by a GEMV next to what a bare read loop reaches).
#pragma once
#include <cstddef>
#include <cstdint>

namespace lowbit {
namespace ref {
// Sum of the buffer's 64-bit words (n / 8 of them), eight independent accumulators.
uint64_t memread_sum__scalar(const void* p, size_t n);
}
}  // namespace lowbit
