// Scalar reference of qw_axpy (definition in qw_axpy.h).
#include <cmath>

#include "kernels/common/f16.h"
#include "kernels/qs8-gemm/qs8_gemm.h"
#include "qw_axpy.h"

namespace lowbit {
namespace ref {

void qw_axpy__scalar(const QwView& w, int64_t k, float v, int64_t n0, int64_t n1, float* y) {
  const int64_t P = (w.N + 15) / 16;
  if (!w.q4) {
    const int64_t Kp = qs8_kp(w.K);
    const int8_t* codes = reinterpret_cast<const int8_t*>(w.W);
    const float* ws = reinterpret_cast<const float*>(w.W + P * Kp * 16);
    for (int64_t n = n0; n < n1; ++n) {
      const float wt = float(codes[((n >> 4) * (Kp / 4) + k / 4) * 64 + (n & 15) * 4 + (k & 3)]) * ws[n];
      y[n - n0] = std::fma(v, wt, y[n - n0]);
    }
    return;
  }
  const Q4Parts parts = q4_parts(w.K, w.N, w.lay);
  const int64_t G = w.lay.group, Kg = q4_kg(w.K, G), NG = Kg / G, g = k / G;
  const uint8_t* codes = w.W + parts.codes;
  const uint16_t* sc = reinterpret_cast<const uint16_t*>(w.W + parts.scales);
  const uint8_t* zp = w.W + parts.zeros;
  const int8_t* table = reinterpret_cast<const int8_t*>(w.W + parts.table);
  for (int64_t n = n0; n < n1; ++n) {
    const int64_t p = n >> 4, j = n & 15;
    const uint8_t b = codes[(p * (Kg / 8) + k / 8) * 64 + j * 4 + (k & 3)];
    const int u = (k & 7) < 4 ? (b & 15) : (b >> 4);
    int c;
    if (w.lay.kind == Q4Kind::kTable) c = table[u];
    else c = u - (w.lay.asym ? int(zp[(p * NG + g) * 16 + j]) : 8);
    const float wt = float(c) * f16_to_f32(sc[(p * NG + g) * 16 + j]);
    y[n - n0] = std::fma(v, wt, y[n - n0]);
  }
}

}  // namespace ref
}  // namespace lowbit
