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
    ++tested;
  }
  std::printf("isas tested: %d\n", tested);
  std::printf("%d passed, %d failed\n", g_pass, g_fail);
  return g_fail ? 1 : 0;
}
