"""The C++ kernel test (tests/native/kernels_test.cc) built without Python: for
this machine with the same per-file ISA flags as the extension, and for aarch64
with Debian's cross compiler, run under qemu-aarch64 (a CPU with CRC + dotprod,
and an older one without dotprod, to exercise detection and the fallback)."""

import concurrent.futures
import os
import platform
import re
import shutil
import subprocess

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")
CSRC = os.path.join(ROOT, "csrc")
TEST = os.path.join(os.path.dirname(__file__), "native", "kernels_test.cc")


def cmake_sources(var):
    """The files of a source list in CMakeLists.txt (paths under csrc/): the test builds what the
    extension builds, and a new kernel joins the tests by being added there."""
    text = open(os.path.join(ROOT, "CMakeLists.txt")).read()
    m = re.search(r"set\(" + var + r"\s([^)]*)\)", text)
    assert m, f"{var} not found in CMakeLists.txt"
    files = m.group(1).split()
    assert files and all(f.startswith("csrc/") for f in files), files
    return [f[len("csrc/"):] for f in files]


# the scalar kernels, packing and dispatch (the runtime's ops are not needed)
COMMON = [f for f in cmake_sources("LOWBIT_COMMON_SOURCES") if f.startswith(("cpu/", "kernels/"))]
AVX2 = ["-mavx2", "-mfma", "-mf16c"]
AVX512 = ["-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx512vnni", "-mavx2", "-mfma", "-mf16c"]
AVX512_SOURCES = cmake_sources("LOWBIT_X86_AVX512_SOURCES")
AMX = ["-mamx-tile", "-mamx-int8", "-mamx-bf16", "-mavx512bf16", *AVX512]
X86 = {**{f: ["-msse4.2"] for f in cmake_sources("LOWBIT_X86_SSE42_SOURCES")},
       **{f: AVX2 for f in cmake_sources("LOWBIT_X86_AVX2_SOURCES")},
       **{f: AVX512 for f in AVX512_SOURCES},
       **{f: AMX for f in cmake_sources("LOWBIT_X86_AMX_SOURCES")}}
DOT = ["-march=armv8.2-a+dotprod+fp16"]
ARM = {**{f: ["-march=armv8-a+crc"] for f in cmake_sources("LOWBIT_ARM_CRC_SOURCES")},
       **{f: DOT for f in cmake_sources("LOWBIT_ARM_DOT_SOURCES")}}
REQUIRE_QEMU = os.environ.get("LOWBIT_REQUIRE_QEMU") == "1"


def build(cxx, defs, isa_files, out_dir, extra=()):
    """Compiles COMMON + the test at -O2 and each ISA file with its own flags (flags after the
    base ones, so an -O there wins), in parallel (largest ISA files first), and links."""
    base = ["-O2", "-std=c++17", "-ffp-contract=off", f"-I{CSRC}", *defs]
    jobs = [(src, flags) for src, flags in isa_files.items()]
    jobs.sort(key=lambda j: -os.path.getsize(os.path.join(CSRC, j[0])))
    jobs += [(src, []) for src in COMMON + [TEST]]

    def compile_one(i):
        src, flags = jobs[i]
        path = src if os.path.isabs(src) else os.path.join(CSRC, src)
        obj = os.path.join(out_dir, (os.path.basename(path) if os.path.isabs(src) else src.replace("/", "_")) + f".{i}.o")
        r = subprocess.run([cxx, *base, *flags, "-c", path, "-o", obj], capture_output=True, text=True)
        assert r.returncode == 0, f"{src}:\n{r.stderr[-4000:]}"
        return obj

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        objs = list(pool.map(compile_one, range(len(jobs))))
    exe = os.path.join(out_dir, "kernels_test")
    subprocess.run([cxx, *objs, "-o", exe, "-pthread", *extra], check=True, capture_output=True, text=True)
    return exe


def run_and_check(cmd, min_isas):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    m = re.search(r"^(\d+) passed, (\d+) failed$", r.stdout, re.M)
    assert m and int(m.group(1)) > 0 and m.group(2) == "0", r.stdout
    isas = int(re.search(r"isas tested: (\d+)", r.stdout).group(1))
    assert isas >= min_isas, r.stdout
    return r.stdout


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="host build is for x86-64 here")
def test_native_host(tmp_path):
    if not shutil.which("g++"):
        pytest.skip("no g++")
    exe = build("g++", ["-DLOWBIT_X86=1"], X86, str(tmp_path))
    import lowbit
    out = run_and_check([exe], len(lowbit.cpu_info()["supported_isas"]))
    assert f"selected: {lowbit.cpu_info()['isa']}" in out
    if "avx512vnni" in lowbit.cpu_info()["supported_isas"]:
        # table codes by vpermb where the CPU has VBMI; the kernel test then runs the other one too
        vbmi = "avx512vbmi" in lowbit.cpu_info()["features"]
        picked, other = ("avx512vbmi", "avx512vnni") if vbmi else ("avx512vnni", "avx512vbmi")
        assert f"qs8_gemm_8x32c4__avx512vnni, q4_gemm_8x32c8__{picked}" in out
        assert (f"testing avx512vnni with q4_gemm_8x32c8__{other}" in out) == vbmi, out[-2000:]


def _arm_tools():
    cxx, qemu = shutil.which("aarch64-linux-gnu-g++"), shutil.which("qemu-aarch64")
    if not (cxx and qemu):
        if REQUIRE_QEMU:
            pytest.fail("aarch64-linux-gnu-g++ and qemu-aarch64 are required (LOWBIT_REQUIRE_QEMU=1)")
        pytest.skip("needs g++-aarch64-linux-gnu and qemu-user (installed by .ci/run)")
    return cxx, qemu


@pytest.fixture(scope="module")
def arm_exe(tmp_path_factory):
    cxx, qemu = _arm_tools()
    return build(cxx, ["-DLOWBIT_ARM64=1"], ARM, str(tmp_path_factory.mktemp("arm")), extra=["-static"]), qemu


def test_native_aarch64_with_crc_and_dotprod(arm_exe):
    exe, qemu = arm_exe
    out = run_and_check([qemu, "-cpu", "max", exe], 2)
    assert "selected: neondot" in out and "crc32c__armv8crc" in out
    # the sdot int8 and 4-bit kernels ran the full sweep against the scalar reference
    assert "quantized: qs8_quant__scalar, qs8_gemm_4x16c4__neondot, q4_gemm_4x16c8__neondot" in out
    # and the sparse kernels (fp32 SELL, int8 K16 tbl+sdot, int8 1x4 blocks with and without row tiles)
    assert "sparse: f32_spmm_s8m4__neon, qs8_spmm_k16m4__neondot, qs8_bspmm_s8c4__neondot" in out
    assert "FAIL" not in out


def test_native_aarch64_without_dotprod_falls_back(arm_exe):
    exe, qemu = arm_exe
    out = run_and_check([qemu, "-cpu", "cortex-a53", exe], 1)
    assert "selected: scalar" in out


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 ISA objects")
@pytest.mark.parametrize("src,flags", list(X86.items()))
def test_isa_objects_export_only_their_kernels(tmp_path, src, flags):
    """An ISA translation unit must define no weak or inline symbols the linker
    could pick for baseline code (an AVX-512 copy of std::min would SIGILL on
    an AVX2 machine): only its namespaced kernel entry points are global."""
    if not shutil.which("g++") or not shutil.which("nm"):
        pytest.skip("needs g++ and nm")
    obj = str(tmp_path / "isa.o")
    subprocess.run(["g++", "-O2", "-std=c++17", "-ffp-contract=off", f"-I{CSRC}", "-DLOWBIT_X86=1", *flags, "-c",
                    os.path.join(CSRC, src), "-o", obj], check=True)
    out = subprocess.run(["nm", "-C", "--defined-only", obj], capture_output=True, text=True, check=True).stdout
    exported = [line for line in out.splitlines() if line.split()[1] in ("T", "W", "V", "D", "B", "u", "i")]
    assert exported, out
    ns = ("lowbit::sse42::" if "sse42" in src else "lowbit::avx2::" if "avx2" in src else
          "lowbit::amx::" if "amx" in src else "lowbit::avx512::")
    for line in exported:
        assert line.split()[1] == "T" and ns in line, f"{src} exports {line!r}"


def test_threadpool_stress_under_thread_sanitizer(tmp_path):
    """Runs tests/native/threadpool_test.cc built with -fsanitize=thread (plain
    build where TSan is unavailable): no data race reports, every item once."""
    if not shutil.which("g++"):
        pytest.skip("no g++")
    src = os.path.join(os.path.dirname(__file__), "native", "threadpool_test.cc")
    exe = str(tmp_path / "tp")
    base = ["g++", "-O1", "-g", "-std=c++17", f"-I{CSRC}", src, os.path.join(CSRC, "runtime", "threadpool.cc"),
            "-o", exe, "-pthread"]
    tsan = subprocess.run(base + ["-fsanitize=thread"], capture_output=True, text=True)
    if tsan.returncode != 0:
        subprocess.run(base, check=True)
    env = dict(os.environ, TSAN_OPTIONS="halt_on_error=1 exitcode=66")
    r = subprocess.run([exe], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout + r.stderr[-4000:]
    assert "WARNING: ThreadSanitizer" not in r.stderr
    assert re.search(r"^\d+ passed, 0 failed$", r.stdout, re.M), r.stdout
