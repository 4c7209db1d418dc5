// AVX2 int8 GEMM over "qs7-n16k4" (7-bit weights; see qs7_gemm.h). Compile with: -mavx2 -mfma
//
// The cell: vpmaddubsw(a + 128 as u8, w in [-64, 64]) never saturates (|pair| <= 32640),
// vpmaddwd by ones widens, vpaddd accumulates: 3 vector ops per 32 MACs. The epilogue takes
// 128 * colsum[n] back out of the int32 sums, so results equal the qs8 reference bit for bit.
//
// The blocking is kernels/common/avx2_int8_tiles.h (that of qs8_gemm_5x16c4__avx2). With no
// |a| to keep, the row buffer holds 4 bytes per row per 4-k step and the tile grows to 6 rows
// x 16 columns (12 accumulators, one broadcast, two weight vectors, one product).
#include "kernels/common/avx2_int8_tiles.h"
#include "qs7_gemm.h"

namespace lowbit {
namespace avx2 {
namespace {

struct BiasedCell {
  static constexpr int kMR = 6;
  static constexpr int kAB = 4;  // the biased bytes of each row per 4-k step
  struct A {
    __m256i a;  // broadcast u8 activations
  };
  template <int MR>
  static void PackRows32(__m256i v, int8_t* buf, int64_t s, int r) {
    alignas(32) int32_t t[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(t), v);
    for (int i = 0; i < 8; ++i) std::memcpy(buf + (s + i) * 4 * MR + 4 * r, &t[i], 4);
  }
  static void PackStep(const int8_t* src4, int8_t* dst, int r, int) { std::memcpy(dst + 4 * r, src4, 4); }
  template <int MR>
  static A Packed(const int8_t* step, int r) {
    return {int8tiles::Bcast4(step + 4 * r)};
  }
  static A Row(const int8_t* a4) { return {int8tiles::Bcast4(a4)}; }
  static void Dot(__m256i& acc, __m256i w, const A& a, __m256i ones) {
    int8tiles::AddD(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a.a, w), ones));
  }
  static __m256i Corr(const Qs8GemmArgs& g, int64_t n) { return _mm256_slli_epi32(int8tiles::Colsum8(g, n), 7); }
};

}  // namespace

void qs7_gemm_6x16c4__avx2(const Qs8GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  int8tiles::Gemm<BiasedCell>(g, m0, m1, n0, n1);
}

}  // namespace avx2
}  // namespace lowbit
