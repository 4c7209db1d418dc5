"""Models quantized by onnxruntime's own tools convert without re-quantizing and match
onnxruntime running the same quantized model.

- quantize_dynamic (DynamicQuantizeLinear + MatMulInteger, per channel and per tensor):
  the int8 weight codes and scales are carried over byte for byte. The activations are
  quantized lowbit's way (per row, symmetric, outlier split) instead of onnxruntime's one
  uint8 scale per tensor, so each output may differ by the two activation roundings
  through the weights: |y_lb - y_ort| <= sum_k |W[k, n]| * (s_ort + s_row / 2), with
  s_ort the tensor's uint8 step (rounding <= s/2, plus <= s/2 from the rounded zero
  point) and s_row = the row's int8 step (half a step of rounding; outliers exact).
- quantize_static QDQ: the activation Q/DQ pairs map onto the Dense's static input and
  output grids, so lowbit computes onnxruntime's codes: outputs equal, or one output step
  apart where a product lands on a rounding tie (float order).
- MatMulNBitsQuantizer (4 bits, blocks 32/64/128, symmetric or with zero points): codes and
  zero points carried over, scales rounded to f16: the bound adds onnxruntime's block-wise
  int8 activation rounding (accuracy_level=4) and sum_k |x_k| |u - z| |s - f16(s)|.

onnxruntime's default x64 int8 GEMM multiplies uint8 activations by int8 weights with
vpmaddubsw, whose int16 pair sums saturate on CPUs without VNNI (AVX2): its result then
differs from the model's definition. The comparisons use its documented precise mode
(session option session.x64quantprecision=1), which is exact on every CPU.
"""

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import lowbit
from lowbit import _core

ort = pytest.importorskip("onnxruntime")
quantization = pytest.importorskip("onnxruntime.quantization")


def _session(path, precise=True):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    if precise:
        so.add_session_config_entry("session.x64quantprecision", "1")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _save(model, path):
    onnx.save(model, str(path))
    return str(path)


def _mlp(K, N, N2=None, gemm=False, seed=0):
    """x -> MatMul(W1) (+ b1, as a Gemm with transB when gemm) -> Relu [-> MatMul(W2)] -> y."""
    rng = np.random.default_rng(seed)
    W1 = (rng.standard_normal((K, N)) * 0.1).astype(np.float32)
    W1[:, 0] *= 8  # a column with a wide range (per-channel scales differ)
    b1 = (rng.standard_normal(N) * 0.1).astype(np.float32)
    inits = [nh.from_array(b1, "b1")]
    if gemm:
        nodes = [h.make_node("Gemm", ["x", "W1t", "b1"], ["h2"], name="fc1", transB=1)]
        inits.append(nh.from_array(np.ascontiguousarray(W1.T), "W1t"))
    else:
        nodes = [h.make_node("MatMul", ["x", "W1"], ["h"], name="fc1"), h.make_node("Add", ["h", "b1"], ["h2"], name="add1")]
        inits.append(nh.from_array(W1, "W1"))
    out = "h3" if N2 is None else "y"
    nodes.append(h.make_node("Relu", ["h2"], ["h3"], name="relu"))
    if N2 is not None:
        inits.append(nh.from_array((rng.standard_normal((N, N2)) * 0.1).astype(np.float32), "W2"))
        nodes.append(h.make_node("MatMul", ["h3", "W2"], ["y"], name="fc2"))
    g = h.make_graph(nodes, "mlp", [h.make_tensor_value_info("x", T.FLOAT, ["b", K])],
                     [h.make_tensor_value_info(out, T.FLOAT, ["b", N if N2 is None else N2])], inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def _inputs(M, K, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((M, K)).astype(np.float32)
    x[:, 3] *= 6  # an outlier channel, as in transformer activations
    return x


def _inits(path):
    m = onnx.load(str(path))
    return {i.name: nh.to_array(i) for i in m.graph.initializer}, m


def _dense_weights(qbin):
    m = lowbit.load(qbin)
    return [(l, m.graph.tensors[m.graph.nodes[i].inputs[1]]) for i, l in enumerate(m.layers()) if l["op"] == "Dense"]


# ---- quantize_dynamic ----------------------------------------------------------------------------

@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("outliers", [0, 1])
def test_quantize_dynamic_single_layer_within_both_roundings(tmp_path, per_channel, outliers):
    K, N = 96, 40
    src = _save(_mlp(K, N), tmp_path / "f.onnx")
    q = str(tmp_path / "q.onnx")
    quantization.quantize_dynamic(src, q, weight_type=quantization.QuantType.QInt8, per_channel=per_channel)
    rep = lowbit.convert(q, str(tmp_path / "q.qbin"), outliers=outliers)
    assert not rep.notes
    (layer, wt), = _dense_weights(str(tmp_path / "q.qbin"))
    assert wt.encoding == "qs8-n16k4" and layer["activation"] == "relu"
    # the weights are onnxruntime's codes and scales, byte for byte
    inits, _ = _inits(q)
    wq, ws, wz = inits["W1_quantized"], inits["W1_scale"], inits["W1_zero_point"]
    assert wq.dtype == np.int8 and not wz.any()
    np.testing.assert_array_equal(wt.data, _core.pack_qs8(wq, np.broadcast_to(ws, (N,)).astype(np.float32)))
    m = lowbit.load(str(tmp_path / "q.qbin"))
    Wd = wq.astype(np.float32) * ws
    bias = inits["b1"]
    for seed in range(3):
        x = _inputs(7, K, seed)
        got = m.run(x)
        want = _session(q).run(None, {"x": x})[0]
        # the bound (before the ReLU, which only shrinks differences)
        s_ort = (max(x.max(), 0) - min(x.min(), 0)) / 255
        if outliers:
            _, s_row, _, _, _ = _core.qs8_quant_split("scalar", x, (K + 3) // 4 * 4, 4, False, outliers)
        else:
            _, s_row, _ = _core.qs8_quant("scalar", x, (K + 3) // 4 * 4, 4, False)
        bound = (s_ort + s_row[:, None] / 2) * np.abs(Wd).sum(axis=0)[None, :]
        bound += 1e-5 * (np.abs(x) @ np.abs(Wd) + np.abs(bias))
        assert (np.abs(got - want) <= bound).all(), np.max(np.abs(got - want) / bound)
        assert np.abs(got - want).max() > 0  # two different activation quantizers: not equal by construction


def test_quantize_dynamic_two_layers_and_precision(tmp_path):
    """Through two layers the bound compounds; here: lowbit stays closer to the float
    model (with onnxruntime's dequantized weights) than onnxruntime does, and both are close."""
    K, N, N2 = 128, 64, 24
    src = _save(_mlp(K, N, N2, seed=2), tmp_path / "f.onnx")
    q = str(tmp_path / "q.onnx")
    quantization.quantize_dynamic(src, q, weight_type=quantization.QuantType.QInt8, per_channel=True)
    lowbit.convert(q, str(tmp_path / "q.qbin"))
    inits, _ = _inits(q)
    W1 = inits["W1_quantized"].astype(np.float32) * inits["W1_scale"]
    W2 = inits["W2_quantized"].astype(np.float32) * inits["W2_scale"]
    x = _inputs(64, K, 5)
    ref = np.maximum(x.astype(np.float64) @ W1 + inits["b1"], 0) @ W2
    got = lowbit.load(str(tmp_path / "q.qbin")).run(x)
    want = _session(q).run(None, {"x": x})[0]
    err_lb, err_ort = np.abs(got - ref).mean(), np.abs(want - ref).mean()
    assert err_lb <= err_ort, (err_lb, err_ort)
    assert np.abs(got - want).max() <= 0.05 * np.abs(ref).max()


@pytest.mark.parametrize("weight_type", ["QInt8", "QUInt8"])
def test_quantize_dynamic_embedding_keeps_its_codes(tmp_path, weight_type):
    """quantize_dynamic quantizes Gather tables (DequantizeLinear after the lookup): lowbit
    keeps the 8-bit codes (a quarter of the float table's bytes) and dequantizes the rows it
    looks up, with onnxruntime's values bit for bit; a small table becomes float."""
    rng = np.random.default_rng(4)
    V, D = 5000, 48  # 240k codes: above MIN_CODE_TABLE_ELEMENTS
    E = (rng.standard_normal((V, D)) * 0.3 + 0.05).astype(np.float32)
    small = rng.standard_normal((40, D)).astype(np.float32)
    g = h.make_graph([h.make_node("Gather", ["E", "ids"], ["e"], name="emb"),
                      h.make_node("Gather", ["P", "pos"], ["p"], name="pos_emb"),
                      h.make_node("Add", ["e", "p"], ["y"], name="add")], "emb",
                     [h.make_tensor_value_info("ids", T.INT64, ["b", "s"]), h.make_tensor_value_info("pos", T.INT64, ["b", "s"])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["b", "s", D])],
                     [nh.from_array(E, "E"), nh.from_array(small, "P")])
    src = _save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), tmp_path / "f.onnx")
    q = str(tmp_path / "q.onnx")
    quantization.quantize_dynamic(src, q, weight_type=getattr(quantization.QuantType, weight_type),
                                  op_types_to_quantize=["Gather"])
    if "DequantizeLinear" not in {n.op_type for n in onnx.load(q).graph.node}:
        pytest.skip("this onnxruntime version does not quantize Gather")
    out = str(tmp_path / "q.qbin")
    lowbit.convert(q, out)
    m = lowbit.load(out)
    inits, _ = _inits(q)
    table = [a for a in inits.values() if a.shape == (V, D)]
    big = [t for t in m.graph.tensors.values() if t.shape == (V, D)]
    assert len(table) == 1 and table[0].dtype in (np.int8, np.uint8)
    assert len(big) == 1 and big[0].dtype == str(table[0].dtype), [(t.name, t.dtype) for t in big]
    assert np.array_equal(np.asarray(big[0].data).view(table[0].dtype).reshape(V, D), table[0])
    assert os.path.getsize(out) < V * D * 1.2  # codes, not floats
    ids = rng.integers(0, V, (3, 17)).astype(np.int64)
    pos = rng.integers(0, 40, (3, 17)).astype(np.int64)
    got = m.run({"ids": ids, "pos": pos})
    want = _session(q, precise=False).run(None, {"ids": ids, "pos": pos})[0]
    np.testing.assert_array_equal(got, want)


def test_int8_embedding_without_zero_point_keeps_its_codes(tmp_path):
    """A symmetric int8 table (DequantizeLinear with zero point 0): Cast and Mul, no Sub."""
    rng = np.random.default_rng(5)
    codes = rng.integers(-128, 128, (3000, 16)).astype(np.int8)
    g = h.make_graph([h.make_node("Gather", ["Eq", "ids"], ["eq"], name="emb"),
                      h.make_node("DequantizeLinear", ["eq", "s", "z"], ["y"], name="dq")], "emb",
                     [h.make_tensor_value_info("ids", T.INT64, ["n"])], [h.make_tensor_value_info("y", T.FLOAT, ["n", 16])],
                     [nh.from_array(codes, "Eq"), nh.from_array(np.array(0.0123, np.float32), "s"),
                      nh.from_array(np.array(0, np.int8), "z")])
    src = _save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), tmp_path / "q.onnx")
    out = str(tmp_path / "q.qbin")
    lowbit.convert(src, out)
    m = lowbit.load(out)
    assert [l["op"] for l in m.layers()] == ["Gather", "Cast", "Mul"]
    ids = rng.integers(0, 3000, 50).astype(np.int64)
    np.testing.assert_array_equal(m.run({"ids": ids}), _session(src, precise=False).run(None, {"ids": ids})[0])


def test_quantize_dynamic_with_a_convolution_names_conv_integer(tmp_path):
    rng = np.random.default_rng(0)
    g = h.make_graph([h.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
                      h.make_node("Flatten", ["c"], ["f"], name="flat"),
                      h.make_node("MatMul", ["f", "W"], ["y"], name="fc")], "cnn",
                     [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])], [h.make_tensor_value_info("y", T.FLOAT, [1, 10])],
                     [nh.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
                      nh.from_array(rng.standard_normal((256, 10)).astype(np.float32), "W")])
    src = _save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), tmp_path / "f.onnx")
    q = str(tmp_path / "q.onnx")
    quantization.quantize_dynamic(src, q, weight_type=quantization.QuantType.QUInt8)
    if "ConvInteger" not in {n.op_type for n in onnx.load(q).graph.node}:
        pytest.skip("this onnxruntime version does not emit ConvInteger")
    with pytest.raises(lowbit.UnsupportedOpError, match="ConvInteger") as e:
        lowbit.convert(q, str(tmp_path / "q.qbin"))
    assert "ConvInteger" in e.value.ops


def test_uint8_weights_with_zero_point_stay_float_with_a_note(tmp_path):
    """uint8 weights with a zero point near 128 give codes in [-128, 127] after it; -128 has
    no place in lowbit's symmetric int8 encoding, so that layer stays float32 (and says so)."""
    K, N = 64, 32
    src = _save(_mlp(K, N), tmp_path / "f.onnx")
    q = str(tmp_path / "q.onnx")
    quantization.quantize_dynamic(src, q, weight_type=quantization.QuantType.QUInt8, per_channel=False)
    inits, _ = _inits(q)
    codes = inits["W1_quantized"].astype(np.int32) - inits["W1_zero_point"].astype(np.int32)
    rep = lowbit.convert(q, str(tmp_path / "q.qbin"))
    (layer, wt), = _dense_weights(str(tmp_path / "q.qbin"))
    assert codes.min() < -127  # asymmetric uint8: the zero point sits off centre
    assert wt.encoding == "f32-n16" and "kept as float32" in rep.notes[0]
    x = _inputs(5, K, 1)
    want = np.maximum(x @ (codes.astype(np.float32) * inits["W1_scale"]) + inits["b1"], 0)
    np.testing.assert_allclose(lowbit.load(str(tmp_path / "q.qbin")).run(x), want, rtol=1e-5, atol=1e-5)
    # quant='int8' re-quantizes that layer with lowbit's own int8
    lowbit.convert(q, str(tmp_path / "r.qbin"), quant="int8")
    assert _dense_weights(str(tmp_path / "r.qbin"))[0][1].encoding == "qs8-n16k4"


# ---- quantize_static, QDQ -------------------------------------------------------------------------

class _Reader:
    def __init__(self, K, n=8):
        self.it = iter([{"x": _inputs(4, K, 100 + i)} for i in range(n)])

    def get_next(self):
        return next(self.it, None)


@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("gemm", [False, True])
def test_quantize_static_qdq_matches_onnxruntime(tmp_path, per_channel, gemm):
    K, N, N2 = 64, 48, 20
    src = _save(_mlp(K, N, N2, gemm=gemm, seed=3), tmp_path / "f.onnx")
    q = str(tmp_path / "q.onnx")
    quantization.quantize_static(src, q, _Reader(K), quant_format=quantization.QuantFormat.QDQ, per_channel=per_channel)
    rep = lowbit.convert(q, str(tmp_path / "q.qbin"))
    assert not rep.notes
    dense = _dense_weights(str(tmp_path / "q.qbin"))
    assert [t.encoding for _, t in dense] == ["qs8-n16k4", "qs8-n16k4"]
    assert all("qs8_quant_static" in l["kernel"] for l, _ in dense)
    m = lowbit.load(str(tmp_path / "q.qbin"))
    assert not any(l["op"] in ("QuantizeLinear", "DequantizeLinear") for l in m.layers())
    y_scale = float(next(v for k, v in _inits(q)[0].items() if k.startswith("y") and k.endswith("scale")))
    for seed in range(4):
        x = _inputs(33, K, seed) * (1 + seed)  # later seeds saturate the calibrated ranges
        got = m.run(x)
        want = _session(q).run(None, {"x": x})[0]
        diff = np.abs(got - want)
        assert diff.max() <= y_scale * 1.0001, diff.max() / y_scale
        assert (diff == 0).mean() >= 0.99


# ---- MatMulNBits -----------------------------------------------------------------------------

def _nbits(tmp_path, K, N, block, symmetric, accuracy):
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    rng = np.random.default_rng(K + N + block)
    W = (rng.standard_normal((K, N)) * 0.05).astype(np.float32)
    g = h.make_graph([h.make_node("MatMul", ["x", "W"], ["y"], name="mm")], "g", [h.make_tensor_value_info("x", T.FLOAT, ["b", K])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["b", N])], [nh.from_array(W, "W")])
    quant = MatMulNBitsQuantizer(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), block_size=block,
                                 is_symmetric=symmetric, accuracy_level=accuracy)
    quant.process()
    return _save(quant.model.model, tmp_path / "q.onnx")


def _ort_nbits_weights(inits, K, N, block):
    """Codes, zero points and scales as onnxruntime defines them (decoded here, independently)."""
    b = next(v for k, v in inits.items() if k.endswith("_Q4"))
    s = next(v for k, v in inits.items() if k.endswith("_scales")).reshape(N, -1)
    nb = s.shape[1]
    u = np.stack([b & 15, b >> 4], axis=-1).reshape(N, nb * block)[:, :K].T.astype(np.int32)  # [K, N]
    zk = [v for k, v in inits.items() if k.endswith("_zero_points")]
    if zk:
        zb = zk[0].reshape(N, -1)
        z = np.stack([zb & 15, zb >> 4], axis=-1).reshape(N, -1)[:, :nb].T.astype(np.int32)  # [nb, N]
    else:
        z = np.full((nb, N), 8, np.int32)
    return u, z, s.T.astype(np.float32)


@pytest.mark.parametrize("block", [32, 64, 128])
@pytest.mark.parametrize("symmetric", [True, False])
def test_matmul_nbits_codes_carried_over_and_within_bound(tmp_path, block, symmetric):
    K, N = 200, 40  # K off every block size: a padded last block
    for accuracy in (0, 4):
        q = _nbits(tmp_path, K, N, block, symmetric, accuracy)
        inits, _ = _inits(q)
        lowbit.convert(q, str(tmp_path / "q.qbin"))
        (layer, wt), = _dense_weights(str(tmp_path / "q.qbin"))
        u, z, s = _ort_nbits_weights(inits, K, N, block)
        sym = bool((z == 8).all())
        assert wt.encoding == f"q4-g{block}-{'sym' if sym else 'asym'}-n16k8"
        if not symmetric:
            assert not sym
        s16 = s.astype(np.float16)
        want_bytes = _core.pack_q4(u.astype(np.uint8), s16.view(np.uint16), None if sym else z.astype(np.uint8), None,
                                   "sym" if sym else "asym", block)
        np.testing.assert_array_equal(wt.data, want_bytes)
        # the only change to the weights: the f16 scales, at most 2^-11 relative (normal range)
        assert np.abs(s16.astype(np.float32) - s).max() <= np.abs(s).max() * 2.0 ** -11
        assert wt.meta["scale_f16_max_rel_error"] <= 2.0 ** -11
        m = lowbit.load(str(tmp_path / "q.qbin"))
        grp = np.repeat(np.arange(s.shape[0]), block)[:K]
        Wd = (u - z[grp]).astype(np.float64) * s[grp]                     # onnxruntime's weights
        dW = (u - z[grp]).astype(np.float64) * (s16.astype(np.float64)[grp] - s[grp])
        # these scales are off the exact int8 lattice, and imported weights are never requantized
        # (the rounded lattice form is for convert's own 4-bit layers): the group-wise kernels at
        # every M, 40 rows included (AMX takes the lattice form from 16 rows, VNNI from 32)
        assert _core.q4_lattice(want_bytes, wt.encoding, K, N)[2] > 0
        assert "lattice" not in m.layers()[0]["kernel"], m.layers()[0]["kernel"]
        for seed, rows in ((0, 6), (1, 6), (2, 6), (3, 40)):
            x = _inputs(rows, K, seed)
            got = m.run(x)
            want = _session(q).run(None, {"x": x})[0]
            # onnxruntime (accuracy_level=4): int8 per block of `block` along K, symmetric
            xb = np.zeros((rows, s.shape[0] * block), np.float32)
            xb[:, :K] = x
            e_ort = np.repeat(np.abs(xb).reshape(rows, -1, block).max(axis=2) / 254, block, axis=1)[:, :K]
            _, s_row, _, _, _ = _core.qs8_quant_split("scalar", x, (K + 127) // 128 * 128, 32, False, 1)
            e = (e_ort if accuracy else 0) + np.broadcast_to(s_row[:, None] / 2, x.shape)
            bound = e @ np.abs(Wd) + np.abs(x) @ np.abs(dW) + 1e-5 * (np.abs(x) @ np.abs(Wd))
            assert (np.abs(got - want) <= bound).all(), np.max(np.abs(got - want) / bound)


def test_matmul_nbits_unsupported_variants_are_named(tmp_path):
    from onnx import helper
    K, N = 64, 16
    B = np.zeros((N, 4, 8), np.uint8)
    for attrs, key in (({"bits": 8, "block_size": 32}, "bits=8"), ({"bits": 4, "block_size": 16}, "block_size=16")):
        nb = -(-K // attrs["block_size"])
        B = np.zeros((N, nb, attrs["block_size"] * attrs["bits"] // 8), np.uint8)
        node = helper.make_node("MatMulNBits", ["x", "B", "S"], ["y"], name="mm", domain="com.microsoft", K=K, N=N, **attrs)
        g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", T.FLOAT, [1, K])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [1, N])],
                              [nh.from_array(B, "B"), nh.from_array(np.ones(N * nb, np.float32), "S")])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
        with pytest.raises(lowbit.UnsupportedOpError, match="MatMulNBits") as e:
            lowbit.convert(m, str(tmp_path / "m.qbin"))
        assert any(key in k for k in e.value.ops), e.value.ops


def test_unknown_microsoft_ops_are_still_reported(tmp_path):
    node = h.make_node("FusedGemm", ["x", "x"], ["y"], name="fg", domain="com.microsoft")
    g = h.make_graph([node], "g", [h.make_tensor_value_info("x", T.FLOAT, [2, 2])], [h.make_tensor_value_info("y", T.FLOAT, [2, 2])])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("com.microsoft", 1)])
    with pytest.raises(lowbit.UnsupportedOpError) as e:
        lowbit.convert(m, str(tmp_path / "m.qbin"))
    assert "com.microsoft::FusedGemm" in e.value.ops
