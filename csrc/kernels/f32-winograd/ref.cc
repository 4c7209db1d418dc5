// Scalar reference of the Winograd F(2x2, 3x3) transforms (f32_winograd.h): a loop over the
// channels of the one-channel definitions. Compiled at -O3 (LOWBIT_VECTORIZED_SOURCES), so the
// scalar and NEON tables get the compiler's baseline vectorization of it.
#include "common.h"
#include "f32_winograd.h"

namespace lowbit {

void f32_wino_input_f2k3__scalar(const float* const d[16], float* const v[16], int64_t C) {
#pragma GCC ivdep  // the tile's pixels and the V rows never overlap
  for (int64_t c = 0; c < C; ++c) WinoInputOne(d, v, c);
}

void f32_wino_output_f2k3__scalar(const F32WinoOutputArgs& a) {
  for (int64_t c = 0; c < a.C; ++c) WinoOutputOne(a, c);
}

}  // namespace lowbit
