// Scalar pieces shared by the ISA kernels of this family. Everything here has
// internal linkage (anonymous namespace), so each ISA translation unit gets its
// own copy compiled with its own flags and the linker can never merge an
// AVX-512 copy into code that runs on an older CPU.
#pragma once
#include <cstdint>

#include "f32_gemm.h"

namespace lowbit {
namespace {

// True when the rows of A (stride ld floats) would crowd one L1 set (8-way, 4 KB period).
inline bool f32_gemm_rows_alias(int64_t ld, int64_t rows) {
  int cnt[64] = {0};
  for (int64_t r = 0; r < rows; ++r)
    if (++cnt[((r * ld * 4) >> 6) & 63] > 4) return true;
  return false;
}

// Address of A[m, 0] (the start of row m's first segment) under the implicit-A layout (f32_gemm.h).
inline const float* f32_gemm_a_row(const F32GemmArgs& a, int64_t m) {
  if (a.kseg > 0 && a.mrow > 0) return a.A + (m / a.mrow) * a.row_stride + (m % a.mrow) * a.lda;
  return a.A + m * a.lda;
}
// Offset of column k inside a row (segment start + position in it).
inline int64_t f32_gemm_a_col(const F32GemmArgs& a, int64_t k) {
  return a.kseg > 0 ? (k / a.kseg) * a.seg_stride + k % a.kseg : k;
}


// GELU epilogue, evaluated in double: every ISA runs the same operation sequence
// over these constants, so all give the same bits.
// erfc(u) = t * exp(P(s) - u^2), t = 2/(2+u), s = kGeluS1*t + kGeluS0; P is a degree-12
// fit (|err| < 3e-10 on u in [0, 10.5]), highest coefficient first.
constexpr double kGeluErfcPoly[13] = {
    5.833123761120719e-06,  -5.693706182049543e-06, -4.151840884299431e-05, 7.616710832354659e-05,
    0.00015220182689174716, -0.0005885057158371344, -0.00026681377194794645, 0.0038775503047595154,
    -0.001230767429959883,  -0.030147704097097043,  0.01671606077667363,     0.5746099758493842,
    -0.5631567855932652};
constexpr double kGeluS1 = 2.380952380952381, kGeluS0 = -1.380952380952381;
// exp(r) on |r| <= 0.347: Taylor degree 8 (error < 2e-10), highest coefficient first.
constexpr double kExpTaylor[9] = {1.0 / 40320.0, 1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0,
                                  1.0 / 6.0,     0.5,          1.0,         1.0};
constexpr double kLn2Hi = 6.93147180369123816490e-01, kLn2Lo = 1.90821492927058770002e-10;

}  // namespace
}  // namespace lowbit
