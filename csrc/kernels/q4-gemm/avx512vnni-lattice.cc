// AVX-512 VNNI 4-bit GEMM in the lattice form (see q4_gemm.h): affine codes whose group scales
// are integer multiples of one step per column, s[n,g] = mul[n,g] * step[n], or any codes
// requantized per column, w8 = (v * mul + 2^(S-1)) >> S.
// Compile with: -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512vnni
//
// The weights are int8 values w8, so blocks of 4 panels are decoded once per
// call into the "qs8-n16k4" layout (the codes' B layout is that layout: 64 bytes per k-quad),
// with step as the column scale and the column sums of w8, and the int8 VNNI GEMM runs them:
// its activations are biased (u8 = q + 128; the table sets q4_gemm_lattice_biased), the column
// sums take 128 * sum w8 back out, and its epilogue, y = float(acc - 128 * colsum) *
// (a_scale * w_scale) + bias, is the lattice form's definition with w_scale = step.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include "kernels/common/avx512.h"

#include <cstring>
#include <new>

#include "kernels/qs8-gemm/qs8_gemm.h"
#include "lattice.h"
#include "q4_gemm.h"

namespace lowbit {
namespace avx512 {

void q4_gemm_lattice_8x32c4__avx512vnni(const Q4GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  if (m1 <= m0 || n1 <= n0) return;
  constexpr int64_t kPB = 4;  // panels per block: the int8 kernel's 64-column blocks
  const int64_t G = g.lay.group, Kg = q4_kg(g.K, G), NG = Kg / G, Kp = qs8_kp(g.K), ps = Kp * 16;
  const Q4Parts parts = q4_parts(g.K, g.N, g.lay);
  // a block's qs8-n16k4 blob: kPB panels of Kp k, then kPB * 16 scales and column sums; the
  // decode writes whole groups (up to Kg + 32 k) into a panel, so a panel's excess lands in the
  // next one (decoded after it) or, for the last, in the slack before the scales
  const int64_t slack = (Kg + 64 - Kp) * 16;
  const size_t bytes = size_t(kPB * ps + slack + kPB * 16 * 8);
  uint8_t* blob = static_cast<uint8_t*>(::operator new[](bytes, std::align_val_t(64)));
  const __m512i ones = _mm512_set1_epi8(1);
  for (int64_t nb = n0; nb < n1; nb += kPB * 16) {
    const int64_t nc = n1 - nb < kPB * 16 ? n1 - nb : kPB * 16, np = (nc + 15) / 16;
    float* wscale = reinterpret_cast<float*>(blob + np * ps);
    int32_t* colsum = reinterpret_cast<int32_t*>(blob + np * ps + np * 16 * 4);
    __m512i cs[kPB];
    for (int64_t q = 0; q < np; ++q) {
      const int64_t p = nb / 16 + q;
      int8_t* out = reinterpret_cast<int8_t*>(blob + q * ps);
      LatticeDecodePanel(g.lay, g.W, g.W + parts.codes + p * Kg * 8, g.W + parts.zeros + p * NG * 16, g.lat_mul + p * NG * 16,
                         g.lat_shift, 0, Kg, out);
      // column sums over the Kp k the int8 kernel reads (w8 = 0 past K)
      __m512i s = _mm512_setzero_si512();
      for (int64_t kq = 0; kq < Kp / 4; ++kq) Dpbusd(s, ones, _mm512_loadu_si512(out + kq * 64));
      cs[q] = s;
    }
    for (int64_t q = 0; q < np; ++q) {  // after every decode: the last one's excess ran past its panel
      _mm512_storeu_si512(colsum + 16 * q, cs[q]);
      _mm512_storeu_ps(wscale + 16 * q, _mm512_loadu_ps(g.lat_step + nb + 16 * q));
    }
    Qs8GemmArgs a8{g.M, nc, g.K, g.A, g.lda, g.a_scale, blob, g.bias ? g.bias + nb : nullptr, g.C + nb, g.ldc, g.act};
    qs8_gemm_8x32c4__avx512vnni(a8, m0, m1, 0, nc);
  }
  ::operator delete[](blob, std::align_val_t(64));
}

}  // namespace avx512
}  // namespace lowbit
