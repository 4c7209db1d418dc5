"""The AVX-512 kernels tested on a CPU without AVX-512: tests/native/kernels_test.cc built with
every AVX-512 translation unit of CMakeLists.txt (LOWBIT_X86_AVX512_SOURCES) compiled against
SIMDe's portable AVX-512 (Debian's libsimde-dev) instead of -mavx512*, and cpu.cc told to
report AVX-512, so the avx512vnni table is selected and checked against the scalar references
like real hardware: the integer paths bit for bit, the float ones within their stated
tolerances (see docs/kernels.md, "Testing AVX-512 without AVX-512").

Runs when the SIMDe headers are there and the CPU lacks AVX-512 VNNI (an AVX-512 CPU runs the
real kernels in test_native.py). LOWBIT_REQUIRE_AVX512_EMULATION=1 (set by .ci/run) makes it
run whatever the CPU, so on AVX-512 hardware the emulation is cross-checked against the same
references, and turns a missing SIMDe into a failure instead of a skip."""

import os
import re
import platform
import shutil
import subprocess
import time

import pytest

from test_native import AVX512_SOURCES, X86, build, cmake_sources, run_and_check

REQUIRE = os.environ.get("LOWBIT_REQUIRE_AVX512_EMULATION") == "1"
# Compiled for the AVX2 + FMA + F16C the emulation runs on. -O0: SIMDe inlines every intrinsic
# into the kernels' unrolled tiles and GCC then needs minutes per kernel at -O1 (measured: 98 s
# of CPU for q4-gemm/avx512vnni.cc, 8 s at -O0); the vpdpbusd helpers, the hot spot of the run,
# are kept at -O2 (kernels/common/avx512.h), and the run takes ~5 s of CPU.
EMULATION = ["-O0", "-DLOWBIT_EMULATE_AVX512", "-Wno-psabi", "-mavx2", "-mfma", "-mf16c"]


def _simde_ok(cxx):
    """True when <simde/x86/avx512.h> compiles (extra include dirs from LOWBIT_SIMDE_INCLUDE)."""
    r = subprocess.run([cxx, "-std=c++17", "-mavx2", "-mfma", "-mf16c", *_simde_include(), "-fsyntax-only", "-x",
                        "c++", "-"], input="#include <simde/x86/avx512.h>\n", capture_output=True, text=True)
    return r.returncode == 0


def _simde_include():
    d = os.environ.get("LOWBIT_SIMDE_INCLUDE")
    return [f"-I{d}"] if d else []


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the emulation builds x86-64 kernels")
def test_avx512_kernels_emulated(tmp_path):
    import lowbit
    cxx = shutil.which("g++")
    if not cxx:
        pytest.skip("no g++")
    native = "avx512vnni" in lowbit.cpu_info()["supported_isas"]
    if native and not REQUIRE:
        pytest.skip("this CPU runs the AVX-512 kernels natively (test_native_host); "
                    "LOWBIT_REQUIRE_AVX512_EMULATION=1 cross-checks the emulation here")
    if not _simde_ok(cxx):
        msg = "needs the SIMDe headers (apt-get install libsimde-dev; installed by .ci/run)"
        if REQUIRE:
            pytest.fail(msg + " (LOWBIT_REQUIRE_AVX512_EMULATION=1)")
        pytest.skip(msg)
    emulated = {src: EMULATION + _simde_include() for src in AVX512_SOURCES}
    amx = set(cmake_sources("LOWBIT_X86_AMX_SOURCES"))  # no AMX in SIMDe: the emulated build has no amx level
    others = {src: flags for src, flags in X86.items() if src not in emulated and src not in amx}
    t0 = time.monotonic()
    exe = build(cxx, ["-DLOWBIT_X86=1", "-DLOWBIT_EMULATE_AVX512"], {**emulated, **others}, str(tmp_path))
    t1 = time.monotonic()
    # What runs is emulated: no AVX-512 instruction in the kernels' objects, so a CPU without it
    # can run them, and on AVX-512 hardware this really checks SIMDe's versions.
    for src in AVX512_SOURCES:
        obj = [f for f in os.listdir(tmp_path) if f.startswith(src.replace("/", "_") + ".") and f.endswith(".o")]
        assert len(obj) == 1, (src, obj)
        dis = subprocess.run(["objdump", "-d", str(tmp_path / obj[0])], capture_output=True, text=True, check=True).stdout
        assert "%ymm" in dis and "%zmm" not in dis and "%k" not in dis and "vpdpbusd" not in dis, src
    out = run_and_check([exe, "avx512vnni"], 1)  # the other tables run natively in test_native_host
    t2 = time.monotonic()
    print(f"emulated AVX-512 kernel test: build {t1 - t0:.1f} s, run {t2 - t1:.1f} s")
    assert "(AVX-512 emulated by SIMDe)" in out and "selected: avx512vnni" in out, out[:2000]
    # every AVX-512 kernel of the table ran the sweeps against the scalar references
    assert "testing avx512vnni (f32_gemm_12x32__avx512, crc32c__sse42)" in out
    # the table picks the vpermb table decode by the host's CPUID; the other 4-bit kernel is tested
    # after the tables either way (SIMDe runs vpermb on any CPU)
    vbmi = re.search(r"^features: .*\bavx512vbmi\b", out, re.M) is not None
    picked, other = ("avx512vbmi", "avx512vnni") if vbmi else ("avx512vnni", "avx512vbmi")
    assert f"quantized: qs8_quant__avx512, qs8_gemm_8x32c4__avx512vnni, q4_gemm_8x32c8__{picked}" in out
    assert f"testing avx512vnni with q4_gemm_8x32c8__{other}" in out
    assert "rows: f32_softmax_row__avx512, f32_gelu__avx512, f32_dwconv_nhwc__avx512, f32_maxpool_nhwc__avx512, f32_wino_f2k3__avx512" in out
    # the int8 sparse kernels (fp32 SELL-8 stays on the AVX2 kernel in this table)
    assert "sparse: f32_spmm_s8m4__avx2, qs8_spmm_k16m4__avx512vnni, qs8_bspmm_s8c4__avx512vnni" in out
    assert "FAIL" not in out
