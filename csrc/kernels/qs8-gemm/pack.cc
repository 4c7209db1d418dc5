// Packs symmetric int8 weights into "qs8-n16k4" (see qs8_gemm.h). Baseline C++.
#include <cstring>

#include "qs8_gemm.h"

namespace lowbit {

void qs8_gemm_pack(int64_t K, int64_t N, const int8_t* Wq, const float* scales, uint8_t* out) {
  const int64_t P = (N + 15) / 16, Kp = qs8_kp(K);
  std::memset(out, 0, size_t(qs8_packed_bytes(K, N)));
  int8_t* w = reinterpret_cast<int8_t*>(out);
  float* sc = reinterpret_cast<float*>(out + P * Kp * 16);
  int32_t* cs = reinterpret_cast<int32_t*>(out + P * Kp * 16 + P * 16 * 4);
  for (int64_t n = 0; n < N; ++n) {
    const int64_t p = n / 16, j = n % 16;
    int32_t s = 0;
    for (int64_t k = 0; k < K; ++k) {
      const int8_t v = Wq[k * N + n];
      w[(p * Kp / 4 + k / 4) * 64 + j * 4 + k % 4] = v;
      s += v;
    }
    sc[n] = scales[n];
    cs[n] = s;
  }
}

}  // namespace lowbit
