// AVX-512 activation quantizer with the outlier split (definition in qs8_quant.h; same bits as
// the reference). Compile with: -mavx512f -mavx512bw -mavx512dq -mavx512vl
//
// One outlier per row (convert's default): a pass over the row keeps the largest and second
// largest |x| per lane, in four independent sets of 16 lanes; a scan up to the first position
// holding the largest gives its index; then the row is quantized without it, 64 codes per store.
// More outliers per row take the AVX2 kernel (same bits).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include "kernels/common/avx512.h"

#include "avx512_codes.h"
#include "qs8_quant.h"

namespace lowbit {
namespace avx512 {
namespace {

inline __m512 Abs(__m512 v) { return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x7FFFFFFF))); }

inline __mmask16 Mask(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}

// Per lane: the largest |x| seen and the second largest (ties count: a second lane value equal
// to the largest is the rest's maximum). NaN is never taken, by operand order alone: min_ps(m1, v)
// returns v when v is NaN and max_ps(t, m) returns m when t is NaN, so a NaN leaves m1 and m2 as a
// 0 would (the reference reads NaN as 0, which is never taken).
struct Top2Lanes {
  __m512 m1 = _mm512_setzero_ps(), m2 = _mm512_setzero_ps();
  void add(__m512 v) {
    m2 = _mm512_max_ps(_mm512_min_ps(m1, v), m2);
    m1 = _mm512_max_ps(v, m1);
  }
};

// The row's largest |x| (lowest index among equals) into idx/val; returns the max |x| of the rest
// (0 with idx left at -1 when the row has no nonzero value). Four sets of 16 lanes take the
// vectors of each 64 values in turn (the last K % 64 values go to set 0); the winner's index
// is then the first position holding the largest value, and the rest is the winner lane's
// second largest with every other lane's largest.
float Top1(const float* x, int64_t K, int32_t* idx, float* val) {
  Top2Lanes t[4];
  int64_t k = 0;
  for (; k + 64 <= K; k += 64) {
    t[0].add(Abs(_mm512_loadu_ps(x + k)));
    t[1].add(Abs(_mm512_loadu_ps(x + k + 16)));
    t[2].add(Abs(_mm512_loadu_ps(x + k + 32)));
    t[3].add(Abs(_mm512_loadu_ps(x + k + 48)));
  }
  const int64_t k64 = k;
  for (; k < K; k += 16) t[0].add(Abs(_mm512_maskz_loadu_ps(Mask(K - k), x + k)));
  const float top = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(t[0].m1, t[1].m1), _mm512_max_ps(t[2].m1, t[3].m1)));
  if (!(top > 0.0f)) return 0.0f;
  const __m512 vt = _mm512_set1_ps(top);
  int32_t win = -1;
  for (k = 0; k < K; k += 16) {
    const uint32_t hit = _mm512_cmp_ps_mask(Abs(_mm512_maskz_loadu_ps(Mask(K - k), x + k)), vt, _CMP_EQ_OQ);
    if (hit) {
      win = static_cast<int32_t>(k + __builtin_ctz(hit));
      break;
    }
  }
  const int set = win < k64 ? static_cast<int>((win / 16) % 4) : 0;
  const __mmask16 lane = static_cast<__mmask16>(1u << (win % 16));
  __m512 rest = _mm512_setzero_ps();
  for (int s = 0; s < 4; ++s)
    rest = _mm512_max_ps(rest, s == set ? _mm512_mask_mov_ps(t[s].m1, lane, t[s].m2) : t[s].m1);
  idx[0] = win;
  val[0] = x[win];
  return _mm512_reduce_max_ps(rest);
}

// Row r quantized with max |x| = amax, the skipped index (if any) stored as 0, the padding, the
// group sums: the steps of qs8_quant__avx512 plus the skip.
void QuantRow(const Qs8QuantArgs& a, int64_t r, float amax, int32_t skip) {
  const float* x = a.x + r * a.ldx;
  int8_t* q = a.q + r * a.ldq;
  a.scale[r] = amax / 127.0f;
  const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
  const __m128i off = _mm_set1_epi8(a.bias128 ? char(0x80) : 0);
  const int8_t offb = a.bias128 ? int8_t(-128) : int8_t(0);
  CodesOfRow(x, q, a.K, inv, a.bias128);
  if (skip >= 0) q[skip] = offb;
  for (int64_t k = a.K; k < a.Kp; ++k) q[k] = offb;
  if (a.gsum != nullptr) {
    int32_t* gs = a.gsum + r * a.ngroups;
    for (int64_t g = 0; g < a.ngroups; ++g) {
      const int64_t k0 = g * a.group, k1 = (g + 1) * a.group < a.K ? (g + 1) * a.group : a.K;
      __m512i s = _mm512_setzero_si512();
      int64_t kk = k0;
      for (; kk + 16 <= k1; kk += 16)
        s = _mm512_add_epi32(s, _mm512_cvtepi8_epi32(_mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + kk)), off)));
      int32_t t = _mm512_reduce_add_epi32(s);
      for (; kk < k1; ++kk) t += int32_t(int8_t(q[kk] ^ offb));
      gs[g] = t;
    }
  }
}

}  // namespace

void qs8_quant_split__avx512(const Qs8QuantArgs& a, const Qs8SplitOut& o, int64_t r0, int64_t r1) {
  if (o.outliers != 1) return avx2::qs8_quant_split__avx2(a, o, r0, r1);
  for (int64_t r = r0; r < r1; ++r) {
    int32_t* idx = o.idx + r;
    float* val = o.val + r;
    *idx = -1;
    *val = 0.0f;
    const float rest = Top1(a.x + r * a.ldx, a.K, idx, val);
    QuantRow(a, r, rest, *idx);
  }
}

}  // namespace avx512
}  // namespace lowbit
