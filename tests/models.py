"""ONNX models built in the tests (random weights, fixed seeds)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def make_model(nodes, inputs, outputs, inits, opset: int = OPSET) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="lowbit-tests")
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def mlp4(seed: int = 0, sizes=(64, 256, 128, 96, 10), batch="batch") -> onnx.ModelProto:
    """A 4-layer MLP mixing the op forms exporters emit: Gemm(transB), MatMul+Add,
    the erf-GELU pattern, Relu, Tanh, LayerNormalization, Sigmoid, Softmax."""
    rng = np.random.default_rng(seed)
    k0, k1, k2, k3, k4 = sizes
    inits = {
        "w0": (rng.standard_normal((k1, k0)) / np.sqrt(k0)).astype(np.float32),  # Gemm transB=1 layout
        "b0": rng.standard_normal(k1).astype(np.float32) * 0.1,
        "w1": (rng.standard_normal((k1, k2)) / np.sqrt(k1)).astype(np.float32),
        "b1": rng.standard_normal(k2).astype(np.float32) * 0.1,
        "w2": (rng.standard_normal((k2, k3)) / np.sqrt(k2)).astype(np.float32),
        "b2": rng.standard_normal(k3).astype(np.float32) * 0.1,
        "w3": (rng.standard_normal((k3, k4)) / np.sqrt(k3)).astype(np.float32),
        "b3": rng.standard_normal(k4).astype(np.float32) * 0.1,
        "ln_s": (1 + 0.1 * rng.standard_normal(k3)).astype(np.float32),
        "ln_b": (0.1 * rng.standard_normal(k3)).astype(np.float32),
        "sqrt2": np.array(np.sqrt(2), np.float32),
        "one": np.array(1.0, np.float32),
        "half": np.array(0.5, np.float32),
    }
    n = [
        helper.make_node("Gemm", ["x", "w0", "b0"], ["h0"], transB=1, name="fc0"),
        helper.make_node("Relu", ["h0"], ["a0"], name="relu0"),
        helper.make_node("MatMul", ["a0", "w1"], ["m1"], name="fc1"),
        helper.make_node("Add", ["m1", "b1"], ["h1"], name="fc1_bias"),
        # exact GELU as exporters write it: x * 0.5 * (1 + erf(x / sqrt(2)))
        helper.make_node("Div", ["h1", "sqrt2"], ["g_div"], name="gelu_div"),
        helper.make_node("Erf", ["g_div"], ["g_erf"], name="gelu_erf"),
        helper.make_node("Add", ["g_erf", "one"], ["g_add"], name="gelu_add"),
        helper.make_node("Mul", ["h1", "g_add"], ["g_mul"], name="gelu_mul"),
        helper.make_node("Mul", ["g_mul", "half"], ["a1"], name="gelu_half"),
        helper.make_node("MatMul", ["a1", "w2"], ["m2"], name="fc2"),
        helper.make_node("Add", ["m2", "b2"], ["h2"], name="fc2_bias"),
        helper.make_node("Tanh", ["h2"], ["t2"], name="tanh2"),
        helper.make_node("LayerNormalization", ["t2", "ln_s", "ln_b"], ["n2"], axis=-1, epsilon=1e-5, name="ln2"),
        helper.make_node("Sigmoid", ["n2"], ["s2"], name="sig2"),
        helper.make_node("Gemm", ["s2", "w3", "b3"], ["logits"], name="fc3"),
        helper.make_node("Softmax", ["logits"], ["y"], axis=-1, name="softmax"),
    ]
    return make_model(n, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, k0])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, k4])], inits)


def ort_run(model: onnx.ModelProto, feeds: dict, threads: int = 1):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def convert_with_and_without(model, tmp_path, monkeypatch, pass_fn):
    """Converts ``model`` with the default pipeline and again without ``pass_fn``;
    returns the two loaded models (fused, plain)."""
    import sys

    import lowbit
    fused = str(tmp_path / "fused.qbin")
    lowbit.convert(model, fused)
    with monkeypatch.context() as mp:
        convert_mod = sys.modules["lowbit.convert"]  # the module (lowbit.convert is the function)
        mp.setattr(convert_mod, "DEFAULT_PIPELINE", [p for p in convert_mod.DEFAULT_PIPELINE if p is not pass_fn])
        plain = str(tmp_path / "plain.qbin")
        lowbit.convert(model, plain)
    return lowbit.load(fused), lowbit.load(plain)
