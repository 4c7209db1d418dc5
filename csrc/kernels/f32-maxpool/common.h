// Pieces shared by the SIMD max-pool kernels. Internal linkage (anonymous namespace): each ISA
// translation unit compiles its own copy with its own flags.
#pragma once
#include <cstdint>

#include "f32_maxpool.h"

namespace lowbit {
namespace {

constexpr int kMaxPoolTaps = 64;  // taps listed per pass; wider windows take several passes

// The in-bounds taps of output pixel (n, oy, ox), in (ky, kx) order from window position *next
// on, at most kMaxPoolTaps of them: pointers to each tap's channel 0. Moves *next past the
// positions looked at; returns how many taps it listed.
inline int MaxPoolTaps(const F32MaxPoolArgs& a, int64_t n, int64_t oy, int64_t ox, int64_t* next,
                       const float** taps) {
  const int64_t total = a.kh * a.kw;
  int nt = 0;
  int64_t t = *next;
  for (; t < total && nt < kMaxPoolTaps; ++t) {
    const int64_t ky = t / a.kw, kx = t % a.kw;
    const int64_t iy = oy * a.sh - a.pt + ky * a.dh, ix = ox * a.sw - a.pl + kx * a.dw;
    if (iy >= 0 && iy < a.H && ix >= 0 && ix < a.W) taps[nt++] = a.x + ((n * a.H + iy) * a.W + ix) * a.C;
  }
  *next = t;
  return nt;
}

}  // namespace
}  // namespace lowbit
