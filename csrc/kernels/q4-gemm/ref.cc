// Scalar reference 4-bit GEMM: the definition every ISA kernel reproduces (see q4_gemm.h).
#include <cmath>

#include "kernels/common/f16.h"
#include "q4_gemm.h"

namespace lowbit {
namespace ref {
namespace {

// The 4-bit code of (k, column 16p + j) in the packed codes (q4_gemm.h).
int32_t Code(const uint8_t* codes, int64_t Kg, int64_t p, int64_t j, int64_t k) {
  const uint8_t b = codes[(p * Kg / 8 + k / 8) * 64 + j * 4 + (k % 4)];
  return (k % 8) < 4 ? (b & 0x0F) : (b >> 4);
}

}  // namespace

void q4_gemm_1x16__scalar(const Q4GemmArgs& a, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  const Q4Layout& l = a.lay;
  const int64_t P = (a.N + 15) / 16, Kg = q4_kg(a.K, l.group), NG = Kg / l.group;
  const Q4Parts parts = q4_parts(a.K, a.N, l);
  const int8_t* T = reinterpret_cast<const int8_t*>(a.W);
  const uint8_t* codes = a.W + parts.codes;
  const uint16_t* sc = reinterpret_cast<const uint16_t*>(a.W + parts.scales);
  const uint8_t* zp = a.W + parts.zeros;
  (void)P;
  for (int64_t m = m0; m < m1; ++m) {
    const int8_t* x = a.A + m * a.lda;
    for (int64_t n = n0; n < n1; ++n) {
      const int64_t p = n / 16, j = n % 16;
      float f = 0.0f;
      for (int64_t g = 0; g < NG; ++g) {
        int32_t z = 0;
        if (l.kind == Q4Kind::kAffine) z = l.asym ? zp[(p * NG + g) * 16 + j] : 8;
        int32_t d = 0;
        for (int64_t k = g * l.group; k < (g + 1) * l.group; ++k) {
          const int32_t u = Code(codes, Kg, p, j, k);
          const int32_t v = l.kind == Q4Kind::kAffine ? u - z : int32_t(T[u]);
          d += int32_t(x[k]) * v;
        }
        f = std::fma(float(d), f16_to_f32(sc[(p * NG + g) * 16 + j]), f);
      }
      float y = f * a.a_scale[m];
      if (a.bias != nullptr) y = y + a.bias[n];
      if (a.act == Activation::kRelu) y = (0.0f > y) ? 0.0f : y;
      a.C[m * a.ldc + n] = y;
    }
  }
}

void q4_gemm_lattice_1x16__scalar(const Q4GemmArgs& a, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  const Q4Layout& l = a.lay;
  const int64_t Kg = q4_kg(a.K, l.group), NG = Kg / l.group;
  const Q4Parts parts = q4_parts(a.K, a.N, l);
  const uint8_t* codes = a.W + parts.codes;
  const uint8_t* zp = a.W + parts.zeros;
  const int8_t* T = reinterpret_cast<const int8_t*>(a.W);
  const bool table = l.kind == Q4Kind::kTable;
  for (int64_t m = m0; m < m1; ++m) {
    const int8_t* x = a.A + m * a.lda;
    for (int64_t n = n0; n < n1; ++n) {
      const int64_t p = n / 16, j = n % 16;
      int32_t d = 0;
      for (int64_t g = 0; g < NG; ++g) {
        const int32_t z = table ? 0 : l.asym ? zp[(p * NG + g) * 16 + j] : 8;
        const int32_t mul = a.lat_mul[(p * NG + g) * 16 + j], S = a.lat_shift;
        for (int64_t k = g * l.group; k < (g + 1) * l.group; ++k) {
          const int32_t u = Code(codes, Kg, p, j, k);
          const int32_t v = table ? int32_t(T[u]) : u - z;
          // rounded: (v * mul + 2^(S-1)) >> S as a floor division (the sum is > -2^15: offset by 2^15)
          const int32_t w8 = S == 0 ? mul * v : (v * mul + (1 << (S - 1)) + 32768) / (1 << S) - (32768 >> S);
          d += int32_t(x[k]) * w8;
        }
      }
      float y = float(d) * (a.a_scale[m] * a.lat_step[n]);
      if (a.bias != nullptr) y = y + a.bias[n];
      if (a.act == Activation::kRelu) y = (0.0f > y) ? 0.0f : y;
      a.C[m * a.ldc + n] = y;
    }
  }
}

}  // namespace ref
}  // namespace lowbit
