"""CNN ops alone against onnxruntime: Conv (groups, depthwise, strides, pads,
auto_pad, dilations, fused activations and residuals), pools, BatchNorm that
cannot be folded, parametrized activations."""

import numpy as np
import pytest
from onnx import helper

from test_ops import check

OUT4 = ["n", "co", "ho", "wo"]  # output shapes are informational: symbolic


def _w(*shape, seed=1):
    return (np.random.default_rng(seed).standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)


CONVS = {
    "3x3-pad1": dict(c=8, o=16, k=3, pads=[1, 1, 1, 1]),
    "1x1": dict(c=24, o=40, k=1),
    "7x7-s2-asym": dict(c=3, o=17, k=7, strides=[2, 2], pads=[3, 2, 1, 3]),
    "3x3-dil2": dict(c=5, o=6, k=3, dilations=[2, 2], pads=[2, 2, 2, 2]),
    "same-upper-s2": dict(c=6, o=9, k=3, strides=[2, 2], auto_pad="SAME_UPPER"),
    "same-lower-s2": dict(c=6, o=9, k=4, strides=[2, 2], auto_pad="SAME_LOWER"),
    "valid": dict(c=4, o=5, k=3, auto_pad="VALID"),
    "groups2": dict(c=8, o=12, k=3, group=2, pads=[1, 1, 1, 1]),
    "depthwise": dict(c=32, o=32, k=3, group=32, pads=[1, 1, 1, 1]),
    "depthwise-s2": dict(c=24, o=24, k=3, group=24, strides=[2, 2], pads=[1, 1, 1, 1]),
    "depthwise-mult2": dict(c=8, o=16, k=3, group=8, pads=[1, 1, 1, 1]),
    "1x1-s2": dict(c=16, o=32, k=1, strides=[2, 2]),
}


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("name", list(CONVS))
def test_conv(tmp_path, name, bias):
    p = dict(CONVS[name])
    c, o, k, g = p.pop("c"), p.pop("o"), p.pop("k"), p.get("group", 1)
    inits = {"w": _w(o, c // g, k, k)}
    ins = ["x", "w"]
    if bias:
        inits["b"] = np.random.default_rng(2).standard_normal(o).astype(np.float32)
        ins.append("b")
    node = helper.make_node("Conv", ins, ["y"], **p)
    m = check(tmp_path, [node], [("x", ["n", c, 13, 11])], OUT4, inits, rtol=1e-4, atol=1e-5)
    ops = [l["op"] for l in m.layers()]
    assert ("DepthwiseConv" if (g == c == o) else "Conv") in ops


@pytest.mark.parametrize("act,attrs,extra", [
    ("Relu", {}, {}), ("LeakyRelu", {"alpha": 0.2}, {}), ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, {}),
    ("HardSwish", {}, {}), ("Sigmoid", {}, {}), ("Tanh", {}, {}),
    ("Clip", {}, {"lo": np.array(-0.5, np.float32), "hi": np.array(0.7, np.float32)})])
@pytest.mark.parametrize("depthwise", [False, True])
def test_conv_fused_activation(tmp_path, act, attrs, extra, depthwise):
    c, o, g = (8, 8, 8) if depthwise else (6, 10, 1)
    inits = {"w": _w(o, c // g, 3, 3), "b": np.linspace(-1, 1, o).astype(np.float32), **extra}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], group=g),
             helper.make_node(act, ["c"] + (["lo", "hi"] if act == "Clip" else []), ["y"], **attrs)]
    m = check(tmp_path, nodes, [("x", ["n", c, 9, 9])], OUT4, inits, rtol=1e-4, atol=1e-5)
    assert act not in [l["op"] for l in m.layers()]  # fused into the conv


def test_conv_residual_add_relu_fused(tmp_path):
    inits = {"w1": _w(8, 8, 3, 3), "w2": _w(8, 8, 3, 3, seed=3)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "x"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"])]
    m = check(tmp_path, nodes, [("x", ["n", 8, 10, 10])], OUT4, inits, rtol=1e-4, atol=1e-5)
    assert [l["op"] for l in m.layers()] == ["Transpose", "Conv", "Conv", "Transpose"]


@pytest.mark.parametrize("op,attrs", [
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ("MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)),
    ("MaxPool", dict(kernel_shape=[3, 3], dilations=[2, 2])),
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=1)),
    ("AveragePool", dict(kernel_shape=[2, 3], strides=[2, 2], ceil_mode=1)),
])
@pytest.mark.parametrize("cout", [6, 64])  # 64: MaxPool's 32-channel register blocks
def test_pool_after_conv(tmp_path, op, attrs, cout):
    # behind a conv, so the pool runs in NHWC (a lone pool does too: the layout pass moves it)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node(op, ["c"], ["y"], **attrs)]
    check(tmp_path, nodes, [("x", ["n", 4, 11, 12])], OUT4, {"w": _w(cout, 4, 1, 1)}, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("after_conv", [False, True])
def test_global_pools(tmp_path, op, after_conv):
    nodes = [helper.make_node(op, ["c" if after_conv else "x"], ["y"])]
    if after_conv:
        nodes.insert(0, helper.make_node("Conv", ["x", "w"], ["c"]))
    check(tmp_path, nodes, [("x", ["n", 6, 7, 5])], OUT4, {"w": _w(6, 6, 1, 1)} if after_conv else {},
          rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("after_conv", [False, True])
def test_batchnorm_unfolded(tmp_path, after_conv):
    # a BN after a Relu (or on the input) cannot fold into a conv: it runs as its own op
    rng = np.random.default_rng(4)
    inits = {"s": rng.uniform(0.5, 2, 6).astype(np.float32), "b": rng.standard_normal(6).astype(np.float32),
             "m": rng.standard_normal(6).astype(np.float32), "v": rng.uniform(0.5, 2, 6).astype(np.float32)}
    nodes = [helper.make_node("BatchNormalization", ["r" if after_conv else "x", "s", "b", "m", "v"], ["y"],
                              epsilon=1e-3)]
    if after_conv:
        inits["w"] = _w(6, 6, 3, 3)
        nodes[:0] = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                     helper.make_node("Relu", ["c"], ["r"])]
    m = check(tmp_path, nodes, [("x", ["n", 6, 5, 4])], OUT4, inits, rtol=1e-5, atol=1e-5)
    assert "BatchNormalization" in [l["op"] for l in m.layers()]


def test_batchnorm_folded_into_conv(tmp_path):
    rng = np.random.default_rng(5)
    inits = {"w": _w(7, 3, 3, 3), "cb": rng.standard_normal(7).astype(np.float32),
             "s": rng.uniform(0.5, 2, 7).astype(np.float32), "b": rng.standard_normal(7).astype(np.float32),
             "m": rng.standard_normal(7).astype(np.float32), "v": rng.uniform(0.5, 2, 7).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "cb"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"])]
    m = check(tmp_path, nodes, [("x", ["n", 3, 8, 8])], OUT4, inits, rtol=1e-4, atol=1e-5)
    assert [l["op"] for l in m.layers()] == ["Transpose", "Conv", "Transpose"]


@pytest.mark.parametrize("op,attrs", [("LeakyRelu", {"alpha": 0.05}), ("HardSigmoid", {}), ("HardSwish", {}),
                                      ("Clip", None)])
def test_parametrized_activations(tmp_path, op, attrs):
    if op == "Clip":
        node = helper.make_node("Clip", ["a", "lo", "hi"], ["y"])
        inits = {"lo": np.array(-0.3, np.float32), "hi": np.array(0.9, np.float32)}
    else:
        node, inits = helper.make_node(op, ["a"], ["y"], **attrs), {}
    check(tmp_path, [node], [("a", ["n", 33])], ["n", 33], inits)


def test_clip_without_bounds_and_min_only(tmp_path):
    check(tmp_path, [helper.make_node("Clip", ["a"], ["y"])], [("a", [4, 5])], [4, 5])
    check(tmp_path, [helper.make_node("Clip", ["a", "lo"], ["y"])], [("a", [4, 5])], [4, 5],
          {"lo": np.array(0.1, np.float32)})


def test_conv_rejects_wrong_channels(tmp_path):
    import lowbit
    from onnx import TensorProto
    import models
    model = models.make_model([helper.make_node("Conv", ["x", "w"], ["y"])],
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "c", 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, OUT4)], {"w": _w(4, 3, 3, 3)})
    p = str(tmp_path / "m.qbin")
    lowbit.convert(model, p)
    with pytest.raises(ValueError, match="3 channels"):
        lowbit.load(p).run(np.zeros((1, 5, 5, 5), np.float32))


IMPLICIT_CONVS = {  # kw * C >= 256: these read their input in place where the kernel supports it
    "3x3-pad1": dict(c=96, o=40, k=3, pads=[1, 1, 1, 1]),
    "3x3-s2-asym": dict(c=96, o=17, k=3, strides=[2, 2], pads=[1, 0, 2, 1]),
    "3x3-dil2x1": dict(c=100, o=24, k=3, dilations=[2, 1], pads=[2, 1, 2, 1]),  # dilation along y only
    "1x1-s2": dict(c=256, o=32, k=1, strides=[2, 2]),
    "5x5-valid": dict(c=64, o=16, k=5, auto_pad="VALID"),
}


@pytest.mark.parametrize("name", list(IMPLICIT_CONVS))
def test_conv_implicit_gemm_same_bits_as_im2col(tmp_path, name, threads):
    """The implicit-GEMM path (no im2col) gives im2col's bits, at 1 and 2 threads,
    with a residual and ReLU in the epilogue; both match onnxruntime."""
    import lowbit
    from lowbit import _core
    p = dict(IMPLICIT_CONVS[name])
    c, o, k = p.pop("c"), p.pop("o"), p.pop("k")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c1"], **p),
             helper.make_node("Conv", ["c1", "w2"], ["c2"]),  # 1x1 over the result: the residual's source
             helper.make_node("Add", ["c2", "c1"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    inits = {"w": _w(o, c, k, k), "b": _w(o, seed=3), "w2": _w(o, o, 1, 1, seed=4)}
    x = np.random.default_rng(5).standard_normal((2, c, 13, 12)).astype(np.float32)
    m = check(tmp_path, nodes, [("x", ["n", c, 13, 12])], OUT4, inits, rtol=1e-4, atol=1e-5, feeds={"x": x})
    kinds = {l["kernel"].split("+")[-1] for l in m.layers() if l["op"] == "Conv"}
    if lowbit.cpu_info()["kernels"]["f32-conv"] == "implicit-gemm":
        assert "implicit" in kinds
    outs = []
    try:
        for implicit in (True, False):
            _core._set_conv_implicit_gemm(implicit)
            for t in (1, 2):
                lowbit.set_num_threads(t)
                outs.append(m.run(x))
    finally:
        _core._set_conv_implicit_gemm(True)
    for y in outs[1:]:
        assert np.array_equal(y, outs[0])


WINOGRAD_CONVS = {  # 3x3, stride 1, one group, 64 <= channels <= 256, >= 32 output tiles of 2x2
    "same-pad": dict(c=128, o=128, hw=(14, 14), pads=[1, 1, 1, 1]),
    "64-channels": dict(c=64, o=64, hw=(16, 16), pads=[1, 1, 1, 1]),
    "channels-not-8": dict(c=67, o=93, hw=(9, 16), pads=[1, 0, 1, 2]),
    "odd-size-asym-pad": dict(c=136, o=144, hw=(15, 11), pads=[0, 1, 2, 1]),  # partial tiles at the edges
    "valid": dict(c=256, o=128, hw=(17, 18), pads=[0, 0, 0, 0]),
    "channels-not-16": dict(c=130, o=250, hw=(12, 13), pads=[1, 1, 1, 1]),
}


@pytest.mark.parametrize("name", list(WINOGRAD_CONVS))
def test_conv_winograd_matches_gemm_path_and_onnxruntime(tmp_path, name, threads):
    """3x3 stride-1 convs with 64-256 channels run as Winograd F(2x2, 3x3): within float
    rounding of the GEMM path and of onnxruntime, with bias, a residual and ReLU (and a
    Clip) fused; the same bits at 1 and 2 threads (each tile is computed by one thread)."""
    import lowbit
    from lowbit import _core
    p = dict(WINOGRAD_CONVS[name])
    c, o, (h, w) = p.pop("c"), p.pop("o"), p.pop("hw")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c1"], kernel_shape=[3, 3], **p),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c2", "r1"], ["s"]), helper.make_node("Relu", ["s"], ["r2"]),
             helper.make_node("Conv", ["r2", "w2"], ["c3"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["c3", "lo", "hi"], ["y"])]
    inits = {"w": _w(o, c, 3, 3), "b": _w(o, seed=3), "w2": _w(o, o, 3, 3, seed=4),
             "lo": np.array(-0.5, np.float32), "hi": np.array(0.75, np.float32)}
    x = np.random.default_rng(5).standard_normal((2, c, h, w)).astype(np.float32)
    m = check(tmp_path, nodes, [("x", ["n", c, h, w])], OUT4, inits, rtol=1e-4, atol=1e-5, feeds={"x": x})
    kinds = [l["kernel"].split("+")[-1] for l in m.layers() if l["op"] == "Conv"]
    assert kinds == ["winograd"] * 3, kinds
    outs = {}
    try:
        for wino in (True, False):
            _core._set_conv_winograd(wino)
            for t in (1, 2):
                lowbit.set_num_threads(t)
                outs[wino, t] = m.run(x)
    finally:
        _core._set_conv_winograd(True)
    assert np.array_equal(outs[True, 1], outs[True, 2]) and np.array_equal(outs[False, 1], outs[False, 2])
    assert not np.array_equal(outs[True, 1], outs[False, 1])  # the Winograd path did run
    np.testing.assert_allclose(outs[True, 1], outs[False, 1], rtol=1e-4, atol=1e-5)
    # against the same network in float64: Winograd's error within 2x the GEMM path's (the
    # transforms add and halve only; F(2x2, 3x3) is the numerically tame size)
    ref = _conv64(x, inits["w"], inits["b"], p["pads"])
    r1 = np.maximum(ref, 0)
    r2 = np.maximum(_conv64(r1, inits["w2"], None, [1, 1, 1, 1]) + r1, 0)
    ref = np.clip(_conv64(r2, inits["w2"], None, [1, 1, 1, 1]), -0.5, 0.75)
    err = {k: np.linalg.norm(outs[k, 1] - ref) / np.linalg.norm(ref) for k in (True, False)}
    assert err[True] <= 2 * err[False] + 1e-7 and err[True] < 1e-5, err


def _conv64(x, w, b, pads):
    """Reference 2-D convolution in float64 (stride 1, one group), NCHW."""
    t, l, bo, r = pads
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (t, bo), (l, r)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))  # n, c, oh, ow, 3, 3
    y = np.einsum("nchwij,ocij->nohw", win, w.astype(np.float64))
    return y + b.astype(np.float64)[None, :, None, None] if b is not None else y


def test_conv_winograd_not_used_outside_its_range(tmp_path, threads):
    """Under 64 or over 256 channels, stride 2, dilation 2 and two groups keep the GEMM paths
    (measured no faster there); a qualifying conv on an image of fewer than 32 tiles is built
    for Winograd but runs its GEMM path (the same bits with Winograd switched off)."""
    import lowbit
    from lowbit import _core
    cases = [(dict(c=32, o=64), {}, False), (dict(c=64, o=48), {}, False), (dict(c=128, o=512), {}, False),
             (dict(c=64, o=64), {}, True), (dict(c=128, o=128), dict(strides=[2, 2]), False),
             (dict(c=128, o=128), dict(dilations=[2, 2], pads=[2, 2, 2, 2]), False), (dict(c=128, o=128), dict(group=2), False),
             (dict(c=128, o=128), {}, True)]
    for i, (ch, kw, built) in enumerate(cases):
        kw = {"pads": [1, 1, 1, 1], **kw}
        g = kw.get("group", 1)
        nodes = [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], **kw)]
        x = np.random.default_rng(i).standard_normal((1, ch["c"], 8, 8)).astype(np.float32)  # 16 tiles
        m = check(tmp_path, nodes, [("x", [1, ch["c"], 8, 8])], OUT4, {"w": _w(ch["o"], ch["c"] // g, 3, 3)},
                  rtol=1e-4, atol=1e-5, feeds={"x": x})
        kinds = [l["kernel"] for l in m.layers() if l["op"] == "Conv"]
        assert ("winograd" in kinds[0]) == built, (ch, kw, kinds)
        lowbit.set_num_threads(1)
        try:
            _core._set_conv_winograd(False)
            off = m.run(x)
        finally:
            _core._set_conv_winograd(True)
        assert np.array_equal(m.run(x), off)
