// AVX2 fp32 SELL-8 matmul (see f32_spmm.h). Compile with: -mavx2 -mfma
//
// One step of a slice is 8 indices and one ymm of 8 values: eight scalar loads build the
// vector of A[m, idx] for the 8 lanes and one FMA adds it in, the same chain per lane as the
// reference. Up to 4 rows share the index and value loads; the first block of rows of a call,
// which brings a slice's weights in (the next blocks find them in cache), prefetches both
// streams ahead to the level the table chose (kernels/common/prefetch.h). The AVX-512 tables run this
// kernel too: vgatherdps measured no faster there (docs/kernels.md).
#include <immintrin.h>

#include <cstring>

#include "f32_spmm.h"
#include "kernels/common/prefetch.h"

namespace lowbit {
namespace avx2 {
namespace {

// Eight scalar loads beat vgatherdps on Zen 3 (measured: 740 vs 920 us for 224K steps) and on
// Zen 4 (404 vs 630 us for 210K steps). The eight indices come in two 8-byte loads and are
// split in registers: the step is bound by its loads (Zen 4: 17 of them at 3 per cycle), and
// that made it 356 us against 404 with one 2-byte load per index.
inline __m256 Gather8(const float* x, const uint16_t* i) {
  uint64_t a, b;
  std::memcpy(&a, i, 8);
  std::memcpy(&b, i + 4, 8);
  return _mm256_setr_ps(x[a & 0xFFFF], x[(a >> 16) & 0xFFFF], x[(a >> 32) & 0xFFFF], x[a >> 48], x[b & 0xFFFF],
                        x[(b >> 16) & 0xFFFF], x[(b >> 32) & 0xFFFF], x[b >> 48]);
}

// noinline: inlined into the driver, its registers were spilled around the gathers (~40% slower)
template <int MR, StreamPrefetch P>
__attribute__((noinline)) void Slice(const F32SpmmArgs& a, int64_t m, int64_t s) {
  const SellMatrix& w = *a.W;
  const float* val = reinterpret_cast<const float*>(w.val);
  const float* x[MR];
  __m256 acc[MR];
  for (int r = 0; r < MR; ++r) {
    x[r] = a.A + (m + r) * a.lda;
    acc[r] = _mm256_setzero_ps();
  }
  int64_t t = w.slice[s];
  const int64_t t1 = w.slice[s + 1];
  // four steps per iteration: 128 bytes of values (two lines) and 64 of indices (one line), each
  // line prefetched once with no per-step test (that test and its address arithmetic cost ~15%
  // with the weights in L3, where the four-step loop with its prefetches runs as fast as without)
  for (; t + 4 <= t1; t += 4) {
    const float* v = val + t * kSellC;
    const uint16_t* idx = w.idx + t * kSellC;
    PrefetchSell4<P>(v, idx);
#pragma GCC unroll 4
    for (int u = 0; u < 4; ++u) {
      const __m256 vu = _mm256_loadu_ps(v + 8 * u);
#pragma GCC unroll 4
      for (int r = 0; r < MR; ++r) acc[r] = _mm256_fmadd_ps(Gather8(x[r], idx + 8 * u), vu, acc[r]);
    }
  }
  for (; t < t1; ++t) {
    const __m256 v = _mm256_loadu_ps(val + t * kSellC);
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) acc[r] = _mm256_fmadd_ps(Gather8(x[r], w.idx + t * kSellC), v, acc[r]);
  }
  const uint32_t* perm = w.perm + s * kSellC;
  for (int r = 0; r < MR; ++r) {
    alignas(32) float out[8];
    _mm256_store_ps(out, acc[r]);
    float* c = a.C + (m + r) * a.ldc;
    for (int j = 0; j < kSellC; ++j) {
      const uint32_t n = perm[j];
      if (n == kSellNoColumn) continue;
      float y = out[j];
      if (a.bias) y = y + a.bias[n];
      if (a.act == Activation::kRelu) y = (0.0f > y) ? 0.0f : y;
      c[n] = y;
    }
  }
}

}  // namespace

void f32_spmm_s8m4__avx2(const F32SpmmArgs& a, int64_t m0, int64_t m1, int64_t s0, int64_t s1) {
  for (int64_t s = s0; s < s1; ++s)
    ForRowBlocks(a.prefetch, m0, m1, [&](auto mr, auto pf, int64_t m) {
      Slice<decltype(mr)::value, decltype(pf)::value>(a, m, s);
    });
}

}  // namespace avx2
}  // namespace lowbit
