"""Every ISA path of the new ops agrees with onnxruntime: a small graph with a
conv block (im2col GEMM, depthwise, pools, fused activations, residual), the
transformer row kernels (softmax, GELU) and shape arithmetic is run in a
subprocess per LOWBIT_ISA (scalar / avx2 / avx512vnni as this CPU allows)."""

import os
import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper

import lowbit

import models
from conftest import ISAS

F = TensorProto.FLOAT


def _graph():
    rng = np.random.default_rng(0)
    w = lambda *s: (rng.standard_normal(s) / np.sqrt(np.prod(s[1:]))).astype(np.float32)  # noqa: E731
    inits = {"w1": w(8, 3, 3, 3), "b1": rng.standard_normal(8).astype(np.float32), "wd": w(8, 1, 3, 3),
             "w2": w(8, 8, 1, 1), "lo": np.array(0, np.float32), "hi": np.array(6, np.float32),
             "wf": w(8, 40), "sq": np.array(1.4142135, np.float32), "one": np.array(1, np.float32),
             "half": np.array(0.5, np.float32), "shape": np.array([0, 5, 8], np.int64)}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"]),
        helper.make_node("Conv", ["r1", "wd"], ["d"], pads=[1, 1, 1, 1], group=8),
        helper.make_node("HardSwish", ["d"], ["hs"]),
        helper.make_node("Conv", ["hs", "w2"], ["c2"]),
        helper.make_node("Add", ["c2", "r1"], ["res"]),
        helper.make_node("MaxPool", ["res"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["mp"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["f"]),
        helper.make_node("MatMul", ["f", "wf"], ["h"]),
        # exact GELU as exporters write it, then a softmax over rows of 8
        helper.make_node("Div", ["h", "sq"], ["hd"]), helper.make_node("Erf", ["hd"], ["he"]),
        helper.make_node("Add", ["he", "one"], ["ha"]), helper.make_node("Mul", ["h", "ha"], ["hm"]),
        helper.make_node("Mul", ["hm", "half"], ["g"]),
        helper.make_node("Reshape", ["g", "shape"], ["g3"]),
        helper.make_node("Softmax", ["g3"], ["y"], axis=-1),
    ]
    return models.make_model(nodes, [helper.make_tensor_value_info("x", F, ["n", 3, 16, 16])],
                             [helper.make_tensor_value_info("y", F, ["n", 5, 8])], inits)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("isa")
    model = _graph()
    lowbit.convert(model, str(d / "m.qbin"))
    x = np.random.default_rng(1).standard_normal((3, 3, 16, 16)).astype(np.float32)
    np.save(d / "x.npy", x)
    return d, models.ort_run(model, {"x": x})[0]


@pytest.mark.parametrize("isa", ISAS)
def test_isa_path_matches_onnxruntime(setup, isa):
    d, ref = setup
    code = ("import lowbit, numpy as np, sys; m = lowbit.load(sys.argv[1]); "
            "np.save(sys.argv[3], m.run(np.load(sys.argv[2]))); print(lowbit.cpu_info()['isa'])")
    env = dict(os.environ, LOWBIT_ISA=isa)
    r = subprocess.run([sys.executable, "-c", code, str(d / "m.qbin"), str(d / "x.npy"), str(d / f"y_{isa}.npy")],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == isa
    got = np.load(d / f"y_{isa}.npy")
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_depthwise_paths_agree_bit_for_bit(tmp_path):
    # multiply and add are kept separate in every depthwise path: all ISAs give the same bits
    w = np.random.default_rng(2).standard_normal((24, 1, 3, 3)).astype(np.float32)
    b = np.random.default_rng(3).standard_normal(24).astype(np.float32)
    model = models.make_model([helper.make_node("Conv", ["x", "w", "b"], ["y"], group=24, pads=[1, 0, 2, 1],
                                                strides=[2, 1])],
                              [helper.make_tensor_value_info("x", F, ["n", 24, 9, 10])],
                              [helper.make_tensor_value_info("y", F, ["n", 24, "h", "w"])], {"w": w, "b": b})
    lowbit.convert(model, str(tmp_path / "d.qbin"))
    x = np.random.default_rng(4).standard_normal((2, 24, 9, 10)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code = ("import lowbit, numpy as np, sys; m = lowbit.load(sys.argv[1]); "
            "np.save(sys.argv[3], m.run(np.load(sys.argv[2])))")
    outs = []
    for isa in ISAS:
        r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "d.qbin"), str(tmp_path / "x.npy"),
                            str(tmp_path / f"{isa}.npy")], env=dict(os.environ, LOWBIT_ISA=isa),
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        outs.append(np.load(tmp_path / f"{isa}.npy"))
    for o in outs[1:]:
        assert np.array_equal(o, outs[0])
    np.testing.assert_allclose(outs[0], models.ort_run(model, {"x": x})[0], rtol=1e-5, atol=1e-6)
