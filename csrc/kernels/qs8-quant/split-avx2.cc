// AVX2 activation quantizer with the outlier split (definition in qs8_quant.h; same bits as
// the reference). Compile with: -mavx2 -mfma -mf16c
#include <immintrin.h>

#include <cmath>

#include "qs8_quant.h"

namespace lowbit {
namespace avx2 {
namespace {

inline __m256 Abs(__m256 v) { return _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF))); }

// Lanes [0, n) of a partial last vector: maskload reads nothing past the row.
inline __m256i TailMask(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

inline float HMax(__m256 v) {  // lanes hold no NaN: order-free
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

// Lanes of the vector at [k0, k0 + 8) that hold a chosen index (all ones there).
inline __m256i ChosenLanes(int64_t k0, const int32_t* idx, int64_t n) {
  __m256i m = _mm256_setzero_si256();
  const __m256i lane = _mm256_add_epi32(_mm256_set1_epi32(int(k0)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  for (int64_t j = 0; j < n; ++j) m = _mm256_or_si256(m, _mm256_cmpeq_epi32(lane, _mm256_set1_epi32(idx[j])));
  return m;
}

// max |x[k]| over k not in idx[0..n); max_ps(v, m) returns m when v is NaN: NaN ignored.
float MaxRest(const float* x, int64_t K, const int32_t* idx, int64_t n) {
  __m256 m = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 v = Abs(_mm256_loadu_ps(x + k));
    if (n > 0) v = _mm256_andnot_ps(_mm256_castsi256_ps(ChosenLanes(k, idx, n)), v);
    m = _mm256_max_ps(v, m);
  }
  if (k < K) {
    __m256 v = Abs(_mm256_maskload_ps(x + k, TailMask(K - k)));
    if (n > 0) v = _mm256_andnot_ps(_mm256_castsi256_ps(ChosenLanes(k, idx, n)), v);
    m = _mm256_max_ps(v, m);
  }
  return HMax(m);
}

// The lowest k not in idx[0..n) with |x[k]| == m (m > 0: some k has it).
int64_t FindFirst(const float* x, int64_t K, float m, const int32_t* idx, int64_t n) {
  const __m256 vm = _mm256_set1_ps(m);
  for (int64_t k = 0; k < K; k += 8) {
    const __m256 v = Abs(K - k >= 8 ? _mm256_loadu_ps(x + k) : _mm256_maskload_ps(x + k, TailMask(K - k)));
    int bits = _mm256_movemask_ps(_mm256_cmp_ps(v, vm, _CMP_EQ_OQ));
    if (n > 0) bits &= ~_mm256_movemask_ps(_mm256_castsi256_ps(ChosenLanes(k, idx, n)));
    if (K - k < 8) bits &= (1 << (K - k)) - 1;
    if (bits) return k + __builtin_ctz(unsigned(bits));
  }
  return -1;  // not reached
}

void QuantRow(const Qs8QuantArgs& a, int64_t r, float amax, const int32_t* skip, int64_t nskip) {
  const float* x = a.x + r * a.ldx;
  int8_t* q = a.q + r * a.ldq;
  a.scale[r] = amax / 127.0f;
  const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
  const __m256 vinv = _mm256_set1_ps(inv), lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
  const int8_t off = a.bias128 ? int8_t(-128) : int8_t(0);
  const __m128i voff = _mm_set1_epi8(off);
  int64_t k = 0;
  for (; k + 16 <= a.K; k += 16) {
    __m256 v0 = _mm256_mul_ps(_mm256_loadu_ps(x + k), vinv);
    __m256 v1 = _mm256_mul_ps(_mm256_loadu_ps(x + k + 8), vinv);
    v0 = _mm256_min_ps(_mm256_max_ps(v0, lo), hi);  // max(v, lo): (v > -127) ? v : -127, NaN -> -127
    v1 = _mm256_min_ps(_mm256_max_ps(v1, lo), hi);
    const __m256i i0 = _mm256_cvtps_epi32(v0);  // nearest-even, as nearbyint in the default mode
    const __m256i i1 = _mm256_cvtps_epi32(v1);
    const __m128i w0 = _mm_packs_epi32(_mm256_castsi256_si128(i0), _mm256_extracti128_si256(i0, 1));
    const __m128i w1 = _mm_packs_epi32(_mm256_castsi256_si128(i1), _mm256_extracti128_si256(i1, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + k), _mm_xor_si128(_mm_packs_epi16(w0, w1), voff));
  }
  for (; k < a.K; ++k) {
    float v = x[k] * inv;
    v = v > -127.0f ? v : -127.0f;
    v = v < 127.0f ? v : 127.0f;
    q[k] = int8_t(int(std::nearbyint(v)) ^ off);
  }
  for (int64_t j = 0; j < nskip; ++j)
    if (skip[j] >= 0) q[skip[j]] = off;
  for (k = a.K; k < a.Kp; ++k) q[k] = off;
  if (a.gsum != nullptr) {
    int32_t* gs = a.gsum + r * a.ngroups;
    for (int64_t g = 0; g < a.ngroups; ++g) {
      const int64_t k0 = g * a.group, k1 = (g + 1) * a.group < a.K ? (g + 1) * a.group : a.K;
      __m256i s = _mm256_setzero_si256();
      int64_t kk = k0;
      for (; kk + 8 <= k1; kk += 8) {
        const __m128i b = _mm_xor_si128(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + kk)), voff);
        s = _mm256_add_epi32(s, _mm256_cvtepi8_epi32(b));
      }
      __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
      t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4E));
      t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xB1));
      int32_t sum = _mm_cvtsi128_si32(t);
      for (; kk < k1; ++kk) sum += int32_t(int8_t(q[kk] ^ off));
      gs[g] = sum;
    }
  }
}

// One pass for the common case of one outlier: per lane the largest |x| (and its first index)
// and the second largest, in four independent sets of lanes (32 "lanes": no loop-carried
// blend chain); then the winner is the lowest index holding the overall maximum, and the
// rest's maximum is the larger of its lane's second and every other lane's largest.
// Returns amax of the rest and sets idx/val (idx stays -1 when the row has no nonzero value).
struct Top2Lanes {
  __m256 m1 = _mm256_setzero_ps(), m2 = _mm256_setzero_ps();
  __m256i i1 = _mm256_set1_epi32(-1);
  void add(__m256 v, __m256i lane) {
    v = _mm256_and_ps(v, _mm256_cmp_ps(v, v, _CMP_ORD_Q));  // NaN -> 0: never taken, raises nothing
    const __m256 gt1 = _mm256_cmp_ps(v, m1, _CMP_GT_OQ);    // strictly: the first index of a tie stays
    m2 = _mm256_max_ps(m2, _mm256_min_ps(m1, v));           // a max/min network: one blend only (the index)
    m1 = _mm256_max_ps(m1, v);
    i1 = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(i1), _mm256_castsi256_ps(lane), gt1));
  }
};

float Top1(const float* x, int64_t K, int32_t* idx, float* val) {
  Top2Lanes t0, t1, t2, t3;  // four named sets: kept in registers (an array of them was not)
  __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i eight = _mm256_set1_epi32(8);
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    const __m256i l1 = _mm256_add_epi32(lane, eight), l2 = _mm256_add_epi32(l1, eight), l3 = _mm256_add_epi32(l2, eight);
    t0.add(Abs(_mm256_loadu_ps(x + k)), lane);
    t1.add(Abs(_mm256_loadu_ps(x + k + 8)), l1);
    t2.add(Abs(_mm256_loadu_ps(x + k + 16)), l2);
    t3.add(Abs(_mm256_loadu_ps(x + k + 24)), l3);
    lane = _mm256_add_epi32(l3, eight);
  }
  for (; k < K; k += 8) {
    t0.add(Abs(K - k >= 8 ? _mm256_loadu_ps(x + k) : _mm256_maskload_ps(x + k, TailMask(K - k))), lane);
    lane = _mm256_add_epi32(lane, eight);
  }
  // the reduction, vectorized: overall max, lowest index holding it, then the max of the rest
  const __m256 top4 = _mm256_max_ps(_mm256_max_ps(t0.m1, t1.m1), _mm256_max_ps(t2.m1, t3.m1));
  const float top = HMax(top4);
  if (!(top > 0.0f)) return 0.0f;
  const __m256 vt = _mm256_set1_ps(top);
  const __m256i big = _mm256_set1_epi32(0x7FFFFFFF);
  auto cand = [&](const Top2Lanes& t) {  // the lane's first index if it holds the max, else "infinity"
    return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(big), _mm256_castsi256_ps(t.i1),
                                                _mm256_cmp_ps(t.m1, vt, _CMP_EQ_OQ)));
  };
  __m256i c = _mm256_min_epi32(_mm256_min_epi32(cand(t0), cand(t1)), _mm256_min_epi32(cand(t2), cand(t3)));
  __m128i c4 = _mm_min_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
  c4 = _mm_min_epi32(c4, _mm_shuffle_epi32(c4, 0x4E));
  c4 = _mm_min_epi32(c4, _mm_shuffle_epi32(c4, 0xB1));
  const int32_t win = _mm_cvtsi128_si32(c4);
  const __m256i vw = _mm256_set1_epi32(win);
  auto others = [&](const Top2Lanes& t) {  // the winner's lane contributes its second, every other its first
    return _mm256_blendv_ps(t.m1, t.m2, _mm256_castsi256_ps(_mm256_cmpeq_epi32(t.i1, vw)));
  };
  const float rest = HMax(_mm256_max_ps(_mm256_max_ps(others(t0), others(t1)), _mm256_max_ps(others(t2), others(t3))));
  idx[0] = win;
  val[0] = x[win];
  return rest;
}

}  // namespace

void qs8_quant_split__avx2(const Qs8QuantArgs& a, const Qs8SplitOut& o, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* x = a.x + r * a.ldx;
    int32_t* idx = o.idx + r * o.outliers;
    float* val = o.val + r * o.outliers;
    for (int64_t j = 0; j < o.outliers; ++j) {
      idx[j] = -1;
      val[j] = 0.0f;
    }
    if (o.outliers == 1) {
      const float rest = Top1(x, a.K, idx, val);
      QuantRow(a, r, rest, idx, 1);
      continue;
    }
    int64_t n = 0;
    float m = MaxRest(x, a.K, idx, 0);
    while (n < o.outliers && m > 0.0f) {  // each pass: take the largest, then the max of the rest
      const int64_t k = FindFirst(x, a.K, m, idx, n);
      idx[n] = int32_t(k);
      val[n] = x[k];
      ++n;
      m = MaxRest(x, a.K, idx, n);
    }
    QuantRow(a, r, m, idx, n);
  }
}

}  // namespace avx2
}  // namespace lowbit
