// Native kernel test, built without Python: every kernel table this CPU supports
// must agree with the scalar reference (CRC32C exactly; f32 GEMM bit for bit,
// per the FMA-chain contract). Built for the host and, cross-compiled, for
// aarch64 under qemu (tests/test_native.py). Prints "N passed, M failed".
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cpu/cpu.h"
#include "cpu/dispatch.h"

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

static void test_gemm(const KernelTable& t) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  const int64_t Ms[] = {1, 2, 3, 4, 5, 6, 7, 13, 17, 33};
  const int64_t NKs[][2] = {{1, 1}, {16, 16}, {17, 15}, {33, 64}, {100, 31}};
  for (auto& nk : NKs) {
    const int64_t N = nk[0], K = nk[1];
    std::vector<float> B(K * N), bias(N);
    for (auto& v : B) v = nd(rng);
    for (auto& v : bias) v = nd(rng);
    std::vector<float> Bp(f32_gemm_packed_floats(K, N) + 16);
    float* bp = Bp.data();
    while (reinterpret_cast<uintptr_t>(bp) % 64) ++bp;
    f32_gemm_pack_b(K, N, B.data(), N, bp);
    for (int64_t M : Ms) {
      std::vector<float> A(M * K);
      for (auto& v : A) v = nd(rng);
      for (int act = 0; act < 2; ++act) {
        std::vector<float> c0(M * N, -1.f), c1(M * N, -2.f);
        F32GemmArgs g{M, N, K, A.data(), K, bp, bias.data(), c0.data(), N, Activation(act)};
        ref::f32_gemm_1x16__scalar(g, 0, M, 0, N);
        g.C = c1.data();
        t.f32_gemm(g, 0, M, 0, N);
        check(std::memcmp(c0.data(), c1.data(), c0.size() * 4) == 0,
              std::string(t.isa_name) + " f32_gemm M=" + std::to_string(M) + " N=" + std::to_string(N) +
                  " K=" + std::to_string(K) + " act=" + std::to_string(act));
      }
    }
  }
}

// Quantized paths: activations through the table's quantizer (biased when its int8 GEMM asks),
// then its GEMM; the reference pipeline is the scalar quantizer + scalar GEMM. Exact match.
struct QProblem {
  int64_t M, K, N;
  std::vector<float> x, bias;
};

static std::vector<float> run_q(const KernelTable& t, const QProblem& p, const uint8_t* W, bool q4, const Q4Layout& lay,
                                Activation act) {
  const int64_t Kp = q4 ? q4_kg(p.K, lay.group) : qs8_kp(p.K), NG = q4 ? Kp / lay.group : 0;
  std::vector<int8_t> q(p.M * Kp + 64);
  std::vector<float> sc(p.M);
  std::vector<int32_t> gs(p.M * (NG ? NG : 1));
  Qs8QuantArgs qa{p.x.data(), p.K, p.K, Kp, q.data(), Kp, sc.data(), q4 ? gs.data() : nullptr, q4 ? lay.group : 0, NG,
                  !q4 && t.qs8_gemm_biased};
  t.qs8_quant(qa, 0, p.M);
  std::vector<float> y(p.M * p.N, -7.0f);
  if (q4) {
    Q4GemmArgs g{p.M, p.N, p.K, lay, q.data(), Kp, sc.data(), gs.data(), W, p.bias.data(), y.data(), p.N, act};
    t.q4_gemm(g, 0, p.M, 0, p.N);
  } else {
    Qs8GemmArgs g{p.M, p.N, p.K, q.data(), Kp, sc.data(), W, p.bias.data(), y.data(), p.N, act};
    t.qs8_gemm(g, 0, p.M, 0, p.N);
  }
  return y;
}

static void test_quantized(const KernelTable& t, const KernelTable& ref_t) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd;
  const int64_t Ms[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 16, 17, 31, 32, 33, 63, 64, 65, 128};
  const int64_t KNs[][2] = {{5, 17}, {37, 33}, {100, 47}, {129, 70}};
  for (auto& kn : KNs) {
    const int64_t K = kn[0], N = kn[1];
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
      struct Q4W { Q4Layout lay; std::vector<uint8_t> buf; uint8_t* p; };
      std::vector<Q4W> q4s;
      for (int64_t G : {32, 64, 128})
        for (int kind = 0; kind < 3; ++kind) {
          Q4Layout lay{kind == 2 ? Q4Kind::kTable : Q4Kind::kAffine, kind == 1, G};
          const int64_t NG = q4_kg(K, G) / G;
          std::vector<uint8_t> U(K * N), Z(NG * N);
          std::vector<uint16_t> S(NG * N);
          std::vector<int8_t> T(16);
          for (auto& v : U) v = extreme ? 15 : uint8_t(rng() % 16);
          for (auto& v : Z) v = extreme ? 0 : uint8_t(rng() % 16);
          for (size_t i = 0; i < S.size(); ++i) S[i] = (i % 7 == 0) ? 0 : uint16_t(0x2000 + rng() % 0x1000);  // f16 ~ 0.008..0.03, some 0
          for (int i = 0; i < 16; ++i) T[i] = extreme ? int8_t(i % 2 ? -127 : 127) : int8_t(int(rng() % 255) - 127);
          Q4W w{lay, std::vector<uint8_t>(q4_parts(K, N, lay).total + 64), nullptr};
          w.p = w.buf.data();
          while (reinterpret_cast<uintptr_t>(w.p) % 64) ++w.p;
          q4_gemm_pack(K, N, lay, U.data(), S.data(), Z.data(), T.data(), w.p);
          q4s.push_back(std::move(w));
        }
      for (int64_t M : Ms) {
        QProblem p{M, K, N, std::vector<float>(M * K), std::vector<float>(N)};
        for (auto& v : p.x) v = extreme ? ((rng() & 1) ? 1.0f : -1.0f) : nd(rng);
        for (auto& v : p.bias) v = nd(rng);
        const std::string where = " M=" + std::to_string(M) + " K=" + std::to_string(K) + " N=" + std::to_string(N) +
                                  (extreme ? " extreme" : "");
        for (int act = 0; act < 2; ++act) {
          const Q4Layout none{Q4Kind::kAffine, false, 32};
          auto a = run_q(ref_t, p, w8, false, none, Activation(act));
          auto b = run_q(t, p, w8, false, none, Activation(act));
          check(std::memcmp(a.data(), b.data(), a.size() * 4) == 0, std::string(t.isa_name) + " qs8_gemm" + where);
          for (auto& w : q4s) {
            auto c = run_q(ref_t, p, w.p, true, w.lay, Activation(act));
            auto d = run_q(t, p, w.p, true, w.lay, Activation(act));
            check(std::memcmp(c.data(), d.data(), c.size() * 4) == 0,
                  std::string(t.isa_name) + " q4_gemm kind=" + std::to_string(int(w.lay.kind)) + (w.lay.asym ? "a" : "") +
                      " G=" + std::to_string(w.lay.group) + where);
          }
        }
      }
    }
  }
}

// fp32 row kernels and depthwise convolution (kernels/f32-vmath, kernels/f32-dwconv):
// depthwise bit for bit against the reference; softmax and GELU within the ulp
// bounds of docs/kernels.md (tests/kernels/test_f32_vmath.py measures them in detail).
static int64_t ulp_diff(float a, float b) {
  int32_t ia, ib;
  std::memcpy(&ia, &a, 4);
  std::memcpy(&ib, &b, 4);
  const int64_t oa = ia < 0 ? -int64_t(ia & 0x7fffffff) : ia, ob = ib < 0 ? -int64_t(ib & 0x7fffffff) : ib;
  return oa > ob ? oa - ob : ob - oa;
}

static void test_f32_rows(const KernelTable& t) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd;
  const std::string isa = t.isa_name;
  for (int64_t n : {1, 7, 8, 9, 15, 16, 17, 31, 33, 128, 129, 384}) {
    std::vector<float> x(n), y(n), r(n);
    for (auto& v : x) v = 4.f * nd(rng);
    ref::f32_gelu__scalar(x.data(), r.data(), n);
    t.vmath.gelu(x.data(), y.data(), n);
    bool ok = true;
    for (int64_t i = 0; i < n; ++i) ok &= ulp_diff(y[i], r[i]) <= (x[i] >= 0 ? 8 : 16 + int64_t(2 * x[i] * x[i]));
    check(ok, isa + " f32 gelu n=" + std::to_string(n));
    ref::f32_softmax_row__scalar(x.data(), r.data(), n);
    t.vmath.softmax_row(x.data(), y.data(), n);
    ok = true;
    for (int64_t i = 0; i < n; ++i) ok &= r[i] < 1e-37f ? std::fabs(y[i] - r[i]) < 1e-44f : ulp_diff(y[i], r[i]) <= 8 + n / 32;
    check(ok, isa + " f32 softmax n=" + std::to_string(n));
  }
  struct G { int64_t C, H, W, kh, kw, s, d, p; };
  for (const G& g : {G{8, 7, 9, 3, 3, 1, 1, 1}, G{13, 10, 11, 3, 3, 2, 1, 1}, G{24, 9, 9, 5, 5, 1, 2, 4},
                     G{17, 6, 14, 7, 7, 1, 1, 3}, G{33, 5, 5, 1, 1, 1, 1, 0}}) {
    const int64_t OH = (g.H + 2 * g.p - g.d * (g.kh - 1) - 1) / g.s + 1, OW = (g.W + 2 * g.p - g.d * (g.kw - 1) - 1) / g.s + 1;
    std::vector<float> x(2 * g.H * g.W * g.C), w(g.kh * g.kw * g.C), b(g.C), y0(2 * OH * OW * g.C), y1(y0.size()), acc(g.C);
    for (auto& v : x) v = nd(rng);
    for (auto& v : w) v = nd(rng);
    for (auto& v : b) v = nd(rng);
    F32DwConvArgs a{x.data(), w.data(), b.data(), y0.data(), 2, g.H, g.W, g.C, OH, OW, g.kh, g.kw, g.s, g.s, g.d, g.d, g.p, g.p};
    f32_dwconv_nhwc__scalar(a, 0, 2 * OH, acc.data());
    a.y = y1.data();
    t.f32_dwconv.fn(a, 0, 2 * OH, acc.data());
    check(std::memcmp(y0.data(), y1.data(), y0.size() * 4) == 0,
          isa + " f32 dwconv C=" + std::to_string(g.C) + " k=" + std::to_string(g.kh) + " s=" + std::to_string(g.s));
  }
}

int main() {
  std::string feats;
  for (auto& f : cpu::feature_names()) feats += f + " ";
  std::printf("features: %s\n", feats.c_str());
  select_kernels("");
  std::printf("selected: %s\n", kernels().isa_name);
  int tested = 0;
  for (const auto& t : all_kernel_tables()) {
    if (!isa_supported(t.isa)) continue;
    std::printf("testing %s (%s, %s)\n", t.isa_name, t.f32_gemm_name, t.crc32c_name);
    test_crc(t);
    test_gemm(t);
    std::printf("  f32 rows: %s, %s, %s\n", t.vmath.softmax_name, t.vmath.gelu_name, t.f32_dwconv.name);
    test_f32_rows(t);
    if (&t != &all_kernel_tables().back()) {  // the scalar table is the reference itself
      std::printf("  quantized: %s, %s, %s\n", t.qs8_quant_name, t.qs8_gemm_name, t.q4_gemm_name);
      test_quantized(t, all_kernel_tables().back());
    }
    ++tested;
  }
  std::printf("isas tested: %d\n", tested);
  std::printf("%d passed, %d failed\n", g_pass, g_fail);
  return g_fail ? 1 : 0;
}
