"""CNN import end to end: a ResNet-18 and a MobileNetV2-style network (random
weights, BatchNorm statistics randomized) exported from torch to ONNX, converted,
and compared with onnxruntime's fp32 output at two batch sizes from one .qbin
(dynamic batch); each also converts from the live torch module."""

import io
import os

import numpy as np
import pytest

import lowbit

torch = pytest.importorskip("torch") if not os.environ.get("LOWBIT_REQUIRE_TORCH") else __import__("torch")
ort = pytest.importorskip("onnxruntime")
from torch_models import MobileNetV2ish, ResNet18, randomize_bn  # noqa: E402

RTOL = 1e-4  # max |lowbit - ort| / max |ort|


def _export(model, x):
    f = io.BytesIO()
    torch.onnx.export(model, (x,), f, dynamo=False, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17)
    return f.getvalue()


def _rel(got, ref):
    return float(np.abs(got - ref).max() / np.abs(ref).max())


MODELS = {"resnet18": (ResNet18, 112), "mobilenetv2": (MobileNetV2ish, 96)}


@pytest.fixture(scope="module", params=list(MODELS))
def cnn(request, tmp_path_factory):
    cls, hw = MODELS[request.param]
    torch.manual_seed(0)
    model = randomize_bn(cls())
    x = torch.randn(1, 3, hw, hw)
    blob = _export(model, x)
    d = tmp_path_factory.mktemp(request.param)
    src = d / "m.onnx"
    src.write_bytes(blob)
    lowbit.convert(str(src), str(d / "m.qbin"))
    return request.param, model, blob, lowbit.load(str(d / "m.qbin")), hw, d


def test_matches_onnxruntime_dynamic_batch(cnn):
    name, _, blob, m, hw, _ = cnn
    sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    for n in (1, 3):
        x = np.random.default_rng(n).standard_normal((n, 3, hw, hw), dtype=np.float32)
        ref = sess.run(None, {"x": x})[0]
        got = m.run(x)
        assert got.shape == ref.shape
        assert _rel(got, ref) <= RTOL, (name, n, _rel(got, ref))


def test_graph_is_nhwc_with_folded_batchnorm(cnn):
    name, _, _, m, _, _ = cnn
    ops = [l["op"] for l in m.layers()]
    assert "BatchNormalization" not in ops  # every BN follows a Conv: all folded
    assert ops.count("Transpose") == 1  # only the model input changes layout
    # activations after convs are fused; only the ReLUs after residual adds remain
    assert "Clip" not in ops and ops.count("Relu") == (ops.count("Add") if name == "resnet18" else 0)
    if name == "mobilenetv2":
        assert "DepthwiseConv" in ops


def test_bit_identical_across_threads(cnn):
    _, _, _, m, hw, _ = cnn
    x = np.random.default_rng(5).standard_normal((2, 3, hw, hw), dtype=np.float32)
    old = lowbit.get_num_threads()
    try:
        lowbit.set_num_threads(1)
        a = m.run(x)
        lowbit.set_num_threads(2)
        b = m.run(x)
    finally:
        lowbit.set_num_threads(old)
    assert np.array_equal(a, b)


def test_converts_from_live_module(cnn):
    name, model, blob, _, hw, d = cnn
    lowbit.convert(model, str(d / "live.qbin"), example_inputs=(torch.randn(1, 3, hw, hw),))
    m = lowbit.load(str(d / "live.qbin"))
    x = np.random.default_rng(9).standard_normal((2, 3, hw, hw), dtype=np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert _rel(m.run(x), ref) <= RTOL
