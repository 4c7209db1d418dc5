// Packs 4-bit codes, f16 scales and zero points into the q4 layouts (see q4_gemm.h). Baseline C++.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "kernels/common/f16.h"

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

namespace {

// An f16 value as odd * 2^e (odd > 0, sign apart); false for zero, infinities and NaN.
bool f16_odd_exp(uint16_t h, int32_t& odd, int32_t& e, bool& neg) {
  const int32_t ex = (h >> 10) & 0x1F, fr = h & 0x3FF;
  neg = (h & 0x8000) != 0;
  if (ex == 0x1F || (ex == 0 && fr == 0)) return false;
  odd = ex == 0 ? fr : (fr | 0x400);
  e = ex == 0 ? -24 : ex - 25;
  const int tz = __builtin_ctz(static_cast<unsigned>(odd));
  odd >>= tz;
  e += tz;
  return true;
}

// gcd of two odd numbers (binary: no division; 0 stands for "none yet")
int32_t gcd_odd(int32_t a, int32_t b) {
  if (a == 0 || a == b) return b;
  while (b != 0) {
    if (a > b) std::swap(a, b);
    b -= a;  // even now (both odd), or 0
    if (b != 0) b >>= __builtin_ctz(static_cast<unsigned>(b));
  }
  return a;
}

// The rounded lattice form (q4_gemm.h): false for an infinite or NaN scale, or a table entry
// of -128 under a negative scale (its negation leaves s8).
bool q4_rounded_lattice(int64_t K, int64_t N, const Q4Layout& l, const uint8_t* W, float* step, int16_t* mul,
                        int32_t* shift) {
  const int64_t P = (N + 15) / 16, NG = q4_kg(K, l.group) / l.group;
  const Q4Parts parts = q4_parts(K, N, l);
  const bool table = l.kind == Q4Kind::kTable;
  const int8_t* T = reinterpret_cast<const int8_t*>(W);
  const uint16_t* sc = reinterpret_cast<const uint16_t*>(W + parts.scales);
  const uint8_t* zp = W + parts.zeros;
  int32_t tlo = 0, thi = 0;  // the table's least and greatest entries
  if (table)
    for (int u = 0; u < 16; ++u) {
      tlo = std::min<int32_t>(tlo, T[u]);
      thi = std::max<int32_t>(thi, T[u]);
    }
  // the largest positive (pos) and negative (neg, as a magnitude) v * sign(s) of any group
  int32_t pos = 0, neg = 0;
  for (int64_t i = 0; i < P * NG * 16; ++i) {
    const uint16_t h = sc[i];
    if ((h & 0x7C00) == 0x7C00) return false;  // inf / NaN
    const bool minus = (h & 0x8000) != 0 && (h & 0x7FFF) != 0;
    const int32_t z = table ? 0 : l.asym ? zp[i] : 8;
    const int32_t lo = table ? tlo : -z, hi = table ? thi : 15 - z;
    if (minus && lo == -128) return false;
    pos = std::max(pos, minus ? -lo : hi);
    neg = std::max(neg, minus ? hi : -lo);
  }
  // per shift S: the largest y keeping (v * y + 2^(S-1)) >> S in s8 and the vpmaddubsw word in
  // int16; keep the S with the most of min(y, 2 * max|w8|)
  int32_t best_s = 1, best_y = 0;
  double best = -1.0;
  for (int32_t S = 1; S <= 8; ++S) {
    const int32_t R = 1 << (S - 1), lim = 128 << S;
    int32_t y = 255;
    if (pos > 0) y = std::min({y, (lim - 1 - R) / pos, (32767 - R) / pos});
    if (neg > 0) y = std::min(y, (lim + R) / neg);
    const double score = std::min<double>(y, 2.0 * std::max(pos, neg) * y / double(1 << S));
    if (score > best) {
      best = score;
      best_s = S;
      best_y = y;
    }
  }
  *shift = best_s;
  const int32_t ymax = best_y;
  for (int64_t n = 0; n < P * 16; ++n) {
    const int64_t p = n / 16, j = n % 16;
    float a = 0.0f;
    for (int64_t gi = 0; gi < NG; ++gi) a = std::max(a, std::fabs(f16_to_f32(sc[(p * NG + gi) * 16 + j])));
    step[n] = a == 0.0f || ymax == 0 ? 0.0f : float(std::ldexp(double(a), best_s) / ymax);
    for (int64_t gi = 0; gi < NG; ++gi) {
      const int64_t at = (p * NG + gi) * 16 + j;
      const double sv = f16_to_f32(sc[at]);
      const int32_t y = a == 0.0f ? 0 : std::min(int32_t(std::floor(std::fabs(sv) / a * ymax + 0.5)), ymax);
      mul[at] = int16_t(sv < 0 ? -y : y);
    }
  }
  return true;
}

// The exact lattice form of affine codes (q4_gemm.h), or false.
bool q4_exact_lattice(int64_t K, int64_t N, const Q4Layout& l, const uint8_t* W, float* step, int16_t* mul) {
  const int64_t P = (N + 15) / 16, NG = q4_kg(K, l.group) / l.group;
  const Q4Parts parts = q4_parts(K, N, l);
  const uint16_t* sc = reinterpret_cast<const uint16_t*>(W + parts.scales);
  const uint8_t* zp = W + parts.zeros;
  for (int64_t n = 0; n < P * 16; ++n) {
    const int64_t p = n / 16, j = n % 16;
    // step = (gcd of the odd parts) * 2^(least exponent); every scale is then mul * step
    int32_t g = 0, emin = 1 << 20;
    for (int64_t gi = 0; gi < NG; ++gi) {
      const uint16_t h = sc[(p * NG + gi) * 16 + j];
      int32_t odd, e;
      bool neg;
      if ((h & 0x7C00) == 0x7C00) return false;  // inf / NaN
      if (!f16_odd_exp(h, odd, e, neg)) continue;
      g = gcd_odd(g, odd);
      emin = e < emin ? e : emin;
    }
    step[n] = g == 0 ? 0.0f : std::ldexp(float(g), emin);
    for (int64_t gi = 0; gi < NG; ++gi) {
      const int64_t at = (p * NG + gi) * 16 + j;
      int32_t odd, e;
      bool neg;
      if (!f16_odd_exp(sc[at], odd, e, neg)) {
        mul[at] = 0;
        continue;
      }
      if (e - emin > 4) return false;
      const int32_t m = (odd / g) << (e - emin);
      if (m > 16) return false;
      // v = u - z spans [-z, 15 - z]; mul * v must stay in [-128, 127]
      const int32_t z = l.asym ? zp[at] : 8, lo = -z, hi = 15 - z;
      const int32_t a = neg ? -m * hi : m * lo, b = neg ? -m * lo : m * hi;
      if (a < -128 || b > 127) return false;
      mul[at] = int16_t(neg ? -m : m);
    }
  }
  return true;
}

}  // namespace

bool q4_lattice(int64_t K, int64_t N, const Q4Layout& l, const uint8_t* W, float* step, int16_t* mul, int32_t* shift,
                bool rounded) {
  if (K <= 0 || N <= 0) return false;
  if (l.kind == Q4Kind::kTable || !q4_exact_lattice(K, N, l, W, step, mul))
    return rounded && q4_rounded_lattice(K, N, l, W, step, mul, shift);
  *shift = 0;
  return true;
}

}  // namespace lowbit
