"""The Done-when check of the foundation: a random 4-layer MLP built in ONNX
converts, runs and matches onnxruntime within 1e-5 relative under every ISA
this machine has (forced with LOWBIT_ISA, one process each) and 1 and 2 threads."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import lowbit

import models
from conftest import ISAS

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import lowbit
    path, xpath, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    lowbit.set_num_threads(threads)
    m = lowbit.load(path)
    xs = np.load(xpath)
    out = {k: m.run(xs[k]) for k in xs.files}
    np.savez(xpath + ".out.npz", **out)
    print(json.dumps({"isa": lowbit.cpu_info()["isa"], "threads": lowbit.get_num_threads(),
                      "kernels": [l["kernel"] for l in m.layers()]}))
""")


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    d = tmp_path_factory.mktemp("mlp")
    model = models.mlp4(seed=3)
    path = str(d / "mlp.qbin")
    lowbit.convert(model, path)
    rng = np.random.default_rng(4)
    xs = {f"b{b}": rng.standard_normal((b, 64)).astype(np.float32) for b in (1, 2, 7, 16, 33, 128)}
    xpath = str(d / "x.npz")
    np.savez(xpath, **xs)
    refs = {k: models.ort_run(model, {"x": v})[0] for k, v in xs.items()}
    return path, xpath, refs


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("isa", ISAS)
def test_mlp_matches_onnxruntime(mlp, isa, threads):
    path, xpath, refs = mlp
    env = dict(os.environ, LOWBIT_ISA=isa)
    r = subprocess.run([sys.executable, "-c", SCRIPT, path, xpath, str(threads)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["isa"] == isa and info["threads"] == threads
    tag = "avx512" if isa == "amx" else isa.split("vnni")[0]  # amx: the avx512vnni level's fp32 kernels
    assert any(tag in k or isa == "scalar" and "scalar" in k for k in info["kernels"])
    outs = np.load(xpath + ".out.npz")
    for k, ref in refs.items():
        np.testing.assert_allclose(outs[k], ref, rtol=1e-5, atol=1e-7, err_msg=f"{isa} {threads} threads {k}")


def test_threads_give_bit_identical_results(mlp, threads):
    path, xpath, _ = mlp
    m = lowbit.load(path)
    xs = np.load(xpath)
    lowbit.set_num_threads(1)
    one = {k: m.run(xs[k]) for k in xs.files}
    lowbit.set_num_threads(2)
    two = {k: m.run(xs[k]) for k in xs.files}
    for k in one:
        assert one[k].tobytes() == two[k].tobytes()


def test_fusions_happened(mlp):
    path, _, _ = mlp
    layers = lowbit.load(path).layers()
    ops = [l["op"] for l in layers]
    # Gemm+Relu, MatMul+Add+GELU pattern and MatMul+Add each became one Dense
    assert ops.count("Dense") == 4
    assert "Erf" not in ops and "Add" not in ops and "Relu" not in ops
    acts = [l["activation"] for l in layers if l["op"] == "Dense"]
    assert acts == ["relu", "gelu", None, None]
    assert all(l["encoding"] == "f32-n16" for l in layers if l["op"] == "Dense")
