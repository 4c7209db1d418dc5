// AVX-512 activation quantizer with the outlier split (definition in qs8_quant.h; same bits as
// the reference). Compile with: -mavx512f -mavx512bw -mavx512dq -mavx512vl
//
// One outlier per row (convert's default) in two passes over the row: the largest |x| (and its
// first index) with the second largest, per lane, in four independent sets of 16 lanes; then the
// row quantized without it. More outliers per row take the AVX2 kernel (same bits).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include "kernels/common/avx512.h"

#include "qs8_quant.h"

namespace lowbit {
namespace avx512 {
namespace {

inline __m512 Abs(__m512 v) { return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x7FFFFFFF))); }

inline __mmask16 Mask(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}

// Per lane: the largest |x| seen, the first index holding it, and the second largest (ties
// count: a second lane value equal to the largest is the rest's maximum).
struct Top2Lanes {
  __m512 m1 = _mm512_setzero_ps(), m2 = _mm512_setzero_ps();
  __m512i i1 = _mm512_set1_epi32(-1);
  void add(__m512 v, __m512i lane) {
    v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), v);  // NaN -> 0: never taken
    const __mmask16 gt1 = _mm512_cmp_ps_mask(v, m1, _CMP_GT_OQ);       // strictly: a tie keeps the first index
    m2 = _mm512_max_ps(m2, _mm512_min_ps(m1, v));
    m1 = _mm512_max_ps(m1, v);
    i1 = _mm512_mask_mov_epi32(i1, gt1, lane);
  }
};

// The row's largest |x| (lowest index among equals) into idx/val; returns the max |x| of the rest
// (0 with idx left at -1 when the row has no nonzero value).
float Top1(const float* x, int64_t K, int32_t* idx, float* val) {
  Top2Lanes t0, t1, t2, t3;
  __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i sixteen = _mm512_set1_epi32(16);
  int64_t k = 0;
  for (; k + 64 <= K; k += 64) {
    const __m512i l1 = _mm512_add_epi32(lane, sixteen), l2 = _mm512_add_epi32(l1, sixteen), l3 = _mm512_add_epi32(l2, sixteen);
    t0.add(Abs(_mm512_loadu_ps(x + k)), lane);
    t1.add(Abs(_mm512_loadu_ps(x + k + 16)), l1);
    t2.add(Abs(_mm512_loadu_ps(x + k + 32)), l2);
    t3.add(Abs(_mm512_loadu_ps(x + k + 48)), l3);
    lane = _mm512_add_epi32(l3, sixteen);
  }
  for (; k < K; k += 16) {
    t0.add(Abs(_mm512_maskz_loadu_ps(Mask(K - k), x + k)), lane);
    lane = _mm512_add_epi32(lane, sixteen);
  }
  const float top = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(t0.m1, t1.m1), _mm512_max_ps(t2.m1, t3.m1)));
  if (!(top > 0.0f)) return 0.0f;
  const __m512 vt = _mm512_set1_ps(top);
  const __m512i big = _mm512_set1_epi32(0x7FFFFFFF);
  auto cand = [&](const Top2Lanes& t) {  // the lane's first index if it holds the max, else "infinity"
    return _mm512_mask_mov_epi32(big, _mm512_cmp_ps_mask(t.m1, vt, _CMP_EQ_OQ), t.i1);
  };
  alignas(64) int32_t c[16];  // (SIMDe has no _mm512_reduce_min_epi32 for the emulated test build)
  _mm512_store_si512(c, _mm512_min_epi32(_mm512_min_epi32(cand(t0), cand(t1)), _mm512_min_epi32(cand(t2), cand(t3))));
  int32_t win = c[0];
  for (int i = 1; i < 16; ++i) win = c[i] < win ? c[i] : win;
  const __m512i vw = _mm512_set1_epi32(win);
  auto others = [&](const Top2Lanes& t) {  // the winner's lane contributes its second, every other its first
    return _mm512_mask_mov_ps(t.m1, _mm512_cmpeq_epi32_mask(t.i1, vw), t.m2);
  };
  const float rest =
      _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(others(t0), others(t1)), _mm512_max_ps(others(t2), others(t3))));
  idx[0] = win;
  val[0] = x[win];
  return rest;
}

// Row r quantized with max |x| = amax, the skipped index (if any) stored as 0, the padding, the
// group sums: the steps of qs8_quant__avx512 plus the skip.
void QuantRow(const Qs8QuantArgs& a, int64_t r, float amax, int32_t skip) {
  const float* x = a.x + r * a.ldx;
  int8_t* q = a.q + r * a.ldq;
  a.scale[r] = amax / 127.0f;
  const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
  const __m512 vinv = _mm512_set1_ps(inv), lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
  const __m128i off = _mm_set1_epi8(a.bias128 ? char(0x80) : 0);
  const int8_t offb = a.bias128 ? int8_t(-128) : int8_t(0);
  for (int64_t k = 0; k < a.K; k += 16) {
    const __mmask16 mk = Mask(a.K - k);
    __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, x + k), vinv);
    v = _mm512_max_ps(v, lo);  // (v > -127) ? v : -127, NaN -> -127
    v = _mm512_min_ps(v, hi);  // (v < 127) ? v : 127
    _mm_mask_storeu_epi8(q + k, mk, _mm_xor_si128(_mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(v)), off));
  }
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
