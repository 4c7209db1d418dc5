"""Wrong inputs raise ValueError with expected vs received; unsupported ONNX ops
raise UnsupportedOpError listing every one at once; NaN/Inf propagate."""

import numpy as np
import pytest
from onnx import TensorProto, helper

import lowbit
from lowbit import UnsupportedOpError

import models


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    p = str(tmp_path_factory.mktemp("e") / "m.qbin")
    lowbit.convert(models.mlp4(sizes=(16, 32, 24, 20, 5)), p)
    return lowbit.load(p)


@pytest.fixture(scope="module")
def two_inputs(tmp_path_factory):
    F = TensorProto.FLOAT
    model = models.make_model([helper.make_node("Add", ["a", "b"], ["y"])],
                              [helper.make_tensor_value_info("a", F, ["n", 4]),
                               helper.make_tensor_value_info("b", F, ["n", 4])],
                              [helper.make_tensor_value_info("y", F, ["n", 4])], {})
    p = str(tmp_path_factory.mktemp("e2") / "m.qbin")
    lowbit.convert(model, p)
    return lowbit.load(p)


def test_wrong_dtype(mlp):
    with pytest.raises(ValueError, match=r"input 'x': expected dtype float32, got float64"):
        mlp.run(np.zeros((2, 16)))
    with pytest.raises(ValueError, match=r"expected dtype float32, got int64"):
        mlp.run(np.zeros((2, 16), np.int64))


def test_wrong_rank(mlp):
    with pytest.raises(ValueError, match=r"input 'x': expected rank 2 with shape \(batch, 16\), got rank 3 with shape \(1, 2, 16\)"):
        mlp.run(np.zeros((1, 2, 16), np.float32))
    with pytest.raises(ValueError, match=r"expected rank 2 .* got rank 1"):
        mlp.run(np.zeros(16, np.float32))


def test_wrong_shape(mlp):
    with pytest.raises(ValueError, match=r"input 'x': expected shape \(batch, 16\), got \(3, 17\) \(dimension 1 is 17, expected 16\)"):
        mlp.run(np.zeros((3, 17), np.float32))


def test_wrong_names(mlp, two_inputs):
    with pytest.raises(ValueError, match=r"unknown input name\(s\) \['z'\]; this model's inputs are \['x'\]"):
        mlp.run({"z": np.zeros((1, 16), np.float32)})
    with pytest.raises(ValueError, match=r"missing input\(s\) \['b'\]"):
        two_inputs.run({"a": np.zeros((1, 4), np.float32)})
    with pytest.raises(ValueError, match=r"2 inputs \['a', 'b'\]: pass a dict"):
        two_inputs.run(np.zeros((1, 4), np.float32))


def test_mismatched_dynamic_dims_between_inputs(two_inputs):
    # both declare dim 'n' but the runtime shapes disagree: the node names them
    with pytest.raises(ValueError, match=r"cannot be broadcast"):
        two_inputs.run({"a": np.zeros((2, 4), np.float32), "b": np.zeros((3, 4), np.float32)})


def test_dict_in_dict_out_and_non_contiguous(two_inputs):
    a = np.arange(16, dtype=np.float32).reshape(4, 4).T  # non-contiguous view
    b = np.ones((4, 4), np.float32)
    y = two_inputs.run({"a": a, "b": b})
    np.testing.assert_array_equal(y, a + b)


def test_nan_inf_propagate(mlp):
    x = np.zeros((4, 16), np.float32)
    x[1, 0] = np.nan
    x[2, 3] = np.inf
    x[3, 5] = -np.inf
    y = mlp.run(x)
    assert np.isfinite(y[0]).all()
    assert np.isnan(y[1]).any()
    assert y.shape == (4, 5)  # no crash; NaN/Inf flow through like any value


def test_unsupported_ops_listed_at_once(tmp_path):
    F = TensorProto.FLOAT
    w = np.zeros((4, 3, 3, 3), np.float32)
    # (Conv and MaxPool are supported since the CNN import; these two are not)
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["c"], name="conv1"),
             helper.make_node("LpPool", ["c"], ["p"], kernel_shape=[2, 2], name="pool1"),
             helper.make_node("ConvTranspose", ["p", "w2"], ["c2"], name="conv2"),
             helper.make_node("Relu", ["c2"], ["y"], name="relu")]
    model = models.make_model(nodes, [helper.make_tensor_value_info("x", F, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", F, [1, 4, 4, 4])],
                              {"w": w, "w2": np.zeros((4, 4, 1, 1), np.float32)}, opset=17)
    with pytest.raises(UnsupportedOpError) as ei:
        lowbit.convert(model, str(tmp_path / "m.qbin"))
    msg = str(ei.value)
    assert "opset 17" in msg
    assert "ConvTranspose (nodes 'conv1', 'conv2')" in msg and "LpPool (node 'pool1')" in msg
    assert "Relu" not in msg
    assert ei.value.ops == {"ConvTranspose": ["conv1", "conv2"], "LpPool": ["pool1"]}
    assert not (tmp_path / "m.qbin").exists()


def test_custom_domain_op_is_unsupported(tmp_path):
    F = TensorProto.FLOAT
    node = helper.make_node("FusedMatMul", ["x", "x"], ["y"], domain="com.microsoft", name="fm")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", F, [2, 2])],
                          [helper.make_tensor_value_info("y", F, [2, 2])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    with pytest.raises(UnsupportedOpError, match="com.microsoft::FusedMatMul"):
        lowbit.convert(model, str(tmp_path / "m.qbin"))


def test_unsupported_opset(tmp_path):
    m = models.mlp4(sizes=(4, 4, 4, 4, 2))
    m.opset_import[0].version = 7
    with pytest.raises(UnsupportedOpError, match="opset 7 is not supported"):
        lowbit.convert(m, str(tmp_path / "m.qbin"))


@pytest.mark.parametrize("attr,make,msg", [
    ("start", lambda a: a.CopyFrom(helper.make_attribute("start", "1")), "attribute 'start' must be INT, got STRING"),
    ("start", lambda a: a.CopyFrom(helper.make_attribute("start", [0, 1])), "attribute 'start' must be INT, got INTS"),
    ("start", lambda a: setattr(a, "name", "start"), "attribute 'start' must be INT, got UNDEFINED"),
    ("other", lambda a: setattr(a, "name", "other"), "attribute 'other' has no type \\(UNDEFINED\\)"),
])
def test_attribute_of_the_wrong_type_is_rejected_by_name(tmp_path, attr, make, msg):
    """A fuzz finding: Shape's 'start' with no type reached int(None) as a TypeError."""
    F = TensorProto.FLOAT
    model = models.make_model([helper.make_node("Shape", ["x"], ["s"], name="shape")],
                              [helper.make_tensor_value_info("x", F, [2, 3])],
                              [helper.make_tensor_value_info("s", TensorProto.INT64, [2])], {})
    make(model.graph.node[0].attribute.add())  # after the checker, which refuses such files (convert does not run it)
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ValueError, match=msg):
        lowbit.convert(str(path), str(tmp_path / "m.qbin"))


def test_reshape_needs_constant_shape(tmp_path):
    F = TensorProto.FLOAT
    model = models.make_model([helper.make_node("Reshape", ["x", "s"], ["y"])],
                              [helper.make_tensor_value_info("x", F, [2, 3]),
                               helper.make_tensor_value_info("s", TensorProto.INT64, [2])],
                              [helper.make_tensor_value_info("y", F, [3, 2])], {})
    with pytest.raises(ValueError):
        lowbit.convert(model, str(tmp_path / "m.qbin"))


def test_external_data_outside_model_folder_is_rejected(tmp_path):
    import onnx
    model = models.mlp4(sizes=(4, 4, 4, 4, 2))
    t = next(i for i in model.graph.initializer if i.name == "w1")
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = onnx.TensorProto.EXTERNAL
    e = t.external_data.add()
    e.key, e.value = "location", "../../secret.bin"
    p = tmp_path / "m.onnx"
    p.write_bytes(model.SerializeToString())
    with pytest.raises(ValueError, match="outside the model folder"):
        lowbit.convert(str(p), str(tmp_path / "m.qbin"))


def test_convert_rejects_other_sources(tmp_path):
    with pytest.raises(TypeError, match="onnx path, an onnx.ModelProto or a torch.nn.Module"):
        lowbit.convert(42, str(tmp_path / "m.qbin"))
    with pytest.raises(ValueError, match="expected an .onnx file"):
        lowbit.convert(str(tmp_path / "m.txt"), str(tmp_path / "m.qbin"))
    with pytest.raises(FileNotFoundError):
        lowbit.convert(str(tmp_path / "missing.onnx"), str(tmp_path / "m.qbin"))
    (tmp_path / "junk.onnx").write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        lowbit.convert(str(tmp_path / "junk.onnx"), str(tmp_path / "m.qbin"))


def test_input_without_shape_and_output_without_shape(tmp_path):
    F = TensorProto.FLOAT
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [helper.make_tensor_value_info("x", F, None)],
                          [helper.make_tensor_value_info("y", F, None)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ValueError, match="'x' declares no shape"):
        lowbit.convert(model, str(tmp_path / "m.qbin"))
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", F, ["n", 3])], [helper.make_tensor_value_info("y", F, None)])
    p = str(tmp_path / "m2.qbin")
    lowbit.convert(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), p)
    x = np.array([[-1, 2, -3]], np.float32)
    np.testing.assert_array_equal(lowbit.load(p).run(x), np.maximum(x, 0))
