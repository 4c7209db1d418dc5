// Native kernel test, built without Python: every kernel table this CPU supports
// must agree with the scalar reference (CRC32C exactly; f32 GEMM bit for bit,
// per the FMA-chain contract). Built for the host and, cross-compiled, for
// aarch64 under qemu (tests/test_native.py). Prints "N passed, M failed".
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
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

// The split quantizer (outliers left in float): every output equal to the reference's.
static void test_quant_split(const KernelTable& t, const KernelTable& ref_t) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  for (int64_t K : {1, 7, 8, 9, 33, 100, 257}) {
    const int64_t M = 6, Kp = (K + 31) / 32 * 32, NG = Kp / 32;
    std::vector<float> x(M * K);
    for (auto& v : x) v = nd(rng);
    x[rng() % K] = 50.0f;                                 // row 0: an outlier
    for (int64_t k = 0; k < K; ++k) x[K + k] = 0.0f;      // row 1: zeros
    for (int64_t k = 0; k < (K + 1) / 2; ++k) x[2 * K + k] = -3.0f;  // row 2: ties
    x[3 * K + rng() % K] = std::numeric_limits<float>::quiet_NaN();
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
    if (&t != &all_kernel_tables().back()) {  // the scalar table is the reference itself
      std::printf("  quantized: %s, %s, %s\n", t.qs8_quant_name, t.qs8_gemm_name, t.q4_gemm_name);
      test_quantized(t, all_kernel_tables().back());
      test_quant_split(t, all_kernel_tables().back());
      test_qw_axpy(t, all_kernel_tables().back());
    }
    ++tested;
  }
  std::printf("isas tested: %d\n", tested);
  std::printf("%d passed, %d failed\n", g_pass, g_fail);
  return g_fail ? 1 : 0;
}
