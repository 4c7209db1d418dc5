// Int8 multiply-accumulate probe: `rounds` x 1024 products of a (u8) and b (s8), accumulated
// with the ISA's int8 dot instruction (the one its int8 GEMM runs on) into accumulators that
// never leave the registers, nothing read from memory. Timed, it is the int8 MAC rate one core
// reaches: the bound bench/test_sparse_lowrank.py quotes for a compute-bound layer.
//
// Returns the sum of all products, rounds * 1024 * a * b, on every ISA.
// Preconditions (the binding checks them): 0 <= rounds, 0 <= a <= 127, -127 <= b <= 127 and
// rounds * kQs8DotPeakLaneMacs * |a * b| <= INT32_MAX (no accumulator lane can wrap; a = 127
// keeps the operand a valid s8 for NEON's sdot, and AVX2's pair sums below int16 saturation).
#pragma once
#include <cstdint>

namespace lowbit {

// The most products one 32-bit accumulator lane takes per round on any ISA (NEON: 8 x 4 lanes)
constexpr int64_t kQs8DotPeakLaneMacs = 32;

using Qs8DotPeakFn = int64_t (*)(int64_t rounds, int32_t a, int32_t b);

namespace ref {
int64_t qs8_dotpeak__scalar(int64_t rounds, int32_t a, int32_t b);
}
namespace avx2 {
int64_t qs8_dotpeak__avx2(int64_t rounds, int32_t a, int32_t b);  // vpsignb + vpmaddubsw + vpmaddwd + vpaddd, 8 x 256-bit
}
namespace avx512 {
int64_t qs8_dotpeak__avx512vnni(int64_t rounds, int32_t a, int32_t b);  // vpdpbusd, 16 x 512-bit
}
namespace neon {
int64_t qs8_dotpeak__neondot(int64_t rounds, int32_t a, int32_t b);  // sdot, 8 x 128-bit
}

}  // namespace lowbit
