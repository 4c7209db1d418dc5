// Throughput ceilings of the AVX2 integer dot-product sequences on this CPU, in MACs per
// cycle, from register-only loops (no loads, 6 independent accumulators, so neither memory
// nor latency limits them). The numbers in docs/kernels.md, "AVX2 (Zen 3)", come from here.
//
//   g++ -O2 -mavx2 bench/native/avx2_int8_ceiling.cc -o /tmp/ceiling && /tmp/ceiling
//
// The clock is estimated from a chain of dependent scalar adds (one per cycle); run it on
// an idle core (flock /tmp/lowbit-bench.lock on the shared machines), best of 15 rounds of
// thread CPU time.
#include <immintrin.h>
#include <time.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>

namespace {

double ThreadSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

template <class F>
double Best(F f) {
  double b = 1e30;
  for (int r = 0; r < 15; ++r) {
    const double t = ThreadSeconds();
    f();
    b = std::min(b, ThreadSeconds() - t);
  }
  return b;
}

constexpr long kIters = 2000000;

}  // namespace

// One "unit" is 32 multiply-accumulates into 8 int32 (or 16 int16) lanes; ymm12 holds the
// int16 ones, ymm13..15 the operands, ymm6..11 the temporaries, ymm0..5 the accumulators.
#define CLOB "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11"
// the peers' u8 x s8 cell (onnxruntime MLAS, FBGEMM): exact only while a pair stays below 2^15
#define PEER(acc, t) "vpmaddubsw %%ymm14,%%ymm15," t "\n vpmaddwd %%ymm12," t "," t "\n vpaddd " t "," acc "," acc "\n"
// lowbit's exact s8 x s8 cell: |a| (u8) x sign(w, a) (s8), every pair <= 2*127*127
#define EXACT(acc, t) \
  "vpsignb %%ymm14,%%ymm15," t "\n vpmaddubsw " t ",%%ymm13," t "\n vpmaddwd %%ymm12," t "," t "\n vpaddd " t "," acc "," acc "\n"
// lowbit's 4-bit cell: u8 codes <= 15 x s8, 8 of them summed in int16 before one widening
#define NIBBLE(acc, t) "vpmaddubsw %%ymm14,%%ymm15," t "\n vpaddw " t "," acc "," acc "\n"
#define SIX(CELL) \
  CELL("%%ymm0", "%%ymm6") CELL("%%ymm1", "%%ymm7") CELL("%%ymm2", "%%ymm8") CELL("%%ymm3", "%%ymm9") \
  CELL("%%ymm4", "%%ymm10") CELL("%%ymm5", "%%ymm11")

int main() {
  const double clk = Best([] {
    uint64_t x = 1;
    for (long i = 0; i < kIters; ++i)
      asm volatile("add $1, %0\n add $1, %0\n add $1, %0\n add $1, %0\n add $1, %0\n add $1, %0\n add $1, %0\n add $1, %0"
                   : "+r"(x));
  });
  const double cycle = clk / (8.0 * kIters);
  std::printf("clock ~ %.2f GHz\n", 1e-9 / cycle);
  auto report = [&](const char* name, double t) { std::printf("%-58s %5.1f MACs/cycle\n", name, 6 * 32.0 * kIters / (t / cycle)); };
  report("u8 x s8, vpmaddubsw+vpmaddwd+vpaddd (peers; can saturate)",
         Best([] { for (long i = 0; i < kIters; ++i) asm volatile(SIX(PEER) ::: CLOB); }));
  report("s8 x s8 exact, vpsignb+vpmaddubsw+vpmaddwd+vpaddd (int8, nf4)",
         Best([] { for (long i = 0; i < kIters; ++i) asm volatile(SIX(EXACT) ::: CLOB); }));
  report("u4 x s8 exact, vpmaddubsw+vpaddw (affine int4)",
         Best([] { for (long i = 0; i < kIters; ++i) asm volatile(SIX(NIBBLE) ::: CLOB); }));
  return 0;
}
