// One channel of each Winograd transform (f32_winograd.h), in the reference's order: ref.cc
// loops over them, and the AVX2 kernels' remainder loops use them, so a tail gives the same
// bits as a full vector. Internal linkage: each ISA translation unit gets its own copy (a
// weak inline symbol compiled for AVX2 could be linked into baseline code).
#pragma once
#include <cstdint>

#include "f32_winograd.h"

namespace lowbit {
namespace {

inline void WinoInputOne(const float* const d[16], float* const v[16], int64_t c) {
  float t[4][4];
  for (int j = 0; j < 4; ++j) {
    t[0][j] = d[j][c] - d[8 + j][c];
    t[1][j] = d[4 + j][c] + d[8 + j][c];
    t[2][j] = d[8 + j][c] - d[4 + j][c];
    t[3][j] = d[4 + j][c] - d[12 + j][c];
  }
  for (int i = 0; i < 4; ++i) {
    v[4 * i + 0][c] = t[i][0] - t[i][2];
    v[4 * i + 1][c] = t[i][1] + t[i][2];
    v[4 * i + 2][c] = t[i][2] - t[i][1];
    v[4 * i + 3][c] = t[i][1] - t[i][3];
  }
}

inline float WinoRelu(float x) { return x > 0.f ? x : (x == x ? 0.f : x); }

inline void WinoOutputOne(const F32WinoOutputArgs& a, int64_t c) {
  const float* const* m = a.m;
  float t[2][4];
  for (int j = 0; j < 4; ++j) {
    t[0][j] = m[j][c] + m[4 + j][c] + m[8 + j][c];
    t[1][j] = m[4 + j][c] - m[8 + j][c] - m[12 + j][c];
  }
  const float b = a.bias ? a.bias[c] : 0.f;
  for (int i = 0; i < 2; ++i) {
    const float o[2] = {t[i][0] + t[i][1] + t[i][2] + b, t[i][1] - t[i][2] - t[i][3] + b};
    for (int j = 0; j < 2; ++j) {
      float* y = a.y[2 * i + j];
      if (!y) continue;
      float r = o[j];
      if (a.res[2 * i + j]) r += a.res[2 * i + j][c];
      y[c] = a.relu ? WinoRelu(r) : r;
    }
  }
}

}  // namespace
}  // namespace lowbit
