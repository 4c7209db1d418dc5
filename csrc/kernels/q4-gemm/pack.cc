// Packs 4-bit codes, f16 scales and zero points into the q4 layouts (see q4_gemm.h). Baseline C++.
#include <cstring>

#include "q4_gemm.h"

namespace lowbit {

void q4_gemm_pack(int64_t K, int64_t N, const Q4Layout& l, const uint8_t* U, const uint16_t* S,
                  const uint8_t* Z, const int8_t* T, uint8_t* out) {
  const int64_t P = (N + 15) / 16, Kg = q4_kg(K, l.group), NG = Kg / l.group;
  const Q4Parts parts = q4_parts(K, N, l);
  std::memset(out, 0, size_t(parts.total));
  const bool affine = l.kind == Q4Kind::kAffine;
  if (!affine) std::memcpy(out, T, 16);
  uint8_t* codes = out + parts.codes;
  uint16_t* sc = reinterpret_cast<uint16_t*>(out + parts.scales);
  uint8_t* zp = out + parts.zeros;
  for (int64_t n = 0; n < P * 16; ++n) {
    const int64_t p = n / 16, j = n % 16;
    for (int64_t g = 0; g < NG; ++g) {
      const bool real = n < N;
      const uint8_t z = affine ? (l.asym ? (real ? Z[g * N + n] : 0) : 8) : 0;
      if (real) sc[(p * NG + g) * 16 + j] = S[g * N + n];
      if (affine && l.asym && real) zp[(p * NG + g) * 16 + j] = z;
      for (int64_t k = g * l.group; k < (g + 1) * l.group; ++k) {
        // Padding (k >= K or n >= N) holds the code whose value is 0 where one exists (z for
        // affine); the activations there are 0 anyway, so any code would give the same sums.
        const uint8_t u = (real && k < K) ? uint8_t(U[k * N + n] & 0x0F) : uint8_t(affine ? z & 0x0F : 0);
        uint8_t& b = codes[(p * Kg / 8 + k / 8) * 64 + j * 4 + (k % 4)];
        b = uint8_t((k % 8) < 4 ? ((b & 0xF0) | u) : ((b & 0x0F) | (u << 4)));
      }
    }
  }
}

}  // namespace lowbit
