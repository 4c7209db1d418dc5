// Software prefetch of the weight streams of the sparse kernels (x86).
//
// The SELL and K16 kernels read their values and indices front to back, a few bytes per
// step, and at M = 1 each step's loads wait on the index stream. With the weights in DRAM
// (a model larger than the L3) the hardware prefetchers did not keep these streams ahead:
// measured on an Emerald Rapids Xeon, 1 thread, a chain of 4096 x 4096 layers (docs/kernels.md,
// "Weight streams"), a prefetch of each line kStreamAhead bytes ahead took the fp32 SELL
// kernel from 1.15-1.24 ms to 0.54-0.57 ms per 90%-sparse layer and the 1x4-block kernel
// from 0.39-0.59 ms to 0.23-0.24 ms per 80%-sparse layer. A call's rows are taken in blocks
// of up to 4, each block over the whole slice or group before the next; only the first block
// prefetches, since it brings the weights in and the others find them in cache (K16 at
// M = 16: prefetching in every block cost 2-5%). The dense GEMVs prefetch their 8
// panel streams themselves; the packed-tile sparse path (M >= 2 on AVX-512) is core-bound, and
// per-stream prefetching cost it 2-7% with the weights in L3, so it prefetches the next
// slices' bytes in sequence instead (BsrTile3 in qs8-spmm/avx512vnni.cc).
// Where the lines go (L1, L2, or no software prefetch) is the kernel table's choice per CPU,
// passed in the kernels' arguments (kernels/sparse/stream.h; measured in docs/kernels.md).
#pragma once
#include <xmmintrin.h>

#include <cstdint>

#include "kernels/sparse/stream.h"

namespace lowbit {

// bytes ahead of the values stream; an index stream that advances half (a quarter, ...) as
// many bytes per step is prefetched half (a quarter, ...) as far ahead, the same steps ahead
constexpr int64_t kStreamAhead = 8192;

// Called once per step of a stream that advances `Step` bytes per step (Step <= 64): prefetches
// the line `ahead` bytes past p when that line is new to this step, so each line once.
template <int Step>
inline void PrefetchStream(const void* p, int64_t ahead, StreamPrefetch to) {
  static_assert(Step > 0 && Step <= 64, "one line per step at most");
  // an address, not a pointer: near the end of a weight it lies past the array (harmless for
  // a prefetch, but not a pointer C++ lets us form)
  const uintptr_t q = reinterpret_cast<uintptr_t>(p) + uintptr_t(ahead);
  if (Step == 64 || (q & 63) < uintptr_t(Step)) {
    if (to == StreamPrefetch::kL1)
      _mm_prefetch(reinterpret_cast<const char*>(q), _MM_HINT_T0);
    else if (to == StreamPrefetch::kL2)
      _mm_prefetch(reinterpret_cast<const char*>(q), _MM_HINT_T1);
  }
}

// The line `ahead` bytes past p, at level P (kNone: nothing). For loops that advance a whole number
// of lines per iteration and prefetch each line of it unconditionally (no per-step test).
template <StreamPrefetch P>
inline void PrefetchAhead(const void* p, int64_t ahead) {
  const char* q = reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(p) + uintptr_t(ahead));  // see above
  if (P == StreamPrefetch::kL1) _mm_prefetch(q, _MM_HINT_T0);
  if (P == StreamPrefetch::kL2) _mm_prefetch(q, _MM_HINT_T1);
}

// Four SELL-8 steps of 32 bytes of values (8 fp32 lanes, or 8 int8 1x4 blocks) and 16 of indices,
// from the values at `val` and the indices at `idx`: the two value lines and the index line ahead.
template <StreamPrefetch P>
inline void PrefetchSell4(const void* val, const void* idx) {
  PrefetchAhead<P>(val, kStreamAhead);
  PrefetchAhead<P>(static_cast<const char*>(val) + 64, kStreamAhead);
  PrefetchAhead<P>(idx, kStreamAhead / 2);
}

}  // namespace lowbit
