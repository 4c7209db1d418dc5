"""Each supported ONNX op, alone, against onnxruntime (random inputs, fixed seeds)."""

import numpy as np
import pytest
from onnx import TensorProto, helper

import lowbit

import models

F = TensorProto.FLOAT


def check(tmp_path, nodes, ins, out_shape, inits=None, opset=17, rtol=1e-5, atol=1e-6, feeds=None, seed=0):
    rng = np.random.default_rng(seed)
    inputs = [helper.make_tensor_value_info(n, F, s) for n, s in ins]
    outputs = [helper.make_tensor_value_info("y", F, out_shape)]
    model = models.make_model(nodes, inputs, outputs, inits or {}, opset)
    feeds = feeds or {n: rng.standard_normal([d if isinstance(d, int) else 3 for d in s]).astype(np.float32)
                      for n, s in ins}
    ref = models.ort_run(model, feeds)[0]
    p = str(tmp_path / "m.qbin")
    lowbit.convert(model, p)
    m = lowbit.load(p)
    got = m.run(feeds if len(feeds) > 1 else next(iter(feeds.values())))
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol)
    return m


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("sa,sb", [((4, 5), (4, 5)), ((2, 3, 4), (4,)), ((2, 1, 4), (3, 1)), ((1,), (2, 3)),
                                   ((5, 1, 1, 2), (1, 3, 2)), ((), (3, 2))])
def test_binary_broadcasting(tmp_path, op, sa, sb):
    out = list(np.broadcast_shapes(sa, sb))
    check(tmp_path, [helper.make_node(op, ["a", "b"], ["y"])], [("a", list(sa)), ("b", list(sb))], out)


@pytest.mark.parametrize("op", ["Add", "Mul", "Div", "Sub"])
def test_binary_with_constant(tmp_path, op):
    c = np.random.default_rng(1).uniform(0.5, 2, (6,)).astype(np.float32)
    check(tmp_path, [helper.make_node(op, ["c", "a"], ["y"])], [("a", ["n", 6])], ["n", 6], {"c": c})


def test_pow(tmp_path):
    feeds = {"a": np.random.default_rng(0).uniform(0.1, 3, (4, 6)).astype(np.float32)}
    check(tmp_path, [helper.make_node("Pow", ["a", "e"], ["y"])], [("a", [4, 6])], [4, 6],
          {"e": np.array([2.0], np.float32)}, feeds=feeds)


@pytest.mark.parametrize("op", ["Relu", "Sigmoid", "Tanh", "Erf", "Exp", "Neg", "Abs", "Identity"])
def test_unary(tmp_path, op):
    check(tmp_path, [helper.make_node(op, ["a"], ["y"])], [("a", ["n", 37])], ["n", 37])


@pytest.mark.parametrize("op", ["Sqrt", "Reciprocal"])
def test_unary_positive(tmp_path, op):
    feeds = {"a": np.random.default_rng(0).uniform(0.1, 4, (5, 9)).astype(np.float32)}
    check(tmp_path, [helper.make_node(op, ["a"], ["y"])], [("a", [5, 9])], [5, 9], feeds=feeds)


def test_gelu_op_opset20(tmp_path):
    check(tmp_path, [helper.make_node("Gelu", ["a"], ["y"])], [("a", [4, 40])], [4, 40], opset=20)


@pytest.mark.parametrize("form", ["div_late_half", "mul_early_half"])
def test_gelu_pattern_fused(tmp_path, form):
    s = {"k": np.array(np.sqrt(2) if form == "div_late_half" else 1 / np.sqrt(2), np.float32),
         "one": np.array(1.0, np.float32), "half": np.array(0.5, np.float32)}
    if form == "div_late_half":
        nodes = [helper.make_node("Div", ["a", "k"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
                 helper.make_node("Add", ["e", "one"], ["p"]), helper.make_node("Mul", ["a", "p"], ["m"]),
                 helper.make_node("Mul", ["m", "half"], ["y"])]
    else:
        nodes = [helper.make_node("Mul", ["a", "k"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
                 helper.make_node("Add", ["one", "e"], ["p"]), helper.make_node("Mul", ["half", "a"], ["h"]),
                 helper.make_node("Mul", ["h", "p"], ["y"])]
    m = check(tmp_path, nodes, [("a", ["n", 50])], ["n", 50], s)
    assert [l["op"] for l in m.layers()] == ["Gelu"]


@pytest.mark.parametrize("axis", [-1, 0, 1, 2])
def test_softmax(tmp_path, axis):
    check(tmp_path, [helper.make_node("Softmax", ["a"], ["y"], axis=axis)], [("a", [3, 4, 5])], [3, 4, 5])


def test_softmax_legacy_opset11(tmp_path):
    check(tmp_path, [helper.make_node("Softmax", ["a"], ["y"], axis=1)], [("a", [3, 4, 5])], [3, 4, 5], opset=11)


@pytest.mark.parametrize("axis", [-1, -2, 1])
def test_layernorm(tmp_path, axis):
    shape = [2, 3, 8]
    norm = shape[axis:]
    rng = np.random.default_rng(2)
    inits = {"s": rng.standard_normal(norm).astype(np.float32), "b": rng.standard_normal(norm).astype(np.float32)}
    check(tmp_path, [helper.make_node("LayerNormalization", ["a", "s", "b"], ["y"], axis=axis, epsilon=1e-3)],
          [("a", shape)], shape, inits, rtol=1e-4, atol=1e-5)


def test_layernorm_without_bias(tmp_path):
    inits = {"s": np.linspace(0.5, 1.5, 16).astype(np.float32)}
    check(tmp_path, [helper.make_node("LayerNormalization", ["a", "s"], ["y"])], [("a", ["n", 16])], ["n", 16], inits,
          rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", ["same-shape", "broadcast-residual", "constant-residual", "axis-2", "sum-read-twice"])
def test_add_layernorm_fusion_same_bits(tmp_path, monkeypatch, case):
    """A residual Add read only by a LayerNormalization becomes one AddLayerNormalization
    (the sum computed in the norm's first pass): bit-identical to the two ops, and within
    float rounding of onnxruntime. An Add whose sum is read elsewhere stays an Add."""
    from lowbit.passes import fuse_add_layernorm
    rng = np.random.default_rng(5)
    h = 40  # a 32-lane block and a tail
    b_shape = {"broadcast-residual": [1, "s", h], "constant-residual": None}.get(case, ["n", "s", h])
    axis = -2 if case == "axis-2" else -1
    norm = [5, h] if axis == -2 else [h]
    inits = {"g": rng.standard_normal(norm).astype(np.float32), "beta": rng.standard_normal(norm).astype(np.float32)}
    ins = [("a", ["n", "s", h])]
    if b_shape is None:
        inits["r"] = rng.standard_normal([h]).astype(np.float32)
    else:
        ins.append(("r", b_shape))
    nodes = [helper.make_node("Add", ["a", "r"], ["sum"]),
             helper.make_node("LayerNormalization", ["sum", "g", "beta"], ["ln"], axis=axis, epsilon=1e-5)]
    if case == "sum-read-twice":
        nodes.append(helper.make_node("Mul", ["ln", "sum"], ["y"]))
    else:
        nodes.append(helper.make_node("Identity", ["ln"], ["y"]))
    inputs = [helper.make_tensor_value_info(n, F, s) for n, s in ins]
    model = models.make_model(nodes, inputs, [helper.make_tensor_value_info("y", F, ["n", "s", h])], inits, 17)
    fused, plain = models.convert_with_and_without(model, tmp_path, monkeypatch, fuse_add_layernorm)
    ops = [n.op for n in fused.graph.nodes]
    if case == "sum-read-twice":
        assert "AddLayerNormalization" not in ops and "Add" in ops
    else:
        assert "AddLayerNormalization" in ops and "Add" not in ops and "LayerNormalization" not in ops
        assert [n.op for n in plain.graph.nodes].count("Add") == 1
    for n_, s_ in ((2, 5), (1, 5), (3, 5)):
        feeds = {"a": (rng.standard_normal((n_, s_, h)) * 2 + 1).astype(np.float32)}
        if b_shape is not None:
            feeds["r"] = rng.standard_normal([1 if d == 1 else (n_ if d == "n" else s_ if d == "s" else d)
                                              for d in b_shape]).astype(np.float32)
        got, want = fused.run(feeds), plain.run(feeds)
        assert np.array_equal(got.view(np.int32), want.view(np.int32)), case
        np.testing.assert_allclose(got, models.ort_run(model, feeds)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("target,out", [([0, -1], [2, 12]), ([4, 6], [4, 6]), ([-1], [24]), ([2, 3, 2, 2], [2, 3, 2, 2])])
def test_reshape(tmp_path, target, out):
    check(tmp_path, [helper.make_node("Reshape", ["a", "shape"], ["y"])], [("a", [2, 3, 4])], out,
          {"shape": np.array(target, np.int64)})


@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1])
def test_flatten(tmp_path, axis):
    shape = [2, 3, 4]
    a = axis % 4 if axis >= 0 else axis + 3
    out = [int(np.prod(shape[:a])), int(np.prod(shape[a:]))]
    check(tmp_path, [helper.make_node("Flatten", ["a"], ["y"], axis=axis)], [("a", shape)], out)


@pytest.mark.parametrize("perm", [None, [0, 2, 1], [2, 0, 1], [1, 0, 2]])
def test_transpose(tmp_path, perm):
    shape = [2, 3, 5]
    out = [shape[p] for p in (perm or [2, 1, 0])]
    kw = {"perm": perm} if perm else {}
    check(tmp_path, [helper.make_node("Transpose", ["a"], ["y"], **kw)], [("a", shape)], out)


@pytest.mark.parametrize("shape", [[2, 1, 17, 33], [3, 20, 1, 9], [1, 3, 19, 23]])
@pytest.mark.parametrize("perm", [list(p) for p in __import__("itertools").permutations(range(4))])
def test_transpose_rank4_all_perms(tmp_path, shape, perm):
    # covers the batched 2-D path (NCHW <-> NHWC, K^T of attention) and the general gather, with size-1 axes
    check(tmp_path, [helper.make_node("Transpose", ["a"], ["y"], perm=perm)], [("a", shape)], [shape[p] for p in perm])


@pytest.mark.parametrize("ta,tb,alpha,beta,cshape", [(0, 0, 1.0, 1.0, (7,)), (0, 1, 0.5, 2.0, (1, 7)),
                                                     (1, 0, 1.0, 1.0, None), (1, 1, 2.0, 0.5, ()),
                                                     (0, 0, 1.0, 1.0, (5, 7))])
def test_gemm(tmp_path, ta, tb, alpha, beta, cshape):
    rng = np.random.default_rng(3)
    K, N, M = 9, 7, 5
    inits = {"B": rng.standard_normal((N, K) if tb else (K, N)).astype(np.float32)}
    ins = ["a", "B"]
    if cshape is not None:
        inits["C"] = rng.standard_normal(cshape).astype(np.float32)
        ins.append("C")
    check(tmp_path, [helper.make_node("Gemm", ins, ["y"], transA=ta, transB=tb, alpha=alpha, beta=beta)],
          [("a", [K, M] if ta else [M, K])], [M, N], inits, rtol=1e-5, atol=1e-5)


def test_gemm_dynamic_b(tmp_path):
    check(tmp_path, [helper.make_node("Gemm", ["a", "b"], ["y"], transB=1, alpha=0.5)],
          [("a", [4, 6]), ("b", [3, 6])], [4, 3])


@pytest.mark.parametrize("sa,sb,out", [((3, 4), (4, 5), (3, 5)), ((2, 3, 4), (2, 4, 5), (2, 3, 5)),
                                       ((2, 1, 3, 4), (5, 4, 6), (2, 5, 3, 6)), ((4,), (4, 5), (5,)),
                                       ((3, 4), (4,), (3,)), ((2, 3, 17), (17, 33), (2, 3, 33))])
def test_matmul_dynamic(tmp_path, sa, sb, out):
    check(tmp_path, [helper.make_node("MatMul", ["a", "b"], ["y"])], [("a", list(sa)), ("b", list(sb))], list(out),
          rtol=1e-5, atol=1e-5)


def test_matmul_constant_rank3_input(tmp_path):
    w = np.random.default_rng(4).standard_normal((12, 20)).astype(np.float32)
    m = check(tmp_path, [helper.make_node("MatMul", ["a", "w"], ["y"])], [("a", ["b", "s", 12])], ["b", "s", 20],
              {"w": w}, rtol=1e-5, atol=1e-5)
    assert m.layers()[0]["op"] == "Dense"


def test_constant_node_and_folding(tmp_path):
    c = helper.make_tensor("cv", F, [3], [1.0, 2.0, 3.0])
    nodes = [helper.make_node("Constant", [], ["c"], value=c),
             helper.make_node("Mul", ["c", "c"], ["c2"]),  # folded at convert time
             helper.make_node("Add", ["a", "c2"], ["y"])]
    m = check(tmp_path, nodes, [("a", [2, 3])], [2, 3])
    assert [l["op"] for l in m.layers()] == ["Add"]


def test_identity_chain_and_output_passthrough(tmp_path):
    nodes = [helper.make_node("Identity", ["a"], ["i1"]), helper.make_node("Relu", ["i1"], ["r"]),
             helper.make_node("Identity", ["r"], ["y"])]
    check(tmp_path, nodes, [("a", [3, 3])], [3, 3])


def test_dynamic_batch_sizes(tmp_path):
    model = models.mlp4(seed=9, sizes=(8, 16, 16, 16, 4))
    p = str(tmp_path / "m.qbin")
    lowbit.convert(model, p)
    m = lowbit.load(p)
    for b in (1, 5, 64, 3, 1000, 0):
        x = np.random.default_rng(b).standard_normal((b, 8)).astype(np.float32)
        y = m.run(x)
        assert y.shape == (b, 4)
        if b:
            np.testing.assert_allclose(y, models.ort_run(model, {"x": x})[0], rtol=1e-5, atol=1e-7)
