"""Shape arithmetic and data-movement ops against onnxruntime, with run-time
(symbolic) dims so that the shape subgraphs are evaluated while planning, not
folded at convert time; integer and bool values inside the graph."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import lowbit

import models

F, I64 = TensorProto.FLOAT, TensorProto.INT64


def run_both(tmp_path, nodes, inputs, feeds_list, inits=None, out_type=F, opset=17):
    """Converts once, then compares with onnxruntime for each feed dict (different shapes)."""
    model = _model(nodes, inputs, inits or {}, out_type, opset)
    p = str(tmp_path / "m.qbin")
    lowbit.convert(model, p)
    m = lowbit.load(p)
    for feeds in feeds_list:
        ref = models.ort_run(model, feeds)[0]
        got = m.run(feeds if len(feeds) > 1 else next(iter(feeds.values())))
        assert got.shape == ref.shape and got.dtype == ref.dtype, (got.shape, ref.shape, got.dtype, ref.dtype)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    return m


def _model(nodes, inputs, inits, out_type, opset):
    g = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", out_type, ["d0"])],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _x(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _i64(*vals):
    return np.array(vals, np.int64)


def test_reshape_from_runtime_shape(tmp_path):
    # y = x.reshape(batch, seq, heads, -1) with (batch, seq) read from the input's shape
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "i0"], ["b"], axis=0),
             helper.make_node("Gather", ["s", "i1"], ["q"], axis=0),
             helper.make_node("Unsqueeze", ["b", "ax0"], ["b1"]),
             helper.make_node("Unsqueeze", ["q", "ax0"], ["q1"]),
             helper.make_node("Concat", ["b1", "q1", "rest"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("Transpose", ["r"], ["y"], perm=[0, 2, 1, 3])]
    inits = {"i0": np.array(0, np.int64), "i1": np.array(1, np.int64), "ax0": _i64(0), "rest": _i64(4, -1)}
    m = run_both(tmp_path, nodes, [helper.make_tensor_value_info("x", F, ["b", "s", 24])],
                 [{"x": _x(1, 5, 24)}, {"x": _x(3, 11, 24)}], inits)
    assert "Shape" in [l["op"] for l in m.layers()]  # not folded at convert time: dims are symbolic


def test_attention_mask_ops(tmp_path):
    # what exporters emit around masks: Cast, Sub, Mul, Unsqueeze, Equal, Where, Expand, ConstantOfShape
    nodes = [helper.make_node("Unsqueeze", ["mask", "ax12"], ["m4"]),
             helper.make_node("Cast", ["m4"], ["mf"], to=F),
             helper.make_node("Sub", ["one", "mf"], ["inv"]),
             helper.make_node("Mul", ["inv", "big"], ["add"]),
             helper.make_node("Equal", ["m4", "zero"], ["isz"]),
             helper.make_node("Shape", ["scores"], ["ss"]),
             helper.make_node("ConstantOfShape", ["ss"], ["fill"],
                              value=numpy_helper.from_array(np.array([-1.0], np.float32))),
             helper.make_node("Expand", ["isz", "ss"], ["isz_e"]),
             helper.make_node("Where", ["isz_e", "fill", "scores"], ["w"]),
             helper.make_node("Add", ["w", "add"], ["y"])]
    inits = {"ax12": _i64(1, 2), "one": np.array(1, np.float32), "big": np.array(-1e4, np.float32),
             "zero": np.array(0, np.int64)}
    inputs = [helper.make_tensor_value_info("mask", I64, ["b", "s"]),
              helper.make_tensor_value_info("scores", F, ["b", 2, "s", "s"])]
    feeds = []
    for b, s in ((1, 4), (2, 7)):
        mask = np.ones((b, s), np.int64)
        mask[-1, s // 2:] = 0
        feeds.append({"mask": mask, "scores": _x(b, 2, s, s)})
    run_both(tmp_path, nodes, inputs, feeds, inits)


def test_range_slice_gather_embeddings(tmp_path):
    # position ids = Range(0, seq); embeddings gathered; a Slice with run-time ends
    nodes = [helper.make_node("Shape", ["ids"], ["s"]),
             helper.make_node("Gather", ["s", "i1"], ["seq"], axis=0),
             helper.make_node("Range", ["z", "seq", "one"], ["pos"]),
             helper.make_node("Gather", ["pe", "pos"], ["p"], axis=0),
             helper.make_node("Gather", ["we", "ids"], ["w"], axis=0),
             helper.make_node("Add", ["w", "p"], ["e"]),
             helper.make_node("Unsqueeze", ["seq", "ax0"], ["seq1"]),
             helper.make_node("Slice", ["e", "z1", "seq1", "ax1"], ["y"])]
    inits = {"i1": np.array(1, np.int64), "z": np.array(0, np.int64), "one": np.array(1, np.int64),
             "pe": _x(16, 8, seed=1), "we": _x(50, 8, seed=2), "ax0": _i64(0), "z1": _i64(1), "ax1": _i64(1)}
    feeds = [{"ids": np.random.default_rng(k).integers(0, 50, (b, s)).astype(np.int64)} for k, (b, s) in
             enumerate(((1, 3), (2, 9)))]
    run_both(tmp_path, nodes, [helper.make_tensor_value_info("ids", I64, ["b", "s"])], feeds, inits)


def test_gather_rejects_out_of_range_index(tmp_path):
    nodes = [helper.make_node("Gather", ["we", "ids"], ["y"], axis=0)]
    model = _model(nodes, [helper.make_tensor_value_info("ids", I64, ["b", "s"])], {"we": _x(10, 4)}, F, 17)
    p = str(tmp_path / "m.qbin")
    lowbit.convert(model, p)
    with pytest.raises(IndexError, match="out of range"):
        lowbit.load(p).run(np.array([[1, 10]], np.int64))


@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("axes", [[-1], [1], [0, 2], [1, 2]])
@pytest.mark.parametrize("op", ["ReduceMean", "ReduceSum"])
def test_reductions(tmp_path, op, axes, keepdims):
    opset = 18 if op == "ReduceMean" else 13
    nodes = [helper.make_node(op, ["x", "axes"], ["y"], keepdims=keepdims)]
    run_both(tmp_path, nodes, [helper.make_tensor_value_info("x", F, ["a", 5, 6])],
             [{"x": _x(3, 5, 6)}, {"x": _x(1, 5, 6, seed=1)}], {"axes": _i64(*axes)}, opset=opset)


def test_split_concat_squeeze(tmp_path):
    nodes = [helper.make_node("Split", ["x", "sizes"], ["a", "b", "c"], axis=2),
             helper.make_node("Concat", ["c", "a"], ["ca"], axis=2),
             helper.make_node("Unsqueeze", ["ca", "ax"], ["u"]),
             helper.make_node("Squeeze", ["u", "ax"], ["s"]),
             helper.make_node("Mul", ["s", "b2"], ["y"])]
    inits = {"sizes": _i64(2, 3, 4), "ax": _i64(1), "b2": np.array(2, np.float32)}
    run_both(tmp_path, nodes, [helper.make_tensor_value_info("x", F, ["n", 3, 9])],
             [{"x": _x(2, 3, 9)}, {"x": _x(5, 3, 9, seed=3)}], inits)


def test_integer_arithmetic_and_int_output(tmp_path):
    # integer math on a run-time int64 input: floor division like onnxruntime
    nodes = [helper.make_node("Mul", ["i", "three"], ["a"]),
             helper.make_node("Sub", ["a", "seven"], ["b"]),
             helper.make_node("Div", ["b", "two"], ["y"])]
    inits = {"three": np.array(3, np.int64), "seven": np.array(7, np.int64), "two": np.array(2, np.int64)}
    feeds = [{"i": np.arange(-6, 6, dtype=np.int64).reshape(3, 4)}]
    m = run_both(tmp_path, nodes, [helper.make_tensor_value_info("i", I64, [3, "k"])], feeds, inits, out_type=I64)
    assert m.outputs[0].dtype == "int64"


def _qbin(tmp_path, nodes, tensors, inputs, outputs=("y",)):
    from lowbit.format import save
    from lowbit.ir import Graph, Tensor, ValueInfo
    g = Graph([ValueInfo(n, dt, s) for n, dt, s in inputs], [ValueInfo(o, "float32", ()) for o in outputs], nodes,
              {k: Tensor.from_array(k, v) for k, v in tensors.items()})
    p = str(tmp_path / "bad.qbin")
    save(g, p)
    return p


def test_malformed_nodes_are_rejected_not_crashing(tmp_path):
    from lowbit.ir import Node
    # a node without outputs, a Conv whose weight is not packed, a Where with a float condition
    for node, tensors, match in [
        (Node("Split", ["x"], [], {"axis": 0}, "s"), {}, "no outputs"),
        (Node("Conv", ["x", "w"], ["y"], {"kernel_shape": [1, 1], "layout": "NHWC"}, "c"),
         {"w": np.ones((4, 4, 1, 1), np.float32)}, "f32-n16"),
        (Node("Conv", ["x", "w"], ["y"], {"kernel_shape": [1, 1]}, "c"), {"w": np.ones((4, 4, 1, 1), np.float32)},
         "NHWC"),
        (Node("Where", ["x", "x", "x"], ["y"], {}, "w"), {}, "float32"),
    ]:
        extra = [Node("Relu", ["x"], ["y"], {}, "r")] if not node.outputs else []
        p = _qbin(tmp_path, [node] + extra, tensors, [("x", "float32", ("n", 4))])
        with pytest.raises(lowbit.FormatError, match=match):
            lowbit.load(p)


def test_bad_runtime_shape_values_raise(tmp_path):
    from lowbit.ir import Node
    nodes = [Node("Slice", ["x", "st", "en", "ax", "step"], ["y"], {}, "s")]
    p = _qbin(tmp_path, nodes, {"st": _i64(0), "en": _i64(4), "ax": _i64(1), "step": _i64(-(2 ** 62))},
              [("x", "float32", ("n", 4))])
    with pytest.raises(ValueError, match="Slice step"):
        lowbit.load(p).run(np.zeros((2, 4), np.float32))
    nodes = [Node("Reshape", ["x", "shape"], ["y"], {}, "r")]
    p = _qbin(tmp_path, nodes, {"shape": _i64(2 ** 40, 2 ** 40)}, [("x", "float32", ("n", 4))])
    with pytest.raises(ValueError, match="(?i)reshape|too many|too large"):
        lowbit.load(p).run(np.zeros((2, 4), np.float32))


@pytest.mark.parametrize("op", ["Concat", "Split", "Slice", "Squeeze", "ReduceSum", "GatherElements"])
def test_axis_ops_reject_a_scalar_not_crashing(tmp_path, op):
    # Regression (SIGSEGV, found by tests/fuzz/fuzz.py): these ops index the shape at their axis,
    # and norm_axis lets axis 0 through for rank 0, so a scalar input wrote/read shape[0] of an
    # empty shape while planning. A scalar has no axis (ONNX requires rank >= 1): a clear error.
    from lowbit.ir import Node
    tensors = {}
    if op == "Concat":
        node = Node("Concat", ["x", "x"], ["y"], {"axis": 0}, "n")
    elif op == "Split":
        node = Node("Split", ["x"], ["y", "z"], {"axis": 0, "split": [1, 1]}, "n")
    elif op == "Slice":
        node, tensors = Node("Slice", ["x", "st", "en", "ax"], ["y"], {}, "n"), {"st": _i64(0), "en": _i64(1), "ax": _i64(0)}
    elif op == "Squeeze":
        node, tensors = Node("Squeeze", ["x", "ax"], ["y"], {}, "n"), {"ax": _i64(0)}
    elif op == "ReduceSum":
        node, tensors = Node("ReduceSum", ["x", "ax"], ["y"], {}, "n"), {"ax": _i64(0)}
    else:
        node, tensors = Node("GatherElements", ["x", "i"], ["y"], {"axis": 0}, "n"), {"i": np.array(0, np.int64)}
    p = _qbin(tmp_path, [node], tensors, [("x", "float32", ())], outputs=node.outputs)
    with pytest.raises(ValueError, match="needs an input of rank >= 1 for axis 0, got a scalar"):
        lowbit.load(p).run(np.array(1.0, np.float32))


# Operand shape pairs that exercise the broadcast walk: equal shapes (one merged row),
# a broadcast in the middle, at the end, at the front, scalars, size-1 dims everywhere,
# an empty dim, and patterns where only some neighbouring dims can be merged.
_BCAST_PAIRS = [
    ((2, 3, 5), (2, 3, 5)), ((2, 3, 5), (2, 1, 5)), ((2, 3, 5), (5,)), ((2, 3, 5), (2, 3, 1)),
    ((2, 3, 5), ()), ((), (4, 1)), ((1, 1, 7), (3, 1, 1)), ((4, 1, 3, 1), (1, 5, 1, 2)),
    ((2, 1, 6, 6), (1, 1, 1, 6)), ((3, 0, 2), (1, 1, 2)), ((1, 1, 1), (1, 1, 1)), ((6, 1), (1, 6)),
    ((2, 3, 4, 5), (3, 1, 5)), ((1, 128, 128), (1, 1, 1, 128)),
]


@pytest.mark.parametrize("sa, sb", _BCAST_PAIRS)
def test_broadcast_walk_where_expand_compare_int(tmp_path, sa, sb):
    """Where (three operands), Expand, a comparison, And and integer Add over the
    broadcast pairs above, against onnxruntime; inputs are run-time values."""
    rng = np.random.default_rng(len(sa) * 10 + len(sb))
    out = np.broadcast_shapes(sa, sb)
    c_shape = sb[1:] if len(sb) > 0 else ()
    ins = [helper.make_tensor_value_info("a", F, list(sa)), helper.make_tensor_value_info("b", F, list(sb)),
           helper.make_tensor_value_info("ia", I64, list(sa)), helper.make_tensor_value_info("ib", I64, list(sb)),
           helper.make_tensor_value_info("c", F, list(c_shape))]
    feeds = {"a": rng.integers(-2, 3, sa).astype(np.float32), "b": rng.integers(-2, 3, sb).astype(np.float32),
             "ia": rng.integers(-50, 50, sa).astype(np.int64), "ib": rng.integers(-50, 50, sb).astype(np.int64),
             "c": rng.standard_normal(c_shape).astype(np.float32)}
    nodes = [helper.make_node("Less", ["a", "b"], ["lt"]),                 # float compare
             helper.make_node("Greater", ["ia", "ib"], ["gt"]),           # int64 compare
             helper.make_node("And", ["lt", "gt"], ["both"]),
             helper.make_node("Where", ["both", "a", "c"], ["w"]),        # three broadcast operands
             helper.make_node("Add", ["ia", "ib"], ["isum"]),            # integer binary
             helper.make_node("Cast", ["isum"], ["fsum"], to=F),
             helper.make_node("Shape", ["fsum"], ["osh"]),
             helper.make_node("Expand", ["c", "osh"], ["ce"]),
             helper.make_node("Where", ["gt", "ce", "fsum"], ["w2"]),
             helper.make_node("Add", ["w", "w2"], ["y"])]
    g = helper.make_graph(nodes, "g", ins, [helper.make_tensor_value_info("y", F, None)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    p = str(tmp_path / "m.qbin")
    lowbit.convert(model, p)
    got = lowbit.load(p).run(feeds)
    ref = models.ort_run(model, feeds)[0]
    assert got.shape == ref.shape == np.broadcast_shapes(out, c_shape)
    np.testing.assert_array_equal(got, ref)
