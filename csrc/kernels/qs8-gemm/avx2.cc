// AVX2 int8 GEMM over "qs8-n16k4" (see qs8_gemm.h). Compile with: -mavx2 -mfma
//
// vpmaddubsw multiplies u8 x s8 and adds pairs into saturating int16. With both operands
// in [-127, 127] the sign trick keeps every pair exact: |a| (u8) x sign(w, a) (s8) gives
// a*w, and a pair sums to at most 2*127*127 = 32258 < 32767. vpmaddwd by ones then widens.
// That is 4 vector ops per 32 MACs (vpsignb, vpmaddubsw, vpmaddwd, vpaddd); on Zen 3 the
// sequence alone sustains ~25 MACs/cycle (measured), the ceiling of any exact int8 AVX2 path.
//
// The blocking is kernels/common/avx2_int8_tiles.h. This cell: tiles of 5 rows x 16 columns
// (10 int32 accumulators + 6 work registers; 3x24, 4x24, 4x16 measured no faster); the row
// buffer holds, per 4-k step, the 4 bytes of a and of |a| of each row, so the inner loop
// broadcasts both from L1 and spends no vpabsb; the small-M streams compute |a| on the fly.
#include "kernels/common/avx2_int8_tiles.h"
#include "qs8_gemm.h"

namespace lowbit {
namespace avx2 {
namespace {

struct SignCell {
  static constexpr int kMR = 5;
  static constexpr int kAB = 8;  // a then |a|, 4 bytes each per row and 4-k step
  struct A {
    __m256i a, aa;  // broadcast a and |a|
  };
  template <int MR>
  static void PackRows32(__m256i v, int8_t* buf, int64_t s, int r) {
    alignas(32) int32_t t[8], u[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(t), v);
    _mm256_store_si256(reinterpret_cast<__m256i*>(u), _mm256_abs_epi8(v));
    for (int i = 0; i < 8; ++i) {
      std::memcpy(buf + (s + i) * 8 * MR + 4 * r, &t[i], 4);
      std::memcpy(buf + (s + i) * 8 * MR + 4 * MR + 4 * r, &u[i], 4);
    }
  }
  static void PackStep(const int8_t* src4, int8_t* dst, int r, int MR) {
    for (int i = 0; i < 4; ++i) {
      const int8_t v = src4[i];
      dst[4 * r + i] = v;
      dst[4 * MR + 4 * r + i] = int8_t(v < 0 ? -v : v);  // never -128
    }
  }
  template <int MR>
  static A Packed(const int8_t* step, int r) {
    return {int8tiles::Bcast4(step + 4 * r), int8tiles::Bcast4(step + 4 * MR + 4 * r)};
  }
  static A Row(const int8_t* a4) {
    const __m256i a = int8tiles::Bcast4(a4);
    return {a, _mm256_abs_epi8(a)};
  }
  static void Dot(__m256i& acc, __m256i w, const A& a, __m256i ones) {
    int8tiles::AddD(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a.aa, _mm256_sign_epi8(w, a.a)), ones));
  }
  static __m256i Corr(const Qs8GemmArgs&, int64_t) { return _mm256_setzero_si256(); }
};

}  // namespace

void qs8_gemm_5x16c4__avx2(const Qs8GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  int8tiles::Gemm<SignCell>(g, m0, m1, n0, n1);
}

}  // namespace avx2
}  // namespace lowbit
