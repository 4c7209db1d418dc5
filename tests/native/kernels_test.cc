// Native kernel test, built without Python: every kernel table this CPU supports
// must agree with the scalar reference (CRC32C, the int8 / 4-bit GEMMs, the quantizer and
// the depthwise convolution exactly; f32 GEMM bit for bit, per the FMA-chain contract, its
// GELU epilogue within 4 ulp; the softmax / GELU row functions within the tolerance stated
// at test_vmath). Built for the host and, cross-compiled, for aarch64 under qemu
// (tests/test_native.py), and with the AVX-512 kernels compiled through SIMDe on a host
// without AVX-512 (tests/test_avx512_emulated.py). Prints "N passed, M failed".
#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cpu/cpu.h"
#include "cpu/dispatch.h"
#include "kernels/f32-dwconv/f32_dwconv.h"
#include "kernels/f32-maxpool/f32_maxpool.h"
#include "kernels/f32-winograd/f32_winograd.h"
#include "kernels/f32-vmath/f32_vmath.h"

using namespace lowbit;

static int g_pass = 0, g_fail = 0;

static void check(bool ok, const std::string& what) {
  if (ok) {
    ++g_pass;
  } else {
    ++g_fail;
    std::printf("FAIL %s\n", what.c_str());
  }
}

// The benches' probes: the plain read returns the reference's sum of 64-bit words for every
// length (tails of 0-7 words and 0-7 bytes) and alignment; the int8 MAC probe returns
// rounds * 1024 * a * b for the operand extremes.
static void test_probes(const KernelTable& t) {
  std::mt19937_64 rng(11);
  std::vector<uint8_t> buf(4096 + 64);
  for (auto& v : buf) v = static_cast<uint8_t>(rng());
  for (size_t start : {0, 1, 3, 8}) {
    for (size_t n : {0, 7, 8, 63, 64, 255, 256, 257, 1000, 4096}) {
      const uint64_t want = ref::memread_sum__scalar(buf.data() + start, n);
      check(t.memread_sum(buf.data() + start, n) == want,
            std::string(t.isa_name) + " memread_sum start=" + std::to_string(start) + " n=" + std::to_string(n));
    }
  }
  const int32_t ops[][2] = {{1, 1}, {0, 5}, {127, 127}, {127, -127}, {3, -2}};
  for (const auto& ab : ops)
    for (int64_t rounds : {0, 1, 7}) {
      const int64_t want = rounds * 1024 * ab[0] * ab[1];
      check(t.qs8_dotpeak(rounds, ab[0], ab[1]) == want && ref::qs8_dotpeak__scalar(rounds, ab[0], ab[1]) == want,
            std::string(t.isa_name) + " qs8_dotpeak rounds=" + std::to_string(rounds) + " a=" + std::to_string(ab[0]) +
                " b=" + std::to_string(ab[1]));
    }
}

static void test_crc(const KernelTable& t) {
  const char* s = "123456789";
  check(t.crc32c(0, s, 9) == 0xE3069283u, std::string(t.isa_name) + " crc32c known vector");
  std::mt19937 rng(42);
  std::vector<uint8_t> buf(3 * 24576 + 300);
  for (auto& b : buf) b = uint8_t(rng());
  const size_t lens[] = {0, 1, 7, 8, 9, 63, 64, 65, 24575, 24576, 24577, 2 * 24576 + 11, 3 * 24576};
  for (size_t start : {0, 1, 3, 8})
    for (size_t n : lens) {
      uint32_t want = ref::crc32c__scalar(0, buf.data() + start, n);
      uint32_t got = t.crc32c(0, buf.data() + start, n);
      check(want == got, std::string(t.isa_name) + " crc32c start=" + std::to_string(start) + " n=" + std::to_string(n));
    }
  // incremental use continues a CRC
  uint32_t c = t.crc32c(0, buf.data(), 1000);
  c = t.crc32c(c, buf.data() + 1000, 5000);
  check(c == ref::crc32c__scalar(0, buf.data(), 6000), std::string(t.isa_name) + " crc32c incremental");
}

template <class T>
static T* align64(std::vector<T>& v) {  // the kernels expect 64-byte aligned packed weights
  T* p = v.data();
  while (reinterpret_cast<uintptr_t>(p) % 64) ++p;
  return p;
}

// Distance in units in the last place (0 for equal values, +0 == -0, NaN == NaN).
static int64_t ulp_diff(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b) ? 0 : INT64_MAX;
  auto ord = [](float f) {
    int32_t i;
    std::memcpy(&i, &f, 4);
    return i >= 0 ? int64_t(i) : -int64_t(i & 0x7FFFFFFF);
  };
  const int64_t d = ord(a) - ord(b);
  return d < 0 ? -d : d;
}

// One fp32 GEMM problem, all three activations: the table's kernel against the reference,
// whole-matrix calls; A with row stride lda >= K and C with ldc >= N.
static void f32_case(const KernelTable& t, std::mt19937& rng, int64_t M, int64_t N, int64_t K, int64_t lda,
                     int64_t ldc, bool with_bias) {
  std::normal_distribution<float> nd;
  std::vector<float> B(K * N), bias(N), A(M * lda);
  for (auto& v : B) v = nd(rng);
  for (auto& v : bias) v = nd(rng);
  for (auto& v : A) v = nd(rng);
  std::vector<float> Bbuf(f32_gemm_packed_floats(K, N) + 16);
  float* bp = align64(Bbuf);
  f32_gemm_pack_b(K, N, B.data(), N, bp);
  const std::string where = " f32_gemm M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K) +
                            " lda=" + std::to_string(lda) + " ldc=" + std::to_string(ldc) + (with_bias ? "" : " nobias");
  for (int act = 0; act < 3; ++act) {
    std::vector<float> c0(M * ldc, -1.f), c1(M * ldc, -1.f);
    F32GemmArgs g{M, N, K, A.data(), lda, bp, with_bias ? bias.data() : nullptr, c0.data(), ldc, Activation(act)};
    ref::f32_gemm_1x16__scalar(g, 0, M, 0, N);
    g.C = c1.data();
    t.f32_gemm(g, 0, M, 0, N);
    if (act < 2) {  // the FMA chain, bias and ReLU: bit for bit (padding between rows untouched)
      check(std::memcmp(c0.data(), c1.data(), c0.size() * 4) == 0, std::string(t.isa_name) + where + " act=" + std::to_string(act));
    } else {  // GELU epilogue: within 4 ulp of the reference (f32_gemm.h)
      int64_t worst = 0;
      for (size_t i = 0; i < c0.size(); ++i) worst = std::max(worst, ulp_diff(c0[i], c1[i]));
      check(worst <= 4, std::string(t.isa_name) + where + " gelu max ulp " + std::to_string(worst));
    }
  }
}

static void test_gemm(const KernelTable& t) {
  std::mt19937 rng(7);
  const int64_t Ms[] = {1, 2, 3, 4, 5, 6, 7, 13, 17, 33};
  const int64_t NKs[][2] = {{1, 1}, {16, 16}, {17, 15}, {33, 64}, {100, 31}, {140, 40}};
  for (auto& nk : NKs)
    for (int64_t M : Ms) f32_case(t, rng, M, nk[0], nk[1], nk[1], nk[0], true);
  // more than one K block (768) and N block (512 KB of packed B), row tiles of 12 and their remainders
  for (int64_t M : {1, 7, 25}) f32_case(t, rng, M, 340, 800, 800, 340, M != 7);
  // A rows 4 KB apart (copied to a stack buffer), C rows padded
  for (int64_t M : {3, 13}) f32_case(t, rng, M, 50, 100, 1024, 57, true);
  f32_case(t, rng, 9, 20, 0, 1, 20, true);  // K = 0: bias (and activation) only

  // Thread splits: sub-rectangles (n0 a multiple of 16) give the whole call's bits and write
  // nothing outside their rectangle.
  std::normal_distribution<float> nd;
  const int64_t M = 33, N = 100, K = 70;
  std::vector<float> A(M * K), B(K * N), bias(N);
  for (auto& v : A) v = nd(rng);
  for (auto& v : B) v = nd(rng);
  for (auto& v : bias) v = nd(rng);
  std::vector<float> Bbuf(f32_gemm_packed_floats(K, N) + 16);
  float* bp = align64(Bbuf);
  f32_gemm_pack_b(K, N, B.data(), N, bp);
  std::vector<float> whole(M * N);
  F32GemmArgs g{M, N, K, A.data(), K, bp, bias.data(), whole.data(), N, Activation::kRelu};
  t.f32_gemm(g, 0, M, 0, N);
  const int64_t mc[] = {0, 1, 8, 21, 33}, nc[] = {0, 16, 64, 96, 100};
  std::vector<float> parts(M * N, 123.f);
  g.C = parts.data();
  bool inside_only = true;
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) {
      std::vector<float> one(M * N, 123.f);
      g.C = one.data();
      t.f32_gemm(g, mc[i], mc[i + 1], nc[j], nc[j + 1]);
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) {
          const bool in = m >= mc[i] && m < mc[i + 1] && n >= nc[j] && n < nc[j + 1];
          if (in) parts[m * N + n] = one[m * N + n];
          else inside_only &= one[m * N + n] == 123.f;
        }
    }
  check(inside_only, std::string(t.isa_name) + " f32_gemm writes only its rectangle");
  check(std::memcmp(parts.data(), whole.data(), whole.size() * 4) == 0, std::string(t.isa_name) + " f32_gemm sub-rectangles == whole");
}

// The activation quantizer directly: codes (all Kp bytes), scales and group sums, both
// encodings, against the scalar reference bit for bit; NaN, inf, zero and denormal rows.
static void test_quant(const KernelTable& t) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  for (int64_t K : {1, 5, 15, 16, 17, 33, 100, 129, 300})
    for (int64_t G : {0, 32, 64, 128})
      for (int biased = 0; biased < 2; ++biased) {
        const int64_t rows = 8, ldx = K + 3, Kp = G ? q4_kg(K, G) : qs8_kp(K), NG = G ? Kp / G : 0;
        std::vector<float> x(rows * ldx);
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t k = 0; k < K; ++k) {
            float v = nd(rng) * (r == 1 ? 1e-3f : 1.0f);
            if (r == 2 && k % 7 == 3) v = NAN;
            if (r == 3) v = 0.0f;
            if (r == 4 && k == K / 2) v = (k & 1) ? -INFINITY : INFINITY;
            if (r == 5) v = 1e-40f * float(1 + k % 5) * ((k & 1) ? -1.f : 1.f);  // denormals only
            if (r == 6) v = 3e38f * ((k % 3) ? -1.f : 0.5f);
            if (r == 7) v = float(int(k % 9) - 4) * 0.5f;  // many exact halves: ties to even
            x[r * ldx + k] = v;
          }
        std::vector<int8_t> q0(rows * Kp + 16, 55), q1(rows * Kp + 16, 55);
        std::vector<float> s0(rows), s1(rows);
        std::vector<int32_t> g0(rows * (NG ? NG : 1), 7), g1(rows * (NG ? NG : 1), 7);
        Qs8QuantArgs a{x.data(), ldx, K, Kp, q0.data(), Kp, s0.data(), G ? g0.data() : nullptr, G, NG, biased != 0};
        ref::qs8_quant__scalar(a, 0, rows);
        a.q = q1.data();
        a.scale = s1.data();
        a.gsum = G ? g1.data() : nullptr;
        t.qs8_quant(a, 0, 3);
        t.qs8_quant(a, 3, rows);
        const bool ok = q0 == q1 && std::memcmp(s0.data(), s1.data(), rows * 4) == 0 && g0 == g1;
        check(ok, std::string(t.isa_name) + " " + t.qs8_quant_name + " K=" + std::to_string(K) + " G=" + std::to_string(G) +
                      (biased ? " bias128" : ""));
      }
}

// Quantized paths: activations through the table's quantizer (biased when its int8 GEMM asks),
// then its GEMM; the reference pipeline is the scalar quantizer + scalar GEMM. Exact match.
struct QProblem {
  int64_t M, K, N;
  std::vector<float> x, bias;
};

// split: the GEMM runs as sub-rectangles (thread splits: row cuts, column cuts at multiples
// of 16), each into its own buffer; *outside is cleared if one wrote outside its rectangle.
// The f16 bits of v, a positive normal f16 value.
static uint16_t f16_exact(float v) {
  int e;
  const float f = std::frexp(v, &e);  // v = f * 2^e, f in [0.5, 1)
  return uint16_t(((e - 1 + 15) << 10) | int((f * 2 - 1) * 1024));
}

// lat: the 4-bit lattice form (q4_gemm.h) with these step / mul arrays, through t.q4_gemm_lattice.
struct Lattice {
  const float* step;
  const int16_t* mul;
  int32_t shift;
};
static std::vector<float> run_q(const KernelTable& t, const QProblem& p, const uint8_t* W, bool q4, const Q4Layout& lay,
                                Activation act, bool split = false, bool* outside = nullptr, const Lattice* lat = nullptr) {
  const int64_t Kp = q4 ? q4_kg(p.K, lay.group) : qs8_kp(p.K), NG = q4 ? Kp / lay.group : 0;
  std::vector<int8_t> q(p.M * Kp + 64);
  std::vector<float> sc(p.M);
  std::vector<int32_t> gs(p.M * (NG ? NG : 1));
  Qs8QuantArgs qa{p.x.data(), p.K, p.K, Kp, q.data(), Kp, sc.data(), q4 ? gs.data() : nullptr, q4 ? lay.group : 0, NG,
                  q4 ? (lat != nullptr && t.q4_gemm_lattice_biased) : t.qs8_gemm_biased};
  t.qs8_quant(qa, 0, p.M);
  std::vector<float> y(p.M * p.N, -7.0f);
  auto gemm = [&](float* out, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    if (q4) {
      Q4GemmArgs g{p.M, p.N, p.K, lay, q.data(), Kp, sc.data(), gs.data(), W, p.bias.data(), out, p.N, act};
      if (lat != nullptr) {
        g.lat_step = lat->step;
        g.lat_mul = lat->mul;
        g.lat_shift = lat->shift;
        t.q4_gemm_lattice(g, m0, m1, n0, n1);
      } else {
        t.q4_gemm(g, m0, m1, n0, n1);
      }
    } else {
      Qs8GemmArgs g{p.M, p.N, p.K, q.data(), Kp, sc.data(), W, p.bias.data(), out, p.N, act};
      t.qs8_gemm(g, m0, m1, n0, n1);
    }
  };
  if (!split) {
    gemm(y.data(), 0, p.M, 0, p.N);
    return y;
  }
  std::vector<int64_t> mc{0}, nc{0};
  for (int64_t c : {int64_t(1), p.M / 3, p.M})
    if (c > mc.back() && c <= p.M) mc.push_back(c);
  for (int64_t c : {int64_t(16), (p.N / 32 + 1) * 16, p.N})
    if (c > nc.back() && c <= p.N) nc.push_back(c);
  if (nc.back() != p.N) nc.push_back(p.N);
  for (size_t i = 0; i + 1 < mc.size(); ++i)
    for (size_t j = 0; j + 1 < nc.size(); ++j) {
      std::vector<float> one(p.M * p.N, -7.0f);
      gemm(one.data(), mc[i], mc[i + 1], nc[j], nc[j + 1]);
      for (int64_t m = 0; m < p.M; ++m)
        for (int64_t n = 0; n < p.N; ++n) {
          if (m >= mc[i] && m < mc[i + 1] && n >= nc[j] && n < nc[j + 1]) y[m * p.N + n] = one[m * p.N + n];
          else if (one[m * p.N + n] != -7.0f && outside) *outside = false;
        }
    }
  return y;
}

static void test_quantized(const KernelTable& t, const KernelTable& ref_t) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd;
  const std::vector<int64_t> all_Ms{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 16, 17, 31, 32, 33, 63, 64, 65, 128};
  const std::vector<int64_t> few_Ms{1, 2, 3, 5, 9, 17};
  // N = 41: a 9-column last panel (the narrowest one not given to the 8-column half tile);
  // the last two: more than 8 panels (the 1-2 row path's full blocks, then an 8-column tail),
  // and an int8 K over the AVX-512 kernel's 4096 K block (sums wait in C as int32)
  struct Case { int64_t K, N; const std::vector<int64_t>* Ms; bool split; };
  const Case cases[] = {{5, 17, &all_Ms, false}, {37, 41, &all_Ms, false}, {100, 47, &all_Ms, true},
                        {129, 70, &all_Ms, false}, {64, 150, &few_Ms, true}, {4100, 40, &few_Ms, false}};
  for (const Case& cs : cases) {
    const int64_t K = cs.K, N = cs.N;
    for (int extreme = 0; extreme < 2; ++extreme) {
      // int8 weights (all +-127 when extreme)
      std::vector<int8_t> wq(K * N);
      std::vector<float> ws(N);
      for (auto& v : wq) v = extreme ? int8_t((rng() & 1) ? 127 : -127) : int8_t(int(rng() % 255) - 127);
      for (auto& v : ws) v = 0.001f + 0.01f * float(rng() % 100) / 100.0f;
      std::vector<uint8_t> W8(qs8_packed_bytes(K, N) + 64);
      uint8_t* w8 = W8.data();
      while (reinterpret_cast<uintptr_t>(w8) % 64) ++w8;
      qs8_gemm_pack(K, N, wq.data(), ws.data(), w8);
      // 4-bit weights, all three kinds, groups 32/64/128 (max nibbles when extreme)
      // kind 3: symmetric affine codes with scales on the int8 lattice (multiples 1..16 of a
      // power of two: the exact lattice form); the others run the rounded form too
      struct Q4W { Q4Layout lay; std::vector<uint8_t> buf; uint8_t* p; std::vector<float> step; std::vector<int16_t> mul; int32_t shift; };
      std::vector<Q4W> q4s;
      for (int64_t G : {32, 64, 128})
        for (int kind = 0; kind < 4; ++kind) {
          Q4Layout lay{kind == 2 ? Q4Kind::kTable : Q4Kind::kAffine, kind == 1, G};
          const int64_t NG = q4_kg(K, G) / G;
          std::vector<uint8_t> U(K * N), Z(NG * N);
          std::vector<uint16_t> S(NG * N);
          std::vector<int8_t> T(16);
          for (auto& v : U) v = extreme ? 15 : uint8_t(rng() % 16);
          for (auto& v : Z) v = extreme ? 0 : uint8_t(rng() % 16);
          for (size_t i = 0; i < S.size(); ++i) S[i] = (i % 7 == 0) ? 0 : uint16_t(0x2000 + rng() % 0x1000);  // f16 ~ 0.008..0.03, some 0
          if (kind == 3)  // m * 2^-10 as f16 (exact): m = 16 when extreme (16 * -8 = -128, 16 * 7 = 112)
            for (size_t i = 0; i < S.size(); ++i) {
              const int m = (i % 7 == 0) ? 0 : extreme ? 16 : 1 + int(rng() % 16);
              S[i] = m == 0 ? 0 : f16_exact(std::ldexp(float(m), -10));
            }
          for (int i = 0; i < 16; ++i) T[i] = extreme ? int8_t(i % 2 ? -127 : 127) : int8_t(int(rng() % 255) - 127);
          Q4W w{lay, std::vector<uint8_t>(q4_parts(K, N, lay).total + 64), nullptr, {}, {}, 0};
          w.p = w.buf.data();
          while (reinterpret_cast<uintptr_t>(w.p) % 64) ++w.p;
          q4_gemm_pack(K, N, lay, U.data(), S.data(), Z.data(), T.data(), w.p);
          // every kind has a lattice form: exact for kind 3, rounded for tables, either for the
          // others (random scales: rounded, unless one group per column makes them exact)
          w.step.resize((N + 15) / 16 * 16);
          w.mul.resize((N + 15) / 16 * NG * 16);
          const bool found = q4_lattice(K, N, lay, w.p, w.step.data(), w.mul.data(), &w.shift, true);
          check(found && (kind != 3 || w.shift == 0) && (kind != 2 || w.shift > 0) && (NG == 1 || kind == 3 || w.shift > 0),
                "q4_lattice kind=" + std::to_string(kind) + " G=" + std::to_string(G) + " K=" + std::to_string(K));
          q4s.push_back(std::move(w));
        }
      for (int64_t M : *cs.Ms) {
        QProblem p{M, K, N, std::vector<float>(M * K), std::vector<float>(N)};
        for (auto& v : p.x) v = extreme ? ((rng() & 1) ? 1.0f : -1.0f) : nd(rng);
        for (auto& v : p.bias) v = nd(rng);
        const std::string where = " M=" + std::to_string(M) + " K=" + std::to_string(K) + " N=" + std::to_string(N) +
                                  (extreme ? " extreme" : "");
        for (int act = 0; act < 2; ++act) {
          const Q4Layout none{Q4Kind::kAffine, false, 32};
          const bool split = cs.split && act == 1 && !extreme;
          bool inside = true;
          auto a = run_q(ref_t, p, w8, false, none, Activation(act));
          auto b = run_q(t, p, w8, false, none, Activation(act), split, &inside);
          check(std::memcmp(a.data(), b.data(), a.size() * 4) == 0 && inside,
                std::string(t.isa_name) + " qs8_gemm" + where + (split ? " split" : ""));
          for (auto& w : q4s) {
            bool inside4 = true;
            auto c = run_q(ref_t, p, w.p, true, w.lay, Activation(act));
            auto d = run_q(t, p, w.p, true, w.lay, Activation(act), split, &inside4);
            check(std::memcmp(c.data(), d.data(), c.size() * 4) == 0 && inside4,
                  std::string(t.isa_name) + " q4_gemm kind=" + std::to_string(int(w.lay.kind)) + (w.lay.asym ? "a" : "") +
                      " G=" + std::to_string(w.lay.group) + where + (split ? " split" : ""));
            if (w.step.empty() || t.q4_gemm_lattice == nullptr || ref_t.q4_gemm_lattice == nullptr) continue;
            const Lattice lat{w.step.data(), w.mul.data(), w.shift};
            bool inside5 = true;
            auto e = run_q(ref_t, p, w.p, true, w.lay, Activation(act), false, nullptr, &lat);
            auto f = run_q(t, p, w.p, true, w.lay, Activation(act), split, &inside5, &lat);
            check(std::memcmp(e.data(), f.data(), e.size() * 4) == 0 && inside5,
                  std::string(t.isa_name) + " " + t.q4_gemm_lattice_name + " kind=" + std::to_string(int(w.lay.kind)) +
                      (w.lay.asym ? "a" : "") + " S=" + std::to_string(w.shift) + " G=" + std::to_string(w.lay.group) + where +
                      (split ? " split" : ""));
          }
        }
      }
    }
  }
}

// Sparse paths (SELL-8 fp32 and 1x4 blocks, K16 int8): packed here from random masks
// (random, empty and full columns, a single nonzero), every table against the scalar
// reference: fp32 bit for bit (same FMA chain per lane), int8 exactly.
static void test_sparse(const KernelTable& t, const KernelTable& ref_t) {
  std::mt19937 rng(23);
  std::normal_distribution<float> nd;
  const int64_t Ms[] = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 33, 64};
  const int64_t KNs[][2] = {{1, 1}, {5, 17}, {37, 33}, {100, 47}, {129, 70}};
  for (auto& kn : KNs) {
    const int64_t K = kn[0], N = kn[1];
    for (int pat = 0; pat < 4; ++pat) {  // 10% random, 20% 1x4 blocks, column patterns, a single nonzero
      std::vector<float> w(K * N, 0.0f);
      std::vector<int8_t> wq(K * N, 0);
      const int64_t one = int64_t(rng() % uint32_t(K * N));
      for (int64_t k = 0; k < K; ++k)
        for (int64_t n = 0; n < N; ++n) {
          bool nz = false;
          if (pat == 0) nz = rng() % 10 == 0;
          if (pat == 1) nz = (uint32_t(k / 4 * 7919 + n * 104729) % 5) == 0;
          if (pat == 2) nz = n % 3 == 1 || (n % 3 == 2 && rng() % 3 == 0);
          if (pat == 3) nz = k * N + n == one;
          if (!nz) continue;
          w[k * N + n] = nd(rng);
          wq[k * N + n] = int8_t(int(rng() % 255) - 127);
        }
      std::vector<float> ws(N), bias(N);
      for (auto& v : ws) v = 0.001f + 0.01f * float(rng() % 100) / 100.0f;
      for (auto& v : bias) v = nd(rng);
      int64_t T = 0;
      std::vector<uint8_t> bf(sell_count_f32(K, N, w.data(), 1, &T));
      sell_pack_f32(K, N, w.data(), 1, bf.data(), int64_t(bf.size()));
      std::vector<uint8_t> bb(sell_count_s8(K, N, wq.data(), 4, &T));
      sell_pack_s8(K, N, wq.data(), ws.data(), 4, bb.data(), int64_t(bb.size()));
      std::vector<uint8_t> bk(k16_count(K, N, wq.data()));
      k16_pack(K, N, wq.data(), ws.data(), bk.data(), int64_t(bk.size()));
      SellMatrix sf, sb;
      K16Matrix sk;
      check(sell_validate(bf.data(), int64_t(bf.size()), K, N, 1, 4, false, &sf).empty(), "sell f32 pack validates");
      check(sell_validate(bb.data(), int64_t(bb.size()), K, N, 4, 1, true, &sb).empty(), "sell bsr pack validates");
      check(k16_validate(bk.data(), int64_t(bk.size()), K, N, &sk).empty(), "k16 pack validates");
      std::vector<int32_t> wsum(size_t(sb.S * kSellC));
      sell_lane_sums(sb, wsum.data());
      std::vector<uint32_t> inv(static_cast<size_t>(N));
      sell_inverse_perm(sb, inv.data());
      T16Matrix t16;
      check(t16_from_sell(sb, &t16), "t16 form of a packed bsr blob");
      for (int64_t M : Ms) {
        std::vector<float> x(M * K);
        for (auto& v : x) v = nd(rng);
        const std::string where = " M=" + std::to_string(M) + " K=" + std::to_string(K) + " N=" + std::to_string(N) +
                                  " pattern=" + std::to_string(pat);
        // activations as the op quantizes them (biased when the table asks): rows of
        // round_up(K, 16) + 16 bytes, value 0 past K
        const int64_t lda = (K + 15) / 16 * 16 + 16;
        std::vector<int8_t> q(M * lda), qt(M * lda);
        std::vector<float> sc(M);
        Qs8QuantArgs qa{x.data(), K, K, lda, q.data(), lda, sc.data(), nullptr, 0, 0, false};
        ref_t.qs8_quant(qa, 0, M);
        qa.q = qt.data();
        qa.bias128 = t.qs8_spmm_biased;
        t.qs8_quant(qa, 0, M);
        // 8-row tiles for every table, and 16-row ones where the table takes them
        std::vector<int8_t> at8(qs8_bspmm_at_bytes(M, K, 8), 7), at16(qs8_bspmm_at_bytes(M, K, 16), 7);  // 7: unwritten
        t.qs8_bspmm_pack_a(M, K, qt.data(), lda, 8, at8.data());
        t.qs8_bspmm_pack_a(M, K, qt.data(), lda, 16, at16.data());
        {  // the table's packer writes the reference's bytes (rows past M: zeros)
          std::vector<int8_t> r8(at8.size(), 1), r16(at16.size(), 1);
          ref_t.qs8_bspmm_pack_a(M, K, qt.data(), lda, 8, r8.data());
          ref_t.qs8_bspmm_pack_a(M, K, qt.data(), lda, 16, r16.data());
          check(r8 == at8 && r16 == at16, std::string(t.isa_name) + " " + t.qs8_bspmm_pack_a_name + where);
        }
        for (int act = 0; act < 2; ++act) {
          std::vector<float> a(M * N, -1.f), b(M * N, -2.f);
          // every prefetch level (each is its own code path in the x86 kernels), rows from 0 and from 1
          for (StreamPrefetch pf : {StreamPrefetch::kNone, StreamPrefetch::kL2, StreamPrefetch::kL1}) {
            const std::string lv = " prefetch " + std::to_string(int(pf));
            F32SpmmArgs fa{M, x.data(), K, &sf, bias.data(), a.data(), N, Activation(act)};
            ref_t.f32_spmm(fa, 0, M, 0, sf.S);
            fa.C = b.data();
            fa.prefetch = pf;
            std::fill(b.begin(), b.end(), -2.f);
            t.f32_spmm(fa, 0, std::min<int64_t>(M, 1), 0, sf.S);
            t.f32_spmm(fa, std::min<int64_t>(M, 1), M, 0, sf.S);
            check(std::memcmp(a.data(), b.data(), a.size() * 4) == 0, std::string(t.isa_name) + " f32_spmm" + lv + where);
            Qs8K16Args ka{M, q.data(), lda, sc.data(), &sk, bias.data(), a.data(), N, Activation(act)};
            ref_t.qs8_spmm(ka, 0, M, 0, sk.G);
            ka.C = b.data();
            ka.A = qt.data();
            ka.prefetch = pf;
            std::fill(b.begin(), b.end(), -2.f);
            t.qs8_spmm(ka, 0, M, 0, sk.G);
            check(std::memcmp(a.data(), b.data(), a.size() * 4) == 0, std::string(t.isa_name) + " qs8_spmm" + lv + where);
            Qs8SpmmArgs ba{M, q.data(), lda, sc.data(), nullptr, &sb, bias.data(), a.data(), N, Activation(act)};
            ref_t.qs8_bspmm(ba, 0, M, 0, sb.S);
            ba.C = b.data();
            ba.A = qt.data();
            ba.wsum = wsum.data();
            ba.prefetch = pf;
            std::fill(b.begin(), b.end(), -2.f);
            t.qs8_bspmm(ba, 0, M, 0, sb.S);
            check(std::memcmp(a.data(), b.data(), a.size() * 4) == 0, std::string(t.isa_name) + " qs8_bspmm" + lv + where);
          }
          // tiles: 0 none, 1 of 8 rows, 2 of 16; staged output (Yt) too where the table has it
          for (int tiles = 0; tiles < 3; ++tiles)
            for (int staged = 0; staged < 2; ++staged) {
              if (tiles == 2 && t.qs8_bspmm_tile_rows < 16) continue;
              if (staged && (tiles == 0 || t.qs8_bspmm_unstage == nullptr)) continue;
              Qs8SpmmArgs ba{M, q.data(), lda, sc.data(), nullptr, &sb, bias.data(), a.data(), N, Activation(act)};
              ref_t.qs8_bspmm(ba, 0, M, 0, sb.S);
              std::fill(b.begin(), b.end(), -2.f);
              ba.C = b.data();
              ba.A = qt.data();
              ba.At = tiles == 0 ? nullptr : tiles == 1 ? at8.data() : at16.data();
              ba.at_rows = tiles == 2 ? 16 : 8;
              ba.wsum = wsum.data();
              const int64_t R = ba.at_rows, ntiles = (M + R - 1) / R;
              std::vector<float> yt(staged ? size_t(ntiles * sb.S * kSellC * R) : 0, std::nanf(""));
              if (staged) ba.Yt = yt.data();
              if (tiles == 0) {
                t.qs8_bspmm(ba, 0, M, 0, sb.S);
              } else {  // row ranges of whole tiles, slices split in two (as the op's thread split)
                const int64_t half = sb.S / 2;
                for (int64_t m = 0; m < M; m += 2 * R) {
                  const int64_t me = std::min(M, m + 2 * R);
                  t.qs8_bspmm(ba, m, me, 0, half);
                  t.qs8_bspmm(ba, m, me, half, sb.S);
                }
              }
              if (staged)  // columns in two ranges, the first ending off a multiple of 16
                for (int64_t i = 0; i < ntiles; ++i) {
                  const int64_t rows = std::min(R, M - i * R), cut = N / 3;
                  for (const auto& nr : {std::make_pair(int64_t(0), cut), std::make_pair(cut, N)})
                    t.qs8_bspmm_unstage(yt.data() + i * sb.S * kSellC * R, R, rows, inv.data(), nr.first, nr.second,
                                        b.data() + i * R * N, N);
                }
              check(std::memcmp(a.data(), b.data(), a.size() * 4) == 0,
                    std::string(t.isa_name) + " qs8_bspmm" + (tiles ? " tiles of " + std::to_string(R) : "") +
                        (staged ? " staged" : "") + where);
            }
          // the T16 form (kernels/sparse/t16.h) where the table has its kernel: activations biased,
          // rows of round_up(K, 64) bytes, whole 16-row tiles (zero rows past M); the column groups
          // in two calls, as the op's thread split
          if (t.qs8_bspmm_t16 != nullptr && t16.G > 0) {
            Qs8SpmmArgs ba{M, q.data(), lda, sc.data(), nullptr, &sb, bias.data(), a.data(), N, Activation(act)};
            ref_t.qs8_bspmm(ba, 0, M, 0, sb.S);
            const int64_t l16 = qs8_bspmm_t16_lda(K), mp = (M + 15) / 16 * 16;
            std::vector<uint8_t> q16(size_t(mp * l16), 0);
            std::vector<float> sc16(M);
            Qs8QuantArgs q6{x.data(), K, K, l16, reinterpret_cast<int8_t*>(q16.data()), l16, sc16.data(), nullptr, 0, 0, true};
            ref_t.qs8_quant(q6, 0, M);
            Qs8BspmmT16Args ta{M, q16.data(), l16, sc16.data(), &t16, bias.data(), b.data(), N, Activation(act)};
            for (auto fn : {&ref::qs8_bspmm_t16__scalar, t.qs8_bspmm_t16}) {
              std::fill(b.begin(), b.end(), -2.f);
              fn(ta, 0, t16.G / 2);
              fn(ta, t16.G / 2, t16.G);
              check(std::memcmp(a.data(), b.data(), a.size() * 4) == 0,
                    std::string(t.isa_name) + " " + (fn == t.qs8_bspmm_t16 ? t.qs8_bspmm_t16_name : "qs8_bspmm_t16__scalar") + where);
            }
          }
        }
      }
    }
  }
}

// The split quantizer (outliers left in float): every output equal to the reference's.
// Staged bsr output to C: every table that has an unstage kernel against the scalar one, bit for
// bit (data movement), over both tile heights, partial tiles, column ranges off the 16-column
// groups, and rows of C longer than N.
static void test_bspmm_unstage(const KernelTable& t) {
  if (t.qs8_bspmm_unstage == nullptr) return;
  std::mt19937 rng(11);
  std::normal_distribution<float> nd;
  for (int64_t R : {8, 16})
    for (int64_t N : {1, 7, 16, 17, 40, 130})
      for (int64_t rows : {int64_t(1), R / 2 + 1, R}) {
        const int64_t lanes = (N + 7) / 8 * 8 + 8, ldc = N + 3;
        std::vector<float> yt(size_t(lanes * R));
        for (auto& v : yt) v = nd(rng);
        std::vector<uint32_t> lane(static_cast<size_t>(lanes));
        for (int64_t l = 0; l < lanes; ++l) lane[l] = uint32_t(l);
        std::shuffle(lane.begin(), lane.end(), rng);
        const std::vector<uint32_t> inv(lane.begin(), lane.begin() + N);
        for (const auto& nr : {std::make_pair(int64_t(0), N), std::make_pair(N / 3, N - N / 4)}) {
          std::vector<float> a(size_t(R * ldc), -1.f), b(size_t(R * ldc), -1.f);
          ref::qs8_bspmm_unstage__scalar(yt.data(), R, rows, inv.data(), nr.first, nr.second, a.data(), ldc);
          t.qs8_bspmm_unstage(yt.data(), R, rows, inv.data(), nr.first, nr.second, b.data(), ldc);
          check(std::memcmp(a.data(), b.data(), a.size() * 4) == 0,
                std::string(t.isa_name) + " " + t.qs8_bspmm_unstage_name + " R=" + std::to_string(R) + " N=" +
                    std::to_string(N) + " rows=" + std::to_string(rows) + " n0=" + std::to_string(nr.first));
        }
      }
}

static void test_quant_split(const KernelTable& t, const KernelTable& ref_t) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  for (int64_t K : {1, 7, 8, 9, 33, 64, 100, 129, 200, 257}) {
    const int64_t M = 11, Kp = (K + 31) / 32 * 32, NG = Kp / 32;
    std::vector<float> x(M * K);
    for (auto& v : x) v = nd(rng);
    x[rng() % K] = 50.0f;                                 // row 0: an outlier
    for (int64_t k = 0; k < K; ++k) x[K + k] = 0.0f;      // row 1: zeros
    for (int64_t k = 0; k < (K + 1) / 2; ++k) x[2 * K + k] = -3.0f;  // row 2: ties
    x[3 * K + rng() % K] = std::numeric_limits<float>::quiet_NaN();
    // (the AVX-512 kernel keeps the two largest per lane of four sets of 16, the last K % 64
    // values in set 0: rows 6-10 put the largest and its ties in the same or other lanes)
    const int64_t p = int64_t(rng() % K);
    x[6 * K + p] = -40.0f;                                // row 6: the largest twice in one lane
    x[6 * K + (p + 64) % K] = 40.0f;
    x[7 * K + p] = 30.0f;                                 // row 7: twice in neighbouring lanes / sets
    x[7 * K + (p + 17) % K] = 30.0f;
    x[8 * K + K - 1] = 60.0f;                             // row 8: the largest last (the tail)
    x[8 * K + (K - 1) / 2] = 59.0f;
    x[9 * K + p] = std::numeric_limits<float>::infinity();  // row 9: inf, and a NaN next to it
    x[9 * K + (p + 1) % K] = std::numeric_limits<float>::quiet_NaN();
    for (int64_t k = 0; k < K; ++k) x[10 * K + k] = float(k % 5);  // row 10: many ties of the largest
    for (int64_t n : {0, 1, 2, 5}) {
      for (int biased = 0; biased < 2; ++biased) {
        std::vector<int8_t> q[2] = {std::vector<int8_t>(M * Kp), std::vector<int8_t>(M * Kp)};
        std::vector<float> sc[2] = {std::vector<float>(M), std::vector<float>(M)};
        std::vector<int32_t> gs[2] = {std::vector<int32_t>(M * NG), std::vector<int32_t>(M * NG)};
        std::vector<int32_t> idx[2] = {std::vector<int32_t>(M * n + 1), std::vector<int32_t>(M * n + 1)};
        std::vector<float> val[2] = {std::vector<float>(M * n + 1), std::vector<float>(M * n + 1)};
        for (int w = 0; w < 2; ++w) {
          Qs8QuantArgs qa{x.data(), K, K, Kp, q[w].data(), Kp, sc[w].data(), gs[w].data(), 32, NG, biased != 0};
          (w ? t : ref_t).qs8_quant_split(qa, Qs8SplitOut{n, idx[w].data(), val[w].data()}, 0, M);
        }
        const std::string where = std::string(t.isa_name) + " qs8_quant_split K=" + std::to_string(K) +
                                  " n=" + std::to_string(n) + (biased ? " biased" : "");
        check(q[0] == q[1] && gs[0] == gs[1] && idx[0] == idx[1] &&
                  std::memcmp(sc[0].data(), sc[1].data(), M * 4) == 0 &&
                  std::memcmp(val[0].data(), val[1].data(), val[0].size() * 4) == 0,
              where);
      }
    }
  }
}

// The outlier split's float part: y += v * W[k, n0:n1] for qs8 and every q4 kind, same bits.
static void test_qw_axpy(const KernelTable& t, const KernelTable& ref_t) {
  std::mt19937 rng(9);
  const int64_t K = 77, N = 45;
  std::vector<int8_t> wq(K * N);
  std::vector<float> ws(N);
  for (auto& v : wq) v = int8_t(int(rng() % 255) - 127);
  for (auto& v : ws) v = 0.001f + 0.01f * float(rng() % 100) / 100.0f;
  std::vector<uint8_t> W8(qs8_packed_bytes(K, N) + 64);
  uint8_t* w8 = W8.data();
  while (reinterpret_cast<uintptr_t>(w8) % 64) ++w8;
  qs8_gemm_pack(K, N, wq.data(), ws.data(), w8);
  std::vector<QwView> views{QwView{false, Q4Layout{Q4Kind::kAffine, false, 32}, K, N, w8}};
  std::vector<std::vector<uint8_t>> bufs;
  for (int kind = 0; kind < 3; ++kind) {
    Q4Layout lay{kind == 2 ? Q4Kind::kTable : Q4Kind::kAffine, kind == 1, 32};
    const int64_t NG = q4_kg(K, 32) / 32;
    std::vector<uint8_t> U(K * N), Z(NG * N);
    std::vector<uint16_t> S(NG * N);
    std::vector<int8_t> T(16);
    for (auto& v : U) v = uint8_t(rng() % 16);
    for (auto& v : Z) v = uint8_t(rng() % 16);
    for (auto& v : S) v = uint16_t(0x2000 + rng() % 0x1000);
    for (auto& v : T) v = int8_t(int(rng() % 255) - 127);
    bufs.emplace_back(q4_parts(K, N, lay).total + 64);
    uint8_t* p = bufs.back().data();
    while (reinterpret_cast<uintptr_t>(p) % 64) ++p;
    q4_gemm_pack(K, N, lay, U.data(), S.data(), Z.data(), T.data(), p);
    views.push_back(QwView{true, lay, K, N, p});
  }
  std::normal_distribution<float> nd;
  for (size_t vi = 0; vi < views.size(); ++vi)
    for (int64_t k : {0, 1, 3, 4, 7, 8, 31, 32, 76})
      for (int64_t n0 : {0, 16, 32})
        for (int64_t n1 : {n0 + 1, n0 + 9, int64_t(N)}) {
          if (n1 > N || n1 <= n0) continue;
          std::vector<float> a(n1 - n0), b;
          for (auto& v : a) v = nd(rng);
          b = a;
          const float v = nd(rng) * 10;
          ref_t.qw_axpy(views[vi], k, v, n0, n1, a.data());
          t.qw_axpy(views[vi], k, v, n0, n1, b.data());
          check(std::memcmp(a.data(), b.data(), a.size() * 4) == 0,
                std::string(t.isa_name) + " qw_axpy view=" + std::to_string(vi) + " k=" + std::to_string(k) +
                    " n=" + std::to_string(n0) + ":" + std::to_string(n1));
        }
}

// The f32-vmath row functions and the f32-dwconv kernel of a table (filled per level in dispatch.cc).
static VMathKernels vmath_of(const KernelTable& t) { return t.vmath; }
static F32DwConvKernel dwconv_of(const KernelTable& t) { return t.f32_dwconv; }

// Softmax and GELU rows against the scalar reference, within the tolerances f32_vmath.h states:
//   softmax: |y - ref| <= (2e-6 + n * 2^-24) * |ref| + 1e-37 -- both use a ~1e-7 exp, and they sum
//     the row in different orders (the reference one by one, AVX-512 in 16 lanes and a tree),
//     each within n * 2^-24 relative of the exact sum;
//   GELU: |y - ref| <= 1e-6 + 4 ulp(ref) -- the reference's float 1 + erf(x / sqrt 2) cancels
//     for x < 0 (absolute error up to ~5e-7, and -0 below x = -5.9); and, for the vector
//     kernels, relative error <= 3e-5 against GELU evaluated in double (the float rounding of
//     u = |x| / sqrt 2 is amplified by exp(-u^2): ~6 ulp for |x| <= 1, ~240 ulp at x = -13).
static void test_vmath(const KernelTable& t) {
  const VMathKernels k = vmath_of(t);
  if (k.softmax_row == &ref::f32_softmax_row__scalar) return;  // the reference itself
  std::mt19937 rng(13);
  std::normal_distribution<float> nd;
  for (int64_t n : {1, 2, 15, 16, 17, 33, 100, 1000}) {
    for (int kind = 0; kind < 6; ++kind) {
      std::vector<float> x(n), y0(n), y1(n);
      for (int64_t i = 0; i < n; ++i) {
        x[i] = nd(rng) * (kind == 1 ? 30.f : 3.f);  // kind 1: many terms underflow
        if (kind == 2 && i % 3 == 0) x[i] = -INFINITY;
        if (kind == 3) x[i] = -INFINITY;                      // all -inf: NaN, as the reference
        if (kind == 4 && i == n / 2) x[i] = NAN;              // any NaN: all NaN
        if (kind == 5) x[i] = 80.f + float(i % 7);            // large: max subtracted first
      }
      ref::f32_softmax_row__scalar(x.data(), y0.data(), n);
      k.softmax_row(x.data(), y1.data(), n);
      const double rel = 2e-6 + double(n) * 0x1p-24;
      int64_t bad = -1;
      for (int64_t i = 0; i < n && bad < 0; ++i) {
        const bool same_nan = std::isnan(y0[i]) && std::isnan(y1[i]);
        if (!same_nan && !(std::fabs(double(y1[i]) - y0[i]) <= rel * std::fabs(y0[i]) + 1e-37)) bad = i;
      }
      char msg[200];
      std::snprintf(msg, sizeof msg, " n=%" PRId64 " kind=%d: [%" PRId64 "] %.9g vs %.9g", n, kind, bad < 0 ? 0 : bad,
                    bad < 0 ? 0.0 : double(y1[bad]), bad < 0 ? 0.0 : double(y0[bad]));
      check(bad < 0, std::string(t.isa_name) + " " + k.softmax_name + msg);
      std::vector<float> inplace = x;  // x may equal y
      k.softmax_row(inplace.data(), inplace.data(), n);
      check(std::memcmp(inplace.data(), y1.data(), n * 4) == 0, std::string(t.isa_name) + " softmax in place");
    }
  }
  // GELU over a grid of [-20, 20] (every tail: 16 lanes), random values, and the special ones
  std::vector<float> x;
  for (int i = -20000; i <= 20000; ++i) x.push_back(float(i) * 1e-3f);
  for (int i = 0; i < 2000; ++i) x.push_back(nd(rng) * 4.f);
  for (float v : {0.f, -0.f, 1e-30f, -1e-30f, 1e-40f, -1e-40f, 5.f, -5.f, -9.f, -13.f, -14.f, -30.f, 30.f, 1e30f, -1e30f,
                  3.4e38f, -3.4e38f, INFINITY, -INFINITY, NAN})
    x.push_back(v);
  for (int64_t n : {int64_t(x.size()), int64_t(1), int64_t(7), int64_t(17)}) {
    std::vector<float> y0(n), y1(n);
    ref::f32_gelu__scalar(x.data() + x.size() - n, y0.data(), n);
    k.gelu(x.data() + x.size() - n, y1.data(), n);
    double worst_rel = 0;
    int64_t bad = -1;
    for (int64_t i = 0; i < n; ++i) {
      const float xi = x[x.size() - n + i];
      const double exact = 0.5 * double(xi) * std::erfc(-double(xi) * 0.70710678118654752440);
      const double ulp_ref = std::nextafter(std::fabs(y0[i]), INFINITY) - std::fabs(y0[i]);
      const bool same_nan = std::isnan(y0[i]) && std::isnan(y1[i]);
      bool ok = same_nan || std::fabs(double(y1[i]) - y0[i]) <= 1e-6 + 4 * ulp_ref || y1[i] == y0[i];
      if (std::isfinite(exact) && std::fabs(exact) >= 1.17549435e-38) {
        const double rel = std::fabs(double(y1[i]) - exact) / std::fabs(exact);
        worst_rel = std::max(worst_rel, rel);
        ok = ok && rel <= 3e-5;
      }
      if (!ok && bad < 0) bad = i;
    }
    char msg[240];
    std::snprintf(msg, sizeof msg, " n=%" PRId64 " (max rel. error vs double %.3g)", n, worst_rel);
    std::string what = std::string(t.isa_name) + " " + k.gelu_name + msg;
    if (bad >= 0) {
      std::snprintf(msg, sizeof msg, ": x=%.9g gives %.9g, reference %.9g", double(x[x.size() - n + bad]), double(y1[bad]),
                    double(y0[bad]));
      what += msg;
    }
    check(bad < 0, what);
    if (n == int64_t(x.size())) std::printf("  %s: max rel. error vs double GELU %.3g\n", k.gelu_name, worst_rel);
  }
}

// Layer normalization: bit for bit with the scalar reference (the same 32-lane sums and
// fold, no FMA), with and without skip and beta, in place, over lengths around the lanes.
static void test_layernorm(const KernelTable& t) {
  const VMathKernels k = vmath_of(t);
  if (k.layernorm == &ref::f32_layernorm_row__scalar) return;  // the reference itself
  std::mt19937 rng(23);
  std::normal_distribution<float> nd;
  for (int64_t n : {1, 7, 8, 16, 17, 31, 32, 33, 64, 100, 384, 1000}) {
    std::vector<float> x(n), skip(n), g(n), b(n), y0(n), y1(n), yi(n);
    for (int64_t i = 0; i < n; ++i) {
      x[i] = 3.f * nd(rng) + 0.5f;
      skip[i] = nd(rng);
      g[i] = nd(rng);
      b[i] = nd(rng);
    }
    for (int variant = 0; variant < 4; ++variant) {
      const float* sk = (variant & 1) ? skip.data() : nullptr;
      const LayerNormParams p{g.data(), (variant & 2) ? b.data() : nullptr, 1e-5f};
      float m0 = 0, m1 = 0, i0 = 0, i1 = 0;
      ref::f32_layernorm_row__scalar(x.data(), sk, y0.data(), n, p, &m0, &i0);
      k.layernorm(x.data(), sk, y1.data(), n, p, &m1, &i1);
      yi = x;
      k.layernorm(yi.data(), sk, yi.data(), n, p, nullptr, nullptr);
      check(std::memcmp(y0.data(), y1.data(), size_t(n) * 4) == 0 && std::memcmp(y0.data(), yi.data(), size_t(n) * 4) == 0 &&
                m0 == m1 && i0 == i1,
            std::string(t.isa_name) + " " + k.layernorm_name + " n=" + std::to_string(n) + " variant=" +
                std::to_string(variant));
    }
  }
}

// Depthwise convolution: bit for bit with the scalar kernel (same tap order, no FMA).
static void test_dwconv(const KernelTable& t) {
  const F32DwConvKernel k = dwconv_of(t);
  if (k.fn == &f32_dwconv_nhwc__scalar) return;  // the reference itself
  std::mt19937 rng(17);
  std::normal_distribution<float> nd;
  struct Conv { int64_t C, H, W, kh, kw, s, d, pt, pl, pb, pr; bool bias; };
  const Conv convs[] = {{1, 5, 6, 3, 3, 1, 1, 1, 1, 1, 1, true},    {15, 7, 9, 3, 3, 2, 1, 1, 0, 2, 1, true},
                        {16, 9, 10, 3, 3, 1, 1, 1, 1, 1, 1, false}, {17, 8, 8, 5, 5, 1, 1, 2, 2, 2, 2, true},
                        {40, 12, 13, 3, 3, 1, 2, 2, 2, 2, 2, true}, {24, 11, 11, 7, 7, 2, 1, 3, 3, 3, 3, true},
                        {33, 6, 20, 1, 5, 1, 1, 0, 2, 0, 2, false}};
  for (const Conv& c : convs) {
    const int64_t N = 2, OH = (c.H + c.pt + c.pb - c.d * (c.kh - 1) - 1) / c.s + 1,
                  OW = (c.W + c.pl + c.pr - c.d * (c.kw - 1) - 1) / c.s + 1;
    std::vector<float> x(N * c.H * c.W * c.C), w(c.kh * c.kw * c.C), b(c.C), acc(c.C), y0(N * OH * OW * c.C, -3.f),
        y1(N * OH * OW * c.C, -3.f);
    for (auto& v : x) v = nd(rng);
    for (auto& v : w) v = nd(rng);
    for (auto& v : b) v = nd(rng);
    F32DwConvArgs a{x.data(), w.data(), c.bias ? b.data() : nullptr, y0.data(), N, c.H, c.W, c.C, OH, OW,
                    c.kh, c.kw, c.s, c.s, c.d, c.d, c.pt, c.pl};
    f32_dwconv_nhwc__scalar(a, 0, N * OH, acc.data());
    a.y = y1.data();
    k.fn(a, 0, 1, acc.data());  // row ranges as the thread pool splits them
    k.fn(a, 1, N * OH, acc.data());
    check(std::memcmp(y0.data(), y1.data(), y0.size() * 4) == 0,
          std::string(t.isa_name) + " " + k.name + " C=" + std::to_string(c.C) + " k=" + std::to_string(c.kh) + "x" +
              std::to_string(c.kw) + " s=" + std::to_string(c.s) + " d=" + std::to_string(c.d));
  }
}

// Max pooling: bit for bit with the scalar kernel (a max picks one of its inputs; NaN skipped).
static void test_maxpool(const KernelTable& t) {
  const F32MaxPoolKernel k = t.f32_maxpool;
  if (k.fn == &f32_maxpool_nhwc__scalar) return;  // the reference itself
  std::mt19937 rng(23);
  std::normal_distribution<float> nd;
  struct Pool { int64_t C, H, W, kh, kw, s, d, pt, pl, pb, pr; };
  const Pool pools[] = {{64, 12, 12, 3, 3, 2, 1, 1, 1, 1, 1}, {7, 7, 9, 3, 3, 1, 1, 1, 1, 1, 1},
                        {33, 8, 8, 5, 5, 1, 1, 2, 2, 2, 2},   {130, 5, 5, 2, 3, 1, 2, 0, 0, 2, 1},
                        {20, 10, 11, 9, 9, 1, 1, 4, 4, 4, 4}, {24, 3, 3, 2, 2, 1, 1, 3, 3, 3, 3}};
  for (const Pool& p : pools) {
    const int64_t N = 2, OH = (p.H + p.pt + p.pb - p.d * (p.kh - 1) - 1) / p.s + 1,
                  OW = (p.W + p.pl + p.pr - p.d * (p.kw - 1) - 1) / p.s + 1;
    std::vector<float> x(N * p.H * p.W * p.C), y0(N * OH * OW * p.C, 5.f), y1(N * OH * OW * p.C, 5.f);
    for (auto& v : x) v = nd(rng);
    x[3] = NAN;
    x[x.size() / 2] = INFINITY;
    F32MaxPoolArgs a{x.data(), y0.data(), N, p.H, p.W, p.C, OH, OW, p.kh, p.kw, p.s, p.s, p.d, p.d, p.pt, p.pl};
    f32_maxpool_nhwc__scalar(a, 0, N * OH);
    a.y = y1.data();
    k.fn(a, 0, 1);  // row ranges as the thread pool splits them
    k.fn(a, 1, N * OH);
    check(std::memcmp(y0.data(), y1.data(), y0.size() * 4) == 0,
          std::string(t.isa_name) + " " + k.name + " C=" + std::to_string(p.C) + " k=" + std::to_string(p.kh) + "x" +
              std::to_string(p.kw) + " s=" + std::to_string(p.s) + " d=" + std::to_string(p.d));
  }
}

// Winograd F(2x2, 3x3) transforms: bit for bit with the scalar ones (adds and subtracts in the
// same order), over channel counts around the vector widths, NaN / inf / signed zeros, outputs
// outside the image, bias, residual and ReLU.
static void test_winograd(const KernelTable& t) {
  const F32WinogradKernels k = t.f32_winograd;
  if (k.input == &f32_wino_input_f2k3__scalar) return;  // the reference itself
  std::mt19937 rng(29);
  std::normal_distribution<float> nd;
  for (int64_t C : {1, 7, 8, 9, 15, 16, 17, 33, 64, 130}) {
    std::vector<float> d(16 * C), v0(16 * C, 5.f), v1(16 * C, 5.f), m(16 * C), b(C), r(4 * C);
    for (auto& x : d) x = 10.f * nd(rng);
    for (auto& x : m) x = nd(rng);
    for (auto& x : b) x = nd(rng);
    for (auto& x : r) x = nd(rng);
    d[C / 2] = NAN, d[5 * C] = INFINITY, d[16 * C - 1] = -0.f;
    m[0] = -0.f, m[C - 1] = NAN, m[8 * C + C / 3] = -INFINITY;
    const float *dp[16], *mp[16];
    float *vp0[16], *vp1[16];
    for (int i = 0; i < 16; ++i) dp[i] = d.data() + i * C, mp[i] = m.data() + i * C, vp0[i] = v0.data() + i * C,
                                 vp1[i] = v1.data() + i * C;
    f32_wino_input_f2k3__scalar(dp, vp0, C);
    k.input(dp, vp1, C);
    check(std::memcmp(v0.data(), v1.data(), v0.size() * 4) == 0, std::string(t.isa_name) + " " + k.name + " input C=" + std::to_string(C));
    for (int variant = 0; variant < 4; ++variant) {
      std::vector<float> y0(4 * C, 5.f), y1(4 * C, 5.f);
      F32WinoOutputArgs a{};
      for (int i = 0; i < 16; ++i) a.m[i] = mp[i];
      for (int p = 0; p < 4; ++p) {
        const bool outside = variant == 3 && p % 2 == 1;
        a.y[p] = outside ? nullptr : y0.data() + p * C;
        a.res[p] = variant >= 2 ? r.data() + p * C : nullptr;
      }
      a.bias = variant >= 1 ? b.data() : nullptr;
      a.C = C;
      a.relu = variant >= 2;
      f32_wino_output_f2k3__scalar(a);
      for (int p = 0; p < 4; ++p)
        if (a.y[p]) a.y[p] = y1.data() + p * C;
      k.output(a);
      check(std::memcmp(y0.data(), y1.data(), y0.size() * 4) == 0,
            std::string(t.isa_name) + " " + k.name + " output C=" + std::to_string(C) + " variant " + std::to_string(variant));
    }
  }
}

// The AVX2 and AVX-512 row kernels run the same operations in the same order (softmax
// sums 16 lanes either way, exp scales by 2^n in one rounding): the same bits, checked
// whenever both tables run here (natively, or AVX-512 through SIMDe).
static void test_vmath_avx2_matches_avx512() {
  const KernelTable *a2 = nullptr, *a5 = nullptr;
  for (const auto& t : all_kernel_tables()) {
    if (!isa_supported(t.isa)) continue;
    if (t.isa == Isa::kAvx2) a2 = &t;
    if (t.isa == Isa::kAvx512Vnni) a5 = &t;
  }
  if (!a2 || !a5) return;
  std::mt19937 rng(19);
  std::normal_distribution<float> nd;
  int64_t rows_same = 0, gelu_same = 0, total = 0;
  for (int64_t n : {1, 5, 8, 15, 16, 17, 31, 33, 128, 129, 384, 1000}) {
    for (float scale : {0.1f, 3.f, 30.f}) {
      std::vector<float> x(n), y2(n), y5(n);
      for (auto& v : x) v = scale * nd(rng);
      a2->vmath.softmax_row(x.data(), y2.data(), n);
      a5->vmath.softmax_row(x.data(), y5.data(), n);
      bool same = true;
      for (int64_t i = 0; i < n; ++i) {
        if (std::memcmp(&y2[i], &y5[i], 4) == 0) continue;
#if defined(LOWBIT_EMULATE_AVX512)
        // SIMDe's scalef is a * exp2(floor(b)): 2^-150 underflows to 0 before the multiply, so
        // where n = -150 it gives 0 and the hardware (and AVX2) round(p * 2^-150) = 2^-149
        if (std::fabs(y2[i]) <= 1.5e-45f && std::fabs(y5[i]) <= 1.5e-45f) continue;
#endif
        std::printf("  softmax n=%" PRId64 " scale=%g: [%" PRId64 "] x=%.9g avx2 %.9g avx512 %.9g\n", n, double(scale), i,
                    double(x[i]), double(y2[i]), double(y5[i]));
        same = false;
        break;
      }
      rows_same += same;
      a2->vmath.gelu(x.data(), y2.data(), n);
      a5->vmath.gelu(x.data(), y5.data(), n);
      gelu_same += std::memcmp(y2.data(), y5.data(), n * 4) == 0;
      ++total;
    }
  }
  std::vector<float> x;  // GELU over [-20, 20] and the special values
  for (int i = -20000; i <= 20000; ++i) x.push_back(float(i) * 1e-3f);
  for (float v : {0.f, -0.f, 1e-40f, -1e-40f, -13.f, 30.f, 3.4e38f, -3.4e38f, INFINITY, -INFINITY}) x.push_back(v);
  std::vector<float> y2(x.size()), y5(x.size());
  a2->vmath.gelu(x.data(), y2.data(), int64_t(x.size()));
  a5->vmath.gelu(x.data(), y5.data(), int64_t(x.size()));
  bool grid_same = true;
  for (size_t i = 0; i < x.size(); ++i)
    grid_same &= std::memcmp(&y2[i], &y5[i], 4) == 0 || (std::isnan(y2[i]) && std::isnan(y5[i]));
  std::printf("  avx2 vs avx512 rows: softmax %" PRId64 "/%" PRId64 " rows identical, gelu %" PRId64 "/%" PRId64 "\n",
              rows_same, total, gelu_same, total);
  check(rows_same == total, "f32_softmax_row__avx2 gives f32_softmax_row__avx512's bits");
  check(gelu_same == total && grid_same, "f32_gelu__avx2 gives f32_gelu__avx512's bits");
}

// Arguments: ISA names to test (default: every table this CPU supports).
// The transposing pack (the Attention op's K^T): the same bytes as the scalar reference, for
// full and partial panels, K not a multiple of the 16 x 16 blocks, and a row stride past K.
static void test_pack_bt(const KernelTable& t) {
  std::mt19937 rng(11);
  for (int64_t K : {1, 5, 16, 17, 32, 33, 64, 100})
    for (int64_t N : {1, 7, 16, 17, 31, 128, 129})
      for (int64_t pad : {0, 5}) {
        const int64_t ld = K + pad;
        std::vector<float> bt(N * ld);
        for (auto& v : bt) v = float(int(rng() % 2001) - 1000) * 0.25f;
        std::vector<float> a(f32_gemm_packed_floats(K, N), 7.f), b(a.size(), -7.f);
        ref::f32_pack_bt__scalar(K, N, bt.data(), ld, a.data());
        t.f32_pack_bt(K, N, bt.data(), ld, b.data());
        check(std::memcmp(a.data(), b.data(), a.size() * 4) == 0, std::string(t.isa_name) + " " + t.f32_pack_bt_name +
                                                                      " K=" + std::to_string(K) + " N=" + std::to_string(N) +
                                                                      " ld=" + std::to_string(ld));
      }
}

int main(int argc, char** argv) {
  std::vector<std::string> only(argv + 1, argv + argc);
  std::string feats;
  for (auto& f : cpu::feature_names()) feats += f + " ";
  std::printf("features: %s\n", feats.c_str());
  std::printf("vendor: %s\n", cpu::features().vendor.c_str());
  select_kernels("");
  std::printf("selected: %s\n", kernels().isa_name);
  int tested = 0;
  for (const auto& t : all_kernel_tables()) {
    if (!isa_supported(t.isa)) continue;
    if (!only.empty() && std::find(only.begin(), only.end(), std::string(t.isa_name)) == only.end()) continue;
    std::printf("testing %s (%s, %s)\n", t.isa_name, t.f32_gemm_name, t.crc32c_name);
    test_crc(t);
    test_probes(t);
    test_gemm(t);
    if (&t != &all_kernel_tables().back()) {  // the scalar table is the reference itself
      std::printf("  quantized: %s, %s, %s\n", t.qs8_quant_name, t.qs8_gemm_name, t.q4_gemm_name);
      test_quant(t);
      test_quantized(t, all_kernel_tables().back());
      test_quant_split(t, all_kernel_tables().back());
      test_qw_axpy(t, all_kernel_tables().back());
      test_pack_bt(t);
      std::printf("  rows: %s, %s, %s, %s, %s\n", vmath_of(t).softmax_name, vmath_of(t).gelu_name, dwconv_of(t).name,
                  t.f32_maxpool.name, t.f32_winograd.name);
      test_vmath(t);
      test_layernorm(t);
      test_dwconv(t);
      test_maxpool(t);
      test_winograd(t);
      std::printf("  sparse: %s, %s, %s\n", t.f32_spmm_name, t.qs8_spmm_name, t.qs8_bspmm_name);
      test_sparse(t, all_kernel_tables().back());
      test_bspmm_unstage(t);
    }
    ++tested;
  }
#if defined(LOWBIT_X86)
  // The avx512vnni table holds one of two 4-bit kernels (table codes decoded by vpermb where the
  // CPU has VBMI, by vpshufb elsewhere): the one it did not pick is tested too, where it can run
  // (the vpermb one anywhere in a SIMDe build)
  for (const auto& t : all_kernel_tables()) {
    if (t.isa != Isa::kAvx512Vnni || !isa_supported(t.isa)) continue;
    if (!only.empty() && std::find(only.begin(), only.end(), std::string(t.isa_name)) == only.end()) continue;
    KernelTable alt = t;
    const bool vbmi = t.q4_gemm == &avx512::q4_gemm_8x32c8__avx512vbmi;
    alt.q4_gemm = vbmi ? &avx512::q4_gemm_8x32c8__avx512vnni : &avx512::q4_gemm_8x32c8__avx512vbmi;
    alt.q4_gemm_name = vbmi ? "q4_gemm_8x32c8__avx512vnni" : "q4_gemm_8x32c8__avx512vbmi";
    if (!vbmi && !cpu::features().avx512vbmi && !cpu::features().avx512_emulated) continue;
    std::printf("testing %s with %s\n", t.isa_name, alt.q4_gemm_name);
    test_quantized(alt, all_kernel_tables().back());
  }
#endif
  test_vmath_avx2_matches_avx512();
  std::printf("isas tested: %d\n", tested);
  std::printf("%d passed, %d failed\n", g_pass, g_fail);
  return g_fail ? 1 : 0;
}
