"""CPU detection, the dispatch override, and the thread pool."""

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import lowbit

import models
from conftest import ISAS


def _py(code, **env):
    e = dict(os.environ)
    e.update(env)
    return subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, timeout=60)


def test_cpu_info_shape():
    info = lowbit.cpu_info()
    assert isinstance(info["features"], list) and info["features"]
    assert info["isa"] in ("scalar", "avx2", "avx512vnni", "amx", "neondot")
    assert info["isa"] == info["supported_isas"][0]  # best available is the default
    assert set(info["kernels"]) >= {"f32-gemm", "crc32c"}
    assert all(isinstance(v, str) and v for v in info["kernels"].values())


def test_features_match_proc_cpuinfo():
    if not os.path.exists("/proc/cpuinfo"):
        pytest.skip("no /proc/cpuinfo")
    flags = open("/proc/cpuinfo").read()
    feats = lowbit.cpu_info()["features"]
    for ours, linux in [("avx2", "avx2"), ("avx512vnni", "avx512_vnni"), ("avx512f", "avx512f"), ("fma", "fma")]:
        assert (ours in feats) == (f" {linux}" in flags), ours
    # AMX also needs the kernel's permission (arch_prctl), which Linux lists AMX only when it can grant
    assert ("amx-int8" in feats) <= (" amx_int8" in flags and " amx_tile" in flags)


@pytest.mark.parametrize("isa", ISAS)
def test_forced_isa_is_selected(isa):
    r = _py("import lowbit, json; print(json.dumps(lowbit.cpu_info()))", LOWBIT_ISA=isa)
    assert r.returncode == 0, r.stderr
    import json
    info = json.loads(r.stdout)
    assert info["isa"] == isa
    if isa == "scalar":
        assert "scalar" in info["kernels"]["f32-gemm"] and "scalar" in info["kernels"]["crc32c"]
    elif isa == "amx":  # the avx512vnni level with AMX tiles for the int8 GEMM
        assert info["kernels"]["qs8-gemm"] == info["kernels"]["qs7-gemm"] == "qs8_gemm_32x32c4__amx"
        assert "avx512" in info["kernels"]["f32-gemm"]
    else:
        assert isa.replace("vnni", "") in info["kernels"]["f32-gemm"]
    # the fp32 row kernels (layer norm too) and depthwise conv come from the same dispatch level
    tag = "scalar" if isa in ("scalar", "neondot") else "avx512" if isa == "amx" else isa.replace("vnni", "")
    for k in ("f32-softmax", "f32-gelu", "f32-layernorm", "f32-dwconv", "f32-maxpool"):
        assert info["kernels"][k].endswith("__" + tag), (k, info["kernels"][k])


def test_unavailable_isa_raises_at_import_not_sigill():
    unavailable = [i for i in ("scalar", "avx2", "avx512vnni", "amx", "neondot") if i not in ISAS]
    assert unavailable  # this x86 machine has no neondot (and vice versa on arm)
    for isa in unavailable:
        r = _py("import lowbit", LOWBIT_ISA=isa)
        assert r.returncode == 1, (r.returncode, r.stderr)  # a Python exception, not a signal
        assert f"LOWBIT_ISA='{isa}'" in r.stderr and "supported" in r.stderr or "available" in r.stderr


def test_unknown_isa_name():
    r = _py("import lowbit", LOWBIT_ISA="avx1024")
    assert r.returncode == 1
    assert "LOWBIT_ISA='avx1024' is not an ISA; expected one of scalar, avx2, avx512vnni, amx, neondot" in r.stderr


def test_num_threads_env_and_setter(threads):
    r = _py("import lowbit; print(lowbit.get_num_threads())", LOWBIT_NUM_THREADS="3")
    assert r.stdout.strip() == "3"
    lowbit.set_num_threads(1)
    assert lowbit.get_num_threads() == 1
    lowbit.set_num_threads(2)
    assert lowbit.get_num_threads() == 2
    with pytest.raises(ValueError, match="num_threads must be >= 1, got 0"):
        lowbit.set_num_threads(0)
    with pytest.raises(TypeError):
        lowbit.set_num_threads(1.5)


@pytest.fixture(scope="module")
def big_model(tmp_path_factory):
    p = str(tmp_path_factory.mktemp("t") / "m.qbin")
    lowbit.convert(models.mlp4(seed=1, sizes=(512, 1024, 1024, 512, 10)), p)
    return lowbit.load(p)


def test_run_releases_the_gil(big_model, threads):
    lowbit.set_num_threads(1)
    x = np.random.default_rng(0).standard_normal((256, 512)).astype(np.float32)
    big_model.run(x)
    t0 = time.perf_counter()
    for _ in range(5):
        big_model.run(x)
    one = (time.perf_counter() - t0) / 5
    # While a worker thread runs the model, the main thread keeps executing Python.
    stop = threading.Event()

    def work():
        for _ in range(5):
            big_model.run(x)
        stop.set()

    t = threading.Thread(target=work)
    count = 0
    t.start()
    while not stop.is_set():
        count += 1
    t.join()
    # with the GIL held for the whole run the loop could only spin between runs
    assert count > 1000, count
    assert one > 0


def test_concurrent_runs_are_correct(big_model, threads):
    lowbit.set_num_threads(2)
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((b, 512)).astype(np.float32) for b in (1, 3, 8, 17)]
    want = [big_model.run(x) for x in xs]
    errors = []

    def work(i):
        for _ in range(10):
            y = big_model.run(xs[i % 4])
            if y.tobytes() != want[i % 4].tobytes():
                errors.append(i)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors


def test_outputs_are_64_byte_aligned_and_own_their_memory(tmp_path):
    """Ops split their output by column blocks of 64 bytes and more over threads: on a line
    boundary no line is written by two cores (numpy's 16-byte aligned buffers put a shared line
    at every block edge of every row, and 2 threads ran no faster than 1)."""
    import gc
    p = str(tmp_path / "m.qbin")
    lowbit.convert(models.mlp4(seed=2, sizes=(64, 96, 80, 72, 10)), p)
    m = lowbit.load(p)
    x = np.random.default_rng(0).standard_normal((33, 64)).astype(np.float32)
    ys = [m.run(x) for _ in range(4)]
    for y in ys:
        assert y.ctypes.data % 64 == 0 and y.flags.c_contiguous and y.flags.writeable
        assert y.shape == (33, 10) and y.dtype == np.float32
    want = ys[0].copy()
    del m
    gc.collect()
    np.testing.assert_array_equal(ys[3], want)  # the arrays keep their memory after the model is gone
    ys[3][:] = 1.0
    assert float(ys[3].sum()) == 330.0
