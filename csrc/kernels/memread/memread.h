// Memory read probe: a plain sum over a buffer. The scalar form is the yardstick of the
// weight-streaming benches (GB/s of weights read by a GEMV next to what a bare read loop
// reaches); the SIMD forms read one stream with the level's widest loads, the read time the
// benches quote for a layer whose every weight byte must be read once (bench/test_sparse_lowrank.py).
// It is not a strict bound: where part of the data comes from DRAM, a GEMV with several
// prefetched panel streams has read as fast or faster (docs/kernels.md, "Probes").
#pragma once
#include <cstddef>
#include <cstdint>

namespace lowbit {

// Sum (mod 2^64) of the buffer's n / 8 little-endian 64-bit words; the last n % 8 bytes are
// not read. Any alignment. Every ISA returns the reference's value.
using MemreadSumFn = uint64_t (*)(const void* p, size_t n);

namespace ref {
// eight independent accumulators; the compiler vectorizes it with SSE2
uint64_t memread_sum__scalar(const void* p, size_t n);
}
namespace avx2 {
uint64_t memread_sum__avx2(const void* p, size_t n);  // 4 x 256-bit accumulators, 128 bytes a step
}
namespace avx512 {
uint64_t memread_sum__avx512(const void* p, size_t n);  // 4 x 512-bit accumulators, 256 bytes a step
}
namespace neon {
uint64_t memread_sum__neon(const void* p, size_t n);  // 4 x 128-bit accumulators, 64 bytes a step
}
}  // namespace lowbit
